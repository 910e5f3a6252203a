"""What every command shares: `--home`, `--json`, one-line errors and exit codes (0 done, 1 failed, 2 usage)."""
from __future__ import annotations

import contextlib
import functools
import sys
from typing import Any, Callable, Iterator

import click
import orjson

from curation.console import stdout_to_stderr
from curation.config import SettingError, config_scope
from curation.disk import disk_full_message, store_location
from curation.errors import CurateError

home_option = click.option(
    "--home",
    type=click.Path(file_okay=False),
    default=None,
    help="Curate home folder (default: $CURATE_HOME, else ./.curate).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON object on stdout.")
# Ranges that several commands share; click reports a value outside one as a usage error (exit 2) naming the option.
PORT = click.IntRange(1, 65535)
HELD_OUT = click.FloatRange(0, 1, max_open=True)  # share of contexts held out: 0 holds none out, 1 would train on none
SEED = click.IntRange(0, 2**32 - 1)  # what numpy, scikit-learn and transformers accept as a random seed


def reports(func: Callable) -> Callable:
    """Decorate a command body that returns a dict: print it as JSON or through its `human` formatter.

    The body gets `home` and `as_json`; it returns `(result, human_text)`, just `result`, or
    `(result, human_text, error)` for work that is done and reported but fails the command (exit 1 with `error`).
    Errors are reported as `handled` says. With --json, whatever the body or a library underneath writes to stdout
    goes to stderr, so the JSON object is the only thing on stdout.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        as_json = kwargs.get("as_json", False)
        with handled(as_json, home=kwargs.get("home"), out=kwargs.get("out")):
            out = func(*args, **kwargs)
        if out is None:
            return
        result, human, *error = out if isinstance(out, tuple) else (out, None)
        if as_json:
            click.echo(orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY, default=str).decode())
        elif human is not None:
            click.echo(human)
        else:
            click.echo(orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY, default=str).decode())
        if error:
            fail(error[0])

    return wrapper


@contextlib.contextmanager
def handled(as_json: bool, own: tuple[type[BaseException], ...] = (), home: Any = None,
            out: Any = None) -> Iterator[None]:
    """The error handling every command shares, around its work: a bad setting (curate.toml, a loop file, the
    environment) is a usage error, one line and exit 2; any other CurateError one line and exit 1; Ctrl+C exit 130.
    Errors of the types in `own` pass through to the command, which reports them itself. A full disk is one line
    naming the file system, whichever layer reports it (`home`: the store's home, `out`: the command's output path).
    Inside, curate.toml is read once (`config_scope`), and with --json stdout is stderr (`json_guard`)."""
    try:
        with config_scope(), json_guard(as_json):
            yield
    except own:
        raise
    except SettingError as exc:
        fail(str(exc), code=2)
    except CurateError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted; work committed so far is kept, run the same command again to resume", code=130)
    except Exception as exc:  # a full disk is said in one line, whichever layer reports it
        full = disk_full_message(exc, store_location(home), [out])
        if full is None:
            raise
        fail(full)


def json_guard(as_json: bool) -> contextlib.AbstractContextManager:
    """While a --json command works, stdout is stderr (see `curation.console.stdout_to_stderr`)."""
    return stdout_to_stderr() if as_json else contextlib.nullcontext()


def fail(message: str, code: int = 1) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


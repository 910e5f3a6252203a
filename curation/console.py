"""Where output goes: stdout carries results only, and the libraries underneath are kept quiet.

Some libraries write to stdout whatever the caller asks (NNCF draws rich progress bars there while OpenVINO
calibrates; optimum and transformers print advice). Two guards, both at the file-descriptor level so that output from
C extensions is caught too:
- `stdout_to_stderr()`: while a `--json` command works, anything written to stdout lands on stderr, so the one JSON
  document printed afterwards is the only thing on stdout.
- `quiet()`: a third-party step that only makes noise (an export, a model load) writes into a buffer that is thrown
  away, or replayed on stderr when the step fails, so that its error is not lost.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import warnings
from typing import IO, Iterator

# Loggers whose warnings during exports and loads are advice to library authors, not to our users.
NOISY_LOGGERS = ("transformers", "optimum", "nncf", "sentence_transformers", "datasets", "openvino")


def _fileno(stream: IO | None) -> int | None:
    try:
        return stream.fileno() if stream is not None else None
    except (AttributeError, OSError, ValueError):  # a StringIO, or a closed stream
        return None


@contextlib.contextmanager
def _redirect_fd(fd: int | None, target_fd: int) -> Iterator[None]:
    if fd is None:
        yield
        return
    saved = os.dup(fd)
    os.dup2(target_fd, fd)
    try:
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def _flush(*streams: IO | None) -> None:
    for stream in streams:
        with contextlib.suppress(Exception):
            stream.flush()  # type: ignore[union-attr]


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send everything written to stdout (Python's `sys.stdout` and file descriptor 1) to stderr until the block ends."""
    out, err = sys.__stdout__, sys.__stderr__
    saved = sys.stdout
    _flush(saved, out)
    err_fd = _fileno(err)
    with _redirect_fd(_fileno(out) if err_fd is not None else None, err_fd if err_fd is not None else 2):
        sys.stdout = sys.stderr
        try:
            yield
        finally:
            _flush(sys.stdout, out)
            sys.stdout = saved


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence a noisy third-party step: its stdout, stderr, warnings and library logging; replayed if it raises."""
    levels = {name: logging.getLogger(name).level for name in NOISY_LOGGERS}
    out_fd, err_fd = _fileno(sys.__stdout__), _fileno(sys.__stderr__)
    saved_out, saved_err = sys.stdout, sys.stderr
    _flush(saved_out, saved_err, sys.__stdout__, sys.__stderr__)
    with tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace") as sink:
        failed = False
        try:
            with _redirect_fd(out_fd, sink.fileno()), _redirect_fd(err_fd, sink.fileno()), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for name in NOISY_LOGGERS:
                    logging.getLogger(name).setLevel(logging.ERROR)
                sys.stdout = sys.stderr = sink
                try:
                    yield
                except BaseException:
                    failed = True
                    raise
                finally:
                    _flush(sink, sys.__stdout__, sys.__stderr__)
                    sys.stdout, sys.stderr = saved_out, saved_err
        finally:
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)
            if failed:
                sink.seek(0)
                text = sink.read()
                if text.strip():
                    saved_err.write(text[-4000:])
                    _flush(saved_err)

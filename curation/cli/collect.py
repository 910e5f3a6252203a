"""`curate collect`: the OTLP/HTTP + JSON receiver, and `curate collect token …` for its bearer tokens."""
from __future__ import annotations

import click

from curation.cli.common import home_option, json_option, reports


@click.group(invoke_without_command=True)
@home_option
@json_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to bind; anything but loopback needs a token (`curate collect token create NAME`).")
@click.option("--port", type=click.IntRange(0, 65535), default=4318, show_default=True,
              help="TCP port (4318 is OTLP/HTTP's; 0 picks a free one).")
@click.option("--max-body", type=click.IntRange(1), default=10 << 20, show_default=True,
              help="Largest request body in bytes, compressed or inflated; larger ones get 413.")
@click.option("--max-spool", type=click.IntRange(1), default=1 << 30, show_default=True,
              help="Bytes of spool kept while the store is down; beyond it requests get 429 with Retry-After.")
@click.option("--store-timeout", type=click.FloatRange(0.05), default=2.0, show_default=True,
              help="Seconds to wait for a locked store before spooling.")
@click.pass_context
@reports
def collect(ctx: click.Context, home: str | None, as_json: bool, host: str, port: int, max_body: int, max_spool: int,
            store_timeout: float):
    """Receive traces and conversations over HTTP until SIGTERM (or Ctrl+C).

    \b
    POST /v1/traces         OTLP/HTTP, protobuf or JSON, gzip or not: GenAI chat spans become conversations
                            (the rules of `curate ingest --format otel`); other spans are counted and dropped
    POST /v1/conversations  ingest records (OpenAI-style messages); your own `id` makes a retry a duplicate
    POST /v1/feedback       feedback events ({"conversation_id", "type", "value"?, "turn"?, "id"?})
    GET  /openapi.json      the JSON API's description;  GET /v1/status: the counters

    A request is answered 2xx only once its data is in the store, or in HOME/spool while the store is down (the
    spool is ingested when it is back). On SIGTERM it stops accepting, writes what is pending and exits; --json
    then prints the counters.
    """
    if ctx.invoked_subcommand is not None:
        return None
    from curation.collect import serve
    from curation.config import resolve_home

    summary = serve(resolve_home(home), host=host, port=port, max_body=max_body, max_spool=max_spool,
                    store_timeout=store_timeout, announce=lambda line: click.echo(line, err=True))
    return summary, "curate collect: stopped; " + ", ".join(f"{k} {v}" for k, v in sorted(summary.items()))


@collect.group()
def token() -> None:
    """Bearer tokens for `curate collect` (stored as sha256; the token is shown once, at creation)."""


def _store(home: str | None):
    from curation.store import Store

    return Store.open(home)


@token.command("create")
@click.argument("name")
@home_option
@json_option
@reports
def create(name: str, home: str | None, as_json: bool):
    """Create a token NAME and print it (only now: it is stored hashed)."""
    from curation.collect.auth import create_token

    value = create_token(_store(home), name)
    return {"name": name, "token": value}, value


@token.command("list")
@home_option
@json_option
@reports
def list_(home: str | None, as_json: bool):
    """The tokens: name, when created, when revoked."""
    from curation.collect.auth import list_tokens

    tokens = list_tokens(_store(home))
    lines = [f"{t['name']}\tcreated {t['created_at']}" + (f"\trevoked {t['revoked_at']}" if t["revoked_at"] else "")
             for t in tokens]
    return {"tokens": tokens}, "\n".join(lines) or "no tokens"


@token.command("revoke")
@click.argument("name")
@home_option
@json_option
@reports
def revoke(name: str, home: str | None, as_json: bool):
    """Revoke NAME; a running `curate collect` refuses it within seconds."""
    from curation.collect.auth import revoke_token

    revoked = revoke_token(_store(home), name)
    return {"name": name, "revoked": revoked}, f"token {name} " + ("revoked" if revoked else "was revoked already")


COMMANDS = [collect]

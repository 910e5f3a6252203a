"""`curate collect`: an OTLP/HTTP and JSON receiver that writes conversations into the store.

    POST /v1/traces         OTLP/HTTP (protobuf or JSON, gzip or not): GenAI chat spans → conversations
    POST /v1/conversations  ingest records (OpenAI-style messages)
    POST /v1/feedback       feedback events

A request is acknowledged (2xx) only once its data is in the store or in the spool (see `writer`).
"""
from __future__ import annotations

import signal
import socket
from pathlib import Path
from typing import Any, Callable

from curation.collect.auth import check_exposure
from curation.collect.writer import Collector
from curation.config import IngestSettings
from curation.errors import ConfigError
from curation.ingest.records import Limits

__all__ = ["Collector", "serve"]


def serve(home: Path, host: str = "127.0.0.1", port: int = 4318, url: str | None = None, max_body: int = 10 << 20,
          max_spool: int = 1 << 30, announce: Callable[[str], None] = print, **collector: Any) -> dict[str, Any]:
    """Serve until SIGTERM or SIGINT, then answer what is in flight, write what is pending and return the counts."""
    import uvicorn

    from curation.collect.app import App

    writer = Collector(home, url, max_spool=max_spool, **collector)
    writer.start()
    try:
        check_exposure(host, writer.hashes)
    except Exception:
        writer.close()
        raise
    settings = IngestSettings.resolve(home)
    app = App(writer, Limits(settings.max_messages, settings.max_chars, settings.user_salt), max_body=max_body)
    app.ready = lambda: announce(f"curate collect: listening on http://{host}:{sock.getsockname()[1]} "
                                 f"(store {'up' if writer.store_up else 'DOWN: spooling'})")
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        writer.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; pick another --port or --host") from None
    config = uvicorn.Config(app, lifespan="on", log_level="warning", access_log=False, server_header=False,
                            date_header=False, timeout_keep_alive=30, timeout_graceful_shutdown=60)
    server = uvicorn.Server(config)
    # uvicorn re-raises the signal it stopped on once it is done; a handler of our own keeps that from killing the
    # process before the counts are reported
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    server.run(sockets=[sock])
    return getattr(app, "summary", None) or writer.close()

"""The embedded Argilla server: argilla-server 2.8.0 on SQLite with Curate's in-process search engine.

`serve()` runs it in this process (the `curate annotate serve` command); `start_background()` runs it in a child
process and returns a handle with `.url`, `.api_key` and `.stop()`; `add_user()` creates annotators.
Importing this package does not import argilla-server.
"""
from __future__ import annotations

import os

from annotations.server.background import ServerHandle, add_user, start_background
from annotations.server.settings import ServerSettings


def serve(home: str | os.PathLike | None = None, host: str | None = None, port: int | None = None,
          log_level: str = "warning", **overrides: object) -> None:
    """Serve HOME's Argilla until SIGINT/SIGTERM (blocks)."""
    from annotations.server import app

    app.serve(ServerSettings.resolve(home, host=host, port=port, **overrides), log_level=log_level)


__all__ = ["ServerHandle", "ServerSettings", "add_user", "serve", "start_background"]

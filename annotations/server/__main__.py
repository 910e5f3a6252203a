"""`python -m annotations.server serve|add-user`: the server-side process, one per Argilla home.

Library calls that must import argilla-server (which binds its settings at import) run through this entry point
so that the calling process stays free to serve or test other homes. Secrets travel in the environment, never argv.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from annotations.server.settings import ServerSettings
from curation.errors import CurateError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m annotations.server")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the embedded Argilla server until SIGINT/SIGTERM")
    serve.add_argument("--home")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--log-level", default="warning")
    add = sub.add_parser("add-user", help="create or update a user; the password is read from $CURATE_USER_PASSWORD")
    add.add_argument("--home")
    add.add_argument("name")
    add.add_argument("--role", default="annotator")
    add.add_argument("--workspace", action="append")
    args = parser.parse_args(argv)

    from annotations.server import app

    try:
        if args.command == "serve":
            app.serve(ServerSettings.resolve(args.home, host=args.host, port=args.port), log_level=args.log_level)
        else:
            password = os.environ.get("CURATE_USER_PASSWORD", "")
            result = app.add_user(ServerSettings.resolve(args.home), args.name, args.role, password, args.workspace)
            print(json.dumps(result))
    except CurateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Which browsers may talk to the embedded server: a Host check against DNS rebinding, and CORS.

argilla-server answers `Access-Control-Allow-Origin: *` and echoes any origin in its preflight, with credentials and
`X-Argilla-Api-Key` allowed; on loopback with Argilla's default key, any web page the user opens could then read and
change the datasets. This wrapper sits in front of the whole app:

- A request whose `Host` is not a name of this server gets 400: a page on a rebound DNS name (evil.example -> 127.0.0.1)
  sends its own name. The server's names are the bound address and port (on loopback also 127.0.0.1, localhost and
  [::1]; on 0.0.0.0 or :: any IP address, localhost and the machine's host name) plus `allowed_hosts`.
- A request from a browser page of another origin gets 403, preflight included, so it never sees an allow header.
  Allowed: the server's own origins (its scheme and Host, and the loopback names on its port) plus `allowed_origins`.
  Clients that are not browsers (the SDK, curl) send no `Origin` and are not affected.
"""
from __future__ import annotations

import ipaddress
import json
import socket
from typing import Any
from urllib.parse import urlsplit

from annotations.server.settings import ServerSettings, is_loopback
from curation.errors import ConfigError

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
WILDCARDS = ("0.0.0.0", "::", "")
PREFLIGHT_HEADERS = [
    (b"access-control-allow-methods", b"DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT"),
    (b"access-control-allow-credentials", b"true"),
    (b"access-control-max-age", b"600"),
]


def split_host(value: str) -> tuple[str, int | None]:
    """`name:port`, `[v6]:port` or a bare name -> (lower-case name without brackets, port or None)."""
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif value.count(":") == 1:
        name, port = value.split(":")
    else:  # a bare name, or a bare IPv6 address
        name, port = value, ""
    return name, (int(port) if port.isdigit() else None)


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _origin(value: str) -> str:
    """A configured origin in the form browsers send: scheme://host[:port], lower case, no path."""
    parts = urlsplit(value.strip().lower().rstrip("/"))
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query:
        raise ConfigError(f"allowed origin {value!r}: write it as a browser sends it, like https://tool.example or http://host:8080")
    return f"{parts.scheme}://{parts.netloc}"


class AccessPolicy:
    """The Host names and web origins the server at `settings.host:settings.port` accepts."""

    def __init__(self, settings: ServerSettings) -> None:
        self.port = settings.port
        bound = split_host(settings.host)[0]
        self.any_ip = bound in WILDCARDS
        names = set(LOOPBACK_NAMES) if is_loopback(bound) or self.any_ip else {bound}
        if self.any_ip:
            names.add(socket.gethostname().lower())
        self.names = names
        self.extra = [split_host(item) for item in settings.allowed_hosts]
        suffix = "" if self.port == 80 else f":{self.port}"
        local = is_loopback(bound) or self.any_ip
        loopback = {f"http://{'[::1]' if n == '::1' else n}{suffix}" for n in LOOPBACK_NAMES} if local else set()
        self.origins = loopback | {_origin(o) for o in settings.allowed_origins}

    def host_allowed(self, host: str) -> bool:
        name, port = split_host(host)
        if (name in self.names or (self.any_ip and _is_ip(name))) and (port or 80) == self.port:
            return True
        return any(name == n and (p is None or p == port) for n, p in self.extra)

    def origin_allowed(self, origin: str, host: str) -> bool:
        origin = origin.strip().lower()
        return origin in self.origins or origin in (f"http://{host.lower()}", f"https://{host.lower()}")


def guard(app: Any, policy: AccessPolicy) -> Any:
    """Wrap the ASGI app with `policy`; allowed cross-origin requests get this wrapper's CORS headers only."""

    async def guarded(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await app(scope, receive, send)
        headers = {k: v.decode("latin-1") for k, v in scope.get("headers", ())}
        host, origin = headers.get(b"host"), headers.get(b"origin")
        # A browser always sends Host; a client without one cannot be a rebound page.
        if host is not None and not policy.host_allowed(host):
            return await _refuse(scope, send, 400, f"this server does not answer to the host name {host!r} (a guard "
                                 "against DNS rebinding); add the name to CURATE_ANNOTATE_ALLOWED_HOSTS to allow it")
        if origin is None:
            return await app(scope, receive, send)
        if not policy.origin_allowed(origin, host or ""):
            return await _refuse(scope, send, 403, f"pages from {origin!r} may not use this server; add the origin "
                                 "to CURATE_ANNOTATE_ALLOWED_ORIGINS to allow it")
        allow = [(b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"Origin")]
        if scope.get("method") == "OPTIONS" and b"access-control-request-method" in headers:
            requested = headers.get(b"access-control-request-headers", "").encode("latin-1")
            await send({"type": "http.response.start", "status": 200, "headers": [
                *allow, *PREFLIGHT_HEADERS, (b"access-control-allow-headers", requested), (b"content-length", b"0")]})
            return await send({"type": "http.response.body", "body": b""})

        async def send_with_cors(message: dict) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if not k.lower().startswith(b"access-control-")]
                message = {**message, "headers": [*kept, *allow, (b"access-control-allow-credentials", b"true")]}
            await send(message)

        return await app(scope, receive, send_with_cors)

    return guarded


async def _refuse(scope: dict, send: Any, status: int, message: str) -> None:
    if scope["type"] == "websocket":
        return await send({"type": "websocket.close", "code": 1008})
    body = json.dumps({"detail": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})

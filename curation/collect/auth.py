"""Bearer tokens of `curate collect`: created once (the token is shown then and never again), stored as sha256, revocable.

A store where no token was ever created lets a server on loopback accept requests without one (and refuses any
other bind); once a token exists, every request needs `Authorization: Bearer TOKEN` with an active one. The server reloads the active hashes every few
seconds, so a revoked token stops working without a restart.
"""
from __future__ import annotations

import hashlib
import ipaddress
import secrets

import sqlalchemy as sa

from curation.errors import ConfigError, InputError
from curation.store import Store, utcnow
from curation.store.collect_tables import collect_tokens

PREFIX = "curate_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(store: Store, name: str) -> str:
    """A new token for `name` (shown once); a revoked name may be reused, an active one may not."""
    if not name or len(name) > 200:
        raise InputError("a token name needs 1–200 characters")
    token = PREFIX + secrets.token_urlsafe(32)
    with store.begin() as conn:
        row = conn.execute(sa.select(collect_tokens.c.revoked_at).where(collect_tokens.c.name == name)).first()
        if row is not None and row.revoked_at is None:
            raise InputError(f"a token named {name!r} exists already; revoke it first or pick another name")
        conn.execute(collect_tokens.delete().where(collect_tokens.c.name == name))
        conn.execute(collect_tokens.insert().values(name=name, token_hash=hash_token(token), created_at=utcnow()))
    return token


def list_tokens(store: Store) -> list[dict]:
    with store.connect() as conn:
        rows = conn.execute(sa.select(collect_tokens.c.name, collect_tokens.c.created_at, collect_tokens.c.revoked_at)
                            .order_by(collect_tokens.c.name))
        return [{"name": r.name, "created_at": r.created_at, "revoked_at": r.revoked_at} for r in rows]


def revoke_token(store: Store, name: str) -> bool:
    """Revoke `name`; False when it was revoked already. An unknown name is an error."""
    with store.begin() as conn:
        row = conn.execute(sa.select(collect_tokens.c.revoked_at).where(collect_tokens.c.name == name)).first()
        if row is None:
            raise InputError(f"no token named {name!r}; `curate collect token list` shows them")
        if row.revoked_at is not None:
            return False
        conn.execute(collect_tokens.update().where(collect_tokens.c.name == name).values(revoked_at=utcnow()))
    return True


def active_hashes(store: Store) -> frozenset[str] | None:
    """The hashes of the active tokens; None when no token was ever created (then loopback needs none). Once one
    exists, revoking every token closes the server rather than opening it."""
    with store.connect() as conn:
        rows = conn.execute(sa.select(collect_tokens.c.token_hash, collect_tokens.c.revoked_at)).all()
    return frozenset(r.token_hash for r in rows if r.revoked_at is None) if rows else None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, hashes: frozenset[str] | None) -> None:
    """Refuse to listen beyond loopback while any request would be accepted without a token."""
    if hashes is None and not is_loopback(host):
        raise ConfigError(f"refusing to listen on {host} without a token: anyone who reaches it could write "
                          "conversations; create one with `curate collect token create NAME`, or serve on 127.0.0.1")


def authorized(header: bytes | None, hashes: frozenset[str] | None) -> bool:
    """Whether an `Authorization` header value is allowed (any request is while no token was ever created)."""
    if hashes is None:
        return True
    if header is None or not header[:7].lower() == b"bearer ":
        return False
    return hash_token(header[7:].strip().decode("latin-1")) in hashes

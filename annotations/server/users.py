"""Users of the embedded server, created through argilla-server's own models and password hashing.

Runs only in a process whose environment names the server's home (see `app.configure`), because argilla-server
binds its database when it is imported.
"""
from __future__ import annotations

import logging
import os

from sqlalchemy import select

from annotations.server.settings import DEFAULT_WORKSPACE, ServerSettings
from curation.errors import ConfigError

_LOGGER = logging.getLogger("curate.argilla")
ROLES = ("annotator", "admin", "owner")


async def _workspace(db, name: str):
    from argilla_server.models import Workspace

    found = (await db.execute(select(Workspace).filter_by(name=name))).scalar_one_or_none()
    if found is None:
        found = Workspace(name=name)
        db.add(found)
        await db.flush()
    return found


async def ensure_owner(settings: ServerSettings) -> None:
    """The owner exists and its API key and password are the configured ones (the environment is the truth)."""
    from argilla_server.contexts import accounts
    from argilla_server.database import AsyncSessionLocal
    from argilla_server.models import User, UserRole

    async with AsyncSessionLocal() as db:
        other = await accounts.get_user_by_api_key(db, settings.api_key)
        if other is not None and other.username != settings.owner:
            raise ConfigError(f"the configured API key already belongs to user {other.username!r}; choose another")
        owner = await accounts.get_user_by_username(db, settings.owner)
        if owner is None:
            workspace = await _workspace(db, DEFAULT_WORKSPACE)
            await User.create(
                db,
                first_name=settings.owner,
                username=settings.owner,
                role=UserRole.owner,
                api_key=settings.api_key,
                password_hash=accounts.hash_password(settings.owner_password),
                workspaces=[workspace],
            )
            return
        changes = {}
        if owner.api_key != settings.api_key:
            changes["api_key"] = settings.api_key
        if not accounts.verify_password(settings.owner_password, owner.password_hash):
            changes["password_hash"] = accounts.hash_password(settings.owner_password)
        if owner.role != UserRole.owner:
            changes["role"] = UserRole.owner
        if changes:
            await owner.update(db, **changes)


async def add_user(name: str, role: str, password: str, workspaces: list[str] | None = None) -> dict:
    """Create a user (or update its role and password) and make it a member of the workspaces.

    With no workspaces given, the user joins every existing workspace: in the embedded server a small team
    rates everything. Returns {"user", "role", "workspaces", "created"}; never the password or API key.
    """
    from argilla_server.contexts import accounts
    from argilla_server.database import AsyncSessionLocal
    from argilla_server.models import User, UserRole, Workspace, WorkspaceUser

    if role not in ROLES:
        raise ConfigError(f"role {role!r}: use one of {', '.join(ROLES)}")
    if len(password) < 8:
        raise ConfigError(f"the password for {name!r} needs at least 8 characters")
    async with AsyncSessionLocal() as db:
        if workspaces:
            chosen = [await _workspace(db, w) for w in workspaces]
        else:
            chosen = list((await db.scalars(select(Workspace))).all()) or [await _workspace(db, DEFAULT_WORKSPACE)]
        await db.commit()
        user = await accounts.get_user_by_username(db, name)
        created = user is None
        if created:
            user = await User.create(
                db, first_name=name, username=name, role=UserRole(role), password_hash=accounts.hash_password(password)
            )
        else:
            await user.update(db, role=UserRole(role), password_hash=accounts.hash_password(password))
        member_of = set(
            (await db.scalars(select(WorkspaceUser.workspace_id).where(WorkspaceUser.user_id == user.id))).all()
        )
        for workspace in chosen:
            if workspace.id not in member_of:
                db.add(WorkspaceUser(workspace_id=workspace.id, user_id=user.id))
        await db.commit()
        return {"user": name, "role": role, "workspaces": sorted(w.name for w in chosen), "created": created}


async def ensure_config_users(settings: ServerSettings) -> None:
    """Users listed in curate.toml as [annotate.users.NAME] with role and password_env (or password)."""
    for name, spec in settings.users.items():
        password = os.environ.get(spec.get("password_env", ""), "") or spec.get("password", "")
        if not password:
            raise ConfigError(
                f"curate.toml [annotate.users.{name}]: set password_env to the variable that holds its password"
            )
        await add_user(name, spec.get("role", "annotator"), password, spec.get("workspaces"))
        _LOGGER.info("user %s ready (%s)", name, spec.get("role", "annotator"))

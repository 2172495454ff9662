r"""Test helpers: a throwaway PostgreSQL server, and two first sign-ins of one account at once.

:func:`postgres_server` ``initdb``\ s into a temporary folder, starts PostgreSQL on a free
127.0.0.1 port with trust authentication (loopback only), yields its URL, then stops it and
removes the folder; it yields ``None`` when PostgreSQL's binaries (Debian's ``postgresql``
package) are not installed. As root, the server runs as the ``postgres`` user (PostgreSQL
refuses to run as root).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import anyio
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from keyloom_core import Profile, ProviderSpec, TokenSet, configure_provider, define_keyloom
from keyloom_core.users import User, Users

from .adapter import SQLAlchemyAdapter
from .models import UserRow, metadata

__all__ = ["count_users", "postgres_server", "race_first_logins", "reset_store_tables"]


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(candidates[-1]) if candidates else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def postgres_server() -> Iterator[str | None]:
    """A PostgreSQL server for the block: its ``postgresql+asyncpg://`` URL, or ``None``."""
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        yield None
        return
    folder = Path(tempfile.mkdtemp(prefix="keyloom-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres" if _has_user("postgres") else "nobody")
        os.chown(folder, account.pw_uid, account.pw_gid)
        prefix = ["runuser", "-u", account.pw_name, "--"]
    data = folder / "data"
    port = _free_port()

    def run(*args: str) -> None:
        # PostgreSQL's own binaries, found above, and fixed arguments; no shell.
        subprocess.run([*prefix, *args], check=True, capture_output=True, timeout=120)  # noqa: S603

    try:
        run(initdb, "-D", str(data), "-U", "keyloom", "--auth=trust", "-E", "UTF8", "--no-sync")
        options = f"-h 127.0.0.1 -p {port} -k {folder} -c fsync=off"
        run(pg_ctl, "-D", str(data), "-o", options, "-l", str(folder / "log"), "-w", "start")
        try:
            yield f"postgresql+asyncpg://keyloom@127.0.0.1:{port}/postgres"
        finally:
            run(pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


# -- two first sign-ins of one account at once, through the core's rules ------------------

SPEC = ProviderSpec(
    id="example",
    name="Example",
    authorize_url="https://example.invalid/authorize",
    token_url="https://example.invalid/token",
    profile_url="https://example.invalid/userinfo",
    known_scopes={"profile"},
    default_scopes={"profile"},
)


async def race_first_logins(adapter: SQLAlchemyAdapter, account_id: str) -> set[str]:
    """Sign the same new account in twice at once; the ids of the users it resolved to."""
    keyloom = define_keyloom(
        providers=[configure_provider(SPEC, client_id="id", client_secret="secret")],
        secret="s" * 40,
        base_url="http://127.0.0.1:8000",
        autoload=False,
        adapter=adapter,
    )
    users = keyloom.users
    if not isinstance(users, Users):  # pragma: no cover - define_keyloom was given one
        msg = "no adapter"
        raise TypeError(msg)
    profile = Profile(provider_id="example", id=account_id, name="Ada")
    tokens = TokenSet(access_token="at", expires_at=2_000_000_000.0)
    seen: list[User] = []

    async def one() -> None:
        seen.append(await users.sign_in("example", profile, tokens, frozenset({"profile"})))

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(one)
            tasks.start_soon(one)
    return {user.id for user in seen}


async def count_users(adapter: SQLAlchemyAdapter) -> int:
    """How many users the database holds."""
    async with adapter.engine.connect() as connection:
        return int(await connection.scalar(select(func.count()).select_from(UserRow)) or 0)




async def reset_store_tables(engine: AsyncEngine) -> None:
    """Empty the shared store's tables (``keyloom_store_*``), every namespace."""
    async with engine.begin() as connection:
        for table in reversed(metadata.sorted_tables):
            if table.name.startswith("keyloom_store_"):
                await connection.execute(delete(table))

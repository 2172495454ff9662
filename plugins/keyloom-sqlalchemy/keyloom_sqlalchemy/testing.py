r"""Test helpers: a throwaway PostgreSQL server, and two first sign-ins of one account at once.

:func:`postgres_server` ``initdb``\ s into a temporary folder, starts PostgreSQL on a free
127.0.0.1 port with trust authentication (loopback only), yields its URL, then stops it and
removes the folder; it yields ``None`` when PostgreSQL's binaries (Debian's ``postgresql``
package) are not installed. As root, the server runs as the ``postgres`` user (PostgreSQL
refuses to run as root). :func:`postgres_process` yields the :class:`PostgresServer`
itself, which a test may stop and start again (an outage).
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

__all__ = [
    "PostgresServer",
    "count_users",
    "postgres_process",
    "postgres_server",
    "race_first_logins",
    "reset_store_tables",
]


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


class PostgresServer:
    """A throwaway PostgreSQL cluster on 127.0.0.1 that a test may stop and start again.

    Attributes:
        url: Its ``postgresql+asyncpg://`` URL (the port stays the same across restarts).
    """

    def __init__(self, initdb: str, pg_ctl: str, folder: Path) -> None:
        self._pg_ctl = pg_ctl
        self._folder = folder
        self._data = folder / "data"
        self._prefix: list[str] = []
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres" if _has_user("postgres") else "nobody")
            os.chown(folder, account.pw_uid, account.pw_gid)
            self._prefix = ["runuser", "-u", account.pw_name, "--"]
        self._port = _free_port()
        self.url = f"postgresql+asyncpg://keyloom@127.0.0.1:{self._port}/postgres"
        self.running = False
        self._run(
            initdb,
            "-D",
            str(self._data),
            "-U",
            "keyloom",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        )

    def _run(self, *args: str) -> None:
        # PostgreSQL's own binaries, found on this machine, and fixed arguments; no shell.
        command = [*self._prefix, *args]
        subprocess.run(command, check=True, capture_output=True, timeout=120)  # noqa: S603

    def start(self) -> None:
        """Start the server (waits until it accepts connections)."""
        options = f"-h 127.0.0.1 -p {self._port} -k {self._folder} -c fsync=off"
        log = str(self._folder / "log")
        self._run(self._pg_ctl, "-D", str(self._data), "-o", options, "-l", log, "-w", "start")
        self.running = True

    def stop(self) -> None:
        """Stop the server (fast shutdown: open connections are cut)."""
        if self.running:
            self._run(self._pg_ctl, "-D", str(self._data), "-m", "fast", "-w", "stop")
            self.running = False


@contextlib.contextmanager
def postgres_process() -> Iterator[PostgresServer | None]:
    """A running :class:`PostgresServer` for the block, or ``None`` without PostgreSQL."""
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        yield None
        return
    folder = Path(tempfile.mkdtemp(prefix="keyloom-pg-"))
    try:
        server = PostgresServer(initdb, pg_ctl, folder)
        server.start()
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def postgres_server() -> Iterator[str | None]:
    """A PostgreSQL server for the block: its ``postgresql+asyncpg://`` URL, or ``None``."""
    with postgres_process() as server:
        yield None if server is None else server.url


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

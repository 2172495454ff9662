"""A real PostgreSQL server on 127.0.0.1 for the ``postgres`` tests, started and stopped here.

``initdb`` into a temporary folder, a free port, trust authentication on loopback only; the
server is stopped and the folder removed afterwards. Without PostgreSQL's binaries (Debian's
``postgresql`` package, which ``scripts/test.sh`` installs) the tests are skipped, saying so.
As root, the server runs as the ``postgres`` user (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import anyio
import pytest
from keyloom_sqlalchemy import SQLAlchemyAdapter, UserRow
from sqlalchemy import func, select

from keyloom_core import Profile, ProviderSpec, TokenSet, configure_provider, define_keyloom
from keyloom_core.users import User, Users


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


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("PostgreSQL is not installed here (initdb/pg_ctl); apt-get install postgresql")
    folder = Path(tempfile.mkdtemp(prefix="keyloom-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres" if _has_user("postgres") else "nobody")
        os.chown(folder, account.pw_uid, account.pw_gid)
        prefix = ["runuser", "-u", account.pw_name, "--"]
    data = folder / "data"
    port = _free_port()

    def run(*args: str) -> None:
        subprocess.run([*prefix, *args], check=True, capture_output=True, timeout=120)

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
    assert isinstance(users, Users)
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


@pytest.fixture
def race() -> Callable[[SQLAlchemyAdapter, str], Awaitable[set[str]]]:
    return race_first_logins


@pytest.fixture
def users_in() -> Callable[[SQLAlchemyAdapter], Awaitable[int]]:
    return count_users

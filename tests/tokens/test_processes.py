"""Separate app processes sharing one store (SQLite file or redis-server) and one emulator.

The emulator runs in this test's event loop on 127.0.0.1; the app processes are
``python _child.py`` subprocesses, released together once both are set up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from keyloom_core import Keyloom
from keyloom_core.testing.emulator import TokenFailure
from keyloom_core.tokens import SQLiteTokenStore, TokenManager, TokenStore

pytestmark = pytest.mark.anyio

SECRET = "token-store-test-secret-0123456789-abcdefghij"


ROOT = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("_child.py")


def child_env() -> dict[str, str]:
    """This environment, with the repository and the TikTok plugin importable."""
    env = dict(os.environ)
    paths = [str(ROOT), str(ROOT / "plugins" / "keyloom-tiktok")]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def child_command(kind: str, location: str, origin: str, account: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(CHILD),
        "--store",
        kind,
        "--location",
        location,
        "--origin",
        origin,
        "--account",
        account,
        *extra,
    ]


def _store(kind: str, location: str) -> TokenStore:
    if kind == "sqlite":
        return SQLiteTokenStore(location, secret=SECRET)
    from keyloom_core.tokens.redis import RedisTokenStore

    return RedisTokenStore(location, secret=SECRET)


@pytest.fixture(params=["sqlite", "redis"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    if request.param == "redis":
        return "redis", request.getfixturevalue("redis_url")
    return "sqlite", str(tmp_path / "tokens.db")


async def _signed_in(
    kind: str, location: str, make_keyloom: Callable[..., Keyloom], login: Any
) -> tuple[str, Any]:
    store = _store(kind, location)
    try:
        manager = TokenManager(store)
        keyloom = make_keyloom(manager.plugin)
        manager.bind(keyloom)
        async with keyloom:
            result = await login(keyloom)
    finally:
        await store.aclose()
    return result.profile.id, result


async def _run_children(
    commands: list[list[str]], env: dict[str, str], *, together: bool
) -> list[dict[str, Any]]:
    processes = [
        await anyio.open_process(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        for cmd in commands
    ]
    outputs: list[dict[str, Any]] = []
    try:
        with anyio.fail_after(60):
            if together:
                for process in processes:  # wait until each is set up...
                    assert process.stdout is not None
                    line = await _read_line(process.stdout)
                    assert line == "ready", line
                for process in processes:  # ...then release them at once
                    assert process.stdin is not None
                    await process.stdin.send(b"go\n")
            for process in processes:
                assert process.stdout is not None
                line = await _read_line(process.stdout)
                assert await process.wait() == 0
                outputs.append(json.loads(line))
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
            await process.aclose()
    return outputs


async def _read_line(stream: Any) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = await stream.receive(1)
        if not chunk:
            break
        data += chunk
    return data.decode().strip()


async def test_two_processes_refresh_an_expiring_token_once(
    location: tuple[str, str],
    emulator: Any,
    make_keyloom: Callable[..., Keyloom],
    login: Any,
) -> None:
    kind, where = location
    account, result = await _signed_in(kind, where, make_keyloom, login)
    emulator.access_token_ttl = 86_400
    emulator.refresh_delay = 0.5  # both processes are surely waiting on one refresh
    # An hour later (the children's clock), the 600 s access token has expired.
    command = child_command(kind, where, emulator.url, account, "--clock-offset", "3600", "--wait")
    outputs = await _run_children([command, command], child_env(), together=True)
    assert emulator.refresh_requests == 1
    assert emulator.refreshes == 1
    tokens = {out["token"] for out in outputs}
    assert len(tokens) == 1, outputs
    (token,) = tokens
    assert token != result.tokens.access_token
    store = _store(kind, where)
    try:
        grant = await store.get("tiktok", account)
    finally:
        await store.aclose()
    assert grant is not None
    assert grant.version == 2
    assert grant.tokens.access_token == token
    # The rotated refresh token is the one stored; the old one is dead at the provider.
    assert grant.tokens.refresh_token != result.tokens.refresh_token
    old = emulator.book.refresh(
        result.tokens.refresh_token, client_id=emulator.default_app.client_key
    )
    assert old is TokenFailure.REVOKED


async def test_tokens_survive_a_process_restart(
    location: tuple[str, str],
    emulator: Any,
    make_keyloom: Callable[..., Keyloom],
    login: Any,
) -> None:
    kind, where = location
    account, result = await _signed_in(kind, where, make_keyloom, login)  # this process
    # A new process reads them back: same token, no refresh.
    command = child_command(kind, where, emulator.url, account)
    (first,) = await _run_children([command], child_env(), together=False)
    assert first == {"token": result.tokens.access_token, "version": 1}
    # A process refreshes (its clock is an hour ahead); the next process sees the result.
    emulator.access_token_ttl = 86_400
    later = child_command(kind, where, emulator.url, account, "--clock-offset", "3600")
    (second,) = await _run_children([later], child_env(), together=False)
    (third,) = await _run_children([later], child_env(), together=False)
    assert second["version"] == 2
    assert third == second
    assert emulator.refreshes == 1

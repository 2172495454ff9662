"""Cancellation: a browser that disconnects in the middle of the callback.

The emulator holds the token (or user-info) request at a gate; the browser sends the
callback, waits until the app is inside that provider call, then aborts. Afterwards no task,
no checked-out connection of the Keyloom HTTP client and no session is left: no session
cookie was issued, ``on_login`` never ran, and (when the token call was the one cut) the
emulator never consumed the code.

The app runs with ``handler_cancellation=True`` (aiohttp then cancels the handler when its
client goes away). With aiohttp's default (``False``) the handler finishes its work for a
client that is gone: that case is checked for leaks too.
"""

from __future__ import annotations

import asyncio

import aiohttp
import anyio
import pytest
import stresskit
import yarl
from keyloom_tiktok.emulator import DEFAULT_CLIENT_KEY, TOKEN_PATH, USER_INFO_PATH

from keyloom_core.testing.emulator import CodeFailure

pytestmark = pytest.mark.anyio

TOLERANCE = 2


async def _abort_mid_callback(stack: stresskit.Stack, gate: stresskit.Gate) -> stresskit.Started:
    """Start and authorize, send the callback, and drop the connection inside the gate."""
    async with stresskit.bare_client() as client:
        started = await stresskit.start_and_authorize(client, stack)
    async with stresskit.bare_client() as doomed:

        async def callback() -> None:
            async with doomed.get(
                yarl.URL(started.callback_url, encoded=True),
                headers={"Cookie": f"__keyloom_oauth={started.state_cookie}"},
                allow_redirects=False,
            ) as resp:
                await resp.read()

        task = asyncio.ensure_future(callback())
        await asyncio.wait_for(gate.entered.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    return started


async def _warm(stack: stresskit.Stack) -> tuple[int, int]:
    """One complete login (so pools exist), then the settled task and fd counts."""
    async with stresskit.browser() as browser:
        assert (await stresskit.browse_login(browser, stack)).label == "success"
    await stresskit.settle(lambda: stresskit.pool(stack.keyloom)[0] == 0)
    await asyncio.sleep(0.1)
    return stresskit.task_count(), stresskit.open_fds()


@pytest.mark.parametrize("path", [TOKEN_PATH, USER_INFO_PATH], ids=["token", "userinfo"])
async def test_client_disconnect_mid_callback_leaves_nothing_behind(path):
    gate = stresskit.Gate(path)
    async with stresskit.stress_stack(
        handler_cancellation=True, emulator_middlewares=[gate]
    ) as stack:
        gate.release.set()
        tasks_before, fds_before = await _warm(stack)
        sessions_before, logins_before = stack.responses.sessions_issued, len(stack.logins)
        callbacks_before = stack.responses.by_route["callback"]
        gate.release.clear()
        gate.entered.clear()

        started = await _abort_mid_callback(stack, gate)

        # the provider call was cut: the emulator saw its request cancelled, not answered
        assert await stresskit.settle(lambda: gate.cancelled == 1, timeout=5)
        assert await stresskit.settle(
            lambda: (
                stresskit.pool(stack.keyloom)[0] == 0
                and stresskit.task_count() <= tasks_before + TOLERANCE
                and stresskit.open_fds() <= fds_before + TOLERANCE
            ),
            timeout=5,
        ), (stresskit.pool(stack.keyloom), stresskit.task_count(), tasks_before)
        assert stresskit.pool(stack.keyloom)[0] == 0
        assert stresskit.task_count() <= tasks_before + TOLERANCE
        assert stresskit.open_fds() <= fds_before + TOLERANCE
        # no session: no answer was produced, no cookie issued, on_login never ran
        assert stack.responses.by_route["callback"] == callbacks_before
        assert stack.responses.sessions_issued == sessions_before
        assert len(stack.logins) == logins_before
        assert stack.emulator is not None
        if path == TOKEN_PATH:
            found = stack.emulator.book.inspect_code(
                started.params["code"],
                client_id=DEFAULT_CLIENT_KEY,
                redirect_uri=stack.auth("/oauth/tiktok/callback"),
            )
            assert found is not CodeFailure.USED
        # and the app is healthy afterwards
        gate.release.set()
        async with stresskit.browser() as browser:
            assert (await stresskit.browse_login(browser, stack)).label == "success"


async def test_disconnect_with_aiohttp_default_still_leaks_nothing():
    """Without handler cancellation the handler completes for nobody; once it has, nothing
    is left running or checked out, and the browser that left holds no session."""
    gate = stresskit.Gate(TOKEN_PATH)
    async with stresskit.stress_stack(emulator_middlewares=[gate]) as stack:
        gate.release.set()
        tasks_before, fds_before = await _warm(stack)
        gate.release.clear()
        gate.entered.clear()
        callbacks_before = stack.responses.by_route["callback"]
        await _abort_mid_callback(stack, gate)
        gate.release.set()
        assert await stresskit.settle(
            lambda: stack.responses.by_route["callback"] == callbacks_before + 1, timeout=10
        )
        assert await stresskit.settle(
            lambda: (
                stresskit.pool(stack.keyloom)[0] == 0
                and stresskit.task_count() <= tasks_before + TOLERANCE
                and stresskit.open_fds() <= fds_before + TOLERANCE
            ),
            timeout=5,
        ), (stresskit.pool(stack.keyloom), stresskit.task_count(), tasks_before)
        assert gate.cancelled == 0
        assert gate.passed == 2
        assert stack.responses.server_errors == 0


async def test_many_disconnects_under_load_leave_nothing_behind():
    """50 browsers abort their callbacks at random moments while 50 others sign in."""
    async with stresskit.stress_stack(
        handler_cancellation=True,
        faults=stresskit.fault_injector(0.0),
    ) as stack:
        assert stack.emulator is not None
        stack.emulator.faults.delay_seconds = 0.05
        stack.emulator.faults.kinds = ["delay"]
        stack.emulator.faults.rate = 1.0  # every provider call takes a little while
        tasks_before, fds_before = await _warm(stack)

        async def quitter(i: int) -> None:
            async with stresskit.bare_client() as client:
                started = await stresskit.start_and_authorize(client, stack)
                try:
                    with anyio.move_on_after(0.01 + (i % 10) * 0.012):
                        await stresskit.call(
                            client,
                            "GET",
                            started.callback_url,
                            encoded=True,
                            cookies={"__keyloom_oauth": started.state_cookie},
                        )
                except (OSError, aiohttp.ClientError):
                    pass  # the app may drop the connection first

        async with anyio.create_task_group() as group:
            for i in range(50):
                group.start_soon(quitter, i)
            group.start_soon(lambda: stresskit.run_logins(stack, logins=50, concurrency=50))

        def settled() -> bool:
            acquired, idle = stresskit.pool(stack.keyloom)
            return (
                acquired == 0
                and stresskit.task_count() <= tasks_before + idle + TOLERANCE
                and stresskit.open_fds() <= fds_before + 2 * idle + TOLERANCE
            )

        assert await stresskit.settle(settled, timeout=10), (
            stresskit.pool(stack.keyloom),
            stresskit.task_count(),
            tasks_before,
            stresskit.open_fds(),
            fds_before,
        )
        assert stack.responses.server_errors == 0
        assert stack.emulator.ledger.replays() == []

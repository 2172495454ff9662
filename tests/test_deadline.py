"""The watchdog that enforces the deadlines of provider calls, one timer per event loop."""

from __future__ import annotations

import asyncio
import gc
import time
import weakref

import anyio
import pytest

from keyloom_core._deadline import call_deadline, watchdog
from keyloom_core._dispatch import Operation

pytestmark = pytest.mark.anyio


async def test_a_deadline_cancels_its_operation_in_time() -> None:
    started = time.monotonic()
    with Operation() as operation:
        operation.start("slow", 0.05)
        assert call_deadline() == operation.deadline
        await anyio.sleep(5)
    assert operation.struck
    assert operation.cancel_scope.cancelled_caught
    assert time.monotonic() - started < 1
    assert call_deadline() == float("inf")


async def test_an_earlier_deadline_is_not_left_waiting_for_a_later_one() -> None:
    started = time.monotonic()
    with Operation() as outer:
        outer.start("outer", 30)  # arms the loop's timer 30 s ahead
        with Operation() as inner:
            inner.start("inner", 0.05)
            await anyio.sleep(5)
        assert call_deadline() == outer.deadline
    assert inner.struck
    assert not outer.struck
    assert time.monotonic() - started < 1


async def test_a_call_that_starts_later_moves_the_deadline_on() -> None:
    with Operation() as operation:
        operation.start("first", 0.1)
        await anyio.sleep(0.07)
        operation.start("second", 0.1)  # a new call: its own full timeout
        await anyio.sleep(0.07)  # past the first call's deadline, within the second's
        assert not operation.struck
    assert not operation.cancel_scope.cancelled_caught


async def test_operations_that_end_in_time_are_never_struck() -> None:
    operations = []
    for _ in range(50):
        with Operation() as operation:
            operation.start("quick", 0.02)
        operations.append(operation)
    await anyio.sleep(0.05)
    assert not any(op.struck for op in operations)


def test_the_watchdog_does_not_keep_its_event_loop_alive() -> None:
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def one() -> None:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        with Operation() as operation:
            operation.start("quick", 30)  # its entry is still pending when the loop ends

    for _ in range(3):
        asyncio.run(one())
    gc.collect()
    assert [ref() for ref in loops] == [None, None, None]


async def test_operations_that_ended_do_not_pile_up_in_the_watchdog() -> None:
    loop = asyncio.get_running_loop()
    with Operation() as running:  # one operation under way through all the others
        running.start("long", 30)
        for _ in range(2_000):  # a bounded burst, as under load, each with a 30 s timeout
            with Operation() as operation:
                operation.start("quick", 30)
                operation.start("again", 30)  # a second call moves it, not adds it
        watched = len(watchdog(loop))
    assert watched == 1  # the one under way, not the 2,000 that ended
    assert len(watchdog(loop)) == 0
    assert not running.struck


async def test_an_operation_under_way_keeps_its_deadline_among_ended_ones() -> None:
    started = time.monotonic()
    with Operation() as slow:
        slow.start("slow", 0.05)
        for _ in range(200):  # ended entries, cleared several times while slow's stays
            with Operation() as operation:
                operation.start("quick", 0.01)
        await anyio.sleep(5)
    assert slow.struck
    assert time.monotonic() - started < 1


async def test_a_call_with_a_shorter_timeout_is_watched_by_it() -> None:
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    with Operation() as operation:
        operation.start("first", 30)
        operation.start("second", 0.05)  # another timeout: watched once, by the new one
        assert len(watchdog(loop)) == 1
        await anyio.sleep(5)
    assert operation.struck
    assert operation.hook == "second"
    assert time.monotonic() - started < 1
    assert len(watchdog(loop)) == 0

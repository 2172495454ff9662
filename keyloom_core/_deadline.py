"""Deadlines of provider calls: the one under way, and the watchdog that enforces them.

:class:`~keyloom_core._dispatch.Operation` makes itself the task's operation here (a
context variable, so it belongs to the task), and moves its deadline on each call; the
HTTP client reads the deadline before waiting out a ``Retry-After`` that the call would
not survive.

The :class:`Watchdog` of the event loop wakes operations whose deadline has passed. Each
operation used to arm a timer of its own and cancel it on the way out: about 14 k
instructions, twice a login (``benchmarks/bench_instructions.py``). Now an operation adds
one entry to the watchdog's heap, and the watchdog's single timer is armed for the earliest
deadline of an operation still under way. The entries of operations that end in time are
dropped in passes (:meth:`Watchdog.forget`), so the heap stays within about twice the
operations under way; the timer, armed for an entry dropped since, wakes for nothing and
arms for the oldest operation under way. A deadline is still enforced when it passes.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import weakref
from contextvars import ContextVar, Token
from typing import Protocol

__all__ = ["Timed", "Watchdog", "call_deadline", "enter", "leave", "watchdog"]

class Timed(Protocol):
    """What runs against a deadline: an operation, whose deadline moves with each call."""

    deadline: float


#: The task's operation under way. It is set once per operation, and each call only moves
#: the operation's deadline: setting a context variable on every call cost a login 5 of them
#: (a new context and token each).
_CURRENT: ContextVar[Timed | None] = ContextVar("keyloom_operation", default=None)


def call_deadline() -> float:
    """The current provider call's deadline on the event loop's clock (``inf`` if none)."""
    current = _CURRENT.get()
    return math.inf if current is None else current.deadline


def enter(current: Timed) -> Token[Timed | None]:
    """Make *current* the task's operation (until :func:`leave` with the token)."""
    return _CURRENT.set(current)


def leave(token: Token[Timed | None]) -> None:
    """Restore the operation that was under way before :func:`enter` gave *token*."""
    _CURRENT.reset(token)


class Watched(Protocol):
    """What the watchdog wakes: an operation with a deadline."""

    def expire(self, now: float) -> float | None:
        """Called once the deadline it was watched for has passed, at *now*.

        Returns the later deadline to watch instead (a later call started meanwhile), or
        ``None`` (it has acted on the deadline).
        """
        ...


#: Ended entries the heap may hold before it is cleared of them (and at most half of it).
_COMPACT_AFTER = 64

#: A watched operation, or ``None`` once it has ended (its entry is then skipped).
Ticket = list["Watched | None"]


class Watchdog:
    """Wakes the watched operations of one event loop when their deadlines pass.

    It keeps no reference to its loop (nor to the loop's timer handles, which hold one):
    the loop's entry in :func:`watchdog`'s weak mapping goes with the loop.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Ticket]] = []
        self._order = itertools.count()  # ties on the deadline never compare tickets
        self._armed_for = math.inf
        self._generation = 0  # of the timer armed last; an earlier one wakes for nothing
        self._ended = 0  # entries in the heap whose operation has ended

    def __repr__(self) -> str:
        return f"<Watchdog entries={len(self._heap)}>"

    def watch(self, loop: asyncio.AbstractEventLoop, deadline: float, ticket: Ticket) -> None:
        """Wake ``ticket[0]`` once *deadline* has passed, unless :meth:`forget` comes first."""
        heapq.heappush(self._heap, (deadline, next(self._order), ticket))
        if deadline < self._armed_for:
            self._arm(loop, deadline)

    def forget(self, ticket: Ticket) -> None:
        """The operation of *ticket* has ended: its deadline no longer matters.

        Its entry stays in the heap until the heap is half made of ended entries, and is
        then dropped with the others in one pass. Left to the timer, the heap held every
        operation of the last timeout (tens of thousands under load), which cost a login
        at concurrency 100 more CPU than the pass saves (``bench_login.py``).
        """
        ticket[0] = None
        self._ended += 1
        heap = self._heap
        if self._ended > _COMPACT_AFTER and 2 * self._ended > len(heap):
            heap[:] = [entry for entry in heap if entry[2][0] is not None]
            heapq.heapify(heap)
            self._ended = 0

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        self._generation += 1
        self._armed_for = when
        loop.call_at(when, self._wake, loop, self._generation)

    def _wake(self, loop: asyncio.AbstractEventLoop, generation: int) -> None:
        if generation != self._generation:  # armed again for an earlier deadline since
            return
        self._armed_for = math.inf
        now = loop.time()
        heap = self._heap
        # the entries that are due, and those of operations that have ended whatever their
        # deadline: the timer is then armed for the first operation still under way, exactly
        while heap and (heap[0][0] <= now or heap[0][2][0] is None):
            ticket = heapq.heappop(heap)[2]
            watched = ticket[0]
            if watched is None:  # it ended in time
                self._ended -= 1
                continue
            later = watched.expire(now)
            if later is not None:
                heapq.heappush(heap, (later, next(self._order), ticket))
        if heap:
            self._arm(loop, heap[0][0])


_WATCHDOGS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Watchdog] = (
    weakref.WeakKeyDictionary()
)


def watchdog(loop: asyncio.AbstractEventLoop) -> Watchdog:
    """The watchdog of *loop* (made on first use)."""
    found = _WATCHDOGS.get(loop)
    if found is None:
        found = _WATCHDOGS[loop] = Watchdog()
    return found

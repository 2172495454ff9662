"""Deadlines of provider calls: the one under way, and the watchdog that enforces them.

:class:`~keyloom_core._dispatch.Operation` makes itself the task's operation here (a
context variable, so it belongs to the task), and moves its deadline on each call; the
HTTP client reads the deadline before waiting out a ``Retry-After`` that the call would
not survive.

The :class:`Watchdog` of the event loop wakes operations whose deadline has passed. Each
operation used to arm a timer of its own and cancel it on the way out: about 14 k
instructions, twice a login (``benchmarks/bench_instructions.py``). Now the watchdog's
single timer is armed for the earliest deadline of an operation under way. Operations with
the same timeout reach their deadlines in the order their calls started, so the watchdog
keeps them in that order in a dict (one per timeout): an operation whose call starts moves
to the end, one that ends is removed, and the first is always the next due. A heap did
this before, with an entry (two objects) per operation left behind until a pass cleared
it; under load every object alive through a login's calls makes the garbage collector run
more often (``bench_login.py``'s GC column).
"""

from __future__ import annotations

import asyncio
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

    deadline: float

    def expire(self) -> None:
        """Called once its deadline has passed (it is no longer watched)."""
        ...


class Watchdog:
    """Wakes the watched operations of one event loop when their deadlines pass.

    It keeps no reference to its loop (nor to the loop's timer handles, which hold one):
    the loop's entry in :func:`watchdog`'s weak mapping goes with the loop.
    """

    def __init__(self) -> None:
        #: By timeout, the operations under way in the order of their deadlines.
        self._watched: dict[float, dict[Watched, None]] = {}
        self._armed_for = math.inf
        self._generation = 0  # of the timer armed last; an earlier one wakes for nothing

    def __repr__(self) -> str:
        return f"<Watchdog watching={len(self)}>"

    def __len__(self) -> int:
        """The operations watched."""
        return sum(map(len, self._watched.values()))

    def watch(self, loop: asyncio.AbstractEventLoop, watched: Watched, timeout: float) -> None:
        """Wake *watched* once its deadline (*timeout* from now) has passed.

        A call that starts moves its operation's deadline, and the operation to the end.
        """
        queue = self._watched.get(timeout)
        if queue is None:
            queue = self._watched[timeout] = {}
        else:
            queue.pop(watched, None)
        queue[watched] = None
        if watched.deadline < self._armed_for:
            self._arm(loop, watched.deadline)

    def forget(self, watched: Watched, timeout: float) -> None:
        """*watched*, watched with *timeout*, has ended: its deadline no longer matters."""
        queue = self._watched.get(timeout)
        if queue is not None:
            queue.pop(watched, None)

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        self._generation += 1
        self._armed_for = when
        loop.call_at(when, self._wake, loop, self._generation)

    def _wake(self, loop: asyncio.AbstractEventLoop, generation: int) -> None:
        if generation != self._generation:  # armed again for an earlier deadline since
            return
        self._armed_for = math.inf
        now = loop.time()
        earliest = math.inf
        for queue in self._watched.values():
            while queue:
                first = next(iter(queue))
                if first.deadline > now:  # the next due of this timeout
                    earliest = min(earliest, first.deadline)
                    break
                del queue[first]
                first.expire()
        if earliest < math.inf:
            self._arm(loop, earliest)


_WATCHDOGS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Watchdog] = (
    weakref.WeakKeyDictionary()
)


def watchdog(loop: asyncio.AbstractEventLoop) -> Watchdog:
    """The watchdog of *loop* (made on first use)."""
    found = _WATCHDOGS.get(loop)
    if found is None:
        found = _WATCHDOGS[loop] = Watchdog()
    return found

"""The deadline of the provider call under way, for code that plans its own waits.

:class:`~keyloom_core._dispatch.Operation` stores each call's deadline here (a context
variable, so it belongs to the task); the HTTP client reads it before waiting out a
``Retry-After`` that the call would not survive.
"""

from __future__ import annotations

import math
from contextvars import ContextVar

__all__ = ["call_deadline", "set_call_deadline"]

_DEADLINE: ContextVar[float] = ContextVar("keyloom_call_deadline", default=math.inf)


def call_deadline() -> float:
    """The current provider call's deadline on the event loop's clock (``inf`` if none)."""
    return _DEADLINE.get()


def set_call_deadline(deadline: float) -> None:
    """Record the current provider call's deadline (for this task and what it awaits)."""
    _DEADLINE.set(deadline)

"""Deprecated: sessions moved to :mod:`keyloom_core.web.sessions` (they are web-only)."""

from __future__ import annotations

import warnings
from typing import Any

from .web import sessions as _sessions

__all__ = _sessions.__all__


def __getattr__(name: str) -> Any:
    """Forward to :mod:`keyloom_core.web.sessions`, with a :class:`DeprecationWarning`."""
    value = getattr(_sessions, name)
    warnings.warn(
        f"keyloom_core.sessions.{name} moved: import it from keyloom_core.web.sessions",
        DeprecationWarning,
        stacklevel=2,
    )
    return value

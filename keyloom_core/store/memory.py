"""An in-process store: tests, scripts and single-process apps."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import attrs

from ._base import SessionRecord

if TYPE_CHECKING:
    from ..tokens._store import TokenStore

__all__ = ["MemoryStore"]


class MemoryStore:
    """A :class:`~keyloom_core.store.Store` in dicts: one process only, lost at exit.

    Use it in tests and single-process tools; an app with several processes needs
    :class:`~keyloom_core.store.SQLiteStore` or :class:`~keyloom_core.store.RedisStore`.

    :param namespace: the app's namespace (kept for symmetry; one dict per instance).
    :param clock: the time source.
    """

    def __init__(self, *, namespace: str = "app", clock: Callable[[], float] = time.time) -> None:
        self.namespace = namespace
        self._clock = clock
        self._states: dict[str, float] = {}
        self._sessions: dict[str, SessionRecord] = {}
        self._counters: dict[str, tuple[int, float]] = {}
        self._writes = 0

    def __repr__(self) -> str:
        return f"MemoryStore(namespace={self.namespace!r}, sessions={len(self._sessions)})"

    def _purge(self, now: float) -> None:
        self._writes += 1
        if self._writes % 256:
            return
        self._states = {k: e for k, e in self._states.items() if e > now}
        self._sessions = {k: r for k, r in self._sessions.items() if r.is_valid(now)}
        self._counters = {k: c for k, c in self._counters.items() if c[1] > now}

    async def use_once(self, key: str, expires_at: float) -> bool:
        """Record *key*; ``False`` if it was used and has not expired."""
        now = self._clock()
        self._purge(now)
        if self._states.get(key, 0.0) > now:
            return False
        self._states[key] = expires_at
        return True

    async def create_session(self, record: SessionRecord) -> None:
        """Keep *record*."""
        self._purge(self._clock())
        self._sessions[record.id] = record

    async def get_session(self, session_id: str) -> SessionRecord | None:
        """The record, or ``None``."""
        record = self._sessions.get(session_id)
        if record is None or not record.is_valid(self._clock()):
            return None
        return record

    async def touch_session(self, session_id: str, last_seen_at: float) -> bool:
        """Move the record's last use to *last_seen_at*."""
        record = self._sessions.get(session_id)
        if record is None:
            return False
        self._sessions[session_id] = attrs.evolve(record, last_seen_at=last_seen_at)
        return True

    async def delete_session(self, session_id: str) -> bool:
        """Forget the session."""
        return self._sessions.pop(session_id, None) is not None

    async def list_sessions(self, user_id: str) -> Sequence[SessionRecord]:
        """The user's live sessions, oldest first."""
        now = self._clock()
        found = [r for r in self._sessions.values() if r.user_id == user_id and r.is_valid(now)]
        return sorted(found, key=lambda r: r.created_at)

    async def delete_user_sessions(self, user_id: str) -> int:
        """Forget every session of the user."""
        doomed = [k for k, r in self._sessions.items() if r.user_id == user_id]
        for key in doomed:
            del self._sessions[key]
        return len(doomed)

    async def hit(self, key: str, window: float, amount: int = 1) -> tuple[int, float]:
        """Count one event in *key*'s fixed window."""
        now = self._clock()
        self._purge(now)
        count, reset = self._counters.get(key, (0, 0.0))
        if reset <= now:
            count, reset = 0, now + window
        self._counters[key] = (count + amount, reset)
        return count + amount, reset

    def token_store(self, *, secret: str, old_secrets: Sequence[str] = ()) -> TokenStore:
        """A :class:`~keyloom_core.tokens.MemoryTokenStore` (nothing is at rest to encrypt)."""
        del secret, old_secrets
        from ..tokens.memory import MemoryTokenStore  # noqa: PLC0415

        return MemoryTokenStore(clock=self._clock)

    async def aclose(self) -> None:
        """Nothing to release."""

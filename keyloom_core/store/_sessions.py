"""Server-side sessions on a store: lifetimes, sliding renewal, sign-out everywhere."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ..errors import ConfigurationError
from ._base import SessionRecord, Store, new_session_id

__all__ = ["SessionRegistry"]


class SessionRegistry:
    """The sessions of one app in its store; ``keyloom.sessions``.

    A session has two lifetimes: it ends *absolute_ttl* seconds after the sign-in
    whatever happens, and *idle_ttl* seconds after its last use. Each use found more
    than *touch_interval* seconds after the recorded one is written back (sliding
    renewal), so reading a session costs one store read, plus at most one write per
    interval.

    Without a store (stateless cookie sessions) nothing can be listed or revoked:
    :meth:`list` and :meth:`revoke_all` raise :class:`~keyloom_core.ConfigurationError`.
    *closable* is the store :meth:`aclose` releases (the app's store, even when sessions
    are stateless).

    Attributes:
        store: The store, or ``None`` for stateless sessions.
        absolute_ttl: Seconds from sign-in to the session's end.
        idle_ttl: Seconds without use that end the session.
        touch_interval: Seconds between two writes of the last use.
    """

    def __init__(
        self,
        store: Store | None,
        *,
        absolute_ttl: float,
        idle_ttl: float,
        touch_interval: float,
        clock: Callable[[], float] = time.time,
        closable: Store | None = None,
    ) -> None:
        self.store = store
        self._closable = closable if closable is not None else store
        self.absolute_ttl = absolute_ttl
        self.idle_ttl = idle_ttl
        self.touch_interval = touch_interval
        self._clock = clock

    @classmethod
    def stateless(cls) -> SessionRegistry:
        """The registry of stateless cookie sessions (nothing to list or revoke)."""
        return cls(None, absolute_ttl=30 * 24 * 3600.0, idle_ttl=3600.0, touch_interval=300.0)

    async def aclose(self) -> None:
        """Release the store's connections (it reconnects if used again)."""
        if self._closable is not None:
            await self._closable.aclose()

    def __repr__(self) -> str:
        kind = type(self.store).__name__ if self.store is not None else "stateless"
        return (
            f"SessionRegistry({kind}, absolute_ttl={self.absolute_ttl:g}, "
            f"idle_ttl={self.idle_ttl:g})"
        )

    @property
    def server_side(self) -> bool:
        """Whether sessions live in the store (and can be revoked)."""
        return self.store is not None

    def _need_store(self) -> Store:
        if self.store is None:
            msg = "stateless sessions cannot be listed or revoked"
            hint = "configure a store: define_keyloom(store=...)"
            raise ConfigurationError(msg, hint=hint)
        return self.store

    async def create(
        self,
        *,
        user: Mapping[str, Any],
        provider_id: str,
        provider_account_id: str,
        scopes: Iterable[str],
        now: float | None = None,
    ) -> SessionRecord:
        """Store a new session (a new id, always) for a completed sign-in.

        :raises TypeError: *user* holds values that are not JSON.
        :raises StoreUnavailableError: the store failed.
        """
        store = self._need_store()
        now = self._clock() if now is None else now
        user_id = str(user["id"])
        record = SessionRecord(
            id=new_session_id(user_id),
            user_id=user_id,
            user=user,
            provider_id=provider_id,
            provider_account_id=provider_account_id,
            scopes=scopes,
            created_at=now,
            expires_at=now + self.absolute_ttl,
            last_seen_at=now,
            idle_ttl=self.idle_ttl,
        )
        record.to_json()  # refuses a user object that is not JSON, whatever the store
        await store.create_session(record)
        return record

    async def get(self, session_id: str, *, now: float | None = None) -> SessionRecord | None:
        """The live session *session_id*, renewed if its last use is older than the interval.

        :raises StoreUnavailableError: the store failed.
        """
        store = self._need_store()
        now = self._clock() if now is None else now
        record = await store.get_session(session_id)
        if record is None or not record.is_valid(now):
            return None
        if now - record.last_seen_at >= self.touch_interval:
            if not await store.touch_session(session_id, now):
                return None  # deleted meanwhile (logout, revoke_all on another worker)
            record = SessionRecord(
                id=record.id,
                user_id=record.user_id,
                user=record.user,
                provider_id=record.provider_id,
                provider_account_id=record.provider_account_id,
                scopes=record.scopes,
                created_at=record.created_at,
                expires_at=record.expires_at,
                last_seen_at=now,
                idle_ttl=record.idle_ttl,
            )
        return record

    async def end(self, session_id: str) -> bool:
        """Delete one session (logout); ``True`` if it existed."""
        return await self._need_store().delete_session(session_id)

    async def list(
        self, user_id: str, *, provider_id: str | None = None
    ) -> Sequence[SessionRecord]:
        """The user's live sessions, oldest first (one per signed-in browser).

        :param provider_id: only the sessions signed in with this provider. Without a users
            adapter, a user id is the provider's account id, and two providers may use the
            same one: an app with several providers and no adapter names the provider.
        """
        records = await self._need_store().list_sessions(str(user_id))
        if provider_id is None:
            return records
        return [record for record in records if record.provider_id == provider_id]

    async def revoke_all(self, user_id: str, *, provider_id: str | None = None) -> int:
        """Sign the user out everywhere: delete all their sessions; returns how many.

        Every worker refuses those session cookies from the next request on.

        :param provider_id: only the sessions signed in with this provider (see
            :meth:`list`); they are deleted one by one, so a sign-in finishing meanwhile
            keeps its new session.
        """
        store = self._need_store()
        if provider_id is None:
            return await store.delete_user_sessions(str(user_id))
        ended = 0
        for record in await self.list(user_id, provider_id=provider_id):
            ended += await store.delete_session(record.id)
        return ended

"""The store contract: what every process of an app shares, and its typed errors."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import attrs

from ..errors import KeyloomError

if TYPE_CHECKING:
    from ..tokens._store import TokenStore

__all__ = [
    "SessionRecord",
    "Store",
    "StoreUnavailableError",
    "TooManyRequestsError",
    "new_session_id",
    "session_tag",
    "tag_of",
]


class StoreUnavailableError(KeyloomError):
    """The shared store did not answer (Redis down, SQLite locked too long, disk full…).

    Web integrations answer ``503 {"error": "store_unavailable", ...}``; nothing secret
    (no key, no session id) is in the message.
    """

    code = "store_unavailable"
    status = 503
    default_hint = "The app's shared store is unreachable or busy; try again in a moment."


class TooManyRequestsError(KeyloomError):
    """A client went over an inbound rate limit; answered ``429`` with ``Retry-After``.

    Attributes:
        retry_after: Whole seconds until the client may try again (at least 1).
        limit: Which limit was hit (``"start"``, ``"callback"``, ``"failed_callback"``).
    """

    code = "too_many_requests"
    status = 429
    default_hint = "Wait for the number of seconds in the Retry-After header."

    def __init__(self, message: str, *, retry_after: int, limit: str) -> None:
        super().__init__(message)
        self.retry_after = max(1, retry_after)
        self.limit = limit


def _scopes(value: Iterable[str]) -> frozenset[str]:
    return frozenset(value)


def _user(value: Mapping[str, Any]) -> dict[str, Any]:
    return dict(value)


@attrs.frozen
class SessionRecord:
    """A server-side session, as a store keeps it.

    Attributes:
        id: The opaque session id (``<user tag>.<random>``, see :func:`new_session_id`).
        user_id: The user's id.
        user: The protocol's user object (``id``, ``name``, ``email``…); hidden from repr.
        provider_id: The provider the user signed in with.
        provider_account_id: The provider's id for the user.
        scopes: The scopes the user granted.
        created_at: When the user signed in (epoch seconds).
        expires_at: The absolute end of the session (epoch seconds).
        last_seen_at: The last recorded use (epoch seconds), renewed at most once per
            touch interval.
        idle_ttl: Seconds without use after which the session ends.
    """

    id: str = attrs.field(repr=False)
    user_id: str
    user: dict[str, Any] = attrs.field(repr=False, eq=False, converter=_user)
    provider_id: str
    provider_account_id: str
    scopes: frozenset[str] = attrs.field(converter=_scopes)
    created_at: float
    expires_at: float
    last_seen_at: float
    idle_ttl: float

    @property
    def valid_until(self) -> float:
        """When the session ends if it is not used again: the idle or absolute end."""
        return min(self.expires_at, self.last_seen_at + self.idle_ttl)

    def is_valid(self, now: float) -> bool:
        """Whether the session is still accepted at *now*."""
        return now < self.valid_until

    def to_json(self) -> str:
        """The record as compact JSON (what SQLite and Redis keep)."""
        return json.dumps(
            {
                "id": self.id,
                "uid": self.user_id,
                "u": self.user,
                "p": self.provider_id,
                "a": self.provider_account_id,
                "s": sorted(self.scopes),
                "c": self.created_at,
                "e": self.expires_at,
                "l": self.last_seen_at,
                "i": self.idle_ttl,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | bytes, *, last_seen_at: float | None = None) -> SessionRecord:
        """Read what :meth:`to_json` wrote (*last_seen_at* overrides the stored one).

        :raises StoreUnavailableError: the stored value is not a session record.
        """
        try:
            data = json.loads(text)
            return cls(
                id=str(data["id"]),
                user_id=str(data["uid"]),
                user=data["u"],
                provider_id=str(data["p"]),
                provider_account_id=str(data["a"]),
                scopes=[str(s) for s in data["s"]],
                created_at=float(data["c"]),
                expires_at=float(data["e"]),
                last_seen_at=float(data["l"] if last_seen_at is None else last_seen_at),
                idle_ttl=float(data["i"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            msg = "a stored session record is malformed"
            raise StoreUnavailableError(msg) from exc


def session_tag(user_id: str) -> str:
    """A short, stable tag of *user_id*; all of a user's session keys share it.

    Redis uses it as the hash tag (``{...}``) so that one user's sessions and their index
    live in one cluster slot.
    """
    return hashlib.sha256(user_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def new_session_id(user_id: str) -> str:
    """A new opaque session id for *user_id*: ``<tag>.<192 random bits>``."""
    return f"{session_tag(user_id)}.{secrets.token_urlsafe(24)}"


def tag_of(session_id: str) -> str | None:
    """The user tag of *session_id*, or ``None`` if it is not one of ours."""
    tag, sep, rest = session_id.partition(".")
    if not sep or len(tag) != 16 or not rest or len(session_id) > 128:
        return None
    return tag


@runtime_checkable
class Store(Protocol):
    """What every process of an app shares: used login states, sessions, rate counters.

    One store, configured once (``define_keyloom(store=...)``), carries everything a
    multi-process deployment must share; :meth:`token_store` hands the
    :class:`~keyloom_core.tokens.TokenManager` a token store on the same backend. Every
    key is namespaced per app (``namespace``), so several apps may share one backend.

    Implementations: :class:`~keyloom_core.store.MemoryStore` (one process, tests),
    :class:`~keyloom_core.store.SQLiteStore` (one host; a file, WAL, off the event loop)
    and :class:`~keyloom_core.store.RedisStore` (several hosts; Redis Cluster works).

    Every method raises :class:`StoreUnavailableError` when the backend fails, and every
    write is atomic: a record is there entirely or not at all.
    """

    namespace: str

    async def use_once(self, key: str, expires_at: float) -> bool:
        """Record a login state's *key* as used until *expires_at*; ``False`` if it was.

        This makes every store a :class:`~keyloom_core.StateGuard`.
        """
        ...

    async def create_session(self, record: SessionRecord) -> None:
        """Write a new session record."""
        ...

    async def get_session(self, session_id: str) -> SessionRecord | None:
        """The session record, or ``None`` if there is none (or it has ended)."""
        ...

    async def touch_session(self, session_id: str, last_seen_at: float) -> bool:
        """Record a use of the session; ``False`` if it no longer exists."""
        ...

    async def delete_session(self, session_id: str) -> bool:
        """Delete the session; ``True`` if one was deleted."""
        ...

    async def list_sessions(self, user_id: str) -> Sequence[SessionRecord]:
        """The user's sessions that have not ended, oldest first."""
        ...

    async def delete_user_sessions(self, user_id: str) -> int:
        """Delete every session of the user; how many were deleted."""
        ...

    async def hit(self, key: str, window: float, amount: int = 1) -> tuple[int, float]:
        """Count *amount* events for *key* in the current fixed window of *window* seconds.

        ``amount=0`` reads the count without adding to it.

        :returns: the count in the window (this event included) and when it resets
            (epoch seconds).
        """
        ...

    def token_store(self, *, secret: str, old_secrets: Sequence[str] = ()) -> TokenStore:
        """A token store on the same backend, for a :class:`~keyloom_core.tokens.TokenManager`."""
        ...

    async def aclose(self) -> None:
        """Release connections and threads; the store reconnects if used again."""
        ...

"""The session cookie in both modes: a signed session id (server-side) or the whole session.

With a store (the default then), the cookie holds only an opaque session id signed for the
``"session-id"`` purpose; the record lives in the store, so logout and
``keyloom.sessions.revoke_all`` end it on every worker. Without one, the whole session is
signed into the cookie (:mod:`keyloom_core.web.sessions`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from .._signing import BadSignatureError, ExpiredError
from ..errors import PluginError
from .sessions import Session, issue_session, read_session

if TYPE_CHECKING:
    from .._keyloom import Keyloom
    from ..models import LoginResult
    from ..store import SessionRecord

__all__ = ["end_session", "load_session", "start_session"]

_PURPOSE = "session-id"


def _session(record: SessionRecord) -> Session:
    return Session(
        id=record.id,
        user=record.user,
        provider_id=record.provider_id,
        provider_account_id=record.provider_account_id,
        scopes=record.scopes,
        created_at=int(record.created_at),
        expires_at=int(record.valid_until),
    )


async def start_session(
    keyloom: Keyloom, result: LoginResult, *, now: float | None = None
) -> tuple[Session, str, int]:
    """A new session for a completed login: the session, the cookie value, its max-age.

    :raises StoreUnavailableError: the store could not write it (nobody is signed in).
    :raises PluginError: the profile holds values that are not JSON.
    """
    registry = keyloom.sessions
    if not registry.server_side:
        session, value = issue_session(keyloom, result, now=now)
        return session, value, max(0, session.expires_at - session.created_at)
    now = time.time() if now is None else now
    try:
        record = await registry.create(
            user=result.session_user(),
            provider_id=result.provider_id,
            provider_account_id=result.tokens.account_id or result.profile.id,
            scopes=result.granted_scopes,
            now=now,
        )
    except (TypeError, ValueError) as exc:
        msg = f"the user's profile cannot be stored in a session: {type(exc).__name__}"
        raise PluginError(msg, plugin="profile_overrides", provider_id=result.provider_id) from exc
    ttl = record.expires_at - now
    value = keyloom.signer(_PURPOSE).sign({"sid": record.id}, ttl=ttl, now=now)
    return _session(record), value, int(ttl)


def _session_id(keyloom: Keyloom, value: str, now: float | None) -> str | None:
    try:
        data = keyloom.signer(_PURPOSE).unsign(value, now=now)
    except (BadSignatureError, ExpiredError):
        return None
    sid = data.get("sid")
    return sid if isinstance(sid, str) else None


async def load_session(
    keyloom: Keyloom, value: str | None, *, now: float | None = None
) -> Session | None:
    """The live session of cookie *value*, or ``None`` (one store read when server-side).

    :raises StoreUnavailableError: the store failed (never read as "signed out" or in).
    """
    if not value:
        return None
    registry = keyloom.sessions
    if not registry.server_side:
        return read_session(keyloom, value, now=now)
    sid = _session_id(keyloom, value, now)
    if sid is None:
        return None
    record = await registry.get(sid, now=now)
    return None if record is None else _session(record)


async def end_session(
    keyloom: Keyloom, value: str | None, *, now: float | None = None
) -> Session | None:
    """End the session of cookie *value* (delete its record); the session it was, if live.

    :raises StoreUnavailableError: the store failed; the record may still be there.
    """
    session = await load_session(keyloom, value, now=now)
    if session is not None and keyloom.sessions.server_side:
        await keyloom.sessions.end(session.id)
    return session

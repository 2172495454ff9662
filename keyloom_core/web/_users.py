"""The user routes of the HTTP protocol: linked accounts, unlinking, link mode, ``user``.

Used by :class:`~keyloom_core.web.AuthHandler` when an adapter is configured:

- ``GET /session``: ``user`` is the adapter's user in the JavaScript data model (read at
  each call, so a deleted user is signed out everywhere);
- ``GET /oauth/{provider}/start?link=1``: a signed-in browser links the account it is
  about to sign in with to its user (401 ``sign_in_required`` when signed out);
- ``GET /accounts``: the signed-in user's linked accounts;
- ``POST /accounts/unlink?provider=…&providerAccountId=…``: unlink one (CSRF-protected,
  as every ``POST``; 409 ``last_account`` for the last one).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..users._errors import LinkingError, SignInRequiredError
from ._messages import AuthResponse, json_response

if TYPE_CHECKING:
    from .._keyloom import Keyloom
    from ..users._rules import Users
    from .sessions import Session

__all__ = ["accounts_answer", "link_target", "session_json", "signed_in_user", "unlink_answer"]

_NO_ADAPTER = "users and accounts need an adapter: define_keyloom(adapter=...)"


def _users(keyloom: Keyloom) -> Users:
    users = keyloom.users
    if users is None:
        raise LinkingError(_NO_ADAPTER, hint="The app has no user store configured.")
    return users


def _signed_in(session: Session | None) -> Session:
    if session is None:
        msg = "sign in first"
        raise SignInRequiredError(msg)
    return session


async def session_json(keyloom: Keyloom, session: Session) -> dict[str, Any] | None:
    """The ``GET /session`` answer; ``None`` when the session's user no longer exists."""
    answer = session.to_json()
    if keyloom.users is None:
        return answer
    user = await keyloom.users.get(session.user_id)
    if user is None:
        return None
    answer["user"] = user.to_json()
    return answer


def link_target(keyloom: Keyloom, session: Session | None, query: Mapping[str, str]) -> str | None:
    """The user a start route's login links to (``?link=1``), or ``None`` for a sign-in.

    :raises SignInRequiredError: ``link=1`` from a signed-out browser.
    :raises LinkingError: ``link`` is not ``1``, or there is no adapter.
    """
    link = query.get("link")
    if link is None:
        return None
    if link != "1":
        msg = "link must be 1"
        raise LinkingError(msg)
    _users(keyloom)
    return _signed_in(session).user_id


async def accounts_answer(keyloom: Keyloom, session: Session | None) -> AuthResponse:
    """``GET /accounts``: ``{"accounts": [...]}`` of the signed-in user."""
    accounts = await _users(keyloom).accounts(_signed_in(session).user_id)
    return json_response(200, {"accounts": [a.to_json() for a in accounts]})


async def unlink_answer(
    keyloom: Keyloom, session: Session | None, query: Mapping[str, str]
) -> AuthResponse:
    """``POST /accounts/unlink?provider=…&providerAccountId=…``: ``{"ok": true}``."""
    users = _users(keyloom)
    user_id = _signed_in(session).user_id
    provider, account_id = query.get("provider"), query.get("providerAccountId")
    if not provider or not account_id:
        msg = "give provider and providerAccountId"
        raise LinkingError(msg)
    await users.unlink(user_id, provider, account_id)
    return json_response(200, {"ok": True})


async def signed_in_user(keyloom: Keyloom, session: Session | None) -> dict[str, Any] | None:
    """The user object of ``GET /session`` for *session*, or ``None`` when signed out."""
    if session is None:
        return None
    if keyloom.users is None:
        return dict(session.user)
    user = await keyloom.users.get(session.user_id)
    return None if user is None else user.to_json()

"""Signed, expiring session cookies and double-submit CSRF tokens.

A session lives entirely in the session cookie (``__Host-keyloom_session``, or
``__keyloom_session`` on a loopback ``http://`` base URL), signed with the instance's
secrets for the ``"session"`` purpose. It holds who signed in (the protocol's user
object), with which provider and scopes, and when it expires. It never holds provider
tokens: an app that keeps tokens stores them server-side (``on_login``) and finds them
again by the session's ``provider_id`` and ``provider_account_id``.

Sessions are stateless: logging out clears the cookie in that browser; a copy of the
cookie stays valid until it expires. Keep ``session_ttl`` as short as the app allows, or
record logged-out session ids (``on_logout``) and refuse them in the app.
"""

from __future__ import annotations

import collections
import datetime as dt
import hmac
import logging
import secrets
import time
import weakref
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from .._signing import BadSignatureError, ExpiredError
from ..errors import PluginError, ProfileError

if TYPE_CHECKING:
    from .._keyloom import Keyloom
    from ..models import LoginResult

__all__ = [
    "CSRF_COOKIE",
    "CSRF_HEADER",
    "MAX_COOKIE_VALUE",
    "SESSION_COOKIE",
    "Session",
    "check_csrf",
    "encode_session",
    "issue_session",
    "new_csrf_token",
    "read_session",
]

log = logging.getLogger("keyloom.sessions")

SESSION_COOKIE = "__keyloom_session"
CSRF_COOKIE = "__keyloom_csrf"
CSRF_HEADER = "x-keyloom-csrf"

#: Largest cookie value issued; browsers drop cookies over 4096 bytes (name and
#: attributes included), silently.
MAX_COOKIE_VALUE = 3800
_VERSION = 1


def _iso(timestamp: float) -> str:
    """Epoch seconds as JavaScript's ``Date.toJSON()`` writes them."""
    moment = dt.datetime.fromtimestamp(timestamp, tz=dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _user(value: object) -> dict[str, Any]:
    if not isinstance(value, Mapping) or not isinstance(value.get("id"), str):
        msg = "session user is malformed"
        raise TypeError(msg)
    return dict(value)


def _str_set(value: Iterable[str]) -> frozenset[str]:
    return frozenset(value)


@attrs.frozen
class Session:
    """A signed-in user's session, as carried by the session cookie.

    Attributes:
        id: Random session id.
        user: The protocol's user object (``id``, ``name``, ``email``, ``emailVerified``,
            ``image`` and any ``profile_overrides`` extras); hidden from repr.
        provider_id: The provider the user signed in with.
        provider_account_id: The provider's id for the user (``TokenSet.account_id``, or
            the profile's id).
        scopes: The scopes the user granted.
        created_at: When the user signed in (epoch seconds).
        expires_at: When the session stops being accepted (epoch seconds).
    """

    id: str = attrs.field(repr=False)
    user: Mapping[str, Any] = attrs.field(repr=False, eq=False, hash=False, converter=_user)
    provider_id: str
    provider_account_id: str
    scopes: frozenset[str] = attrs.field(converter=_str_set)
    created_at: int
    expires_at: int

    @property
    def user_id(self) -> str:
        """The user's id (``user["id"]``)."""
        return str(self.user["id"])

    @classmethod
    def from_login(cls, result: LoginResult, *, ttl: float, now: float | None = None) -> Session:
        """A new session for a completed login, valid for *ttl* seconds from *now*."""
        now = time.time() if now is None else now
        profile = result.profile
        return cls(
            id=secrets.token_urlsafe(18),
            user=result.session_user(),
            provider_id=result.provider_id,
            provider_account_id=result.tokens.account_id or profile.id,
            scopes=result.granted_scopes,
            created_at=int(now),
            expires_at=int(now + ttl),
        )

    @classmethod
    def from_payload(cls, data: Mapping[str, Any]) -> Session:
        """Read a verified cookie payload.

        The payload is JSON that this app signed, so its values have JSON's exact types:
        they are checked by type and set as they are, without the constructor's converters
        (the user object is a dict of its own already). That halves the cost (1.3 against
        3.2 µs, ``bench_session_cookie.py``) of a cookie's first read.

        :raises TypeError: the payload does not describe a session.
        :raises ValueError: the payload does not describe a session.
        """
        if data.get("v") != _VERSION:
            msg = "unknown session version"
            raise ValueError(msg)
        user, scopes = data.get("u"), data.get("s")
        if type(user) is not dict or type(scopes) is not list:
            msg = "session user or scopes are malformed"
            raise TypeError(msg)
        sid, provider_id, account = data.get("sid"), data.get("p"), data.get("a")
        created_at, expires_at = data.get("iat"), data.get("exp")
        if not (
            type(sid) is type(provider_id) is type(account) is type(user.get("id")) is str
            and type(created_at) is type(expires_at) is int
        ):
            msg = "session payload is malformed"
            raise TypeError(msg)
        scopes = frozenset(scopes)
        for scope in scopes:
            if type(scope) is not str:
                msg = "session scopes are malformed"
                raise TypeError(msg)
        # set as attrs' own __init__ sets the fields of a frozen class
        session = object.__new__(cls)
        _set(session, "id", sid)
        _set(session, "user", user)
        _set(session, "provider_id", provider_id)
        _set(session, "provider_account_id", account)
        _set(session, "scopes", scopes)
        _set(session, "created_at", created_at)
        _set(session, "expires_at", expires_at)
        return session

    def to_payload(self) -> dict[str, Any]:
        """The compact cookie payload (the signer adds ``exp``)."""
        return {
            "v": _VERSION,
            "sid": self.id,
            "u": dict(self.user),
            "p": self.provider_id,
            "a": self.provider_account_id,
            "s": sorted(self.scopes),
            "iat": self.created_at,
        }

    def to_json(self) -> dict[str, Any]:
        """The answer of ``GET /session``: ``{"session": {...}, "user": {...}}``.

        ``session`` has the JavaScript data model's ``id``, ``userId``, ``expiresAt``,
        ``createdAt`` and ``updatedAt`` (ISO 8601 strings, as JavaScript serialises a
        ``Date``), plus ``provider``, ``providerAccountId`` and ``scopes``.
        """
        return {
            "session": {
                "id": self.id,
                "userId": self.user_id,
                "expiresAt": _iso(self.expires_at),
                "createdAt": _iso(self.created_at),
                "updatedAt": _iso(self.created_at),
                "provider": self.provider_id,
                "providerAccountId": self.provider_account_id,
                "scopes": sorted(self.scopes),
            },
            "user": dict(self.user),
        }


_set = object.__setattr__


def encode_session(keyloom: Keyloom, session: Session, *, now: float | None = None) -> str:
    """Sign *session* into a cookie value that expires with it.

    :raises PluginError: the user object holds values that are not JSON
        (``profile_overrides`` returned them).
    """
    now = time.time() if now is None else now
    try:
        return keyloom.signer("session").sign(
            session.to_payload(), ttl=session.expires_at - now, now=now
        )
    except (TypeError, ValueError) as exc:
        msg = f"the user's profile cannot be stored in a session: {type(exc).__name__}"
        raise PluginError(msg, plugin="profile_overrides", provider_id=session.provider_id) from exc


def issue_session(
    keyloom: Keyloom, result: LoginResult, *, now: float | None = None
) -> tuple[Session, str]:
    """Create the session for a completed login; return it and the signed cookie value.

    The session lasts ``keyloom.session_ttl``. When the profile would make the cookie too
    large for a browser to keep, ``image`` and then the ``profile_overrides`` extras are
    left out (and a warning logged) rather than losing the whole session.

    :raises ProfileError: the profile is too large even without them.
    :raises PluginError: the profile holds values that are not JSON.
    """
    session = Session.from_login(result, ttl=keyloom.session_ttl, now=now)
    value = encode_session(keyloom, session, now=now)
    if len(value) <= MAX_COOKIE_VALUE:
        return session, value
    base = ("id", "name", "email", "emailVerified")
    for keep in ((*base, *(k for k in session.user if k not in {*base, "image"})), base):
        user = {k: v for k, v in session.user.items() if k in keep}
        session = attrs.evolve(session, user=user)
        value = encode_session(keyloom, session, now=now)
        if len(value) <= MAX_COOKIE_VALUE:
            log.warning(
                "the session cookie was too large; left out user fields: %s",
                ", ".join(sorted(set(result.profile.to_user()) - set(user))),
            )
            return session, value
    msg = "the user's profile is too large to keep in a session cookie"
    raise ProfileError(msg, provider_id=result.provider_id)


#: Verified stateless cookies remembered per instance (most recently read last).
_VERIFIED: weakref.WeakKeyDictionary[Keyloom, collections.OrderedDict[str, Session]] = (
    weakref.WeakKeyDictionary()
)
VERIFIED_CACHE_SIZE = 1024


def read_session(
    keyloom: Keyloom, value: str | None, *, now: float | None = None
) -> Session | None:
    """The session in cookie *value*, or ``None`` if it is missing, forged, tampered or expired.

    A stateless cookie is read on every request of its browser, so the last
    :data:`VERIFIED_CACHE_SIZE` cookies that verified are remembered per instance: a cookie
    seen before skips the signature and the JSON (about 10 of its 13 µs), and its expiry is
    checked again on every read. One signed value has one spelling (the signature is
    compared as written), so a cookie that differs by a byte is verified afresh.
    """
    if not value:
        return None
    now = time.time() if now is None else now
    verified = _VERIFIED.get(keyloom)
    if verified is None:
        verified = _VERIFIED[keyloom] = collections.OrderedDict()
    session = verified.get(value)
    if session is not None:
        if session.expires_at > now:
            verified.move_to_end(value)
            return session
        del verified[value]
        return None
    try:
        session = Session.from_payload(keyloom.signer("session").unsign(value, now=now))
    except (BadSignatureError, ExpiredError, TypeError, ValueError):
        return None
    verified[value] = session
    if len(verified) > VERIFIED_CACHE_SIZE:
        verified.popitem(last=False)
    return session


def new_csrf_token(
    keyloom: Keyloom, *, now: float | None = None, session_id: str | None = None
) -> str:
    """A fresh CSRF token: random, signed by this app, bound to the session it protects.

    Send it both as the CSRF cookie and in the ``/csrf`` answer; a later unsafe request
    must echo it in the ``x-keyloom-csrf`` header (double submit). *session_id* is the id
    of the browser's session (``None`` when signed out): :func:`check_csrf` accepts the
    token only alongside that same session, so a token minted without a session (which
    anyone can get) never passes for a signed-in browser.
    """
    return keyloom.signer("csrf").sign(
        {"n": secrets.token_urlsafe(18), "sid": session_id or ""},
        ttl=keyloom.session_ttl,
        now=now,
    )


def check_csrf(
    keyloom: Keyloom,
    cookie: str | None,
    header: str | None,
    *,
    now: float | None = None,
    session_id: str | None = None,
) -> bool:
    """Whether the double-submitted CSRF token is good for this request.

    *header* must equal *cookie* (compared in constant time), and the token must be ours,
    unexpired, and minted for *session_id* (the request's session id, ``None`` if signed
    out).
    """
    if not cookie or not header:
        return False
    if not hmac.compare_digest(
        cookie.encode("utf-8", "surrogatepass"), header.encode("utf-8", "surrogatepass")
    ):
        return False
    try:
        data = keyloom.signer("csrf").unsign(cookie, now=now)
    except (BadSignatureError, ExpiredError):
        return False
    bound = data.get("sid", "")
    return isinstance(bound, str) and hmac.compare_digest(
        bound.encode("utf-8", "surrogatepass"), (session_id or "").encode("utf-8", "surrogatepass")
    )

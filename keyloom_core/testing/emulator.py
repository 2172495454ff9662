"""Provider-neutral building blocks for OAuth 2 provider emulators.

An emulator is a small local HTTP server that behaves like a real provider's authorization,
token and API endpoints, so clients can be tested end to end without the internet. This
module holds the parts every such emulator needs; a provider module (for example
``keyloom_tiktok.emulator``) wires them into routes with the provider's quirks.

- :class:`GrantBook`: authorization codes, access/refresh token pairs, refresh (with optional
  rotation), revocation and token lookup, all driven by an injectable clock.
- :class:`SlidingWindowLimiter`: per-key sliding-window rate limiting.
- :class:`FaultInjector`: deterministic, seedable aiohttp middleware that injects HTTP errors,
  delays, hangs, malformed or truncated bodies and connection resets.
- :class:`PendingRequests`: authorization requests waiting for the user's answer on a
  consent form, each taken at most once and never after it expires.
- :class:`EmulatorServer`: loopback-only aiohttp server base class (async context manager),
  plus :func:`run_forever` for command-line use. It also defines the *conformance
  convention* (:meth:`EmulatorServer.for_client`, :attr:`EmulatorServer.consent`, the
  provider's error codes and :meth:`EmulatorServer.expected_profile`) through which
  :mod:`keyloom_core.testing.conformance` drives any provider's emulator.
- :func:`consent_page`, :func:`message_page` and :func:`html_response`: escaped HTML helpers.
- :func:`add_emulator_arguments`, :func:`emulator_options`, :func:`faults_from_args` and
  :func:`emulator_main`: the command line every emulator shares
  (``python -m your_plugin.emulator``), so a provider module adds only its own options.
- :func:`log_id`, :class:`ManualClock` and the PKCE helpers :func:`s256_challenge` and
  :func:`verify_s256`.

Nothing here logs token values, codes or client secrets.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import enum
import hmac
import html
import ipaddress
import logging
import math
import random
import re
import secrets
import signal
import socket
import struct
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping, Sequence
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    Final,
    Generic,
    Literal,
    Protocol,
    TypeAlias,
    TypeVar,
    get_args,
)

import attrs
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from keyloom_core.pkce import CODE_VERIFIER_PATTERN, s256_challenge

if TYPE_CHECKING:
    from types import TracebackType
    from typing import Self

__all__ = [
    "CODE_VERIFIER_PATTERN",
    "CONSENT_MODES",
    "FAULT_KINDS",
    "HEALTH_PATH",
    "LOOPBACK_HOST",
    "AccessToken",
    "AuthorizationCode",
    "Clock",
    "CodeFailure",
    "ConsentMode",
    "EmulatorServer",
    "FaultInjector",
    "FaultKind",
    "FaultRenderer",
    "GrantBook",
    "Handler",
    "ManualClock",
    "PendingRequest",
    "PendingRequests",
    "PkceEncoding",
    "ScopeOption",
    "SlidingWindowLimiter",
    "TokenFailure",
    "TokenPair",
    "UserOption",
    "add_emulator_arguments",
    "avatar_response",
    "consent_page",
    "emulator_main",
    "emulator_options",
    "faults_from_args",
    "html_response",
    "log_id",
    "message_page",
    "remaining_seconds",
    "run_forever",
    "s256_challenge",
    "verify_s256",
]

logger = logging.getLogger(__name__)

#: A source of the current time in seconds since the epoch (``time.time`` by default).
Clock: TypeAlias = Callable[[], float]

#: An aiohttp request handler, as passed to middlewares.
Handler: TypeAlias = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: The address emulators bind to by default.
LOOPBACK_HOST: Final = "127.0.0.1"

#: Every emulator answers ``GET`` here with ``{"status": "ok"}``.
HEALTH_PATH: Final = "/emulator/health"


# --------------------------------------------------------------------------------------------
# Time and ids
# --------------------------------------------------------------------------------------------


class ManualClock:
    """A clock for tests that only moves when told to.

    Pass the instance wherever a :data:`Clock` is expected and call :meth:`advance` to let
    codes and tokens expire without sleeping.

    :param start: The initial time in seconds since the epoch.
    """

    __slots__ = ("now",)

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        """Start the clock at *start*."""
        self.now = float(start)

    def __call__(self) -> float:
        """Return the current (manual) time."""
        return self.now

    def advance(self, seconds: float) -> float:
        """Move the clock forward by *seconds* and return the new time.

        :raises ValueError: if *seconds* is negative.
        """
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        self.now += seconds
        return self.now


def log_id(clock: Clock = time.time) -> str:
    """Return a request log id: a UTC ``YYYYmmddHHMMSS`` timestamp plus 20 random hex digits.

    The shape matches the log ids TikTok puts in error bodies, e.g.
    ``202206221854370101130062072500FFA2``.
    """
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(clock()))
    return stamp + secrets.token_hex(10).upper()


def remaining_seconds(expires_at: float, now: float) -> int:
    """Return the whole seconds left until *expires_at* (never negative).

    Float noise is rounded away first, so a token issued with a lifetime of 86400 seconds
    reports exactly ``86400`` right after issue.
    """
    return max(0, math.ceil(round(expires_at - now, 6)))


# --------------------------------------------------------------------------------------------
# PKCE
# --------------------------------------------------------------------------------------------

#: How the SHA-256 digest of a code verifier is encoded into a challenge.
PkceEncoding: TypeAlias = Literal["base64url", "hex"]


def verify_s256(
    verifier: str,
    challenge: str,
    *,
    encodings: Iterable[PkceEncoding] = ("base64url",),
) -> bool:
    """Return whether *verifier* is well formed and hashes to *challenge*.

    :param encodings: The challenge encodings to accept; any match succeeds.
    """
    if not CODE_VERIFIER_PATTERN.fullmatch(verifier):
        return False
    expected = challenge.encode("utf-8")
    return any(
        hmac.compare_digest(s256_challenge(verifier, encoding).encode("ascii"), expected)
        for encoding in encodings
    )


# --------------------------------------------------------------------------------------------
# Grant bookkeeping
# --------------------------------------------------------------------------------------------


class CodeFailure(enum.Enum):
    """Why an authorization code was refused."""

    UNKNOWN = "unknown"
    """The code was never issued, or was forgotten long after it expired."""
    EXPIRED = "expired"
    """The code outlived its time to live."""
    USED = "used"
    """The code was already exchanged once."""
    CLIENT_MISMATCH = "client_mismatch"
    """The code was issued to another client."""
    REDIRECT_MISMATCH = "redirect_mismatch"
    """The redirect URI differs from the one sent with the authorization request."""


class TokenFailure(enum.Enum):
    """Why an access or refresh token was refused."""

    UNKNOWN = "unknown"
    """The token was never issued, or was forgotten long after it died."""
    EXPIRED = "expired"
    """The token outlived its lifetime."""
    REVOKED = "revoked"
    """The token was revoked, or replaced by refresh-token rotation."""
    CLIENT_MISMATCH = "client_mismatch"
    """The token belongs to another client."""


@attrs.frozen(kw_only=True)
class AuthorizationCode:
    """An issued authorization code and everything it is bound to.

    Attributes:
        code: The code value.
        client_id: The client the code was issued to.
        redirect_uri: The redirect URI of the authorization request, compared byte for byte.
        user_id: The user who consented.
        scopes: The granted scopes, in request order.
        code_challenge: The PKCE challenge, or ``None`` when PKCE was not used.
        code_challenge_method: The PKCE method (``"S256"``), or ``None``.
        issued_at: Issue time (clock seconds).
        expires_at: Expiry time (clock seconds).

    """

    code: str = attrs.field(repr=False)
    client_id: str
    redirect_uri: str
    user_id: str
    scopes: tuple[str, ...]
    code_challenge: str | None = attrs.field(default=None, repr=False)
    code_challenge_method: str | None = None
    issued_at: float
    expires_at: float


@attrs.frozen(kw_only=True)
class AccessToken:
    """A live (or recently dead) access token as returned by :meth:`GrantBook.lookup_access`.

    Attributes:
        token: The token value.
        grant_id: The grant (one authorization) the token belongs to.
        client_id: The client the token was issued to.
        user_id: The user, or ``None`` for client-credentials tokens.
        scopes: The granted scopes.
        issued_at: Issue time (clock seconds).
        expires_at: Expiry time (clock seconds).

    """

    token: str = attrs.field(repr=False)
    grant_id: str
    client_id: str
    user_id: str | None
    scopes: tuple[str, ...]
    issued_at: float
    expires_at: float

    def expires_in(self, now: float) -> int:
        """Return the whole seconds this token has left at *now*."""
        return remaining_seconds(self.expires_at, now)


@attrs.frozen(kw_only=True)
class TokenPair:
    """An access token and its refresh token, as issued or refreshed.

    Attributes:
        access_token: The access token value.
        refresh_token: The refresh token value, or ``None`` (client credentials).
        grant_id: The grant both tokens belong to.
        client_id: The client they were issued to.
        user_id: The user, or ``None`` for client-credentials tokens.
        scopes: The granted scopes.
        issued_at: Issue time of the access token (clock seconds).
        access_expires_at: Expiry of the access token.
        refresh_expires_at: Expiry of the refresh token, or ``None``.

    """

    access_token: str = attrs.field(repr=False)
    refresh_token: str | None = attrs.field(repr=False)
    grant_id: str
    client_id: str
    user_id: str | None
    scopes: tuple[str, ...]
    issued_at: float
    access_expires_at: float
    refresh_expires_at: float | None

    def expires_in(self, now: float) -> int:
        """Return the whole seconds the access token has left at *now*."""
        return remaining_seconds(self.access_expires_at, now)

    def refresh_expires_in(self, now: float) -> int | None:
        """Return the whole seconds the refresh token has left at *now*, or ``None``."""
        if self.refresh_expires_at is None:
            return None
        return remaining_seconds(self.refresh_expires_at, now)


@attrs.define
class _CodeEntry:
    code: AuthorizationCode
    used: bool = False


@attrs.frozen(kw_only=True)
class _RefreshEntry:
    grant_id: str
    client_id: str
    expires_at: float


@attrs.define(kw_only=True)
class _Grant:
    grant_id: str
    client_id: str
    user_id: str | None
    scopes: tuple[str, ...]
    access_tokens: set[str] = attrs.Factory(set)
    refresh_token: str | None = None


def _default_code() -> str:
    return secrets.token_urlsafe(32)


class GrantBook:
    """In-memory bookkeeping of authorization codes and tokens for an emulator.

    Codes are single use and bound to a client, a redirect URI, a user, the granted scopes and
    an optional PKCE challenge. Token pairs belong to a *grant* (one authorization); revoking
    any of its tokens kills the whole grant. Refreshing issues a new access token in the same
    grant and, with rotation, a new refresh token that replaces the old one.

    Dead entries are kept for *retention* seconds after they expire, so lookups can tell
    "expired" or "revoked" from "unknown"; after that they are forgotten. Pruning is lazy (at
    most every *prune_interval* seconds of clock time, on any call) and every table is capped
    at *max_entries*, evicting the oldest entries first, so memory stays bounded.

    All attributes given to the constructor may be changed at any time.

    :param clock: The time source.
    :param code_ttl: Default authorization code lifetime in seconds.
    :param access_ttl: Default access token lifetime in seconds.
    :param refresh_ttl: Default refresh token lifetime in seconds.
    :param access_prefix: Prefix of access token values (e.g. ``"act."``).
    :param refresh_prefix: Prefix of refresh token values (e.g. ``"rft."``).
    :param token_bytes: Random bytes in each token value.
    :param code_factory: Makes new code values; defaults to 32 random URL-safe bytes.
    :param retention: Seconds a dead entry is remembered after its expiry.
    :param prune_interval: Minimum clock seconds between two lazy pruning sweeps.
    :param max_entries: Maximum entries per table.
    """

    def __init__(
        self,
        *,
        clock: Clock = time.time,
        code_ttl: float = 600.0,
        access_ttl: float = 86_400.0,
        refresh_ttl: float = 31_536_000.0,
        access_prefix: str = "",
        refresh_prefix: str = "",
        token_bytes: int = 32,
        code_factory: Callable[[], str] = _default_code,
        retention: float = 3_600.0,
        prune_interval: float = 30.0,
        max_entries: int = 100_000,
    ) -> None:
        """Create an empty book; see the class docstring for the parameters."""
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.clock = clock
        self.code_ttl = code_ttl
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl
        self.access_prefix = access_prefix
        self.refresh_prefix = refresh_prefix
        self.token_bytes = token_bytes
        self.code_factory = code_factory
        self.retention = retention
        self.prune_interval = prune_interval
        self.max_entries = max_entries
        self._codes: dict[str, _CodeEntry] = {}
        self._access: dict[str, AccessToken] = {}
        self._refresh: dict[str, _RefreshEntry] = {}
        self._grants: dict[str, _Grant] = {}
        self._revoked: dict[str, float] = {}  # token -> forget at
        self._last_prune = -math.inf

    # -- codes ---------------------------------------------------------------------------

    def issue_code(
        self,
        *,
        client_id: str,
        redirect_uri: str,
        user_id: str,
        scopes: Iterable[str],
        code_challenge: str | None = None,
        code_challenge_method: str | None = None,
        ttl: float | None = None,
    ) -> AuthorizationCode:
        """Issue a single-use authorization code.

        :param ttl: Lifetime in seconds; defaults to :attr:`code_ttl`.
        """
        now = self._tick()
        value = self.code_factory()
        while value in self._codes:
            value = self.code_factory()
        code = AuthorizationCode(
            code=value,
            client_id=client_id,
            redirect_uri=redirect_uri,
            user_id=user_id,
            scopes=tuple(scopes),
            code_challenge=code_challenge,
            code_challenge_method=code_challenge_method,
            issued_at=now,
            expires_at=now + (self.code_ttl if ttl is None else ttl),
        )
        self._make_room(self._codes, self._codes.__delitem__)
        self._codes[value] = _CodeEntry(code)
        return code

    def inspect_code(
        self, code: str, *, client_id: str, redirect_uri: str
    ) -> AuthorizationCode | CodeFailure:
        """Check *code* as :meth:`consume_code` would, without using it up.

        Use this to run extra checks (such as PKCE) before consuming the code; a failed
        extra check then leaves the code usable.
        """
        now = self._tick()
        entry = self._codes.get(code)
        if entry is None:
            return CodeFailure.UNKNOWN
        if entry.used:
            return CodeFailure.USED
        if now >= entry.code.expires_at:
            return CodeFailure.EXPIRED
        if entry.code.client_id != client_id:
            return CodeFailure.CLIENT_MISMATCH
        if entry.code.redirect_uri != redirect_uri:
            return CodeFailure.REDIRECT_MISMATCH
        return entry.code

    def consume_code(
        self, code: str, *, client_id: str, redirect_uri: str
    ) -> AuthorizationCode | CodeFailure:
        """Use up *code* and return what it is bound to, or why it was refused.

        Checks run in this order: unknown, used, expired, client, redirect URI. Only a
        successful call uses the code up; a refused one leaves it as it was.
        """
        result = self.inspect_code(code, client_id=client_id, redirect_uri=redirect_uri)
        if isinstance(result, AuthorizationCode):
            self._codes[code].used = True
        return result

    # -- tokens --------------------------------------------------------------------------

    def issue_tokens(
        self,
        *,
        client_id: str,
        user_id: str | None,
        scopes: Iterable[str],
        refresh: bool = True,
        access_ttl: float | None = None,
        refresh_ttl: float | None = None,
        access_prefix: str | None = None,
        refresh_prefix: str | None = None,
    ) -> TokenPair:
        """Start a new grant and issue its access token (and refresh token).

        :param refresh: Whether to issue a refresh token (``False`` for client credentials).
        :param access_ttl: Overrides :attr:`access_ttl` for this call.
        :param refresh_ttl: Overrides :attr:`refresh_ttl` for this call.
        :param access_prefix: Overrides :attr:`access_prefix` for this call.
        :param refresh_prefix: Overrides :attr:`refresh_prefix` for this call.
        """
        now = self._tick()
        grant = _Grant(
            grant_id=secrets.token_hex(12),
            client_id=client_id,
            user_id=user_id,
            scopes=tuple(scopes),
        )
        self._make_room(self._grants, self._forget_grant)
        self._grants[grant.grant_id] = grant
        access = self._new_access(grant, now, access_ttl, access_prefix)
        refresh_token: str | None = None
        refresh_expires_at: float | None = None
        if refresh:
            refresh_token, refresh_expires_at = self._new_refresh(
                grant, now, refresh_ttl, refresh_prefix
            )
        return self._pair(grant, access, refresh_token, refresh_expires_at)

    def refresh(
        self,
        refresh_token: str,
        *,
        client_id: str,
        rotate: bool = True,
        access_ttl: float | None = None,
        refresh_ttl: float | None = None,
        access_prefix: str | None = None,
        refresh_prefix: str | None = None,
    ) -> TokenPair | TokenFailure:
        """Issue a new access token for the grant of *refresh_token*.

        With *rotate*, a new refresh token (with a fresh lifetime) replaces the old one, which
        stops working at once; without it the same refresh token keeps its expiry. Earlier
        access tokens of the grant stay valid until they expire.
        """
        now = self._tick()
        entry = self._refresh.get(refresh_token)
        if entry is None:
            return TokenFailure.REVOKED if refresh_token in self._revoked else TokenFailure.UNKNOWN
        if now >= entry.expires_at:
            return TokenFailure.EXPIRED
        if entry.client_id != client_id:
            return TokenFailure.CLIENT_MISMATCH
        grant = self._grants[entry.grant_id]
        access = self._new_access(grant, now, access_ttl, access_prefix)
        if not rotate:
            return self._pair(grant, access, refresh_token, entry.expires_at)
        del self._refresh[refresh_token]
        self._bury(refresh_token, entry.expires_at)
        new_token, new_expiry = self._new_refresh(grant, now, refresh_ttl, refresh_prefix)
        return self._pair(grant, access, new_token, new_expiry)

    def lookup_access(self, token: str) -> AccessToken | TokenFailure:
        """Return the live access token *token*, or why it is not usable."""
        now = self._tick()
        record = self._access.get(token)
        if record is None:
            return TokenFailure.REVOKED if token in self._revoked else TokenFailure.UNKNOWN
        if now >= record.expires_at:
            return TokenFailure.EXPIRED
        return record

    def revoke(self, token: str, *, client_id: str | None = None) -> TokenFailure | None:
        """Revoke the grant of *token* (an access or refresh token).

        Every access token of the grant and its refresh token stop working. Revoking an
        expired access token still kills its refresh token.

        :param client_id: When given, refuse tokens that belong to another client.
        :returns: ``None`` on success, otherwise why nothing was revoked.
        """
        self._tick()
        grant_id: str | None = None
        access = self._access.get(token)
        if access is not None:
            grant_id = access.grant_id
        else:
            refresh = self._refresh.get(token)
            if refresh is not None:
                grant_id = refresh.grant_id
        if grant_id is None:
            return TokenFailure.REVOKED if token in self._revoked else TokenFailure.UNKNOWN
        grant = self._grants[grant_id]
        if client_id is not None and grant.client_id != client_id:
            return TokenFailure.CLIENT_MISMATCH
        self.revoke_grant(grant_id)
        return None

    def revoke_grant(self, grant_id: str) -> bool:
        """Revoke every token of the grant *grant_id*; return whether it existed."""
        grant = self._grants.pop(grant_id, None)
        if grant is None:
            return False
        for value in grant.access_tokens:
            record = self._access.pop(value, None)
            if record is not None:
                self._bury(value, record.expires_at)
        if grant.refresh_token is not None:
            refresh = self._refresh.pop(grant.refresh_token, None)
            if refresh is not None:
                self._bury(grant.refresh_token, refresh.expires_at)
        return True

    # -- housekeeping --------------------------------------------------------------------

    def prune(self) -> None:
        """Forget every entry that died more than :attr:`retention` seconds ago."""
        now = self.clock()
        self._last_prune = now
        horizon = now - self.retention
        for value in [v for v, e in self._codes.items() if e.code.expires_at <= horizon]:
            del self._codes[value]
        for value in [v for v, r in self._access.items() if r.expires_at <= horizon]:
            self._drop_access(value)
        for value in [v for v, r in self._refresh.items() if r.expires_at <= horizon]:
            self._drop_refresh(value)
        for value in [v for v, until in self._revoked.items() if until <= now]:
            del self._revoked[value]

    def sizes(self) -> dict[str, int]:
        """Return how many entries each internal table holds (for tests and monitoring)."""
        return {
            "codes": len(self._codes),
            "access_tokens": len(self._access),
            "refresh_tokens": len(self._refresh),
            "grants": len(self._grants),
            "revoked": len(self._revoked),
        }

    # -- internals -----------------------------------------------------------------------

    def _tick(self) -> float:
        now = self.clock()
        if now - self._last_prune >= self.prune_interval:
            self.prune()
        return now

    def _make_room(self, table: Mapping[str, object], evict: Callable[[str], object]) -> None:
        if len(table) < self.max_entries:
            return
        if self.clock() - self._last_prune >= self.prune_interval:  # a full scan, so rarely
            self.prune()
        while len(table) >= self.max_entries:
            evict(next(iter(table)))

    def _token_value(self, prefix: str) -> str:
        return prefix + secrets.token_urlsafe(self.token_bytes)

    def _new_access(
        self, grant: _Grant, now: float, ttl: float | None, prefix: str | None
    ) -> AccessToken:
        value = self._token_value(self.access_prefix if prefix is None else prefix)
        record = AccessToken(
            token=value,
            grant_id=grant.grant_id,
            client_id=grant.client_id,
            user_id=grant.user_id,
            scopes=grant.scopes,
            issued_at=now,
            expires_at=now + (self.access_ttl if ttl is None else ttl),
        )
        self._make_room(self._access, self._drop_access)
        self._access[value] = record
        grant.access_tokens.add(value)
        return record

    def _new_refresh(
        self, grant: _Grant, now: float, ttl: float | None, prefix: str | None
    ) -> tuple[str, float]:
        value = self._token_value(self.refresh_prefix if prefix is None else prefix)
        expires_at = now + (self.refresh_ttl if ttl is None else ttl)
        self._make_room(self._refresh, self._drop_refresh)
        self._refresh[value] = _RefreshEntry(
            grant_id=grant.grant_id, client_id=grant.client_id, expires_at=expires_at
        )
        grant.refresh_token = value
        return value, expires_at

    @staticmethod
    def _pair(
        grant: _Grant,
        access: AccessToken,
        refresh_token: str | None,
        refresh_expires_at: float | None,
    ) -> TokenPair:
        return TokenPair(
            access_token=access.token,
            refresh_token=refresh_token,
            grant_id=grant.grant_id,
            client_id=grant.client_id,
            user_id=grant.user_id,
            scopes=grant.scopes,
            issued_at=access.issued_at,
            access_expires_at=access.expires_at,
            refresh_expires_at=refresh_expires_at,
        )

    def _bury(self, token: str, expires_at: float) -> None:
        if len(self._revoked) >= self.max_entries:
            del self._revoked[next(iter(self._revoked))]
        self._revoked[token] = max(expires_at, self.clock()) + self.retention

    def _drop_access(self, value: str) -> None:
        record = self._access.pop(value)
        grant = self._grants.get(record.grant_id)
        if grant is not None:
            grant.access_tokens.discard(value)
            self._forget_if_empty(grant)

    def _drop_refresh(self, value: str) -> None:
        entry = self._refresh.pop(value)
        grant = self._grants.get(entry.grant_id)
        if grant is not None and grant.refresh_token == value:
            grant.refresh_token = None
            self._forget_if_empty(grant)

    def _forget_grant(self, grant_id: str) -> None:
        grant = self._grants.pop(grant_id)
        for value in grant.access_tokens:
            self._access.pop(value, None)
        if grant.refresh_token is not None:
            self._refresh.pop(grant.refresh_token, None)

    def _forget_if_empty(self, grant: _Grant) -> None:
        if not grant.access_tokens and grant.refresh_token is None:
            self._grants.pop(grant.grant_id, None)


class PendingRequest(Protocol):
    """What :class:`PendingRequests` keeps: a request with an id and an expiry time."""

    @property
    def request_id(self) -> str:
        """The id the consent form sends back."""

    @property
    def expires_at(self) -> float:
        """When the request can no longer be answered (seconds since the epoch)."""


P = TypeVar("P", bound=PendingRequest)


class PendingRequests(Generic[P]):
    """Authorization requests waiting for the user's answer on a consent form.

    A request is taken at most once, and never after its ``expires_at``. Expired requests
    are dropped whenever one is added, and beyond *limit* the oldest go first.

    :param clock: The time source.
    :param limit: Requests kept at most.
    """

    def __init__(self, clock: Clock = time.time, *, limit: int = 10_000) -> None:
        """Start with no pending request."""
        self.clock = clock
        self.limit = limit
        self._requests: dict[str, P] = {}

    def __len__(self) -> int:
        """The number of requests kept (expired ones included until the next :meth:`add`)."""
        return len(self._requests)

    def add(self, request: P) -> None:
        """Keep *request* under its ``request_id``."""
        now = self.clock()
        for request_id in [k for k, r in self._requests.items() if r.expires_at <= now]:
            del self._requests[request_id]
        while len(self._requests) >= self.limit:
            del self._requests[next(iter(self._requests))]
        self._requests[request.request_id] = request

    def take(self, request_id: str) -> P | None:
        """Remove and return the request, or ``None`` if it is unknown, taken or expired."""
        request = self._requests.pop(request_id, None)
        if request is None or request.expires_at <= self.clock():
            return None
        return request


# --------------------------------------------------------------------------------------------
# Rate limiting
# --------------------------------------------------------------------------------------------


class SlidingWindowLimiter:
    """Allow at most *limit* hits per key within any *window* seconds.

    :param limit: Hits allowed per window, or ``None`` for no limit. Settable at runtime.
    :param window: Window length in seconds. Settable at runtime.
    :param clock: The time source.
    :param max_keys: Keys remembered at most; the least recently created are dropped first.
    """

    def __init__(
        self,
        limit: int | None,
        window: float = 60.0,
        *,
        clock: Clock = time.time,
        max_keys: int = 10_000,
    ) -> None:
        """Create a limiter with no recorded hits."""
        self.limit = limit
        self.window = window
        self.clock = clock
        self.max_keys = max_keys
        self._hits: dict[Hashable, deque[float]] = {}

    def hit(self, key: Hashable) -> float | None:
        """Record a hit for *key* if allowed.

        :returns: ``None`` when the hit is allowed (and counted), otherwise the seconds until
            the oldest hit in the window leaves it (a suitable ``Retry-After``).
        """
        if self.limit is None:
            return None
        now = self.clock()
        hits = self._hits.get(key)
        if hits is None:
            if len(self._hits) >= self.max_keys:
                self._forget_idle(now)
                while len(self._hits) >= self.max_keys:
                    del self._hits[next(iter(self._hits))]
            hits = self._hits[key] = deque()
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        if len(hits) >= self.limit:
            if not hits:
                return self.window
            return max(hits[0] + self.window - now, 0.0)
        hits.append(now)
        return None

    def reset(self, key: Hashable | None = None) -> None:
        """Forget the hits of *key*, or of every key."""
        if key is None:
            self._hits.clear()
        else:
            self._hits.pop(key, None)

    def _forget_idle(self, now: float) -> None:
        idle = [k for k, hits in self._hits.items() if not hits or hits[-1] <= now - self.window]
        for key in idle:
            del self._hits[key]


# --------------------------------------------------------------------------------------------
# Fault injection
# --------------------------------------------------------------------------------------------

#: The faults a :class:`FaultInjector` can inject.
FaultKind: TypeAlias = Literal[
    "500", "503", "429", "timeout", "delay", "malformed_json", "truncated", "reset"
]

#: Every fault kind, in the canonical order used for seeded selection.
FAULT_KINDS: Final[tuple[FaultKind, ...]] = get_args(FaultKind)

#: Builds the response for an HTTP-status fault: ``(kind, status, request) -> response``.
FaultRenderer: TypeAlias = Callable[[FaultKind, int, web.Request], web.StreamResponse]

_STATUS_ERRORS: Final[Mapping[int, tuple[str, str]]] = {
    500: ("server_error", "The server encountered an unexpected condition (injected fault)."),
    503: ("temporarily_unavailable", "The server is temporarily unavailable (injected fault)."),
    429: ("rate_limit_exceeded", "Too many requests (injected fault)."),
}


def _default_fault_response(kind: FaultKind, status: int, request: web.Request) -> web.Response:
    del kind, request
    error, description = _STATUS_ERRORS[status]
    return web.json_response({"error": error, "error_description": description}, status=status)


def _normalise_path(path: str) -> str:
    return path.rstrip("/") or "/"


def _validated_kinds(kinds: Iterable[str]) -> tuple[FaultKind, ...]:
    wanted = set(kinds)
    unknown = wanted.difference(FAULT_KINDS)
    if unknown:
        raise ValueError(f"unknown fault kinds: {', '.join(sorted(unknown))}")
    if not wanted:
        raise ValueError("at least one fault kind is needed")
    return tuple(kind for kind in FAULT_KINDS if kind in wanted)


class FaultInjector:
    """Deterministic aiohttp middleware that makes some requests fail.

    Each eligible request draws from a private :class:`random.Random` seeded with *seed*, so a
    given sequence of requests (and of runtime changes to :attr:`rate`) always sees the same
    faults. Every attribute may be changed between requests.

    Fault kinds:

    - ``"500"``, ``"503"``: that status with a JSON error body (``503`` adds ``Retry-After``).
    - ``"429"``: status 429 with a ``Retry-After`` header of :attr:`retry_after` seconds.
    - ``"timeout"``: sleep :attr:`timeout_seconds` (longer than a client should wait), then
      answer normally.
    - ``"delay"``: sleep :attr:`delay_seconds`, then answer normally.
    - ``"malformed_json"``: status 200 with an ``application/json`` body that is not JSON.
    - ``"truncated"``: a ``Content-Length`` larger than the body sent, then the connection is
      closed.
    - ``"reset"``: the connection is reset (TCP RST) without any answer.

    Use an instance directly as a middleware (``web.Application(middlewares=[injector])``)
    or attach it to an :class:`EmulatorServer`, which applies it to its API paths only.

    :param rate: Probability (0 to 1) that an eligible request gets a fault.
    :param seed: Seed of the fault sequence.
    :param kinds: The fault kinds to pick from (uniformly).
    :param paths: Paths eligible for faults (trailing slashes ignored), or ``None`` for the
        default: every path when used directly, the server's API paths when attached to an
        :class:`EmulatorServer`.
    :param delay_seconds: Sleep of the ``"delay"`` fault.
    :param timeout_seconds: Sleep of the ``"timeout"`` fault.
    :param retry_after: ``Retry-After`` seconds of ``"429"`` and ``"503"`` faults.
    :param process_first: Run the real handler (and its side effects) before a
        ``"malformed_json"``, ``"truncated"`` or ``"reset"`` fault, so the answer is lost
        after the work is done, instead of before it.
    :param render: Builds the body of ``"500"``, ``"503"`` and ``"429"`` faults.
    """

    __middleware_version__: ClassVar[int] = 1  # aiohttp: a new-style middleware

    def __init__(
        self,
        *,
        rate: float = 0.0,
        seed: int = 0,
        kinds: Iterable[str] = FAULT_KINDS,
        paths: Iterable[str] | None = None,
        delay_seconds: float = 0.2,
        timeout_seconds: float = 30.0,
        retry_after: int = 1,
        process_first: bool = False,
        render: FaultRenderer | None = None,
    ) -> None:
        """Create an injector; see the class docstring for the parameters."""
        self.rate = rate
        self.kinds = kinds
        self.paths = paths
        self.delay_seconds = delay_seconds
        self.timeout_seconds = timeout_seconds
        self.retry_after = retry_after
        self.process_first = process_first
        self.render = render
        self._seed = seed
        self._rng = random.Random(seed)
        self._queued: deque[FaultKind] = deque()
        #: How many faults of each kind were injected so far.
        self.counts: dict[str, int] = dict.fromkeys(FAULT_KINDS, 0)

    @property
    def rate(self) -> float:
        """Probability (0 to 1) that an eligible request gets a fault."""
        return self._rate

    @rate.setter
    def rate(self, value: float) -> None:
        if not 0.0 <= value <= 1.0:
            raise ValueError("fault rate must be between 0 and 1")
        self._rate = float(value)

    @property
    def kinds(self) -> tuple[FaultKind, ...]:
        """The enabled fault kinds, in canonical order."""
        return self._kinds

    @kinds.setter
    def kinds(self, value: Iterable[str]) -> None:
        self._kinds = _validated_kinds(value)

    @property
    def paths(self) -> frozenset[str] | None:
        """Paths eligible for faults (normalised without trailing slash), or ``None``."""
        return self._paths

    @paths.setter
    def paths(self, value: Iterable[str] | None) -> None:
        self._paths = None if value is None else frozenset(_normalise_path(p) for p in value)

    @property
    def seed(self) -> int:
        """The seed the fault sequence started from (see :meth:`reset`)."""
        return self._seed

    @property
    def total(self) -> int:
        """How many faults were injected so far, all kinds together."""
        return sum(self.counts.values())

    def reset(self, seed: int | None = None) -> None:
        """Restart the fault sequence (from *seed* if given), zero the counts, drop the queue."""
        if seed is not None:
            self._seed = seed
        self._rng.seed(self._seed)
        self._queued.clear()
        self.counts = dict.fromkeys(FAULT_KINDS, 0)

    def queue(self, *kinds: str) -> None:
        """Force these faults on the next eligible requests, in order, whatever the rate.

        Queued faults do not consume draws from the seeded sequence.
        """
        self._queued.extend(_validated_kinds([kind])[0] for kind in kinds)

    def applies_to(self, path: str, *, default: bool = True) -> bool:
        """Return whether *path* is eligible; *default* answers when :attr:`paths` is ``None``."""
        if self._paths is None:
            return default
        return _normalise_path(path) in self._paths

    def choose(self) -> FaultKind | None:
        """Draw the fault for one eligible request (``None``: no fault).

        Every call consumes the same number of random draws whatever the rate, so changing
        the rate between requests does not shift the sequence.
        """
        if self._queued:
            return self._queued.popleft()
        roll = self._rng.random()
        pick = self._rng.randrange(len(self._kinds))
        if roll < self._rate:
            return self._kinds[pick]
        return None

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Act as an aiohttp middleware on every path (or :attr:`paths`)."""
        return await self.handle(request, handler)

    async def handle(
        self,
        request: web.Request,
        handler: Handler,
        *,
        eligible: bool = True,
        render: FaultRenderer | None = None,
    ) -> web.StreamResponse:
        """Answer *request*, possibly with a fault.

        :param eligible: Whether the request is eligible when :attr:`paths` is ``None``.
        :param render: Fallback body builder when :attr:`render` is not set.
        """
        if not self.applies_to(request.path, default=eligible):
            return await handler(request)
        kind = self.choose()
        if kind is None:
            return await handler(request)
        self.counts[kind] += 1
        logger.info("injecting fault %r into %s %s", kind, request.method, request.path)
        return await self._inject(kind, request, handler, self.render or render)

    async def _inject(
        self,
        kind: FaultKind,
        request: web.Request,
        handler: Handler,
        render: FaultRenderer | None,
    ) -> web.StreamResponse:
        if kind in {"500", "503", "429"}:
            status = int(kind)
            response = (render or _default_fault_response)(kind, status, request)
            if status != 500:
                response.headers.setdefault("Retry-After", str(self.retry_after))
            return response
        if kind == "delay":
            await asyncio.sleep(self.delay_seconds)
            return await handler(request)
        if kind == "timeout":
            await asyncio.sleep(self.timeout_seconds)
            return await handler(request)
        if self.process_first:
            await handler(request)
        if kind == "malformed_json":
            return web.Response(
                status=200, body=b'{"data": {"partial": tru', content_type="application/json"
            )
        if kind == "truncated":
            return await _truncated(request)
        return _reset(request)


async def _truncated(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    response.content_length = 1024
    await response.prepare(request)
    await response.write(b'{"access_token": "')
    if request.transport is not None:
        request.transport.close()
    return response


def _reset(request: web.Request) -> web.StreamResponse:
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                # SO_LINGER with a zero timeout turns close() into a TCP RST.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    return web.Response(status=500)


# --------------------------------------------------------------------------------------------
# HTML helpers
# --------------------------------------------------------------------------------------------

_CSS: Final = """
*{box-sizing:border-box}
body{margin:0;min-height:100vh;display:flex;align-items:center;justify-content:center;
background:#f4f4f5;color:#161823;font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif}
main{background:#fff;width:min(440px,94vw);padding:28px 28px 22px;border-radius:12px;
box-shadow:0 2px 18px rgba(0,0,0,.08)}
h1{font-size:20px;margin:0 0 6px}
p{margin:8px 0}
.muted{color:#6b6b75;font-size:13px}
.notice{background:#fff7e6;border:1px solid #ffd591;border-radius:8px;padding:8px 10px;
font-size:13px}
ul{list-style:none;padding:0;margin:16px 0}
li{border-top:1px solid #eee;padding:10px 0}
li:last-child{border-bottom:1px solid #eee}
label{display:flex;gap:10px;align-items:flex-start;cursor:pointer}
label.required{cursor:default}
.scope{font-weight:600}
.desc{display:block;color:#6b6b75;font-size:13px;font-weight:400}
select{width:100%;padding:8px;border:1px solid #ddd;border-radius:8px;font:inherit}
.actions{display:flex;gap:10px;margin-top:18px}
button{flex:1;padding:11px;border-radius:8px;border:0;font:inherit;font-weight:600;cursor:pointer}
.approve{background:var(--accent);color:#fff}
.deny{background:#f1f1f2;color:#161823}
code{background:#f1f1f2;padding:2px 6px;border-radius:4px}
"""

_HTML_HEADERS: Final[Mapping[str, str]] = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@attrs.frozen
class ScopeOption:
    """One scope line of a consent form.

    Attributes:
        name: The scope name (submitted as the checkbox value).
        description: A human description shown under the name.
        required: Always granted: shown ticked and disabled, and submitted as a hidden field.
        checked: Whether an optional scope starts ticked.

    """

    name: str
    description: str = ""
    required: bool = False
    checked: bool = True


@attrs.frozen
class UserOption:
    """One entry of the user picker of a consent form.

    Attributes:
        value: The submitted value (a user id).
        label: The text shown.

    """

    value: str
    label: str


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


_COLOUR: Final = re.compile(r"#[0-9A-Fa-f]{3}(?:[0-9A-Fa-f]{3})?")


def _document(
    title: str,
    body: str,
    *,
    attributes: Mapping[str, str] | None = None,
    accent: str = "#2f6feb",
) -> str:
    if not _COLOUR.fullmatch(accent):
        raise ValueError("accent must be a #rgb or #rrggbb colour")
    attrs_html = "".join(f' data-{_esc(k)}="{_esc(v)}"' for k, v in (attributes or {}).items())
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{_esc(title)}</title><style>:root{{--accent:{accent}}}{_CSS}</style></head>"
        f"<body{attrs_html}><main>{body}</main></body></html>\n"
    )


def consent_page(
    *,
    app_name: str,
    action: str,
    scopes: Sequence[ScopeOption],
    hidden: Mapping[str, str] | None = None,
    title: str | None = None,
    provider_name: str = "the provider",
    users: Sequence[UserOption] = (),
    selected_user: str | None = None,
    notice: str | None = None,
    scope_field: str = "scope",
    user_field: str = "user",
    decision_field: str = "decision",
    approve_label: str = "Authorize",
    deny_label: str = "Cancel",
    accent: str = "#2f6feb",
) -> str:
    """Render a consent form as an HTML document; every value is HTML-escaped.

    The form POSTs (``application/x-www-form-urlencoded``) to *action* with the *hidden*
    fields, one *scope_field* value per ticked scope (required scopes through hidden inputs,
    since disabled checkboxes are not submitted), the chosen user in *user_field* when
    *users* is not empty, and *decision_field* set to ``"approve"`` or ``"deny"``.

    :param app_name: The client application's name.
    :param action: The form's target URL (usually a path on the emulator).
    :param scopes: The scopes to list.
    :param hidden: Hidden fields, e.g. the pending-request id.
    :param title: The document title; defaults to ``"Authorize <app_name>"``.
    :param provider_name: The emulated provider, used in the text.
    :param users: Choices for the signed-in user; no picker when empty.
    :param selected_user: The value preselected in the picker.
    :param notice: An optional highlighted note (plain text).
    :param accent: The Approve button colour, ``#rgb`` or ``#rrggbb``.
    :raises ValueError: if *accent* is not such a colour.
    """
    rows: list[str] = []
    for index, scope in enumerate(scopes):
        ident = f"scope-{index}"
        desc = f'<span class="desc">{_esc(scope.description)}</span>' if scope.description else ""
        if scope.required:
            rows.append(
                f'<li><label class="required" for="{ident}">'
                f'<input type="checkbox" id="{ident}" value="{_esc(scope.name)}" checked disabled>'
                f'<input type="hidden" name="{_esc(scope_field)}" value="{_esc(scope.name)}">'
                f'<span><span class="scope">{_esc(scope.name)}</span> '
                f'<span class="muted">(required)</span>{desc}</span></label></li>'
            )
        else:
            checked = " checked" if scope.checked else ""
            rows.append(
                f'<li><label for="{ident}">'
                f'<input type="checkbox" id="{ident}" name="{_esc(scope_field)}" '
                f'value="{_esc(scope.name)}"{checked}>'
                f'<span><span class="scope">{_esc(scope.name)}</span>{desc}</span></label></li>'
            )
    hidden_html = "".join(
        f'<input type="hidden" name="{_esc(name)}" value="{_esc(value)}">'
        for name, value in (hidden or {}).items()
    )
    picker = ""
    if users:
        options = "".join(
            f'<option value="{_esc(user.value)}"'
            f"{' selected' if user.value == selected_user else ''}>{_esc(user.label)}</option>"
            for user in users
        )
        picker = (
            f'<p><label for="user-picker" class="muted">Signed in as</label></p>'
            f'<select id="user-picker" name="{_esc(user_field)}">{options}</select>'
        )
    notice_html = f'<p class="notice">{_esc(notice)}</p>' if notice else ""
    body = (
        f"<h1>{_esc(app_name)} would like to access your {_esc(provider_name)} account</h1>"
        f'<p class="muted">Untick the permissions you do not want to grant.</p>'
        f"{notice_html}"
        f'<form method="post" action="{_esc(action)}">{hidden_html}{picker}'
        f"<ul>{''.join(rows)}</ul>"
        f'<div class="actions">'
        f'<button class="deny" type="submit" name="{_esc(decision_field)}" value="deny">'
        f"{_esc(deny_label)}</button>"
        f'<button class="approve" type="submit" name="{_esc(decision_field)}" value="approve">'
        f"{_esc(approve_label)}</button></div></form>"
    )
    return _document(title or f"Authorize {app_name}", body, accent=accent)


def message_page(
    *,
    title: str,
    heading: str,
    paragraphs: Sequence[str] = (),
    code: str | None = None,
    attributes: Mapping[str, str] | None = None,
) -> str:
    """Render a simple message (typically an error) as an HTML document, all escaped.

    :param code: An optional value shown in ``<code>`` after the paragraphs, e.g. the name
        of the offending parameter.
    :param attributes: ``data-*`` attributes put on ``<body>`` for machine readers.
    """
    text = "".join(f"<p>{_esc(p)}</p>" for p in paragraphs)
    code_html = f"<p><code>{_esc(code)}</code></p>" if code is not None else ""
    return _document(title, f"<h1>{_esc(heading)}</h1>{text}{code_html}", attributes=attributes)


def html_response(text: str, *, status: int = 200) -> web.Response:
    """Wrap an HTML document in a response with restrictive security headers."""
    return web.Response(
        status=status, text=text, content_type="text/html", headers=dict(_HTML_HEADERS)
    )


def avatar_response(
    name: str, *, size: int = 64, colour: str = "#2f6feb", max_age: int = 3600
) -> web.Response:
    """A round SVG avatar with the initials of *name* (its first two words), on *colour*.

    :param name: The user's display name (``?`` when it has no word).
    :param size: The width and height in pixels.
    :param colour: The background colour (a CSS colour).
    :param max_age: The seconds a browser may cache it (``Cache-Control: public``).
    """
    initials = "".join(word[0] for word in name.split()[:2]).upper() or "?"
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" '
        f'viewBox="0 0 100 100" role="img" aria-label="{html.escape(name)}">'
        f'<rect width="100" height="100" rx="50" fill="{html.escape(colour)}"/>'
        '<text x="50" y="50" dy=".35em" text-anchor="middle" font-family="sans-serif" '
        f'font-size="38" font-weight="700" fill="#fff">{html.escape(initials)}</text></svg>'
    )
    return web.Response(
        text=svg,
        content_type="image/svg+xml",
        headers={"Cache-Control": f"public, max-age={max_age}"},
    )


# --------------------------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------------------------


class _PathOnlyAccessLogger(AbstractAccessLogger):
    """Access log lines without query strings, which may carry secrets."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            "%s %s -> %s (%.1f ms)", request.method, request.path, response.status, time * 1000
        )


async def _health(request: web.Request) -> web.StreamResponse:
    del request
    return web.json_response({"status": "ok"})


def _loopback(host: str) -> str:
    if host == "localhost":
        return LOOPBACK_HOST
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is None or not address.is_loopback:
        raise ValueError(f"emulators only bind to loopback addresses, not {host!r}")
    return str(address)


#: How the emulated user answers an authorization request.
ConsentMode: TypeAlias = Literal["form", "approve", "deny"]

#: Every consent mode: ``"form"`` (an HTML consent page to submit), ``"approve"`` (the user
#: grants at once) and ``"deny"`` (the user refuses at once).
CONSENT_MODES: Final[tuple[ConsentMode, ...]] = get_args(ConsentMode)


class EmulatorServer:
    """Base class of a provider emulator: an aiohttp application on a loopback port.

    Subclasses implement :meth:`add_routes` and list the paths that faults apply to in
    :attr:`api_paths`; every emulator also answers ``GET`` :data:`HEALTH_PATH`
    (``/emulator/health``) with ``{"status": "ok"}``. Use as an async context manager::

        async with MyEmulator() as emulator:
            ...  # emulator.url is e.g. "http://127.0.0.1:41234"

    **The conformance convention.** A provider plugin names its emulator in
    ``ProviderSpec.emulator`` (``"module:Class"``); generic tools, such as
    :mod:`keyloom_core.testing.conformance` and ``keyloom login --emulator``, then drive it
    without knowing the provider, through:

    - :meth:`for_client`: an emulator with one registered client (id, secret, redirect URIs
      and the scopes it may request);
    - :attr:`consent`: how the emulated user answers the next authorization requests;
    - :attr:`invalid_client_error` and :attr:`invalid_grant_error`: the provider's error
      codes for a wrong client secret and for an unusable (expired, replayed) code;
    - :meth:`expected_profile`: what the signed-in user's normalised profile should be.

    :param host: A loopback address (``"localhost"`` means ``127.0.0.1``); anything else
        raises :class:`ValueError`.
    :param port: The port, ``0`` for a free one.
    :param faults: A fault injector applied to :attr:`api_paths`; settable at runtime.
    :param clock: The time source of the emulator's bookkeeping.
    :param shutdown_timeout: Seconds in-flight requests get when the server stops.
    :param consent: The initial :attr:`consent` mode.
    """

    #: Paths (trailing slash ignored) that faults apply to unless the injector says otherwise.
    api_paths: ClassVar[frozenset[str]] = frozenset()
    #: The token endpoint's ``error`` for a wrong client secret.
    invalid_client_error: ClassVar[str] = "invalid_client"
    #: The token endpoint's ``error`` for an unknown, expired or already used code.
    invalid_grant_error: ClassVar[str] = "invalid_grant"

    def __init__(
        self,
        *,
        host: str = LOOPBACK_HOST,
        port: int = 0,
        faults: FaultInjector | None = None,
        clock: Clock = time.time,
        shutdown_timeout: float = 1.0,
        consent: ConsentMode = "form",
    ) -> None:
        """Configure the server; nothing is bound until :meth:`start`."""
        self.host = _loopback(host)
        self.requested_port = port
        self.faults = faults
        self.clock = clock
        self.shutdown_timeout = shutdown_timeout
        self.consent = consent
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._stopping: asyncio.Event | None = None

    # -- the conformance convention ------------------------------------------------------

    @classmethod
    def for_client(
        cls,
        client_id: str,
        client_secret: str,
        redirect_uris: Sequence[str],
        scopes: Iterable[str],
        **options: Any,
    ) -> Self:
        """Return an emulator (not started) with one registered client.

        :param client_id: The client's id.
        :param client_secret: The client's secret.
        :param redirect_uris: The redirect URIs registered for the client (exact matches).
        :param scopes: The scopes the client may request (an app-review approval, where the
            provider has one).
        :param options: Passed on to the constructor (``consent``, ``clock``, ``faults``,
            ``port`` and the subclass's own options).
        :raises NotImplementedError: the subclass does not follow the convention.
        """
        del client_id, client_secret, redirect_uris, scopes, options
        msg = f"{cls.__name__} does not implement EmulatorServer.for_client"
        raise NotImplementedError(msg)

    @property
    def consent(self) -> ConsentMode:
        """How the emulated user answers: ``"form"``, ``"approve"`` or ``"deny"``."""
        return self._consent

    @consent.setter
    def consent(self, value: ConsentMode) -> None:
        if value not in CONSENT_MODES:
            raise ValueError(f"consent must be one of {CONSENT_MODES}")
        self._consent: ConsentMode = value

    def expected_profile(self, client_id: str, scopes: Iterable[str]) -> Mapping[str, Any] | None:
        """Return the normalised profile a plugin should read for the default user, or ``None``.

        The mapping holds :class:`keyloom_core.Profile` fields (``id``, ``name``, ``email``,
        ``image``) as they should be for a login of *client_id* that was granted *scopes*;
        ``None`` (the default) means the emulator does not say, and only the profile's shape
        is checked.
        """
        del client_id, scopes
        return None

    # -- subclass hooks ------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        """Register the emulator's routes on *app* (subclasses must implement this)."""
        raise NotImplementedError

    def render_fault(
        self, kind: FaultKind, status: int, request: web.Request
    ) -> web.StreamResponse:
        """Build the body of an injected HTTP-status fault; override for provider shapes."""
        return _default_fault_response(kind, status, request)

    def is_api_path(self, path: str) -> bool:
        """Return whether *path* is one of :attr:`api_paths`."""
        normalised = _normalise_path(path)
        return any(_normalise_path(p) == normalised for p in self.api_paths)

    def build_app(self) -> web.Application:
        """Create the application: fault middleware, :data:`HEALTH_PATH`, :meth:`add_routes`."""

        @web.middleware
        async def faults(request: web.Request, handler: Handler) -> web.StreamResponse:
            injector = self.faults
            if injector is None:
                return await handler(request)
            return await injector.handle(
                request,
                handler,
                eligible=self.is_api_path(request.path),
                render=self.render_fault,
            )

        app = web.Application(middlewares=[faults])
        app.router.add_get(HEALTH_PATH, _health)
        self.add_routes(app)
        return app

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def started(self) -> bool:
        """Whether the server is listening."""
        return self._runner is not None

    @property
    def port(self) -> int:
        """The bound port (only while started)."""
        if self._port is None:
            raise RuntimeError("the emulator is not running")
        return self._port

    @property
    def url(self) -> str:
        """The base URL, e.g. ``"http://127.0.0.1:41234"`` (only while started)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def url_for(self, path: str) -> str:
        """Return the absolute URL of *path* on this server."""
        return self.url + (path if path.startswith("/") else "/" + path)

    async def start(self) -> Self:
        """Bind and start serving; return ``self``."""
        if self._runner is not None:
            raise RuntimeError("the emulator is already running")
        runner = web.AppRunner(
            self.build_app(),
            handle_signals=False,
            handler_cancellation=True,
            shutdown_timeout=self.shutdown_timeout,
            access_log_class=_PathOnlyAccessLogger,
            access_log=logging.getLogger(f"{__name__}.access"),
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.requested_port, reuse_address=True)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        self._stopping = asyncio.Event()
        logger.info("%s listening on %s", type(self).__name__, self.url)
        return self

    async def stop(self) -> None:
        """Stop serving and release the port; a no-op when not running."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        if self._stopping is not None:
            self._stopping.set()
        await runner.cleanup()
        self._port = None

    async def __aenter__(self) -> Self:
        """Start the server."""
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server."""
        await self.stop()

    async def serve_forever(self) -> None:
        """Start if needed and serve until :meth:`stop` is called (or the task is cancelled)."""
        if self._runner is None:
            await self.start()
        stopping = self._stopping
        try:
            if stopping is not None:
                await stopping.wait()
        finally:
            await self.stop()


def run_forever(
    server: EmulatorServer, *, on_ready: Callable[[EmulatorServer], None] | None = None
) -> None:
    """Run *server* in a new event loop until Ctrl-C or SIGTERM (blocking; for CLIs).

    :param on_ready: Called once the server listens, e.g. to print its URL.
    """

    async def main() -> None:
        await server.start()
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, stop.set)
        try:
            if on_ready is not None:
                on_ready(server)
            await stop.wait()
        finally:
            await server.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

S = TypeVar("S", bound=EmulatorServer)


def add_emulator_arguments(
    parser: argparse.ArgumentParser,
    *,
    client_id: str,
    client_secret: str,
    client_id_option: str = "--client-id",
) -> None:
    """Add the options every emulator's command line has, for :func:`emulator_main`.

    They are ``--host``, ``--port``, the registered client's id (*client_id_option*, such as
    TikTok's ``--client-key``; read back as ``args.client_id``), ``--client-secret``,
    ``--consent``, ``--fault-rate``, ``--seed``, ``--fault-kinds`` and ``--log-level``.
    Without ``--client-secret``, :func:`emulator_main` sets ``args.client_secret`` to the
    built-in *client_secret* for the built-in *client_id*, and to a random one for any other.
    """
    name = client_id_option.removeprefix("--").replace("-", "_")
    parser.add_argument("--host", default=LOOPBACK_HOST, help="loopback address to bind")
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    parser.add_argument(
        client_id_option,
        dest="client_id",
        default=client_id,
        metavar=name.upper(),
        help=f"the app's {name}",
    )
    parser.add_argument(
        "--client-secret",
        help=f"the app's client secret (default: the built-in one; random for another {name})",
    )
    parser.add_argument("--consent", choices=CONSENT_MODES, default="form")
    parser.add_argument("--fault-rate", type=float, default=0.0, help="0..1")
    parser.add_argument("--seed", type=int, default=0, help="fault sequence seed")
    parser.add_argument(
        "--fault-kinds",
        default=",".join(FAULT_KINDS),
        help="comma-separated subset of: " + ", ".join(FAULT_KINDS),
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    parser.set_defaults(builtin_client=(client_id, client_secret), client_id_name=name)


def faults_from_args(args: argparse.Namespace) -> FaultInjector:
    """The fault injector that ``--fault-rate``, ``--seed`` and ``--fault-kinds`` describe."""
    kinds = [kind for kind in str(args.fault_kinds).split(",") if kind]
    return FaultInjector(rate=args.fault_rate, seed=args.seed, kinds=kinds)


def emulator_options(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`EmulatorServer` keywords the shared options give.

    ``host``, ``port``, ``consent`` and ``faults`` (see :func:`faults_from_args`): pass them
    on with ``MyEmulator(..., **emulator_options(args))``.
    """
    return {
        "host": args.host,
        "port": args.port,
        "consent": args.consent,
        "faults": faults_from_args(args),
    }


def emulator_main(
    name: str,
    parser: argparse.ArgumentParser,
    factory: Callable[[argparse.Namespace], S],
    describe: Callable[[S], Iterable[str]],
    argv: Sequence[str] | None = None,
) -> int:
    """Run an emulator from its command line until Ctrl-C or SIGTERM; return the exit status.

    Parses *argv* with *parser* (set up with :func:`add_emulator_arguments`), configures
    logging, builds the server with ``factory(args)`` (a :class:`ValueError` there is reported
    as a usage error) and, once it listens, prints that *name* is listening on its URL, the
    client's credentials, the lines of ``describe(server)`` and how to stop it.
    """
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=str(args.log_level).upper(), format="%(levelname)s %(name)s: %(message)s"
    )
    builtin_id, builtin_secret = args.builtin_client
    if args.client_secret is None:
        builtin = args.client_id == builtin_id
        args.client_secret = builtin_secret if builtin else secrets.token_urlsafe(24)
    try:
        server = factory(args)
    except ValueError as exc:
        parser.error(str(exc))

    def announce(_server: EmulatorServer) -> None:
        lines = [
            f"{name} listening on {server.url}",
            f"  {args.client_id_name + ':':<15}{args.client_id}",
            f"  client_secret: {args.client_secret}",
            *describe(server),
            f"  consent: {server.consent}; press Ctrl-C to stop",
        ]
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()

    run_forever(server, on_ready=announce)
    return 0

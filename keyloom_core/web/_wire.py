"""What crosses the wire: cookie names and parsing, header checks, reprs without secrets."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

from keyloom_core.errors import AuthorizationError
from keyloom_core.web.sessions import CSRF_COOKIE, CSRF_HEADER, SESSION_COOKIE

__all__ = [
    "AUTH_COOKIES",
    "HOST_PREFIX",
    "MAX_COOKIE_BYTES",
    "STATE_COOKIE",
    "UnsendableHeaderError",
    "check_sendable",
    "cookie_value",
    "headers_repr",
    "host_cookie_name",
    "parse_cookies",
    "query_repr",
]

#: The login state cookie's plain name (``__Host-keyloom_oauth`` when cookies are Secure).
STATE_COOKIE: Final = "__keyloom_oauth"
#: Largest ``Set-Cookie`` value (name, value and attributes) Keyloom sends; browsers drop
#: cookies over 4096 bytes silently.
MAX_COOKIE_BYTES: Final = 4000
#: The prefix of cookie names when cookies are ``Secure``: the browser then only accepts
#: the cookie from this exact host, ``Secure``, ``Path=/`` and without ``Domain``, so a
#: sibling subdomain cannot plant (toss) one.
HOST_PREFIX: Final = "__Host-"


def host_cookie_name(name: str) -> str:
    """*name* (``__keyloom_session``) with the ``__Host-`` prefix (``__Host-keyloom_session``)."""
    return HOST_PREFIX + name.removeprefix("__")


#: Every name of Keyloom's auth cookies, plain and prefixed. A request carrying one of
#: these twice is read as if it carried none (a planted duplicate must not win).
AUTH_COOKIES: Final = frozenset(
    name
    for base in (SESSION_COOKIE, CSRF_COOKIE, STATE_COOKIE)
    for name in (base, host_cookie_name(base))
)


def parse_cookies(headers: Iterable[str]) -> dict[str, str]:
    """Parse ``Cookie`` header values; the first cookie of each name wins (as in browsers).

    Unlike :class:`http.cookies.SimpleCookie`, one malformed cookie does not hide the rest.
    A name of :data:`AUTH_COOKIES` sent more than once is left out altogether: two session
    (or CSRF, or state) cookies mean one was planted, by a sibling subdomain for example,
    so the request is treated as carrying none (signed out).
    """
    cookies: dict[str, str] = {}
    repeated: set[str] = set()
    for header in headers:
        for part in header.split(";"):
            name, sep, value = part.strip().partition("=")
            name, value = name.strip(), value.strip()
            if len(value) > 1 and value[0] == value[-1] == '"':
                value = value[1:-1]
            if not (sep and name):
                continue
            if name not in cookies:
                cookies[name] = value
            elif name in AUTH_COOKIES:
                repeated.add(name)
    for name in repeated:
        del cookies[name]
    return cookies


def cookie_value(headers: Iterable[str], name: str) -> str | None:
    """The value of cookie *name* in ``Cookie`` headers, as :func:`parse_cookies` reads it.

    Only the headers and the parts that can hold *name* are looked at, so a request's
    session check skips its other cookies (``bench_session_cookie.py`` prints this part:
    1.0 µs of a first read's 13.4).
    """
    found: str | None = None
    for header in headers:
        if name not in header:
            continue
        for part in header.split(";"):
            if name not in part:  # most parts: another cookie
                continue
            key, sep, value = part.partition("=")
            if not sep or key.strip() != name:
                continue
            if found is not None:  # sent twice: the first wins, but not for an auth cookie
                if name in AUTH_COOKIES:
                    return None
                continue
            value = value.strip()
            found = value[1:-1] if len(value) > 1 and value[0] == value[-1] == '"' else value
    return found


class UnsendableHeaderError(AuthorizationError):
    """An answer's header (a redirect's ``Location``) cannot be sent as HTTP."""

    code = "invalid_redirect"
    default_hint = (
        "Header values must be ASCII: give base_url and the provider's URLs with IDNA host "
        "names and percent-encoded paths."
    )


def check_sendable(headers: Iterable[tuple[str, str]]) -> None:
    """Raise :class:`UnsendableHeaderError` if a header value is not printable ASCII."""
    for name, value in headers:
        if not (value.isascii() and value.isprintable()):
            msg = f"the {name} header of this answer cannot be sent"
            raise UnsendableHeaderError(msg)


_REDACTED: Final = "<redacted>"
_SECRET_HEADERS: Final = frozenset(
    {"cookie", "authorization", "proxy-authorization", CSRF_HEADER, "set-cookie"}
)
_SECRET_PARAMS: Final = frozenset({"code", "state", "code_verifier"})


def headers_repr(headers: Mapping[str, str]) -> str:
    """The repr of request headers, secrets (cookies, credentials, CSRF) redacted."""
    return repr(
        {k: _REDACTED if k.lower() in _SECRET_HEADERS else v for k, v in headers.items()}
    )


def query_repr(query: tuple[tuple[str, str], ...]) -> str:
    """The repr of query pairs, the callback's ``code`` and ``state`` redacted."""
    return repr(tuple((k, _REDACTED if k in _SECRET_PARAMS else v) for k, v in query))

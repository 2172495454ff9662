"""TikTok's redirect URI rules, as the emulated developer portal and authorize route apply them.

Web apps register absolute ``https`` URIs that are not on localhost. Desktop apps register
``http`` or ``https`` URIs on ``localhost`` or ``127.0.0.1`` with a port, where ``*`` means
any port. Neither may have a query string or a fragment, or 512 characters or more, and an
app registers 1 to :data:`MAX_REDIRECT_URIS`.
"""

from __future__ import annotations

from typing import Final, Literal, TypeAlias

from keyloom_core.testing.authserver import (
    RedirectUriParts,
    redirect_uri_matches,
    split_redirect_uri,
)

__all__ = ["MAX_REDIRECT_URIS", "AppType", "redirect_matches", "redirect_uri_problem"]

#: Which app types TikTok registers: web (https redirect URIs) or desktop (loopback ones).
AppType: TypeAlias = Literal["web", "desktop"]
#: How many redirect URIs an app may register.
MAX_REDIRECT_URIS: Final = 10

_MAX_LENGTH: Final = 512
_DESKTOP_HOSTS: Final = frozenset({"localhost", "127.0.0.1"})
#: Whether a redirect URI matches a registered one: exactly, or on any port for ``*``.
redirect_matches = redirect_uri_matches


def _valid_port(port: str) -> bool:
    return port.isdigit() and 0 < int(port) < 65536


def redirect_uri_problem(uri: str, app_type: AppType) -> str | None:
    """Return why TikTok would refuse to register *uri* for an app of *app_type*, or ``None``.

    Web apps need an absolute ``https`` URI that is not on localhost; desktop apps need
    ``http`` or ``https`` on ``localhost`` or ``127.0.0.1`` with a port (``*`` for any). Both
    forbid a query string or fragment and 512 characters or more.
    """
    if len(uri) >= _MAX_LENGTH:
        return "must be shorter than 512 characters"
    if "?" in uri or "#" in uri:
        return "must be static: no query string or fragment"
    parts = split_redirect_uri(uri)
    if parts is None or any(char.isspace() for char in uri):
        return "must be an absolute URL"
    if app_type == "web":
        return _web_uri_problem(parts)
    return _desktop_uri_problem(parts)


def _web_uri_problem(parts: RedirectUriParts) -> str | None:
    if parts.scheme != "https":
        return "must use https for web apps"
    if parts.host.lower() in _DESKTOP_HOSTS:
        return "must not be on localhost for web apps (register a desktop app instead)"
    if parts.port is not None and not _valid_port(parts.port):
        return "has an invalid port"
    return None


def _desktop_uri_problem(parts: RedirectUriParts) -> str | None:
    if parts.scheme not in {"http", "https"}:
        return "must use http or https"
    if parts.host not in _DESKTOP_HOSTS:
        return "must be on localhost or 127.0.0.1 for desktop apps"
    if parts.port is None:
        return "must have a port (or * for any port) for desktop apps"
    if parts.port != "*" and not _valid_port(parts.port):
        return "has an invalid port"
    return None

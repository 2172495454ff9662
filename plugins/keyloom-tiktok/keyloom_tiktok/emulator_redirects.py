"""TikTok's redirect URI rules, as the emulated developer portal and authorize route apply them.

Web apps register absolute ``https`` URIs that are not on localhost. Desktop apps register
``http`` or ``https`` URIs on ``localhost`` or ``127.0.0.1`` with a port, where ``*`` means
any port. Neither may have a query string or a fragment, or 512 characters or more, and an
app registers 1 to :data:`MAX_REDIRECT_URIS`.
"""

from __future__ import annotations

from typing import Final, Literal, TypeAlias

import attrs

from keyloom_core.testing.authserver import RedirectUriPolicy, redirect_uri_matches

__all__ = ["MAX_REDIRECT_URIS", "AppType", "redirect_matches", "redirect_uri_problem"]

#: Which app types TikTok registers: web (https redirect URIs) or desktop (loopback ones).
AppType: TypeAlias = Literal["web", "desktop"]
#: How many redirect URIs an app may register.
MAX_REDIRECT_URIS: Final = 10
#: Whether a redirect URI matches a registered one: exactly, or on any port for ``*``.
redirect_matches = redirect_uri_matches

_WEB: Final = RedirectUriPolicy(
    loopback="forbidden",
    loopback_hosts=("localhost", "127.0.0.1"),
    static=True,
    max_length=512,
    kind="web apps",
)
_DESKTOP: Final = attrs.evolve(
    _WEB, schemes=("http", "https"), loopback="required", port_required=True, kind="desktop apps"
)


def redirect_uri_problem(uri: str, app_type: AppType) -> str | None:
    """Return why TikTok would refuse to register *uri* for an app of *app_type*, or ``None``.

    Web apps need an absolute ``https`` URI that is not on localhost; desktop apps need
    ``http`` or ``https`` on ``localhost`` or ``127.0.0.1`` with a port (``*`` for any). Both
    forbid a query string or fragment and 512 characters or more.
    """
    return (_WEB if app_type == "web" else _DESKTOP).problem(uri)

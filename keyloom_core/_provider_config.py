"""Provider configuration: ``configure_provider``, what every plugin factory calls."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from .errors import ConfigurationError
from .models import ProfileOverrides, Provider, ProviderSpec, parse_scopes

__all__ = ["configure_provider", "env"]


def env(name: str) -> str | None:
    """The environment variable *name*, stripped; ``None`` if unset or blank."""
    value = os.environ.get(name, "").strip()
    return value or None


def configure_provider(
    spec: ProviderSpec,
    *,
    client_id: str | None = None,
    client_secret: str | None = None,
    scopes: Iterable[str] | str | None = None,
    required_scopes: Iterable[str] | str | None = None,
    approved_scopes: Iterable[str] | str | None = None,
    profile_overrides: ProfileOverrides | None = None,
    redirect_uri: str | None = None,
    endpoint_origin: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> Provider:
    """Build a configured :class:`Provider` from *spec*; what plugin factories call.

    Missing credentials are read from ``{spec.env_prefix}_CLIENT_ID`` and
    ``{spec.env_prefix}_CLIENT_SECRET``. *scopes* default to ``spec.default_scopes``;
    *required_scopes* default to the requested scopes that are among the defaults (the
    rest may be declined by the user without failing the login).

    :param endpoint_origin: serve every endpoint from this origin instead (an emulator).
    :raises ConfigurationError: a credential is missing.
    """
    client_id = client_id or env(f"{spec.env_prefix}_CLIENT_ID")
    client_secret = client_secret or env(f"{spec.env_prefix}_CLIENT_SECRET")
    public = spec.token_auth_method == "none" and spec.revoke_auth_method in (None, "none")
    for value, what in ((client_id, "CLIENT_ID"), (client_secret, "CLIENT_SECRET")):
        if not value and not (what == "CLIENT_SECRET" and public):
            msg = (
                f"{spec.name}: no {what.lower().replace('_', ' ')}; pass it or set "
                f"{spec.env_prefix}_{what}"
            )
            raise ConfigurationError(msg, provider_id=spec.id)
    if endpoint_origin:
        spec = spec.with_endpoint_origin(endpoint_origin)
    requested = parse_scopes(scopes) if scopes is not None else spec.default_scopes
    required = (
        parse_scopes(required_scopes)
        if required_scopes is not None
        else requested & spec.default_scopes
    )
    return Provider(
        spec=spec,
        client_id=client_id or "",
        client_secret=client_secret or "",
        scopes=requested,
        required_scopes=required,
        approved_scopes=approved_scopes,
        profile_overrides=profile_overrides,
        redirect_uri=redirect_uri,
        options=dict(options or {}),
    )

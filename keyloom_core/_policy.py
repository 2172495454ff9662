"""The core's own scope policy, shipped as an ordinary plugin of the broadcast hooks."""

from __future__ import annotations

from collections.abc import Iterable

from .errors import HINT_SCOPE_REVIEW, ConfigurationError
from .hookspecs import hookimpl
from .models import Provider
from .oauth2 import check_implied_scopes


@hookimpl
def validate_scopes(provider: Provider) -> None:
    """Refuse unknown scopes, scopes another requested one includes, and unapproved ones."""
    spec = provider.spec
    if not provider.scopes:
        msg = f"provider '{spec.id}' requests no scopes"
        raise ConfigurationError(msg, provider_id=spec.id)
    if spec.known_scopes:
        unknown = sorted((provider.scopes | provider.required_scopes) - spec.known_scopes)
        if unknown:
            known = ", ".join(sorted(spec.known_scopes))
            msg = f"unknown {spec.name} scope(s): {', '.join(unknown)} (known: {known})"
            raise ConfigurationError(msg, provider_id=spec.id)
    check_implied_scopes(provider)
    extra = sorted(provider.required_scopes - provider.scopes)
    if extra:
        msg = f"required scope(s) {', '.join(extra)} are not among the requested scopes"
        raise ConfigurationError(msg, provider_id=spec.id)
    if provider.approved_scopes is not None:
        unapproved = sorted(provider.scopes - provider.approved_scopes)
        if unapproved:
            msg = (
                f"scope(s) {', '.join(unapproved)} need {spec.name} app review: they are not "
                "in approved_scopes"
            )
            raise ConfigurationError(msg, provider_id=spec.id, hint=HINT_SCOPE_REVIEW)


@hookimpl
def check_granted_scopes(
    provider: Provider, requested: frozenset[str], granted: frozenset[str]
) -> Iterable[str] | None:
    """A login needs every requested scope that the provider configuration marks required."""
    return (provider.required_scopes & requested) - granted

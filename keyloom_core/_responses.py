"""Reading a provider's answer for an error: RFC 6749 §5.2 bodies, whatever the status."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .errors import ProviderError, ReauthenticationRequiredError, TokenRefreshError

if TYPE_CHECKING:
    from .http import HttpResponse
    from .models import Provider

__all__ = ["clip", "raise_for_error"]


def clip(value: object, limit: int = 300) -> str | None:
    """*value* cut to *limit* characters if it is non-empty text, else ``None``."""
    return value[:limit] if isinstance(value, str) and value else None


def raise_for_error(
    response: HttpResponse,
    data: Mapping[str, Any],
    provider: Provider,
    error: type[ProviderError],
) -> None:
    """Raise *error* if *data* (a parsed body) is an RFC 6749 §5.2 error or the status failed.

    ``invalid_grant`` on a refresh raises :class:`ReauthenticationRequiredError`, and so
    does a code of the provider's ``reauth_errors``. The
    provider's ``error``, ``error_description`` and ``log_id`` are kept on the exception.
    """
    code = data.get("error")
    if response.ok and not code:
        return
    cls = error
    reauth = ("invalid_grant", *provider.spec.reauth_errors)
    dead = isinstance(code, str) and code in reauth  # a hostile answer's error may be a list
    if dead and issubclass(error, TokenRefreshError):
        cls = ReauthenticationRequiredError
    description = clip(data.get("error_description")) or clip(data.get("message"))
    raise cls(
        f"{provider.spec.name} refused the request (HTTP {response.status})",
        provider_id=provider.id,
        error=clip(code, 64) or f"http_{response.status}",
        description=description,
        log_id=clip(data.get("log_id"), 128) or _log_id(response, provider),
        http_status=response.status,
    )


def _log_id(response: HttpResponse, provider: Provider) -> str | None:
    header = provider.spec.log_id_header
    return clip(response.headers.get(header), 128) if header else None

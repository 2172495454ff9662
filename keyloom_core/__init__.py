"""Keyloom: sign-in with any OAuth provider for async Python apps, through plugins."""

import importlib
from typing import TYPE_CHECKING, Any

from ._config import define_keyloom as define_keyloom
from ._deprecation import deprecated_module_names as deprecated_module_names
from ._provider_config import configure_provider as configure_provider
from ._state import MemoryStateGuard as MemoryStateGuard
from ._state import StateGuard as StateGuard
from .errors import AccessDeniedError as AccessDeniedError
from .errors import AuthorizationError as AuthorizationError
from .errors import ConfigurationError as ConfigurationError
from .errors import InvalidCallbackError as InvalidCallbackError
from .errors import InvalidRedirectError as InvalidRedirectError
from .errors import KeyloomError as KeyloomError
from .errors import NetworkError as NetworkError
from .errors import PluginError as PluginError
from .errors import ProfileError as ProfileError
from .errors import ProviderError as ProviderError
from .errors import ProviderTimeoutError as ProviderTimeoutError
from .errors import RateLimitedError as RateLimitedError
from .errors import ReauthenticationRequiredError as ReauthenticationRequiredError
from .errors import RevokeError as RevokeError
from .errors import ScopeDeniedError as ScopeDeniedError
from .errors import StateError as StateError
from .errors import TokenExchangeError as TokenExchangeError
from .errors import TokenRefreshError as TokenRefreshError
from .errors import UnknownProviderError as UnknownProviderError
from .hookspecs import hookimpl as hookimpl
from .models import AuthorizationRequest as AuthorizationRequest
from .models import LoginResult as LoginResult
from .models import LoginStart as LoginStart
from .models import Profile as Profile
from .models import Provider as Provider
from .models import ProviderSpec as ProviderSpec
from .models import TokenSet as TokenSet
from .models import parse_scopes as parse_scopes

__all__ = [
    "AccessDeniedError",
    "AuthorizationError",
    "AuthorizationRequest",
    "ConfigurationError",
    "HttpClient",
    "HttpResponse",
    "InvalidCallbackError",
    "InvalidRedirectError",
    "Keyloom",
    "KeyloomError",
    "LoginResult",
    "LoginStart",
    "MemoryStateGuard",
    "NetworkError",
    "PluginError",
    "Profile",
    "ProfileError",
    "Provider",
    "ProviderError",
    "ProviderSpec",
    "ProviderTimeoutError",
    "RateLimitedError",
    "ReauthenticationRequiredError",
    "RetryPolicy",
    "RevokeError",
    "ScopeDeniedError",
    "StateError",
    "StateGuard",
    "TokenExchangeError",
    "TokenRefreshError",
    "TokenSet",
    "UnknownProviderError",
    "configure_provider",
    "define_keyloom",
    "deprecated_module_names",
    "hookimpl",
    "parse_scopes",
]

if TYPE_CHECKING:
    from ._keyloom import Keyloom as Keyloom
    from .http import HttpClient as HttpClient
    from .http import HttpResponse as HttpResponse
    from .http import RetryPolicy as RetryPolicy

# The runtime loads on first use: anyio (about 15 ms of a cold start, measured with
# `python -X importtime`) and aiohttp (about 90 ms) stay off the path of plugin discovery
# and of the command line.
_LAZY = {
    "Keyloom": "._keyloom",
    "HttpClient": ".http",
    "HttpResponse": ".http",
    "RetryPolicy": ".http",
}


def __getattr__(name: str) -> Any:
    """Load the runtime names on first use."""
    module = _LAZY.get(name)
    if module is None:
        msg = f"module 'keyloom_core' has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value

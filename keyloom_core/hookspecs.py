"""The plugin contract: every hook a Keyloom plugin may implement.

A plugin is a module (or object) with functions marked ``@hookimpl``, listed in the
``keyloom`` entry-point group of its distribution. It implements only what it needs;
an implementation may take a subset of a hook's arguments.

*Provider hooks* (``authorize_params`` … ``fetch_profile``) are ``async`` (``authorize_params``
may be a plain ``def`` too, and then answers at once) and are called
only on the plugin that registered the provider, so a plugin never sees another
provider's calls. Returning ``None`` defers to the built-in RFC 6749 implementation, so a
plugin overrides only what its provider does differently; the built-in one is called only
then. Provider hooks cannot be wrappers.

*Policy and event hooks* (``validate_scopes``, ``check_granted_scopes``,
``login_succeeded``, ``login_failed``, and the user events ``user_created``,
``account_linked``, ``account_unlinked``, ``user_deleted``) are broadcast to every
plugin: any plugin may add a policy, veto a login, or watch for suspicious activity.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from .errors import KeyloomError
    from .http import HttpClient
    from .models import (
        AuthorizationRequest,
        LoginResult,
        Profile,
        Provider,
        ProviderSpec,
        TokenSet,
    )
    from .users._model import Account, User

__all__ = ["PROJECT", "ProviderFactory", "hookimpl", "hookspec"]

PROJECT = "keyloom"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

ProviderFactory = Callable[..., "Provider"]


@hookspec
def register_providers(
    register: Callable[[ProviderSpec, ProviderFactory | None], None],
) -> None:
    """Declare the providers this plugin offers (the only synchronous provider hook).

    Call ``register(spec, factory)`` once per provider. ``factory(**options)`` builds a
    configured :class:`~keyloom_core.Provider`; called with no arguments it must read the
    credentials from the environment (``{spec.env_prefix}_CLIENT_ID`` / ``_CLIENT_SECRET``).
    Pass ``None`` to use :func:`keyloom_core.configure_provider`. Two plugins registering
    one provider id is an error naming both.
    """


@hookspec
async def authorize_params(
    provider: Provider, request: AuthorizationRequest
) -> Mapping[str, str] | None:
    """Return the query parameters of the authorization URL, or ``None`` for RFC 6749's.

    The core appends them to ``provider.spec.authorize_url``. They must carry
    ``request.state``, ``request.redirect_uri`` and the PKCE challenge, and
    ``request.nonce`` and ``request.extra`` when set (an OpenID login, per-login parameters).

    Building them needs no I/O, so an implementation may be a plain ``def``: it answers at
    once, and a login that is not OpenID then starts without a cancel scope. An
    ``async def`` one gets the provider call's timeout.
    """


@hookspec
async def exchange_code(
    provider: Provider,
    code: str,
    redirect_uri: str,
    code_verifier: str,
    http: HttpClient,
) -> TokenSet | None:
    """Exchange an authorization code for tokens; return ``None`` for RFC 6749's exchange.

    *code* is already URL-decoded; *redirect_uri* is byte-identical to the authorize one.
    Raise :class:`~keyloom_core.TokenExchangeError` (or a subclass of
    :class:`~keyloom_core.ProviderError`) when the provider refuses.
    """


@hookspec
async def refresh_token(provider: Provider, tokens: TokenSet, http: HttpClient) -> TokenSet | None:
    """Refresh *tokens*; return the new set (with the rotated refresh token), or ``None``.

    Raise :class:`~keyloom_core.ReauthenticationRequiredError` when the refresh token is
    no longer valid (``invalid_grant``).
    """


@hookspec
async def revoke_token(provider: Provider, tokens: TokenSet, http: HttpClient) -> bool | None:
    """Revoke *tokens* at the provider: ``True`` if revoked, ``False`` if the provider can't.

    Return ``None`` for RFC 7009 revocation at ``spec.revoke_url`` (its method, body and
    client authentication as the spec's ``revoke_*`` fields declare).
    """


@hookspec
async def fetch_profile(provider: Provider, tokens: TokenSet, http: HttpClient) -> Profile | None:
    """Fetch and normalise the user's profile (``id``, ``name``, ``email``, ``image``, ``raw``).

    Return ``None`` for the generic reader of ``spec.profile_url``. Do not apply
    ``profile_overrides``: the core applies them last.
    """


@hookspec
def validate_scopes(provider: Provider) -> None:
    """Check a provider's configured scopes when the app starts; raise to refuse.

    Broadcast to every plugin. Raise :class:`~keyloom_core.ConfigurationError` naming
    the offending scope. The core already refuses scopes outside ``spec.known_scopes``,
    a scope requested with one it includes (``spec.implied_scopes``) and scopes outside
    ``provider.approved_scopes``.
    """


@hookspec
def check_granted_scopes(
    provider: Provider, requested: frozenset[str], granted: frozenset[str]
) -> Iterable[str] | None:
    """Return the scopes missing from *granted* that this plugin requires, or ``None``.

    Broadcast after every callback; the core raises :class:`~keyloom_core.ScopeDeniedError`
    naming the union of all missing scopes. The core itself requires
    ``provider.required_scopes``.
    """


@hookspec
async def login_succeeded(provider: Provider, result: LoginResult) -> None:
    """Called after a successful login, before the app sees it; broadcast.

    Persist the tokens here. Raising a :class:`~keyloom_core.KeyloomError` (for example
    :class:`~keyloom_core.AccessDeniedError`) vetoes the login; any other exception fails it.
    """


@hookspec
async def login_failed(provider_id: str, error: KeyloomError, context: Mapping[str, str]) -> None:
    """Called when a login fails, with the typed error; broadcast, for monitoring.

    ``error.code`` says why (``invalid_state``, ``access_denied``, ``scope_denied``…);
    *context* holds non-secret details (``stage``, ``reason``). Exceptions raised here are
    logged and otherwise ignored.
    """


@hookspec
async def user_created(user: User, account: Account) -> None:
    """Called when a login created a new user, with the account it signed in with; broadcast.

    Runs after the user and the account are stored (``account_linked`` follows). Exceptions
    raised here are logged and otherwise ignored: the user stays.
    """


@hookspec
async def account_linked(user: User, account: Account) -> None:
    """Called when a provider account was linked to a user (new user, link mode, e-mail).

    Broadcast after the link is stored; exceptions are logged and otherwise ignored.
    """


@hookspec
async def account_unlinked(user: User, account: Account) -> None:
    """Called when an account was unlinked from a user (its tokens already revoked).

    Broadcast after the change is stored; exceptions are logged and otherwise ignored.
    """


@hookspec
async def user_deleted(user: User) -> None:
    """Called when a user was deleted with its accounts, tokens and sessions; broadcast.

    Delete the app's own rows of the user here. Exceptions are logged and otherwise ignored.
    """

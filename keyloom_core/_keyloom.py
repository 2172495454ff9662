"""The Keyloom runtime: the OAuth flow (begin, complete, refresh, revoke) and its HTTP client."""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
import warnings
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING

import anyio

from ._callback import callback_code, check_query, granted_scopes, reported_scopes
from ._dispatch import HookDispatcher, Operation
from ._redirects import safe_callback_url
from ._settings import ConfiguredBy
from ._signing import Signer
from ._state import LoginState, LoginStates, MemoryStateGuard, StateGuard
from .errors import (
    KeyloomError,
    ReauthenticationRequiredError,
    ScopeDeniedError,
    UnknownProviderError,
)
from .http import HttpClient, query_encode
from .models import (
    AuthorizationRequest,
    LoginResult,
    LoginStart,
    Profile,
    Provider,
    TokenSet,
)
from .oidc import _flow as oidc
from .pkce import new_code_verifier, s256_challenge
from .store._sessions import SessionRegistry
from .users._rules import check_link_to, login_result, users_for

if TYPE_CHECKING:
    from ._plugins import PluginRegistry
    from ._settings import Settings

__all__ = ["Keyloom", "MemoryStateGuard", "StateGuard"]

log = logging.getLogger("keyloom")


class Keyloom(ConfiguredBy):
    """A configured Keyloom instance; build it with :func:`keyloom_core.define_keyloom`.

    Its :attr:`settings` never change. What does change is the runtime: ``async with
    keyloom:`` opens the one shared HTTP session (or borrows the app's) and the last exit
    closes it; several instances may live in one process.

    Attributes:
        settings: The frozen configuration.
        registry: The plugins, all registered before construction.
    """

    def __init__(self, settings: Settings, registry: PluginRegistry) -> None:
        self.settings = settings
        self.registry = registry
        self.hooks = HookDispatcher(registry, settings.timeout)
        guard = settings.state_guard if settings.state_guard is not None else MemoryStateGuard()
        self.sessions = SessionRegistry(  # revoke_all(user_id), list(user_id)
            settings.store if settings.server_sessions else None,
            absolute_ttl=settings.session_ttl,
            idle_ttl=settings.session_idle_ttl,
            touch_interval=settings.session_touch_interval,
            closable=settings.store,
        )
        self.states = LoginStates(settings.secrets, ttl=settings.state_ttl, guard=guard)
        self.users = users_for(settings, self.hooks, self.sessions)  # None without an adapter
        self._signers: dict[str, Signer] = {}
        self._http: HttpClient | None = None
        self._users = 0

    def __repr__(self) -> str:
        return f"<Keyloom {self.base_url} providers={sorted(self.providers)}>"

    def signer(self, purpose: str) -> Signer:
        """The signer for *purpose*, keyed on this instance's secrets (built once)."""
        signer = self._signers.get(purpose)
        if signer is None:
            signer = self._signers[purpose] = Signer(self.secrets, purpose)
        return signer

    # -- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> Keyloom:
        if self._http is None:
            settings = self.settings
            http = HttpClient(settings.session, timeout=settings.timeout, retry=settings.retry)
            await http.open()
            self._http = http
        self._users += 1
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._users -= 1
        if self._users <= 0 and self._http is not None:
            http, self._http = self._http, None
            await http.close()
            await self.sessions.aclose()  # the store's connections; reopened on use
            if self.users is not None:
                await self.users.adapter.aclose()

    @property
    def http(self) -> HttpClient:
        """The shared HTTP client (open inside ``async with keyloom:``)."""
        if self._http is None:
            msg = "Keyloom is not open: use 'async with keyloom:'"
            raise RuntimeError(msg)
        return self._http

    # -- lookups ---------------------------------------------------------------------

    def provider(self, provider_id: str) -> Provider:
        """The configured provider *provider_id*.

        :raises UnknownProviderError: no such provider is configured.
        """
        try:
            return self.providers[provider_id]
        except (KeyError, TypeError):
            shown = provider_id[:40] if isinstance(provider_id, str) else "?"
            msg = f"no provider named '{shown}' is configured"
            raise UnknownProviderError(msg) from None

    def redirect_uri(self, provider: Provider) -> str:
        """The redirect URI registered with the provider for this app."""
        return provider.redirect_uri or (
            f"{self.base_url}{self.base_path}/oauth/{provider.id}/callback"
        )

    # -- the flow --------------------------------------------------------------------

    async def begin_login(
        self,
        provider: str,
        *,
        callback_url: str | None = None,
        redirect_uri: str | None = None,
        now: float | None = None,
        params: Mapping[str, str] | None = None,
        link_to: str | None = None,
    ) -> LoginStart:
        """Start a login: returns the authorization URL and the signed state to keep.

        :param callback_url: where to send the user afterwards; a same-origin path.
        :param redirect_uri: override the redirect URI (e.g. a loopback one for the CLI).
        :param params: per-login parameters (``prompt``, ``login_hint``, ``max_age``…),
            among those the provider's ``spec.login_params`` allows.
        :param link_to: link this login's account to that user id (needs an adapter).
        :raises InvalidRedirectError: *callback_url* leaves the app's origin.
        :raises LoginParameterError: a parameter the provider does not allow, or invalid.
        """
        prov = self.provider(provider)
        now = time.time() if now is None else now
        extra = oidc.check_login_params(prov, params)
        openid = oidc.is_openid(prov)
        state = LoginState(
            provider_id=prov.id,
            nonce=secrets.token_urlsafe(24),
            code_verifier=new_code_verifier(),
            callback_url=safe_callback_url(callback_url, self.base_url),
            redirect_uri=redirect_uri or self.redirect_uri(prov),
            max_age=extra.get("max_age") if openid else None,  # checked at the callback
            link_to=check_link_to(self.users, prov.id, link_to),
        )
        request = AuthorizationRequest(
            redirect_uri=state.redirect_uri,
            state=state.nonce,
            scopes=tuple(sorted(prov.scopes)),
            code_challenge=s256_challenge(state.code_verifier, prov.spec.pkce_encoding),
            nonce=oidc.nonce_for(state.code_verifier) if openid else None,
            extra=extra,
        )
        if prov.spec.issuer is None:
            query = await self.hooks.provider_call("authorize_params", prov, request=request)
            base = prov.spec.authorize_url
        else:  # OpenID: the endpoint may come from discovery, bounded like a provider call
            with Operation() as operation:  # one operation for both, each with the timeout
                hook = self.hooks.provider_call
                query = await hook("authorize_params", prov, operation, request=request)
                operation.start("discovery", self.timeout)
                base = (await oidc.endpoints(prov, self.http)).authorize_url
            if operation.cancel_scope.cancelled_caught:
                raise self.hooks.timed_out(operation.hook, prov.id)
        url = f"{base}{'&' if '?' in base else '?'}{query_encode(query)}"
        sealed = self.states.seal(state, now=now)
        return LoginStart(url=url, state=sealed, expires_at=now + self.state_ttl)

    async def complete_login(
        self,
        provider: str,
        query: Mapping[str, str],
        state: str | None,
        *,
        now: float | None = None,
    ) -> LoginResult:
        """Finish a login from the provider's callback query and the stored state.

        The ``login_succeeded`` hooks run before it returns (a token store saves the
        tokens there); if one refuses the login, the tokens are revoked.

        :raises StateError: the state is missing, forged, expired, replayed or not this
            provider's.
        :raises AccessDeniedError: the user cancelled.
        :raises ScopeDeniedError: a required scope was not granted.
        :raises ProviderError: the provider failed (subclasses say where).
        """
        context = {"stage": "callback"}
        try:
            prov = self.provider(provider)
            # One cancel scope for the whole callback; each provider call moves its
            # deadline, so every call still gets the full timeout.
            with Operation() as operation:
                return await self._complete(prov, query, state, now, context, operation)
            raise self.hooks.timed_out(operation.hook, prov.id)  # the scope caught it
        except KeyloomError as error:
            context.setdefault("reason", getattr(error, "reason", error.code))
            log.info("login failed: provider=%r code=%s %s", provider, error.code, context)
            await self.hooks.login_failed(provider, error, context)
            raise

    async def _complete(
        self,
        prov: Provider,
        query: Mapping[str, str],
        stored: str | None,
        now: float | None,
        context: dict[str, str],
        operation: Operation,
    ) -> LoginResult:
        check_query(prov, query)
        state = await self.states.use(prov.id, query.get("state"), stored, now)
        if prov.spec.issuer is not None:  # RFC 9207 mix-up defence
            operation.start("discovery", self.timeout)
            await oidc.check_callback_issuer(prov, query, self.http)
        code = callback_code(prov, query)
        from_callback = reported_scopes(query)
        if from_callback is not None:  # refuse early, before any token is issued
            self._check_scopes(prov, from_callback)
        context["stage"] = "token"
        tokens: TokenSet = await self.hooks.provider_call(
            "exchange_code",
            prov,
            operation,
            code=code,
            redirect_uri=state.redirect_uri,
            code_verifier=state.code_verifier,
            http=self.http,
        )
        try:
            if state.max_age is not None:
                oidc.check_max_age(prov, tokens, int(state.max_age))
            granted = granted_scopes(prov, from_callback, tokens)
            if granted != from_callback:  # not checked yet
                self._check_scopes(prov, granted)
            context["stage"] = "profile"
            profile = await self._fetch_profile(prov, tokens, operation)
            result = await login_result(self.users, prov, profile, tokens, granted, state)
            context["stage"] = "login_succeeded"
            await self.hooks.broadcast(
                "login_succeeded", operation=operation, provider=prov, result=result
            )
        except BaseException:
            await self.revoke_refused(prov.id, tokens)
            raise
        return result

    def _check_scopes(self, prov: Provider, granted: frozenset[str]) -> None:
        missing = self.hooks.missing_scopes(prov, prov.scopes, granted)
        if missing:
            raise ScopeDeniedError(missing, provider_id=prov.id)

    async def revoke_refused(self, provider_id: str, tokens: TokenSet) -> None:
        """Give back the tokens of a login that ends here (refused after the exchange).

        Shielded from cancellation and bounded by the timeout; a failure is logged, never
        raised, so the caller's own error goes on.
        """
        with anyio.CancelScope(shield=True), anyio.move_on_after(self.timeout):
            try:
                await self.revoke(provider_id, tokens)
            except KeyloomError as exc:
                log.warning("could not revoke the tokens of a refused login: %s", exc.code)

    @contextlib.asynccontextmanager
    async def revoking_on_failure(self, provider_id: str, tokens: TokenSet) -> AsyncIterator[None]:
        """Deprecated: ``async with``: if the block raises, :meth:`revoke_refused` first."""
        msg = "Keyloom.revoking_on_failure is deprecated: use await Keyloom.revoke_refused()"
        warnings.warn(msg, DeprecationWarning, stacklevel=3)
        try:
            yield
        except BaseException:
            await self.revoke_refused(provider_id, tokens)
            raise

    # -- tokens and profiles ---------------------------------------------------------

    async def fetch_profile(self, provider: str, tokens: TokenSet) -> Profile:
        """Fetch the user's normalised profile, with ``profile_overrides`` applied."""
        return await self._fetch_profile(self.provider(provider), tokens)

    async def _fetch_profile(
        self, prov: Provider, tokens: TokenSet, operation: Operation | None = None
    ) -> Profile:
        profile: Profile = await self.hooks.provider_call(
            "fetch_profile", prov, operation, tokens=tokens, http=self.http
        )
        return prov.apply_overrides(profile)

    async def refresh(self, provider: str, tokens: TokenSet) -> TokenSet:
        """Refresh *tokens*; the answer carries the rotated refresh token.

        :raises ReauthenticationRequiredError: the refresh token is dead; sign in again.
        """
        prov = self.provider(provider)
        if not tokens.refresh_token:
            msg = "no refresh token: the user must sign in again"
            raise ReauthenticationRequiredError(msg, provider_id=prov.id)
        result: TokenSet = await self.hooks.provider_call(
            "refresh_token", prov, tokens=tokens, http=self.http
        )
        return result

    async def revoke(self, provider: str, tokens: TokenSet) -> bool:
        """Revoke *tokens* at the provider; ``False`` if the provider cannot revoke."""
        prov = self.provider(provider)
        result: bool = await self.hooks.provider_call(
            "revoke_token", prov, tokens=tokens, http=self.http
        )
        return result

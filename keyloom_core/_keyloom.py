"""The Keyloom runtime: the OAuth flow engine that apps and web integrations call."""

from __future__ import annotations

import asyncio
import collections
import hmac
import logging
import secrets
import time
from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import anyio
import anyio.lowlevel
import attrs

from ._redirects import safe_callback_url
from ._signing import BadSignatureError, ExpiredError, Signer
from .errors import (
    AccessDeniedError,
    AuthorizationError,
    InvalidCallbackError,
    KeyloomError,
    PluginError,
    ProviderError,
    ProviderTimeoutError,
    ReauthenticationRequiredError,
    ScopeDeniedError,
    StateError,
    UnknownProviderError,
)
from .http import HttpClient, RetryPolicy, form_encode
from .models import (
    AuthorizationRequest,
    LoginResult,
    LoginStart,
    Profile,
    Provider,
    TokenSet,
    parse_scopes,
)
from .oidc import _flow as oidc
from .pkce import new_code_verifier, s256_challenge

if TYPE_CHECKING:
    import aiohttp

    from ._plugins import PluginRegistry

__all__ = ["Keyloom", "MemoryStateGuard", "StateGuard"]

log = logging.getLogger("keyloom")
T = TypeVar("T")
_MAX_PARAM = 4096


class StateGuard(Protocol):
    """Remembers used login states so each is accepted once (shared between app processes)."""

    async def use_once(self, key: str, expires_at: float) -> bool:
        """Record *key* as used until *expires_at*; ``False`` if it was already used."""
        ...


class MemoryStateGuard:
    """In-process :class:`StateGuard`; memory is bounded by logins completed per state TTL."""

    def __init__(self) -> None:
        self._used: collections.OrderedDict[str, float] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._used)

    async def use_once(self, key: str, expires_at: float) -> bool:
        """Record *key*; ``False`` if it was seen before and has not expired."""
        now = time.time()
        while self._used:  # entries share one TTL, so the oldest expire first
            oldest, exp = next(iter(self._used.items()))
            if exp > now:
                break
            del self._used[oldest]
        if key in self._used:
            return False
        self._used[key] = expires_at
        return True


@attrs.define
class _Runtime:
    http: HttpClient | None = None
    users: int = 0


@attrs.frozen
class Keyloom:
    """A configured Keyloom instance; build it with :func:`keyloom_core.define_keyloom`.

    Configuration is immutable. ``async with keyloom:`` opens the one shared HTTP session
    (or borrows the app's); several instances may live in one process.

    Attributes:
        providers: The configured providers by id.
        base_url: The app's public URL.
        base_path: Where the auth routes live (``/api/auth``).
        state_ttl: Seconds a started login stays valid.
        session_ttl: Seconds a session stays valid.
        timeout: Seconds for one provider call (the plugin's answer and any fallback to
            the built-in one together), retries included.
        registry: The plugin registry.
    """

    providers: Mapping[str, Provider]
    secrets: tuple[str, ...] = attrs.field(repr=False)
    base_url: str
    base_path: str
    state_ttl: float
    session_ttl: float
    timeout: float
    registry: PluginRegistry = attrs.field(repr=False)
    retry: RetryPolicy | None = attrs.field(default=None, repr=False)
    session: aiohttp.ClientSession | None = attrs.field(default=None, repr=False)
    state_guard: StateGuard | None = attrs.field(default=None, repr=False)
    _runtime: _Runtime = attrs.field(factory=_Runtime, init=False, repr=False, eq=False)
    _state_signer: Signer = attrs.field(init=False, repr=False, eq=False)
    _guard: StateGuard = attrs.field(init=False, repr=False, eq=False)

    @_state_signer.default
    def _make_state_signer(self) -> Signer:
        return Signer(self.secrets, "state")

    @_guard.default
    def _make_guard(self) -> StateGuard:
        return self.state_guard if self.state_guard is not None else MemoryStateGuard()

    def signer(self, purpose: str) -> Signer:
        """A signer for *purpose* keyed on this instance's secrets (used by web integrations)."""
        return Signer(self.secrets, purpose)

    # -- lifecycle -----------------------------------------------------------------

    async def __aenter__(self) -> Keyloom:
        rt = self._runtime
        if rt.http is None:
            rt.http = HttpClient(self.session, timeout=self.timeout, retry=self.retry)
            await rt.http.open()
        rt.users += 1
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        rt = self._runtime
        rt.users -= 1
        if rt.users <= 0 and rt.http is not None:
            http, rt.http = rt.http, None
            await http.close()

    @property
    def http(self) -> HttpClient:
        """The shared HTTP client (open inside ``async with keyloom:``)."""
        if self._runtime.http is None:
            msg = "Keyloom is not open: use 'async with keyloom:'"
            raise RuntimeError(msg)
        return self._runtime.http

    # -- lookups -------------------------------------------------------------------

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

    # -- the flow ------------------------------------------------------------------

    async def begin_login(
        self,
        provider: str,
        *,
        callback_url: str | None = None,
        redirect_uri: str | None = None,
        now: float | None = None,
        params: Mapping[str, str] | None = None,
    ) -> LoginStart:
        """Start a login: returns the authorization URL and the signed state to keep.

        :param callback_url: where to send the user afterwards; a same-origin path.
        :param redirect_uri: override the redirect URI (e.g. a loopback one for the CLI).
        :param params: per-login parameters (``prompt``, ``login_hint``, ``max_age``…),
            among those the provider's ``spec.login_params`` allows.
        :raises InvalidRedirectError: *callback_url* leaves the app's origin.
        :raises LoginParameterError: a parameter the provider does not allow, or invalid.
        """
        prov = self.provider(provider)
        callback = safe_callback_url(callback_url, self.base_url)
        extra = oidc.check_login_params(prov, params)
        verifier = new_code_verifier()
        nonce = secrets.token_urlsafe(24)
        scopes = tuple(sorted(prov.scopes))
        redirect = redirect_uri or self.redirect_uri(prov)
        request = AuthorizationRequest(
            redirect_uri=redirect,
            state=nonce,
            scopes=scopes,
            code_challenge=s256_challenge(verifier, prov.spec.pkce_encoding),
            nonce=oidc.nonce_for(verifier) if oidc.is_openid(prov) else None,
            extra=extra,
        )
        query = await self._provider_call("authorize_params", prov, request=request)
        base = prov.spec.authorize_url
        if prov.spec.issuer is not None:  # OpenID: the endpoint may come from discovery
            base = (await oidc.endpoints(prov, self.http)).authorize_url
        url = f"{base}{'&' if '?' in base else '?'}{form_encode(query)}"
        now = time.time() if now is None else now
        payload = {"p": prov.id, "n": nonce, "v": verifier, "c": callback, "r": redirect}
        if "max_age" in extra and oidc.is_openid(prov):  # auth_time is checked at the callback
            payload["m"] = extra["max_age"]
        state = self._state_signer.sign(payload, ttl=self.state_ttl, now=now)
        return LoginStart(url=url, state=state, expires_at=now + self.state_ttl)

    async def complete_login(
        self,
        provider: str,
        query: Mapping[str, str],
        state: str | None,
        *,
        now: float | None = None,
    ) -> LoginResult:
        """Finish a login from the provider's callback query and the stored state.

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
            operation = _Operation(anyio.CancelScope())
            with operation.cancel_scope:
                return await self._complete(prov, query, state, now, context, operation)
            raise self._timed_out(operation.hook, prov.id)  # the scope caught its deadline
        except KeyloomError as error:
            await self._notify_failure(provider, error, context)
            raise

    async def _complete(
        self,
        prov: Provider,
        query: Mapping[str, str],
        state: str | None,
        now: float | None,
        context: dict[str, str],
        operation: _Operation,
    ) -> LoginResult:
        for key, value in query.items():
            if not isinstance(value, str) or len(value) > _MAX_PARAM:
                msg = f"callback parameter '{str(key)[:40]}' is invalid or too long"
                raise InvalidCallbackError(msg, provider_id=prov.id)
        payload = self._verify_state(prov, query.get("state"), state, now)
        if not await self._guard.use_once(payload["n"], float(payload["exp"])):
            context["reason"] = "replayed"
            msg = "this sign-in link was already used"
            raise StateError(msg, reason="replayed", provider_id=prov.id)
        if prov.spec.issuer is not None:  # RFC 9207 mix-up defence
            await oidc.check_callback_issuer(prov, query, self.http)
        if "error" in query:
            raise _callback_error(prov, query)
        code = query.get("code")
        if not code:
            msg = "the callback has no authorization code"
            raise InvalidCallbackError(msg, provider_id=prov.id)
        requested = prov.scopes
        reported = query.get("scopes", query.get("scope"))
        from_callback = parse_scopes(reported) if reported is not None else None
        if from_callback is not None:  # refuse early, before any token is issued
            self._check_scopes(prov, requested, from_callback)
        context["stage"] = "token"
        tokens = await self._provider_call(
            "exchange_code",
            prov,
            operation,
            code=code,
            redirect_uri=payload["r"],
            code_verifier=payload["v"],
            http=self.http,
        )
        if "m" in payload:
            oidc.check_max_age(prov, tokens, int(payload["m"]))
        granted = await self._granted(prov, requested, from_callback, tokens)
        context["stage"] = "profile"
        profile = await self._fetch_profile(prov, tokens, operation)
        result = LoginResult(
            provider_id=prov.id,
            profile=profile,
            tokens=tokens,
            granted_scopes=granted,
            requested_scopes=requested,
            callback_url=payload["c"],
        )
        context["stage"] = "login_succeeded"
        await self._broadcast(
            "login_succeeded", operation=operation, provider=prov, result=result
        )
        return result

    async def _granted(
        self,
        prov: Provider,
        requested: frozenset[str],
        from_callback: frozenset[str] | None,
        tokens: TokenSet,
    ) -> frozenset[str]:
        """The granted scopes, checked; tokens of a refused login are revoked."""
        if tokens.scopes is not None:  # the token answer is authoritative
            granted = tokens.scopes
        elif from_callback is not None:
            granted = from_callback
        else:  # the provider reports no grant: it granted what was asked
            granted = requested
        if granted != from_callback:  # not checked yet
            try:
                self._check_scopes(prov, requested, granted)
            except ScopeDeniedError:
                with anyio.CancelScope(shield=True), anyio.move_on_after(self.timeout):
                    await self._safe_revoke(prov, tokens)
                raise
        return granted

    def _verify_state(
        self, prov: Provider, echoed: str | None, stored: str | None, now: float | None
    ) -> dict[str, Any]:
        if not stored:
            msg = "no sign-in is in progress in this browser"
            raise StateError(msg, reason="missing", provider_id=prov.id)
        try:
            payload = self._state_signer.unsign(stored, now=now)
        except ExpiredError:
            msg = "the sign-in took too long and expired"
            raise StateError(msg, reason="expired", provider_id=prov.id) from None
        except BadSignatureError as exc:
            msg = "the sign-in state is not valid"
            raise StateError(msg, reason=str(exc), provider_id=prov.id) from None
        if payload.get("p") != prov.id:
            msg = "the sign-in was started with another provider"
            raise StateError(msg, reason="provider", provider_id=prov.id)
        nonce = payload.get("n")
        if not echoed or not isinstance(nonce, str):
            msg = "the callback has no state"
            raise StateError(msg, reason="missing", provider_id=prov.id)
        if not hmac.compare_digest(echoed.encode(errors="replace"), nonce.encode()):
            msg = "the callback's state does not match this browser's sign-in"
            raise StateError(msg, reason="mismatch", provider_id=prov.id)
        return payload

    def _check_scopes(
        self, prov: Provider, requested: frozenset[str], granted: frozenset[str]
    ) -> None:
        results = self.registry.pm.hook.check_granted_scopes(
            provider=prov, requested=requested, granted=granted
        )
        missing = frozenset().union(*(frozenset(r) for r in results if r))
        if missing:
            raise ScopeDeniedError(missing, provider_id=prov.id)

    async def _safe_revoke(self, prov: Provider, tokens: TokenSet) -> None:
        try:
            await self.revoke(prov.id, tokens)
        except KeyloomError as exc:
            log.warning("could not revoke tokens after a scope denial: %s", exc.code)

    # -- tokens and profiles -------------------------------------------------------

    async def fetch_profile(self, provider: str, tokens: TokenSet) -> Profile:
        """Fetch the user's normalised profile, with ``profile_overrides`` applied."""
        return await self._fetch_profile(self.provider(provider), tokens)

    async def _fetch_profile(
        self, prov: Provider, tokens: TokenSet, operation: _Operation | None = None
    ) -> Profile:
        profile: Profile = await self._provider_call(
            "fetch_profile", prov, operation, tokens=tokens, http=self.http
        )
        if prov.profile_overrides is not None:
            try:
                overrides = prov.profile_overrides(profile)
                profile = profile.with_overrides(overrides)
            except KeyloomError:
                raise
            except Exception as exc:
                msg = f"profile_overrides raised {type(exc).__name__}"
                raise PluginError(msg, plugin="profile_overrides", provider_id=prov.id) from exc
        return profile

    async def refresh(self, provider: str, tokens: TokenSet) -> TokenSet:
        """Refresh *tokens*; the answer carries the rotated refresh token.

        :raises ReauthenticationRequiredError: the refresh token is dead; sign in again.
        """
        prov = self.provider(provider)
        if not tokens.refresh_token:
            msg = "no refresh token: the user must sign in again"
            raise ReauthenticationRequiredError(msg, provider_id=prov.id)
        result: TokenSet = await self._provider_call(
            "refresh_token", prov, tokens=tokens, http=self.http
        )
        return result

    async def revoke(self, provider: str, tokens: TokenSet) -> bool:
        """Revoke *tokens* at the provider; ``False`` if the provider cannot revoke."""
        prov = self.provider(provider)
        result: bool = await self._provider_call(
            "revoke_token", prov, tokens=tokens, http=self.http
        )
        return result

    # -- dispatch ------------------------------------------------------------------

    async def _provider_call(
        self,
        hook: str,
        provider: Provider,
        operation: _Operation | None = None,
        **kwargs: Any,
    ) -> Any:
        """Await the owning plugin's implementation, then the built-in one, until not None.

        An implementation is only called if the one before it answered ``None``.
        """
        kwargs["provider"] = provider
        expected = _RETURN_TYPES[hook]
        deadline = anyio.current_time() + self.timeout  # one budget, fallback included
        for plugin, function, argnames in self.registry.provider_impls(hook, provider.id):
            awaitable = function(*[kwargs[name] for name in argnames])  # as pluggy calls
            value = await self._run(plugin, provider.id, hook, awaitable, operation, deadline)
            if value is None:
                continue
            if not isinstance(value, expected):
                msg = (
                    f"plugin '{plugin}' returned {type(value).__name__} from hook "
                    f"'{hook}', expected {expected.__name__}"
                )
                raise PluginError(msg, plugin=plugin, provider_id=provider.id)
            return value
        msg = f"no plugin answered '{hook}'"
        raise PluginError(msg, provider_id=provider.id)

    async def _run(
        self,
        plugin: str,
        provider_id: str,
        hook: str,
        awaitable: Awaitable[T],
        operation: _Operation | None = None,
        deadline: float | None = None,
    ) -> T:
        """Await one hook implementation by *deadline* (default: now + timeout).

        Within an *operation*, its cancel scope takes the deadline and the operation turns
        a caught deadline into :class:`ProviderTimeoutError`; otherwise the call gets a
        cancel scope of its own. A cancel scope, not ``asyncio.timeout``: its cancellation
        is re-delivered at every await, so a library that turns one cancellation into its
        own error cannot swallow the deadline (aiohttp does exactly that on its own
        timeouts).
        """
        if deadline is None:
            deadline = anyio.current_time() + self.timeout
        task, cancelling = _cancel_requests()
        try:
            if operation is not None:
                operation.hook = hook
                operation.cancel_scope.deadline = deadline
                return await _within(operation.cancel_scope, awaitable)
            with anyio.CancelScope(deadline=deadline) as scope:
                return await _within(scope, awaitable)
        except KeyloomError:
            raise
        except TimeoutError as exc:  # the library's own timeout, not the deadline
            if task is not None and task.cancelling() > cancelling:
                raise asyncio.CancelledError from exc  # a cancellation from outside, turned
            raise self._timed_out(hook, provider_id) from exc
        except Exception as exc:
            msg = f"plugin '{plugin}' failed in hook '{hook}': {type(exc).__name__}"
            log.exception("plugin %s failed in %s", plugin, hook)
            raise PluginError(msg, plugin=plugin, provider_id=provider_id) from exc
        raise self._timed_out(hook, provider_id)  # the scope caught its deadline

    def _timed_out(self, hook: str, provider_id: str) -> ProviderTimeoutError:
        msg = f"the provider did not answer within {self.timeout:g}s ({hook})"
        return ProviderTimeoutError(msg, provider_id=provider_id)

    async def _broadcast(
        self,
        hook: str,
        *,
        tolerant: bool = False,
        operation: _Operation | None = None,
        **kwargs: Any,
    ) -> None:
        """Await every plugin's implementation in order; *tolerant* logs failures and goes on.

        Within an *operation*, a timed-out implementation ends the operation, so a tolerant
        broadcast runs outside any.
        """
        caller = getattr(self.registry.pm.hook, hook)
        impls = caller.get_hookimpls()
        if not impls:  # the common case for events: nobody listens
            return
        names = [impl.plugin_name for impl in reversed(impls)]
        pending: list[Awaitable[None]] = caller(**kwargs)
        provider = kwargs.get("provider")
        provider_id = provider.id if isinstance(provider, Provider) else kwargs.get("provider_id")
        try:
            for index, awaitable in enumerate(pending):
                try:
                    await self._run(names[index], provider_id or "", hook, awaitable, operation)
                except KeyloomError as exc:
                    if not tolerant:
                        raise
                    log.warning("plugin %s failed in %s: %s", names[index], hook, exc.code)
        finally:
            for awaitable in pending:
                close = getattr(awaitable, "close", None)
                if close is not None:
                    close()

    async def _notify_failure(
        self, provider_id: str, error: KeyloomError, context: dict[str, str]
    ) -> None:
        context.setdefault("reason", getattr(error, "reason", error.code))
        log.info("login failed: provider=%r code=%s %s", provider_id, error.code, context)
        with anyio.CancelScope(shield=True), anyio.move_on_after(self.timeout):
            await self._broadcast(
                "login_failed",
                tolerant=True,
                provider_id=provider_id,
                error=error,
                context=dict(context),
            )


@attrs.define
class _Operation:
    """The cancel scope of one public operation, and the provider call it is in."""

    cancel_scope: anyio.CancelScope
    hook: str = "callback"


async def _within(deadline: anyio.CancelScope, awaitable: Awaitable[T]) -> T:
    """Await *awaitable*; if *deadline* struck meanwhile, let its scope have it.

    A hook that swallowed the cancellation, or a library that turned it into its own
    ``TimeoutError``, must not pass for a hook that answered in time: at the checkpoint
    the scope's cancellation (re-delivered at every await) ends the call, and the scope
    catches it unless a cancellation from outside is also under way.
    """
    try:
        value = await awaitable
    except TimeoutError:
        # this deadline or a cancellation from outside, turned into a timeout: either is
        # re-delivered here
        await anyio.lowlevel.checkpoint_if_cancelled()
        raise
    if deadline.cancel_called:
        await anyio.lowlevel.checkpoint()
    return value


def _cancel_requests() -> tuple[asyncio.Task[Any] | None, int]:
    """The current asyncio task and its pending cancellation requests (``cancelling()``)."""
    try:
        task = asyncio.current_task()
    except RuntimeError:  # not on asyncio
        return None, 0
    return task, task.cancelling() if task is not None else 0


_RETURN_TYPES: dict[str, type] = {
    "authorize_params": Mapping,
    "exchange_code": TokenSet,
    "refresh_token": TokenSet,
    "revoke_token": bool,
    "fetch_profile": Profile,
}


def _callback_error(prov: Provider, query: Mapping[str, str]) -> AuthorizationError | ProviderError:
    error = query.get("error", "")[:64]
    description = query.get("error_description") or None
    description = description[:300] if description else None
    if error == "access_denied":
        return AccessDeniedError(
            "you cancelled the sign-in",
            error=error,
            description=description,
            provider_id=prov.id,
        )
    return ProviderError(
        f"{prov.spec.name} could not sign you in",
        provider_id=prov.id,
        error=error or "unknown_error",
        description=description,
    )

"""Hook dispatch: provider calls (owner, then the built-in fallback) and broadcasts, in time.

Every awaited hook runs under a deadline. A provider call has one budget for the owner's
answer and any fallback together; within an :class:`Operation` (one public call such as
``complete_login``) the operation's single cancel scope carries the deadline, moved for
each provider call. A cancel scope, not ``asyncio.timeout``: its cancellation is
re-delivered at every await, so a library that turns one cancellation into its own error
cannot swallow the deadline (aiohttp does exactly that on its own timeouts).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Mapping
from typing import Any, TypeVar

import anyio
import anyio.lowlevel
import attrs

from ._plugins import PluginRegistry
from .errors import KeyloomError, PluginError, ProviderTimeoutError
from .models import Profile, Provider, TokenSet

__all__ = ["HookDispatcher", "Operation"]

log = logging.getLogger("keyloom")
T = TypeVar("T")

_RETURN_TYPES: dict[str, type] = {
    "authorize_params": Mapping,
    "exchange_code": TokenSet,
    "refresh_token": TokenSet,
    "revoke_token": bool,
    "fetch_profile": Profile,
}


@attrs.define
class Operation:
    """The cancel scope of one public operation, and the provider call it is in (mutable).

    Attributes:
        cancel_scope: Carries the deadline of the current provider call.
        hook: The hook being awaited, for the timeout's message.
    """

    cancel_scope: anyio.CancelScope = attrs.field(factory=anyio.CancelScope)
    hook: str = "callback"


class HookDispatcher:
    """Awaits plugin hooks for one Keyloom instance, each within *timeout* seconds.

    :param registry: the plugins.
    :param timeout: seconds for one provider call (owner and fallback together) or one
        broadcast implementation.
    """

    def __init__(self, registry: PluginRegistry, timeout: float) -> None:
        self.registry = registry
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"HookDispatcher(timeout={self.timeout:g})"

    def timed_out(self, hook: str, provider_id: str) -> ProviderTimeoutError:
        """The error of a provider call that ran out of time."""
        msg = f"the provider did not answer within {self.timeout:g}s ({hook})"
        return ProviderTimeoutError(msg, provider_id=provider_id)

    async def provider_call(
        self, hook: str, provider: Provider, operation: Operation | None = None, **kwargs: Any
    ) -> Any:
        """Await the owning plugin's implementation, then the built-in one, until not None.

        An implementation is only called if the one before it answered ``None``.

        :raises PluginError: an implementation failed or answered the wrong type.
        :raises ProviderTimeoutError: no answer within the timeout.
        """
        kwargs["provider"] = provider
        expected = _RETURN_TYPES[hook]
        deadline = anyio.current_time() + self.timeout  # one budget, fallback included
        for plugin, function, argnames in self.registry.provider_impls(hook, provider.id):
            awaitable = function(*[kwargs[name] for name in argnames])  # as pluggy calls
            value = await self.run(plugin, provider.id, hook, awaitable, operation, deadline)
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

    async def run(
        self,
        plugin: str,
        provider_id: str,
        hook: str,
        awaitable: Awaitable[T],
        operation: Operation | None = None,
        deadline: float | None = None,
    ) -> T:
        """Await one hook implementation by *deadline* (default: now + timeout).

        Within an *operation*, its cancel scope takes the deadline and the operation turns
        a caught deadline into :class:`ProviderTimeoutError`; otherwise the call gets a
        cancel scope of its own.
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
            raise self.timed_out(hook, provider_id) from exc
        except Exception as exc:
            msg = f"plugin '{plugin}' failed in hook '{hook}': {type(exc).__name__}"
            log.exception("plugin %s failed in %s", plugin, hook)
            raise PluginError(msg, plugin=plugin, provider_id=provider_id) from exc
        raise self.timed_out(hook, provider_id)  # the scope caught its deadline

    async def broadcast(
        self,
        hook: str,
        *,
        tolerant: bool = False,
        operation: Operation | None = None,
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
                    await self.run(names[index], provider_id or "", hook, awaitable, operation)
                except KeyloomError as exc:
                    if not tolerant:
                        raise
                    log.warning("plugin %s failed in %s: %s", names[index], hook, exc.code)
        finally:
            for awaitable in pending:
                close = getattr(awaitable, "close", None)
                if close is not None:
                    close()

    async def login_failed(
        self, provider_id: str, error: KeyloomError, context: Mapping[str, str]
    ) -> None:
        """Tell every ``login_failed`` hook, shielded from cancellation; failures are logged."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(self.timeout):
            await self.broadcast(
                "login_failed",
                tolerant=True,
                provider_id=provider_id,
                error=error,
                context=dict(context),
            )

    def missing_scopes(
        self, provider: Provider, requested: frozenset[str], granted: frozenset[str]
    ) -> frozenset[str]:
        """The union of the scopes every ``check_granted_scopes`` policy finds missing."""
        results = self.registry.pm.hook.check_granted_scopes(
            provider=provider, requested=requested, granted=granted
        )
        return frozenset().union(*(frozenset(r) for r in results if r))


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

"""Hook dispatch: provider calls (owner, then the built-in fallback) and broadcasts, in time.

Every awaited hook runs within an :class:`Operation`: one cancel scope for a public call
(``complete_login``, ``refresh``…) and one entry with the event loop's watchdog
(:mod:`keyloom_core._deadline`). Each provider call gets the whole timeout, its owner's
answer and any fallback together: starting a call only stores its deadline, and the
watchdog, woken for the first one, watches on while the deadline has moved on, so an
operation costs one entry however many calls it makes. When a call's deadline passes,
the watchdog cancels the scope. A cancel scope, not
``asyncio.timeout``: its cancellation is re-delivered at every await, so a library that
turns one cancellation into its own error cannot swallow the deadline (aiohttp does
exactly that on its own timeouts).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Mapping
from inspect import isawaitable
from types import TracebackType
from typing import Any, TypeVar

import anyio
import anyio.lowlevel

from ._deadline import Watchdog, enter, leave, watchdog
from ._plugins import PluginRegistry, ProviderImpl
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


def _checked(value: Any, hook: str, plugin: str, provider_id: str) -> Any:
    """*value*, an answer of *hook* that is not ``None``, if it has the hook's type."""
    expected = _RETURN_TYPES[hook]
    if not isinstance(value, expected):
        msg = (
            f"plugin '{plugin}' returned {type(value).__name__} from hook "
            f"'{hook}', expected {expected.__name__}"
        )
        raise PluginError(msg, plugin=plugin, provider_id=provider_id)
    return value


class Operation:
    """One public operation's cancel scope and watchdog; use it as a context manager.

    Attributes:
        cancel_scope: Cancelled by the watchdog when the current call's deadline passes.
        hook: The hook being awaited, for the timeout's message.
        struck: Whether a deadline passed (the scope was cancelled for it).
        deadline: The current call's deadline on the event loop's clock.
        task: The task the operation runs in (set on entering).
        cancelling: The task's pending cancellation requests on entering.
    """

    task: asyncio.Task[Any] | None
    cancelling: int

    def __init__(self) -> None:
        self.cancel_scope = anyio.CancelScope()
        self.hook = "callback"
        self.struck = False
        self._loop = asyncio.get_running_loop()
        self.deadline = math.inf
        self._timeout = math.inf
        self._watchdog: Watchdog | None = None  # while it watches this operation

    def __repr__(self) -> str:
        return f"<Operation {self.hook} struck={self.struck}>"

    def __enter__(self) -> Operation:
        self.cancel_scope.__enter__()
        self._token = enter(self)
        # what the calls compare against to tell a cancellation from outside (once here,
        # not on every call)
        self.task = task = asyncio.current_task()
        self.cancelling = task.cancelling() if task is not None else 0
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        if self._watchdog is not None:
            self._watchdog.forget(self, self._timeout)
            self._watchdog = None
        leave(self._token)
        return bool(self.cancel_scope.__exit__(exc_type, exc, traceback))

    def start(self, hook: str, timeout: float) -> None:
        """A provider call of *hook* starts: it has *timeout* seconds from now."""
        self.hook = hook
        self.deadline = self._loop.time() + timeout
        if self.struck:
            return
        if self._watchdog is None:
            self._watchdog = watchdog(self._loop)
        elif timeout != self._timeout:
            self._watchdog.forget(self, self._timeout)
        self._timeout = timeout
        self._watchdog.watch(self._loop, self, timeout)

    def expire(self) -> None:
        """The watchdog's call: the current call's deadline has passed."""
        self._watchdog = None
        self.struck = True
        self.cancel_scope.cancel()


class HookDispatcher:
    """Awaits plugin hooks for one Keyloom instance, each within *timeout* seconds.

    :param registry: the plugins.
    :param timeout: seconds for one provider call (owner and fallback together) or one
        broadcast implementation.
    """

    def __init__(self, registry: PluginRegistry, timeout: float) -> None:
        self.registry = registry
        self.timeout = timeout
        self._policies: tuple[tuple[Any, tuple[str, ...]], ...] = ()
        self._policy_impls: list[Any] | None = None

    def __repr__(self) -> str:
        return f"HookDispatcher(timeout={self.timeout:g})"

    def timed_out(self, hook: str, provider_id: str) -> ProviderTimeoutError:
        """The error of a provider call that ran out of time."""
        msg = f"the provider did not answer within {self.timeout:g}s ({hook})"
        return ProviderTimeoutError(msg, provider_id=provider_id)

    def provider_call(
        self, hook: str, provider: Provider, operation: Operation | None = None, **kwargs: Any
    ) -> Awaitable[Any]:
        """The answer of the owning plugin's implementation, then the built-in one's, to await.

        An implementation is only called if the one before it answered ``None``; together
        they have the timeout. Outside an *operation*, the call is an operation of its own,
        started when an implementation first returns an awaitable: a plain function (an
        ``authorize_params`` may be one) answers at once, and cannot wait for anything a
        deadline could end.

        It is not a coroutine itself but returns the one to await: a coroutine less alive
        for the whole call, which under load means fewer garbage collections
        (``bench_login.py`` prints them).

        :raises PluginError: an implementation failed or answered the wrong type.
        :raises ProviderTimeoutError: no answer within the timeout.
        """
        kwargs["provider"] = provider
        impls = self.registry.provider_impls(hook, provider.id)
        if operation is None:
            return self._own_operation(hook, provider, impls, kwargs)
        operation.start(hook, self.timeout)  # one budget, fallback included
        return self._answer(hook, provider, operation, impls, kwargs)

    async def _own_operation(
        self,
        hook: str,
        provider: Provider,
        impls: tuple[ProviderImpl, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """:meth:`provider_call` outside an operation: one starts at the first awaitable."""
        for index, (plugin, function, argnames) in enumerate(impls):
            try:
                value = function(*[kwargs[name] for name in argnames])  # as pluggy calls
            except KeyloomError:
                raise
            except Exception as exc:
                raise self._plugin_failed(exc, plugin, provider.id, hook) from exc
            if isawaitable(value):  # the rest runs in an operation, with the whole timeout
                with Operation() as own:
                    own.start(hook, self.timeout)
                    rest = self._answer(hook, provider, own, impls, kwargs, index, value)
                    return await rest
                raise self.timed_out(hook, provider.id)  # the scope caught its deadline
            if value is not None:
                return _checked(value, hook, plugin, provider.id)
        msg = f"no plugin answered '{hook}'"
        raise PluginError(msg, provider_id=provider.id)

    async def _answer(
        self,
        hook: str,
        provider: Provider,
        operation: Operation,
        impls: tuple[ProviderImpl, ...],
        kwargs: dict[str, Any],
        index: int = 0,
        value: Any = None,
    ) -> Any:
        """:meth:`provider_call`'s implementations from *index*, in time.

        *value* is what the implementation at *index* has already returned, if it was called.
        """
        provider_id = provider.id
        while index < len(impls):
            plugin, function, argnames = impls[index]
            index += 1
            # run()'s work, without its coroutine on the way of every answer
            try:
                if value is None:
                    value = function(*[kwargs[name] for name in argnames])  # as pluggy calls
                if isawaitable(value):
                    value = await value
            except KeyloomError:
                raise
            except Exception as exc:
                raise await self._failure(exc, plugin, provider_id, hook, operation) from exc
            if operation.struck:  # it answered after its deadline: see run()
                await anyio.lowlevel.checkpoint()
            if value is not None:
                return _checked(value, hook, plugin, provider_id)
        msg = f"no plugin answered '{hook}'"
        raise PluginError(msg, provider_id=provider_id)

    async def run(
        self,
        plugin: str,
        provider_id: str,
        hook: str,
        awaitable: Awaitable[T],
        operation: Operation,
    ) -> T:
        """Await one hook implementation within *operation* (whose call has started).

        A deadline that passed while the hook ran ends the call as a timeout, even when the
        hook swallowed the cancellation and answered anyway, or a library turned it into its
        own ``TimeoutError``; a cancellation from outside stays a cancellation.
        """
        try:
            value = await awaitable
        except KeyloomError:
            raise
        except Exception as exc:
            raise await self._failure(exc, plugin, provider_id, hook, operation) from exc
        if operation.struck:  # it answered after its deadline: the answer is not used, and
            await anyio.lowlevel.checkpoint()  # the scopes decide, as below
        return value

    @staticmethod
    def _plugin_failed(exc: Exception, plugin: str, provider_id: str, hook: str) -> PluginError:
        """What a hook's exception (not a ``KeyloomError``) is raised as; call it in ``except``."""
        msg = f"plugin '{plugin}' failed in hook '{hook}': {type(exc).__name__}"
        log.error("plugin %s failed in %s", plugin, hook, exc_info=exc)
        return PluginError(msg, plugin=plugin, provider_id=provider_id)

    async def _failure(
        self, exc: Exception, plugin: str, provider_id: str, hook: str, operation: Operation
    ) -> BaseException:
        """What a hook's exception (not a ``KeyloomError``) is raised as; call it in ``except``."""
        if isinstance(exc, TimeoutError):  # the deadline, the library's own, or an outside cancel
            # a struck deadline or a caller's cancelled scope is re-delivered here, and the
            # scopes decide: ours catches it unless the caller's was cancelled too
            await anyio.lowlevel.checkpoint_if_cancelled()
            task = operation.task
            if task is not None and task.cancelling() > operation.cancelling:
                return asyncio.CancelledError()  # a cancellation from outside, turned
            return self.timed_out(hook, provider_id)
        return self._plugin_failed(exc, plugin, provider_id, hook)

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
                    await self._run_one(names[index], provider_id or "", hook, awaitable, operation)
                except KeyloomError as exc:
                    if not tolerant:
                        raise
                    log.warning("plugin %s failed in %s: %s", names[index], hook, exc.code)
        finally:
            for awaitable in pending:
                close = getattr(awaitable, "close", None)
                if close is not None:
                    close()

    async def _run_one(
        self,
        plugin: str,
        provider_id: str,
        hook: str,
        awaitable: Awaitable[None],
        operation: Operation | None,
    ) -> None:
        """One broadcast implementation, with the whole timeout."""
        if operation is None:
            with Operation() as own:
                await self._run_one(plugin, provider_id, hook, awaitable, own)
                return
            raise self.timed_out(hook, provider_id)  # the scope caught its deadline
        operation.start(hook, self.timeout)
        await self.run(plugin, provider_id, hook, awaitable, operation)

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
        hook = self.registry.pm.hook.check_granted_scopes
        impls = hook.get_hookimpls()  # a copy: a plugin registered since is seen
        if impls != self._policy_impls:
            self._policy_impls, self._policies = impls, self._direct(impls)
        policies = self._policies
        if not policies:  # a wrapper among them: pluggy runs them
            results = hook(provider=provider, requested=requested, granted=granted)
            return frozenset().union(*(frozenset(r) for r in results if r))
        kwargs = {"provider": provider, "requested": requested, "granted": granted}
        missing: set[str] = set()
        for function, argnames in policies:
            found = function(*[kwargs[name] for name in argnames])  # as pluggy calls
            if found:
                missing.update(found)
        return frozenset(missing)

    @staticmethod
    def _direct(impls: list[Any]) -> tuple[tuple[Any, tuple[str, ...]], ...]:
        """A broadcast hook's implementations to call in a loop of our own; none if one wraps.

        pluggy's own loop (its result list, its wrapper bookkeeping) cost a login about as much
        as the core's scope check itself (``bench_core.py``). The list is made again whenever
        the hook's implementations change.
        """
        if any(impl.hookwrapper or impl.wrapper for impl in impls):
            return ()
        return tuple((impl.function, tuple(impl.argnames)) for impl in reversed(impls))

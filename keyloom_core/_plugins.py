"""Plugin discovery (entry-point group ``keyloom``), registration and provider ownership."""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import os
from collections.abc import Callable, Iterable
from typing import Any

import attrs
import pluggy

from . import hookspecs
from ._provider_config import configure_provider
from .errors import ConfigurationError, PluginError, UnknownProviderError
from .models import Provider, ProviderSpec

ENTRY_POINT_GROUP = "keyloom"
DISABLE_AUTOLOAD_ENV = "KEYLOOM_DISABLE_PLUGIN_AUTOLOAD"
BUILTIN_PLUGINS = ("keyloom_core.oauth2", "keyloom_core._policy")
#: Called only on the plugin that owns the provider (then the built-in fallback).
PROVIDER_HOOKS = frozenset(
    {"authorize_params", "exchange_code", "refresh_token", "revoke_token", "fetch_profile"}
)
ASYNC_HOOKS = PROVIDER_HOOKS | {"login_succeeded", "login_failed"}

ProviderFactory = Callable[..., Provider]
#: One implementation of a provider hook: its plugin's name, its function, its argument names.
ProviderImpl = tuple[str, Callable[..., Any], tuple[str, ...]]


@attrs.frozen
class PluginInfo:
    """Where a loaded plugin came from.

    Attributes:
        name: Registration name (the entry point's name, or the module name).
        entry_point: ``name = module:attr`` as declared, or ``None`` for explicit plugins.
        distribution: ``"dist-name version"``, or ``None`` for explicit plugins.
        plugin: The plugin object itself.
    """

    name: str
    entry_point: str | None
    distribution: str | None
    plugin: object = attrs.field(repr=False, eq=False)

    def describe(self) -> str:
        """Human-readable origin, for error messages."""
        if self.entry_point:
            return f"entry point '{self.entry_point}' of distribution {self.distribution}"
        return f"plugin '{self.name}'"


@attrs.frozen
class RegisteredProvider:
    """A provider offered by a plugin.

    Attributes:
        spec: The provider description.
        factory: Builds a configured :class:`Provider`; with no arguments, from the environment.
        plugin: The plugin that owns the provider's hooks.
    """

    spec: ProviderSpec
    factory: ProviderFactory = attrs.field(eq=False, repr=False)
    plugin: PluginInfo


@attrs.frozen
class BrokenPlugin:
    """A plugin that could not be loaded (listed by ``keyloom providers``).

    Attributes:
        entry_point: The entry point, as declared.
        distribution: ``"dist-name version"``.
        error: What went wrong.
    """

    entry_point: str
    distribution: str
    error: PluginError


def autoload_disabled() -> bool:
    """Whether ``KEYLOOM_DISABLE_PLUGIN_AUTOLOAD`` turns entry-point loading off."""
    return os.environ.get(DISABLE_AUTOLOAD_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    seen: set[tuple[str, str]] = set()
    found = []
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if (ep.name, ep.value) not in seen:
            seen.add((ep.name, ep.value))
            found.append(ep)
    return found


def _dist_label(ep: importlib.metadata.EntryPoint) -> str:
    dist = ep.dist
    return f"{dist.name} {dist.version}" if dist is not None else "<unknown distribution>"


class PluginRegistry:
    """The plugin manager of one Keyloom instance and the providers its plugins offer."""

    def __init__(
        self,
        plugins: Iterable[object] = (),
        *,
        autoload: bool | None = None,
        strict: bool = True,
    ) -> None:
        """Load the built-in plugins, the entry points (unless disabled) and *plugins*.

        :param strict: raise :class:`PluginError` for a broken entry point; otherwise record
            it in :attr:`broken` and go on (for diagnostics).
        """
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self.providers: dict[str, RegisteredProvider] = {}
        self.broken: list[BrokenPlugin] = []
        self._impls: dict[tuple[str, str], tuple[ProviderImpl, ...]] = {}
        for module in BUILTIN_PLUGINS:
            self._register(importlib.import_module(module), PluginInfo(module, None, None, None))
        if autoload if autoload is not None else not autoload_disabled():
            self._load_entry_points(strict=strict)
        for plugin in plugins:
            self.add(plugin)

    def __repr__(self) -> str:
        return f"<PluginRegistry providers={sorted(self.providers)}>"

    def _load_entry_points(self, *, strict: bool) -> None:
        for ep in _entry_points():
            if self.pm.get_plugin(ep.name) is not None:
                continue
            declared = f"{ep.name} = {ep.value}"
            dist = _dist_label(ep)
            try:
                plugin = ep.load()
            except Exception as exc:
                error = PluginError(
                    f"plugin entry point '{declared}' of distribution {dist} failed to "
                    f"load: {type(exc).__name__}: {exc}",
                    plugin=ep.name,
                    distribution=dist,
                )
                if strict:
                    raise error from exc
                self.broken.append(BrokenPlugin(declared, dist, error))
                continue
            try:
                self._register(plugin, PluginInfo(ep.name, declared, dist, plugin))
            except PluginError as error:
                if strict:
                    raise
                self.broken.append(BrokenPlugin(declared, dist, error))

    def add(self, plugin: object, name: str | None = None) -> None:
        """Register a plugin explicitly (a module or an object with ``@hookimpl`` methods)."""
        if self.pm.is_registered(plugin):
            return
        name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
        if self.pm.has_plugin(name):
            name = f"{name}#{id(plugin):x}"
        self._register(plugin, PluginInfo(name, None, None, plugin))

    def _register(self, plugin: object, info: PluginInfo) -> None:
        try:
            self.pm.register(plugin, name=info.name)
            self.pm.check_pending()
        except (pluggy.PluginValidationError, ValueError) as exc:
            if self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
            msg = f"{info.describe()} is not a valid keyloom plugin: {exc}"
            raise PluginError(msg, plugin=info.name, distribution=info.distribution) from exc
        for impl_hook in self.pm.get_hookcallers(plugin) or []:
            for impl in impl_hook.get_hookimpls():
                problem = _impl_problem(impl_hook.name, impl) if impl.plugin is plugin else None
                if problem is not None:
                    self.pm.unregister(plugin)
                    msg = f"{info.describe()}: {problem}"
                    raise PluginError(msg, plugin=info.name, distribution=info.distribution)
        try:
            self._collect_providers(plugin, info)
        except PluginError:
            if self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
            for pid in [k for k, v in self.providers.items() if v.plugin.plugin is plugin]:
                del self.providers[pid]
            raise
        self.infos[info.name] = info
        self._impls.clear()

    def _collect_providers(self, plugin: object, info: PluginInfo) -> None:
        def register(spec: object, factory: ProviderFactory | None = None) -> None:
            if not isinstance(spec, ProviderSpec):
                msg = f"{info.describe()} registered {spec!r}, which is not a ProviderSpec"
                raise PluginError(msg, plugin=info.name, distribution=info.distribution)
            if spec.id in self.providers:
                other = self.providers[spec.id].plugin
                msg = (
                    f"provider id '{spec.id}' is claimed twice: by {other.describe()} "
                    f"and by {info.describe()}"
                )
                raise PluginError(
                    msg, plugin=info.name, distribution=info.distribution, provider_id=spec.id
                )
            self.providers[spec.id] = RegisteredProvider(
                spec, factory or _default_factory(spec), info
            )

        others = [p for p in self.pm.get_plugins() if p is not plugin]
        self.pm.subset_hook_caller("register_providers", others)(register=register)

    def resolve(self, provider: object) -> Provider:
        """Turn ``"tiktok"`` into a provider configured from the environment; check ownership.

        A :class:`Provider` whose plugin is not loaded has its ``spec.plugin`` module registered
        (so explicit configuration works with autoload off).
        """
        if isinstance(provider, str):
            registered = self.providers.get(provider)
            if registered is None:
                msg = f"no installed plugin offers a provider named '{provider}'"
                raise UnknownProviderError(msg, provider_id=provider)
            built: object = registered.factory()
            if not isinstance(built, Provider):
                msg = f"the factory of provider '{provider}' did not return a Provider"
                raise PluginError(msg, plugin=registered.plugin.name, provider_id=provider)
            return built
        if not isinstance(provider, Provider):
            msg = f"providers must be Provider objects or ids, not {type(provider).__name__}"
            raise ConfigurationError(msg)
        if provider.id not in self.providers and provider.spec.plugin:
            self.add(importlib.import_module(provider.spec.plugin), provider.spec.plugin)
        return provider

    def owner(self, provider_id: str) -> object | None:
        """The plugin object that owns *provider_id*'s hooks, or ``None`` (generic OAuth 2)."""
        registered = self.providers.get(provider_id)
        return registered.plugin.plugin if registered else None

    def provider_impls(self, hook: str, provider_id: str) -> tuple[ProviderImpl, ...]:
        """The implementations of a provider hook for *provider_id*, in call order (cached).

        Those of the plugin that owns the provider come first, then the built-in RFC 6749
        fallback's; no other plugin's are ever called for this provider.
        """
        key = (hook, provider_id)
        found = self._impls.get(key)
        if found is None:
            keep = (self.owner(provider_id), self.pm.get_plugin("keyloom_core.oauth2"))
            impls = getattr(self.pm.hook, hook).get_hookimpls()
            found = self._impls[key] = tuple(
                (impl.plugin_name, impl.function, tuple(impl.argnames))
                for impl in reversed(impls)
                if any(impl.plugin is plugin for plugin in keep)
            )
        return found

    def plugin_name(self, plugin: object) -> str:
        """The registration name of *plugin*, for error messages."""
        return self.pm.get_name(plugin) or repr(plugin)


def _impl_problem(hook: str, impl: pluggy.HookImpl) -> str | None:
    """Why *impl* cannot implement *hook*, or ``None``."""
    if hook in PROVIDER_HOOKS and (impl.hookwrapper or impl.wrapper):
        return f"provider hook '{hook}' cannot be a wrapper (it is called on its owner only)"
    if (hook in ASYNC_HOOKS) != inspect.iscoroutinefunction(impl.function):
        kind = "async def" if hook in ASYNC_HOOKS else "def"
        return f"hook '{hook}' must be a '{kind}'"
    return None


def _default_factory(spec: ProviderSpec) -> ProviderFactory:
    def factory(**options: Any) -> Provider:
        return configure_provider(spec, **options)

    return factory

"""Plugin discovery (entry-point group ``keyloom``), registration and provider ownership.

Entry points are loaded in a fixed order (by name, then distribution), and nothing that is
found depends on that order; the switches of :mod:`._plugin_switches` choose which load,
and :mod:`._hook_contract` checks each plugin's hooks before pluggy sees them.

A plugin that fails to import or to register is isolated: it is logged, listed in
:attr:`PluginRegistry.broken`, and only asking for its providers fails. A provider id that
two entry points claim goes to neither: it is listed in :attr:`PluginRegistry.conflicts`,
and asking for it raises a :class:`PluginError` naming both and the switches that pick one.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import logging
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any

import attrs
import pluggy

from . import hookspecs
from ._hook_contract import contract_problems, one_line
from ._plugin_switches import (
    DISABLE_AUTOLOAD_ENV,
    DISABLE_PLUGINS_ENV,
    LOAD_PLUGINS_ENV,
    PluginSwitches,
    autoload_disabled,
    normalise_name,
)
from ._provider_config import configure_provider
from .errors import ConfigurationError, KeyloomError, PluginError, UnknownProviderError
from .models import Provider, ProviderSpec

log = logging.getLogger("keyloom.plugins")

ENTRY_POINT_GROUP = "keyloom"
BUILTIN_PLUGINS = ("keyloom_core.oauth2", "keyloom_core._policy")

ProviderFactory = Callable[..., Provider]
#: One implementation of a provider hook: its plugin's name, its function, its argument names.
ProviderImpl = tuple[str, Callable[..., Any], tuple[str, ...]]


@attrs.frozen
class PluginInfo:
    """Where a loaded plugin came from.

    Attributes:
        name: The plugin's name: its entry point's name when an installed distribution
            declares it (however it was registered), else the registration name.
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
            return (
                f"plugin '{self.name}' (entry point '{self.entry_point}' of "
                f"{self.distribution})"
            )
        return f"plugin '{self.name}'"

    def error(self, message: str, provider_id: str | None = None) -> PluginError:
        """A :class:`PluginError` about this plugin, with its name, distribution and entry point."""
        return PluginError(
            message,
            plugin=self.name,
            distribution=self.distribution,
            entry_point=self.entry_point,
            provider_id=provider_id,
        )


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
    """A plugin that could not be loaded (listed by ``keyloom providers`` and ``doctor``).

    Attributes:
        entry_point: The entry point, as declared.
        distribution: ``"dist-name version"``.
        error: What went wrong (its ``__cause__`` is the original exception, if any).
        name: The entry point's name.
        provider_ids: The providers it declared before failing (empty if it never got that far).
    """

    entry_point: str
    distribution: str
    error: PluginError
    name: str = ""
    provider_ids: frozenset[str] = frozenset()

    @property
    def reason(self) -> str:
        """What went wrong, without the plugin's description (``failed to load: …``)."""
        origin = f"(entry point '{self.entry_point}' of {self.distribution})"
        return self.error.message.removeprefix(f"plugin '{self.name}' {origin}").strip()


@attrs.frozen
class DisabledPlugin:
    """An installed entry point that a switch kept from loading (it was not imported).

    Attributes:
        name: The entry point's name.
        entry_point: The entry point, as declared.
        distribution: ``"dist-name version"``.
        reason: Which switch, e.g. ``"KEYLOOM_DISABLE_PLUGINS=tiktok"``.
    """

    name: str
    entry_point: str
    distribution: str
    reason: str


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    """The ``keyloom`` entry points, each once, sorted by name, distribution and value."""
    seen: set[tuple[str, str]] = set()
    found = []
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if (ep.name, ep.value) not in seen:
            seen.add((ep.name, ep.value))
            found.append(ep)
    return sorted(found, key=lambda ep: (ep.name, _dist_name(ep) or "", ep.value))


def _dist_name(ep: importlib.metadata.EntryPoint) -> str | None:
    return ep.dist.name if ep.dist is not None else None


def _dist_label(ep: importlib.metadata.EntryPoint) -> str:
    dist = ep.dist
    return f"{dist.name} {dist.version}" if dist is not None else "<unknown distribution>"


def _answers_to(provider_id: str, name: str, distribution: str | None) -> bool:
    """Whether a plugin called *name* (from *distribution*) is, by its names, *provider_id*'s."""
    wanted = normalise_name(provider_id)
    dist = normalise_name(distribution.split(" ")[0]) if distribution else ""
    return wanted in {normalise_name(name), dist, dist.removeprefix("keyloom-")}


class PluginRegistry:
    """The plugin manager of one Keyloom instance and the providers its plugins offer.

    Attributes:
        pm: The pluggy plugin manager.
        infos: The registered plugins by name.
        providers: The providers that exactly one plugin offers, by id.
        broken: Entry points that failed to import or register, in load order.
        disabled: Entry points a switch kept from loading, in load order.
        conflicts: Provider ids that several entry points claim, with every claimant.
        autoload: Whether entry points were loaded.
        warnings: Problems with the switches themselves (a name no plugin answers to).
    """

    def __init__(
        self,
        plugins: Iterable[object] = (),
        *,
        autoload: bool | None = None,
        strict: bool = False,
    ) -> None:
        """Load the built-in plugins, the entry points (unless turned off) and *plugins*.

        :param autoload: load entry points; default: unless ``KEYLOOM_DISABLE_PLUGIN_AUTOLOAD``
            is set. The per-plugin switches apply either way.
        :param strict: raise :class:`PluginError` for a broken entry point or a conflict,
            instead of isolating it (for tests that must see every plugin work).
        """
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self.providers: dict[str, RegisteredProvider] = {}
        self.broken: list[BrokenPlugin] = []
        self.disabled: list[DisabledPlugin] = []
        self.conflicts: dict[str, tuple[RegisteredProvider, ...]] = {}
        self.warnings: list[str] = []
        self.autoload = autoload if autoload is not None else not autoload_disabled()
        self._autoload_off_by = "autoload=False" if autoload is False else DISABLE_AUTOLOAD_ENV
        self._impls: dict[tuple[str, str], tuple[ProviderImpl, ...]] = {}
        self._entry_point_cache: list[importlib.metadata.EntryPoint] | None = None
        for module in BUILTIN_PLUGINS:  # the core's own: their contract is tested once
            info = PluginInfo(module, None, None, None)
            self._register(importlib.import_module(module), info, checked=True)
        if self.autoload:
            self._load_entry_points(strict=strict)
        for plugin in plugins:
            self.add(plugin)

    def __repr__(self) -> str:
        return f"<PluginRegistry providers={sorted(self.providers)}>"

    # -- discovery ---------------------------------------------------------------------------

    def entry_points(self) -> list[importlib.metadata.EntryPoint]:
        """The installed ``keyloom`` entry points (read once per registry, never imported)."""
        if self._entry_point_cache is None:
            self._entry_point_cache = _entry_points()
        return self._entry_point_cache

    def _load_entry_points(self, *, strict: bool) -> None:
        switches = PluginSwitches.from_env()
        eps = self.entry_points()
        self.warnings = switches.unmatched(
            n for ep in eps for n in (ep.name, _dist_name(ep)) if n is not None
        )
        for warning in self.warnings:
            log.warning("%s", warning)
        for ep in eps:
            declared, dist = f"{ep.name} = {ep.value}", _dist_label(ep)
            reason = switches.refusal(n for n in (ep.name, _dist_name(ep)) if n)
            if reason is not None:
                self.disabled.append(DisabledPlugin(ep.name, declared, dist, reason))
                continue
            name = ep.name if not self.pm.has_plugin(ep.name) else f"{ep.name}@{_dist_name(ep)}"
            info = PluginInfo(name, declared, dist, None)
            try:
                plugin = ep.load()
            except Exception as exc:
                error = info.error(f"{info.describe()} failed to load: {type(exc).__name__}: {exc}")
                error.__cause__ = exc
                self._isolate(BrokenPlugin(declared, dist, error, name), strict=strict)
                continue
            info = attrs.evolve(info, plugin=plugin)
            try:
                self._register(plugin, info, explicit=False)
            except PluginError as error:
                ids = _declared_ids(plugin)
                self._isolate(BrokenPlugin(declared, dist, error, name, ids), strict=strict)
        if strict and self.conflicts:
            raise self._conflict_error(min(self.conflicts))

    def _isolate(self, broken: BrokenPlugin, *, strict: bool) -> None:
        if strict:
            raise broken.error
        log.warning("%s (isolated: only asking for its providers fails)", broken.error)
        self.broken.append(broken)

    def add(self, plugin: object, name: str | None = None) -> None:
        """Register a plugin explicitly (a module or an object with ``@hookimpl`` methods).

        A module that an installed distribution declares as an entry point keeps that entry
        point's name and distribution. Adding a plugin that is already registered makes it
        the owner of the provider ids it shares with another entry point.
        """
        if self.pm.is_registered(plugin):
            self._choose(plugin)
            return
        info = self._explicit_info(plugin, name)
        self._register(plugin, info, explicit=True)

    def _explicit_info(self, plugin: object, name: str | None) -> PluginInfo:
        if isinstance(plugin, ModuleType):
            for ep in self.entry_points():
                if ep.module == plugin.__name__ and not self.pm.has_plugin(ep.name):
                    declared = f"{ep.name} = {ep.value}"
                    return PluginInfo(ep.name, declared, _dist_label(ep), plugin)
        name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
        if self.pm.has_plugin(name):
            name = f"{name}#{id(plugin):x}"
        return PluginInfo(name, None, None, plugin)

    def _choose(self, plugin: object) -> None:
        """Give *plugin* the conflicting provider ids it claims (the app picked it)."""
        for provider_id, claimants in list(self.conflicts.items()):
            chosen = next((c for c in claimants if c.plugin.plugin is plugin), None)
            if chosen is not None:
                del self.conflicts[provider_id]
                self.providers[provider_id] = chosen
                self._impls.clear()

    # -- registration ------------------------------------------------------------------------

    def _register(
        self, plugin: object, info: PluginInfo, *, explicit: bool = True, checked: bool = False
    ) -> None:
        """Check the contract (unless *checked*), register, and collect the providers.

        All or nothing: a plugin that fails is left unregistered.
        """
        if not checked and (problems := contract_problems(self.pm, plugin)):
            raise info.error(f"{info.describe()} is not a valid keyloom plugin: {problems[0]}")
        try:
            self.pm.register(plugin, name=info.name)
        except (pluggy.PluginValidationError, ValueError) as exc:
            msg = f"{info.describe()} is not a valid keyloom plugin: {one_line(str(exc))}"
            raise info.error(msg) from exc
        try:
            offered = self._offered(plugin, info)
            self._claim(offered, explicit=explicit)
        except PluginError:
            self.pm.unregister(plugin)
            raise
        self.infos[info.name] = info
        self._impls.clear()

    def _offered(self, plugin: object, info: PluginInfo) -> list[RegisteredProvider]:
        offered: list[RegisteredProvider] = []

        def register(spec: object, factory: ProviderFactory | None = None) -> None:
            if not isinstance(spec, ProviderSpec):
                msg = f"{info.describe()} registered {spec!r}, which is not a ProviderSpec"
                raise info.error(msg)
            if any(o.spec.id == spec.id for o in offered):
                msg = f"{info.describe()} registered the provider id '{spec.id}' twice"
                raise info.error(msg, provider_id=spec.id)
            offered.append(RegisteredProvider(spec, factory or _default_factory(spec), info))

        others = [p for p in self.pm.get_plugins() if p is not plugin]
        try:
            self.pm.subset_hook_caller("register_providers", others)(register=register)
        except PluginError:
            raise
        except Exception as exc:  # a ConfigurationError too: the plugin is what is broken
            what = f"{type(exc).__name__}: {exc}"
            msg = f"{info.describe()} failed in hook 'register_providers': {what}"
            raise info.error(msg) from exc
        return offered

    def _claim(self, offered: list[RegisteredProvider], *, explicit: bool) -> None:
        """Record *offered*; an id another plugin has is a conflict (an error, if explicit)."""
        for new in offered:
            provider_id = new.spec.id
            held = self.providers.get(provider_id)
            claimants = self.conflicts.get(provider_id, (held,) if held else ())
            if claimants and explicit:
                raise self._conflict_error(provider_id, (*claimants, new))
        for new in offered:
            provider_id = new.spec.id
            held = self.providers.pop(provider_id, None)
            claimants = self.conflicts.get(provider_id, (held,) if held else ())
            if claimants:
                self.conflicts[provider_id] = (*claimants, new)
                log.warning("%s", self._conflict_error(provider_id))
            else:
                self.providers[provider_id] = new

    def _conflict_error(
        self, provider_id: str, claimants: tuple[RegisteredProvider, ...] | None = None
    ) -> PluginError:
        claimants = claimants or self.conflicts[provider_id]
        named = " and by ".join(c.plugin.describe() for c in claimants)
        msg = (
            f"the provider id '{provider_id}' is claimed by {named}; neither is preferred. "
            f"Pick one: {pick_advice(claimants)}"
        )
        error = claimants[-1].plugin.error(msg, provider_id)
        error.hint = "keyloom providers lists the plugins and the ids they claim"
        return error

    # -- resolution --------------------------------------------------------------------------

    def resolve(self, provider: object) -> Provider:
        """Turn ``"tiktok"`` into a provider configured from the environment; check ownership.

        A :class:`Provider` whose plugin is not loaded has its ``spec.plugin`` module registered
        (so explicit configuration works with autoload off); one whose id two plugins claim
        picks the claimant ``spec.plugin`` names.

        :raises UnknownProviderError: no plugin offers the id (the message says why: not
            installed, autoloading off, or switched off, and how to fix it).
        :raises PluginError: the plugin that offers it is broken, or two plugins claim it.
        """
        if isinstance(provider, str):
            registered = self.providers.get(provider)
            if registered is None:
                raise self.missing(provider)
            built: object = registered.factory()
            if not isinstance(built, Provider):
                msg = f"the factory of provider '{provider}' did not return a Provider"
                raise registered.plugin.error(msg, provider)
            return built
        if not isinstance(provider, Provider):
            msg = f"providers must be Provider objects or ids, not {type(provider).__name__}"
            raise ConfigurationError(msg)
        if provider.id not in self.providers and provider.spec.plugin:
            self.add(importlib.import_module(provider.spec.plugin), provider.spec.plugin)
        if provider.id in self.conflicts:
            raise self._conflict_error(provider.id)
        return provider

    def missing(self, provider_id: str) -> KeyloomError:
        """The error for asking for *provider_id*, which no plugin offers, saying why."""
        if provider_id in self.conflicts:
            return self._conflict_error(provider_id)
        for broken in self.broken:
            if provider_id in broken.provider_ids or _answers_to(
                provider_id, broken.name, broken.distribution
            ):
                return self._broken_error(provider_id, broken)
        for off in self.disabled:
            if _answers_to(provider_id, off.name, off.distribution):
                reason = off.reason
                fix = (
                    f"remove '{off.name}' from {DISABLE_PLUGINS_ENV}"
                    if reason.startswith(DISABLE_PLUGINS_ENV)
                    else f"add '{off.name}' to {LOAD_PLUGINS_ENV}"
                )
                msg = (
                    f"no loaded plugin offers '{provider_id}': plugin '{off.name}' "
                    f"({off.distribution}) is switched off ({reason}); {fix}"
                )
                return UnknownProviderError(msg, provider_id=provider_id, hint=fix)
        if not self.autoload:
            return self._autoload_off_error(provider_id)
        return self._unknown_error(provider_id)

    def _broken_error(self, provider_id: str, broken: BrokenPlugin) -> PluginError:
        cause = broken.error.__cause__
        msg = (
            f"the provider '{provider_id}' is offered by plugin '{broken.name}' (entry point "
            f"'{broken.entry_point}' of {broken.distribution}), which {broken.reason}. "
            f"Fix or uninstall {broken.distribution.split(' ')[0]}"
        )
        error = PluginError(
            msg,
            plugin=broken.name,
            distribution=broken.distribution,
            entry_point=broken.entry_point,
            provider_id=provider_id,
        )
        error.__cause__ = cause or broken.error
        error.hint = f"or switch it off: {DISABLE_PLUGINS_ENV}={broken.name}"
        return error

    def _autoload_off_error(self, provider_id: str) -> UnknownProviderError:
        how = (
            f"{DISABLE_AUTOLOAD_ENV} is set"
            if self._autoload_off_by == DISABLE_AUTOLOAD_ENV
            else "define_keyloom(autoload=False)"
        )
        turn_on = (
            f"unset {DISABLE_AUTOLOAD_ENV}"
            if self._autoload_off_by == DISABLE_AUTOLOAD_ENV
            else "drop autoload=False"
        )
        for ep in self.entry_points():
            if _answers_to(provider_id, ep.name, _dist_label(ep)):
                fix = (
                    f"{turn_on}, or pass plugins=[{ep.module}] (or a provider built by its "
                    "factory) to define_keyloom"
                )
                msg = (
                    f"no loaded plugin offers '{provider_id}': plugin autoloading is off "
                    f"({how}), so the installed plugin '{ep.name}' ({_dist_label(ep)}) was "
                    f"not loaded; {fix}"
                )
                return UnknownProviderError(msg, provider_id=provider_id, hint=fix)
        fix = (
            f"{turn_on}, or pass the plugin module in plugins=[...] (or a provider built by "
            "its factory); keyloom providers lists the installed plugins"
        )
        msg = f"no loaded plugin offers '{provider_id}': plugin autoloading is off ({how}); {fix}"
        return UnknownProviderError(msg, provider_id=provider_id, hint=fix)

    def _unknown_error(self, provider_id: str) -> UnknownProviderError:
        close = difflib.get_close_matches(provider_id, sorted(self.providers), n=1)
        fix = (
            f"did you mean '{close[0]}'?"
            if close
            else f"install its plugin (pip install keyloom-{provider_id}, for example)"
        )
        msg = f"no installed plugin offers a provider named '{provider_id}': {fix}"
        if self.broken:
            names = ", ".join(f"'{b.name}'" for b in self.broken)
            msg += f" (broken plugins, which may offer it: {names}; see keyloom providers)"
        else:
            msg += " (keyloom providers lists what is installed)"
        return UnknownProviderError(msg, provider_id=provider_id, hint=fix)

    # -- ownership ---------------------------------------------------------------------------

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


def pick_advice(claimants: Iterable[RegisteredProvider]) -> str:
    """How to pick one of several plugins claiming a provider id (the switches first)."""
    names = [c.plugin.name for c in claimants]
    switchable = {c.plugin.name for c in claimants if c.plugin.entry_point}
    keeps = [
        f"{DISABLE_PLUGINS_ENV}={','.join(n for n in names if n != keep)} keeps '{keep}'"
        for keep in names
        if all(n in switchable for n in names if n != keep)
    ]
    if not keeps:
        return "register only one of them"
    return (
        f"{'; '.join(keeps)} (or list the plugins to load in {LOAD_PLUGINS_ENV}, or configure "
        "the provider with the chosen plugin's factory)"
    )


def _declared_ids(plugin: object) -> frozenset[str]:
    """The provider ids a (broken) plugin's ``register_providers`` declares, if it can tell."""
    declare = getattr(plugin, "register_providers", None)
    if not callable(declare):
        return frozenset()
    ids: set[str] = set()

    def register(spec: object, factory: object = None) -> None:
        del factory
        if isinstance(spec, ProviderSpec):
            ids.add(spec.id)

    try:
        declare(register)
    except Exception:
        log.debug("register_providers of a broken plugin failed again", exc_info=True)
    return frozenset(ids)


def _default_factory(spec: ProviderSpec) -> ProviderFactory:
    def factory(**options: Any) -> Provider:
        return configure_provider(spec, **options)

    return factory

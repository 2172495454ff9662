"""Plugins: entry-point discovery, contract checks, provider ownership and coroutine hygiene.

The discovery tests use the distributions in ``tests/fixtures`` (see the ``fixture_plugins``
fixture): ``keyloom-testplugin`` (provider ``testprov``), ``keyloom-brokenplugin`` (fails to
import), ``keyloom-misspelledplugin`` (imports, but misspells a hook) and
``keyloom-dupplugin`` (claims ``testprov`` again). Each test here runs with
``KEYLOOM_DISABLE_PLUGIN_AUTOLOAD=1`` unless it asks for the ``autoload`` fixture.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any

import attrs
import pytest

from keyloom_core import (
    AccessDeniedError,
    ConfigurationError,
    Keyloom,
    LoginResult,
    PluginError,
    Profile,
    Provider,
    ProviderSpec,
    TokenSet,
    UnknownProviderError,
    _plugins,
    define_keyloom,
    hookimpl,
)
from keyloom_core._hook_contract import contract_problems
from keyloom_core._plugin_switches import (
    DISABLE_AUTOLOAD_ENV,
    DISABLE_PLUGINS_ENV,
    LOAD_PLUGINS_ENV,
)
from keyloom_core._plugins import PluginRegistry

pytestmark = pytest.mark.anyio

Login = Callable[..., Awaitable[LoginResult]]
MakeKeyloom = Callable[..., Keyloom]
MakeProvider = Callable[..., Provider]


@pytest.fixture(autouse=True)
def no_autoload(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DISABLE_AUTOLOAD_ENV, "1")
    for name in ("TESTPROV_CLIENT_ID", "TESTPROV_CLIENT_SECRET"):
        monkeypatch.delenv(name, raising=False)


def spec_for(provider_id: str, fake_spec: ProviderSpec) -> ProviderSpec:
    return attrs.evolve(fake_spec, id=provider_id, name=provider_id.title())


class Owner:
    """A provider plugin that records every provider hook call and defers to the built-in."""

    def __init__(self, spec: ProviderSpec | None) -> None:
        self.spec = spec
        self.calls: list[tuple[str, str]] = []

    @hookimpl
    def register_providers(self, register: Any) -> None:
        if self.spec is not None:
            register(self.spec)

    @hookimpl
    async def authorize_params(self, provider: Provider) -> None:
        self.calls.append(("authorize_params", provider.id))

    @hookimpl
    async def exchange_code(self, provider: Provider) -> None:
        self.calls.append(("exchange_code", provider.id))

    @hookimpl
    async def fetch_profile(self, provider: Provider) -> None:
        self.calls.append(("fetch_profile", provider.id))

    @hookimpl
    async def refresh_token(self, provider: Provider) -> None:
        self.calls.append(("refresh_token", provider.id))

    @hookimpl
    async def revoke_token(self, provider: Provider) -> None:
        self.calls.append(("revoke_token", provider.id))


def owner(name: str, spec: ProviderSpec | None) -> Owner:
    """An :class:`Owner` of its own class: plugins are registered under their class name."""
    return type(name, (Owner,), {})(spec)


def trace_coroutines(keyloom: Keyloom) -> list[Any]:
    """Every awaitable the broadcast hooks of *keyloom* return, as pluggy hands them over.

    (Provider hooks do not go through pluggy's hook calls: the core calls them directly.)
    """
    seen: list[Any] = []

    def after(outcome: Any, hook_name: str, hook_impls: Any, kwargs: Any) -> None:
        if outcome.exception is None and isinstance(outcome.get_result(), list):
            seen.extend(r for r in outcome.get_result() if inspect.iscoroutine(r))

    keyloom.registry.pm.add_hookcall_monitoring(lambda *_: None, after)
    return seen


# -- entry-point discovery ---------------------------------------------------------------

TESTPROV_EP = "testprov = keyloom_testplugin"
DUP_EP = "dup = keyloom_dupplugin"
APP = {"secret": "s" * 32, "base_url": "http://localhost"}


@pytest.fixture
def autoload(monkeypatch: pytest.MonkeyPatch, fixture_plugins: None) -> pytest.MonkeyPatch:
    """Autoload on, the fixture distributions discoverable, no switch set."""
    for name in (DISABLE_AUTOLOAD_ENV, LOAD_PLUGINS_ENV, DISABLE_PLUGINS_ENV):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.usefixtures("autoload")
def test_a_broken_plugin_is_isolated_and_reported(caplog: pytest.LogCaptureFixture) -> None:
    registry = PluginRegistry()  # does not raise

    broken = {b.name: b for b in registry.broken}
    assert set(broken) == {"broken", "misspelled"}
    failed = broken["broken"]
    assert failed.entry_point == "broken = keyloom_brokenplugin"
    assert failed.distribution == "keyloom-brokenplugin 0.1.0"
    assert (failed.error.plugin, failed.error.distribution) == ("broken", failed.distribution)
    assert failed.error.entry_point == failed.entry_point
    assert "entry point 'broken = keyloom_brokenplugin' of keyloom-brokenplugin 0.1.0" in str(
        failed.error
    )
    assert "ImportError" in str(failed.error)
    assert isinstance(failed.error.__cause__, ImportError)
    assert broken["misspelled"].provider_ids == {"misspelled"}
    # the refused plugins' hooks are not left registered, nor listed as loaded
    for name in broken:
        assert registry.pm.get_plugin(name) is None
        assert name not in registry.infos
    logged = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("keyloom-brokenplugin 0.1.0" in line for line in logged)
    assert any("keyloom-misspelledplugin 0.1.0" in line for line in logged)


@pytest.mark.usefixtures("autoload")
def test_apps_start_beside_a_broken_plugin(testplugin: ModuleType) -> None:
    provider = testplugin.testprov(client_id="id", client_secret="secret")
    keyloom = define_keyloom(providers=[provider], **APP)
    assert list(keyloom.providers) == ["testprov"]
    assert {b.name for b in keyloom.registry.broken} == {"broken", "misspelled"}


@pytest.mark.usefixtures("autoload")
def test_asking_for_a_broken_plugins_provider_names_it_and_the_error() -> None:
    with pytest.raises(PluginError) as info:
        define_keyloom(providers=["broken"], **APP)
    error = info.value
    assert (error.plugin, error.distribution) == ("broken", "keyloom-brokenplugin 0.1.0")
    assert error.entry_point == "broken = keyloom_brokenplugin"
    assert error.provider_id == "broken"
    assert "which failed to load: ImportError: keyloom_brokenplugin needs the module" in str(
        error
    )
    assert "Fix or uninstall keyloom-brokenplugin" in str(error)
    assert error.hint == "or switch it off: KEYLOOM_DISABLE_PLUGINS=broken"
    assert isinstance(error.__cause__, ImportError)


@pytest.mark.usefixtures("autoload")
def test_a_plugin_that_fails_to_register_is_named_with_its_problem() -> None:
    with pytest.raises(PluginError) as info:
        define_keyloom(providers=["misspelled"], **APP)
    error = info.value
    assert error.plugin == "misspelled"
    assert error.distribution == "keyloom-misspelledplugin 0.1.0"
    expected = (
        "which is not a valid keyloom plugin: unknown hook 'fetch_profil' (did you mean "
        "'fetch_profile'?). Fix or uninstall keyloom-misspelledplugin"
    )
    assert expected in str(error)


@pytest.mark.usefixtures("autoload")
def test_a_provider_claimed_twice_goes_to_neither() -> None:
    registry = PluginRegistry()
    assert "testprov" not in registry.providers
    claimants = registry.conflicts["testprov"]
    assert [c.plugin.entry_point for c in claimants] == [DUP_EP, TESTPROV_EP]
    with pytest.raises(PluginError) as info:
        registry.resolve("testprov")
    message = str(info.value)
    assert "keyloom-testplugin 0.1.0" in message
    assert "keyloom-dupplugin 0.1.0" in message
    assert "neither is preferred" in message
    assert (
        "Pick one: KEYLOOM_DISABLE_PLUGINS=testprov keeps 'dup'; KEYLOOM_DISABLE_PLUGINS=dup "
        "keeps 'testprov' (or list the plugins to load in KEYLOOM_LOAD_PLUGINS"
    ) in message
    assert info.value.provider_id == "testprov"
    assert info.value.hint == "keyloom providers lists the plugins and the ids they claim"


def test_conflicts_do_not_depend_on_the_order_of_discovery(
    autoload: pytest.MonkeyPatch,
) -> None:
    found = _plugins._entry_points()
    messages = set()
    for order in (found, found[::-1]):
        autoload.setattr(importlib.metadata, "entry_points", lambda o=order, **_: list(o))
        registry = PluginRegistry()
        with pytest.raises(PluginError) as info:
            registry.resolve("testprov")
        messages.add(str(info.value))
        assert [b.name for b in registry.broken] == ["broken", "misspelled"]
    assert len(messages) == 1


@pytest.mark.usefixtures("autoload")
def test_a_configured_provider_picks_its_plugin_among_claimants(testplugin: ModuleType) -> None:
    provider = testplugin.testprov(client_id="id", client_secret="secret")
    keyloom = define_keyloom(providers=[provider], **APP)
    assert keyloom.registry.owner("testprov") is testplugin
    assert "testprov" not in keyloom.registry.conflicts


@pytest.mark.usefixtures("autoload")
def test_strict_discovery_raises_for_the_first_broken_plugin_by_name() -> None:
    with pytest.raises(PluginError) as info:
        PluginRegistry(strict=True)
    error = info.value
    assert error.distribution == "keyloom-brokenplugin 0.1.0"
    assert error.plugin == "broken"
    assert f"'{error.plugin} = " in str(error)


# -- switches ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["dup", "keyloom-dupplugin", "Keyloom_DupPlugin", " dup ,x"])
def test_disable_plugins_switch(autoload: pytest.MonkeyPatch, value: str) -> None:
    autoload.setenv(DISABLE_PLUGINS_ENV, value)
    registry = PluginRegistry()
    assert registry.providers["testprov"].plugin.entry_point == TESTPROV_EP
    assert registry.conflicts == {}
    [off] = registry.disabled
    assert (off.name, off.entry_point) == ("dup", DUP_EP)
    assert off.reason.startswith("KEYLOOM_DISABLE_PLUGINS=")
    assert registry.pm.get_plugin("dup") is None


def test_disabling_a_broken_plugin_skips_its_import(autoload: pytest.MonkeyPatch) -> None:
    autoload.setenv(DISABLE_PLUGINS_ENV, "broken,misspelled")
    registry = PluginRegistry()
    assert registry.broken == []
    assert sorted(d.name for d in registry.disabled) == ["broken", "misspelled"]
    with pytest.raises(UnknownProviderError) as info:
        registry.resolve("broken")
    assert "plugin 'broken' (keyloom-brokenplugin 0.1.0) is switched off" in str(info.value)
    assert "remove 'broken' from KEYLOOM_DISABLE_PLUGINS" in str(info.value)


def test_load_plugins_allow_list(autoload: pytest.MonkeyPatch) -> None:
    autoload.setenv(LOAD_PLUGINS_ENV, "testprov")
    registry = PluginRegistry()
    assert list(registry.providers) == ["testprov"]
    assert registry.providers["testprov"].plugin.entry_point == TESTPROV_EP
    assert registry.broken == []
    assert {d.name: d.reason for d in registry.disabled}["dup"] == (
        "not in KEYLOOM_LOAD_PLUGINS=testprov"
    )
    with pytest.raises(UnknownProviderError, match="add 'dup' to KEYLOOM_LOAD_PLUGINS"):
        registry.resolve("dup")


def test_an_empty_allow_list_loads_no_entry_point(autoload: pytest.MonkeyPatch) -> None:
    autoload.setenv(LOAD_PLUGINS_ENV, "")
    registry = PluginRegistry()
    assert registry.providers == {}
    assert registry.broken == []
    names = {d.name for d in registry.disabled}
    assert names >= {"broken", "dup", "misspelled", "testprov"}
    assert len(names) == len(_plugins._entry_points())
    assert {d.reason for d in registry.disabled} == {"KEYLOOM_LOAD_PLUGINS is set but empty"}


def test_a_switch_naming_no_plugin_is_reported(
    autoload: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    autoload.setenv(DISABLE_PLUGINS_ENV, "dupp")
    registry = PluginRegistry()
    expected = "KEYLOOM_DISABLE_PLUGINS names 'dupp', which no installed plugin is"
    assert registry.warnings == [f"{expected} (did you mean 'dup'?)"]
    assert expected in caplog.text


@pytest.mark.parametrize("value", ["1", "true", "YES", " on "])
def test_disable_autoload_switch(autoload: pytest.MonkeyPatch, value: str) -> None:
    autoload.setenv(DISABLE_AUTOLOAD_ENV, value)
    registry = PluginRegistry()
    assert registry.providers == {}
    assert registry.broken == []
    assert set(registry.infos) == {"keyloom_core.oauth2", "keyloom_core._policy"}


def test_with_autoload_off_a_provider_id_says_why(autoload: pytest.MonkeyPatch) -> None:
    autoload.setenv(DISABLE_AUTOLOAD_ENV, "1")
    with pytest.raises(UnknownProviderError) as info:
        define_keyloom(providers=["testprov"], **APP)
    message = str(info.value)
    assert "plugin autoloading is off (KEYLOOM_DISABLE_PLUGIN_AUTOLOAD is set)" in message
    assert "the installed plugin 'testprov' (keyloom-testplugin 0.1.0) was not loaded" in message
    assert "unset KEYLOOM_DISABLE_PLUGIN_AUTOLOAD" in message
    assert "plugins=[keyloom_testplugin]" in message

    with pytest.raises(UnknownProviderError) as info:
        PluginRegistry(autoload=False).resolve("discord")
    message = str(info.value)
    assert "plugin autoloading is off (define_keyloom(autoload=False))" in message
    assert "drop autoload=False" in message


@pytest.mark.parametrize("value", [None, "", "0", "no"])
def test_autoload_is_on_unless_disabled(autoload: pytest.MonkeyPatch, value: str | None) -> None:
    if value is not None:
        autoload.setenv(DISABLE_AUTOLOAD_ENV, value)
    assert "testprov" in PluginRegistry().conflicts


def test_explicit_autoload_overrides_the_switch(autoload: pytest.MonkeyPatch) -> None:
    autoload.setenv(DISABLE_AUTOLOAD_ENV, "1")
    assert "testprov" in PluginRegistry(autoload=True).conflicts
    autoload.delenv(DISABLE_AUTOLOAD_ENV)
    assert "testprov" not in PluginRegistry(autoload=False).conflicts


# -- explicit plugins --------------------------------------------------------------------


def test_explicit_plugin_module(testplugin: ModuleType) -> None:
    registry = PluginRegistry([testplugin], autoload=False)
    registered = registry.providers["testprov"]
    assert registered.spec is testplugin.SPEC
    # an installed plugin keeps its entry point's name however it is registered
    assert registered.plugin.name == "testprov"
    assert registered.plugin.entry_point == TESTPROV_EP
    assert registered.plugin.distribution == "keyloom-testplugin 0.1.0"
    assert registry.owner("testprov") is testplugin
    registry.add(testplugin)  # a second registration is a no-op
    assert list(registry.providers) == ["testprov"]


def test_a_plugin_has_one_name_however_it_is_loaded(
    autoload: pytest.MonkeyPatch, testplugin: ModuleType
) -> None:
    autoload.setenv(DISABLE_PLUGINS_ENV, "dup")
    discovered = PluginRegistry().providers["testprov"].plugin
    explicit = PluginRegistry([testplugin], autoload=False).providers["testprov"].plugin
    by_spec = PluginRegistry(autoload=False)
    by_spec.resolve(testplugin.testprov(client_id="id", client_secret="secret"))
    configured = by_spec.providers["testprov"].plugin
    assert discovered == explicit == configured
    error = explicit.error("boom")
    assert (error.plugin, error.distribution, error.entry_point) == (
        "testprov",
        "keyloom-testplugin 0.1.0",
        TESTPROV_EP,
    )


def test_provider_ids_resolved_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, testplugin: ModuleType
) -> None:
    monkeypatch.setenv("TESTPROV_CLIENT_ID", "env-client")
    monkeypatch.setenv("TESTPROV_CLIENT_SECRET", "env-secret")
    keyloom = define_keyloom(
        providers=["testprov"],
        plugins=[testplugin],
        secret="s" * 32,
        base_url="https://app.example.com",
    )
    provider = keyloom.providers["testprov"]
    assert (provider.client_id, provider.client_secret) == ("env-client", "env-secret")
    assert provider.spec == testplugin.SPEC


def test_provider_id_without_credentials_names_the_env_vars(testplugin: ModuleType) -> None:
    with pytest.raises(Exception, match="TESTPROV_CLIENT_ID"):
        define_keyloom(
            providers=["testprov"],
            plugins=[testplugin],
            secret="s" * 32,
            base_url="https://app.example.com",
        )


def test_unknown_provider_id() -> None:
    with pytest.raises(UnknownProviderError, match="'nosuch'"):
        PluginRegistry(autoload=False).resolve("nosuch")


async def test_configured_provider_brings_its_plugin(
    make_keyloom: MakeKeyloom, fake_provider: Any, login: Login, testplugin: ModuleType
) -> None:
    provider = testplugin.testprov(
        endpoint_origin=fake_provider.url,
        client_id=fake_provider.client_id,
        client_secret=fake_provider.client_secret,
    )
    async with make_keyloom(provider) as keyloom:  # autoload is off
        assert keyloom.registry.owner("testprov") is testplugin
        result = await login(keyloom, "testprov")
    assert result.profile.extra == {"plugin": "keyloom_testplugin"}
    assert result.profile.id == "id-alice"


def test_factory_must_return_a_provider(fake_spec: ProviderSpec) -> None:
    class Bad:
        @hookimpl
        def register_providers(self, register: Any) -> None:
            register(fake_spec, lambda **_: "not a provider")

    registry = PluginRegistry([Bad()], autoload=False)
    with pytest.raises(PluginError, match="did not return a Provider"):
        registry.resolve("fake")


# -- contract checks ---------------------------------------------------------------------


class Misspelled:
    @hookimpl
    async def exchange_cod(self, provider: Provider) -> None:
        pass


class MisspelledSync:
    @hookimpl
    def register_provider(self, register: Any) -> None:
        pass


class SyncImplOfAsyncHook:
    @hookimpl
    def exchange_code(self, provider: Provider) -> None:
        pass


class AsyncImplOfSyncHook:
    @hookimpl
    async def validate_scopes(self, provider: Provider) -> None:
        pass


class AsyncRegister:
    @hookimpl
    async def register_providers(self, register: Any) -> None:
        pass


class UnknownArgument:
    @hookimpl
    async def fetch_profile(self, provider: Provider, session: Any) -> None:
        pass


class MisspelledArgument:
    @hookimpl
    async def refresh_token(self, token: TokenSet) -> None:
        pass


class NotAHook:
    @hookimpl
    async def on_login(self) -> None:
        pass


class WrapperNotGenerator:
    @hookimpl(wrapper=True)
    async def login_succeeded(self) -> None:
        pass


@pytest.mark.parametrize(
    ("plugin", "message"),
    [
        pytest.param(
            Misspelled(),
            r"unknown hook 'exchange_cod' \(did you mean 'exchange_code'\?\)",
            id="Misspelled",
        ),
        pytest.param(
            MisspelledSync(),
            r"unknown hook 'register_provider' \(did you mean 'register_providers'\?\)",
            id="MisspelledSync",
        ),
        pytest.param(
            SyncImplOfAsyncHook(),
            "hook 'exchange_code' is asynchronous: define it with 'async def'",
            id="SyncImplOfAsyncHook",
        ),
        pytest.param(
            AsyncImplOfSyncHook(),
            "hook 'validate_scopes' is synchronous: define it with 'def', not 'async def'",
            id="AsyncImplOfSyncHook",
        ),
        pytest.param(
            AsyncRegister(),
            "hook 'register_providers' is synchronous: define it with 'def', not 'async def'",
            id="AsyncRegister",
        ),
        pytest.param(
            UnknownArgument(),
            r"hook 'fetch_profile' has no argument 'session' \(its arguments are provider, "
            r"tokens, http; an implementation may take any of them\)$",
            id="UnknownArgument",
        ),
        pytest.param(
            MisspelledArgument(),
            r"hook 'refresh_token' has no argument 'token' \(did you mean 'tokens'\? its "
            r"arguments are provider, tokens, http;",
            id="MisspelledArgument",
        ),
        pytest.param(  # pluggy's own check, its text on one line
            WrapperNotGenerator(),
            r"hook 'login_succeeded'; hookimpl definition: .*; Declared as wrapper=True or "
            r"hookwrapper=True but function is not a generator function$",
            id="WrapperNotGenerator",
        ),
        pytest.param(
            NotAHook(),
            r"unknown hook 'on_login' \(hooks: account_linked, account_unlinked, authorize_params, ",
            id="NotAHook",
        ),
    ],
)
def test_contract_violations_are_plugin_errors(plugin: object, message: str) -> None:
    name = type(plugin).__name__
    with pytest.raises(PluginError, match=message) as info:
        PluginRegistry([plugin], autoload=False)
    assert info.value.plugin == name
    assert str(info.value).startswith(f"plugin '{name}' is not a valid keyloom plugin: ")
    assert "\n" not in str(info.value)
    assert " a 'async" not in str(info.value)

    registry = PluginRegistry(autoload=False)
    with pytest.raises(PluginError):
        registry.add(plugin)
    assert not registry.pm.is_registered(plugin)
    assert name not in registry.infos


@pytest.mark.parametrize("module", _plugins.BUILTIN_PLUGINS)
def test_the_builtin_plugins_keep_the_contract(module: str) -> None:
    """They register without the check, for start-up speed: it is done here instead."""
    registry = PluginRegistry(autoload=False)
    assert contract_problems(registry.pm, importlib.import_module(module)) == []


async def test_contract_violation_through_define_keyloom(make_provider: MakeProvider) -> None:
    with pytest.raises(PluginError, match="exchange_cod"):
        define_keyloom(
            providers=[make_provider()],
            plugins=[Misspelled()],
            secret="s" * 32,
            base_url="https://app.example.com",
        )


def test_registering_something_that_is_not_a_spec() -> None:
    class Sloppy:
        @hookimpl
        def register_providers(self, register: Any) -> None:
            register({"id": "sloppy"})

    with pytest.raises(PluginError, match="not a ProviderSpec"):
        PluginRegistry([Sloppy()], autoload=False)


@pytest.mark.parametrize("error", [ValueError("bad spec"), ConfigurationError("bad spec")])
def test_a_failing_register_providers_is_a_plugin_error(error: Exception) -> None:
    class Failing:
        @hookimpl
        def register_providers(self, register: Any) -> None:
            del register
            raise error

    plugin = Failing()
    registry = PluginRegistry(autoload=False)
    with pytest.raises(PluginError) as info:
        registry.add(plugin)
    expected = f"failed in hook 'register_providers': {type(error).__name__}: bad spec"
    assert expected in str(info.value)
    assert info.value.__cause__ is error
    assert not registry.pm.is_registered(plugin)


def test_duplicate_provider_id_between_explicit_plugins(fake_spec: ProviderSpec) -> None:
    first, second = Owner(fake_spec), Owner(fake_spec)
    registry = PluginRegistry(autoload=False)
    registry.add(first, "first")
    with pytest.raises(PluginError) as info:
        registry.add(second, "second")
    assert "plugin 'first'" in str(info.value)
    assert "plugin 'second'" in str(info.value)
    assert info.value.provider_id == "fake"
    assert registry.owner("fake") is first
    assert not registry.pm.is_registered(second)


# -- provider ownership ------------------------------------------------------------------


async def test_provider_calls_reach_only_the_owning_plugin(
    make_keyloom: MakeKeyloom,
    make_provider: MakeProvider,
    fake_spec: ProviderSpec,
    fake_provider: Any,
    login: Login,
) -> None:
    alpha_spec, beta_spec = spec_for("alpha", fake_spec), spec_for("beta", fake_spec)
    alpha, beta = owner("Alpha", alpha_spec), owner("Beta", beta_spec)
    bystander = owner("Bystander", None)
    keyloom = make_keyloom(
        make_provider(alpha_spec),
        make_provider(beta_spec),
        make_provider(),
        plugins=[alpha, beta, bystander],
    )
    async with keyloom:
        result = await login(keyloom, "alpha")
        await keyloom.refresh("alpha", result.tokens)
        await keyloom.revoke("alpha", result.tokens)
        await login(keyloom, "fake")  # owned by no plugin: the built-in alone

    flow = ["authorize_params", "exchange_code", "fetch_profile", "refresh_token", "revoke_token"]
    assert alpha.calls == [(hook, "alpha") for hook in flow]
    assert beta.calls == []
    assert bystander.calls == []
    # every owner answered None, so the built-in RFC 6749 implementation did the work
    assert result.profile.id == "id-alice"
    assert [c["grant_type"] for c in fake_provider.calls("/token")] == [
        "authorization_code",
        "refresh_token",
        "authorization_code",
    ]
    assert len(fake_provider.revoked) == 1


async def test_plugin_added_later_does_not_see_other_providers(
    make_keyloom: MakeKeyloom,
    make_provider: MakeProvider,
    fake_spec: ProviderSpec,
    login: Login,
) -> None:
    alpha_spec = spec_for("alpha", fake_spec)
    alpha = owner("Alpha", alpha_spec)
    keyloom = make_keyloom(make_provider(alpha_spec), plugins=[alpha])
    async with keyloom:
        await login(keyloom, "alpha")
        late = owner("Late", spec_for("late", fake_spec))
        keyloom.registry.add(late, "late")
        await login(keyloom, "alpha")
    assert late.calls == []
    assert len(alpha.calls) == 6


async def test_owner_answer_wins_and_the_builtin_is_never_run(
    make_keyloom: MakeKeyloom,
    make_provider: MakeProvider,
    fake_spec: ProviderSpec,
    fake_provider: Any,
    login: Login,
) -> None:
    spec = spec_for("custom", fake_spec)

    class Custom:
        @hookimpl
        def register_providers(self, register: Any) -> None:
            register(spec)

        @hookimpl
        async def exchange_code(self, code: str) -> TokenSet:
            return TokenSet(access_token=f"custom-{code[:9]}", scopes=frozenset({"profile"}))

        @hookimpl
        async def fetch_profile(self, provider: Provider, tokens: TokenSet) -> Profile:
            return Profile(provider_id=provider.id, id="custom-user", name=tokens.access_token)

    keyloom = make_keyloom(make_provider(spec), plugins=[Custom()])
    called = spy_on_builtin(keyloom, "exchange_code", "fetch_profile")
    async with keyloom:
        result = await login(keyloom, "custom")
    assert result.tokens.access_token.startswith("custom-code-")
    assert result.profile.id == "custom-user"
    assert fake_provider.calls("/token") == []
    assert fake_provider.calls("/userinfo") == []
    # the fallback is called only when the owner answers None: not even a coroutine of
    # the built-in's was made
    assert called == []
    impls = keyloom.registry.provider_impls("exchange_code", "custom")
    assert [plugin for plugin, _, _ in impls] == ["Custom", "keyloom_core.oauth2"]


async def test_an_owner_answering_none_gets_the_builtin(
    make_keyloom: MakeKeyloom,
    make_provider: MakeProvider,
    fake_spec: ProviderSpec,
    fake_provider: Any,
    login: Login,
) -> None:
    spec = spec_for("deferring", fake_spec)

    class Deferring:
        @hookimpl
        def register_providers(self, register: Any) -> None:
            register(spec)

        @hookimpl
        async def exchange_code(self) -> None:
            return None

    keyloom = make_keyloom(make_provider(spec), plugins=[Deferring()])
    called = spy_on_builtin(keyloom, "exchange_code")
    async with keyloom:
        result = await login(keyloom, "deferring")
    assert called == ["exchange_code"]
    assert len(fake_provider.calls("/token")) == 1
    assert result.tokens.access_token


async def test_positional_only_hook_parameters_work(
    make_keyloom: MakeKeyloom, make_provider: MakeProvider, fake_spec: ProviderSpec, login: Login
) -> None:
    spec = spec_for("positional", fake_spec)

    class Positional:
        @hookimpl
        def register_providers(self, register: Any, /) -> None:
            register(spec)

        @hookimpl
        async def exchange_code(self, code: str, /) -> TokenSet:
            return TokenSet(access_token=f"pos-{code[:9]}", scopes=frozenset({"profile"}))

        @hookimpl
        async def fetch_profile(self, provider: Provider, tokens: TokenSet, /) -> Profile:
            return Profile(provider_id=provider.id, id="pos-user", name=tokens.access_token)

    async with make_keyloom(make_provider(spec), plugins=[Positional()]) as keyloom:
        result = await login(keyloom, "positional")
    assert result.tokens.access_token.startswith("pos-code-")
    assert result.profile.id == "pos-user"


def spy_on_builtin(keyloom: Keyloom, *hooks: str) -> list[str]:
    """The names of the built-in implementations of *hooks* as they get called, in order.

    Installed before the first call, since the core caches the implementations.
    """
    called: list[str] = []
    for hook in hooks:
        for impl in getattr(keyloom.registry.pm.hook, hook).get_hookimpls():
            if impl.plugin_name == "keyloom_core.oauth2":
                impl.function = _recording(impl.function, called)
    return called


def _recording(function: Any, called: list[str]) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        called.append(function.__name__)
        return function(*args, **kwargs)

    return wrapper


async def test_provider_hooks_cannot_be_wrappers(make_keyloom: MakeKeyloom) -> None:
    class Wrapping:
        @hookimpl(wrapper=True)
        def exchange_code(self) -> Any:
            return (yield)

    with pytest.raises(PluginError, match="provider hook 'exchange_code' cannot be a wrapper"):
        make_keyloom(plugins=[Wrapping()])


async def test_vetoed_broadcast_closes_the_remaining_coroutines(
    make_keyloom: MakeKeyloom, login: Login
) -> None:
    class Watcher:
        def __init__(self) -> None:
            self.seen = 0

        @hookimpl
        async def login_succeeded(self) -> None:
            self.seen += 1

    class Veto:
        @hookimpl
        async def login_succeeded(self) -> None:
            raise AccessDeniedError("no")

    watcher = Watcher()
    keyloom = make_keyloom(plugins=[watcher, Veto()])  # Veto, registered last, runs first
    coroutines = trace_coroutines(keyloom)
    async with keyloom:
        with pytest.raises(AccessDeniedError):
            await login(keyloom)
    assert watcher.seen == 0
    assert coroutines
    assert {inspect.getcoroutinestate(c) for c in coroutines} == {inspect.CORO_CLOSED}


async def test_plugin_crash_is_a_plugin_error(
    make_keyloom: MakeKeyloom, make_provider: MakeProvider, fake_spec: ProviderSpec, login: Login
) -> None:
    spec = spec_for("crashy", fake_spec)

    class Crashy:
        @hookimpl
        def register_providers(self, register: Any) -> None:
            register(spec)

        @hookimpl
        async def exchange_code(self) -> None:
            raise ZeroDivisionError

    async with make_keyloom(make_provider(spec), plugins=[Crashy()]) as keyloom:
        with pytest.raises(PluginError, match="'Crashy' failed in hook 'exchange_code'") as info:
            await login(keyloom, "crashy")
    assert info.value.plugin == "Crashy"
    assert info.value.provider_id == "crashy"
    assert isinstance(info.value.__cause__, ZeroDivisionError)


@pytest.mark.parametrize(
    ("hook", "answer"),
    [
        ("authorize_params", ["not", "a", "mapping"]),
        ("exchange_code", {"access_token": "a dict, not a TokenSet"}),
        ("fetch_profile", {"id": "a dict, not a Profile"}),
    ],
)
async def test_wrong_return_type_is_a_plugin_error(
    make_keyloom: MakeKeyloom,
    make_provider: MakeProvider,
    fake_spec: ProviderSpec,
    login: Login,
    hook: str,
    answer: object,
) -> None:
    spec = spec_for("sloppy", fake_spec)

    class Sloppy:
        @hookimpl
        def register_providers(self, register: Any) -> None:
            register(spec)

    async def impl(provider: Provider) -> object:
        return answer

    setattr(Sloppy, hook, hookimpl(impl))
    async with make_keyloom(make_provider(spec), plugins=[Sloppy()]) as keyloom:
        with pytest.raises(PluginError, match=hook) as info:
            await login(keyloom, "sloppy")
    assert info.value.plugin == "Sloppy"

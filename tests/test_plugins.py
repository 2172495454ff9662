"""Plugins: entry-point discovery, contract checks, provider ownership and coroutine hygiene.

The discovery tests use the distributions in ``tests/fixtures`` (see the ``fixture_plugins``
fixture): ``keyloom-testplugin`` (provider ``testprov``), ``keyloom-brokenplugin`` (fails to
import) and ``keyloom-dupplugin`` (claims ``testprov`` again). Because the last two make
every autoload fail, each test here runs with ``KEYLOOM_DISABLE_PLUGIN_AUTOLOAD=1`` unless it
passes ``autoload=True`` on purpose.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any

import attrs
import pytest

from keyloom_core import (
    AccessDeniedError,
    Keyloom,
    LoginResult,
    PluginError,
    Profile,
    Provider,
    ProviderSpec,
    TokenSet,
    UnknownProviderError,
    define_keyloom,
    hookimpl,
)
from keyloom_core._plugins import DISABLE_AUTOLOAD_ENV, PluginRegistry

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


@pytest.mark.usefixtures("fixture_plugins")
def test_entry_point_discovery_lists_broken_and_duplicate_plugins() -> None:
    registry = PluginRegistry(autoload=True, strict=False)

    assert "testprov" in registry.providers
    claimant = registry.providers["testprov"].plugin
    assert claimant.entry_point in {"testprov = keyloom_testplugin", "dup = keyloom_dupplugin"}
    assert registry.owner("testprov") is claimant.plugin

    broken = {b.entry_point: b for b in registry.broken}
    failed = broken["broken = keyloom_brokenplugin"]
    assert failed.distribution == "keyloom-brokenplugin 0.1.0"
    assert failed.error.plugin == "broken"
    assert failed.error.distribution == "keyloom-brokenplugin 0.1.0"
    assert "broken = keyloom_brokenplugin" in str(failed.error)
    assert "keyloom-brokenplugin" in str(failed.error)
    assert "ImportError" in str(failed.error)

    # whichever of the two claimants loads second is refused, naming both
    [dup] = [b for b in registry.broken if b.error.provider_id == "testprov"]
    assert dup.entry_point != claimant.entry_point
    assert "keyloom-testplugin 0.1.0" in str(dup.error)
    assert "keyloom-dupplugin 0.1.0" in str(dup.error)
    assert "'testprov'" in str(dup.error)

    # the refused plugins' hooks are not left registered
    for entry in registry.broken:
        assert registry.pm.get_plugin(entry.entry_point.partition(" = ")[0]) is None


@pytest.mark.usefixtures("fixture_plugins")
def test_refused_plugins_are_not_listed_as_loaded() -> None:
    registry = PluginRegistry(autoload=True, strict=False)
    refused = {entry.entry_point.partition(" = ")[0] for entry in registry.broken}
    assert refused
    assert refused.isdisjoint(registry.infos)


@pytest.mark.usefixtures("fixture_plugins")
def test_strict_discovery_raises_naming_the_distribution_and_entry_point() -> None:
    with pytest.raises(PluginError) as info:
        PluginRegistry(autoload=True)
    error = info.value
    assert error.distribution in {"keyloom-brokenplugin 0.1.0", "keyloom-dupplugin 0.1.0"}
    assert error.distribution in str(error)
    assert error.plugin in {"broken", "dup"}
    assert f"'{error.plugin} = " in str(error)


@pytest.mark.usefixtures("fixture_plugins")
def test_broken_plugin_stops_define_keyloom(fake_spec: ProviderSpec) -> None:
    with pytest.raises(PluginError, match=r"keyloom-(broken|dup)plugin"):
        define_keyloom(
            providers=["testprov"], autoload=True, secret="s" * 32, base_url="http://localhost"
        )


@pytest.mark.usefixtures("fixture_plugins")
@pytest.mark.parametrize("value", ["1", "true", "YES", " on "])
def test_disable_switch(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(DISABLE_AUTOLOAD_ENV, value)
    registry = PluginRegistry()  # would raise if the broken plugins were loaded
    assert registry.providers == {}
    assert registry.broken == []
    assert set(registry.infos) == {"keyloom_core.oauth2", "keyloom_core._policy"}


@pytest.mark.usefixtures("fixture_plugins")
@pytest.mark.parametrize("value", [None, "", "0", "no"])
def test_autoload_is_on_unless_disabled(monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    if value is None:
        monkeypatch.delenv(DISABLE_AUTOLOAD_ENV)
    else:
        monkeypatch.setenv(DISABLE_AUTOLOAD_ENV, value)
    assert "testprov" in PluginRegistry(strict=False).providers


@pytest.mark.usefixtures("fixture_plugins")
def test_explicit_autoload_overrides_the_switch() -> None:
    assert "testprov" in PluginRegistry(autoload=True, strict=False).providers
    assert "testprov" not in PluginRegistry(autoload=False).providers


# -- explicit plugins --------------------------------------------------------------------


def test_explicit_plugin_module(testplugin: ModuleType) -> None:
    registry = PluginRegistry([testplugin], autoload=False)
    registered = registry.providers["testprov"]
    assert registered.spec is testplugin.SPEC
    assert registered.plugin.name == "keyloom_testplugin"
    assert registered.plugin.entry_point is None
    assert registry.owner("testprov") is testplugin
    registry.add(testplugin)  # a second registration is a no-op
    assert list(registry.providers) == ["testprov"]


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


@pytest.mark.parametrize(
    ("plugin", "message"),
    [
        pytest.param(Misspelled(), "unknown hook 'exchange_cod'", id="Misspelled"),
        pytest.param(MisspelledSync(), "unknown hook 'register_provider'", id="MisspelledSync"),
        pytest.param(
            SyncImplOfAsyncHook(), "'exchange_code' must be a 'async def'", id="SyncImplOfAsyncHook"
        ),
        pytest.param(
            AsyncImplOfSyncHook(), "'validate_scopes' must be a 'def'", id="AsyncImplOfSyncHook"
        ),
        pytest.param(AsyncRegister(), "'register_providers' must be a 'def'", id="AsyncRegister"),
        pytest.param(UnknownArgument(), "session", id="UnknownArgument"),
    ],
)
def test_contract_violations_are_plugin_errors(plugin: object, message: str) -> None:
    name = type(plugin).__name__
    with pytest.raises(PluginError, match=message) as info:
        PluginRegistry([plugin], autoload=False)
    assert info.value.plugin == name
    assert f"plugin '{name}'" in str(info.value)

    registry = PluginRegistry(autoload=False)
    with pytest.raises(PluginError):
        registry.add(plugin)
    assert not registry.pm.is_registered(plugin)
    assert name not in registry.infos


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

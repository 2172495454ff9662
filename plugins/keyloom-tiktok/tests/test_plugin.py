"""The TikTok plugin's configuration: environment, scope policy, spec, and its core boundary."""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import json
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import keyloom_tiktok
import pytest
from keyloom_tiktok import SCOPE_PRODUCTS, SCOPES, SCOPES_WITHOUT_REVIEW, SPEC, tiktok
from keyloom_tiktok.emulator import KNOWN_SCOPES

from keyloom_core import ConfigurationError, Keyloom, Provider, define_keyloom

PLUGIN_ROOT = Path(keyloom_tiktok.__file__).resolve().parent.parent
PLUGIN_SOURCE = Path(keyloom_tiktok.__file__).resolve()
PUBLIC_CORE_MODULES = frozenset(
    {"keyloom_core", "keyloom_core.oauth2", "keyloom_core.hookspecs", "keyloom_core.models"}
)
SECRET = "tiktok-plugin-tests-signing-secret-0123456789"
BASE_URL = "http://127.0.0.1:8000"
BASIC, PROFILE, STATS = "user.info.basic", "user.info.profile", "user.info.stats"


def make(*providers: Provider | str, **options: Any) -> Keyloom:
    options.setdefault("autoload", False)
    return define_keyloom(providers=list(providers), secret=SECRET, base_url=BASE_URL, **options)


def configured(**options: Any) -> Provider:
    options.setdefault("client_id", "awclientkey")
    options.setdefault("client_secret", "client-secret-value-123")
    return tiktok(**options)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("TIKTOK_CLIENT_ID", "TIKTOK_CLIENT_SECRET", "KEYLOOM_DISABLE_PLUGIN_AUTOLOAD"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


# -- the plugin touches only the core's public API ---------------------------------------------


def _core_imports(tree: ast.AST) -> list[tuple[str, str | None, int]]:
    """``(module, name, line)`` of every import from ``keyloom_core``."""
    found: list[tuple[str, str | None, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] == "keyloom_core":
                found.extend((node.module, alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.Import):
            found.extend(
                (alias.name, None, node.lineno)
                for alias in node.names
                if alias.name.split(".")[0] == "keyloom_core"
            )
    return found


def test_plugin_imports_only_public_core_names() -> None:
    tree = ast.parse(PLUGIN_SOURCE.read_text(encoding="utf-8"), filename=str(PLUGIN_SOURCE))
    imports = _core_imports(tree)
    assert imports, "the plugin should build on keyloom_core"
    for module, name, line in imports:
        assert module in PUBLIC_CORE_MODULES, f"line {line}: imports from {module}"
        assert not any(part.startswith("_") for part in module.split(".")), f"line {line}"
        assert name is not None, f"line {line}: 'import {module}' (use from-imports of names)"
        assert not name.startswith("_"), f"line {line}: imports private {module}.{name}"
        assert hasattr(importlib.import_module(module), name), f"line {line}: {module}.{name}"


def test_plugin_reads_no_private_attributes() -> None:
    tree = ast.parse(PLUGIN_SOURCE.read_text(encoding="utf-8"), filename=str(PLUGIN_SOURCE))
    private = [
        (node.attr, node.lineno)
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not (node.attr.startswith("__") and node.attr.endswith("__"))
    ]
    assert private == []
    dynamic = [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in {"getattr", "__import__", "setattr"}
    ]
    assert dynamic == []


def test_the_plugin_is_declared_as_a_keyloom_entry_point() -> None:
    pyproject = tomllib.loads((PLUGIN_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["entry-points"]["keyloom"] == {"tiktok": "keyloom_tiktok"}
    assert SPEC.plugin == "keyloom_tiktok"
    assert SPEC.emulator == "keyloom_tiktok.emulator:TikTokEmulator"


# -- the provider spec -------------------------------------------------------------------------


def test_spec_speaks_tiktoks_dialect() -> None:
    assert SPEC.id == "tiktok"
    assert SPEC.client_id_param == "client_key"
    assert SPEC.scope_separator == ","
    assert SPEC.pkce_encoding == "hex"
    assert SPEC.env_prefix == "TIKTOK"
    assert SPEC.default_scopes == {BASIC}
    assert SPEC.known_scopes == frozenset(SCOPES)
    assert SPEC.authorize_url == "https://www.tiktok.com/v2/auth/authorize/"
    assert SPEC.token_url == "https://open.tiktokapis.com/v2/oauth/token/"
    assert SPEC.profile_url == "https://open.tiktokapis.com/v2/user/info/"
    assert SPEC.revoke_url == "https://open.tiktokapis.com/v2/oauth/revoke/"


def test_endpoint_origin_moves_every_endpoint() -> None:
    spec = configured(endpoint_origin="http://127.0.0.1:9999").spec
    assert spec.authorize_url == "http://127.0.0.1:9999/v2/auth/authorize/"
    assert spec.token_url == "http://127.0.0.1:9999/v2/oauth/token/"
    assert spec.profile_url == "http://127.0.0.1:9999/v2/user/info/"
    assert spec.revoke_url == "http://127.0.0.1:9999/v2/oauth/revoke/"
    assert SPEC.token_url.startswith("https://open.tiktokapis.com/")  # the shared spec is intact


def test_factory_defaults() -> None:
    provider = configured()
    assert provider.scopes == {BASIC}
    assert provider.required_scopes == {BASIC}
    assert provider.optional_scopes == frozenset()
    assert provider.spec.pkce_encoding == "hex"
    assert provider.options["disable_auto_auth"] is False
    assert "client-secret-value-123" not in repr(provider)
    widened = configured(scopes=[BASIC, PROFILE])
    assert widened.required_scopes == {BASIC}
    assert widened.optional_scopes == {PROFILE}
    assert configured(pkce_encoding="base64url").spec.pkce_encoding == "base64url"


# -- configuration from the environment --------------------------------------------------------


@pytest.mark.anyio
async def test_env_credentials_configure_the_provider_by_id(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("TIKTOK_CLIENT_ID", "awenvclientkey")
    clean_env.setenv("TIKTOK_CLIENT_SECRET", "env-client-secret-0042")
    keyloom = make("tiktok", plugins=[keyloom_tiktok])
    provider = keyloom.provider("tiktok")
    assert provider.client_id == "awenvclientkey"
    assert provider.client_secret == "env-client-secret-0042"
    assert provider.scopes == {BASIC}
    assert provider.required_scopes == {BASIC}
    assert provider.spec.authorize_url == SPEC.authorize_url
    async with keyloom:
        start = await keyloom.begin_login("tiktok")
    params = parse_qs(urlsplit(start.url).query)
    assert start.url.startswith("https://www.tiktok.com/v2/auth/authorize/?")
    assert params["client_key"] == ["awenvclientkey"]
    assert params["redirect_uri"] == [f"{BASE_URL}/api/auth/oauth/tiktok/callback"]
    assert "env-client-secret-0042" not in start.url


def _tiktok_entry_point_installed() -> bool:
    return any(
        ep.name == "tiktok" and ep.value == "keyloom_tiktok"
        for ep in importlib.metadata.entry_points(group="keyloom")
    )


def _failing_fixture_plugins() -> list[str]:
    """Test distributions of the core's suite that make autoloading fail on purpose."""
    return sorted(
        ep.dist.name
        for ep in importlib.metadata.entry_points(group="keyloom")
        if ep.dist is not None and ep.dist.name in {"keyloom-brokenplugin", "keyloom-dupplugin"}
    )


def test_env_credentials_with_entry_point_autoload(clean_env: pytest.MonkeyPatch) -> None:
    if not _tiktok_entry_point_installed():
        pytest.skip("keyloom-tiktok is not installed (pip install -e plugins/keyloom-tiktok)")
    if broken := _failing_fixture_plugins():
        pytest.skip(f"autoload fails on purpose here: {', '.join(broken)} installed")
    clean_env.setenv("TIKTOK_CLIENT_ID", "awautoloaded")
    clean_env.setenv("TIKTOK_CLIENT_SECRET", "autoloaded-secret-0042")
    keyloom = make("tiktok", autoload=True)
    provider = keyloom.provider("tiktok")
    assert provider.client_id == "awautoloaded"
    assert provider.spec.client_id_param == "client_key"


@pytest.mark.parametrize("missing", ["TIKTOK_CLIENT_ID", "TIKTOK_CLIENT_SECRET"])
@pytest.mark.parametrize("how", ["unset", "blank"])
def test_a_missing_env_credential_is_named(
    clean_env: pytest.MonkeyPatch, missing: str, how: str
) -> None:
    clean_env.setenv("TIKTOK_CLIENT_ID", "awenvclientkey")
    clean_env.setenv("TIKTOK_CLIENT_SECRET", "env-client-secret-0042")
    if how == "unset":
        clean_env.delenv(missing)
    else:
        clean_env.setenv(missing, "   ")
    with pytest.raises(ConfigurationError, match=missing) as info:
        make("tiktok", plugins=[keyloom_tiktok])
    assert info.value.provider_id == "tiktok"
    assert "env-client-secret-0042" not in str(info.value)
    with pytest.raises(ConfigurationError, match=missing):
        tiktok()


def test_explicit_credentials_win_over_the_environment(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("TIKTOK_CLIENT_ID", "awenvclientkey")
    clean_env.setenv("TIKTOK_CLIENT_SECRET", "env-client-secret-0042")
    provider = tiktok(client_id="awexplicit", client_secret="explicit-secret-0042")
    assert provider.client_id == "awexplicit"
    assert provider.client_secret == "explicit-secret-0042"
    partly = tiktok(client_id="awexplicit")
    assert partly.client_secret == "env-client-secret-0042"


# -- scope policy ------------------------------------------------------------------------------


@pytest.mark.parametrize("unknown", ["user.info.email", "user.info.username", "user_info"])
def test_an_unknown_scope_is_refused_at_define_time(unknown: str) -> None:
    provider = configured(scopes=[BASIC, unknown])
    with pytest.raises(ConfigurationError, match=unknown) as info:
        make(provider)
    assert info.value.provider_id == "tiktok"


def test_the_scope_list_follows_tiktoks_scopes_reference() -> None:
    """§A12: TikTok's documented scopes, Direct Post and the review-free one included."""
    assert SCOPES[:6] == (
        BASIC,
        PROFILE,
        STATS,
        "video.list",
        "video.upload",
        "video.publish",
    )
    for prefix, count in [("portability.", 8), ("research.", 4), ("local.", 3), ("minis.", 1)]:
        assert sum(scope.startswith(prefix) for scope in SCOPES) == count, prefix
    assert len(SCOPES) == 22
    assert SCOPE_PRODUCTS["video.publish"].startswith("Content Posting API")
    assert SCOPES_WITHOUT_REVIEW == (BASIC,)
    assert frozenset(SCOPES) == KNOWN_SCOPES  # the emulator knows the same list
    provider = configured(scopes=[BASIC, "video.upload", "video.publish"])
    assert make(provider).provider("tiktok").scopes == {BASIC, "video.upload", "video.publish"}


def test_keyloom_providers_shows_the_scope_list() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "keyloom_core.cli", "providers", "--json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    listed = next(p for p in json.loads(done.stdout)["providers"] if p["id"] == "tiktok")
    assert listed["known_scopes"] == sorted(SCOPES)
    assert "video.publish" in listed["known_scopes"]


def test_an_unapproved_scope_is_refused_and_points_at_app_review() -> None:
    provider = configured(scopes=[BASIC, PROFILE, STATS], approved_scopes=[BASIC, PROFILE])
    with pytest.raises(ConfigurationError) as info:
        make(provider)
    message = str(info.value)
    assert STATS in message
    assert PROFILE not in message
    assert "review" in message.lower()
    assert info.value.hint is not None
    assert "review" in info.value.hint.lower()


def test_approved_scopes_covering_the_request_are_accepted() -> None:
    provider = configured(scopes=[BASIC, PROFILE], approved_scopes=[BASIC, PROFILE, STATS])
    assert make(provider).provider("tiktok").approved_scopes == frozenset({BASIC, PROFILE, STATS})


def test_the_basic_scope_needs_no_review_approval() -> None:
    # TikTok grants user.info.basic with Login Kit: it is never submitted for review, so an
    # approved set listing what review approved must not be told that it needs review.
    provider = configured(scopes=[BASIC, PROFILE], approved_scopes=[PROFILE])
    keyloom = make(provider)
    assert keyloom.provider("tiktok").scopes == {BASIC, PROFILE}


@pytest.mark.parametrize(
    ("scopes", "required"),
    [([BASIC, PROFILE], [PROFILE]), ([PROFILE], [PROFILE]), ([BASIC, PROFILE], [])],
)
def test_the_basic_scope_must_be_requested_and_required(
    scopes: list[str], required: list[str]
) -> None:
    provider = configured(scopes=scopes, required_scopes=required)
    with pytest.raises(ConfigurationError, match=BASIC):
        make(provider)


def test_a_required_scope_must_be_requested() -> None:
    provider = configured(scopes=[BASIC], required_scopes=[BASIC, STATS])
    with pytest.raises(ConfigurationError, match=STATS):
        make(provider)

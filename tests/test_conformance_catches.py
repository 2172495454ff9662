"""The conformance kit catches broken provider plugins (and passes a sound one).

Each broken plugin below is the GitHub plugin's hooks under another provider id
(``brokenhub``) with one mistake a plugin author could make. The kit's check functions run
directly and must report the failure; the suite itself stays green.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import pytest

from keyloom_core import (
    AuthorizationRequest,
    HttpClient,
    Profile,
    Provider,
    ProviderSpec,
    TokenExchangeError,
    TokenSet,
    hookimpl,
)
from keyloom_core.oauth2 import client_credentials, default_authorize_params
from keyloom_core.testing.conformance import (
    CHECKS,
    ConformanceError,
    ConformanceTarget,
    run_check,
    run_conformance,
)

keyloom_github = pytest.importorskip("keyloom_github")

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[1]
SPEC = attrs.evolve(keyloom_github.SPEC, id="brokenhub", name="BrokenHub", plugin=None)
log = logging.getLogger("brokenhub")


class GitHubVariant:
    """The GitHub plugin's hooks, offered as the provider ``brokenhub``."""

    spec: ProviderSpec = SPEC
    fetch_profile = staticmethod(keyloom_github.fetch_profile)

    @hookimpl
    def register_providers(self, register: Callable[..., None]) -> None:
        register(self.spec, None)


class DropsState(GitHubVariant):
    @hookimpl
    async def authorize_params(
        self, provider: Provider, request: AuthorizationRequest
    ) -> Mapping[str, str]:
        params = default_authorize_params(provider, request)
        del params["state"]
        return params


class NoPkce(GitHubVariant):
    @hookimpl
    async def authorize_params(
        self, provider: Provider, request: AuthorizationRequest
    ) -> Mapping[str, str]:
        params = default_authorize_params(provider, request)
        del params["code_challenge"], params["code_challenge_method"]
        return params


class TrailingSlashRedirect(GitHubVariant):
    @hookimpl
    async def authorize_params(
        self, provider: Provider, request: AuthorizationRequest
    ) -> Mapping[str, str]:
        params = default_authorize_params(provider, request)
        params["redirect_uri"] += "/"
        return params


class ChecksOnlyTheStatus(GitHubVariant):
    """Trusts HTTP 200 at the token endpoint, where GitHub also sends its errors."""

    @hookimpl
    async def exchange_code(
        self, provider: Provider, code: str, redirect_uri: str, code_verifier: str, http: HttpClient
    ) -> TokenSet:
        form = {**client_credentials(provider), "code": code, "redirect_uri": redirect_uri}
        form["code_verifier"] = code_verifier
        response = await http.post_form(
            provider.spec.token_url, form, headers={"Accept": "application/json"}
        )
        if not response.ok:
            raise TokenExchangeError("exchange failed", provider_id=provider.id)
        return TokenSet.from_response(response.json_object())


class LoginAsId(GitHubVariant):
    """Uses the login (which users can rename) as the stable id."""

    @hookimpl
    async def fetch_profile(
        self, provider: Provider, tokens: TokenSet, http: HttpClient
    ) -> Profile:
        profile = await keyloom_github.fetch_profile(provider, tokens, http)
        return attrs.evolve(profile, id=str(profile.raw["login"]))


class PublicEmail(GitHubVariant):
    """Takes the profile's public e-mail, ignoring which scopes were granted."""

    @hookimpl
    async def fetch_profile(
        self, provider: Provider, tokens: TokenSet, http: HttpClient
    ) -> Profile:
        profile = await keyloom_github.fetch_profile(provider, tokens, http)
        email = profile.raw.get("email")
        return attrs.evolve(profile, email=email, email_verified=email is not None)


class AnyScope(GitHubVariant):
    spec = attrs.evolve(SPEC, known_scopes=())


class FakeRevoke(GitHubVariant):
    @hookimpl
    async def revoke_token(self, provider: Provider, tokens: TokenSet, http: HttpClient) -> bool:
        del provider, tokens, http
        return True


class LogsTheSecret(GitHubVariant):
    @hookimpl
    async def authorize_params(
        self, provider: Provider, request: AuthorizationRequest
    ) -> Mapping[str, str]:
        log.debug("building the URL for %s:%s", provider.client_id, provider.client_secret)
        return default_authorize_params(provider, request)


class CrashesOnBadJson(GitHubVariant):
    @hookimpl
    async def fetch_profile(
        self, provider: Provider, tokens: TokenSet, http: HttpClient
    ) -> Profile:
        response = await http.get(provider.spec.profile_url or "", bearer=tokens.access_token)
        user: dict[str, Any] = response.json_object()  # a ProviderError if not JSON...
        if not response.ok:
            raise KeyError("status")  # ...but a crash on any refusal
        return Profile(provider_id=provider.id, id=str(user["id"]), raw=user)


def target(plugin: GitHubVariant, **options: Any) -> ConformanceTarget:
    return ConformanceTarget(provider_id="brokenhub", plugin=plugin, **options)


async def assert_fails(plugin: GitHubVariant, check: str, match: str, **options: Any) -> None:
    with pytest.raises(ConformanceError, match=match) as caught:
        await run_check(target(plugin, **options), check)
    assert caught.value.check == check


# -- a sound plugin passes ------------------------------------------------------------------


def test_the_sound_variant_passes_every_check_but_discovery() -> None:
    report = run_conformance(target(GitHubVariant()))
    assert report.failures.keys() == {"discoverable"}, str(report)
    assert "no installed distribution offers 'brokenhub'" in report.failures["discoverable"]
    assert "✗ discoverable" in str(report)
    assert "✓ authorize_url" in str(report)


def test_expiring_tokens_are_refreshed_and_rotated() -> None:
    report = run_conformance(
        target(GitHubVariant(), emulator_options={"expiring_tokens": True}), ["refresh"]
    )
    assert report.ok, str(report)


# -- broken plugins fail ------------------------------------------------------------------


async def test_a_url_without_state_is_caught() -> None:
    await assert_fails(DropsState(), "authorize_url", "has no state")


async def test_a_url_without_pkce_is_caught() -> None:
    await assert_fails(NoPkce(), "authorize_url", "has no code_challenge")


async def test_a_changed_redirect_uri_is_caught() -> None:
    await assert_fails(TrailingSlashRedirect(), "authorize_url", "redirect_uri is")
    # GitHub accepts a subdirectory of the callback URL, so the browser lands elsewhere
    await assert_fails(TrailingSlashRedirect(), "code_exchange", "emulator redirected to")


async def test_errors_sent_with_http_200_are_caught() -> None:
    await assert_fails(ChecksOnlyTheStatus(), "wrong_secret", "raised PluginError")
    await assert_fails(ChecksOnlyTheStatus(), "replayed_code", "raised PluginError")


async def test_an_unstable_profile_id_is_caught() -> None:
    await assert_fails(
        LoginAsId(), "profile", "profile's id is 'keyloom-octocat', expected '1000001'"
    )


async def test_an_email_without_its_scope_is_caught() -> None:
    await assert_fails(
        PublicEmail(),
        "profile",
        "profile's email is 'octocat@users.example.test', expected None",
        scopes=["read:user"],
    )


async def test_accepting_any_scope_is_caught() -> None:
    await assert_fails(AnyScope(), "scope_policy", "known_scopes is empty")


async def test_a_revoke_that_does_nothing_is_caught() -> None:
    await assert_fails(FakeRevoke(), "revoke", "still works")


async def test_a_logged_secret_is_caught() -> None:
    await assert_fails(LogsTheSecret(), "secrets_hidden", "client secret appears")


async def test_a_plugin_crash_on_a_provider_failure_is_caught() -> None:
    await assert_fails(CrashesOnBadJson(), "revoke", "plugin failed")


async def test_a_missing_emulator_is_reported() -> None:
    class NoEmulator(GitHubVariant):
        spec = attrs.evolve(SPEC, emulator=None)

    await assert_fails(NoEmulator(), "code_exchange", "ProviderSpec.emulator is not set")


def test_unknown_check_names_are_refused() -> None:
    with pytest.raises(KeyError, match="nope"):
        run_conformance(target(GitHubVariant()), ["nope"])
    assert next(iter(CHECKS)) == "discoverable"
    assert all(check.description for check in CHECKS.values())


# -- the pytest plugin ----------------------------------------------------------------------


def _env() -> dict[str, str]:
    paths = [str(ROOT), str(ROOT / "plugins" / "keyloom-github"), *sys.path]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}


def test_the_pytest_plugin_is_inert_on_import() -> None:
    code = (
        "import sys, keyloom_core.testing.pytest_plugin as p\n"
        "heavy = {'aiohttp', 'keyloom_core.testing.emulator', 'keyloom_core.testing.conformance'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=_env(), capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_the_pytest_plugin_fixtures(tmp_path: Path) -> None:
    (tmp_path / "test_uses_fixtures.py").write_text(
        textwrap.dedent(
            """
            import anyio


            def test_conformance(keyloom_conformance):
                report = keyloom_conformance("github", ["authorize_url", "profile"])
                assert report.ok, str(report)


            def test_emulator(keyloom_emulator):
                async def main():
                    async with keyloom_emulator("github", consent="deny") as emulator:
                        assert emulator.url.startswith("http://127.0.0.1:")
                        assert emulator.consent == "deny"

                anyio.run(main, backend="asyncio")
            """
        )
    )
    installed = any(
        ep.value == "keyloom_core.testing.pytest_plugin"
        for ep in importlib.metadata.entry_points(group="pytest11")
    )  # then pytest loads it through the entry point; otherwise name it
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    if not installed:
        command += ["-p", "keyloom_core.testing.pytest_plugin"]
    command += ["--rootdir", str(tmp_path), str(tmp_path)]
    out = subprocess.run(
        command, env=_env(), capture_output=True, text=True, cwd=tmp_path, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 passed" in out.stdout

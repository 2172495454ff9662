"""The ``keyloom providers``, ``keyloom doctor`` and ``keyloom login`` commands."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import anyio
import pytest

from keyloom_core import _plugins
from keyloom_core.cli import main

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_DIRS = [ROOT / "plugins" / "keyloom-tiktok", ROOT / "plugins" / "keyloom-github"]
FIXTURE_DISTS = {
    "keyloom-brokenplugin",
    "keyloom-dupplugin",
    "keyloom-misspelledplugin",
    "keyloom-testplugin",
}
GOOD_SECRET = "Qm9vdHN0cmFwLXRoZS1rZXlsb29tLWRvY3Rvci0yMDI2"
CLIENT_SECRET = "tiktok-client-secret-never-printed-7f3a"
ENV_PREFIXES = ("KEYLOOM_", "APP_URL", "TIKTOK_", "GITHUB_", "TESTPROV_")


def subprocess_env(*extra: str) -> dict[str, str]:
    paths = [*extra, str(ROOT), *map(str, PLUGIN_DIRS), *sys.path]
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIXES)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def keyloom(*args: str, extra_path: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keyloom_core.cli", *args],
        env={**subprocess_env(extra_path), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def require_installed(*dists: str) -> None:
    for dist in dists:
        try:
            importlib.metadata.distribution(dist)
        except importlib.metadata.PackageNotFoundError:
            pytest.skip(f"{dist} is not installed (pip install -e plugins/{dist})")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith(ENV_PREFIXES):
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.fixture
def real_plugins_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Entry-point discovery sees the real plugins only, not the test fixtures."""
    require_installed("keyloom-tiktok", "keyloom-github")
    found = _plugins._entry_points

    def entry_points() -> list[importlib.metadata.EntryPoint]:
        return [ep for ep in found() if ep.dist is None or ep.dist.name not in FIXTURE_DISTS]

    monkeypatch.setattr(_plugins, "_entry_points", entry_points)


@pytest.fixture
def fixture_site() -> str:
    """The folder holding the broken test plugin (nox installs it there), or skip."""
    site = os.environ.get("KEYLOOM_FIXTURE_PLUGINS", "")
    if site:
        return site
    try:
        importlib.metadata.distribution("keyloom-brokenplugin")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(
            "the test plugin keyloom-brokenplugin is not available: set KEYLOOM_FIXTURE_PLUGINS "
            "to the folder nox installs tests/fixtures/keyloom-* into, or pip install -e "
            "tests/fixtures/keyloom-brokenplugin"
        )
    return ""


def run_in_process(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().out


# -- keyloom providers ----------------------------------------------------------------------


def test_providers_lists_plugins_and_the_broken_one(fixture_site: str) -> None:
    require_installed("keyloom-tiktok", "keyloom-github")
    result = keyloom("providers", extra_path=fixture_site)
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert "tiktok  TikTok  (keyloom-tiktok 0.1.0)" in out
    assert "entry point:     tiktok = keyloom_tiktok" in out
    assert "default scopes:  user.info.basic" in out
    assert "video.list" in out
    assert "github  GitHub  (keyloom-github 0.1.0)" in out
    assert "default scopes:  read:user, user:email" in out
    assert "credentials:     GITHUB_CLIENT_ID, GITHUB_CLIENT_SECRET" in out
    assert "Broken plugins (2)" in out
    assert "broken = keyloom_brokenplugin  (keyloom-brokenplugin 0.1.0)" in out
    assert "    failed to load: ImportError: keyloom_brokenplugin needs the module" in out
    assert "misspelled = keyloom_misspelledplugin  (keyloom-misspelledplugin 0.1.0)" in out
    assert "unknown hook 'fetch_profil' (did you mean 'fetch_profile'?)" in out
    assert "Apps that do not use their providers still start" in out
    assert "switch them off: KEYLOOM_DISABLE_PLUGINS=broken,misspelled" in out
    assert "Provider ids claimed twice (1)" in out
    assert (
        "testprov: claimed by dup (keyloom-dupplugin 0.1.0) and testprov "
        "(keyloom-testplugin 0.1.0); neither is used"
    ) in out
    assert "    Pick one: KEYLOOM_DISABLE_PLUGINS=testprov keeps 'dup'; KEYLOOM_DISABLE_PLUGINS=dup" in out
    assert "testprov  TestProv" not in out


def test_providers_json(fixture_site: str) -> None:
    require_installed("keyloom-tiktok")
    result = keyloom("providers", "--json", extra_path=fixture_site)
    assert result.returncode == 1
    data = json.loads(result.stdout)
    tiktok = next(p for p in data["providers"] if p["id"] == "tiktok")
    assert tiktok["distribution"] == "keyloom-tiktok"
    assert tiktok["version"] == "0.1.0"
    assert tiktok["entry_point"] == "tiktok = keyloom_tiktok"
    assert tiktok["default_scopes"] == ["user.info.basic"]
    assert "user.info.profile" in tiktok["known_scopes"]
    assert tiktok["emulator"] == "keyloom_tiktok.emulator:TikTokEmulator"
    broken = next(b for b in data["broken"] if b["distribution"] == "keyloom-brokenplugin")
    assert broken["entry_point"] == "broken = keyloom_brokenplugin"
    assert broken["name"] == "broken"
    assert "ImportError" in broken["error"]
    assert broken["reason"].startswith("failed to load: ImportError")
    misspelled = next(b for b in data["broken"] if b["name"] == "misspelled")
    assert misspelled["provider_ids"] == ["misspelled"]
    [conflict] = data["conflicts"]
    assert conflict["id"] == "testprov"
    assert [p["name"] for p in conflict["plugins"]] == ["dup", "testprov"]
    assert "KEYLOOM_DISABLE_PLUGINS=dup" in conflict["hint"]
    assert data["disabled"] == []
    assert data["warnings"] == []


def test_providers_lists_switched_off_plugins_and_why(fixture_site: str) -> None:
    require_installed("keyloom-tiktok")
    result = keyloom(
        "providers",
        extra_path=fixture_site,
        KEYLOOM_DISABLE_PLUGINS="broken,misspelled,dup,githb",
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "testprov  TestProv  (keyloom-testplugin 0.1.0)" in out
    assert "Broken" not in out
    assert "Switched off (3, not imported):" in out
    reason = "KEYLOOM_DISABLE_PLUGINS=broken,misspelled,dup,githb"
    assert f"  broken = keyloom_brokenplugin  (keyloom-brokenplugin 0.1.0): {reason}" in out
    assert f"  dup = keyloom_dupplugin  (keyloom-dupplugin 0.1.0): {reason}" in out
    assert (
        "Note: KEYLOOM_DISABLE_PLUGINS names 'githb', which no installed plugin is "
        "(did you mean 'github'?)."
    ) in out

    result = keyloom("providers", "--json", extra_path=fixture_site, KEYLOOM_LOAD_PLUGINS="tiktok")
    data = json.loads(result.stdout)
    assert [p["id"] for p in data["providers"]] == ["tiktok"]
    off = {d["name"]: d["reason"] for d in data["disabled"]}
    assert off["testprov"] == "not in KEYLOOM_LOAD_PLUGINS=tiktok"
    assert off["broken"] == "not in KEYLOOM_LOAD_PLUGINS=tiktok"
    assert data["broken"] == []
    assert result.returncode == 0


def test_providers_exits_0_when_every_plugin_loads(
    real_plugins_only: None, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run_in_process(capsys, "providers")
    assert code == 0
    assert "tiktok  TikTok" in out
    assert "Broken" not in out


def test_providers_and_doctor_do_not_import_aiohttp() -> None:
    code = (
        "import sys\n"
        "from keyloom_core.cli import main\n"
        "main(['providers', '--json']); main(['doctor'])\n"
        "sys.stderr.write('AIOHTTP=%s' % ('aiohttp' in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "AIOHTTP=False" in result.stderr, result.stderr


# -- keyloom doctor -------------------------------------------------------------------------


@pytest.fixture
def good_env(clean_env: pytest.MonkeyPatch, real_plugins_only: None) -> pytest.MonkeyPatch:
    clean_env.setenv("KEYLOOM_SECRET", GOOD_SECRET)
    clean_env.setenv("KEYLOOM_URL", "https://app.example.com")
    clean_env.setenv("TIKTOK_CLIENT_ID", "awclientkey")
    clean_env.setenv("TIKTOK_CLIENT_SECRET", CLIENT_SECRET)
    clean_env.setenv("TIKTOK_SCOPES", "user.info.basic,user.info.profile")
    clean_env.setenv("TIKTOK_APPROVED_SCOPES", "user.info.basic,user.info.profile,video.list")
    clean_env.setenv("KEYLOOM_STORE", "redis://127.0.0.1:6379/0")
    return clean_env


def test_doctor_passes_a_good_configuration(
    good_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run_in_process(capsys, "doctor")
    assert code == 0, out
    assert f"✓ KEYLOOM_SECRET is set ({len(GOOD_SECRET)} characters)" in out
    assert "✓ KEYLOOM_URL = https://app.example.com" in out
    assert "✓ credentials: TIKTOK_CLIENT_ID, TIKTOK_CLIENT_SECRET are set" in out
    assert "✓ scopes (TIKTOK_SCOPES): user.info.basic, user.info.profile; known and approved" in out
    assert "✓ redirect URI https://app.example.com/api/auth/oauth/tiktok/callback" in out
    assert "✗" not in out
    assert "No problems" in out
    assert GOOD_SECRET not in out
    assert CLIENT_SECRET not in out


def test_doctor_checks_the_providers_asked_for(
    good_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    good_env.setenv("GITHUB_CLIENT_ID", "Ov23li")
    good_env.setenv("GITHUB_CLIENT_SECRET", "gh-secret-value")
    code, out = run_in_process(capsys, "doctor", "--provider", "github")
    assert code == 0, out
    assert "Provider github (keyloom-github 0.1.0)" in out
    assert "Provider tiktok" not in out
    assert "✓ scopes (default): read:user, user:email" in out


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://app.example.com", "base_url must use https outside localhost"),
        ("https://app.example.com/?next=1", "base_url must not have a query or fragment"),
        ("app.example.com", "base_url must be an absolute http(s) URL"),
    ],
)
def test_doctor_refuses_a_bad_app_url(
    good_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], url: str, problem: str
) -> None:
    good_env.setenv("KEYLOOM_URL", url)
    code, out = run_in_process(capsys, "doctor")
    assert code == 1
    assert f"✗ KEYLOOM_URL: {problem}" in out
    assert "✗ redirect URI: unknown until the app URL is fixed" in out
    assert "fix:" in out


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        ("http://app.example.com/cb", "uses http outside localhost"),
        ("https://app.example.com/cb?next=/home", "has a query or fragment"),
        ("https://app.example.com/cb#top", "has a query or fragment"),
        ("https://app.example.com/" + "x" * 520, "characters long"),
    ],
)
def test_doctor_refuses_a_bad_redirect_uri(
    good_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], uri: str, problem: str
) -> None:
    code, out = run_in_process(capsys, "doctor", "--redirect-uri", uri)
    assert code == 1, out
    assert problem in out
    assert "fix: The redirect URI must match a registered one byte for byte" in out


def test_doctor_warns_about_a_trailing_slash_and_local_http(
    good_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    good_env.setenv("KEYLOOM_URL", "http://127.0.0.1:8000")
    code, out = run_in_process(capsys, "doctor", "--redirect-uri", "http://127.0.0.1:8000/cb/")
    assert code == 0, out
    assert "! the redirect URI ends with a slash" in out
    assert "! the app URL uses http" in out
    assert "2 warning(s)" in out


def test_doctor_says_that_without_a_store_state_is_per_process(
    good_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    good_env.delenv("KEYLOOM_STORE")
    code, out = run_in_process(capsys, "doctor")
    assert code == 0, out
    assert "! no store (KEYLOOM_STORE): used login states are remembered per process" in out
    good_env.setenv("KEYLOOM_STORE", "sqlite:///var/lib/app/keyloom.db")
    code, out = run_in_process(capsys, "doctor")
    assert "✓ SQLite store: shared by the processes of this host" in out
    good_env.setenv("KEYLOOM_STORE", "postgres://db")
    code, out = run_in_process(capsys, "doctor")
    assert code == 1
    assert "KEYLOOM_STORE must start with" in out


@pytest.mark.parametrize(
    ("secret", "problem"),
    [
        (None, "KEYLOOM_SECRET: no secret"),
        ("too-short-3f9a", "KEYLOOM_SECRET: the secret must be at least 32 characters"),
        ("changeme-changeme-changeme-changeme", "looks like a placeholder"),
        ("a" * 48, "too predictable"),
        ("abcdefghijklmnopqrstuvwxyz0123456789", "too predictable"),
    ],
)
def test_doctor_refuses_a_weak_secret(
    good_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    secret: str | None,
    problem: str,
) -> None:
    if secret is None:
        good_env.delenv("KEYLOOM_SECRET")
    else:
        good_env.setenv("KEYLOOM_SECRET", secret)
    code, out = run_in_process(capsys, "doctor")
    assert code == 1
    assert f"✗ {problem}" in out or problem in out
    assert "fix: " in out
    assert "secrets.token_urlsafe(32)" in out
    if secret:
        assert secret not in out


def test_doctor_reports_missing_credentials(
    good_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    good_env.delenv("TIKTOK_CLIENT_SECRET")
    code, out = run_in_process(capsys, "doctor")
    assert code == 1
    assert "✗ credentials: TIKTOK_CLIENT_SECRET not set" in out
    assert "fix: set TIKTOK_CLIENT_SECRET (from the TikTok developer portal)" in out


def test_doctor_needs_a_provider(
    good_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("TIKTOK_CLIENT_ID", "TIKTOK_CLIENT_SECRET"):
        good_env.delenv(name)
    code, out = run_in_process(capsys, "doctor")
    assert code == 1
    assert "✗ no provider has credentials" in out
    assert "TIKTOK_CLIENT_ID / _CLIENT_SECRET for tiktok" in out
    code, out = run_in_process(capsys, "doctor", "--provider", "nope")
    assert code == 1
    assert "✗ no installed plugin offers 'nope'" in out


@pytest.mark.parametrize(
    ("scopes", "approved", "problem"),
    [
        ("user.info.basic,user.info.email", None, "unknown TikTok scope(s): user.info.email"),
        ("user.info.basic,user.info.stats", "user.info.basic", "user.info.stats need TikTok"),
        ("user.info.profile", None, "needs the 'user.info.basic' scope"),
    ],
)
def test_doctor_checks_scopes_with_the_plugins_policy(
    good_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    scopes: str,
    approved: str | None,
    problem: str,
) -> None:
    good_env.setenv("TIKTOK_SCOPES", scopes)
    if approved is None:
        good_env.delenv("TIKTOK_APPROVED_SCOPES")
    else:
        good_env.setenv("TIKTOK_APPROVED_SCOPES", approved)
    code, out = run_in_process(capsys, "doctor")
    assert code == 1, out
    assert problem in out
    assert "fix:" in out


def test_doctor_flags_a_broken_plugin(
    fixture_plugins: None, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in {
        "KEYLOOM_SECRET": GOOD_SECRET,
        "KEYLOOM_URL": "https://app.example.com",
        "TESTPROV_CLIENT_ID": "id",
        "TESTPROV_CLIENT_SECRET": "secret",
    }.items():
        clean_env.setenv(name, value)
    code, out = run_in_process(capsys, "doctor")
    assert code == 1
    assert (
        "! plugin broken = keyloom_brokenplugin (keyloom-brokenplugin 0.1.0) failed to load: "
        "ImportError: keyloom_brokenplugin needs the module"
    ) in out
    assert "fix: fix or uninstall keyloom-brokenplugin, or switch it off with" in out
    assert "KEYLOOM_DISABLE_PLUGINS=broken" in out
    assert "unknown hook 'fetch_profil' (did you mean 'fetch_profile'?)" in out
    assert (
        "! provider id 'testprov' is claimed by dup (keyloom-dupplugin 0.1.0) and testprov "
        "(keyloom-testplugin 0.1.0); neither is used"
    ) in out
    # testprov has credentials, so its own section fails
    assert "✗ 'testprov' is claimed by two plugins, so apps cannot use it" in out
    code, out = run_in_process(capsys, "doctor", "--provider", "broken")
    assert code == 1
    assert "✗ the provider 'broken' is offered by plugin 'broken'" in out


def test_doctor_passes_beside_a_switched_off_broken_plugin(
    fixture_plugins: None, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in {
        "KEYLOOM_SECRET": GOOD_SECRET,
        "KEYLOOM_URL": "https://app.example.com",
        "TESTPROV_CLIENT_ID": "id",
        "TESTPROV_CLIENT_SECRET": "secret",
        "KEYLOOM_DISABLE_PLUGINS": "broken,misspelled,dup",
    }.items():
        clean_env.setenv(name, value)
    code, out = run_in_process(capsys, "doctor", "--provider", "testprov")
    assert code == 0, out
    assert (
        "✓ plugin dup = keyloom_dupplugin (keyloom-dupplugin 0.1.0) is off: "
        "KEYLOOM_DISABLE_PLUGINS=broken,misspelled,dup"
    ) in out
    assert "Provider testprov (keyloom-testplugin 0.1.0)" in out


@pytest.mark.anyio
async def test_tiktok_logins_work_beside_a_broken_plugin(
    fixture_plugins: None, clean_env: pytest.MonkeyPatch
) -> None:
    """Broken and duplicate plugins are installed, autoload is on: TikTok still signs in."""
    pytest.importorskip("keyloom_tiktok")
    from keyloom_tiktok import tiktok
    from keyloom_tiktok.emulator import TikTokEmulator

    from keyloom_core import define_keyloom

    callback = "https://app.example.com/api/auth/oauth/tiktok/callback"
    emulator = TikTokEmulator.for_client(
        "awclientkey", CLIENT_SECRET, [callback], ["user.info.basic"], consent="approve"
    )
    async with emulator:
        for provider in (
            tiktok(client_id="awclientkey", client_secret=CLIENT_SECRET, endpoint_origin=emulator.url),
            "tiktok",
        ):
            clean_env.setenv("TIKTOK_CLIENT_ID", "awclientkey")
            clean_env.setenv("TIKTOK_CLIENT_SECRET", CLIENT_SECRET)
            keyloom = define_keyloom(
                providers=[provider], secret=GOOD_SECRET, base_url="https://app.example.com"
            )
            assert {b.name for b in keyloom.registry.broken} == {"broken", "misspelled"}
            assert "testprov" in keyloom.registry.conflicts
            if provider == "tiktok":  # built from the environment: the real endpoints
                assert keyloom.providers["tiktok"].spec.token_url.startswith("https://open.")
                continue
            async with keyloom, aiohttp.ClientSession() as browser:
                start = await keyloom.begin_login("tiktok")
                async with browser.get(start.url, allow_redirects=False) as response:
                    assert response.status == 302, await response.text()
                    location = response.headers["Location"]
                query = dict(parse_qsl(urlsplit(location).query))
                result = await keyloom.complete_login("tiktok", query, start.state)
            assert result.profile.name == "Emulated Creator"
            assert result.tokens.access_token.startswith("act.")


# -- keyloom login --------------------------------------------------------------------------


@pytest.fixture
def tiktok_emulator() -> Iterator[Any]:
    """A TikTok emulator whose desktop app accepts http://127.0.0.1:<any port>/callback/."""
    pytest.importorskip("keyloom_tiktok")
    from keyloom_tiktok.emulator import TikTokEmulator

    return TikTokEmulator.for_client(
        "awclidesktop",
        CLIENT_SECRET,
        ["http://127.0.0.1:*/callback/"],
        ["user.info.basic"],
        consent="approve",
    )


async def run_login(emulator: Any, *args: str) -> tuple[int, str, str]:
    """Run ``keyloom login tiktok``, play the browser, return (exit code, output, page)."""
    env = {
        **subprocess_env(),
        "TIKTOK_CLIENT_ID": "awclidesktop",
        "TIKTOK_CLIENT_SECRET": CLIENT_SECRET,
        "KEYLOOM_EMULATOR_URL": emulator.url,
    }
    command = [sys.executable, "-m", "keyloom_core.cli", "login", "tiktok", "--port", "0"]
    command += ["--no-browser", "--timeout", "20", *args]
    async with await anyio.open_process(command, env=env) as process:
        assert process.stdout is not None
        try:
            output = ""
            with anyio.fail_after(30):
                while "\n  http" not in output or not output.endswith("\n"):
                    output += (await process.stdout.receive()).decode()
            url = output.split("Open this URL to sign in:\n  ", 1)[1].split("\n", 1)[0]
            async with aiohttp.ClientSession() as browser:
                async with browser.get(url, allow_redirects=False) as response:
                    assert response.status == 302, await response.text()
                    callback = response.headers["Location"]
                assert callback.startswith("http://127.0.0.1:")
                async with browser.get(callback) as response:
                    page = await response.text()
            with anyio.fail_after(30):
                code = await process.wait()
                async for chunk in process.stdout:
                    output += chunk.decode()
        finally:
            if process.returncode is None:
                process.kill()
    return code, output, page


@pytest.mark.anyio
async def test_login_over_a_loopback_redirect(tiktok_emulator: Any) -> None:
    async with tiktok_emulator as emulator:
        emulator.consent = "approve"
        code, out, page = await run_login(emulator)
        assert code == 0, out
        assert "Redirect URI (register it with TikTok): http://127.0.0.1:" in out
        assert "/callback/" in out
        assert "Signed in with tiktok." in out
        assert "name:     Emulated Creator" in out
        assert "scopes:   user.info.basic" in out
        assert "access token expires:  " in out
        assert "(in 1h 59m)" in out or "(in 2h 0m)" in out  # TikTok's 2 h access tokens
        assert "refresh token expires: " in out
        assert "tokens hidden" in out
        assert "act." not in out  # TikTok's access tokens start with act.
        assert "rft." not in out
        assert CLIENT_SECRET not in out
        assert "Signed in as Emulated Creator" in page


@pytest.mark.anyio
async def test_login_shows_tokens_only_when_asked(tiktok_emulator: Any) -> None:
    async with tiktok_emulator as emulator:
        code, out, _ = await run_login(emulator, "--show-tokens", "--scopes", "user.info.basic")
        assert code == 0, out
        assert "access token:  act." in out
        assert "refresh token: rft." in out
        assert CLIENT_SECRET not in out


@pytest.mark.anyio
async def test_login_reports_a_refused_consent(tiktok_emulator: Any) -> None:
    async with tiktok_emulator as emulator:
        emulator.consent = "deny"
        code, out, page = await run_login(emulator)
        assert code == 1
        assert "✗ sign-in failed: [tiktok] you cancelled the sign-in (access_denied)" in out
        assert "Sign-in failed" in page


def test_login_needs_an_installed_provider() -> None:
    result = keyloom("login", "nope", "--no-browser", "--port", "0")
    assert result.returncode == 2
    assert "no installed plugin offers 'nope'" in result.stdout
    assert "keyloom providers" in result.stdout


def test_login_says_why_a_provider_cannot_be_used(fixture_site: str) -> None:
    result = keyloom("login", "broken", "--no-browser", "--port", "0", extra_path=fixture_site)
    assert result.returncode == 2
    assert "✗ [broken] the provider 'broken' is offered by plugin 'broken'" in result.stdout
    assert "which failed to load: ImportError" in result.stdout
    assert "  or switch it off: KEYLOOM_DISABLE_PLUGINS=broken" in result.stdout
    assert result.stderr == ""  # plugin problems are reported once, not logged as well

    switched_off = {"KEYLOOM_DISABLE_PLUGINS": "tiktok"}
    result = keyloom("login", "tiktok", "--no-browser", "--port", "0", **switched_off)
    assert result.returncode == 2
    assert "is switched off (KEYLOOM_DISABLE_PLUGINS=tiktok)" in result.stdout
    assert "  remove 'tiktok' from KEYLOOM_DISABLE_PLUGINS" in result.stdout


def test_login_needs_credentials() -> None:
    require_installed("keyloom-tiktok")
    result = keyloom("login", "tiktok", "--no-browser", "--port", "0")
    assert result.returncode == 2
    assert "set TIKTOK_CLIENT_ID" in result.stdout


# -- plugin commands ----------------------------------------------------------------------


def test_a_plugin_command_is_reached_through_keyloom() -> None:
    require_installed("keyloom-tiktok")
    listed = keyloom("--help")
    assert "tiktok" in listed.stdout
    helped = keyloom("tiktok", "--help")
    assert helped.returncode == 0, helped.stderr
    assert "usage: keyloom tiktok" in helped.stdout
    assert "upload" in helped.stdout


def test_an_unknown_command_is_still_a_usage_error() -> None:
    result = keyloom("no-such-command")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr

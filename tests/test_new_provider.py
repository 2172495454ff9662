"""``keyloom new-provider``: the generated distribution works as generated.

The fast tests check what is written and run the conformance suite in this process against
the generated plugin and emulator (registered explicitly). The slow one installs the
generated distribution into a fresh virtual environment, beside the core of this checkout,
and runs its own tests (the conformance suite included), ruff and mypy there.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from keyloom_core.cli import main
from keyloom_core.cli.new_provider import CORE_REQUIREMENT, render
from keyloom_core.testing.conformance import CHECKS, ConformanceTarget, run_conformance

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = [
    "README.md",
    "keyloom_discord/__init__.py",
    "keyloom_discord/emulator.py",
    "keyloom_discord/py.typed",
    "pyproject.toml",
    "tests/test_discord.py",
    "tests/test_discord_conformance.py",
]


def generate(tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> Path:
    code = main(["new-provider", *args, "--directory", str(tmp_path / "plugin")])
    assert code == 0, capsys.readouterr().out
    return tmp_path / "plugin"


def test_the_files_it_writes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = generate(tmp_path, capsys, "discord")
    out = capsys.readouterr().out
    written = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())
    assert written == EXPECTED
    for path in written:
        text = (target / path).read_text(encoding="utf-8")
        assert not re.search(r"__[A-Z][A-Z_]*__", text), f"a template token is left in {path}"
        if path.endswith(".py"):
            compile(text, path, "exec")
    pyproject = (target / "pyproject.toml").read_text(encoding="utf-8")
    assert 'name = "keyloom-discord"' in pyproject
    assert '[project.entry-points.keyloom]\ndiscord = "keyloom_discord"' in pyproject
    assert f'dependencies = ["{CORE_REQUIREMENT}"]' in pyproject
    assert 'select = ["ALL"]' in pyproject
    assert "strict = true" in pyproject
    module = (target / "keyloom_discord/__init__.py").read_text(encoding="utf-8")
    assert 'emulator="keyloom_discord.emulator:DiscordEmulator"' in module
    assert "def discord(**options: Any) -> Provider:" in module
    assert "DISCORD_CLIENT_ID" in module
    assert "class TestDiscordConformance(ProviderConformance):" in (
        target / "tests/test_discord_conformance.py"
    ).read_text(encoding="utf-8")
    assert "/api/auth/oauth/discord/callback" in (target / "README.md").read_text(encoding="utf-8")
    assert "pip install -e '.[test]'" in out


def test_names_with_dashes_and_a_display_name() -> None:
    files = render("my-idp", "My IdP")
    assert "keyloom_my_idp/emulator.py" in files
    assert "tests/test_my_idp_conformance.py" in files
    assert 'name = "keyloom-my-idp"' in files["pyproject.toml"]
    assert 'my-idp = "keyloom_my_idp"' in files["pyproject.toml"]
    emulator = files["keyloom_my_idp/emulator.py"]
    assert "class MyIdpEmulator(AuthorizationServer):" in emulator
    assert len(emulator.splitlines()) <= 100
    assert 'name="My IdP"' in files["keyloom_my_idp/__init__.py"]
    assert "MY_IDP_CLIENT_ID" in files["keyloom_my_idp/__init__.py"]
    assert "def my_idp(**options" in files["keyloom_my_idp/__init__.py"]
    # a Python keyword is not a function name
    assert "def import_(**options" in render("import")["keyloom_import/__init__.py"]


@pytest.mark.parametrize("name", ["Discord", "9lives", "dis cord", "x" * 33, "../up", ""])
def test_a_name_that_is_not_a_provider_id_is_refused(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["new-provider", name, "--directory", str(tmp_path / "out")])
    assert code == 2
    assert "is not a provider id" in capsys.readouterr().out
    assert not (tmp_path / "out").exists()


def test_a_directory_in_the_way_is_left_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "plugin").mkdir()
    (tmp_path / "plugin" / "mine.txt").write_text("keep me", encoding="utf-8")
    code = main(["new-provider", "discord", "--directory", str(tmp_path / "plugin")])
    assert code == 2
    assert "exists and is not empty" in capsys.readouterr().out
    assert [p.name for p in (tmp_path / "plugin").iterdir()] == ["mine.txt"]
    generate(tmp_path, capsys, "discord", "--force")
    assert (tmp_path / "plugin" / "mine.txt").read_text(encoding="utf-8") == "keep me"


def test_the_generated_plugin_passes_conformance_in_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every check but ``discoverable`` (which needs an installed distribution: the slow test)."""
    target = generate(tmp_path, capsys, "scaffoldcheck")
    monkeypatch.syspath_prepend(str(target))
    module = importlib.import_module("keyloom_scaffoldcheck")
    try:
        names = [name for name in CHECKS if name != "discoverable"]
        report = run_conformance(ConformanceTarget(provider_id="scaffoldcheck", plugin=module), names)
    finally:
        for name in [m for m in sys.modules if m.startswith("keyloom_scaffoldcheck")]:
            del sys.modules[name]
    assert report.ok, str(report)
    assert [r.name for r in report.results] == names


def _run(*command: str | Path, cwd: Path, timeout: float = 600) -> str:
    result = subprocess.run(
        [str(c) for c in command],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.mark.slow
def test_the_generated_distribution_passes_its_tests_in_a_fresh_venv(tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    bindir = env_dir / ("Scripts" if sys.platform == "win32" else "bin")
    python = bindir / "python"
    pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    _run(*pip, ROOT, "ruff>=0.6", "mypy>=1.10", cwd=tmp_path)  # the core, as a wheel
    # the installed core's own command writes it (its templates ship in the wheel)
    _run(bindir / "keyloom", "new-provider", "discord", cwd=tmp_path)
    target = tmp_path / "keyloom-discord"
    _run(*pip, f"{target}[test]", cwd=tmp_path)

    providers = _run(bindir / "keyloom", "providers", cwd=target)
    assert "discord  Discord  (keyloom-discord 0.1.0)" in providers
    assert "entry point:     discord = keyloom_discord" in providers

    tests = _run(python, "-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=target)
    assert "14 passed" in tests, tests  # 12 conformance checks + 2 plugin tests
    assert "skipped" not in tests
    _run(python, "-m", "ruff", "check", "--no-cache", ".", cwd=target)
    _run(python, "-m", "ruff", "format", "--check", "--no-cache", ".", cwd=target)
    _run(python, "-m", "mypy", "--no-incremental", cwd=target)

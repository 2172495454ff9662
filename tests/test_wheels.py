"""The wheels install into a fresh virtualenv, and the TikTok plugin is found by entry point.

Slow: builds two wheels, fetches the dependencies with pip, creates a venv.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
TIKTOK = ROOT / "plugins" / "keyloom-tiktok"

CHECK = """
import json, keyloom_core
from keyloom_core._plugins import PluginRegistry
r = PluginRegistry()
print(json.dumps({
    "providers": sorted(r.providers),
    "owner": r.providers["tiktok"].plugin.distribution if "tiktok" in r.providers else None,
    "broken": [str(b.error) for b in r.broken],
    "core": keyloom_core.__file__,
}))
"""


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.pop("KEYLOOM_DISABLE_PLUGIN_AUTOLOAD", None)
    return env


def test_tiktok_wheel_is_discovered_in_a_fresh_venv(tmp_path: Path) -> None:
    if not (TIKTOK / "pyproject.toml").exists():
        pytest.skip(f"{TIKTOK / 'pyproject.toml'} does not exist yet")
    wheels = tmp_path / "wheels"
    pip = (sys.executable, "-m", "pip")
    run(*pip, "wheel", "--no-deps", "-w", wheels, ROOT, cwd=tmp_path)
    run(*pip, "wheel", "--no-deps", "-w", wheels, TIKTOK, cwd=tmp_path)
    built = sorted(p.name for p in wheels.glob("*.whl"))
    assert [n.split("-")[0] for n in built] == ["keyloom_core", "keyloom_tiktok"], built
    # the dependencies, from the package index, into the same folder
    run(*pip, "download", "-d", wheels, *sorted(wheels.glob("*.whl")), cwd=tmp_path)

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path, env=clean_env())
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    run(
        python,
        "-m",
        "pip",
        "install",
        "--no-index",
        "--find-links",
        wheels,
        "keyloom-tiktok",
        cwd=tmp_path,
        env=clean_env(),
    )
    found = json.loads(run(python, "-c", CHECK, cwd=tmp_path, env=clean_env()))

    assert "tiktok" in found["providers"]
    assert found["owner"].startswith("keyloom-tiktok ")
    assert found["broken"] == []
    assert Path(found["core"]).is_relative_to(venv)  # the installed wheel, not this checkout

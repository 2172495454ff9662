"""The README's hook reference cannot drift from the hook specifications."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from keyloom_core import hookspecs

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
HOOKS = sorted(
    name
    for name, value in vars(hookspecs).items()
    if callable(value) and hasattr(value, f"{hookspecs.PROJECT}_spec")
)


def _signature(name: str) -> str:
    func = getattr(hookspecs, name)
    prefix = "async def" if inspect.iscoroutinefunction(func) else "def"
    return f"{prefix} {name}{inspect.signature(func)}".replace("'", "")


def test_every_hook_is_specified() -> None:
    assert len(HOOKS) >= 10
    assert {"authorize_params", "exchange_code", "fetch_profile", "login_failed"} <= set(HOOKS)


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented_with_its_signature(hook: str) -> None:
    assert re.search(rf"^### {hook}$", README, re.MULTILINE), f"no '### {hook}' heading"
    assert _signature(hook) in README, f"README shows another signature for {hook}"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_a_docstring(hook: str) -> None:
    assert (getattr(hookspecs, hook).__doc__ or "").strip()


def test_readme_gives_the_two_fresh_machine_commands() -> None:
    assert "bash scripts/demo.sh" in README
    assert "bash scripts/test.sh" in README
    ci = (Path(__file__).parent.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert "bash scripts/test.sh" in ci

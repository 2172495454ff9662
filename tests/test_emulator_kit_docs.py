"""docs/emulator-kit.md, the kit's API reference, cannot drift from the code."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location(
    "emulator_kit_reference", ROOT / "docs" / "emulator_kit_reference.py"
)
assert _spec is not None
assert _spec.loader is not None
reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reference)

PAGE = (ROOT / "docs" / "emulator-kit.md").read_text(encoding="utf-8")
NAMES = [
    (module, name)
    for module in reference.MODULES
    for name in importlib.import_module(module).__all__
]


def _sections() -> dict[str, str]:
    parts = re.split(r"^(#{3,4} `[^`]+`)$", PAGE, flags=re.MULTILINE)
    return {head.split("`")[1]: body for head, body in zip(parts[1::2], parts[2::2], strict=True)}


def test_the_page_is_the_generated_one() -> None:
    assert reference.render() == PAGE, "run: python docs/emulator_kit_reference.py"


@pytest.mark.parametrize(("module", "name"), NAMES)
def test_every_public_name_has_a_section_with_text(module: str, name: str) -> None:
    body = _sections().get(name)
    assert body is not None, f"{module}.{name} is not in docs/emulator-kit.md"
    prose = re.sub(r"```.*?```", "", body, flags=re.DOTALL)
    assert prose.replace("*attribute*:", "").strip(), f"{module}.{name} has no docstring"


def test_every_member_has_text() -> None:
    empty = [
        name
        for name, body in _sections().items()
        if "." in name
        and not re.sub(r"```.*?```|\*attribute\*:?|\*property\*", "", body, flags=re.DOTALL).strip()
    ]
    assert empty == []


def test_functions_and_classes_show_a_signature() -> None:
    sections = _sections()
    for module, name in NAMES:
        obj = getattr(importlib.import_module(module), name)
        obj = getattr(obj, "_get_wrapped_function", lambda obj=obj: obj)()
        if callable(obj) and getattr(obj, "__module__", "") == module:
            assert "```python" in sections[name], f"{module}.{name} shows no signature"


def test_the_page_documents_one_way_to_run_conformance() -> None:
    assert PAGE.count("## Running conformance") == 1
    assert "class TestExampleConformance(ProviderConformance):" in PAGE

"""The shape of the core: no import cycle, small modules, no provider's dialect."""

from __future__ import annotations

import ast
import re
import tokenize
import warnings
from pathlib import Path

import pytest

import keyloom_core

PACKAGE = Path(keyloom_core.__file__).parent
TEST_KITS = {"keyloom_core.testing.emulator", "keyloom_core.testing.conformance", "keyloom_core.testing.authserver"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that *name* imports, type-only and function-local imports too."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        found.update(t for t in targets if t in known and t != name)
    return found


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_core_has_no_import_cycle() -> None:
    modules = _modules()
    graph = {name: _imports(name, path, set(modules)) for name, path in modules.items()}
    # A package's __init__ only re-exports its own modules; the edge from a module to the
    # package it lives in is Python's doing, not a design choice.
    for name in graph:
        graph[name] -= {p for p in graph if name.startswith(f"{p}.")}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_modules_stay_small() -> None:
    sizes = {name: len(path.read_text().splitlines()) for name, path in _modules().items()}
    assert sizes["keyloom_core._keyloom"] <= 350
    too_big = {n: s for n, s in sizes.items() if s > 600 and n not in TEST_KITS}
    assert not too_big


DIALECT = re.compile(r"tiktok|github|open_id|x-tt-logid|refresh_token_expires_in|avatar_url", re.IGNORECASE)


def _code_without_docstrings(path: Path) -> str:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            value = body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                body[0] = ast.Pass()
    return ast.unparse(tree)


@pytest.mark.parametrize(
    "name", sorted(n for n in _modules() if not n.startswith(("keyloom_core.cli", *TEST_KITS)))
)
def test_no_provider_dialect_in_the_core(name: str) -> None:
    source = _code_without_docstrings(_modules()[name])
    with _modules()[name].open("rb") as file:
        tokens = tokenize.tokenize(file.readline)
        comments = "\n".join(t.string for t in tokens if t.type == tokenize.COMMENT)
    assert not DIALECT.search(source), DIALECT.search(source)
    assert not DIALECT.search(comments), DIALECT.search(comments)


def test_the_old_sessions_module_still_works_and_says_where_it_went() -> None:
    import keyloom_core.sessions as old
    from keyloom_core.web import sessions

    with pytest.warns(DeprecationWarning, match=r"keyloom_core\.web\.sessions"):
        assert old.read_session is sessions.read_session
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sessions.SESSION_COOKIE == "__keyloom_session"

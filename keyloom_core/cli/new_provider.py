"""``keyloom new-provider NAME``: a new provider plugin distribution whose tests pass as generated.

It writes ``keyloom-NAME/`` (or ``--directory``): ``pyproject.toml`` with the ``keyloom`` entry
point, the ruff, mypy and pytest settings; the provider module (spec, factory,
``register_providers``); an emulator built on :mod:`keyloom_core.testing.authserver`; the
conformance test and a first plugin test; a README. Then::

    cd keyloom-NAME && pip install -e ".[test]" && pytest
"""

from __future__ import annotations

import argparse
import keyword
import re
import sys
from importlib import resources
from pathlib import Path

from ..models import PROVIDER_ID_PATTERN

__all__ = ["add_arguments", "render", "run"]

#: What the generated distribution requires of the core (hooks never lose arguments
#: within a minor version).
CORE_REQUIREMENT = "keyloom-core>=0.1,<0.2"
_TEMPLATES = "_scaffold"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``NAME``, ``--display-name``, ``--directory`` and ``--force``."""
    parser.add_argument("name", metavar="NAME", help="the provider id, e.g. discord")
    parser.add_argument("--display-name", help="how users see it (default: NAME capitalised)")
    parser.add_argument("--directory", help="where to write (default: ./keyloom-NAME)")
    parser.add_argument(
        "--force", action="store_true", help="write into a directory that is not empty"
    )


def _tokens(provider_id: str, display_name: str | None) -> dict[str, str]:
    suffix = provider_id.replace("-", "_")
    function = f"{suffix}_" if keyword.iskeyword(suffix) else suffix
    words = re.split(r"[-_]", provider_id)
    return {
        "__MODULE_SUFFIX__": suffix,
        "__MODULE__": f"keyloom_{suffix}",
        "__DIST__": f"keyloom-{provider_id.replace('_', '-')}",
        "__FUNCTION__": function,
        "__CLASS__": "".join(w.capitalize() for w in words),
        "__PREFIX__": provider_id.upper().replace("-", "_"),
        "__NAME__": display_name or " ".join(w.capitalize() for w in words),
        "__ID__": provider_id,
        "__CORE_REQUIREMENT__": CORE_REQUIREMENT,
    }


def _substitute(text: str, tokens: dict[str, str]) -> str:
    for token, value in tokens.items():
        text = text.replace(token, value)
    return text


def render(provider_id: str, display_name: str | None = None) -> dict[str, str]:
    """The generated files: relative path -> text.

    :raises ValueError: *provider_id* is not a valid provider id.
    """
    if not re.fullmatch(PROVIDER_ID_PATTERN, provider_id):
        msg = (
            f"'{provider_id}' is not a provider id: lowercase letters, digits, '-' and '_', "
            "starting with a letter, at most 32 characters"
        )
        raise ValueError(msg)
    if display_name is not None and not display_name.isprintable():
        msg = "the display name must be printable text"
        raise ValueError(msg)
    tokens = _tokens(provider_id, display_name)
    root = resources.files(__package__ or "keyloom_core.cli").joinpath(_TEMPLATES)
    files: dict[str, str] = {}
    pending = [("", root)]
    while pending:
        prefix, folder = pending.pop()
        for entry in folder.iterdir():
            if entry.is_dir():
                pending.append((f"{prefix}{entry.name}/", entry))
            elif entry.name.endswith(".tmpl"):
                path = _substitute(prefix + entry.name.removesuffix(".tmpl"), tokens)
                files[path] = _substitute(entry.read_text(encoding="utf-8"), tokens)
    return dict(sorted(files.items()))


def run(args: argparse.Namespace) -> int:
    """Write the distribution; 2 for a bad name or a directory in the way."""
    out = sys.stdout.write
    try:
        files = render(args.name, args.display_name)
    except ValueError as exc:
        out(f"✗ {exc}\n")
        return 2
    target = Path(args.directory or f"keyloom-{args.name.replace('_', '-')}")
    if target.exists() and any(target.iterdir()) and not args.force:
        out(f"✗ {target} exists and is not empty (choose --directory, or --force)\n")
        return 2
    for relative, text in files.items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        out(f"  wrote {path}\n")
    module = _tokens(args.name, None)["__MODULE__"]
    out(
        f"\nNext:\n  cd {target}\n  pip install -e '.[test]'\n  pytest\n"
        f"Then put the provider's real endpoints and scopes in {module}/__init__.py, and make "
        f"{module}/emulator.py behave like it (see docs/writing-a-provider.md).\n"
    )
    return 0

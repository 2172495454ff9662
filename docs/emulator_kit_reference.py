"""Write docs/emulator-kit.md from the code: ``python docs/emulator_kit_reference.py``.

Every public name of the emulator kit (``__all__`` of each module below) gets its signature
and its docstring (for a constant, its ``#:`` comment). ``tests/test_docs.py`` checks that
the page checked in is the page this script writes.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
import textwrap
from pathlib import Path
from types import MemberDescriptorType, ModuleType
from typing import Any

PAGE = Path(__file__).with_name("emulator-kit.md")

MODULES = (
    "keyloom_core.testing.authserver",
    "keyloom_core.testing.conformance",
    "keyloom_core.testing.pytest_plugin",
    "keyloom_core.testing.emulator",
)

INTRO = """\
# The emulator kit: API reference

*Generated from the code by `docs/emulator_kit_reference.py`; do not edit by hand.*

## Writing an emulator

An emulator is a subclass of `AuthorizationServer` (in `keyloom_core.testing.authserver`)
that sets `spec` to the provider's `ProviderSpec`: the server reads its dialect from it (the
routes, the client id parameter, the scope separator, the PKCE encoding, how clients
authenticate, the token answer's fields). Override only what the provider does differently
(`user`, `profile`, `token_answer`, `error_answer` and `error_status`,
`check_authorization`, any route handler):

```python
from keyloom_core.testing.authserver import AuthorizationServer

from keyloom_example import SPEC


class ExampleEmulator(AuthorizationServer):
    spec = SPEC


if __name__ == "__main__":
    raise SystemExit(ExampleEmulator.main())
```

Name it in the spec (`emulator="keyloom_example.emulator:ExampleEmulator"`). Fault injection
(`faults=`, a `FaultInjector`; an idle one by default, so tests can `queue` faults) and rate
limiting (`rate_limit=`, a `SlidingWindowLimiter`) are constructor options.

The provider's own options are declared in the class body, not in a constructor: a
`Setting` (a constructor keyword that stays a settable attribute, checked on every change,
which may live in another attribute and may have a command-line flag) or an annotated
attribute with a default. The constructor refuses any other keyword with a `TypeError`
naming the closest option and the valid ones. A `DeprecatedAlias` keeps an old attribute
name working, with a `DeprecationWarning` naming the new one:

```python
class ExampleEmulator(AuthorizationServer):
    spec = SPEC
    pkce_encoding = Setting("hex", choices=("hex", "base64url"), flag="--pkce-encoding")
    code_lifetime = Setting(600.0, at="book.code_ttl")
    answers_errors_with_200: bool = False
    code_ttl = DeprecatedAlias("code_lifetime")
```

The revocation route takes the spec's `revoke_method`. A provider whose revocation is an
API of its own (204, 401 or 404) sets `revocation_api = True`: `revoke_by_api` reads it
with `revocation_body` (the body as `revoke_encoding` says, the token at
`revoke_token_param`) and `revoking_client` (authenticated as `revoke_auth_method` says,
matching a `{client_id}` in the path), on which a provider that answers otherwise writes
its own `revoke`; `revocation_url` fills that segment in. A provider that keeps only the
wider of nested scopes returns `narrowest_scopes` (from `known_scopes` and
`implied_scopes`) from `requested_scopes`.

Other departures from RFC 6749 are declared too: looser redirect URI matching on the
client class (`redirect_uri_rules`: subpaths, subdomains, any port on loopback), a redirect
URI mismatch sent to the registered URI (`redirect_uri_mismatch_error`), form-encoded token
answers unless JSON is accepted (`form_encoded_answers`), a grant of no scope as a denial
(`no_scope_denial`). A client class with options of its own is built by
`make_client = client_factory(MyClient)`, its switches offered by `client_flags`; what a
developer portal lets a client register is a `RedirectUriPolicy`.

The building blocks of `keyloom_core.testing.emulator` are there for emulators that need
more (TikTok's consent rules and scope error page).

## Running conformance

The one way: a test module in the plugin's `tests/` with a subclass of
`ProviderConformance` naming the provider, run by `pytest` (`keyloom new-provider`
generates it):

```python
from keyloom_core.testing.conformance import ProviderConformance


class TestExampleConformance(ProviderConformance):
    provider_id = "example"
```

Each check is one test; it starts the emulator the spec names on 127.0.0.1, drives a real
`Keyloom` through it and stops it. `run_conformance`, `ConformanceTarget` and the pytest
fixtures below are what this class is built on.
"""


def _comments(source: str, name: str, indent: str = "") -> str:
    """The ``#:`` comment above *name*'s assignment, or the docstring below it."""
    lines = source.splitlines()
    pattern = re.compile(rf"^{indent}{re.escape(name)}\s*[:=]")
    for index, line in enumerate(lines):
        if pattern.match(line):
            found: list[str] = []
            back = index - 1
            while back >= 0 and lines[back].strip().startswith("#:"):
                found.insert(0, lines[back].strip().removeprefix("#:").strip())
                back -= 1
            after = lines[index + 1].strip() if index + 1 < len(lines) else ""
            if not found and after.startswith('"""') and after.endswith('"""'):
                found.append(after.strip('"'))
            return " ".join(found)
    return ""


def _attribute(doc: str, name: str) -> str:
    """*name*'s entry in the ``Attributes:`` section of a class docstring."""
    section = doc.partition("Attributes:")[2]
    match = re.search(rf"^    {re.escape(name)}: (.+(?:\n {{8}}.+)*)", section, re.MULTILINE)
    return " ".join(match.group(1).split()) if match else ""


def _doc(obj: object) -> str:
    return inspect.cleandoc(getattr(obj, "__doc__", None) or "")


class _Raw:
    """An annotation shown as written (annotations are strings here)."""

    def __init__(self, text: object) -> None:
        self.text = text

    def __repr__(self) -> str:
        return str(self.text)


def _signature(name: str, obj: Any) -> str:
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return name
    empty = inspect.Parameter.empty
    params = [
        p.replace(annotation=p.annotation if p.annotation is empty else _Raw(p.annotation))
        for p in signature.parameters.values()
        if p.name not in {"self", "cls"}
    ]
    ret = signature.return_annotation
    shown = signature.replace(
        parameters=params, return_annotation=ret if ret is empty else _Raw(ret)
    )
    return re.sub(
        r"<(?:function|built-in function) ([\w.]+)(?: at 0x\w+)?>", r"\1", f"{name}{shown}"
    )


def _class(name: str, cls: type, source: str) -> list[str]:
    bases = ", ".join(b.__name__ for b in cls.__bases__ if b is not object)
    head = f"class {name}({bases})" if bases else f"class {name}"
    init = _signature(name, cls.__init__).removesuffix(" -> None")
    out = [f"### `{name}`", "", "```python", head, init, "```", "", _doc(cls), ""]
    annotated = {k: None for k in vars(cls).get("__annotations__", {}) if k not in vars(cls)}
    for member, value in {**annotated, **vars(cls)}.items():
        if member.startswith("_"):
            continue
        raw = (
            inspect.unwrap(value.__func__)
            if isinstance(value, classmethod | staticmethod)
            else value
        )
        if isinstance(value, property):
            out += [f"#### `{name}.{member}`", "", "*property*", "", _doc(value), ""]
        elif callable(raw):
            prefix = "async def " if inspect.iscoroutinefunction(raw) else "def "
            if isinstance(value, classmethod):
                prefix = "@classmethod\n" + prefix
            out += [
                f"#### `{name}.{member}`",
                "",
                "```python",
                prefix + _signature(member, raw),
                "```",
                "",
                _doc(raw),
                "",
            ]
        else:
            text = _comments(source, member, "    ") or _attribute(_doc(cls), member)
            if text:
                out += [f"#### `{name}.{member}`", "", f"*attribute*: {text}", ""]
            elif not isinstance(value, MemberDescriptorType):
                out += [f"#### `{name}.{member}`", "", "*attribute*", ""]
    return out


def _module(module: ModuleType) -> list[str]:
    source = inspect.getsource(module)
    summary = _doc(module).split("\n\n")[0]
    out = [f"## `{module.__name__}`", "", summary, ""]
    for name in module.__all__:
        obj = getattr(module, name)
        fixture = getattr(obj, "_get_wrapped_function", None)  # a pytest fixture
        if fixture is not None:
            obj = fixture()
            out += [f"### `{name}`", "", "*pytest fixture*", ""]
            out += ["```python", "def " + _signature(name, obj), "```", "", _doc(obj), ""]
            continue
        if inspect.isclass(obj) and obj.__module__ == module.__name__:
            out += _class(name, obj, source)
        elif inspect.isfunction(obj):
            prefix = "async def " if inspect.iscoroutinefunction(obj) else "def "
            out += [f"### `{name}`", "", "```python", prefix + _signature(name, obj), "```", ""]
            out += [_doc(obj), ""]
        else:
            comment = _comments(source, name) or _doc(obj)
            where = getattr(obj, "__module__", module.__name__)
            if inspect.isclass(obj) and where != module.__name__:
                comment = f"Re-exported from `{where}`. {comment or _doc(obj)}"
            out += [f"### `{name}`", "", comment, ""]
    return out


def render() -> str:
    """The page, as generated from the code."""
    lines = [INTRO]
    for name in MODULES:
        lines += _module(importlib.import_module(name))
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", textwrap.dedent(text)).rstrip() + "\n"


if __name__ == "__main__":
    PAGE.write_text(render(), encoding="utf-8")
    sys.stdout.write(f"wrote {PAGE}\n")

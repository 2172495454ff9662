"""``keyloom doctor``: check a configuration from the environment before users hit it.

It checks what ``define_keyloom`` reads (``KEYLOOM_SECRET``, ``KEYLOOM_URL`` or
``APP_URL``), the installed plugins, and for each provider its credentials
(``{PREFIX}_CLIENT_ID`` / ``{PREFIX}_CLIENT_SECRET``), its scopes (``{PREFIX}_SCOPES`` and
``{PREFIX}_APPROVED_SCOPES``, comma lists, both optional) and the redirect URI to register.
Each finding is printed with ✓ (fine), ! (a warning) or ✗ (a problem, with how to fix it);
the exit code is 1 when there is a problem. Secrets are never printed.

Validation reuses the core's own (``check_secret``, ``check_base_url``, and
``define_keyloom`` for the scope policies of the core and of the provider's plugin).
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import secrets
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Literal
from urllib.parse import urlsplit

import attrs

from .._config import define_keyloom
from .._plugin_switches import DISABLE_AUTOLOAD_ENV, DISABLE_PLUGINS_ENV, autoload_disabled
from .._plugins import PluginRegistry, RegisteredProvider, pick_advice
from .._settings import LOOPBACK_HOSTS, SECRET_ENV, URL_ENVS, check_base_url, check_secret
from ..errors import HINT_REDIRECT_URI, ConfigurationError, KeyloomError, UnknownProviderError

__all__ = ["Finding", "add_arguments", "check_store", "diagnose", "run"]

Level = Literal["ok", "warn", "fail"]
_MARKS: Mapping[Level, tuple[str, str]] = {
    "ok": ("✓", "+"),
    "warn": ("!", "!"),
    "fail": ("✗", "x"),
}
_GENERATE = 'generate one: python -c "import secrets; print(secrets.token_urlsafe(32))"'
_PLACEHOLDERS = (
    "changeme",
    "change-me",
    "change_me",
    "placeholder",
    "example",
    "password",
    "secret",
    "replace",
    "your-",
    "your_",
    "xxxx",
    "todo",
    "dummy",
    "default",
    "keyloom",
)
_MIN_DISTINCT = 10
_MIN_ENTROPY_BITS = 96.0
_MAX_REDIRECT_URI = 512
DEFAULT_BASE_PATH = "/api/auth"


@attrs.frozen
class Finding:
    """One result of a check.

    Attributes:
        level: ``"ok"``, ``"warn"`` or ``"fail"``.
        message: What was found (never a secret's value).
        hint: How to fix it, for warnings and failures.
    """

    level: Level
    message: str
    hint: str | None = None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``--provider``, ``--redirect-uri`` and ``--base-path``."""
    parser.add_argument(
        "--provider",
        action="append",
        default=[],
        metavar="ID",
        help="check this provider (repeatable; default: those with credentials set)",
    )
    parser.add_argument(
        "--redirect-uri",
        metavar="URI",
        help="check this redirect URI instead of the one derived from the app's URL",
    )
    parser.add_argument(
        "--base-path",
        default=DEFAULT_BASE_PATH,
        help=f"where the auth routes are mounted (default {DEFAULT_BASE_PATH})",
    )


# -- checks -------------------------------------------------------------------------------


def _entropy_bits(value: str) -> float:
    counts = Counter(value)
    per_char = -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())
    return per_char * len(value)


def _sequential(value: str) -> bool:
    steps = [ord(b) - ord(a) for a, b in itertools.pairwise(value)]
    return sum(1 for s in steps if abs(s) <= 1) > len(steps) / 2


def check_signing_secret(env: Mapping[str, str]) -> list[Finding]:
    """``KEYLOOM_SECRET``: set, 32+ characters, not a placeholder, not predictable."""
    value = env.get(SECRET_ENV, "").strip()
    try:
        check_secret(value or None)
    except ConfigurationError as exc:
        return [Finding("fail", f"{SECRET_ENV}: {exc.message}", exc.hint or _GENERATE)]
    lowered = value.lower()
    word = next((w for w in _PLACEHOLDERS if w in lowered), None)
    if word is not None:
        msg = f"{SECRET_ENV} looks like a placeholder (it contains '{word.strip('-_')}')"
        return [Finding("fail", msg, _GENERATE)]
    if (
        len(set(value)) < _MIN_DISTINCT
        or _entropy_bits(value) < _MIN_ENTROPY_BITS
        or _sequential(value)
    ):
        msg = f"{SECRET_ENV} is too predictable (repeated or sequential characters)"
        return [Finding("fail", msg, _GENERATE)]
    return [Finding("ok", f"{SECRET_ENV} is set ({len(value)} characters)")]


def app_url(env: Mapping[str, str]) -> tuple[str | None, str | None]:
    """The app's public URL from the environment and the variable it came from."""
    for name in URL_ENVS:
        value = env.get(name, "").strip()
        if value:
            return value, name
    return None, None


def check_app_url(env: Mapping[str, str]) -> tuple[list[Finding], str | None]:
    """``KEYLOOM_URL`` / ``APP_URL``: absolute, https outside localhost; returns the URL."""
    url, name = app_url(env)
    if url is None or name is None:
        hint = "set KEYLOOM_URL to the app's public URL, e.g. https://app.example.com"
        return [Finding("fail", "no app URL: KEYLOOM_URL and APP_URL are not set", hint)], None
    try:
        base = check_base_url(url)
    except ConfigurationError as exc:
        hint = exc.hint or "use the public origin the browser sees, e.g. https://app.example.com"
        return [Finding("fail", f"{name}: {exc.message} ({url!r})", hint)], None
    findings = [Finding("ok", f"{name} = {base}")]
    others = [n for n in URL_ENVS if n != name and env.get(n, "").strip()]
    if others and env[others[0]].strip().rstrip("/") != base:
        msg = f"{others[0]} differs from {name}; Keyloom uses {name}"
        findings.append(Finding("warn", msg, f"remove {others[0]} or make them equal"))
    if urlsplit(base).scheme == "http":
        msg = "the app URL uses http: fine on this machine, not in production"
        findings.append(Finding("warn", msg, "serve the app over https when it is public"))
    return findings, base


def check_store(env: Mapping[str, str]) -> list[Finding]:
    """``KEYLOOM_STORE``: without one, used states and sessions live in each process."""
    url = env.get("KEYLOOM_STORE", "").strip()
    if not url:
        msg = (
            "no store (KEYLOOM_STORE): used login states are remembered per process and "
            "sessions are stateless cookies; with several workers a state works once per "
            "worker, and logout cannot end a copied cookie"
        )
        hint = "set KEYLOOM_STORE=sqlite:///var/lib/app/keyloom.db (one host) or redis://…"
        return [Finding("warn", msg, hint)]
    scheme = url.partition(":")[0]
    if scheme == "memory":
        msg = "KEYLOOM_STORE=memory://: per-process, for tests only"
        return [Finding("warn", msg, "use sqlite:///… or redis://… when the app runs")]
    if scheme == "sqlite":
        msg = "SQLite store: shared by the processes of this host (server-side sessions)"
        return [Finding("ok", msg)]
    if scheme in {"redis", "rediss", "unix"}:
        return [Finding("ok", "Redis store: shared by every process and host")]
    from importlib.metadata import entry_points  # noqa: PLC0415

    from ..store import STORE_ENTRY_POINTS  # noqa: PLC0415

    for entry_point in entry_points(group=STORE_ENTRY_POINTS, name=scheme):
        msg = f"{scheme} store from {entry_point.value}: shared by every process using it"
        return [Finding("ok", msg)]
    msg = "KEYLOOM_STORE must start with sqlite:///, redis:// or memory://"
    hint = "define_keyloom raises ConfigurationError on it"
    if "+" in scheme:
        hint = "pip install keyloom-sqlalchemy for postgresql+asyncpg:// (" + hint + ")"
    return [Finding("fail", msg, hint)]


def check_redirect_uri(uri: str) -> list[Finding]:
    """The redirect URI's shape: https outside localhost, static, no trailing slash, short."""
    parts = urlsplit(uri)
    fix = HINT_REDIRECT_URI
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        return [Finding("fail", f"redirect URI {uri!r} is not an absolute http(s) URL", fix)]
    problems = []
    if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
        problems.append("uses http outside localhost (providers require https)")
    if parts.query or parts.fragment or uri.endswith(("?", "#")):
        problems.append("has a query or fragment (it must be static)")
    if len(uri) >= _MAX_REDIRECT_URI:
        problems.append(f"is {len(uri)} characters long (providers refuse 512 or more)")
    if problems:
        return [Finding("fail", f"redirect URI {uri} {problem}", fix) for problem in problems]
    findings = [Finding("ok", f"redirect URI {uri} (register it exactly, byte for byte)")]
    if parts.path.endswith("/"):
        msg = "the redirect URI ends with a slash; Keyloom's callback route has none"
        hint = "register and use the URI without the trailing slash (or with it, on both sides)"
        findings.append(Finding("warn", msg, hint))
    return findings


def _scopes(env: Mapping[str, str], name: str) -> list[str] | None:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return None
    return [s.strip() for s in raw.split(",") if s.strip()]


def check_provider(registered: RegisteredProvider, env: Mapping[str, str]) -> list[Finding]:
    """A provider's credentials and scopes, validated by ``define_keyloom`` itself."""
    spec = registered.spec
    prefix = spec.env_prefix
    names = [f"{prefix}_CLIENT_ID", f"{prefix}_CLIENT_SECRET"]
    missing = [n for n in names if not env.get(n, "").strip()]
    findings = []
    if missing:
        hint = f"set {' and '.join(missing)} (from the {spec.name} developer portal)"
        findings.append(Finding("fail", f"credentials: {', '.join(missing)} not set", hint))
    else:
        findings.append(Finding("ok", f"credentials: {', '.join(names)} are set"))
        client_secret = env[names[1]].strip().lower()
        if any(w in client_secret for w in ("changeme", "placeholder", "your-", "xxxx")):
            msg = f"{names[1]} looks like a placeholder"
            findings.append(Finding("warn", msg, f"copy the real secret from {spec.name}"))
    scopes = _scopes(env, f"{prefix}_SCOPES")
    approved = _scopes(env, f"{prefix}_APPROVED_SCOPES")
    try:
        provider = registered.factory(
            client_id="doctor-client-id",  # credentials are checked above, never used here
            client_secret=secrets.token_urlsafe(16),
            scopes=scopes,
            approved_scopes=approved,
        )
        define_keyloom(
            providers=[provider],
            secret=secrets.token_urlsafe(32),
            base_url="https://doctor.keyloom.test",
            plugins=[registered.plugin.plugin],
            autoload=False,
        )
    except KeyloomError as exc:
        known = ", ".join(sorted(spec.known_scopes))
        hint = exc.hint or f"set {prefix}_SCOPES to known scopes: {known}"
        findings.append(Finding("fail", f"scopes: {exc.message}", hint))
        return findings
    except Exception as exc:  # a plugin bug, reported like a failed check
        msg = f"the {spec.id} plugin failed to configure: {type(exc).__name__}: {exc}"
        findings.append(Finding("fail", msg, "report it to the plugin's authors"))
        return findings
    requested = ", ".join(sorted(provider.scopes))
    source = f"{prefix}_SCOPES" if scopes is not None else "default"
    if approved is None:
        msg = (
            f"scopes ({source}): {requested}; known to {spec.name} "
            f"(set {prefix}_APPROVED_SCOPES to check them against app review)"
        )
        findings.append(Finding("ok", msg))
    else:
        findings.append(Finding("ok", f"scopes ({source}): {requested}; known and approved"))
    return findings


def check_plugins(registry: PluginRegistry) -> list[Finding]:
    """Every installed plugin loads, and no provider id is claimed twice.

    A broken plugin or a claimed-twice id is a warning here (apps that do not use it still
    start); the provider sections fail for the providers that are actually used.
    """
    ids = ", ".join(sorted(registry.providers)) or "none"
    findings = [Finding("ok", f"provider plugins: {ids}")]
    if autoload_disabled():
        msg = f"{DISABLE_AUTOLOAD_ENV} is set: apps load only the plugins they pass themselves"
        findings.append(Finding("warn", msg, f"unset {DISABLE_AUTOLOAD_ENV} to load them all"))
    for broken in registry.broken:
        msg = f"plugin {broken.entry_point} ({broken.distribution}) {broken.reason}"
        hint = (
            f"fix or uninstall {broken.distribution.split(' ')[0]}, or switch it off with "
            f"{DISABLE_PLUGINS_ENV}={broken.name}; until then asking for its providers "
            "raises PluginError"
        )
        findings.append(Finding("warn", msg, hint))
    for provider_id, claimants in sorted(registry.conflicts.items()):
        names = " and ".join(
            f"{c.plugin.name} ({c.plugin.distribution or 'explicit'})" for c in claimants
        )
        msg = f"provider id '{provider_id}' is claimed by {names}; neither is used"
        findings.append(Finding("warn", msg, "pick one: " + pick_advice(claimants)))
    findings.extend(
        Finding("ok", f"plugin {off.entry_point} ({off.distribution}) is off: {off.reason}")
        for off in registry.disabled
    )
    findings.extend(
        Finding("warn", warning, "name plugins as keyloom providers shows them")
        for warning in registry.warnings
    )
    return findings


def _with_credentials(registry: PluginRegistry, env: Mapping[str, str]) -> list[str]:
    """The provider ids (claimed twice included) whose credentials are set."""
    specs = {pid: reg.spec for pid, reg in registry.providers.items()}
    specs.update({pid: claimants[0].spec for pid, claimants in registry.conflicts.items()})
    return [
        pid
        for pid, spec in sorted(specs.items())
        if any(env.get(f"{spec.env_prefix}_CLIENT_{k}") for k in ("ID", "SECRET"))
    ]


def diagnose(
    env: Mapping[str, str],
    providers: Sequence[str] = (),
    *,
    redirect_uri: str | None = None,
    base_path: str = DEFAULT_BASE_PATH,
    registry: PluginRegistry | None = None,
) -> list[tuple[str, list[Finding]]]:
    """Run every check; returns ``(section title, findings)`` pairs."""
    registry = registry or PluginRegistry(autoload=True, strict=False)
    sections = [("Signing secret", check_signing_secret(env))]
    url_findings, base = check_app_url(env)
    sections.append(("App URL", url_findings))
    sections.append(("Shared store", check_store(env)))
    sections.append(("Plugins", check_plugins(registry)))
    chosen = list(dict.fromkeys(providers)) or _with_credentials(registry, env)
    if not chosen:
        names = "; ".join(
            f"{reg.spec.env_prefix}_CLIENT_ID / _CLIENT_SECRET for {pid}"
            for pid, reg in sorted(registry.providers.items())
        )
        hint = f"set {names}" if names else "install a provider plugin (keyloom providers)"
        sections.append(("Providers", [Finding("fail", "no provider has credentials", hint)]))
    for pid in chosen:
        registered = registry.providers.get(pid)
        if registered is None:
            error = registry.missing(pid)
            msg, hint = error.message, error.hint or "see: keyloom providers"
            if pid in registry.conflicts:
                msg = f"'{pid}' is claimed by two plugins, so apps cannot use it"
                hint = "pick one: " + pick_advice(registry.conflicts[pid])
            if isinstance(error, UnknownProviderError) and msg.startswith("no installed"):
                msg = f"no installed plugin offers '{pid}'"
                hint = f"pip install keyloom-{pid}, then see: keyloom providers"
            sections.append((f"Provider {pid}", [Finding("fail", msg, hint)]))
            continue
        findings = check_provider(registered, env)
        uri = redirect_uri or (base and f"{base}{base_path}/oauth/{pid}/callback")
        if uri:
            findings += check_redirect_uri(uri)
        else:
            msg = "redirect URI: unknown until the app URL is fixed"
            findings.append(Finding("fail", msg, "fix KEYLOOM_URL first"))
        origin = registered.plugin.distribution or registered.plugin.name
        sections.append((f"Provider {pid} ({origin})", findings))
    return sections


def _marks() -> Mapping[Level, str]:
    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
    try:
        "✓✗".encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return {level: ascii_mark for level, (_, ascii_mark) in _MARKS.items()}
    return {level: mark for level, (mark, _) in _MARKS.items()}


def run(args: argparse.Namespace) -> int:
    """Print every finding; 1 if any check failed."""
    sections = diagnose(
        os.environ,
        args.provider,
        redirect_uri=args.redirect_uri,
        base_path=args.base_path,
    )
    marks = _marks()
    out = sys.stdout.write
    counts: Counter[str] = Counter()
    for title, findings in sections:
        out(f"{title}\n")
        for finding in findings:
            counts[finding.level] += 1
            out(f"  {marks[finding.level]} {finding.message}\n")
            if finding.hint and finding.level != "ok":
                out(f"    fix: {finding.hint}\n")
    problems, warnings = counts["fail"], counts["warn"]
    if problems:
        out(f"\n{problems} problem(s), {warnings} warning(s).\n")
        return 1
    out(f"\nNo problems{f', {warnings} warning(s)' if warnings else ''}.\n")
    return 0

"""Developer and CI sessions.

``nox`` runs the quick suite, lint and types; ``scripts/test.sh`` runs every suite:
``nox -s tests slow browser oidc workers postgres lint typecheck``. ``bench`` and ``stress`` print
figures.
"""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.error_on_missing_interpreters = True

ROOT = Path(__file__).parent
PLUGINS = sorted(str(p) for p in (ROOT / "plugins").iterdir() if (p / "pyproject.toml").exists())
FIXTURE_PLUGINS = sorted(
    str(p)
    for p in (ROOT / "tests" / "fixtures").glob("keyloom-*")
    if (p / "pyproject.toml").exists()
)
#: What the quick session leaves to the slow ones (each has a session of its own).
SLOW_MARKERS = "slow or browser or oidc or postgres"


def _install_project(session: nox.Session) -> None:
    session.install("-e", ".[test,tokens,redis,oidc]", *[arg for p in PLUGINS for arg in ("-e", p)])


def _pytest(session: nox.Session, markers: str) -> None:
    """pytest over the suite's tests marked *markers*, with the fixture plugins at hand."""
    _install_project(session)
    # Test-only plugin distributions (good, broken, duplicate, misspelled) are installed into
    # their own folder: discovery tests put it on sys.path; the rest of the suite never sees them.
    site = Path(session.create_tmp()) / "fixture-plugins"
    if FIXTURE_PLUGINS:
        session.install("--no-deps", "--upgrade", "--target", str(site), *FIXTURE_PLUGINS)
    session.run(
        "pytest",
        "-m",
        markers,
        *(session.posargs or ["-q"]),
        env={"KEYLOOM_FIXTURE_PLUGINS": str(site)},
    )


@nox.session(python="3.11")
def tests(session: nox.Session) -> None:
    """The quick suite: core, plugins, web integrations, stores (a few minutes)."""
    _pytest(session, f"not ({SLOW_MARKERS})")


@nox.session(python="3.11")
def slow(session: nox.Session) -> None:
    """Load, fault, fuzz and attack tests; a generated plugin installed in a fresh venv."""
    _pytest(session, "slow and not browser and not oidc")


@nox.session(python="3.11")
def browser(session: nox.Session) -> None:
    """The demo and the Keyloom JS protocol in real headless Chromium."""
    _pytest(session, "browser")


@nox.session(python="3.11")
def oidc(session: nox.Session) -> None:
    """OpenID Connect against a real certified provider (Node 20+: oidc-provider via npm ci)."""
    _install_project(session)
    folder = ROOT / "tests" / "oidc"
    session.run("npm", "ci", "--no-audit", "--no-fund", "--prefix", str(folder), external=True)
    session.run("pytest", "-m", "oidc", *(session.posargs or ["-q", str(folder)]))


@nox.session(python="3.11")
def postgres(session: nox.Session) -> None:
    """The SQL adapter against a real PostgreSQL server each test run starts on 127.0.0.1."""
    session.install("asyncpg>=0.29")
    _pytest(session, "postgres")


@nox.session(python="3.11")
def workers(session: nox.Session) -> None:
    """Four app workers (uvicorn, gunicorn + aiohttp) sharing Redis or one SQLite file."""
    _install_project(session)
    session.install("gunicorn>=22")
    session.run(
        "pytest",
        "tests/workers",
        *(session.posargs or ["-q", "-p", "no:cacheprovider"]),
        env={"KEYLOOM_WORKER_TESTS": "1"},
    )


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """Ruff."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")


@nox.session(python="3.11")
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the core and every plugin."""
    _install_project(session)
    session.install("mypy>=1.10")
    session.run("mypy", "--strict", "keyloom_core", *[f"{p}" for p in PLUGINS])


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """Benchmarks: login throughput vs raw aiohttp and Authlib, core CPU, start-up, memory."""
    _install_project(session)
    # Authlib (on httpx) is a contender in the benchmark only, never a dependency. With
    # sniffio missing, httpcore retries a failed import on every request: installing it is
    # the faster set-up for Authlib, and a slightly slower one for Keyloom (anyio then asks
    # sniffio for the event loop).
    session.install("authlib>=1.3", "httpx>=0.27", "sniffio>=1.3", "pyinstrument>=4.6")
    session.install("asyncpg>=0.29")  # the users adapter's PostgreSQL figure
    # itsdangerous: Starlette's SessionMiddleware, the session cookie contender.
    session.install("itsdangerous>=2.1")
    session.run("python", "benchmarks/run.py", *session.posargs)


@nox.session(python="3.11")
def stress(session: nox.Session) -> None:
    """Load, injected-fault and fuzz figures through the real web integration, then 10,000
    logins across four workers on Redis and on SQLite (``benchmarks/bench_workers.py``)."""
    _install_project(session)
    session.install("gunicorn>=22")
    session.run("python", "benchmarks/stress.py", *session.posargs)
    session.run("python", "benchmarks/bench_workers.py", "--gunicorn")

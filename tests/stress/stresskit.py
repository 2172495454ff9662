"""Harness of the reliability and security suite, shared by ``tests/stress`` and ``benchmarks/stress.py``.

Everything runs on 127.0.0.1 in one process:

- :class:`StressEmulator`: the TikTok emulator plus a :class:`CodeLedger` middleware on its
  token endpoint that records every submission of every authorization code, and whether the
  emulator had already consumed the code when it arrived.
- :func:`serve_app`: the real ``aiohttp.web`` integration (``setup_keyloom``) on a loopback
  socket, with a :class:`ResponseLog` middleware (statuses, session cookies issued) and the
  ``on_login`` calls recorded.
- :func:`browse_login` and :func:`run_logins`: simulated browsers (one ``aiohttp``
  ``ClientSession`` and cookie jar each) doing start → authorize → callback → session check,
  every answer checked against the protocol (typed errors, never 500).
- :class:`HostileProvider`: a provider that answers whatever a test tells it to.
- Hypothesis strategies for hostile callback requests and provider answers, and
  :func:`check_answer`, the oracle every fuzzed answer goes through.
- Process figures: open file descriptors, asyncio tasks, RSS.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gzip
import itertools
import json
import logging
import re
import resource
import socket
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlencode, urlsplit

import aiohttp
import anyio
import yarl
from aiohttp import web
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from keyloom_tiktok import tiktok
from keyloom_tiktok.emulator import (
    DEFAULT_CLIENT_KEY,
    DEFAULT_CLIENT_SECRET,
    REVOKE_PATH,
    TOKEN_PATH,
    USER_INFO_PATH,
    EmulatedApp,
    TikTokEmulator,
)

from keyloom_core import Keyloom, KeyloomError, LoginResult, Provider, define_keyloom
from keyloom_core.http import RetryPolicy
from keyloom_core.testing.emulator import CodeFailure, FaultInjector
from keyloom_core.web import (
    SESSION_COOKIE,
    STATE_COOKIE,
    AuthHandler,
    AuthRequest,
    AuthResponse,
    LogoutCallback,
)
from keyloom_core.web.aiohttp import current_user, setup_keyloom
from keyloom_core.web.sessions import new_csrf_token

SIGNING_SECRET = "stress-signing-secret-0123456789-abcdefghijkl"
BASE_PATH = "/api/auth"
JSON_ACCEPT: Mapping[str, str] = {"Accept": "application/json"}
HTML_ACCEPT: Mapping[str, str] = {
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
}
#: Statuses an error answer may have: a 4xx, or 502/503/504 when the provider failed.
ERROR_STATUSES = frozenset(range(400, 500)) | {502, 503, 504}
#: A retry of a code exchange is only safe after these answers (the provider did not act).
SAFE_TO_RESUBMIT = frozenset({429, 503})
DEFAULT_REDIRECT_URIS = (
    "http://127.0.0.1:*/callback/",
    "http://127.0.0.1:*/api/auth/oauth/tiktok/callback",
)

log = logging.getLogger("keyloom.stress")


def error_codes() -> frozenset[str]:
    """Every ``code`` a :class:`KeyloomError` subclass answers with, ``internal_error`` aside."""
    seen: set[str] = set()
    todo: list[type[KeyloomError]] = [KeyloomError]
    while todo:
        cls = todo.pop()
        seen.add(cls.code)
        todo.extend(cls.__subclasses__())
    return frozenset(seen - {"internal_error"})


# -- process figures ---------------------------------------------------------------------------


def open_fds() -> int:
    """Open file descriptors of this process."""
    return sum(1 for _ in Path("/proc/self/fd").iterdir())


def task_count() -> int:
    """asyncio tasks alive in the running loop (the caller's own included)."""
    return len(asyncio.all_tasks())


def peak_rss_mb() -> float:
    """Peak resident memory of this process, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    """Current resident memory, in MiB."""
    for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    """The *q*-th percentile (0-100), nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def pool(keyloom: Keyloom) -> tuple[int, int]:
    """``(acquired, idle)`` connections of the Keyloom HTTP client's connector."""
    connector = keyloom.http.session.connector
    if connector is None:
        return 0, 0
    acquired = len(getattr(connector, "_acquired", ()))
    idle = sum(len(conns) for conns in getattr(connector, "_conns", {}).values())
    return acquired, idle


async def settle(
    condition: Callable[[], bool], *, timeout: float = 5.0, interval: float = 0.05
) -> bool:
    """Wait until *condition()* holds (``True``) or *timeout* passes (``False``)."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(interval)


# -- the emulator, instrumented ----------------------------------------------------------------


@dataclasses.dataclass
class Submission:
    """One submission of an authorization code to the token endpoint.

    Attributes:
        consumed_before: The emulator had already consumed the code when it arrived.
        verifier: The ``code_verifier`` sent.
        status: The answer's status, or ``None`` when no answer was produced (the handler
            was cancelled or failed).
    """

    consumed_before: bool
    verifier: str
    status: int | None = None


class CodeLedger:
    """aiohttp middleware on the emulator's token endpoint counting each code's submissions.

    It is placed outside the fault injector, so it sees every submission, including those
    that were answered with an injected fault or whose answer was lost.
    """

    __middleware_version__: ClassVar[int] = 1

    def __init__(self, emulator: TikTokEmulator) -> None:
        self.emulator = emulator
        self.codes: dict[str, list[Submission]] = {}

    async def __call__(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.method != "POST" or request.path != TOKEN_PATH:
            return await handler(request)
        form = await request.post()
        code = form.get("code")
        if form.get("grant_type") != "authorization_code" or not isinstance(code, str):
            return await handler(request)
        found = self.emulator.book.inspect_code(
            code,
            client_id=str(form.get("client_key", "")),
            redirect_uri=str(form.get("redirect_uri", "")),
        )
        entry = Submission(
            consumed_before=found is CodeFailure.USED, verifier=str(form.get("code_verifier", ""))
        )
        self.codes.setdefault(code, []).append(entry)
        response = await handler(request)
        entry.status = response.status
        return response

    @property
    def submissions(self) -> int:
        """Code submissions in all."""
        return sum(len(s) for s in self.codes.values())

    def replays(self) -> list[str]:
        """Codes submitted again after the emulator had consumed them (must be empty)."""
        return [c for c, subs in self.codes.items() if any(s.consumed_before for s in subs)]

    def unsafe_resubmissions(self) -> list[str]:
        """Codes submitted again after an answer other than 429/503 (or after no answer)."""
        bad = []
        for code, subs in self.codes.items():
            if any(s.status not in SAFE_TO_RESUBMIT for s in subs[:-1]):
                bad.append(code)
        return bad

    def resubmitted(self) -> int:
        """Codes submitted more than once (safe retries after 429/503)."""
        return sum(1 for subs in self.codes.values() if len(subs) > 1)


class Gate:
    """aiohttp middleware that holds requests to one path until released."""

    __middleware_version__: ClassVar[int] = 1

    def __init__(self, path: str) -> None:
        self.path = path
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.cancelled = 0
        self.passed = 0

    async def __call__(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path != self.path:
            return await handler(request)
        self.entered.set()
        try:
            with anyio.fail_after(30):
                await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        self.passed += 1
        return await handler(request)


class StressEmulator(TikTokEmulator):
    """The TikTok emulator with a :class:`CodeLedger` (and any extra middlewares) in front."""

    def __init__(self, *, middlewares: Sequence[object] = (), **options: Any) -> None:
        options.setdefault("consent", "approve")
        options.setdefault("user_info_rate_limit", None)
        super().__init__(**options)
        self.ledger = CodeLedger(self)
        self.extra_middlewares = list(middlewares)

    def build_app(self) -> web.Application:
        app = super().build_app()
        for middleware in reversed([self.ledger, *self.extra_middlewares]):
            app.middlewares.insert(0, middleware)  # type: ignore[arg-type]
        return app


def fault_injector(rate: float, *, seed: int = 20240501) -> FaultInjector:
    """Every fault kind at *rate*; the answer is lost after the work is done (harder case)."""
    return FaultInjector(
        rate=rate,
        seed=seed,
        delay_seconds=0.1,
        timeout_seconds=4.0,
        retry_after=1,
        process_first=True,
    )


def emulated_app(secret: str = DEFAULT_CLIENT_SECRET) -> EmulatedApp:
    """The emulator's desktop test app (loopback redirect URIs), with *secret*."""
    return EmulatedApp(
        client_key=DEFAULT_CLIENT_KEY,
        client_secret=secret,
        redirect_uris=DEFAULT_REDIRECT_URIS,
        app_type="desktop",
    )


def tiktok_provider(
    origin: str, *, secret: str = DEFAULT_CLIENT_SECRET, **options: Any
) -> Provider:
    """The TikTok provider with every endpoint on *origin*."""
    return tiktok(
        client_id=DEFAULT_CLIENT_KEY, client_secret=secret, endpoint_origin=origin, **options
    )


# -- the app -----------------------------------------------------------------------------------


class ResponseLog:
    """App middleware: every status answered, and every response that set a session cookie."""

    __middleware_version__: ClassVar[int] = 1

    def __init__(self) -> None:
        self.statuses: Counter[int] = Counter()
        self.sessions_issued = 0
        self.started = 0
        self.finished = 0
        self.by_route: Counter[str] = Counter()  #: answers produced, by last path segment

    async def __call__(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        self.started += 1
        response = await handler(request)
        self.finished += 1
        self.by_route[request.path.rsplit("/", 1)[-1]] += 1
        self.statuses[response.status] += 1
        for header in response.headers.getall("Set-Cookie", ()):
            name, _, rest = header.partition("=")
            if name == SESSION_COOKIE and not rest.startswith(";"):
                self.sessions_issued += 1
        return response

    @property
    def server_errors(self) -> int:
        """Answers that are 5xx other than 502/503/504 (must stay 0)."""
        return sum(
            n
            for status, n in self.statuses.items()
            if status >= 500 and status not in ERROR_STATUSES
        )


@dataclasses.dataclass
class Stack:
    """The app (real aiohttp.web integration) and, usually, the emulator it signs in with."""

    url: str
    keyloom: Keyloom
    handler: AuthHandler
    responses: ResponseLog
    logins: deque[LoginResult]
    emulator: StressEmulator | None = None

    def auth(self, path: str) -> str:
        """Absolute URL of an auth route (``auth("/session")``)."""
        return f"{self.url}{self.keyloom.base_path}{path}"


def _listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


@contextlib.asynccontextmanager
async def serve_app(
    *providers: Provider,
    emulator: StressEmulator | None = None,
    handler_cancellation: bool = False,
    on_login: Callable[[LoginResult], Awaitable[None]] | None = None,
    on_logout: LogoutCallback | None = None,
    **keyloom_options: Any,
) -> AsyncIterator[Stack]:
    """Run the app with ``setup_keyloom`` on a loopback port; yield its :class:`Stack`.

    Without *providers*, TikTok pointed at *emulator* is configured.
    """
    sock = _listening_socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    if not providers:
        assert emulator is not None
        providers = (tiktok_provider(emulator.url),)
    keyloom_options.setdefault("secret", SIGNING_SECRET)
    keyloom_options.setdefault("autoload", False)
    keyloom = define_keyloom(providers=list(providers), base_url=url, **keyloom_options)
    logins: deque[LoginResult] = deque(maxlen=100)  # the latest only: memory stays flat

    async def record(result: LoginResult) -> None:
        logins.append(result)
        if on_login is not None:
            await on_login(result)

    responses = ResponseLog()
    app = web.Application(middlewares=[responses])
    handler = setup_keyloom(app, keyloom, on_login=record, on_logout=on_logout)

    async def me(request: web.Request) -> web.Response:
        return web.json_response({"user": await current_user(request)})

    app.router.add_get("/me", me)
    runner = web.AppRunner(app, handler_cancellation=handler_cancellation, access_log=None)
    await runner.setup()
    try:
        await web.SockSite(runner, sock, backlog=1024).start()
        yield Stack(url, keyloom, handler, responses, logins, emulator)
    finally:
        with anyio.CancelScope(shield=True):
            await runner.cleanup()
        sock.close()


@contextlib.asynccontextmanager
async def stress_stack(
    *,
    faults: FaultInjector | None = None,
    emulator_options: Mapping[str, Any] | None = None,
    emulator_middlewares: Sequence[object] = (),
    **app_options: Any,
) -> AsyncIterator[Stack]:
    """The emulator and the app signing in with it, both on 127.0.0.1."""
    async with (
        StressEmulator(
            faults=faults, middlewares=emulator_middlewares, **(emulator_options or {})
        ) as emulator,
        serve_app(emulator=emulator, **app_options) as stack,
    ):
        yield stack


def new_browser(**options: Any) -> aiohttp.ClientSession:
    """A simulated browser: its own cookie jar (loopback cookies kept) and connection pool.

    Call it inside the running loop; :func:`browser` wraps it for ``LoopRunner.enter``.
    """
    return aiohttp.ClientSession(
        cookie_jar=aiohttp.CookieJar(unsafe=True),
        timeout=aiohttp.ClientTimeout(total=30),
        **options,
    )


@contextlib.asynccontextmanager
async def browser() -> AsyncIterator[aiohttp.ClientSession]:
    """:func:`new_browser`, created in the loop that enters it."""
    async with new_browser() as session:
        yield session


# -- one login, as a browser does it -----------------------------------------------------------


@dataclasses.dataclass
class Outcome:
    """How one login ended.

    Attributes:
        label: ``"success"``, the error code the app answered with, or what went wrong on
            the client side.
        status: The callback's status (``None`` when it never answered).
        problem: A protocol violation (a 500, an untyped error, a session cookie set on an
            error...), or ``None``.
        seconds: Wall time of the whole login.
    """

    label: str
    status: int | None = None
    problem: str | None = None
    seconds: float = 0.0


_CODE_IN_PAGE = re.compile(r"<p><code>([a-z_]+)</code></p>")


def _session_cookie_set(headers: Any) -> bool:
    for header in headers.getall("Set-Cookie", ()):
        name, _, rest = header.partition("=")
        if name == SESSION_COOKIE and not rest.startswith(";"):
            return True
    return False


def describe_error(  # noqa: PLR0911 (one return per kind of answer)
    status: int, content_type: str, body: bytes, *, html: bool
) -> tuple[str, str | None]:
    """``(error code, problem or None)`` of an error answer of the web layer."""
    if status not in ERROR_STATUSES:
        return f"http_{status}", f"error answered with HTTP {status}"
    if html:
        if not content_type.startswith("text/html"):
            return f"http_{status}", f"HTML error page expected, got {content_type!r}"
        text = body.decode("utf-8", "replace")
        found = _CODE_IN_PAGE.search(text)
        if found is None or "<h1>" not in text:
            return f"http_{status}", "error page without a title or an error code"
        return found.group(1), None
    if not content_type.startswith("application/json"):
        return f"http_{status}", f"JSON error expected, got {content_type!r}"
    try:
        data = json.loads(body)
    except ValueError:
        return f"http_{status}", "error body is not JSON"
    if not isinstance(data, dict) or not isinstance(data.get("error"), str):
        return f"http_{status}", "error body has no 'error' code"
    code = data["error"]
    if "message" in data and not (isinstance(data["message"], str) and data["message"]):
        return code, "error body has an empty message"
    return code, None


async def browse_login(  # noqa: PLR0911 (one return per step)
    browser: aiohttp.ClientSession,
    stack: Stack,
    *,
    html: bool = False,
    callback_url: str = "/dashboard",
    provider: str = "tiktok",
    transcript: list[str] | None = None,
) -> Outcome:
    """start → authorize (consent ``approve``) → callback → session check, all checked.

    With *transcript*, every answer (status, headers, body) is appended to it as text.
    """
    accept = HTML_ACCEPT if html else JSON_ACCEPT

    def note(resp: aiohttp.ClientResponse, body: bytes) -> None:
        if transcript is not None:
            headers = "\n".join(f"{k}: {v}" for k, v in resp.headers.items())
            transcript.append(f"{resp.status}\n{headers}\n\n{body.decode('utf-8', 'replace')}")

    async with browser.get(
        stack.auth(f"/oauth/{provider}/start"),
        params={"callbackUrl": callback_url},
        headers=accept,
        allow_redirects=False,
    ) as resp:
        note(resp, await resp.read())
        if resp.status != 302:
            return Outcome("start_failed", resp.status, f"start answered {resp.status}")
        authorize = resp.headers["Location"]
    async with browser.get(yarl.URL(authorize, encoded=True), allow_redirects=False) as resp:
        note(resp, await resp.read())
        if resp.status != 302:
            return Outcome("authorize_failed", resp.status, f"authorize answered {resp.status}")
        callback = resp.headers["Location"]
    async with browser.get(
        yarl.URL(callback, encoded=True), headers=accept, allow_redirects=False
    ) as resp:
        body = await resp.read()
        note(resp, body)
        status, content_type = resp.status, resp.headers.get("Content-Type", "")
        location = resp.headers.get("Location", "")
        cookie_set = _session_cookie_set(resp.headers)
    if status != 302:
        code, problem = describe_error(status, content_type, body, html=html)
        if cookie_set:
            problem = problem or "a session cookie was set on an error"
        return Outcome(code, status, problem)
    if location != f"{stack.url}{callback_url}":
        return Outcome("bad_redirect", status, f"callback redirected to {location!r}")
    if not cookie_set:
        return Outcome("no_session_cookie", status, "success without a session cookie")
    async with browser.get(stack.auth("/session"), headers=JSON_ACCEPT) as resp:
        raw = await resp.read()
        note(resp, raw)
        data = json.loads(raw)
    if not isinstance(data, dict) or not isinstance(data.get("user"), dict):
        return Outcome("no_session", status, "the session check found no user")
    return Outcome("success", status)


@dataclasses.dataclass
class LoadReport:
    """What :func:`run_logins` measured."""

    logins: int
    concurrency: int
    seconds: float
    outcomes: Counter[str]
    statuses: Counter[int | None]
    latencies: list[float]
    problems: list[str]
    label_statuses: dict[str, set[int | None]] = dataclasses.field(default_factory=dict)

    @property
    def successes(self) -> int:
        """Logins that ended signed in."""
        return self.outcomes["success"]

    @property
    def failures(self) -> int:
        """Logins that did not."""
        return self.logins - self.successes

    @property
    def throughput(self) -> float:
        """Completed logins per second."""
        return self.logins / self.seconds if self.seconds else float("nan")

    def p(self, q: float) -> float:
        """Latency percentile (seconds) over all logins."""
        return percentile(self.latencies, q)


async def run_logins(
    stack: Stack,
    *,
    logins: int,
    concurrency: int,
    html_every: int = 0,
    login_timeout: float = 30.0,
    deadline: float = 600.0,
) -> LoadReport:
    """*logins* complete logins by *concurrency* simulated browsers at once.

    Each browser keeps its connection pool and cookie jar between its logins, and clears the
    jar before each (a fresh visitor). Every *html_every*-th login navigates as a browser
    (``Accept: text/html``) and so gets HTML error pages; the others ask for JSON.
    """
    counter = itertools.count()
    outcomes: Counter[str] = Counter()
    statuses: Counter[int | None] = Counter()
    latencies: list[float] = []
    problems: list[str] = []
    label_statuses: dict[str, set[int | None]] = {}

    async def browser_worker() -> None:
        async with new_browser() as browser:
            while (index := next(counter)) < logins:
                browser.cookie_jar.clear()
                html = bool(html_every) and index % html_every == 0
                began = time.perf_counter()
                try:
                    with anyio.fail_after(login_timeout):
                        outcome = await browse_login(browser, stack, html=html)
                except TimeoutError:
                    outcome = Outcome("client_timeout", None, f"login took over {login_timeout}s")
                except (aiohttp.ClientError, OSError, ValueError) as exc:
                    outcome = Outcome(
                        f"client_{type(exc).__name__}", None, f"browser failed: {exc!r}"
                    )
                outcome.seconds = time.perf_counter() - began
                outcomes[outcome.label] += 1
                statuses[outcome.status] += 1
                label_statuses.setdefault(outcome.label, set()).add(outcome.status)
                latencies.append(outcome.seconds)
                if outcome.problem is not None:
                    problems.append(f"{outcome.label} ({outcome.status}): {outcome.problem}")

    began = time.perf_counter()
    with anyio.fail_after(deadline):
        async with anyio.create_task_group() as tasks:
            for _ in range(min(concurrency, logins)):
                tasks.start_soon(browser_worker)
    return LoadReport(
        logins=logins,
        concurrency=concurrency,
        seconds=time.perf_counter() - began,
        outcomes=outcomes,
        statuses=statuses,
        latencies=latencies,
        problems=problems,
        label_statuses=label_statuses,
    )


@dataclasses.dataclass
class ResourceFigures:
    """Open fds, asyncio tasks and memory around a load run."""

    fds_before: int = 0
    fds_idle_after: int = 0
    fds_after_shutdown: int = 0
    fds_baseline: int = 0
    tasks_before: int = 0
    tasks_idle_after: int = 0
    tasks_after_shutdown: int = 0
    tasks_baseline: int = 0
    pooled_after: int = 0
    acquired_after: int = 0
    rss_before_mb: float = 0.0
    rss_after_mb: float = 0.0
    peak_rss_mb: float = 0.0


async def measured_load(
    *, logins: int, concurrency: int, warmup: int = 20, fd_tolerance: int = 8
) -> tuple[LoadReport, ResourceFigures]:
    """A load run on a fresh stack, with fds/tasks before, idle after, and after shutdown.

    The baseline is taken before the stack starts; "before" once it runs and is warm;
    "idle after" once the browsers have gone (the Keyloom client's idle keep-alive pool to
    the emulator is still open then: both ends of each pooled connection are in this
    process); "after shutdown" once everything is closed again.
    """
    figures = ResourceFigures()
    figures.fds_baseline, figures.tasks_baseline = open_fds(), task_count()
    async with stress_stack() as stack:
        await run_logins(stack, logins=warmup, concurrency=min(warmup, concurrency))
        await settle(
            lambda: open_fds() <= figures.fds_baseline + fd_tolerance + 2 * pool(stack.keyloom)[1]
        )
        figures.fds_before, figures.tasks_before = open_fds(), task_count()
        figures.rss_before_mb = rss_mb()
        report = await run_logins(stack, logins=logins, concurrency=concurrency)

        def idle() -> bool:
            acquired, idle_conns = pool(stack.keyloom)
            return (
                acquired == 0
                and open_fds() <= figures.fds_before + 2 * idle_conns + fd_tolerance
                and task_count() <= figures.tasks_before + idle_conns + fd_tolerance
            )

        await settle(idle, timeout=10.0)
        figures.acquired_after, figures.pooled_after = pool(stack.keyloom)
        figures.fds_idle_after, figures.tasks_idle_after = open_fds(), task_count()
        figures.rss_after_mb = rss_mb()
    await settle(
        lambda: (
            open_fds() <= figures.fds_baseline + fd_tolerance
            and task_count() <= figures.tasks_baseline
        ),
        timeout=10.0,
    )
    figures.fds_after_shutdown, figures.tasks_after_shutdown = open_fds(), task_count()
    figures.peak_rss_mb = peak_rss_mb()
    return report, figures


# -- fault runs ----------------------------------------------------------------------------------


@dataclasses.dataclass
class FaultReport:
    """A load run against an emulator injecting faults."""

    report: LoadReport
    injected: dict[str, int]
    code_submissions: int
    codes: int
    resubmitted: int
    replays: list[str]
    unsafe_resubmissions: list[str]
    server_errors: int
    missing_verifier: int
    unknown_codes: list[str]


#: Fuzzed answers with ``Retry-After`` must not slow the fuzzing down.
FUZZ_RETRY = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02, max_retry_after=0.05)
FAULT_KEYLOOM_TIMEOUT = 1.5
FAULT_RETRY = RetryPolicy(attempts=3, base_delay=0.05, max_delay=0.2, max_retry_after=2.0)


async def fault_run(
    *,
    logins: int,
    concurrency: int,
    rate: float = 0.2,
    seed: int = 20240501,
    error_status: str = "200",
) -> FaultReport:
    """*logins* logins while the emulator injects every fault kind at *rate*."""
    injector = fault_injector(rate, seed=seed)
    async with stress_stack(
        faults=injector,
        emulator_options={"error_status": error_status},
        timeout=FAULT_KEYLOOM_TIMEOUT,
        retry=FAULT_RETRY,
    ) as stack:
        report = await run_logins(
            stack, logins=logins, concurrency=concurrency, html_every=4, login_timeout=20.0
        )
        emulator = stack.emulator
        assert emulator is not None
        ledger = emulator.ledger
        known = error_codes() | {"success"}
        return FaultReport(
            report=report,
            injected=dict(injector.counts),
            code_submissions=ledger.submissions,
            codes=len(ledger.codes),
            resubmitted=ledger.resubmitted(),
            replays=ledger.replays(),
            unsafe_resubmissions=ledger.unsafe_resubmissions(),
            server_errors=stack.responses.server_errors,
            missing_verifier=sum(
                1
                for subs in ledger.codes.values()
                for s in subs
                if not re.fullmatch(r"[A-Za-z0-9\-._~]{43,128}", s.verifier)
            ),
            unknown_codes=sorted(set(report.outcomes) - known),
        )


# -- fuzzing: the oracle -----------------------------------------------------------------------


@dataclasses.dataclass
class FuzzTally:
    """What a fuzz run saw. ``unhandled`` must stay 0."""

    cases: int = 0
    statuses: Counter[int] = dataclasses.field(default_factory=Counter)
    unhandled: int = 0
    failures: list[str] = dataclasses.field(default_factory=list)
    skipped: int = 0
    signed_in: int = 0
    logged_errors: int = 0

    def fail(self, what: str) -> None:
        self.unhandled += 1
        if len(self.failures) < 200:
            self.failures.append(what)


class ErrorRecords(logging.Handler):
    """Collects ERROR records of the ``keyloom`` loggers (an unexpected exception is one)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def error_records() -> Iterator[ErrorRecords]:
    """Collect ``keyloom.*`` records at ERROR and above while the block runs."""
    handler = ErrorRecords()
    logger = logging.getLogger("keyloom")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


OK_STATUSES = frozenset({200, 302}) | ERROR_STATUSES


def check_answer(
    response: AuthResponse, request: AuthRequest, tally: FuzzTally, *, may_sign_in: bool = False
) -> None:
    """The oracle: a typed answer (never 500), a JSON or HTML error body, no stray session."""
    tally.cases += 1
    tally.statuses[response.status] += 1
    where = f"{request.method} {request.path[:60]!r}"
    if response.status not in OK_STATUSES:
        tally.fail(f"{where} answered {response.status}: {response.body[:200]!r}")
        return
    sets_session = any(
        c.startswith(f"{SESSION_COOKIE}=") and not c.startswith(f"{SESSION_COOKIE}=;")
        for c in response.cookies
    )
    if sets_session and not may_sign_in:
        tally.fail(f"{where} set a session cookie")
    if request.method == "HEAD":  # answered as GET, without the body
        if response.body:
            tally.fail(f"{where} answered HEAD with a body")
        return
    if response.status < 400:
        return
    if response.content_type is None:
        tally.fail(f"{where} answered {response.status} without a body")
    elif response.content_type.startswith("application/json"):
        try:
            data = json.loads(response.body)
        except ValueError:
            tally.fail(f"{where}: error body is not JSON")
            return
        if not isinstance(data, dict) or not isinstance(data.get("error"), str):
            tally.fail(f"{where}: error body has no code: {data!r:.200}")
    elif response.content_type.startswith("text/html"):
        if not _CODE_IN_PAGE.search(response.body.decode("utf-8", "replace")):
            tally.fail(f"{where}: error page without an error code")
    else:
        tally.fail(f"{where}: error answered as {response.content_type!r}")


async def handle_checked(
    handler: AuthHandler, request: AuthRequest, tally: FuzzTally, *, may_sign_in: bool = False
) -> AuthResponse | None:
    """Send *request* to *handler* and check the answer; an exception counts as unhandled."""
    try:
        response = await handler.handle(request)
    except Exception as exc:
        tally.cases += 1
        tally.fail(f"handle() raised {type(exc).__name__}: {exc!s:.200}")
        return None
    check_answer(response, request, tally, may_sign_in=may_sign_in)
    return response


# -- fuzzing: hostile callback requests --------------------------------------------------------

CALLBACK_KEYS = (
    "code",
    "state",
    "scopes",
    "scope",
    "error",
    "error_description",
    "error_uri",
    "callbackUrl",
)
NASTY_VALUES = (
    "",
    " ",
    "\x00",
    "\r\n",
    "\t",
    "%",
    "%%",
    "%2",
    "%00",
    "%ZZ",
    "%252F%252Fevil.com",
    "../../etc/passwd",
    "<script>alert(1)</script>",
    "'\"><img src=x onerror=alert(1)>",
    "\u202egnp.exe",
    "\ufeff",
    "\U0001f600",
    "null",
    "undefined",
    "[]",
    "{}",
    "true",
    "0",
    "-1",
    "1e309",
    "NaN",
    ".",
    "..",
    "a.b",
    "a.b.c",
    "=",
    ";",
    ",",
    "&",
    "access_denied",
    "server_error",
    "invalid_request",
    "user.info.basic",
    "user.info.basic,video.list",
    "video.list",
    ",,,",
    "//evil.com",
    "javascript:alert(1)",
    "\\\\evil.com",
    "\x7f",
    "\u0085",
    "\u2028",
    "\udbff".encode("utf-8", "surrogatepass").decode("utf-8", "replace"),
)
HOSTILE_PATHS = (
    "/oauth/tiktok/callback",
    "/oauth/tiktok/callback/",
    "/oauth/TikTok/callback",
    "/oauth//callback",
    "/oauth/tiktok/callback/extra",
    "/oauth/unknown/callback",
    "/oauth/tiktok/start",
    "/oauth/%74iktok/callback",
    "/oauth/tiktok%2Fcallback",
    "/oauth/../session",
    "/session",
    "/logout",
    "/csrf",
    "/providers",
    "/",
    "",
)
STATE_MODES = (
    "none",
    "text",
    "fresh",
    "fresh_echo",
    "expired",
    "foreign",
    "tampered",
    "other_secret",
)

#: Values at and over the limits (4096 per parameter, 6144 for the whole query); a request
#: line over 8190 bytes never reaches Keyloom through aiohttp.
huge_values = st.builds(
    lambda char, n: char * n,
    st.sampled_from(["a", "%", "é", "\U0001f600", "\x00", ",", "="]),
    st.sampled_from([1000, 2048, 4096, 4097, 6145, 8200]),
)
#: Text a query can decode to: any Unicode but lone surrogates (percent-decoding replaces
#: invalid UTF-8, so no surrogate reaches the handler through a query string).
unicode_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=24)
#: What aiohttp makes of invalid UTF-8 in a header (``surrogateescape``): lone surrogates.
escaped_bytes = st.binary(max_size=24).map(lambda b: b.decode("utf-8", "surrogateescape"))
values = st.one_of(
    unicode_text,
    st.sampled_from(NASTY_VALUES),
    st.text(alphabet=st.characters(min_codepoint=0x80, codec="utf-8"), max_size=24),
    huge_values,
)
keys = st.one_of(
    st.sampled_from(CALLBACK_KEYS),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=12),
    st.sampled_from(NASTY_VALUES),
)
cookie_names = st.one_of(
    st.sampled_from([STATE_COOKIE, SESSION_COOKIE, "__keyloom_csrf", "", " ", "a b", "=", ";"]),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz_-", min_size=1, max_size=12),
)
header_values = st.one_of(values, escaped_bytes)
cookie_values = st.one_of(
    header_values, st.sampled_from(['"quoted"', '"', '""', "a=b", "a;b", "a,b"])
)


@dataclasses.dataclass
class CallbackCase:
    """One generated request; ``state_mode`` is resolved against a live login when sent."""

    method: str
    path: str
    query: list[tuple[str, str]]
    raw_query: str | None
    cookies: list[tuple[str, str]]
    state_mode: str
    echo_state: bool
    accept: str | None
    extra_headers: list[tuple[str, str]]


@st.composite
def callback_cases(draw: st.DrawFn) -> CallbackCase:
    """A hostile callback request (sometimes another auth route, method or path)."""
    path = "/oauth/tiktok/callback"
    method = "GET"
    if draw(st.integers(0, 4)) == 0:
        path = draw(
            st.one_of(
                st.sampled_from(HOSTILE_PATHS),
                st.text(alphabet=st.characters(codec="utf-8"), max_size=24),
            )
        )
        method = draw(st.sampled_from(["GET", "POST", "HEAD", "PUT", "get", "BREW", ""]))
    query: list[tuple[str, str]] = [
        (key, draw(values)) for key in CALLBACK_KEYS[:5] if draw(st.integers(0, 2)) > 0
    ]
    if draw(st.booleans()):
        query += draw(st.lists(st.tuples(keys, values), max_size=3))
        query = draw(st.permutations(query))
    if draw(st.integers(0, 9)) == 0:  # repeated keys, and sometimes too many fields
        query += [(draw(keys), draw(values))] * draw(st.integers(2, 40))
    raw_query = None
    if draw(st.integers(0, 9)) == 0:
        raw_query = draw(
            st.one_of(
                st.text(alphabet=st.characters(codec="utf-8"), max_size=32),
                st.sampled_from(
                    [
                        "&&&",
                        "=&=",
                        "code",
                        "code=&state=",
                        "a=%ZZ&b=%",
                        "%00=%00",
                        ";;;",
                        "code=1;state=2",
                    ]
                ),
            )
        )
    cookies = draw(st.lists(st.tuples(cookie_names, cookie_values), max_size=2))
    accept = draw(
        st.sampled_from(
            [
                None,
                "application/json",
                HTML_ACCEPT["Accept"],
                "text/html",
                "*/*",
                "text/html, application/json",
                "\x00",
            ]
        )
    )
    extra: list[tuple[str, str]] = []
    if draw(st.integers(0, 4)) == 0:
        extra.append(
            (
                draw(
                    st.sampled_from(
                        ["x-keyloom-csrf", "host", "referer", "origin", "x-forwarded-host"]
                    )
                ),
                draw(header_values),
            )
        )
    return CallbackCase(
        method=method,
        path=path,
        query=query,
        raw_query=raw_query,
        cookies=cookies,
        state_mode="none",
        echo_state=draw(st.integers(0, 3)) > 0,
        accept=accept,
        extra_headers=extra,
    )


class StateMint:
    """Makes the state cookies a fuzz case asks for, from live logins of *keyloom*."""

    def __init__(self, keyloom: Keyloom, *, foreign: Keyloom | None = None) -> None:
        self.keyloom = keyloom
        self.foreign = foreign

    async def make(self, mode: str, text: str) -> tuple[str | None, str | None]:
        """``(state cookie, the nonce the provider would echo)`` for *mode*."""
        if mode == "none":
            return None, None
        if mode == "text":
            return text, None
        if mode == "foreign":  # signed by this app, but for another purpose (a CSRF token)
            return new_csrf_token(self.keyloom), None
        when = time.time() - 3600 if mode == "expired" else None
        source = (
            self.foreign if mode == "other_secret" and self.foreign is not None else self.keyloom
        )
        start = await source.begin_login("tiktok", now=when)
        nonce = dict(parse_qsl(urlsplit(start.url).query)).get("state")
        state = start.state
        if mode == "tampered":  # one character changed mid-value (sealed or signed)
            at = len(state) // 2
            state = f"{state[:at]}{'A' if state[at] != 'A' else 'B'}{state[at + 1 :]}"
        return state, nonce


async def build_request(
    case: CallbackCase, mint: StateMint, fallback_text: str = "x.y"
) -> tuple[AuthRequest, bool]:
    """The :class:`AuthRequest` for *case* (through ``AuthRequest.from_raw``, as adapters do).

    Returns the request and whether a live state was used.
    """
    state_cookie, nonce = await mint.make(case.state_mode, fallback_text)
    query = list(case.query)
    if nonce is not None and case.echo_state:
        query = [(k, v) for k, v in query if k != "state"] + [("state", nonce)]
    raw = case.raw_query if case.raw_query is not None else urlencode(query)
    cookies = list(case.cookies)
    if state_cookie is not None:
        cookies.append((STATE_COOKIE, state_cookie))
    cookie_header = "; ".join(f"{k}={v}" for k, v in cookies)
    headers = [*case.extra_headers]
    if cookie_header:
        headers.append(("Cookie", cookie_header))
    if case.accept is not None:
        headers.append(("Accept", case.accept))
    return AuthRequest.from_raw(case.method, case.path, raw, headers), nonce is not None


# -- fuzzing: a hostile provider -----------------------------------------------------------------


@dataclasses.dataclass
class Reply:
    """How the hostile provider answers one request.

    ``mode``: ``plain`` (body with its length), ``chunked`` (no length), ``lying_length``
    (announces more than it sends, then closes), ``gzip`` (``Content-Encoding: gzip``),
    ``reset`` (closes the connection without answering), ``slow`` (trickles the body).
    """

    status: int = 200
    body: bytes = b"{}"
    content_type: str = "application/json"
    mode: str = "plain"
    headers: tuple[tuple[str, str], ...] = ()


_BOMB: list[bytes] = []


def gzip_bomb() -> bytes:
    """16 MiB of zeros, gzipped (about 16 KiB): far over any body limit once inflated."""
    if not _BOMB:
        _BOMB.append(gzip.compress(b"0" * (16 << 20), compresslevel=9))
    return _BOMB[0]


class HostileProvider:
    """A provider on 127.0.0.1 that answers what it is told (the TikTok endpoint paths)."""

    def __init__(self) -> None:
        self.replies: dict[str, Reply] = {}
        self.requests: Counter[str] = Counter()
        self.url = ""
        self._runner: web.AppRunner | None = None

    def set(self, token: Reply, user_info: Reply, revoke: Reply | None = None) -> None:
        """What the next requests to each endpoint get."""
        self.replies = {
            TOKEN_PATH: token,
            USER_INFO_PATH: user_info,
            REVOKE_PATH: revoke or Reply(),
        }

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        self.requests[request.path] += 1
        reply = self.replies.get(request.path, Reply(404, b'{"error":"not_found"}'))
        headers = {"Content-Type": reply.content_type, **dict(reply.headers)}
        if reply.mode == "reset":
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=500)
        if reply.mode == "plain":
            return web.Response(status=reply.status, body=reply.body, headers=headers)
        if reply.mode == "gzip":
            headers["Content-Encoding"] = "gzip"
            return web.Response(status=reply.status, body=reply.body, headers=headers)
        response = web.StreamResponse(status=reply.status, headers=headers)
        if reply.mode == "lying_length":
            response.content_length = len(reply.body) + 1000
        else:
            response.enable_chunked_encoding()
        await response.prepare(request)
        if reply.mode == "slow":
            for i in range(0, len(reply.body), 8):
                await response.write(reply.body[i : i + 8])
                await asyncio.sleep(0.5)
        elif reply.mode == "lying_length":
            await response.write(reply.body)
            if request.transport is not None:
                request.transport.close()
            return response
        else:
            for i in range(0, len(reply.body), 65536):
                await response.write(reply.body[i : i + 65536])
        await response.write_eof()
        return response

    async def __aenter__(self) -> HostileProvider:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._answer)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._runner is not None:
            with anyio.CancelScope(shield=True):
                await self._runner.cleanup()


#: Strings a hostile provider sends (lone surrogates are valid JSON escapes).
NASTY_JSON = (
    "\ud800", "a\udc80b", "a\r\nX-Injected: 1", "\x00", "\udfff", "\u202e", "\x7f", "3600",
    " 3600 ", "\u0663\u0666", "\u00b2", "", " ", "<b>x</b>", "\U0001f600",
)  # fmt: skip
#: Numbers a hostile provider sends where a lifetime belongs.
NASTY_NUMBERS = (
    10**400, 10**309, -(10**400), 2**63, -1, 0, 1e308, 1.7976931348623157e308, float("inf"),
    float("-inf"), float("nan"), "9" * 400, "1e9999", " 3600", "3600\n", "\u0663\u0666", True, None,
)  # fmt: skip
#: What a hostile provider puts in particular fields (others get :data:`NASTY_JSON`).
NASTY_BY_FIELD: Mapping[str, tuple[Any, ...]] = {
    "expires_in": NASTY_NUMBERS,
    "refresh_expires_in": NASTY_NUMBERS,
    "access_token": (
        "a\r\nX-Injected: 1",
        "a\x00b",
        "a\nb",
        "\x7f",
        "a b",
        "\u00e9",
        "",
        "a" * 9000,
    ),
    "display_name": ("\ud800", "a\udc80b", "\udfff\ud800", "\x00", "<script>", "n" * 600_000),
}


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(children, max_size=3) | st.dictionaries(
        st.text(max_size=8), children, max_size=3
    )


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**300, max_value=10**400),
    st.floats(),
    st.text(max_size=24),
    st.sampled_from(NASTY_JSON),
)
json_values = st.recursive(json_scalars, _containers, max_leaves=6)

#: The good answers, their most interesting fields first (Hypothesis favours early choices).
GOOD_TOKEN: Mapping[str, Any] = {
    "expires_in": 86400,
    "access_token": "act.hostile-access-token",
    "refresh_expires_in": 31536000,
    "scope": "user.info.basic",
    "open_id": "open-id-1",
    "refresh_token": "rft.hostile-refresh-token",
    "token_type": "Bearer",
}
GOOD_USER: Mapping[str, Any] = {
    "display_name": "Hostile",
    "open_id": "open-id-1",
    "avatar_url": "https://p16.example/a.png",
    "union_id": "union-1",
}
GOOD_ENVELOPE_ERROR: Mapping[str, Any] = {"code": "ok", "message": "", "log_id": "x"}


@st.composite
def perturbed(
    draw: st.DrawFn, good: Mapping[str, Any], extra: Sequence[str] = ()
) -> dict[str, Any]:
    """*good* with one or two fields dropped or replaced by hostile values (or odd extras)."""
    fields = dict(good)
    count = draw(st.sampled_from([1, 1, 2]))
    names = draw(
        st.lists(st.sampled_from([*good, *extra]), min_size=count, max_size=count, unique=True)
    )
    for name in names:
        choice = draw(st.integers(0, 4))
        if choice == 0:
            fields.pop(name, None)
        elif name in NASTY_BY_FIELD and choice < 3:
            fields[name] = draw(st.sampled_from(NASTY_BY_FIELD[name]))
        elif choice < 3:
            fields[name] = draw(st.one_of(st.sampled_from(NASTY_JSON), huge_values))
        else:
            fields[name] = draw(json_values)
    return fields


def token_bodies(kind: str) -> st.SearchStrategy[Any]:
    """A token answer body: ``clean``, ``perturbed`` (hostile fields) or ``any_json``."""
    if kind == "clean":
        return st.just(dict(GOOD_TOKEN))
    if kind == "perturbed":
        return perturbed(GOOD_TOKEN, ("error", "error_description", "log_id"))
    return json_values


@st.composite
def _user_info(draw: st.DrawFn) -> Any:
    user = draw(perturbed(GOOD_USER))
    error: Any = dict(GOOD_ENVELOPE_ERROR)
    data: Any = {"user": user}
    shape = draw(st.integers(0, 5))
    if shape == 1:
        error = draw(st.one_of(perturbed(GOOD_ENVELOPE_ERROR), json_values))
    elif shape == 2:
        data = draw(st.one_of(st.just(user), json_values))
    return {"data": data, "error": error}


def user_info_bodies(kind: str) -> st.SearchStrategy[Any]:
    """A ``/v2/user/info/`` body in TikTok's envelope: ``clean``, ``perturbed``, ``any_json``."""
    if kind == "clean":
        return st.just({"data": {"user": dict(GOOD_USER)}, "error": dict(GOOD_ENVELOPE_ERROR)})
    if kind == "perturbed":
        return _user_info()
    return json_values


def _encode(body: Any) -> bytes:
    return json.dumps(body).encode("utf-8", "surrogatepass")


#: How a reply can go wrong; ``clean``, ``perturbed`` and ``any_json`` are 200s with a body
#: (the good one, one with hostile fields, any JSON at all), the rest are framed badly.
REPLY_KINDS = (
    "clean", "perturbed", "any_json", "status", "bytes", "empty", "html", "huge",
    "huge_chunked", "deep", "bomb", "lying", "reset", "big_header", "retry_after",
)  # fmt: skip
BODY_KINDS = frozenset({"clean", "perturbed", "any_json"})
RETRY_AFTERS = (
    "0", "-1", "abc", "1e9", "99999999999999999999", "Wed, 21 Oct 2015 07:28:00 GMT",
    "Fri, 01 Jan 2100 00:00:00 GMT", "",
)  # fmt: skip


@st.composite
def replies(draw: st.DrawFn, kind: str, bodies: Callable[[str], st.SearchStrategy[Any]]) -> Reply:
    """A reply of *kind* (see :data:`REPLY_KINDS`) with a body from ``bodies(body kind)``."""
    if kind in BODY_KINDS:
        mode = draw(st.sampled_from(["plain", "plain", "chunked"]))
        return Reply(body=_encode(draw(bodies(kind))), mode=mode)
    content_type = draw(
        st.sampled_from(["application/json", "text/html", "text/plain", "application/octet-stream"])
    )
    some_json = bodies(draw(st.sampled_from(sorted(BODY_KINDS))))
    reply = Reply(content_type=content_type)
    if kind == "status":
        reply.body = _encode(draw(some_json))
        reply.status = draw(
            st.sampled_from([201, 204, 301, 302, 400, 401, 403, 404, 429, 500, 502, 503, 504])
        )
    elif kind == "bytes":
        reply.body = draw(st.binary(max_size=256))
    elif kind == "empty":
        reply.body = b""
    elif kind == "html":
        reply.body = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
        reply.status = draw(st.sampled_from([200, 502]))
    elif kind == "huge":
        reply.body = b'{"access_token": "' + b"a" * ((1 << 20) + 10) + b'"}'
    elif kind == "huge_chunked":
        reply.body, reply.mode = b'{"x": "' + b"b" * ((1 << 20) + 10) + b'"}', "chunked"
    elif kind == "deep":
        opener = draw(st.sampled_from([b"[", b'{"a":', b'{"data":{"user":']))
        reply.body = opener * draw(st.sampled_from([100_000, 1_000, 50_000]))
    elif kind == "bomb":
        reply.body, reply.mode = gzip_bomb(), "gzip"
    elif kind == "lying":
        reply.body, reply.mode = _encode(draw(some_json)), "lying_length"
    elif kind == "reset":
        reply.mode = "reset"
    elif kind == "big_header":
        reply.body, reply.headers = _encode(draw(some_json)), (("X-Padding", "p" * 10000),)
    elif kind == "retry_after":
        reply.body = _encode(draw(some_json))
        reply.status = draw(st.sampled_from([429, 503]))
        reply.headers = (("Retry-After", draw(st.sampled_from(RETRY_AFTERS))),)
    return reply


async def hostile_login(
    handler: AuthHandler,
    hostile: HostileProvider,
    token: Reply,
    user_info: Reply,
    revoke: Reply,
    tally: FuzzTally,
) -> bool:
    """One login against the hostile provider; checks the callback and the session answer.

    Returns whether it signed in.
    """
    hostile.set(token, user_info, revoke)
    start = await handler.keyloom.begin_login("tiktok")
    nonce = dict(parse_qsl(urlsplit(start.url).query))["state"]
    request = AuthRequest(
        "GET",
        "/oauth/tiktok/callback",
        query=[("code", "hostile-code"), ("state", nonce), ("scopes", "user.info.basic")],
        headers=dict(JSON_ACCEPT),
        cookies={STATE_COOKIE: start.state},
    )
    response = await handle_checked(handler, request, tally, may_sign_in=True)
    if response is None or response.status != 302:
        return False
    value = next(
        (
            c.split(";", 1)[0].split("=", 1)[1]
            for c in response.cookies
            if c.startswith(f"{SESSION_COOKIE}=")
        ),
        "",
    )
    if not value:
        tally.fail("a successful callback set no session cookie")
        return False
    session_request = AuthRequest(
        "GET", "/session", headers=dict(JSON_ACCEPT), cookies={SESSION_COOKIE: value}
    )
    answer = await handle_checked(handler, session_request, tally)
    if answer is not None and answer.status in OK_STATUSES and answer.status != 200:
        tally.fail(f"the session check after a login answered {answer.status}")
    return True


# -- fuzz drivers (synchronous: Hypothesis in this thread, the servers in a loop thread) --------


class LoopRunner:
    """An asyncio event loop driven from synchronous code, for Hypothesis-driven tests.

    ``run(coro)`` runs the loop until *coro* is done (the servers entered with ``enter``
    serve meanwhile); ``enter(cm)`` enters an async context manager in the loop and keeps
    it open until the runner is closed. Everything stays on the calling thread.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._exits = contextlib.AsyncExitStack()

    def __enter__(self) -> LoopRunner:
        return self

    def run(self, coro: Awaitable[Any], timeout: float = 120.0) -> Any:
        """Run *coro* in the loop and return its result (at most *timeout* seconds)."""

        async def bounded() -> Any:
            with anyio.fail_after(timeout):
                return await coro

        return self.loop.run_until_complete(bounded())

    def enter(self, manager: contextlib.AbstractAsyncContextManager[Any]) -> Any:
        """Enter *manager* in the loop; it is exited when this runner closes."""
        return self.run(self._exits.enter_async_context(manager))

    def __exit__(self, *exc_info: object) -> None:
        try:
            self.run(self._exits.aclose(), timeout=30.0)
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        finally:
            self.loop.close()


def fuzz_settings(examples: int) -> settings:
    """Deterministic (derandomized) Hypothesis settings without a database or deadline."""
    return settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        print_blob=False,
    )


async def _send_every_state(
    handler: AuthHandler, mint: StateMint, case: CallbackCase, tally: FuzzTally
) -> None:
    for mode in STATE_MODES:
        request, _ = await build_request(dataclasses.replace(case, state_mode=mode), mint)
        await handle_checked(handler, request, tally)


def fuzz_handler(
    runner: LoopRunner,
    handler: AuthHandler,
    mint: StateMint,
    *,
    examples: int,
    stop_on_failure: bool = True,
) -> FuzzTally:
    """Hypothesis-generated hostile requests straight to ``AuthHandler.handle``.

    Each generated request is sent once with every kind of state cookie
    (:data:`STATE_MODES`), so *examples* examples make ``8 * examples`` requests. With
    *stop_on_failure*, the first unhandled case fails (and is shrunk); otherwise every
    example runs and the tally counts the unhandled ones.
    """
    tally = FuzzTally()

    @fuzz_settings(examples)
    @given(case=callback_cases())
    def one(case: CallbackCase) -> None:
        before = tally.unhandled
        runner.run(_send_every_state(handler, mint, case, tally))
        if stop_on_failure:
            assert tally.unhandled == before, tally.failures[-1]

    with error_records() as errors:
        one()
    tally.logged_errors = len(errors.records)
    return tally


_HTTP_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")


def _http_safe(text: str) -> str:
    return _HTTP_FORBIDDEN.sub("", text)


async def send_over_http(
    client: aiohttp.ClientSession,
    stack: Stack,
    mint: StateMint,
    case: CallbackCase,
    tally: FuzzTally,
) -> None:
    """Send *case* to the running app as real HTTP and check the answer."""
    request, _ = await build_request(case, mint)
    from urllib.parse import quote

    path = quote(f"{stack.keyloom.base_path}{case.path}", safe="/%")
    raw = case.raw_query if case.raw_query is not None else urlencode(request.query)
    url = f"{stack.url}{path}?{quote(raw, safe='=&;%+')}"
    headers = [(k, _http_safe(v)) for k, v in request.headers.items() if k != "cookie"]
    if request.cookies:
        headers.append(
            ("Cookie", _http_safe("; ".join(f"{k}={v}" for k, v in request.cookies.items())))
        )
    method = case.method.upper() if case.method.strip() else "GET"
    if method == "BREW":
        method = "PATCH"
    try:
        async with client.request(
            method, yarl.URL(url, encoded=True), headers=headers, allow_redirects=False
        ) as resp:
            body = await resp.read()
            status, content_type = resp.status, resp.headers.get("Content-Type", "")
            ours = resp.headers.get("Cache-Control") == "no-store"
            cookie_set = _session_cookie_set(resp.headers)
    except (ValueError, UnicodeError):  # the client refused to send it: nothing to check
        tally.skipped += 1
        return
    except aiohttp.ClientResponseError as exc:  # aiohttp's parser refused the request line
        status, content_type, body, ours, cookie_set = exc.status, "", b"", False, False
    tally.cases += 1
    tally.statuses[status] += 1
    where = f"HTTP {method} {path[:60]!r}"
    if status not in OK_STATUSES:
        tally.fail(f"{where} answered {status}: {body[:200]!r}")
    elif cookie_set:
        tally.fail(f"{where} set a session cookie")
    elif status >= 400 and ours and method != "HEAD":
        html = "text/html" in content_type
        _, problem = describe_error(status, content_type, body, html=html)
        if problem is not None:
            tally.fail(f"{where}: {problem}")


def fuzz_http(
    runner: LoopRunner,
    stack: Stack,
    client: aiohttp.ClientSession,
    mint: StateMint,
    *,
    examples: int,
    stop_on_failure: bool = True,
) -> FuzzTally:
    """Hypothesis-generated hostile requests to the running app, over real HTTP; the
    requests take the kinds of state cookie (:data:`STATE_MODES`) in turn."""
    tally = FuzzTally()
    modes = itertools.cycle(STATE_MODES)

    @fuzz_settings(examples)
    @given(cases=st.lists(callback_cases(), min_size=1, max_size=3))
    def one(cases: list[CallbackCase]) -> None:
        before = tally.unhandled

        async def send() -> None:
            for case in cases:
                case = dataclasses.replace(case, state_mode=next(modes))  # noqa: PLW2901
                await send_over_http(client, stack, mint, case, tally)

        runner.run(send())
        if stop_on_failure:
            assert tally.unhandled == before, tally.failures[-1]

    with error_records() as errors:
        one()
    tally.logged_errors = len(errors.records)
    return tally


#: Share of the provider fuzzing each reply kind gets (the others get 1).
PLAN_WEIGHTS: Mapping[str, int] = {"perturbed": 8, "any_json": 2, "status": 2}
REVOKE_REPLIES = (
    Reply(),
    Reply(status=500, body=b'{"error":"server_error"}'),
    Reply(mode="reset"),
    Reply(body=b"[" * 100_000),
    Reply(status=200, body=b"not json"),
)


def provider_plans(examples: int) -> list[tuple[str, str, int]]:
    """``(endpoint, reply kind, examples)``: every kind on the token endpoint (the user-info
    answer clean), then every kind on the user-info endpoint (the token answer clean)."""
    units = [
        (target, kind, PLAN_WEIGHTS.get(kind, 1))
        for target in ("token", "user_info")
        for kind in REPLY_KINDS
        if not (target == "user_info" and kind == "clean")
    ]
    total = sum(weight for *_, weight in units)
    return [(t, k, max(2, round(examples * w / total))) for t, k, w in units]


def fuzz_provider(
    runner: LoopRunner,
    handler: AuthHandler,
    hostile: HostileProvider,
    *,
    examples: int,
    stop_on_failure: bool = True,
) -> FuzzTally:
    """Logins against a provider whose token, user-info and revoke answers are generated,
    every :data:`REPLY_KINDS` kind on each endpoint (see :func:`provider_plans`)."""
    tally = FuzzTally()
    with error_records() as errors:
        for target, kind, count in provider_plans(examples):
            token_kind = kind if target == "token" else "clean"
            user_kind = kind if target == "user_info" else "clean"

            @fuzz_settings(count)
            @given(
                token=replies(token_kind, token_bodies),
                user_info=replies(user_kind, user_info_bodies),
                revoke=st.sampled_from(REVOKE_REPLIES),
            )
            def one(token: Reply, user_info: Reply, revoke: Reply) -> None:
                before = tally.unhandled
                if runner.run(hostile_login(handler, hostile, token, user_info, revoke, tally)):
                    tally.signed_in += 1
                if stop_on_failure:
                    assert tally.unhandled == before, tally.failures[-1]

            one()
    tally.logged_errors = len(errors.records)
    return tally


# -- single requests, for the attack cases -------------------------------------------------------


@dataclasses.dataclass
class Answer:
    """A response read whole: status, headers, body, and the ``Set-Cookie`` values by name."""

    status: int
    headers: Any
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)

    def set_cookie(self, name: str) -> str | None:
        """The ``Set-Cookie`` header for *name*, or ``None``."""
        for header in self.headers.getall("Set-Cookie", ()):
            if header.partition("=")[0] == name:
                return str(header)
        return None

    def cookie_value(self, name: str) -> str | None:
        """The value *name* is set to (``""`` when cleared), or ``None`` if not set."""
        header = self.set_cookie(name)
        return None if header is None else header.split(";", 1)[0].split("=", 1)[1]


async def call(
    client: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    cookies: Mapping[str, str] | None = None,
    params: Mapping[str, str] | None = None,
    data: Any = None,
    encoded: bool = False,
) -> Answer:
    """One request without following redirects; *cookies* go in an explicit ``Cookie``
    header (on top of the client's jar); *encoded* sends *url* exactly as given."""
    sent = dict(headers or {})
    if cookies is not None:
        sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
    target: str | yarl.URL = yarl.URL(url, encoded=True) if encoded else url
    async with client.request(
        method, target, headers=sent, params=params, data=data, allow_redirects=False
    ) as resp:
        return Answer(resp.status, resp.headers, await resp.read())


@contextlib.asynccontextmanager
async def bare_client() -> AsyncIterator[aiohttp.ClientSession]:
    """A client without a cookie jar: every cookie it sends is explicit."""
    async with aiohttp.ClientSession(
        cookie_jar=aiohttp.DummyCookieJar(), timeout=aiohttp.ClientTimeout(total=30)
    ) as session:
        yield session


@dataclasses.dataclass
class Started:
    """A login started at the app and authorized at the emulator, not yet called back."""

    authorize_url: str
    state_cookie: str
    callback_url: str

    @property
    def params(self) -> dict[str, str]:
        """The callback's query (``code``, ``scopes``, ``state``), decoded."""
        return dict(parse_qsl(urlsplit(self.callback_url).query))


async def start_and_authorize(
    client: aiohttp.ClientSession,
    stack: Stack,
    *,
    provider: str = "tiktok",
    callback_url: str = "/dashboard",
) -> Started:
    """Start a login and pass the emulator's consent; stop before the callback."""
    start = await call(
        client, "GET", stack.auth(f"/oauth/{provider}/start"), params={"callbackUrl": callback_url}
    )
    assert start.status == 302, start.text
    state = start.cookie_value(STATE_COOKIE)
    assert state
    at_provider = await call(client, "GET", start.headers["Location"], encoded=True)
    assert at_provider.status == 302, at_provider.text
    return Started(start.headers["Location"], state, at_provider.headers["Location"])

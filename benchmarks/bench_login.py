"""Full-login throughput and latency against the TikTok emulator: raw aiohttp, Keyloom, Authlib.

Each contender performs the same three HTTP calls per login: ``GET`` the authorization URL
(the emulator approves at once and answers 302 to the redirect URI with a code), ``POST``
the code to the token endpoint, ``GET`` the user info. Contenders take turns in rounds (the
order rotates each round, each round against a freshly started emulator) so drift in the
machine or in the emulator's state hits them alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import math
import secrets
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import aiohttp
from _common import (
    APP_URL,
    CLIENT_KEY,
    CLIENT_SECRET,
    PROFILE_FIELDS,
    REDIRECT_URI,
    SCOPE,
    SECRET,
    median,
    percentile,
    spread,
    table,
)

AUTHORIZE_PATH = "/v2/auth/authorize/"
TOKEN_PATH = "/v2/oauth/token/"
USER_INFO_PATH = "/v2/user/info/"
CONNECTION_LIMIT = 256
REQUEST_TIMEOUT = 30.0  # a wedged emulator fails a login instead of hanging the run
TIKTOK_AUTH = "tiktok_client_secret_post"

Login = Callable[[], Awaitable[str]]


def _callback_query(location: str) -> dict[str, str]:
    """The decoded query of the 302's ``Location`` (what the app's callback route receives)."""
    return dict(parse_qsl(urlsplit(location).query))


async def _authorize(
    session: aiohttp.ClientSession, url: str, params: dict[str, str] | None = None
) -> dict[str, str]:
    """The browser's part: ``GET`` the authorization URL; the callback query of its 302.

    A function of its own, so that no contender keeps the response alive through the rest
    of its login: under load the objects a login keeps alive set how often the garbage
    collector runs (the table's GC column).
    """
    async with session.get(url, params=params, allow_redirects=False) as resp:
        if resp.status != 302:
            raise RuntimeError(f"authorize answered {resp.status}")
        return _callback_query(resp.headers["Location"])


# -- contenders ------------------------------------------------------------------------------


class Raw:
    """Bare aiohttp: the three calls and nothing else (no signing, no checks beyond state)."""

    name = "raw"

    def __init__(self, session: aiohttp.ClientSession, origin: str) -> None:
        self.session = session
        self.authorize_url = origin + AUTHORIZE_PATH
        self.token_url = origin + TOKEN_PATH
        self.user_info_url = origin + USER_INFO_PATH

    async def open(self) -> None:
        """Nothing to open: the session is given."""

    async def close(self) -> None:
        """Nothing to close: the session is given."""

    async def login(self) -> str:
        """One login; returns the user's ``open_id``."""
        session = self.session
        verifier = secrets.token_urlsafe(48)
        state = secrets.token_urlsafe(24)
        params = {
            "client_key": CLIENT_KEY,
            "response_type": "code",
            "redirect_uri": REDIRECT_URI,
            "scope": SCOPE,
            "state": state,
            "code_challenge": hashlib.sha256(verifier.encode()).hexdigest(),
            "code_challenge_method": "S256",
        }
        query = await _authorize(session, self.authorize_url, params)
        if query.get("state") != state:
            raise RuntimeError("state mismatch")
        form = {
            "client_key": CLIENT_KEY,
            "client_secret": CLIENT_SECRET,
            "code": query["code"],
            "grant_type": "authorization_code",
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
        }
        async with session.post(self.token_url, data=form) as resp:
            tokens = await resp.json()
        headers = {"Authorization": f"Bearer {tokens['access_token']}"}
        params = {"fields": PROFILE_FIELDS}
        async with session.get(self.user_info_url, params=params, headers=headers) as resp:
            body = await resp.json()
        return str(body["data"]["user"]["open_id"])


class KeyloomContender:
    """The core's public API: ``begin_login`` → the authorize GET → ``complete_login``.

    Keyloom borrows an aiohttp session made like ``raw``'s, and the authorize redirect
    (which a browser would follow) is fetched with it too.
    """

    name = "keyloom"

    def __init__(self, session: aiohttp.ClientSession, origin: str) -> None:
        from keyloom_tiktok import tiktok

        from keyloom_core import define_keyloom

        self.session = session
        provider = tiktok(client_id=CLIENT_KEY, client_secret=CLIENT_SECRET, endpoint_origin=origin)
        self.keyloom = define_keyloom(
            providers=[provider],
            secret=SECRET,
            base_url=APP_URL,
            autoload=False,
            session=session,
        )

    async def open(self) -> None:
        """Enter the Keyloom instance (it borrows the given session)."""
        await self.keyloom.__aenter__()

    async def close(self) -> None:
        """Leave the Keyloom instance."""
        await self.keyloom.__aexit__(None, None, None)

    async def login(self) -> str:
        """One login; returns the profile id (TikTok's ``open_id``)."""
        keyloom = self.keyloom
        start = await keyloom.begin_login("tiktok")
        query = await _authorize(self.session, start.url)
        result = await keyloom.complete_login("tiktok", query, start.state)
        return result.profile.id


def _tiktok_client_secret_post(
    client: Any, method: str, uri: str, headers: Any, body: str
) -> tuple[str, Any, str]:
    """Authlib client-auth method: ``client_secret_post`` with TikTok's ``client_key``."""
    from authlib.common.urls import add_params_to_qs

    del method
    body = add_params_to_qs(
        body or "", [("client_key", client.client_id), ("client_secret", client.client_secret)]
    )
    if "Content-Length" in headers:
        headers["Content-Length"] = str(len(body))
    return uri, headers, body


class AuthlibContender:
    """Authlib's ``AsyncOAuth2Client`` (httpx) with PKCE, TikTok's quirks via its hooks.

    A client object holds one login's token, so each login gets its own; all of them share
    one httpx transport (one connection pool), the most favourable set-up for Authlib.
    ``nox -s bench`` installs sniffio too, which spares httpcore a failed import per request.
    """

    name = "authlib"

    def __init__(self, origin: str) -> None:
        import httpx

        with warnings.catch_warnings():
            import authlib.deprecate  # sets its own "always" filter, overridden below

            warnings.simplefilter("ignore")  # Authlib's notice that it prefers "httpx2"
            import authlib.integrations.httpx_client  # noqa: F401

        self.authorize_url = origin + AUTHORIZE_PATH
        self.token_url = origin + TOKEN_PATH
        self.user_info_url = origin + USER_INFO_PATH
        limits = httpx.Limits(
            max_connections=CONNECTION_LIMIT, max_keepalive_connections=CONNECTION_LIMIT
        )
        self.transport = httpx.AsyncHTTPTransport(limits=limits)
        self.timeout = httpx.Timeout(REQUEST_TIMEOUT)

    async def open(self) -> None:
        """Nothing to open: the transport connects on demand."""

    async def close(self) -> None:
        """Close the transport its clients share."""
        await self.transport.aclose()

    def _client(self) -> Any:
        from authlib.integrations.httpx_client import AsyncOAuth2Client

        client = AsyncOAuth2Client(
            client_id=CLIENT_KEY,
            client_secret=CLIENT_SECRET,
            scope=SCOPE,
            redirect_uri=REDIRECT_URI,
            token_endpoint_auth_method=TIKTOK_AUTH,
            transport=self.transport,
            timeout=self.timeout,
        )
        client.register_client_auth_method((TIKTOK_AUTH, _tiktok_client_secret_post))
        return client

    async def login(self) -> str:
        """One login; returns the user's ``open_id``."""
        from authlib.common.security import generate_token

        client = self._client()
        verifier = generate_token(64)
        # TikTok's challenge is hex, not Authlib's base64url, so it is passed as a parameter.
        url, state = client.create_authorization_url(
            self.authorize_url,
            client_key=CLIENT_KEY,
            code_challenge=hashlib.sha256(verifier.encode()).hexdigest(),
            code_challenge_method="S256",
        )
        resp = await client.request("GET", url, withhold_token=True, follow_redirects=False)
        if resp.status_code != 302:
            raise RuntimeError(f"authorize answered {resp.status_code}")
        await client.fetch_token(
            self.token_url,
            authorization_response=resp.headers["location"],
            state=state,
            code_verifier=verifier,
        )
        resp = await client.get(self.user_info_url, params={"fields": PROFILE_FIELDS})
        return str(resp.json()["data"]["user"]["open_id"])


def _session() -> aiohttp.ClientSession:
    """The aiohttp session of ``raw`` and ``keyloom``, set up alike for both."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=CONNECTION_LIMIT),
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
    )


# -- the measurement -------------------------------------------------------------------------


@dataclass
class Batch:
    """One contender's logins at one concurrency in one round."""

    wall: float
    cpu: float  #: this process's CPU seconds (the contender's side only)
    latencies: list[float]
    errors: int
    first_error: str | None
    round: int = 0
    server_cpu: float | None = None  #: the emulator's CPU seconds, where it can be read
    gc_collections: int = 0  #: garbage collections (all generations) during the batch
    gc_seconds: float = 0.0  #: time spent in them

    @property
    def gc_per_login(self) -> tuple[float, float]:
        """Collections per 1,000 logins, and their µs per login."""
        logins = max(1, len(self.latencies) + self.errors)
        return self.gc_collections * 1000 / logins, self.gc_seconds / logins * 1e6

    @property
    def throughput(self) -> float:
        """Successful logins per second."""
        return len(self.latencies) / self.wall if self.wall > 0 else 0.0

    @property
    def cpu_per_login(self) -> float:
        """Client-side CPU microseconds per login."""
        return self.cpu / max(1, len(self.latencies) + self.errors) * 1e6

    @property
    def server_cpu_per_login(self) -> float | None:
        """The emulator's CPU microseconds per login (``None`` if it could not be read)."""
        if self.server_cpu is None:
            return None
        return self.server_cpu / max(1, len(self.latencies) + self.errors) * 1e6


async def run_batch(login: Login, n: int, concurrency: int, *, collect: bool = True) -> Batch:
    """Run *n* logins with *concurrency* workers (after a full garbage collection)."""
    latencies: list[float] = []
    errors = 0
    first_error: str | None = None
    remaining = n

    async def worker() -> None:
        nonlocal remaining, errors, first_error
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter()
            try:
                await login()
            except Exception as exc:
                errors += 1
                first_error = first_error or f"{type(exc).__name__}: {exc}"[:200]
            else:
                latencies.append(time.perf_counter() - started)

    collections = [0, 0.0, 0.0]  # count, seconds, start of the one under way

    def timed(phase: str, info: dict[str, int]) -> None:
        del info
        if phase == "start":
            collections[2] = time.perf_counter()
        else:
            collections[0] += 1
            collections[1] += time.perf_counter() - collections[2]

    if collect:
        gc.collect()
    cpu = time.process_time()
    started = time.perf_counter()
    gc.callbacks.append(timed)
    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(min(concurrency, n)):
                group.create_task(worker())
    finally:
        gc.callbacks.remove(timed)
    wall = time.perf_counter() - started
    batch = Batch(wall, time.process_time() - cpu, latencies, errors, first_error)
    batch.gc_collections, batch.gc_seconds = int(collections[0]), collections[1]
    return batch


@dataclass
class Series:
    """Every round of one contender at one concurrency."""

    batches: list[Batch] = field(default_factory=list)

    @property
    def logins(self) -> int:
        """Successful logins."""
        return sum(len(b.latencies) for b in self.batches)

    @property
    def errors(self) -> int:
        """Failed logins."""
        return sum(b.errors for b in self.batches)

    def throughputs(self) -> list[float]:
        """Logins per second of each round."""
        return [b.throughput for b in self.batches]

    def throughput(self) -> float:
        """Median logins per second across rounds."""
        return median(self.throughputs())

    def gc_per_login(self) -> tuple[float, float]:
        """Medians across rounds: garbage collections per 1,000 logins, and their µs per login.

        Under load the collector is a large share of a client's CPU: it runs when the number
        of objects alive grows by 700 since the last collection, so objects a login keeps
        alive across its awaits (while other logins run) set how often it runs.
        """
        return (
            median([b.gc_per_login[0] for b in self.batches]),
            median([b.gc_per_login[1] for b in self.batches]),
        )

    def cpu_per_login(self) -> float:
        """Median across rounds of the client's CPU µs per login."""
        return median([b.cpu_per_login for b in self.batches])

    def server_cpu_per_login(self) -> float | None:
        """Median across rounds of the emulator's CPU µs per login, if it could be read."""
        values = [b.server_cpu_per_login for b in self.batches]
        known = [v for v in values if v is not None]
        return median(known) if known else None

    def latency(self, q: float) -> float:
        """Median across rounds of the round's *q*-th latency percentile, in ms."""
        return median([percentile(b.latencies, q) * 1e3 for b in self.batches if b.latencies])


@dataclass
class LoginResults:
    """Everything the login benchmark measured."""

    contenders: list[str]
    concurrencies: list[int]
    series: dict[tuple[str, int], Series]
    failed: dict[str, str]
    rounds: int
    per_round: int

    def get(self, name: str, concurrency: int) -> Series | None:
        """The series of *name* at *concurrency*, if it ran."""
        series = self.series.get((name, concurrency))
        return series if series is not None and series.batches else None

    def _paired(self, num: str, den: str, concurrency: int) -> list[tuple[Batch, Batch]]:
        a, b = self.get(num, concurrency), self.get(den, concurrency)
        if a is None or b is None:
            return []
        by_round = {batch.round: batch for batch in b.batches}
        return [(x, by_round[x.round]) for x in a.batches if x.round in by_round]

    def ratio(self, num: str, den: str, concurrency: int) -> float | None:
        """Throughput ratio ``num / den``: the median of the rounds' ratios.

        Each round's two batches ran seconds apart, so a burst of load from elsewhere on the
        machine skews one round's ratio rather than one contender's median.
        """
        ratios = [x.throughput / y.throughput for x, y in self._paired(num, den, concurrency)]
        ratios = [r for r in ratios if math.isfinite(r)]
        return median(ratios) if ratios else None

    def cpu_ratio(self, num: str, den: str, concurrency: int) -> float | None:
        """CPU efficiency ``num / den``: the median of the rounds' CPU-per-login ratios (den/num).

        The contender process's own CPU time per login, which load elsewhere disturbs less than
        wall time; a client-bound throughput ratio tends to this figure.
        """
        ratios = [
            y.cpu_per_login / x.cpu_per_login
            for x, y in self._paired(num, den, concurrency)
            if x.cpu_per_login > 0
        ]
        return median(ratios) if ratios else None

    def report(self) -> str:
        """The per-contender table."""
        rows = []
        for concurrency in self.concurrencies:
            for name in self.contenders:
                s = self.get(name, concurrency)
                if s is None:
                    rows.append([name, str(concurrency), *["-"] * 9])
                    continue
                rows.append(
                    [
                        name,
                        str(concurrency),
                        str(s.logins),
                        str(s.errors),
                        f"{s.throughput():.0f}",
                        spread(s.throughputs()),
                        f"{s.latency(50):.2f}",
                        f"{s.latency(99):.2f}",
                        f"{s.cpu_per_login():.0f}",
                        "{:.0f} / {:.0f}".format(*s.gc_per_login()),
                        _fmt_us(s.server_cpu_per_login()),
                    ]
                )
        return table(
            [
                "contender",
                "conc",
                "logins",
                "errors",
                "logins/s",
                "rounds min..max",
                "p50 ms",
                "p99 ms",
                "client CPU µs/login",
                "GC per 1k logins / µs per login",
                "emulator CPU µs/login",
            ],
            rows,
        )


def _fmt_us(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _contender(name: str, session: aiohttp.ClientSession, origin: str) -> Any:
    if name == "raw":
        return Raw(session, origin)
    if name == "keyloom":
        return KeyloomContender(session, origin)
    if name == "authlib":
        return AuthlibContender(origin)
    raise ValueError(f"unknown contender {name!r}")


def _cpu_seconds(server: Any) -> float | None:
    """The emulator process's CPU seconds so far, if it tells."""
    read = getattr(server, "cpu_seconds", None)
    return read() if callable(read) else None


@contextlib.asynccontextmanager
async def fresh_contender(name: str, origin: str) -> AsyncIterator[Any]:
    """*name* on a client of its own with an empty connection pool."""
    async with _session() as session:
        contender = _contender(name, session, origin)
        await contender.open()
        try:
            yield contender
        finally:
            await contender.close()


async def run_logins(
    emulator: Callable[[], contextlib.AbstractContextManager[Any]],
    *,
    rounds: int,
    per_round: int,
    concurrencies: Sequence[int],
    warmup: int,
    contenders: Sequence[str] = ("raw", "keyloom", "authlib"),
    progress: Callable[[str], None] = print,
) -> LoginResults:
    """Measure every contender, *rounds* times, each round against a fresh emulator.

    ``emulator()`` starts one (its ``url`` is the origin). A fresh emulator per round keeps
    its token tables small, so the last round runs against the same server as the first.
    Every batch gets a fresh client warmed up at the batch's own concurrency: a pool left
    full of idle connections by a wider warm-up would slow down an httpx client at
    concurrency 1 (httpcore scans its whole pool on every request), so that would measure
    the warm-up rather than the contender.
    """
    failed: dict[str, str] = {}
    names = list(contenders)
    series = {(n, c): Series() for n in names for c in concurrencies}
    for r in range(rounds):
        with emulator() as server:
            for concurrency in concurrencies:
                live = [n for n in names if n not in failed]
                order = live[r % len(live) :] + live[: r % len(live)] if live else []
                for name in order:
                    try:
                        async with fresh_contender(name, server.url) as contender:
                            warm = await run_batch(
                                contender.login, max(warmup, concurrency), concurrency
                            )
                            if warm.errors:
                                failed[name] = f"warm-up failed: {warm.first_error}"
                                continue
                            server_cpu = _cpu_seconds(server)
                            batch = await run_batch(contender.login, per_round, concurrency)
                            if server_cpu is not None:
                                after = _cpu_seconds(server)
                                batch.server_cpu = None if after is None else after - server_cpu
                    except Exception as exc:
                        failed[name] = f"{type(exc).__name__}: {exc}"
                        continue
                    batch.round = r
                    series[name, concurrency].batches.append(batch)
                    if batch.errors:
                        progress(
                            f"  {name} c={concurrency}: {batch.errors} errors, "
                            f"first: {batch.first_error}"
                        )
        progress(
            f"  round {r + 1}/{rounds}: "
            + ", ".join(
                f"{n}@{c} {series[n, c].batches[-1].throughput:.0f}/s"
                for c in concurrencies
                for n in names
                if series[n, c].batches
            )
        )
    return LoginResults(names, list(concurrencies), series, failed, rounds, per_round)


async def profile_keyloom(origin: str, n: int, concurrency: int) -> Any:
    """Run *n* Keyloom logins under pyinstrument; return its session."""
    from pyinstrument import Profiler

    async with _session() as session:
        contender = KeyloomContender(session, origin)
        await contender.open()
        try:
            await run_batch(contender.login, min(n, 200), concurrency)
            gc.collect()
            profiler = Profiler(interval=0.0002, async_mode="disabled")
            profiler.start()
            await run_batch(contender.login, n, concurrency, collect=False)
            profiler.stop()
        finally:
            await contender.close()
    return profiler.last_session

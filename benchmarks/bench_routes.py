"""Requests/s of a trivial non-auth route with and without Keyloom mounted.

The same app (``GET /ping`` answering ``pong``) is served twice, once as it is and once
with Keyloom mounted: ``setup_keyloom`` on aiohttp.web, ``KeyloomASGI`` around a
Starlette app under uvicorn. Each server runs in its own process on 127.0.0.1, pinned to
one core; the load generator runs in another process on the other core, with keep-alive
connections at a fixed concurrency: ``wrk`` when it is installed (a fixed duration per
measurement), else a small aiohttp client loop (a fixed number of requests). Rounds
alternate the two variants; the figures are medians of rounds. Run standalone:
``python benchmarks/bench_routes.py`` (add ``--quick`` for a short run).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import (  # noqa: E402
    LOOPBACK,
    SECRET,
    cpu_plan,
    ensure_importable,
    median,
    pin,
    pinned,
    process_cpu_seconds,
    spread,
    wait_for_line,
)

TARGET = 0.97
FRAMEWORKS = ("aiohttp", "starlette")
LABELS = {"aiohttp": "aiohttp.web", "starlette": "Starlette under uvicorn"}
BASE_PATH = "/api/auth"


# -- the servers (child processes) -----------------------------------------------------------


def _keyloom() -> Any:
    from keyloom_core import ProviderSpec, configure_provider, define_keyloom

    spec = ProviderSpec(
        id="bench",
        name="Bench",
        authorize_url="https://127.0.0.1/authorize",
        token_url="https://127.0.0.1/token",
    )
    provider = configure_provider(spec, client_id="id", client_secret="secret", scopes=["profile"])
    return define_keyloom(
        providers=[provider], secret=SECRET, base_url="http://127.0.0.1:8000", autoload=False
    )


def _listen() -> socket.socket:
    # IPPROTO_TCP spelled out: asyncio sets TCP_NODELAY only on sockets that say so (an
    # accepted socket copies the listener's proto), and without it every answer written in
    # two parts waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((LOOPBACK, 0))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def _announce(sock: socket.socket, detail: str) -> None:
    port = sock.getsockname()[1]
    print(f"listening on http://{LOOPBACK}:{port} ({detail})", flush=True)


async def _serve_aiohttp(with_keyloom: bool) -> None:
    from aiohttp import web

    async def ping(_: web.Request) -> web.Response:
        return web.Response(text="pong")

    app = web.Application()
    app.router.add_get("/ping", ping)
    if with_keyloom:
        from keyloom_core.web.aiohttp import setup_keyloom

        setup_keyloom(app, _keyloom())
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    sock = _listen()
    await web.SockSite(runner, sock).start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    _announce(sock, f"asyncio loop {type(asyncio.get_running_loop()).__module__}")
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def _serve_starlette(with_keyloom: bool) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def ping(_: Request) -> PlainTextResponse:
        return PlainTextResponse("pong")

    app: Any = Starlette(routes=[Route("/ping", ping)])
    if with_keyloom:
        from keyloom_core.web.asgi import KeyloomASGI

        app = KeyloomASGI(_keyloom(), app)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    config.load()
    sock = _listen()
    http = getattr(config.http_protocol_class, "__module__", "?").rpartition(".")[2]
    _announce(sock, f"uvicorn {uvicorn.__version__}, loop {config.loop}, http {http}")
    uvicorn.Server(config).run(sockets=[sock])  # stops on SIGTERM


def serve(framework: str, with_keyloom: bool) -> None:
    """Serve the ping app until SIGTERM (the child-process side)."""
    if framework == "aiohttp":
        asyncio.run(_serve_aiohttp(with_keyloom))
    else:
        _serve_starlette(with_keyloom)


@dataclass
class ServerProcess:
    """One ping server in its own process, pinned to *cpu*."""

    framework: str
    with_keyloom: bool
    cpu: int | None
    url: str = ""
    detail: str = ""
    _proc: subprocess.Popen[str] | None = field(default=None, repr=False)
    _errors: Any = field(default=None, repr=False)

    def __enter__(self) -> ServerProcess:
        self._errors = tempfile.TemporaryFile("w+")
        cmd = [sys.executable, str(Path(__file__).resolve()), "--serve", self.framework]
        if self.with_keyloom:
            cmd.append("--with-keyloom")
        self._proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=self._errors,  # a file: a pipe nobody reads could fill and stall the server
            text=True,
            preexec_fn=partial(pin, 0, self.cpu),  # noqa: PLW1509 (no threads in this process)
        )
        try:
            self._read_url()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _read_url(self) -> None:
        assert self._proc is not None
        found = wait_for_line(self._proc, r"listening on (http://\S+) \((.*)\)")
        if found:
            self.url, self.detail = found.group(1), found.group(2)
            return
        error = ""
        if self._proc.poll() is not None:
            self._errors.seek(0)
            error = self._errors.read()
        msg = (
            f"the {self.framework} server did not start (exit {self._proc.poll()}): {error[-500:]}"
        )
        raise RuntimeError(msg)

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the server so far (Linux ``/proc``), else NaN."""
        seconds = None if self._proc is None else process_cpu_seconds(self._proc.pid)
        return float("nan") if seconds is None else seconds

    def __exit__(self, *exc_info: object) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        for stream in (proc.stdout, self._errors):
            if stream is not None:
                stream.close()


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def check(server: ServerProcess) -> None:
    """The route answers ``pong``; Keyloom's routes answer only where it is mounted."""
    status, body = _get(f"{server.url}/ping")
    if (status, body) != (200, "pong"):
        msg = f"{server.framework}: GET /ping answered {status} {body[:40]!r}"
        raise RuntimeError(msg)
    status, _ = _get(f"{server.url}{BASE_PATH}/providers")
    if (status == 200) != server.with_keyloom:
        msg = f"{server.framework}: GET {BASE_PATH}/providers answered {status}"
        raise RuntimeError(msg)


# -- the load generator ----------------------------------------------------------------------


@dataclass
class Load:
    """One measurement: completed requests over wall seconds, errors, server CPU."""

    requests: int
    seconds: float
    errors: int
    server_cpu: float

    @property
    def rate(self) -> float:
        """Requests per second."""
        return self.requests / self.seconds if self.seconds > 0 else float("nan")


@dataclass
class Generator:
    """``wrk`` (duration-bounded) or the aiohttp client loop (request-bounded)."""

    cpu: int | None
    concurrency: int
    duration: float
    requests: int
    wrk: str | None = field(default_factory=lambda: shutil.which("wrk"))

    def describe(self) -> str:
        """What generates the load."""
        if self.wrk:
            return (
                f"wrk ({self.wrk}), 1 thread, {self.concurrency} keep-alive connections, "
                f"{self.duration:g} s per measurement"
            )
        return (
            f"aiohttp client loop (wrk not installed, or --no-wrk), {self.concurrency} keep-alive "
            f"connections, {self.requests} requests per measurement; a Python client may "
            "saturate before the server does: compare the server CPU per request"
        )

    def run(self, server: ServerProcess, *, warmup: bool = False) -> Load:
        """Load *server*'s ``/ping`` once and measure it."""
        url = f"{server.url}/ping"
        if self.wrk:
            duration = max(1, round(self.duration / (3 if warmup else 1)))
            cmd = [
                self.wrk, "-t1", f"-c{self.concurrency}", f"-d{duration}s", "--timeout", "5s", url
            ]  # fmt: skip
        else:
            count = self.requests // (3 if warmup else 1)
            cmd = [
                sys.executable, str(Path(__file__).resolve()), "--load", url,
                "--requests", str(count), "--concurrency", str(self.concurrency),
            ]  # fmt: skip
        before = server.cpu_seconds()
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=max(60.0, self.duration * 10),
            check=False,
            preexec_fn=partial(pin, 0, self.cpu),
        )
        cpu = server.cpu_seconds() - before
        if proc.returncode != 0:
            msg = f"the load generator failed (exit {proc.returncode}): {proc.stderr[-500:]}"
            raise RuntimeError(msg)
        return _parse_wrk(proc.stdout, cpu) if self.wrk else _parse_client(proc.stdout, cpu)


def _parse_wrk(out: str, cpu: float) -> Load:
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)\b", out)
    if done is None:
        msg = f"unexpected wrk output: {out[-500:]}"
        raise RuntimeError(msg)
    scale = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[done.group(3)]
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors += int(non2xx.group(1)) if non2xx else 0
    return Load(int(done.group(1)), float(done.group(2)) * scale, errors, cpu)


def _parse_client(out: str, cpu: float) -> Load:
    data = json.loads(out.strip().splitlines()[-1])
    return Load(data["requests"], data["seconds"], data["errors"], cpu)


async def client_loop(url: str, requests: int, concurrency: int) -> dict[str, Any]:
    """*requests* GETs of *url* over *concurrency* keep-alive connections (the fallback)."""
    import aiohttp

    remaining = requests
    errors = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal remaining, errors
        while remaining > 0:
            remaining -= 1
            try:
                async with session.get(url) as resp:
                    await resp.read()
                    errors += resp.status != 200
            except aiohttp.ClientError:
                errors += 1

    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    return {"requests": requests - errors, "seconds": seconds, "errors": errors}


# -- rounds ----------------------------------------------------------------------------------


@dataclass
class Result:
    """Per-round measurements of one framework."""

    framework: str
    detail: str
    without: list[Load] = field(default_factory=list)
    with_keyloom: list[Load] = field(default_factory=list)

    def ratios(self) -> list[float]:
        """Per-round requests/s with Keyloom over without."""
        return [w.rate / b.rate for w, b in zip(self.with_keyloom, self.without, strict=True)]

    def ratio(self) -> float:
        """The median of per-round ratios."""
        return median(self.ratios())

    def ratio_of_medians(self) -> float:
        """Median requests/s with Keyloom over the median without."""
        return median([w.rate for w in self.with_keyloom]) / median([b.rate for b in self.without])

    def cpu_ratio(self) -> float:
        """Median of per-round server CPU per request, without Keyloom over with it."""
        return median(
            [
                (b.server_cpu / b.requests) / (w.server_cpu / w.requests)
                for w, b in zip(self.with_keyloom, self.without, strict=True)
                if w.requests and b.requests and w.server_cpu > 0
            ]
        )


def measure(framework: str, rounds: int, generator: Generator, server_cpu: int | None) -> Result:
    """Alternate the two variants of *framework* for *rounds* rounds."""
    with contextlib.ExitStack() as stack:
        bare = stack.enter_context(ServerProcess(framework, with_keyloom=False, cpu=server_cpu))
        mounted = stack.enter_context(ServerProcess(framework, with_keyloom=True, cpu=server_cpu))
        for server in (bare, mounted):
            check(server)
            generator.run(server, warmup=True)
        result = Result(framework, bare.detail)
        for n in range(rounds):
            order = [(bare, result.without), (mounted, result.with_keyloom)]
            for server, into in order if n % 2 == 0 else reversed(order):
                into.append(generator.run(server))
        return result


def report(result: Result) -> str:
    """The lines for one framework."""
    lines = [f"{LABELS[result.framework]} ({result.detail})"]
    for name, loads in (("without Keyloom", result.without), ("with Keyloom", result.with_keyloom)):
        rates = [load.rate for load in loads]
        cpu = [1e6 * load.server_cpu / load.requests for load in loads if load.requests]
        errors = sum(load.errors for load in loads)
        lines.append(
            f"  {name:<16} {median(rates):>9,.0f} req/s (rounds {spread(rates)}), "
            f"server CPU {median(cpu):.1f} µs/request, {errors} errors"
        )
    ratio = result.ratio()
    verdict = "pass" if ratio >= TARGET else "MISS"
    lines.append(
        f"  with/without     {ratio:.3f}x (median of per-round ratios {spread(result.ratios())}, "
        f"ratio of the medians {result.ratio_of_medians():.3f}x; target >= {TARGET}x): {verdict}"
    )
    cpu = result.cpu_ratio()
    lines.append(
        f"  CPU efficiency   {cpu:.3f}x (server CPU per request without / with, median of "
        "rounds; steadier than requests/s on a shared machine)"
    )
    return "\n".join(lines)


# -- in process: what mounting adds to one non-auth request --------------------------------


def _drive(coro: Any) -> Any:
    """Run a coroutine that never suspends (routing, a pass-through) to its result."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    msg = "the coroutine suspended"
    raise RuntimeError(msg)


def _per_call_us(call: Any, number: int) -> float:
    import timeit

    return median(timeit.repeat(call, number=number, repeat=5)) / number * 1e6


def in_process(number: int) -> list[str]:
    """µs per non-auth request spent by routing (aiohttp) or the ASGI wrapper, without and with.

    A figure with no server, client or network around it, so it moves far less than
    requests/s: aiohttp's router resolving ``/ping`` on the app with and without the auth
    route, and a no-op ASGI app called directly and through ``KeyloomASGI``.
    """
    from aiohttp import web
    from aiohttp.test_utils import make_mocked_request

    from keyloom_core.web.aiohttp import setup_keyloom
    from keyloom_core.web.asgi import KeyloomASGI

    async def ping(_: web.Request) -> web.Response:
        return web.Response(text="pong")

    routing = []
    for mounted in (False, True):
        app = web.Application()
        app.router.add_get("/ping", ping)
        if mounted:
            setup_keyloom(app, _keyloom())
        app.freeze()
        request = make_mocked_request("GET", "/ping", app=app)
        if _drive(app.router.resolve(request)).handler is not ping:
            msg = "aiohttp resolved /ping to another handler"
            raise RuntimeError(msg)
        routing.append(_per_call_us(lambda a=app, r=request: _drive(a.router.resolve(r)), number))

    async def noop(*_: Any) -> None:
        return None

    wrapped = KeyloomASGI(_keyloom(), noop)
    scope = {"type": "http", "method": "GET", "path": "/ping", "root_path": "", "headers": []}
    asgi = [
        _per_call_us(lambda app=app: _drive(app(dict(scope), noop, noop)), number)
        for app in (noop, wrapped)
    ]
    return [
        f"in process, per non-auth request (median of 5 x {number:,} calls):",
        (
            f"  aiohttp router resolve   {routing[0]:.2f} µs without, {routing[1]:.2f} µs with "
            f"Keyloom's route ({routing[1] - routing[0]:+.2f} µs)"
        ),
        (
            f"  ASGI app call            {asgi[0]:.2f} µs bare, {asgi[1]:.2f} µs through "
            f"KeyloomASGI ({asgi[1] - asgi[0]:+.2f} µs)"
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds of 1 s (or 5,000 requests)")
    parser.add_argument("--rounds", type=int, help="rounds per framework (default 15; quick 2)")
    parser.add_argument("--duration", type=float, help="wrk seconds per measurement (default 2)")
    parser.add_argument("--requests", type=int, help="client-loop requests per measurement")
    parser.add_argument("--concurrency", type=int, default=50, help="connections (default 50)")
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS), help="comma-separated")
    parser.add_argument("--no-wrk", action="store_true", help="use the aiohttp client loop")
    parser.add_argument("--serve", choices=FRAMEWORKS, help=argparse.SUPPRESS)
    parser.add_argument("--with-keyloom", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--load", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    ensure_importable()
    if args.serve:
        serve(args.serve, args.with_keyloom)
        return 0
    concurrency = max(1, min(args.concurrency, 1000))
    if args.load:
        requests = max(1, min(args.requests or 20_000, 1_000_000))
        print(json.dumps(asyncio.run(client_loop(args.load, requests, concurrency))))
        return 0
    rounds = max(1, min(args.rounds or (2 if args.quick else 15), 50))
    duration = max(1.0, min(args.duration or (1.0 if args.quick else 2.0), 60.0))
    requests = max(100, min(args.requests or (5_000 if args.quick else 20_000), 1_000_000))
    server_cpu, load_cpu = cpu_plan()
    generator = Generator(load_cpu, concurrency, duration, requests)
    if args.no_wrk:
        generator.wrk = None
    frameworks = [f for f in args.frameworks.split(",") if f in FRAMEWORKS]
    print(f"GET /ping -> 'pong', {rounds} rounds alternating without/with Keyloom; medians")
    print(f"load: {generator.describe()}")
    if server_cpu is None:
        print("CPU pinning: unavailable (fewer than two usable CPUs); server and load share")
    else:
        print(f"CPU pinning: server on CPU {server_cpu}, load generator on CPU {load_cpu}")
    for framework in frameworks:
        try:
            result = measure(framework, rounds, generator, server_cpu)
        except (RuntimeError, ImportError, subprocess.TimeoutExpired) as exc:
            print(f"{LABELS[framework]}: not measured: {exc}")
            continue
        print(report(result), flush=True)
    with pinned(load_cpu):
        print("\n".join(in_process(20_000 if args.quick else 200_000)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

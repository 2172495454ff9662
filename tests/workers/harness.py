"""Processes for the multi-worker tests and the load figure: emulator, Redis, app workers.

Everything listens on 127.0.0.1 and is started and stopped here: the TikTok emulator
(``python -m keyloom_tiktok.emulator``), ``redis-server`` (append-only file, so a restart
keeps what was written) and the app (:mod:`apps`) under ``uvicorn --workers N`` or
``gunicorn -k aiohttp.GunicornWebWorker -w N``. :func:`login` plays one browser's
sign-in; :func:`run_logins` many, at a bounded concurrency.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import anyio

HERE = Path(__file__).resolve().parent
SECRET = "workers-test-secret-0123456789-abcdefghijklmnop"
HOST = "127.0.0.1"
STARTUP = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _stop(process: subprocess.Popen[Any], sig: int = signal.SIGTERM, wait: float = 20) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _wait_ok(url: str, process: subprocess.Popen[Any], timeout: float = STARTUP) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            msg = f"{url}: the process exited with {process.returncode}"
            raise RuntimeError(msg)
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as resp:
            if resp.status < 500:
                return
        time.sleep(0.1)
    msg = f"{url} did not answer within {timeout:g}s"
    raise RuntimeError(msg)


@contextlib.contextmanager
def emulator() -> Iterator[str]:
    """The TikTok emulator in its own process (consent approve, no faults); yields its URL."""
    cmd = [
        sys.executable,
        "-m",
        "keyloom_tiktok.emulator",
        "--host",
        HOST,
        "--port",
        "0",
        "--consent",
        "approve",
        "--user-info-rate-limit",
        "1000000000",
        "--fault-rate",
        "0",
        "--log-level",
        "WARNING",
    ]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout is not None
        url = None
        deadline = time.monotonic() + STARTUP
        while url is None and (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([process.stdout], [], [], left)
            line = process.stdout.readline() if ready else ""
            if not line:
                break
            found = re.search(r"listening on (http://\S+)", line)
            url = found.group(1).rstrip("/") if found else None
        if url is None:
            msg = "the TikTok emulator did not start"
            raise RuntimeError(msg)
        _wait_ok(f"{url}/emulator/health", process)
        yield url
    finally:
        _stop(process)
        if process.stdout is not None:
            process.stdout.close()


def redis_binary() -> str | None:
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )


@dataclass
class RedisProcess:
    """``redis-server`` on a fixed loopback port; :meth:`stop` and :meth:`start` again."""

    binary: str
    folder: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> None:
        args = [
            self.binary,
            "--bind",
            HOST,
            "--port",
            str(self.port),
            "--dir",
            str(self.folder),
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--protected-mode",
            "yes",
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + STARTUP
        while time.monotonic() < deadline and self.process.poll() is None:
            with (
                contextlib.suppress(OSError),
                socket.create_connection((HOST, self.port), 0.5) as s,
            ):
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
            time.sleep(0.05)
        msg = "redis-server did not start"
        raise RuntimeError(msg)

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)
            self.process = None


@contextlib.contextmanager
def redis_server(folder: Path) -> Iterator[RedisProcess]:
    binary = redis_binary()
    if binary is None:
        msg = "redis-server is not installed"
        raise RuntimeError(msg)
    server = RedisProcess(binary, folder)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Workers:
    """The app under *server* (``"uvicorn"``, ASGI; ``"gunicorn"``, aiohttp) with *count* workers."""

    server: str
    store_url: str
    emulator_url: str
    count: int = 4
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def command(self) -> list[str]:
        bind = f"{HOST}:{self.port}"
        if self.server == "uvicorn":
            return [
                sys.executable,
                "-m",
                "uvicorn",
                "apps:asgi_app",
                "--factory",
                "--app-dir",
                str(HERE),
                "--host",
                HOST,
                "--port",
                str(self.port),
                "--workers",
                str(self.count),
                "--log-level",
                "warning",
                "--no-access-log",
                "--timeout-graceful-shutdown",
                "5",
                "--timeout-keep-alive",
                "30",
            ]
        return [
            sys.executable,
            "-m",
            "gunicorn",
            "apps:aiohttp_app",
            "--chdir",
            str(HERE),
            "--worker-class",
            "aiohttp.GunicornWebWorker",
            "--workers",
            str(self.count),
            "--bind",
            bind,
            "--log-level",
            "warning",
            "--graceful-timeout",
            "5",
            "--backlog",
            "2048",
            # a pinned connection must outlive a slow test step: a server that closes it
            # makes the client retry its GET, and the retry counts twice (rate limits)
            "--keep-alive",
            "30",
        ]

    def __enter__(self) -> Workers:
        env = {
            **os.environ,
            "KEYLOOM_SECRET": SECRET,
            "KEYLOOM_URL": self.url,
            "KEYLOOM_STORE": self.store_url,
            "WORKERS_EMULATOR": self.emulator_url,
            "KEYLOOM_DISABLE_PLUGIN_AUTOLOAD": "1",
        }
        self.process = subprocess.Popen(self.command(), env=env, cwd=HERE)
        try:
            _wait_ok(f"{self.url}/api/auth/providers", self.process)
            deadline = time.monotonic() + STARTUP
            while len(self.worker_pids()) < self.count and time.monotonic() < deadline:
                time.sleep(0.1)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        children = self.worker_pids(process.pid)
        _stop(process)
        for pid in children:  # a worker the master lost track of
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def worker_pids(self, master: int | None = None) -> list[int]:
        """The worker processes (children of the master), from ``/proc``."""
        master = master or (self.process.pid if self.process else 0)
        found = []
        for task in Path(f"/proc/{master}/task").glob("*"):
            with contextlib.suppress(OSError):
                found += [int(p) for p in (task / "children").read_text().split()]
        return sorted(found)


# -- browsers --------------------------------------------------------------------------------


@dataclass
class Outcome:
    """How one sign-in ended: ``ok`` with the session cookie, or what failed."""

    result: str
    cookie: str | None = None
    status: int | None = None
    worker: str | None = None
    message: str | None = None


def _cookie(response: aiohttp.ClientResponse, name: str) -> str | None:
    for header in response.headers.getall("Set-Cookie", []):
        key, _, rest = header.partition("=")
        if key == name:
            return rest.split(";", 1)[0]
    return None


async def _error(response: aiohttp.ClientResponse) -> Outcome:
    try:
        data = await response.json(content_type=None)
    except (ValueError, aiohttp.ClientError):
        return Outcome(f"http_{response.status}", status=response.status)
    if not isinstance(data, dict):
        return Outcome(f"http_{response.status}", status=response.status)
    return Outcome(str(data.get("error")), status=response.status, message=data.get("message"))


async def login(http: aiohttp.ClientSession, base: str, client_ip: str) -> Outcome:
    """One browser's sign-in from *client_ip* (sent as ``X-Forwarded-For``)."""
    headers = {"X-Forwarded-For": client_ip, "Accept": "application/json"}
    try:
        async with http.get(
            f"{base}/api/auth/oauth/tiktok/start",
            params={"callbackUrl": "/"},
            headers=headers,
            allow_redirects=False,
        ) as start:
            if start.status != 302:
                return await _error(start)
            state = _cookie(start, "__keyloom_oauth")
            authorize = start.headers["Location"]
        async with http.get(authorize, allow_redirects=False) as consent:
            if consent.status != 302:
                return Outcome("emulator", status=consent.status)
            callback = consent.headers["Location"]
        async with http.get(
            callback,
            headers={**headers, "Cookie": f"__keyloom_oauth={state}"},
            allow_redirects=False,
        ) as done:
            cookie = _cookie(done, "__keyloom_session")
            if done.status == 302 and cookie:
                return Outcome("ok", cookie, 302, done.headers.get("X-Worker"))
            return await _error(done)
    except (aiohttp.ClientConnectionError, TimeoutError):
        return Outcome("connection")


async def me(http: aiohttp.ClientSession, base: str, cookie: str) -> tuple[int, Any, str | None]:
    """``GET /me`` with the session cookie: status, JSON body, answering worker."""
    async with http.get(f"{base}/me", headers={"Cookie": f"__keyloom_session={cookie}"}) as resp:
        return resp.status, await resp.json(content_type=None), resp.headers.get("X-Worker")


@contextlib.asynccontextmanager
async def pinned(base: str, want: int = 4, tries: int = 120) -> AsyncIterator[dict[str, Any]]:
    """Clients kept alive on one connection each, one per worker reached: ``{pid: client}``.

    Connects again and again (bounded) until *want* workers answered; which worker accepts
    a connection is the kernel's choice, so fewer may be found. Each client's requests all
    go to its worker while the connection stays open (keep-alive 30 s).
    """
    found: dict[str, Any] = {}
    try:
        for _ in range(tries):
            http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=1), cookie_jar=aiohttp.DummyCookieJar()
            )
            async with http.get(f"{base}/api/auth/providers") as resp:
                await resp.read()
                worker = resp.headers["X-Worker"]
            if worker in found:
                await http.close()
            else:
                found[worker] = http
            if len(found) >= want:
                break
            await anyio.sleep(0.03)
        yield found
    finally:
        for http in found.values():
            await http.close()


def client_session(concurrency: int) -> aiohttp.ClientSession:
    """A client without a cookie jar (cookies are explicit), *concurrency* connections."""
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=60)
    return aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.DummyCookieJar(), timeout=timeout
    )


async def run_logins(
    base: str,
    total: int,
    concurrency: int,
    *,
    prefix: str = "10.77",
    outcomes: list[Outcome] | None = None,
) -> tuple[list[Outcome], float]:
    """*total* sign-ins, *concurrency* at a time, each from one of 4096 client addresses.

    Outcomes are appended to *outcomes* (if given) as they come.
    """
    outcomes = [] if outcomes is None else outcomes
    counter = iter(range(total))

    async def browser(http: aiohttp.ClientSession) -> None:
        for n in counter:
            ip = f"{prefix}.{(n // 256) % 16}.{n % 256}"
            outcomes.append(await login(http, base, ip))

    started = time.perf_counter()
    async with client_session(concurrency) as http, anyio.create_task_group() as tasks:
        for _ in range(concurrency):
            tasks.start_soon(browser, http)
    return outcomes, time.perf_counter() - started


def tally(outcomes: list[Outcome]) -> dict[str, int]:
    return dict(collections.Counter(o.result for o in outcomes))

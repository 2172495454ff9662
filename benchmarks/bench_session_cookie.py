"""The per-request session check: Keyloom's ``current_session`` against Starlette's middleware.

Every contender reads the same ``Cookie`` header shape (the session cookie between two
small unrelated cookies) with a session cookie of the same size, cookie parsing included:

- Starlette's ``SessionMiddleware`` (itsdangerous ``TimestampSigner``) called on a request
  scope with a no-op app behind it, and its decoding alone (unsign + base64 + JSON);
- Keyloom's stateless ``current_session`` on both adapters: ASGI
  (``keyloom_core.web.asgi.current_session(scope)``) and aiohttp (a request cloned from
  one made by ``aiohttp.test_utils.make_mocked_request`` on an app with ``setup_keyloom``),
  for a cookie read for the first time (verified) and for a cookie read again (remembered);
- the floor: ``hmac.digest`` + ``compare_digest`` + base64 + ``json.loads`` of Keyloom's
  cookie, as ``bench_sessions.py`` prints it.

A first read is a read of a cookie not read before: for every contender each round reads
as many distinct cookies, of the same payloads, as it makes calls (so the floor and
Starlette do not read one cookie kept warm in the CPU's caches while Keyloom reads
thousands).

Rounds alternate the contenders; each figure is the median of the rounds' mean time per
call (sequential calls in batches of :data:`BATCH`, each batch's items made just before it
is timed, on one pinned core). Run standalone:
``python benchmarks/bench_session_cookie.py`` (add ``--quick`` for a short run).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import hashlib
import hmac
import json
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import cpu_plan, ensure_importable, median, pinned, spread  # noqa: E402

ensure_importable()

from keyloom_core import (  # noqa: E402
    LoginResult,
    Profile,
    ProviderSpec,
    TokenSet,
    configure_provider,
    define_keyloom,
)
from keyloom_core.web._wire import cookie_value  # noqa: E402
from keyloom_core.web.sessions import (  # noqa: E402
    SESSION_COOKIE,
    Session,
    issue_session,
    read_session,
)

SECRET = "benchmark-secret-0123456789-abcdefghijklmnop"
#: The session cookie's size the comparison is made at (the figure quoted for it).
COOKIE_CHARS = 560
TARGET_VS_FLOOR = 1.5
OTHER_BEFORE = "theme=dark"
OTHER_AFTER = "_ga=GA1.2.1234567890.1700000000"
#: Label prefix of the rows that time one part of a first read.
PART = "  part: "


def _header(name: str, value: str) -> str:
    return f"{OTHER_BEFORE}; {name}={value}; {OTHER_AFTER}"


# -- Keyloom ---------------------------------------------------------------------------------


def _keyloom() -> Any:
    spec = ProviderSpec(
        id="bench",
        name="Bench",
        authorize_url="https://127.0.0.1/authorize",
        token_url="https://127.0.0.1/token",
    )
    provider = configure_provider(spec, client_id="id", client_secret="secret", scopes=["profile"])
    return define_keyloom(
        providers=[provider],
        secret=SECRET,
        base_url="http://127.0.0.1:8000",
        autoload=False,
        sessions="stateless",
        rate_limits=False,
    )


def _login(image_chars: int) -> LoginResult:
    image = "https://cdn.example.com/avatars/" + "a" * image_chars + ".jpg"
    return LoginResult(
        provider_id="bench",
        profile=Profile(
            provider_id="bench",
            id="user-1234567890",
            name="Bench User",
            email="bench.user@example.com",
            image=image,
        ),
        tokens=TokenSet(access_token="at"),
        granted_scopes=frozenset({"profile"}),
        requested_scopes=frozenset({"profile"}),
        callback_url="/",
    )


class Cookies:
    """Stateless Keyloom session cookies of :data:`COOKIE_CHARS` characters (or just over)."""

    def __init__(self, keyloom: Any) -> None:
        self.keyloom = keyloom
        pad = 0
        while len(issue_session(keyloom, _login(pad))[1]) < COOKIE_CHARS:
            pad += 1
        self.result = _login(pad)

    def fresh(self, count: int) -> list[str]:
        """*count* distinct cookies, none read yet."""
        values = {issue_session(self.keyloom, self.result)[1] for _ in range(count)}
        while len(values) < count:
            values.add(issue_session(self.keyloom, self.result)[1])
        return list(values)


def _asgi_scope(handler: Any, value: str) -> dict[str, Any]:
    from keyloom_core.web.asgi import STATE_KEY

    header = _header(SESSION_COOKIE, value).encode("latin-1")
    return {
        "type": "http",
        "method": "GET",
        "path": "/",
        "headers": [(b"host", b"127.0.0.1:8000"), (b"cookie", header)],
        "state": {STATE_KEY: handler},
    }


# -- Starlette -------------------------------------------------------------------------------


def _starlette_cut(middleware: Any, payload: dict[str, Any], chars: int) -> int:
    """How much of the avatar URL makes Starlette's encoding of *payload* *chars* long.

    The shortest URL that reaches *chars* is used, so the cookie is at most three characters
    longer (one base64 quantum).
    """
    image = payload["u"]["image"]
    for cut in range(len(image) + 1):
        if len(_starlette_value(middleware, payload, cut)) >= chars:
            return cut
    msg = "the Starlette cookie cannot reach the size of Keyloom's"
    raise RuntimeError(msg)


def _starlette_value(middleware: Any, payload: dict[str, Any], cut: int) -> str:
    """Starlette's own encoding of *payload*, its avatar URL cut to *cut* characters."""
    session = json.loads(json.dumps(payload))
    session["u"]["image"] = session["u"]["image"][:cut]
    data = middleware.signer.sign(base64.b64encode(json.dumps(session).encode("utf-8")))
    return str(data.decode("utf-8"))


def _payload(value: str) -> dict[str, Any]:
    """The JSON inside a Keyloom session cookie (read without checking it)."""
    body = value.partition(".")[0]
    return dict(json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))))


# -- timing ----------------------------------------------------------------------------------


#: Calls timed together; their items are made just before, as a server reads the request
#: it has just parsed, not one made thousands of requests earlier and long out of the
#: CPU's caches.
BATCH = 100

Make = Callable[[int], Sequence[Any]]


async def _timed_async(call: Callable[[Any], Awaitable[object]], make: Make, n: int) -> float:
    """µs per call of *call* on *n* items made by *make*, a batch at a time."""
    spent = 0
    for done in range(0, n, BATCH):
        items = make(min(BATCH, n - done))
        gc.collect()  # making them must not leave a collection to the timed calls
        start = time.perf_counter_ns()
        for item in items:
            await call(item)
        spent += time.perf_counter_ns() - start
    return spent / n / 1000


def _timed(call: Callable[[Any], object], make: Make, n: int) -> float:
    """µs per call of *call* on *n* items made by *make*, a batch at a time."""
    spent = 0
    for done in range(0, n, BATCH):
        items = make(min(BATCH, n - done))
        gc.collect()  # making them must not leave a collection to the timed calls
        start = time.perf_counter_ns()
        for item in items:
            call(item)
        spent += time.perf_counter_ns() - start
    return spent / n / 1000


async def run(rounds: int, calls: int) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Per-contender lists of µs per call, one per round, and facts about the cookies."""
    from aiohttp import web
    from aiohttp.test_utils import make_mocked_request
    from starlette.middleware.sessions import SessionMiddleware

    from keyloom_core.web import aiohttp as keyloom_aiohttp
    from keyloom_core.web import asgi as keyloom_asgi

    keyloom = _keyloom()
    cookies = Cookies(keyloom)
    asgi = keyloom_asgi.KeyloomASGI(keyloom)
    app = web.Application()
    keyloom_aiohttp.setup_keyloom(app, keyloom)

    template = make_mocked_request("GET", "/", app=app)

    def aiohttp_request(value: str) -> web.Request:
        # a new request with its own headers, as aiohttp's clone() makes them: a mocked
        # request's mocks cost a hundred times the call timed after it
        return template.clone(headers={"Cookie": _header(SESSION_COOKIE, value)})

    async def noop(*_: Any) -> None:
        return None

    starlette = SessionMiddleware(noop, secret_key=SECRET)
    sample = cookies.fresh(1)[0]
    payload = _payload(sample)
    cut = _starlette_cut(starlette, payload, len(sample))
    starlette_value = _starlette_value(starlette, payload, cut)

    def starlette_values(n: int) -> list[str]:
        """*n* distinct Starlette cookies: the payloads of as many fresh Keyloom cookies."""
        return [_starlette_value(starlette, _payload(v), cut) for v in cookies.fresh(n)]

    def starlette_scope(value: str) -> dict[str, Any]:
        header = _header(starlette.session_cookie, value).encode("latin-1")
        return {"type": "http", "headers": [(b"cookie", header)]}

    async def starlette_call(scope: dict[str, Any]) -> None:
        await starlette(scope, noop, noop)

    def starlette_decode(data: bytes) -> object:
        return json.loads(
            base64.b64decode(starlette.signer.unsign(data, max_age=starlette.max_age))
        )

    floor_key = hashlib.sha256(b"floor").digest()
    floor_mac = hmac.digest(floor_key, b"", "sha256")

    def floor(value: str) -> object:
        body = value.partition(".")[0]
        digest = hmac.digest(floor_key, body.encode(), "sha256")
        hmac.compare_digest(digest, floor_mac)
        return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))

    # Checks, outside the timing: every contender decodes its cookie to the same user.
    repeat = cookies.fresh(1)[0]
    repeated_scope = _asgi_scope(asgi.handler, repeat)
    repeated_request = aiohttp_request(repeat)
    assert (await keyloom_asgi.current_session(repeated_scope)) is not None
    assert (await keyloom_aiohttp.current_session(repeated_request)) is not None
    checked = starlette_scope(starlette_value)
    await starlette(checked, noop, noop)
    assert checked["session"]["sid"] == payload["sid"], "Starlette read another session"
    assert starlette_decode(starlette_value.encode()) == checked["session"]
    assert floor(sample) == payload

    times: dict[str, list[float]] = {}
    contenders: list[tuple[str, Callable[[int], Awaitable[float]]]] = []

    def add(name: str, measure: Callable[[int], Awaitable[float]]) -> None:
        times[name] = []
        contenders.append((name, measure))

    # Every first read, the floor's and Starlette's included, is of n cookies none of which
    # was read before (so none is warm in the CPU's caches either).
    async def m_floor(n: int) -> float:
        return _timed(floor, cookies.fresh, n)

    async def m_starlette(n: int) -> float:
        def scopes(k: int) -> list[dict[str, Any]]:
            return [starlette_scope(v) for v in starlette_values(k)]

        return await _timed_async(starlette_call, scopes, n)

    async def m_starlette_decode(n: int) -> float:
        return _timed(starlette_decode, lambda k: [v.encode() for v in starlette_values(k)], n)

    async def m_asgi_first(n: int) -> float:
        def scopes(k: int) -> list[dict[str, Any]]:
            return [_asgi_scope(asgi.handler, v) for v in cookies.fresh(k)]

        return await _timed_async(keyloom_asgi.current_session, scopes, n)

    async def m_asgi_again(n: int) -> float:
        return await _timed_async(keyloom_asgi.current_session, lambda k: [repeated_scope] * k, n)

    async def m_aiohttp_first(n: int) -> float:
        def requests(k: int) -> list[web.Request]:
            return [aiohttp_request(v) for v in cookies.fresh(k)]

        return await _timed_async(keyloom_aiohttp.current_session, requests, n)

    async def m_aiohttp_again(n: int) -> float:
        again = [repeated_request]
        return await _timed_async(keyloom_aiohttp.current_session, lambda k: again * k, n)

    async def m_read_first(n: int) -> float:
        return _timed(lambda v: read_session(keyloom, v), cookies.fresh, n)

    add("floor (hmac+compare_digest+b64+json)", m_floor)
    add("Starlette SessionMiddleware (request)", m_starlette)
    add("Starlette decode only (unsign+b64+json)", m_starlette_decode)
    add("Keyloom ASGI current_session, first", m_asgi_first)
    add("Keyloom ASGI current_session, again", m_asgi_again)
    add("Keyloom aiohttp current_session, first", m_aiohttp_first)
    add("Keyloom aiohttp current_session, again", m_aiohttp_again)
    add("Keyloom read_session(value), first", m_read_first)

    # Where a first read goes: the parts, each alone on the same cookies.
    header = _header(SESSION_COOKIE, sample)
    signer = keyloom.signer("session")
    verified = signer.unsign(sample)

    async def m_parse(n: int) -> float:
        return _timed(lambda h: cookie_value([h], SESSION_COOKIE), lambda k: [header] * k, n)

    async def m_unsign(n: int) -> float:
        return _timed(signer.unsign, cookies.fresh, n)

    async def m_payload(n: int) -> float:
        return _timed(Session.from_payload, lambda k: [verified] * k, n)

    add(f"{PART}cookie_value (the session cookie alone)", m_parse)
    add(f"{PART}signer.unsign (HMAC, base64, JSON)", m_unsign)
    add(f"{PART}Session.from_payload", m_payload)

    for _, measure in contenders:  # warm-up
        await measure(min(200, calls))
    for n in range(rounds):
        order = contenders if n % 2 == 0 else contenders[::-1]
        for name, measure in order:
            times[name].append(await measure(calls))
    facts = {"keyloom_cookie": len(sample), "starlette_cookie": len(starlette_value)}
    return times, facts


def report(times: dict[str, list[float]], facts: dict[str, Any], rounds: int, calls: int) -> str:
    """The table and the verdicts against the targets."""
    med = {name: median(values) for name, values in times.items()}
    floor = med["floor (hmac+compare_digest+b64+json)"]
    starlette = med["Starlette SessionMiddleware (request)"]
    lines = [
        (
            f"stateless session cookie read: {rounds} rounds x {calls} sequential calls, "
            "median of the rounds' mean µs per call"
        ),
        (
            f"session cookie {facts['keyloom_cookie']} chars (Keyloom) / "
            f"{facts['starlette_cookie']} chars (Starlette), in a Cookie header with two other "
            "cookies; 'first': a cookie not read before (verified), 'again': the same cookie "
            "read again (remembered)"
        ),
        f"{'contender':<46} {'µs/call':>8} {'rounds':>13} {'x floor':>8} {'x Starlette':>12}",
    ]
    for name, values in times.items():
        lines.append(
            f"{name:<46} {med[name]:>8.2f} {spread(values):>13} {med[name] / floor:>8.2f} "
            f"{med[name] / starlette:>12.2f}"
        )
    lines.append("")
    for adapter in ("ASGI", "aiohttp"):
        for read in ("first", "again"):
            value = med[f"Keyloom {adapter} current_session, {read}"]
            vs_floor = value / floor
            vs_starlette = value / starlette
            verdict = "pass" if vs_floor <= TARGET_VS_FLOOR and vs_starlette < 1 else "MISS"
            lines.append(
                f"Keyloom {adapter} current_session, {read} read: {vs_floor:.2f}x the floor "
                f"(target <= {TARGET_VS_FLOOR}x), {vs_starlette:.2f}x Starlette's middleware "
                f"(target < 1x): {verdict}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds x 500 calls")
    parser.add_argument("--rounds", type=int, help="rounds (default 9; quick 3)")
    parser.add_argument("--calls", type=int, help="calls per contender and round (default 3000)")
    args = parser.parse_args(argv)
    rounds = max(1, min(args.rounds or (3 if args.quick else 9), 100))
    calls = max(10, min(args.calls or (500 if args.quick else 3000), 100_000))
    try:
        import itsdangerous  # noqa: F401
        import starlette  # noqa: F401
    except ImportError as exc:
        print(f"not measured: {exc.name} is not installed (nox -s bench installs it)")
        return 0
    _, cpu = cpu_plan()
    with pinned(cpu):
        times, facts = asyncio.run(run(rounds, calls))
    print(report(times, facts, rounds, calls))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

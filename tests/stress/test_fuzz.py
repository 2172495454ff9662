"""Fuzzing with Hypothesis: hostile callback requests and hostile provider answers.

Over 10,000 generated callback requests go straight to ``AuthHandler.handle`` (random and
hostile ``code``, ``state``, ``scopes`` and ``error`` values, huge values, unicode, repeated
keys, odd cookies, live, expired, tampered and foreign state cookies); a smaller sample goes
over real HTTP to the aiohttp app, plus raw byte-level requests. A provider on 127.0.0.1
answers the token, user-info and revoke calls with generated hostile answers (wrong JSON
types, missing fields, non-JSON, huge, chunked, gzip-bombed, truncated, reset).

The oracle (``stresskit.check_answer``): every answer is 200/302, a 4xx, or 502/503/504 with
a JSON or HTML error body; never a 500, never an exception out of the handler, never a
session cookie for a request that could not have signed in.

The tests are synchronous: Hypothesis drives them from the test thread while the servers run
in an event loop driven from the test (``stresskit.LoopRunner``). Examples are
derandomized, so a run is reproducible.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import stresskit

from keyloom_core import define_keyloom

pytestmark = pytest.mark.slow

#: Hypothesis examples of the handler fuzz; each is a batch of 6 to 10 requests.
HANDLER_EXAMPLES = 1_500
MIN_CALLBACK_REQUESTS = 10_000
HTTP_EXAMPLES = 200
PROVIDER_EXAMPLES = 600


@pytest.fixture
def runner() -> Iterator[stresskit.LoopRunner]:
    with stresskit.LoopRunner() as loop:
        yield loop


@pytest.fixture
def running(runner: stresskit.LoopRunner) -> stresskit.Stack:
    return runner.enter(stresskit.stress_stack(timeout=2.0))


def _mint(stack: stresskit.Stack) -> stresskit.StateMint:
    emulator = stack.emulator
    assert emulator is not None
    foreign = define_keyloom(
        providers=[stresskit.tiktok_provider(emulator.url)],
        secret="another-apps-secret-0123456789-abcdefghij",
        base_url=stack.url,
        autoload=False,
    )
    return stresskit.StateMint(stack.keyloom, foreign=foreign)


def test_fuzz_callback_requests_through_the_handler(runner, running):
    tally = stresskit.fuzz_handler(
        runner, running.handler, _mint(running), examples=HANDLER_EXAMPLES
    )
    print(f"\nhandler fuzz: {tally.cases} requests, statuses {dict(tally.statuses)}")
    assert tally.unhandled == 0, tally.failures
    assert tally.logged_errors == 0
    assert tally.cases >= MIN_CALLBACK_REQUESTS
    # the corpus reached every layer: routing, query checks, state checks, the token call
    for status in (400, 403, 404, 405, 502):
        assert tally.statuses[status] > 0, status
    assert running.responses.sessions_issued == 0


def test_fuzz_callback_requests_over_http(runner, running):
    client = runner.enter(stresskit.browser())
    tally = stresskit.fuzz_http(runner, running, client, _mint(running), examples=HTTP_EXAMPLES)
    print(f"\nHTTP fuzz: {tally.cases} requests, statuses {dict(tally.statuses)}")
    assert tally.unhandled == 0, tally.failures
    assert tally.logged_errors == 0
    assert tally.cases >= HTTP_EXAMPLES
    assert running.responses.server_errors == 0
    assert running.responses.sessions_issued == 0


def test_fuzz_hostile_provider_answers(runner):
    hostile = runner.enter(stresskit.HostileProvider())
    stack = runner.enter(
        stresskit.serve_app(
            stresskit.tiktok_provider(hostile.url), timeout=2.0, retry=stresskit.FUZZ_RETRY
        )
    )
    tally = stresskit.fuzz_provider(runner, stack.handler, hostile, examples=PROVIDER_EXAMPLES)
    print(
        f"\nprovider fuzz: {tally.cases} answers, {tally.signed_in} sign-ins, statuses {dict(tally.statuses)}"
    )
    assert tally.unhandled == 0, tally.failures
    assert tally.logged_errors == 0
    assert tally.signed_in > 0  # the well-formed answers still sign in
    assert hostile.requests["/v2/oauth/token/"] >= PROVIDER_EXAMPLES


# -- raw bytes on the wire -----------------------------------------------------------------------

RAW_REQUESTS = {
    "invalid utf-8 in the query": b"GET /api/auth/oauth/tiktok/callback?code=%FF%FE&state=%ED%A0%80 HTTP/1.1\r\n",
    "raw high bytes in the query": b"GET /api/auth/oauth/tiktok/callback?code=\xff\xfe&state=\xc3\x28 HTTP/1.1\r\n",
    "invalid utf-8 in the state cookie": b"GET /api/auth/oauth/tiktok/callback?code=a&state=b HTTP/1.1\r\nCookie: __keyloom_oauth=\xff\xfe.\xed\xa0\x80\r\n",
    "invalid utf-8 in the session cookie": b"GET /api/auth/session HTTP/1.1\r\nCookie: __keyloom_session=\xed\xa0\x80.\xff\r\n",
    "invalid utf-8 in the csrf header": b"POST /api/auth/logout HTTP/1.1\r\nCookie: __keyloom_csrf=\xed\xa0\x80\r\nx-keyloom-csrf: \xed\xa0\x80\r\nContent-Length: 0\r\n",
    "surrogate provider id": b"GET /api/auth/oauth/%ED%A0%80/start HTTP/1.1\r\n",
    "raw byte provider id": b"GET /api/auth/oauth/\xff/callback?code=a&state=b HTTP/1.1\r\n",
    "invalid utf-8 in callbackUrl": b"GET /api/auth/oauth/tiktok/start?callbackUrl=/%FF%ED%A0%80 HTTP/1.1\r\n",
    "huge query": b"GET /api/auth/oauth/tiktok/callback?code="
    + b"a" * 7000
    + b"&state=b HTTP/1.1\r\n",
    "huge request line": b"GET /api/auth/oauth/tiktok/callback?code="
    + b"a" * 20000
    + b" HTTP/1.1\r\n",
    "huge cookie": b"GET /api/auth/session HTTP/1.1\r\nCookie: __keyloom_session="
    + b"a" * 9000
    + b"\r\n",
    "many cookie headers": b"GET /api/auth/session HTTP/1.1\r\n" + b"Cookie: a=b\r\n" * 200,
    "many query fields": b"GET /api/auth/oauth/tiktok/callback?"
    + b"&".join(b"k%d=v" % i for i in range(500))
    + b" HTTP/1.1\r\n",
    "repeated code": b"GET /api/auth/oauth/tiktok/callback?code=a&code=b&state=c HTTP/1.1\r\n",
    "html accept with odd bytes": b"GET /api/auth/oauth/tiktok/callback?state=x HTTP/1.1\r\nAccept: text/html\xff\r\n",
    "absolute-form target": b"GET http://evil.example/api/auth/session HTTP/1.1\r\n",
    "double slash path": b"GET //api/auth/session HTTP/1.1\r\n",
    "dot segments": b"GET /api/auth/oauth/tiktok/../../session HTTP/1.1\r\n",
    "encoded slash in provider": b"GET /api/auth/oauth/tik%2Ftok/callback HTTP/1.1\r\n",
    "null byte in path": b"GET /api/auth/oauth/tik%00tok/callback HTTP/1.1\r\n",
}


async def _raw_exchange(url: str, head: bytes) -> tuple[int | None, bytes, bytes]:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(head + b"Host: " + host.encode() + b"\r\nConnection: close\r\n\r\n")
        await writer.drain()
        data = await asyncio.wait_for(reader.read(1 << 20), 10)
    finally:
        writer.close()
    head_part, _, body = data.partition(b"\r\n\r\n")
    status_line = head_part.split(b"\r\n", 1)[0].split()
    status = int(status_line[1]) if len(status_line) > 1 and status_line[1].isdigit() else None
    return status, head_part, body


@pytest.mark.parametrize("name", sorted(RAW_REQUESTS))
def test_raw_hostile_bytes_never_answer_500(runner, running, name):
    status, head, body = runner.run(_raw_exchange(running.url, RAW_REQUESTS[name]))
    assert status is not None, head
    assert status in stresskit.OK_STATUSES, (status, body[:300])
    if status >= 400 and b"Cache-Control: no-store" in head:  # Keyloom's own answer
        content_type = next(
            (
                line.split(b":", 1)[1].strip().decode()
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-type:")
            ),
            "",
        )
        _, problem = stresskit.describe_error(
            status, content_type, body, html="text/html" in content_type
        )
        assert problem is None, (problem, body[:300])
    assert b"__keyloom_session=ey" not in head
    assert running.responses.server_errors == 0

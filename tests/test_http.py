"""HttpClient against real local servers: retries, Retry-After, timeouts, resets, size limit."""

from __future__ import annotations

import asyncio
import collections
import enum
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import given
from hypothesis import strategies as st

from keyloom_core import (
    HttpClient,
    NetworkError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitedError,
    RetryPolicy,
)
from keyloom_core.http import form_encode

pytestmark = pytest.mark.anyio

FAST = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02)


class Scripted:
    """A server whose answers per path are scripted: the n-th request gets the n-th answer."""

    def __init__(self) -> None:
        self.hits: collections.Counter[str] = collections.Counter()
        self.scripts: dict[str, list[Callable[[], web.StreamResponse]]] = {}
        self.bodies: list[bytes] = []
        self.content_types: list[str] = []

    def script(self, path: str, *answers: Callable[[], web.StreamResponse]) -> str:
        self.scripts[path] = list(answers)
        return path

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.hits[request.path] += 1
        self.bodies.append(await request.read())
        self.content_types.append(request.headers.get("Content-Type", ""))
        answers = self.scripts[request.path]
        answer = answers[min(self.hits[request.path], len(answers)) - 1]
        result = answer()
        if asyncio.iscoroutine(result):
            return await result
        return result


def status(code: int, retry_after: str | None = None) -> Callable[[], web.Response]:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return lambda: web.json_response({"status": code}, status=code, headers=headers)


def ok() -> web.Response:
    return web.json_response({"ok": True})


def slow() -> object:
    async def answer() -> web.Response:
        await asyncio.sleep(0.5)
        return ok()

    return answer()


@pytest.fixture
async def server() -> AsyncIterator[tuple[Scripted, str]]:
    scripted = Scripted()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", scripted.handle)
    test_server = TestServer(app, host="127.0.0.1")
    await test_server.start_server()
    try:
        yield scripted, str(test_server.make_url("")).rstrip("/")
    finally:
        await test_server.close()


@pytest.fixture
async def client() -> AsyncIterator[HttpClient]:
    async with HttpClient(timeout=2.0, retry=FAST) as http:
        yield http


@pytest.fixture
async def dropping_server() -> AsyncIterator[tuple[list[int], str, list[int]]]:
    """A raw TCP server that reads a request and hangs up without answering, *drops[0]* times."""
    connections = [0]
    drops = [10**6]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections[0] += 1
        await reader.readuntil(b"\r\n\r\n")
        if connections[0] <= drops[0]:
            writer.transport.abort()  # reset: the request may or may not have been acted on
            return
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b'Content-Length: 11\r\nConnection: close\r\n\r\n{"ok":true}'
        )
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        yield connections, f"http://127.0.0.1:{port}", drops
    finally:
        srv.close()
        await srv.wait_closed()


async def test_plain_get(server: tuple[Scripted, str], client: HttpClient) -> None:
    scripted, url = server
    scripted.script("/me", ok)
    response = await client.get(f"{url}/me", params={"fields": "a,b"}, bearer="tok")
    assert response.ok
    assert response.json_object() == {"ok": True}
    assert scripted.hits["/me"] == 1


async def test_post_form_sends_the_form(server: tuple[Scripted, str], client: HttpClient) -> None:
    scripted, url = server
    scripted.script("/token", ok)
    await client.post_form(f"{url}/token", {"grant_type": "authorization_code", "code": "a b&c"})
    assert scripted.bodies == [b"grant_type=authorization_code&code=a+b%26c"]


async def test_form_content_type_is_set_unless_the_caller_set_one(
    server: tuple[Scripted, str], client: HttpClient
) -> None:
    scripted, url = server
    scripted.script("/form", ok)
    await client.post_form(f"{url}/form", {"a": "1"})
    custom = "application/x-www-form-urlencoded; charset=utf-8"
    await client.post_form(f"{url}/form", {"a": "1"}, headers={"content-type": custom})
    assert scripted.content_types == ["application/x-www-form-urlencoded", custom]
    assert scripted.bodies == [b"a=1", b"a=1"]


@given(st.dictionaries(st.text(max_size=12), st.text(max_size=24), max_size=6))
def test_form_encode_is_urlencode(form: dict[str, str]) -> None:
    assert form_encode(form) == urlencode(form, doseq=True)


def test_form_encode_leaves_other_types_to_urlencode() -> None:
    form: dict[str, Any] = {"n": 1, "flag": True, "scope": ["a", "b"], "raw": b"x y"}
    assert form_encode(form) == "n=1&flag=True&scope=a&scope=b&raw=x+y"

    class Grant(str, enum.Enum):  # noqa: UP042  (unlike StrEnum, it formats as its name)
        CODE = "authorization_code"

    assert form_encode({"grant_type": Grant.CODE}) == "grant_type=authorization_code"
    assert form_encode([("a", "b c")]) == "a=b+c"  # type: ignore[arg-type]


async def test_429_with_retry_after_then_success_waits(
    server: tuple[Scripted, str], client: HttpClient
) -> None:
    scripted, url = server
    scripted.script("/me", status(429, "1"), ok)
    started = time.monotonic()
    response = await client.get(f"{url}/me")
    assert response.status == 200
    assert scripted.hits["/me"] == 2
    assert time.monotonic() - started >= 0.9  # Retry-After: 1 was honoured


async def test_503_then_success(server: tuple[Scripted, str], client: HttpClient) -> None:
    scripted, url = server
    scripted.script("/me", status(503), ok)
    assert (await client.get(f"{url}/me")).status == 200
    assert scripted.hits["/me"] == 2


async def test_exhausted_429_raises_rate_limited(
    server: tuple[Scripted, str], client: HttpClient
) -> None:
    scripted, url = server
    scripted.script("/me", status(429, "0"))
    with pytest.raises(RateLimitedError) as info:
        await client.get(f"{url}/me", provider_id="fake")
    assert scripted.hits["/me"] == FAST.attempts
    assert info.value.retry_after == 0.0
    assert info.value.http_status == 429
    assert info.value.provider_id == "fake"


async def test_retry_after_longer_than_allowed_is_not_waited_for(
    server: tuple[Scripted, str],
) -> None:
    scripted, url = server
    scripted.script("/me", status(429, "1"), ok)
    policy = RetryPolicy(attempts=3, base_delay=0.01, max_retry_after=0.5)
    async with HttpClient(retry=policy) as http:
        started = time.monotonic()
        with pytest.raises(RateLimitedError) as info:
            await http.get(f"{url}/me")
    assert time.monotonic() - started < 0.5
    assert info.value.retry_after == 1.0
    assert scripted.hits["/me"] == 1


async def test_exhausted_503_returns_the_last_answer(
    server: tuple[Scripted, str], client: HttpClient
) -> None:
    scripted, url = server
    scripted.script("/me", status(503))
    response = await client.get(f"{url}/me")
    assert response.status == 503
    assert scripted.hits["/me"] == FAST.attempts


async def test_unsafe_post_is_retried_after_429(
    server: tuple[Scripted, str], client: HttpClient
) -> None:
    scripted, url = server
    scripted.script("/token", status(429, "0"), ok)
    response = await client.post_form(f"{url}/token", {"code": "c"})
    assert response.status == 200
    assert scripted.hits["/token"] == 2


@pytest.mark.parametrize("code", [502, 504])
async def test_unsafe_post_is_not_retried_after_a_gateway_error(
    server: tuple[Scripted, str], client: HttpClient, code: int
) -> None:
    # the provider may have used the code before the gateway failed
    scripted, url = server
    scripted.script("/token", status(code), ok)
    assert (await client.post_form(f"{url}/token", {"code": "c"})).status == code
    assert scripted.hits["/token"] == 1


@pytest.mark.parametrize("code", [502, 504])
async def test_get_is_retried_after_a_gateway_error(
    server: tuple[Scripted, str], client: HttpClient, code: int
) -> None:
    scripted, url = server
    scripted.script("/me", status(code), ok)
    assert (await client.get(f"{url}/me")).status == 200
    assert scripted.hits["/me"] == 2


async def test_unsafe_post_is_not_retried_after_a_reset(
    dropping_server: tuple[list[int], str, list[int]], client: HttpClient
) -> None:
    connections, url, drops = dropping_server
    drops[0] = 1
    with pytest.raises(NetworkError) as info:
        await client.post_form(f"{url}/token", {"code": "c"}, provider_id="fake")
    assert not isinstance(info.value, ProviderTimeoutError)
    assert connections[0] == 1
    assert isinstance(info.value.__cause__, aiohttp.ClientError)


@pytest.mark.parametrize("method", ["GET", "idempotent POST"])
async def test_idempotent_request_is_retried_after_a_reset(
    dropping_server: tuple[list[int], str, list[int]], client: HttpClient, method: str
) -> None:
    connections, url, drops = dropping_server
    drops[0] = 1
    if method == "GET":
        response = await client.get(f"{url}/me")
    else:
        response = await client.post_form(f"{url}/revoke", {"token": "t"}, idempotent=True)
    assert response.json_object() == {"ok": True}
    assert connections[0] == 2


async def test_resets_exhaust_the_retries(
    dropping_server: tuple[list[int], str, list[int]], client: HttpClient
) -> None:
    # a POST, because aiohttp itself retries a GET once on a dropped connection
    connections, url, _ = dropping_server
    with pytest.raises(NetworkError, match="connection to the provider failed"):
        await client.post_form(f"{url}/revoke", {"token": "t"}, idempotent=True)
    assert connections[0] == FAST.attempts


async def test_unsafe_post_is_not_retried_after_a_timeout(server: tuple[Scripted, str]) -> None:
    scripted, url = server
    scripted.script("/token", slow)
    async with HttpClient(timeout=0.1, retry=FAST) as http:
        with pytest.raises(ProviderTimeoutError) as info:
            await http.post_form(f"{url}/token", {"code": "c"}, provider_id="fake")
    assert scripted.hits["/token"] == 1
    assert isinstance(info.value, TimeoutError)
    assert isinstance(info.value, NetworkError)


async def test_get_timeout_is_retried_then_raised(server: tuple[Scripted, str]) -> None:
    scripted, url = server
    scripted.script("/me", slow)
    async with HttpClient(timeout=0.1, retry=FAST) as http:
        with pytest.raises(ProviderTimeoutError):
            await http.get(f"{url}/me")
    assert scripted.hits["/me"] == FAST.attempts


async def test_connection_refused_is_a_network_error(client: HttpClient) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(NetworkError) as info:
        await client.post_form(f"http://127.0.0.1:{port}/token", {"code": "c"}, provider_id="fake")
    assert not isinstance(info.value, ProviderTimeoutError)
    assert info.value.provider_id == "fake"
    assert "cannot connect" in str(info.value)


@pytest.mark.parametrize("chunked", [False, True])
async def test_body_larger_than_max_body(server: tuple[Scripted, str], chunked: bool) -> None:
    scripted, url = server

    def big() -> web.StreamResponse:
        response = web.Response(body=b"x" * 5000)
        if chunked:
            response.enable_chunked_encoding()
        return response

    scripted.script("/me", big)
    async with HttpClient(retry=FAST, max_body=1000) as http:
        with pytest.raises(ProviderError, match="too large"):
            await http.get(f"{url}/me")
        scripted.script("/me", lambda: web.Response(body=b"x" * 1000))
        assert len((await http.get(f"{url}/me")).body) == 1000


async def test_redirects_are_not_followed(server: tuple[Scripted, str], client: HttpClient) -> None:
    scripted, url = server
    scripted.script("/token", lambda: web.Response(status=302, headers={"Location": "/elsewhere"}))
    response = await client.post_form(f"{url}/token", {"code": "c"})
    assert response.status == 302
    assert scripted.hits["/elsewhere"] == 0


@pytest.mark.parametrize(
    ("body", "message"),
    [(b"<html>", "not JSON"), (b"[1, 2]", "not an object"), (b"\xff\xfe", "not JSON")],
)
async def test_json_object_never_quotes_the_body(
    server: tuple[Scripted, str], client: HttpClient, body: bytes, message: str
) -> None:
    scripted, url = server
    scripted.script("/me", lambda: web.Response(body=body, status=500))
    response = await client.get(f"{url}/me")
    with pytest.raises(ProviderError, match=message) as info:
        response.json_object(provider_id="fake")
    assert info.value.http_status == 500
    assert "html" not in str(info.value)


async def test_borrowed_session_is_left_open(server: tuple[Scripted, str]) -> None:
    scripted, url = server
    scripted.script("/me", ok)
    async with aiohttp.ClientSession() as session:
        async with HttpClient(session, retry=FAST) as http:
            assert http.session is session
            assert (await http.get(f"{url}/me")).ok
        assert not session.closed


async def test_owned_session_is_closed() -> None:
    http = HttpClient()
    with pytest.raises(RuntimeError, match="not open"):
        http.session  # noqa: B018
    async with http:
        session = http.session
        assert "open" in repr(http)
    assert session.closed
    with pytest.raises(RuntimeError, match="not open"):
        http.session  # noqa: B018


def test_retry_policy_delays() -> None:
    policy = RetryPolicy(attempts=3, base_delay=0.1, max_delay=0.15, max_retry_after=5)
    assert policy.delay(3, None) is None
    assert policy.delay(1, 2.0) == 2.0
    assert policy.delay(1, 6.0) is None
    for _ in range(50):
        assert 0 <= policy.delay(1, None) <= 0.1
        assert 0 <= policy.delay(2, None) <= 0.15
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)


async def test_http_date_retry_after(server: tuple[Scripted, str], client: HttpClient) -> None:
    scripted, url = server
    scripted.script("/me", status(429, "Wed, 21 Oct 2015 07:28:00 GMT"), ok)  # in the past
    assert (await client.get(f"{url}/me")).status == 200
    assert scripted.hits["/me"] == 2


async def test_a_retry_after_beyond_the_call_s_deadline_is_not_waited_for(
    server: tuple[Scripted, str],
) -> None:
    # Inside a provider call the deadline is the call's, not an enclosing cancel scope's:
    # a Retry-After the call would not survive is a RateLimitedError at once, not a
    # timeout after the whole budget.
    from keyloom_core import ProviderSpec, TokenSet, configure_provider, define_keyloom

    scripted, url = server
    scripted.script("/token", status(429, "4"))
    spec = ProviderSpec(
        id="limited", name="Limited", authorize_url=f"{url}/authorize", token_url=f"{url}/token"
    )
    provider = configure_provider(spec, client_id="c", client_secret="s", scopes=["profile"])
    keyloom = define_keyloom(
        providers=[provider],
        secret="s" * 32,
        base_url="http://127.0.0.1:8000",
        autoload=False,
        timeout=1.0,
    )
    async with keyloom:
        started = time.monotonic()
        with pytest.raises(RateLimitedError) as info:
            await keyloom.refresh("limited", TokenSet(access_token="a", refresh_token="r"))
    assert time.monotonic() - started < 0.5
    assert info.value.retry_after == 4.0


def test_an_authorization_url_s_states_are_not_remembered() -> None:
    from keyloom_core import http

    http._quote_public.cache_clear()
    state = "x" * 43
    query = http.query_encode({"state": state, "redirect_uri": "https://app.example/cb"})
    assert query == urlencode({"state": state, "redirect_uri": "https://app.example/cb"})
    assert http._quote_public.cache_info().currsize == 1  # the redirect URI only

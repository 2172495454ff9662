"""Server-side sessions, shared state and rate limits through both integrations.

Every test taking ``serve`` runs on aiohttp and on Starlette under uvicorn; the store is
memory or an SQLite file (the multi-process cases live in ``tests/workers``).
"""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Mapping
from typing import Any

import aiohttp
import pytest
import yarl

from keyloom_core import ConfigurationError, define_keyloom
from keyloom_core.store import Limit, MemoryStore, RateLimits, SQLiteStore, client_address

pytestmark = pytest.mark.anyio

JSON = {"Accept": "application/json"}
HTML = {"Accept": "text/html"}
SESSION = "__keyloom_session"


class Reply:
    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.text = body.decode("utf-8", "replace")
        self.set_cookies = {h.split("=", 1)[0]: h for h in headers.getall("Set-Cookie", [])}

    def json(self) -> Any:
        assert self.headers["Content-Type"].startswith("application/json"), self.text
        return json.loads(self.text)

    def cookie_value(self, name: str) -> str:
        return self.set_cookies[name].split(";", 1)[0].split("=", 1)[1]


async def call(
    session: aiohttp.ClientSession,
    method: str,
    url: str | yarl.URL,
    *,
    cookies: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    params: Any = None,
) -> Reply:
    sent = dict(headers or {})
    if cookies is not None:
        sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
    async with session.request(
        method, url, headers=sent, params=params, allow_redirects=False
    ) as resp:
        return Reply(resp.status, resp.headers, await resp.read())


async def sign_in(browser: aiohttp.ClientSession, srv: Any, **headers: str) -> Reply:
    start = await call(
        browser, "GET", srv.auth("/oauth/fake/start"), params={"callbackUrl": "/"}, headers=headers
    )
    assert start.status == 302, start.text
    at_provider = await call(browser, "GET", start.headers["Location"])
    callback = yarl.URL(at_provider.headers["Location"], encoded=True)
    return await call(browser, "GET", callback, headers=headers)


async def logout(browser: aiohttp.ClientSession, srv: Any) -> Reply:
    token = (await call(browser, "GET", srv.auth("/csrf"), headers=JSON)).json()["csrfToken"]
    return await call(
        browser, "POST", srv.auth("/logout"), headers={**JSON, "x-keyloom-csrf": token}
    )


@pytest.fixture
async def client() -> Any:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield session


@pytest.fixture
async def second_browser() -> Any:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield session


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Any) -> Any:
    if request.param == "memory":
        return MemoryStore()
    return SQLiteStore(tmp_path / "keyloom.db")


def _payload(value: str) -> dict[str, Any]:
    body = value.split(".", 1)[0]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


async def test_js_client_flow_with_server_sessions(serve, browser, store):
    """``@keyloom/react``'s requests (session, signIn, csrf, logout) on server-side sessions."""
    async with serve(store=store) as srv:
        assert srv.keyloom.sessions.server_side
        before = await call(browser, "GET", srv.auth("/session"), headers=JSON)
        assert before.json() == {"session": None, "user": None}
        callback = await sign_in(browser, srv, Accept=HTML["Accept"])
        assert callback.status == 302
        assert callback.headers["Location"] == f"{srv.url}/"
        cookie = callback.cookie_value(SESSION)
        assert set(_payload(cookie)) == {"sid", "exp"}  # only an opaque id travels
        assert "Max-Age=28800" in callback.set_cookies[SESSION]
        data = (await call(browser, "GET", srv.auth("/session"), headers=JSON)).json()
        assert set(data) == {"session", "user"}
        assert data["user"]["name"] == "Alice"
        assert data["session"]["userId"] == "id-alice"
        assert data["session"]["id"] == _payload(cookie)["sid"]
        me = (await call(browser, "GET", f"{srv.url}/me")).json()
        assert me == {"user": data["user"], "provider": "fake"}
        listed = await srv.keyloom.sessions.list("id-alice")
        assert [r.id for r in listed] == [data["session"]["id"]]
        out = await logout(browser, srv)
        assert out.status == 200
        assert out.json() == {"ok": True}
        after = await call(browser, "GET", srv.auth("/session"), headers=JSON)
        assert after.json() == {"session": None, "user": None}
        assert await srv.keyloom.sessions.list("id-alice") == []


async def test_a_cookie_copied_before_logout_is_signed_out(serve, browser, client, store):
    async with serve(store=store) as srv:
        copy = (await sign_in(browser, srv)).cookie_value(SESSION)
        live = await call(client, "GET", srv.auth("/session"), cookies={SESSION: copy})
        assert live.json()["user"]["id"] == "id-alice"
        assert (await logout(browser, srv)).status == 200
        dead = await call(client, "GET", srv.auth("/session"), cookies={SESSION: copy})
        me = await call(client, "GET", f"{srv.url}/me", cookies={SESSION: copy})
    assert dead.json() == {"session": None, "user": None}
    assert "Max-Age=0" in dead.set_cookies[SESSION]
    assert me.json() == {"user": None, "provider": None}


async def test_revoke_all_signs_out_every_browser(serve, browser, second_browser, client, store):
    async with serve(store=store) as srv:
        first = (await sign_in(browser, srv)).cookie_value(SESSION)
        second = (await sign_in(second_browser, srv)).cookie_value(SESSION)
        assert _payload(first)["sid"] != _payload(second)["sid"]
        assert len(await srv.keyloom.sessions.list("id-alice")) == 2
        assert await srv.keyloom.sessions.revoke_all("id-alice") == 2
        replies = [
            await call(client, "GET", srv.auth("/session"), cookies={SESSION: value})
            for value in (first, second)
        ]
    assert [r.json()["user"] for r in replies] == [None, None]


async def test_a_new_login_gets_a_new_id_and_ends_the_old_one(serve, browser, client, store):
    async with serve(store=store) as srv:
        old = (await sign_in(browser, srv)).cookie_value(SESSION)
        new = (await sign_in(browser, srv)).cookie_value(SESSION)
        assert _payload(old)["sid"] != _payload(new)["sid"]
        old_reply = await call(client, "GET", srv.auth("/session"), cookies={SESSION: old})
        new_reply = await call(client, "GET", srv.auth("/session"), cookies={SESSION: new})
    assert old_reply.json()["user"] is None
    assert new_reply.json()["user"]["id"] == "id-alice"


async def test_a_stateless_cookie_is_not_a_server_session(
    serve, browser, client, store, make_keyloom
):
    async with serve(store=store) as srv:
        stateless = make_keyloom(base_url=srv.url)  # same secret, no store
        assert not stateless.sessions.server_side
        from keyloom_core import LoginResult, Profile, TokenSet
        from keyloom_core.web.sessions import issue_session

        result = LoginResult(
            provider_id="fake",
            profile=Profile(provider_id="fake", id="id-alice", name="Alice"),
            tokens=TokenSet(access_token="at"),
            granted_scopes=frozenset(),
            requested_scopes=frozenset(),
            callback_url="/",
        )
        _, value = issue_session(stateless, result)
        reply = await call(client, "GET", srv.auth("/session"), cookies={SESSION: value})
    assert reply.json()["user"] is None


# -- the store down: typed 503, never 500, never signed in ---------------------------------


def _dead_redis_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"redis://127.0.0.1:{sock.getsockname()[1]}/0"


async def test_store_down_answers_typed_503(serve, browser, client):
    pytest.importorskip("redis")
    from keyloom_core.store import RedisStore

    async with serve(store=RedisStore(_dead_redis_url())) as srv:
        value = srv.keyloom.signer("session-id").sign({"sid": "0123456789abcdef.x"}, ttl=60)
        session = await call(client, "GET", srv.auth("/session"), cookies={SESSION: value})
        me = await call(client, "GET", f"{srv.url}/me", cookies={SESSION: value})
        start = await call(client, "GET", srv.auth("/oauth/fake/start"), headers=JSON)
        page = await call(client, "GET", srv.auth("/oauth/fake/start"), headers=HTML)
        token = (await call(browser, "GET", srv.auth("/csrf"))).json()["csrfToken"]
        out = await call(
            browser,
            "POST",
            srv.auth("/logout"),
            headers={**JSON, "x-keyloom-csrf": token},
            cookies={SESSION: value, "__keyloom_csrf": token},
        )
    for reply in (session, start, out):
        assert reply.status == 503, reply.text
        body = reply.json()
        assert body["error"] == "store_unavailable"
        assert set(body) == {"error", "message", "hint"}
        assert reply.headers["Retry-After"] == "5"
        assert "Traceback" not in reply.text
    assert SESSION not in session.set_cookies
    assert "Max-Age=0" in out.set_cookies[SESSION]  # a logout clears the cookie all the same
    assert page.status == 503
    assert "Something went wrong" in page.text
    # The app's own route: the adapter raises the typed error (the app decides; here the
    # test apps do not catch it, so the server answers its generic 500 without a session).
    assert me.status == 500
    assert "id-alice" not in me.text


async def test_store_down_at_the_callback_signs_nobody_in(serve, browser, tmp_path):
    store = SQLiteStore(tmp_path / "k.db", busy_timeout=0.1)
    async with serve(store=store) as srv:
        start = await call(browser, "GET", srv.auth("/oauth/fake/start"))
        at_provider = await call(browser, "GET", start.headers["Location"])
        import sqlite3

        blocker = sqlite3.connect(tmp_path / "k.db", isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            callback = await call(
                browser,
                "GET",
                yarl.URL(at_provider.headers["Location"], encoded=True),
                headers=JSON,
            )
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        after = await call(browser, "GET", srv.auth("/session"), headers=JSON)
    assert callback.status == 503
    assert callback.json()["error"] == "store_unavailable"
    assert SESSION not in callback.set_cookies
    assert after.json()["user"] is None


# -- rate limits -----------------------------------------------------------------------------


async def test_start_rate_limit_is_per_client(serve, client):
    limits = RateLimits(start=Limit(3, 60), callback=None, failed_callback=None)
    async with serve(store=MemoryStore(), rate_limits=limits, trusted_proxies=["127.0.0.1"]) as srv:
        url = srv.auth("/oauth/fake/start")
        a = {"X-Forwarded-For": "203.0.113.7", **JSON}
        b = {"X-Forwarded-For": "198.51.100.9", **JSON}
        first = [await call(client, "GET", url, headers=a) for _ in range(3)]
        over = await call(client, "GET", url, headers=a)
        other = await call(client, "GET", url, headers=b)
        page = await call(client, "GET", url, headers={**a, **HTML})
    assert [r.status for r in first] == [302, 302, 302]
    assert over.status == 429
    assert over.json()["error"] == "too_many_requests"
    assert set(over.json()) == {"error", "message", "hint"}
    assert 1 <= int(over.headers["Retry-After"]) <= 60
    assert other.status == 302
    assert page.status == 429
    assert page.headers["Retry-After"] == over.headers["Retry-After"]


async def test_forwarded_headers_from_an_untrusted_peer_are_ignored(serve, client, integration):
    if integration == "asgi":
        pytest.skip(
            "uvicorn rewrites the ASGI client from X-Forwarded-For itself when the peer is in "
            "its --forwarded-allow-ips (127.0.0.1 by default); the protocol test below covers it"
        )
    limits = RateLimits(start=Limit(2, 60), callback=None, failed_callback=None)
    async with serve(store=MemoryStore(), rate_limits=limits) as srv:
        url = srv.auth("/oauth/fake/start")
        replies = [
            await call(client, "GET", url, headers={"X-Forwarded-For": f"10.0.0.{i}"})
            for i in range(3)
        ]
    assert [r.status for r in replies] == [302, 302, 429]


async def test_failed_callbacks_block_the_address(serve, client, browser):
    limits = RateLimits(start=None, callback=None, failed_callback=Limit(3, 600))
    async with serve(store=MemoryStore(), rate_limits=limits) as srv:
        url = srv.auth("/oauth/fake/callback")
        probes = [
            await call(client, "GET", url, params={"code": "c", "state": f"s{i}"}, headers=JSON)
            for i in range(3)
        ]
        start = await call(browser, "GET", srv.auth("/oauth/fake/start"))
        at_provider = await call(browser, "GET", start.headers["Location"])
        blocked = await call(
            browser, "GET", yarl.URL(at_provider.headers["Location"], encoded=True), headers=JSON
        )
    assert [p.status for p in probes] == [400, 400, 400]
    assert blocked.status == 429
    assert blocked.json()["error"] == "too_many_requests"


async def test_callback_rate_limit(serve, client):
    limits = RateLimits(start=None, callback=Limit(2, 60), failed_callback=None)
    async with serve(store=MemoryStore(), rate_limits=limits) as srv:
        url = srv.auth("/oauth/fake/callback")
        replies = [await call(client, "GET", url, headers=JSON) for _ in range(3)]
    assert [r.status for r in replies] == [400, 400, 429]


async def test_the_handler_ignores_forwarded_headers_of_untrusted_peers(make_keyloom):
    from keyloom_core.web import AuthHandler, AuthRequest

    limits = RateLimits(start=Limit(2, 60), callback=None, failed_callback=None)
    handler = AuthHandler(make_keyloom(store=MemoryStore(), rate_limits=limits))
    statuses = []
    async with handler.keyloom:
        for i in range(3):
            request = AuthRequest.from_raw(
                "GET",
                "/oauth/fake/start",
                "",
                [("X-Forwarded-For", f"10.0.0.{i}")],
                client="192.0.2.10",
            )
            statuses.append((await handler.handle(request)).status)
    assert statuses == [302, 302, 429]


def test_client_address_trusts_only_configured_proxies():
    from keyloom_core.store._limits import parse_networks

    proxies = parse_networks(["10.0.0.0/8", "::1"])
    xff = {"x-forwarded-for": "203.0.113.5, 10.1.1.1"}
    assert client_address("192.0.2.1", xff, proxies) == "192.0.2.1"
    assert client_address("10.2.2.2", xff, proxies) == "203.0.113.5"
    assert client_address("10.2.2.2", xff, ()) == "10.2.2.2"
    forwarded = {"forwarded": 'for=198.51.100.17;proto=https, for="[2001:db8::7]:4711"'}
    assert client_address("::1", forwarded, proxies) == "2001:db8::7"
    assert client_address("10.2.2.2", {"x-forwarded-for": "garbage"}, proxies) == "10.2.2.2"
    assert client_address(None, xff, proxies) == "unknown"
    # a client's own Forwarded header rides along untouched: the proxy's X-Forwarded-For wins
    both = {**xff, "forwarded": "for=198.51.100.99"}
    assert client_address("10.2.2.2", both, proxies) == "203.0.113.5"
    with pytest.raises(ConfigurationError, match="trusted_proxies"):
        parse_networks(["not-an-ip"])


async def test_configuration_choices(make_keyloom, tmp_path):
    with_store = make_keyloom(store=f"sqlite://{tmp_path}/a.db")
    assert with_store.sessions.server_side
    assert with_store.settings.rate_limits == RateLimits()
    assert with_store.session_ttl == 8 * 3600
    assert with_store.settings.session_touch_interval == 300
    assert with_store.states.guard is with_store.settings.store
    explicit = make_keyloom(store=MemoryStore(), sessions="stateless", rate_limits=False)
    assert not explicit.sessions.server_side
    assert explicit.settings.rate_limits is None
    plain = make_keyloom()
    assert not plain.sessions.server_side
    assert plain.settings.rate_limits is None
    assert plain.session_ttl == 30 * 24 * 3600
    with pytest.raises(ConfigurationError, match="need a store"):
        make_keyloom(sessions="server")
    with pytest.raises(ConfigurationError, match="counted in a store"):
        make_keyloom(rate_limits=RateLimits())
    assert define_keyloom is not None


async def test_a_profile_that_is_not_json_is_a_plugin_error(make_keyloom):
    from keyloom_core import LoginResult, PluginError, Profile, TokenSet
    from keyloom_core.web._session_io import start_session

    keyloom = make_keyloom(store=MemoryStore())
    result = LoginResult(
        provider_id="fake",
        profile=Profile(provider_id="fake", id="u1", name="A", extra={"when": object()}),
        tokens=TokenSet(access_token="at"),
        granted_scopes=frozenset(),
        requested_scopes=frozenset(),
        callback_url="/",
    )
    with pytest.raises(PluginError, match="cannot be stored in a session"):
        await start_session(keyloom, result)
    assert await keyloom.sessions.list("u1") == []


class CountingStore(MemoryStore):
    """A real memory store that counts session reads and writes."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.touches = 0

    async def get_session(self, session_id: str) -> Any:
        self.reads += 1
        return await super().get_session(session_id)

    async def touch_session(self, session_id: str, last_seen_at: float) -> bool:
        self.touches += 1
        return await super().touch_session(session_id, last_seen_at)


async def test_current_session_costs_one_store_read(serve, browser):
    store = CountingStore()
    async with serve(store=store) as srv:
        await sign_in(browser, srv)
        store.reads = store.touches = 0
        for _ in range(10):
            me = (await call(browser, "GET", f"{srv.url}/me")).json()
            assert me["user"]["id"] == "id-alice"
    # The test app's /me awaits current_session and current_user: two calls, two reads.
    assert (store.reads, store.touches) == (20, 0)

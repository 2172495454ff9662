"""The web layer against the attacks of an outside audit: cookie tossing, unbound CSRF
tokens, oversized state cookies, secrets in reprs, unsendable headers, HEAD requests.

Tests named ``..._both`` run through real aiohttp and ASGI (uvicorn) servers; the others
drive :class:`AuthHandler` directly with an ``https`` base URL (Secure cookies).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import aiohttp
import attrs
import pytest
import yarl

from keyloom_core import configure_provider
from keyloom_core.web import AuthHandler, AuthRequest, parse_cookies
from keyloom_core.web.sessions import issue_session, new_csrf_token

pytestmark = pytest.mark.anyio


@attrs.frozen
class Reply:
    status: int
    headers: Any
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def set_cookies(self) -> list[str]:
        return list(self.headers.getall("Set-Cookie", []))


async def call(
    session: aiohttp.ClientSession,
    method: str,
    url: str | yarl.URL,
    *,
    cookie_header: str | None = None,
    cookies: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    params: Any = None,
) -> Reply:
    sent = dict(headers or {})
    if cookies is not None:
        cookie_header = "; ".join(f"{k}={v}" for k, v in cookies.items())
    if cookie_header is not None:
        sent["Cookie"] = cookie_header
    async with session.request(
        method, url, headers=sent, params=params, allow_redirects=False
    ) as resp:
        return Reply(resp.status, resp.headers, await resp.read())


@pytest.fixture
async def client() -> Any:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield session


def _result() -> Any:
    from keyloom_core.models import LoginResult, Profile, TokenSet

    return LoginResult(
        provider_id="fake",
        profile=Profile(provider_id="fake", id="id-bob", name="Bob"),
        tokens=TokenSet(access_token="at-secret", refresh_token="rt-secret"),
        granted_scopes=frozenset({"profile"}),
        requested_scopes=frozenset({"profile"}),
        callback_url="/",
    )


def _session(response: Any) -> Any:
    return json.loads(response.body)


# -- 1. cookie tossing: __Host- names, duplicates refused ------------------------------------


async def test_secure_cookies_carry_the_host_prefix(make_keyloom):
    handler = AuthHandler(make_keyloom())  # https base URL: Secure cookies
    start = await handler.handle(AuthRequest("GET", "/oauth/fake/start"))
    csrf = await handler.handle(AuthRequest("GET", "/csrf"))
    for cookie in (*start.cookies, *csrf.cookies):
        assert cookie.startswith("__Host-keyloom_")
        attributes = cookie.split("; ")[1:]
        assert "Secure" in attributes
        assert "Path=/" in attributes
        assert not any(a.lower().startswith("domain=") for a in attributes)
    assert handler.session_cookie == "__Host-keyloom_session"
    assert handler.csrf_cookie == "__Host-keyloom_csrf"
    assert handler.state_cookie == "__Host-keyloom_oauth"
    loopback = AuthHandler(make_keyloom(base_url="http://127.0.0.1:8000"))
    assert loopback.session_cookie == "__keyloom_session"  # no Secure, so no prefix


async def test_a_tossed_unprefixed_session_cookie_is_ignored(make_keyloom):
    """A sibling subdomain can set ``__keyloom_session`` (not ``__Host-``): the attacker's
    own valid session planted there does not sign the victim in."""
    keyloom = make_keyloom()
    handler = AuthHandler(keyloom)
    _, attackers = issue_session(keyloom, _result())
    tossed = await handler.handle(
        AuthRequest("GET", "/session", cookies={"__keyloom_session": attackers})
    )
    assert _session(tossed) == {"session": None, "user": None}
    genuine = await handler.handle(
        AuthRequest("GET", "/session", cookies={"__Host-keyloom_session": attackers})
    )
    assert _session(genuine)["user"]["id"] == "id-bob"


@pytest.mark.parametrize("prefixed", [False, True])
async def test_two_cookies_of_one_auth_name_read_as_none(make_keyloom, prefixed):
    keyloom = make_keyloom()
    handler = AuthHandler(keyloom)
    name = "__Host-keyloom_session" if prefixed else "__keyloom_session"
    _, mine = issue_session(keyloom, _result())
    _, planted = issue_session(keyloom, _result())
    for header in (f"{name}={planted}; {name}={mine}", f"{name}={mine}; {name}={planted}"):
        cookies = parse_cookies([header, "other=1"])
        assert name not in cookies
        assert cookies["other"] == "1"
        request = AuthRequest.from_raw("GET", "/session", b"", [("Cookie", header)])
        if prefixed:
            assert _session(await handler.handle(request)) == {"session": None, "user": None}
    # split over two Cookie headers, too
    assert name not in parse_cookies([f"{name}={mine}", f"{name}={planted}"])
    # other cookies keep the first-wins rule
    assert parse_cookies(["theme=dark; theme=light"]) == {"theme": "dark"}


async def test_duplicate_session_cookie_signs_out_both(serve, client):
    """Through both adapters: the session route and the app's ``current_session``."""
    async with serve() as srv:
        keyloom = srv.keyloom
        _, mine = issue_session(keyloom, _result())
        _, planted = issue_session(keyloom, _result())
        single = await call(client, "GET", srv.auth("/session"), cookies={"__keyloom_session": mine})
        assert single.json()["user"]["id"] == "id-bob"
        header = f"__keyloom_session={planted}; __keyloom_session={mine}"
        doubled = await call(client, "GET", srv.auth("/session"), cookie_header=header)
        assert doubled.json() == {"session": None, "user": None}
        me = await call(client, "GET", f"{srv.url}/me", cookie_header=header)
        assert me.json()["user"] is None
        state = await call(
            client,
            "GET",
            srv.auth("/oauth/fake/callback"),
            params={"code": "c", "state": "s"},
            cookie_header="__keyloom_oauth=a.b; __keyloom_oauth=c.d",
        )
        assert state.status == 400
        assert state.json()["error"] == "invalid_state"
        assert "no sign-in is in progress" in state.json()["message"]


# -- 2. the CSRF token is bound to the session -------------------------------------------------


async def test_a_token_minted_without_a_session_does_not_log_a_victim_out(make_keyloom):
    keyloom = make_keyloom()
    handler = AuthHandler(keyloom)
    _, value = issue_session(keyloom, _result())
    # anyone can get a token from /csrf without a session
    anon = await handler.handle(AuthRequest("GET", "/csrf"))
    token = _session(anon)["csrfToken"]
    victim = {handler.session_cookie: value}
    refused = await handler.handle(
        AuthRequest(
            "POST",
            "/logout",
            headers={"x-keyloom-csrf": token},
            cookies={**victim, handler.csrf_cookie: token},
        )
    )
    assert refused.status == 403
    assert refused.cookies == ()
    # another session's token is refused too
    other, _ = issue_session(keyloom, _result())
    foreign = new_csrf_token(keyloom, session_id=other.id)
    refused = await handler.handle(
        AuthRequest(
            "POST",
            "/logout",
            headers={"x-keyloom-csrf": foreign},
            cookies={**victim, handler.csrf_cookie: foreign},
        )
    )
    assert refused.status == 403
    # the token the victim's own browser gets from /csrf works
    own = _session(await handler.handle(AuthRequest("GET", "/csrf", cookies=victim)))["csrfToken"]
    done = await handler.handle(
        AuthRequest(
            "POST",
            "/logout",
            headers={"x-keyloom-csrf": own},
            cookies={**victim, handler.csrf_cookie: own},
        )
    )
    assert done.status == 200
    assert any(c.startswith(f"{handler.session_cookie}=;") for c in done.cookies)


async def test_an_unbound_token_cannot_log_a_signed_in_browser_out_both(serve, client):
    async with serve() as srv:
        _, value = issue_session(srv.keyloom, _result())
        victim = {"__keyloom_session": value}
        # the attacker's token, fetched without any session, planted with the header
        token = (await call(client, "GET", srv.auth("/csrf"))).json()["csrfToken"]
        refused = await call(
            client,
            "POST",
            srv.auth("/logout"),
            headers={"x-keyloom-csrf": token},
            cookies={**victim, "__keyloom_csrf": token},
        )
        assert refused.status == 403
        assert refused.json() == {"error": "csrf"}
        assert refused.set_cookies() == []
        still = await call(client, "GET", srv.auth("/session"), cookies=victim)
        assert still.json()["user"]["id"] == "id-bob"
        # the token the browser itself gets with its session works
        mine = await call(client, "GET", srv.auth("/csrf"), cookies=victim)
        own = mine.json()["csrfToken"]
        done = await call(
            client,
            "POST",
            srv.auth("/logout"),
            headers={"x-keyloom-csrf": own},
            cookies={**victim, "__keyloom_csrf": own},
        )
        assert done.status == 200


async def test_a_signed_out_client_gets_a_usable_token_both(serve, client):
    async with serve() as srv:
        reply = await call(client, "GET", srv.auth("/csrf"))
        token = reply.json()["csrfToken"]
        (cookie,) = reply.set_cookies()
        assert cookie.startswith(f"__keyloom_csrf={token};")
        ok = await call(
            client,
            "POST",
            srv.auth("/logout"),
            headers={"x-keyloom-csrf": token},
            cookies={"__keyloom_csrf": token},
        )
        assert ok.status == 200
        assert ok.json() == {"ok": True}


# -- 5. the state cookie stays under the browser's limit --------------------------------------


async def test_an_oversized_state_cookie_is_refused_at_start_both(serve, client):
    async with serve() as srv:
        long_callback = "/" + "é" * 600  # 601 characters, about 3,600 bytes encoded
        refused = await call(
            client,
            "GET",
            srv.auth("/oauth/fake/start"),
            params={"callbackUrl": long_callback},
            headers={"Accept": "application/json"},
        )
        assert refused.status == 400, refused.body
        assert refused.json()["error"] == "invalid_callback_url"
        assert "too long" in refused.json()["message"]
        assert refused.set_cookies() == []
        fine = await call(
            client, "GET", srv.auth("/oauth/fake/start"), params={"callbackUrl": "/" + "é" * 100}
        )
        assert fine.status == 302
        (cookie,) = fine.set_cookies()
        assert len(cookie.encode()) < 4000


# -- 6. no secrets in reprs -------------------------------------------------------------------


async def test_reprs_hide_cookies_tokens_and_credentials(make_keyloom):
    keyloom = make_keyloom()
    session, value = issue_session(keyloom, _result())
    csrf = new_csrf_token(keyloom)
    request = AuthRequest.from_raw(
        "GET",
        "/oauth/fake/callback",
        b"code=the-authorization-code&state=the-state-nonce",
        [
            ("Cookie", f"__Host-keyloom_session={value}; __Host-keyloom_csrf={csrf}"),
            ("Authorization", "Bearer the-bearer-token"),
            ("X-Keyloom-CSRF", csrf),
            ("Accept", "text/html"),
        ],
    )
    handler = AuthHandler(keyloom)
    response = await handler.handle(AuthRequest("GET", "/csrf", cookies=request.cookies))
    shown = "\n".join(
        [repr(request), str(request), repr(response), repr(handler), repr(session)]
    )
    for secret in (value, csrf, "the-bearer-token", "the-authorization-code", "the-state-nonce"):
        assert secret not in shown
    for part in value.split("."):
        assert part not in shown
    assert "text/html" in repr(request)  # the rest is still there to debug with
    assert "/oauth/fake/callback" in repr(request)


# -- 7. headers that cannot be sent are typed errors, and the tokens go back -------------------


async def test_an_unsendable_location_is_a_typed_error_and_revokes_the_tokens_both(
    serve, client, fake_provider
):
    """Defence in depth: even with a non-ASCII base URL that got past the configuration
    check, the callback answers a typed error (never a 500) and revokes the tokens."""
    async with serve() as srv:
        keyloom = srv.keyloom
        provider = keyloom.providers["fake"]
        keyloom.settings = attrs.evolve(
            keyloom.settings,
            base_url="https://例え.example",
            providers={"fake": attrs.evolve(provider, redirect_uri=keyloom.redirect_uri(provider))},
        )
        start = await call(client, "GET", srv.auth("/oauth/fake/start"))
        assert start.status == 302
        state = start.set_cookies()[0].split(";")[0].partition("=")[2]
        at_provider = await call(client, "GET", start.headers["Location"])
        callback = yarl.URL(at_provider.headers["Location"], encoded=True)
        reply = await call(
            client,
            "GET",
            callback,
            cookies={"__keyloom_oauth": state},
            headers={"Accept": "application/json"},
        )
        assert reply.status == 400, reply.body
        assert reply.json()["error"] == "invalid_redirect"
        assert not any(c.startswith("__keyloom_session=") and "Max-Age=0" not in c
                       for c in reply.set_cookies())
        assert len(fake_provider.revoked) == 1


async def test_an_unsendable_provider_url_is_a_typed_error_at_start(make_keyloom, fake_spec):
    spec = attrs.evolve(fake_spec, authorize_url="https://例え.example/authorize")
    provider = configure_provider(spec, client_id="client", client_secret="not-so-secret")
    handler = AuthHandler(make_keyloom(provider))
    reply = await handler.handle(
        AuthRequest("GET", "/oauth/fake/start", headers={"accept": "application/json"})
    )
    assert reply.status == 400
    assert _session(reply)["error"] == "invalid_redirect"
    assert all(value.isascii() for _, value in reply.header_list())


# -- 8. HEAD answers like GET, without a body ---------------------------------------------------


async def test_head_answers_like_get_without_a_body_both(serve, client):
    async with serve() as srv:
        for path in ("/session", "/csrf", "/providers", "/oauth/fake/start"):
            get = await call(client, "GET", srv.auth(path))
            head = await call(client, "HEAD", srv.auth(path))
            assert head.status == get.status, path
            assert head.body == b"", path
            assert head.headers.get("Content-Type") == get.headers.get("Content-Type"), path
            names = {c.split("=")[0] for c in get.set_cookies()}
            assert {c.split("=")[0] for c in head.set_cookies()} == names, path
        not_allowed = await call(client, "PUT", srv.auth("/session"))
        assert not_allowed.status == 405
        assert not_allowed.headers["Allow"] == "GET, HEAD"
        head_logout = await call(client, "HEAD", srv.auth("/logout"))
        assert head_logout.status == 405

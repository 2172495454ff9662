"""The Keyloom HTTP protocol, end to end, on both integrations (aiohttp and ASGI/uvicorn).

Every test taking ``serve`` runs twice: once against aiohttp and once against Starlette
wrapped in ``KeyloomASGI`` served by uvicorn, both on real 127.0.0.1 sockets.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import aiohttp
import pytest
import yarl

from keyloom_core import AccessDeniedError, LoginResult, Profile, TokenSet
from keyloom_core.web.sessions import Session, encode_session, new_csrf_token

pytestmark = pytest.mark.anyio

BASE = "/api/auth"
JSON = {"Accept": "application/json"}
HTML = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
OPEN_REDIRECTS = [
    "//evil.com",
    "https://evil.com",
    "/\\evil.com",
    "%2F%2Fevil.com",
    "%252F%252Fevil.com",
    "https:evil.com",
    "javascript:alert(1)",
    "/%5Cevil.com",
    "\t//evil.com",
]


class Reply:
    """What came back: status, headers, body, and the ``Set-Cookie`` headers by name."""

    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.text = body.decode("utf-8", "replace")
        self.set_cookies: dict[str, str] = {}
        for header in headers.getall("Set-Cookie", []):
            self.set_cookies[header.split("=", 1)[0]] = header

    def json(self) -> Any:
        assert self.headers["Content-Type"].startswith("application/json"), self.text
        return json.loads(self.body)

    def cookie_value(self, name: str) -> str:
        return self.set_cookies[name].split(";", 1)[0].split("=", 1)[1]

    def cookie_attrs(self, name: str) -> set[str]:
        return {part.strip() for part in self.set_cookies[name].split(";")[1:]}


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


@pytest.fixture
async def client() -> Any:
    """A client without a cookie jar: every cookie a test sends is explicit."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield session


async def sign_in(
    browser: aiohttp.ClientSession,
    srv: Any,
    *,
    provider: str = "fake",
    callback_url: str | None = "/dashboard",
    headers: Mapping[str, str] | None = None,
    consent: Mapping[str, str] | None = None,
) -> tuple[Reply, str]:
    """Start, pass the provider, and return the callback's reply and the callback URL."""
    params = {"callbackUrl": callback_url} if callback_url is not None else None
    start = await call(
        browser, "GET", srv.auth(f"/oauth/{provider}/start"), params=params, headers=headers
    )
    assert start.status == 302, start.text
    location = start.headers["Location"]
    if consent:
        location += "&" + urlencode(consent)
    at_provider = await call(browser, "GET", location)
    assert at_provider.status == 302, at_provider.text
    callback = at_provider.headers["Location"]
    assert callback.startswith(srv.auth(f"/oauth/{provider}/callback?"))
    return await call(browser, "GET", yarl.URL(callback, encoded=True), headers=headers), callback


def cookie_payload(value: str) -> dict[str, Any]:
    body = value.split(".", 1)[0]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


def login_result(**profile: Any) -> LoginResult:
    return LoginResult(
        provider_id="fake",
        profile=Profile(provider_id="fake", **{"id": "id-bob", "name": "Bob", **profile}),
        tokens=TokenSet(access_token="at-secret", refresh_token="rt-secret"),
        granted_scopes=frozenset({"profile"}),
        requested_scopes=frozenset({"profile"}),
        callback_url="/",
    )


# -- start ----------------------------------------------------------------------------------


async def test_start_redirects_to_provider_with_state_cookie(serve, client, fake_provider):
    async with serve() as srv:
        reply = await call(
            client, "GET", srv.auth("/oauth/fake/start"), params={"callbackUrl": "/dashboard"}
        )
    assert reply.status == 302
    location = urlsplit(reply.headers["Location"])
    assert (
        f"{location.scheme}://{location.netloc}{location.path}" == f"{fake_provider.url}/authorize"
    )
    query = dict(parse_qsl(location.query))
    assert query["client_id"] == fake_provider.client_id
    assert query["redirect_uri"] == f"{srv.url}{BASE}/oauth/fake/callback"
    assert query["code_challenge_method"] == "S256"
    assert query["state"]
    attrs = reply.cookie_attrs("__keyloom_oauth")
    assert {"HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=600"} <= attrs
    assert "Secure" not in attrs  # http://127.0.0.1 is development
    assert reply.headers["Cache-Control"] == "no-store"
    assert "client_secret" not in reply.headers["Location"]


@pytest.mark.parametrize("target", OPEN_REDIRECTS)
async def test_start_refuses_open_redirects(serve, client, target):
    async with serve() as srv:
        reply = await call(
            client, "GET", srv.auth("/oauth/fake/start"), params={"callbackUrl": target}
        )
        html_reply = await call(
            client,
            "GET",
            srv.auth("/oauth/fake/start"),
            params={"callbackUrl": target},
            headers=HTML,
        )
    assert reply.status == 400
    assert reply.json()["error"] == "invalid_callback_url"
    assert "Location" not in reply.headers
    assert not reply.set_cookies
    assert html_reply.status == 400
    assert html_reply.headers["Content-Type"].startswith("text/html")
    assert "invalid_callback_url" in html_reply.text


@pytest.mark.parametrize(
    "raw", ["callbackUrl=%2F%2Fevil.com", "callbackUrl=/%5Cevil.com", "callbackUrl=%2F%5Cevil.com"]
)
async def test_start_refuses_encoded_open_redirects(serve, client, raw):
    async with serve() as srv:
        url = yarl.URL(srv.auth("/oauth/fake/start") + "?" + raw, encoded=True)
        reply = await call(client, "GET", url)
    assert reply.status == 400
    assert reply.json()["error"] == "invalid_callback_url"


async def test_start_accepts_same_origin_absolute_callback(serve, browser):
    async with serve() as srv:
        reply, _ = await sign_in(browser, srv, callback_url=f"{srv.url}/after?x=1")
    assert reply.status == 302
    assert reply.headers["Location"] == f"{srv.url}/after?x=1"


# -- a whole login --------------------------------------------------------------------------


async def test_login_sets_session_and_redirects(serve, browser):
    logins: list[LoginResult] = []

    async def on_login(result: LoginResult) -> None:
        logins.append(result)

    async with serve(on_login=on_login) as srv:
        reply, _ = await sign_in(browser, srv, callback_url="/dashboard?tab=1#top")
        assert reply.status == 302
        assert reply.headers["Location"] == f"{srv.url}/dashboard?tab=1#top"
        session_attrs = reply.cookie_attrs("__keyloom_session")
        assert {"HttpOnly", "SameSite=Lax", "Path=/", f"Max-Age={30 * 24 * 3600}"} <= session_attrs
        assert "Max-Age=0" in reply.cookie_attrs("__keyloom_oauth")
        assert reply.cookie_value("__keyloom_oauth") == ""

        value = reply.cookie_value("__keyloom_session")
        assert len(logins) == 1
        tokens = logins[0].tokens
        raw = base64.urlsafe_b64decode(value.split(".")[0] + "==").decode()
        assert tokens.access_token not in raw
        assert tokens.refresh_token
        assert tokens.refresh_token not in raw
        assert "token" not in json.dumps(cookie_payload(value)).lower()

        data = (await call(browser, "GET", srv.auth("/session"), headers=JSON)).json()
        me = (await call(browser, "GET", f"{srv.url}/me")).json()
        home = await call(browser, "GET", f"{srv.url}/")

    assert set(data) == {"session", "user"}
    assert data["user"] == {
        "id": "id-alice",
        "name": "Alice",
        "email": "alice@example.com",
        "emailVerified": True,
        "image": "https://img.example.com/alice.png",
    }
    session = data["session"]
    assert {"id", "userId", "expiresAt", "createdAt", "updatedAt"} <= set(session)
    assert session["userId"] == "id-alice"
    assert session["provider"] == "fake"
    assert session["providerAccountId"] == "id-alice"
    assert session["scopes"] == ["profile"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", session["expiresAt"])
    assert session["createdAt"] < session["expiresAt"]
    assert me == {"user": data["user"], "provider": "fake"}
    assert home.status == 200
    assert home.text == "home"


async def test_callback_without_code_or_state_is_invalid_callback(serve, client):
    async with serve() as srv:
        url = srv.auth("/oauth/fake/callback")
        replies = [
            await call(client, "GET", url, params=params)
            for params in ({}, {"code": "abc"}, {"state": "xyz"}, {"code": "", "state": "x"})
        ]
        page = await call(client, "GET", url, headers=HTML)
    for reply in replies:
        assert reply.status == 400
        assert reply.json() == {"error": "invalid_callback"}
    assert page.status == 400
    assert page.headers["Content-Type"].startswith("text/html")
    assert "invalid_callback" in page.text


async def test_forged_or_missing_state_is_refused(serve, browser, client):
    async with serve() as srv:
        start = await call(browser, "GET", srv.auth("/oauth/fake/start"))
        state_cookie = start.cookie_value("__keyloom_oauth")
        state_param = dict(parse_qsl(urlsplit(start.headers["Location"]).query))["state"]
        url = srv.auth("/oauth/fake/callback")
        no_cookie = await call(client, "GET", url, params={"code": "c", "state": state_param})
        tampered = state_cookie[:-3] + ("AAA" if not state_cookie.endswith("AAA") else "BBB")
        forged = await call(
            client,
            "GET",
            url,
            params={"code": "c", "state": state_param},
            cookies={"__keyloom_oauth": tampered},
        )
        mismatch = await call(
            client,
            "GET",
            url,
            params={"code": "c", "state": "not-the-state"},
            cookies={"__keyloom_oauth": state_cookie},
        )
        page = await call(
            client, "GET", url, params={"code": "c", "state": state_param}, headers=HTML
        )
    for reply in (no_cookie, forged, mismatch):
        assert reply.status == 400
        body = reply.json()
        assert body["error"] == "invalid_state"
        assert body["hint"] == "Start the sign-in again."
        assert "__keyloom_session" not in reply.set_cookies
    assert page.status == 400
    assert "Start the sign-in again." in page.text
    assert "Traceback" not in page.text


async def test_replayed_callback_is_refused(serve, browser, client, fake_provider):
    async with serve() as srv:
        start = await call(browser, "GET", srv.auth("/oauth/fake/start"))
        state_cookie = start.cookie_value("__keyloom_oauth")
        at_provider = await call(browser, "GET", start.headers["Location"])
        callback = yarl.URL(at_provider.headers["Location"], encoded=True)
        first = await call(client, "GET", callback, cookies={"__keyloom_oauth": state_cookie})
        second = await call(client, "GET", callback, cookies={"__keyloom_oauth": state_cookie})
    assert first.status == 302
    assert "__keyloom_session" in first.set_cookies
    assert second.status == 400
    assert second.json()["error"] == "invalid_state"
    assert "__keyloom_session" not in second.set_cookies
    assert len(fake_provider.calls("/token")) == 1  # the replay never reached the provider


async def test_state_of_another_provider_is_refused(
    serve, browser, client, make_provider, fake_spec
):
    import attrs

    other = make_provider(attrs.evolve(fake_spec, id="other", name="Other"))
    async with serve(make_provider(), other) as srv:
        start = await call(browser, "GET", srv.auth("/oauth/fake/start"))
        state = dict(parse_qsl(urlsplit(start.headers["Location"]).query))["state"]
        reply = await call(
            client,
            "GET",
            srv.auth("/oauth/other/callback"),
            params={"code": "c", "state": state},
            cookies={"__keyloom_oauth": start.cookie_value("__keyloom_oauth")},
        )
    assert reply.status == 400
    assert reply.json()["error"] == "invalid_state"


async def test_access_denied_shows_friendly_page(serve, browser):
    async with serve() as srv:
        page, callback = await sign_in(browser, srv, headers=HTML, consent={"_deny": "1"})
        # The same denial, asked for as JSON, with the state cookie of a new start.
        start = await call(browser, "GET", srv.auth("/oauth/fake/start"))
        at_provider = await call(browser, "GET", start.headers["Location"] + "&_deny=1")
        as_json = await call(
            browser, "GET", yarl.URL(at_provider.headers["Location"], encoded=True), headers=JSON
        )
    assert "error=access_denied" in callback
    assert page.status == 403
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "You cancelled the sign-in" in page.text
    assert "Nothing was shared with Fake" in page.text
    assert f'href="{srv.url}/"' in page.text
    assert f'href="{srv.url}{BASE}/oauth/fake/start"' in page.text
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert "Max-Age=0" in page.cookie_attrs("__keyloom_oauth")
    assert "__keyloom_session" not in page.set_cookies
    assert as_json.status == 403
    body = as_json.json()
    assert body["error"] == "access_denied"
    assert set(body) == {"error", "message", "hint"}


async def test_provider_error_is_a_typed_error(serve, browser, fake_provider):
    async with serve() as srv:
        start = await call(browser, "GET", srv.auth("/oauth/fake/start"))
        at_provider = await call(browser, "GET", start.headers["Location"])
        fake_provider.clients[fake_provider.client_id] = "rotated-secret"  # exchange fails
        reply = await call(
            browser, "GET", yarl.URL(at_provider.headers["Location"], encoded=True), headers=JSON
        )
    assert reply.status == 502
    body = reply.json()
    assert body["error"] == "token_exchange_failed"
    assert fake_provider.client_secret not in reply.text


async def test_on_login_can_refuse_the_login(serve, browser):
    async def on_login(result: LoginResult) -> None:
        raise AccessDeniedError("this account is not allowed here", provider_id="fake")

    async with serve(on_login=on_login) as srv:
        reply, _ = await sign_in(browser, srv, headers=JSON)
    assert reply.status == 403
    assert reply.json()["message"] == "this account is not allowed here"
    assert "__keyloom_session" not in reply.set_cookies


async def test_unexpected_failure_is_500_without_traceback(serve, browser, caplog):
    async def on_login(result: LoginResult) -> None:
        raise RuntimeError("database is down: password=hunter2")

    async with serve(on_login=on_login) as srv:
        reply, _ = await sign_in(browser, srv, headers=JSON)
        page, _ = await sign_in(browser, srv, headers=HTML)
    assert reply.status == 500
    assert reply.json() == {
        "error": "internal_error",
        "message": "an unexpected error occurred",
        "hint": None,
    }
    assert page.status == 500
    assert "hunter2" not in page.text
    assert "Traceback" not in page.text
    assert "Something went wrong" in page.text


# -- session --------------------------------------------------------------------------------


async def test_session_without_cookie_is_null(serve, client):
    async with serve() as srv:
        reply = await call(client, "GET", srv.auth("/session"), headers=JSON)
    assert reply.status == 200
    assert reply.json() == {"session": None, "user": None}
    assert not reply.set_cookies


async def test_session_tampered_or_expired_is_null(serve, client):
    async with serve() as srv:
        keyloom = srv.keyloom
        now = time.time()
        session = Session.from_login(login_result(), ttl=3600, now=now)
        good = encode_session(keyloom, session, now=now)
        expired_session = Session.from_login(login_result(), ttl=60, now=now - 120)
        expired = encode_session(keyloom, expired_session, now=now - 120)
        body, mac = good.split(".")
        payload = cookie_payload(good)
        payload["u"]["id"] = "id-mallory"
        forged_body = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
        other_purpose = keyloom.signer("state").sign(session.to_payload(), ttl=3600)
        csrf_as_session = new_csrf_token(keyloom)
        cases = {
            "tampered body": f"{forged_body}.{mac}",
            "tampered mac": f"{body}.{mac[:-2]}{'AA' if not mac.endswith('AA') else 'BB'}",
            "expired": expired,
            "other purpose": other_purpose,
            "csrf token": csrf_as_session,
            "garbage": "not-a-session",
            "empty sig": f"{body}.",
        }
        replies = {
            name: await call(
                client, "GET", srv.auth("/session"), cookies={"__keyloom_session": value}
            )
            for name, value in cases.items()
        }
        ok = await call(client, "GET", srv.auth("/session"), cookies={"__keyloom_session": good})
    for name, reply in replies.items():
        assert reply.status == 200, name
        assert reply.json() == {"session": None, "user": None}, name
        assert "Max-Age=0" in reply.cookie_attrs("__keyloom_session"), name
    assert ok.json()["user"]["id"] == "id-bob"
    assert ok.json()["session"]["id"] == session.id


async def test_session_cookie_never_holds_tokens(serve):
    async with serve() as srv:
        result = login_result(extra={"plan": "pro"})
        session = Session.from_login(result, ttl=60)
        value = encode_session(srv.keyloom, session)
    payload = json.dumps(cookie_payload(value))
    assert "at-secret" not in payload
    assert "rt-secret" not in payload
    assert "secret" not in repr(session)


# -- csrf and logout ------------------------------------------------------------------------


async def test_csrf_route_sets_matching_cookie(serve, client):
    async with serve() as srv:
        reply = await call(client, "GET", srv.auth("/csrf"), headers=JSON)
    token = reply.json()["csrfToken"]
    assert reply.status == 200
    assert reply.cookie_value("__keyloom_csrf") == token
    assert {"HttpOnly", "SameSite=Lax", "Path=/"} <= reply.cookie_attrs("__keyloom_csrf")


async def test_logout_requires_csrf(serve, browser, client):
    async with serve() as srv:
        signed_in, _ = await sign_in(browser, srv)
        session_cookie = signed_in.cookie_value("__keyloom_session")
        mine = {"__keyloom_session": session_cookie}
        token = (await call(client, "GET", srv.auth("/csrf"), cookies=mine)).json()["csrfToken"]
        other = (await call(client, "GET", srv.auth("/csrf"), cookies=mine)).json()["csrfToken"]
        unbound = (await call(client, "GET", srv.auth("/csrf"))).json()["csrfToken"]
        url = srv.auth("/logout")
        attempts = {
            "token minted without a session": await call(
                client,
                "POST",
                url,
                headers={"x-keyloom-csrf": unbound},
                cookies={"__keyloom_session": session_cookie, "__keyloom_csrf": unbound},
            ),
            "no header": await call(
                client,
                "POST",
                url,
                cookies={"__keyloom_session": session_cookie, "__keyloom_csrf": token},
            ),
            "wrong header": await call(
                client,
                "POST",
                url,
                headers={"x-keyloom-csrf": other},
                cookies={"__keyloom_session": session_cookie, "__keyloom_csrf": token},
            ),
            "no cookie": await call(
                client,
                "POST",
                url,
                headers={"x-keyloom-csrf": token},
                cookies={"__keyloom_session": session_cookie},
            ),
            "unsigned pair": await call(
                client,
                "POST",
                url,
                headers={"x-keyloom-csrf": "attacker"},
                cookies={"__keyloom_session": session_cookie, "__keyloom_csrf": "attacker"},
            ),
        }
        still_in = await call(
            client, "GET", srv.auth("/session"), cookies={"__keyloom_session": session_cookie}
        )
        ok = await call(
            client,
            "POST",
            url,
            headers={"x-keyloom-csrf": token},
            cookies={"__keyloom_session": session_cookie, "__keyloom_csrf": token},
        )
    for name, reply in attempts.items():
        assert reply.status == 403, name
        assert reply.json() == {"error": "csrf"}, name
        assert "__keyloom_session" not in reply.set_cookies, name
    assert still_in.json()["user"] is not None
    assert ok.status == 200
    assert ok.json() == {"ok": True}
    assert "Max-Age=0" in ok.cookie_attrs("__keyloom_session")
    assert ok.cookie_value("__keyloom_session") == ""


async def test_logout_revokes_tokens_from_on_logout(serve, browser, fake_provider):
    stored: dict[str, TokenSet] = {}
    seen: list[Session] = []

    async def on_login(result: LoginResult) -> None:
        stored[result.profile.id] = result.tokens

    async def on_logout(session: Session) -> TokenSet | None:
        seen.append(session)
        return stored.pop(session.user_id, None)

    async with serve(on_login=on_login, on_logout=on_logout) as srv:
        await sign_in(browser, srv)
        tokens = stored["id-alice"]
        token = (await call(browser, "GET", srv.auth("/csrf"))).json()["csrfToken"]
        reply = await call(browser, "POST", srv.auth("/logout"), headers={"x-keyloom-csrf": token})
        after = (await call(browser, "GET", srv.auth("/session"))).json()
    assert reply.json() == {"ok": True}
    assert [s.user_id for s in seen] == ["id-alice"]
    assert fake_provider.revoked == [tokens.access_token]
    assert after == {"session": None, "user": None}


async def test_logout_succeeds_when_on_logout_fails(serve, browser):
    async def on_logout(session: Session) -> TokenSet | None:
        raise RuntimeError("store unavailable")

    async with serve(on_logout=on_logout) as srv:
        await sign_in(browser, srv)
        token = (await call(browser, "GET", srv.auth("/csrf"))).json()["csrfToken"]
        reply = await call(browser, "POST", srv.auth("/logout"), headers={"x-keyloom-csrf": token})
        after = (await call(browser, "GET", srv.auth("/session"))).json()
    assert reply.status == 200
    assert reply.json() == {"ok": True}
    assert after["session"] is None


async def test_logout_without_session_is_ok(serve, client):
    async with serve() as srv:
        token = (await call(client, "GET", srv.auth("/csrf"))).json()["csrfToken"]
        reply = await call(
            client,
            "POST",
            srv.auth("/logout"),
            headers={"x-keyloom-csrf": token},
            cookies={"__keyloom_csrf": token},
        )
    assert reply.status == 200
    assert reply.json() == {"ok": True}


# -- routing, shapes and limits -------------------------------------------------------------


async def test_not_found_and_method_not_allowed_shapes(serve, client):
    async with serve() as srv:
        token = (await call(client, "GET", srv.auth("/csrf"))).json()["csrfToken"]
        csrf = {"headers": {"x-keyloom-csrf": token}, "cookies": {"__keyloom_csrf": token}}
        not_found = [
            await call(client, "GET", srv.auth(path))
            for path in (
                "/nope",
                "/",
                "/session/",
                "/oauth/fake",
                "/oauth/fake/other",
                "/oauth//start",
                "/oauth/fake/start/x",
            )
        ]
        get_logout = await call(client, "GET", srv.auth("/logout"))
        put_session = await call(client, "PUT", srv.auth("/session"))
        delete_csrf = await call(client, "DELETE", srv.auth("/csrf"))
        post_session = await call(client, "POST", srv.auth("/session"), **csrf)
        post_start = await call(client, "POST", srv.auth("/oauth/fake/start"), **csrf)
        post_no_csrf = await call(client, "POST", srv.auth("/session"))
        post_unknown = await call(client, "POST", srv.auth("/nope"))
        unknown_provider = await call(client, "GET", srv.auth("/oauth/nobody/start"))
    for reply in not_found:
        assert reply.status == 404
        assert reply.json() == {"error": "not_found"}
    for reply in (get_logout, put_session, delete_csrf, post_session, post_start):
        assert reply.status == 405
        assert reply.json() == {"error": "method_not_allowed"}
    assert get_logout.headers["Allow"] == "POST"
    assert put_session.headers["Allow"] == "GET, HEAD"
    assert post_no_csrf.status == 403
    assert post_no_csrf.json() == {"error": "csrf"}
    assert post_unknown.status == 404
    assert unknown_provider.status == 404
    assert unknown_provider.json()["error"] == "unknown_provider"


async def test_repeated_query_keys_are_refused(serve, client):
    async with serve() as srv:
        start = await call(
            client,
            "GET",
            srv.auth("/oauth/fake/start"),
            params=[("callbackUrl", "/a"), ("callbackUrl", "//evil.com")],
        )
        callback = await call(
            client,
            "GET",
            srv.auth("/oauth/fake/callback"),
            params=[("code", "a"), ("code", "b"), ("state", "s")],
        )
        state_twice = await call(
            client,
            "GET",
            srv.auth("/oauth/fake/callback"),
            params=[("code", "a"), ("state", "s1"), ("state", "s2")],
        )
    assert start.status == 400
    assert start.json()["error"] == "invalid_request"
    assert "Location" not in start.headers
    for reply in (callback, state_twice):
        assert reply.status == 400
        assert reply.json()["error"] == "invalid_callback"
    assert "'code' is given more than once" in callback.json()["message"]


async def test_query_size_limits(serve, client):
    async with serve() as srv:
        many = await call(
            client,
            "GET",
            srv.auth("/oauth/fake/start"),
            params=[(f"k{i}", "v") for i in range(40)],
        )
        long_query = await call(
            client,
            "GET",
            srv.auth("/oauth/fake/start"),
            params={"a": "x" * 3500, "b": "y" * 3500},
        )
        long_value = await call(
            client,
            "GET",
            srv.auth("/oauth/fake/callback"),
            params={"code": "c" * 5000, "state": "s"},
        )
        long_callback_url = await call(
            client, "GET", srv.auth("/oauth/fake/start"), params={"callbackUrl": "/" + "a" * 3000}
        )
    for reply in (many, long_query):
        assert reply.status == 400
        assert reply.json()["error"] == "invalid_request"
    assert long_value.status == 400
    assert long_value.json()["error"] == "invalid_callback"
    assert long_callback_url.status == 400
    assert long_callback_url.json()["error"] == "invalid_callback_url"


async def test_bad_input_never_500(serve, client):
    async with serve() as srv:
        raw_urls = [
            srv.auth("/oauth/%3Cscript%3E/start"),
            srv.auth("/oauth/" + "x" * 300 + "/callback?code=a&state=b"),
            srv.auth("/oauth/fake/callback?code=%FF%FE&state=%00"),
            srv.auth("/oauth/fake/callback?error=%FF&state=x"),
            srv.auth("/oauth/fake/start?callbackUrl=%FF"),
            srv.auth("/oauth/fake/start?=&&&=x"),
            srv.auth("/session?x=%"),
        ]
        replies = [await call(client, "GET", yarl.URL(u, encoded=True)) for u in raw_urls]
        junk_cookies = await call(
            client,
            "GET",
            srv.auth("/session"),
            headers={"Cookie": '__keyloom_session="x.y"; =; ;;junk; __keyloom_csrf'},
        )
        page = await call(
            client,
            "GET",
            yarl.URL(srv.auth("/oauth/%3Cscript%3E/start"), encoded=True),
            headers=HTML,
        )
    for reply in [*replies, junk_cookies, page]:
        assert reply.status < 500, (reply.status, reply.text)
        assert "Traceback" not in reply.text
    assert "<script>" not in page.text
    assert page.status == 404  # not a provider id at all: nothing of it is reflected


async def test_providers_listing(serve, client):
    async with serve() as srv:
        reply = await call(client, "GET", srv.auth("/providers"))
    assert reply.status == 200
    assert reply.json() == [
        {
            "id": "fake",
            "name": "Fake",
            "signinUrl": f"{srv.url}{BASE}/oauth/fake/start",
            "callbackUrl": f"{srv.url}{BASE}/oauth/fake/callback",
        }
    ]


async def test_custom_base_path(serve, browser):
    async with serve(base_path="/auth") as srv:
        assert srv.auth("/session") == f"{srv.url}/auth/session"
        reply, _ = await sign_in(browser, srv)
        data = (await call(browser, "GET", srv.auth("/session"))).json()
        old = await call(browser, "GET", f"{srv.url}/api/auth/session")
    assert reply.status == 302
    assert data["user"]["id"] == "id-alice"
    assert old.status == 404  # the app's own 404: not an auth route any more


# -- the JavaScript client ------------------------------------------------------------------


async def test_js_client_protocol(serve, browser):
    """Plays ``@keyloom/react``'s exact requests: signIn, useSession, useLogout/signOut."""
    async with serve() as srv:
        # getSession() before signing in: fetch(`${basePath}/session`, {accept: json})
        before = await call(browser, "GET", srv.auth("/session"), headers=JSON)
        assert before.status == 200
        assert before.json() == {"session": None, "user": None}

        # signIn({provider, callbackUrl}): window.location.href = .../oauth/fake/start?callbackUrl=
        start_url = yarl.URL(srv.url).with_path(f"{BASE}/oauth/fake/start")
        start_url = start_url.with_query({"callbackUrl": "/dashboard"})
        start = await call(browser, "GET", start_url, headers=HTML)
        assert start.status == 302
        assert "__keyloom_oauth" in start.set_cookies
        # The browser follows the provider's redirect back to the callback, as a navigation.
        at_provider = await call(browser, "GET", start.headers["Location"], headers=HTML)
        callback = await call(
            browser, "GET", yarl.URL(at_provider.headers["Location"], encoded=True), headers=HTML
        )
        assert callback.status == 302
        assert callback.headers["Location"] == f"{srv.url}/dashboard"

        # useSession(): the client reads only `session` and `user`.
        signed_in = await call(browser, "GET", srv.auth("/session"), headers=JSON)
        assert set(signed_in.json()) == {"session", "user"}
        assert signed_in.json()["user"]["name"] == "Alice"

        # authFetch(`${basePath}/logout`, {method: POST}) with no token yet -> ensureCsrf():
        # fetch(`${basePath}/csrf`, {accept: json}) then POST with x-keyloom-csrf.
        csrf = await call(browser, "GET", srv.auth("/csrf"), headers=JSON)
        token = csrf.json()["csrfToken"]
        # A stale token (from before a cookie change) gets 403; the client refetches and retries.
        stale = await call(
            browser,
            "POST",
            srv.auth("/logout"),
            headers={**JSON, "x-keyloom-csrf": token + "x"},
        )
        assert stale.status == 403
        assert stale.json() == {"error": "csrf"}
        token = (await call(browser, "GET", srv.auth("/csrf"), headers=JSON)).json()["csrfToken"]
        out = await call(
            browser, "POST", srv.auth("/logout"), headers={**JSON, "x-keyloom-csrf": token}
        )
        assert out.status == 200
        assert out.json() == {"ok": True}

        after = await call(browser, "GET", srv.auth("/session"), headers=JSON)
        assert after.json() == {"session": None, "user": None}


# -- TikTok, through its emulator -----------------------------------------------------------


@pytest.fixture
async def tiktok_emulator() -> Any:
    emulator_module = pytest.importorskip("keyloom_tiktok.emulator")
    async with emulator_module.TikTokEmulator(consent="approve") as emulator:
        yield emulator


@pytest.fixture
def tiktok_provider(tiktok_emulator: Any) -> Any:
    from keyloom_tiktok import tiktok
    from keyloom_tiktok.emulator import DEFAULT_CLIENT_KEY, DEFAULT_CLIENT_SECRET

    return tiktok(
        client_id=DEFAULT_CLIENT_KEY,
        client_secret=DEFAULT_CLIENT_SECRET,
        endpoint_origin=tiktok_emulator.url,
    )


async def test_tiktok_login_approve(serve, browser, tiktok_emulator, tiktok_provider):
    stored: dict[str, TokenSet] = {}
    issued: list[TokenSet] = []

    async def on_login(result: LoginResult) -> None:
        stored[result.profile.id] = result.tokens
        issued.append(result.tokens)

    async def on_logout(session: Session) -> TokenSet | None:
        return stored.pop(session.user_id, None)

    async with serve(tiktok_provider, on_login=on_login, on_logout=on_logout) as srv:
        reply, callback = await sign_in(browser, srv, provider="tiktok", callback_url="/feed")
        assert "scopes=user.info.basic" in callback
        assert reply.status == 302, reply.text
        assert reply.headers["Location"] == f"{srv.url}/feed"
        value = reply.cookie_value("__keyloom_session")
        data = (await call(browser, "GET", srv.auth("/session"), headers=JSON)).json()
        me = (await call(browser, "GET", f"{srv.url}/me")).json()
        token = (await call(browser, "GET", srv.auth("/csrf"))).json()["csrfToken"]
        out = await call(browser, "POST", srv.auth("/logout"), headers={"x-keyloom-csrf": token})
    user = data["user"]
    assert user["name"] == "Emulated Creator"
    assert user["email"] is None
    assert user["emailVerified"] is False
    assert user["image"].startswith(tiktok_emulator.url)
    assert data["session"]["provider"] == "tiktok"
    assert data["session"]["providerAccountId"] == user["id"]
    assert data["session"]["scopes"] == ["user.info.basic"]
    assert me["provider"] == "tiktok"
    assert out.json() == {"ok": True}
    assert not stored  # on_logout handed the tokens over for revocation
    from keyloom_core.testing.emulator import TokenFailure

    (tokens,) = issued
    assert tiktok_emulator.book.lookup_access(tokens.access_token) is TokenFailure.REVOKED
    payload = base64.urlsafe_b64decode(value.split(".")[0] + "==").decode()
    assert "act." not in payload
    assert "rft." not in payload


async def test_tiktok_login_deny(serve, browser, tiktok_emulator, tiktok_provider):
    tiktok_emulator.consent = "deny"
    async with serve(tiktok_provider) as srv:
        page, _ = await sign_in(browser, srv, provider="tiktok", headers=HTML)
        data = (await call(browser, "GET", srv.auth("/session"))).json()
    assert page.status == 403
    assert "You cancelled the sign-in" in page.text
    assert "Nothing was shared with TikTok" in page.text
    assert data == {"session": None, "user": None}


async def test_tiktok_login_consent_form(serve, browser, tiktok_emulator, tiktok_provider):
    from keyloom_tiktok.emulator import CONSENT_PATH

    tiktok_emulator.consent = "form"
    async with serve(tiktok_provider) as srv:
        start = await call(
            browser, "GET", srv.auth("/oauth/tiktok/start"), params={"callbackUrl": "/x"}
        )
        form_page = await call(browser, "GET", start.headers["Location"], headers=HTML)
        assert form_page.status == 200
        hidden = dict(re.findall(r'type="hidden" name="([^"]+)" value="([^"]*)"', form_page.text))
        form = {**hidden, "decision": "approve", "user": "second-viewer"}
        async with browser.post(
            tiktok_emulator.url + CONSENT_PATH, data=form, allow_redirects=False
        ) as resp:
            assert resp.status == 302, await resp.text()
            callback = resp.headers["Location"]
        reply = await call(browser, "GET", yarl.URL(callback, encoded=True), headers=HTML)
        data = (await call(browser, "GET", srv.auth("/session"))).json()
    assert reply.status == 302
    assert reply.headers["Location"] == f"{srv.url}/x"
    assert data["user"]["name"] == "Second Viewer"

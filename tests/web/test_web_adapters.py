"""The framework-agnostic handler and the thin adapters, driven directly (no sockets)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyloom_core.web import AuthHandler, AuthRequest, AuthResponse, parse_cookies, render_page
from keyloom_core.web._wire import cookie_value
from keyloom_core.web.sessions import SESSION_COOKIE, issue_session

pytestmark = pytest.mark.anyio


def request(method: str, path: str, **kw: Any) -> AuthRequest:
    return AuthRequest(method=method, path=path, **kw)


@pytest.mark.parametrize(
    ("base_url", "secure"),
    [
        ("https://app.example.com", True),
        ("https://localhost:8443", True),
        ("http://localhost:8000", False),
        ("http://127.0.0.1:8000", False),
        ("http://[::1]:8000", False),
    ],
)
async def test_secure_flag_only_relaxed_for_loopback_http(make_keyloom, base_url, secure):
    handler = AuthHandler(make_keyloom(base_url=base_url))
    response = await handler.handle(request("GET", "/csrf"))
    (cookie,) = response.cookies
    assert ("; Secure" in cookie) is secure
    assert cookie.startswith("__Host-keyloom_csrf=" if secure else "__keyloom_csrf=")
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert "Path=/" in cookie


async def test_start_cookie_and_location(make_keyloom):
    keyloom = make_keyloom()
    handler = AuthHandler(keyloom)
    response = await handler.handle(
        request("GET", "/oauth/fake/start", query=[("callbackUrl", "/d")])
    )
    assert response.status == 302
    headers = dict(response.headers)
    assert headers["Location"].startswith(keyloom.providers["fake"].spec.authorize_url)
    (cookie,) = response.cookies
    assert cookie.startswith("__Host-keyloom_oauth=")
    assert cookie.endswith("; Max-Age=600; HttpOnly; SameSite=Lax; Secure")
    assert response.body == b""
    assert ("Set-Cookie", cookie) in response.header_list()


async def test_callback_failure_is_logged_without_secrets(make_keyloom, caplog):
    handler = AuthHandler(make_keyloom())
    response = await handler.handle(
        request(
            "GET",
            "/oauth/fake/callback",
            query=[("code", "sekrit-code"), ("state", "sekrit-state")],
            cookies={"__keyloom_oauth": "forged.value"},
        )
    )
    assert response.status == 400
    assert json.loads(response.body)["error"] == "invalid_state"
    assert "sekrit" not in caplog.text
    assert "forged.value" not in caplog.text


async def test_relative_path(make_keyloom):
    handler = AuthHandler(make_keyloom())
    assert handler.relative_path("/api/auth/session") == "/session"
    assert handler.relative_path("/api/auth/") == "/"
    assert handler.relative_path("/api/auth") is None
    assert handler.relative_path("/api/authx/session") is None
    assert handler.relative_path("/other") is None


async def test_request_from_raw():
    raw = AuthRequest.from_raw(
        "post",
        "/logout",
        b"a=1&b=%2F%2F&a=2&c",
        [
            ("Cookie", "x=1; y=2"),
            ("cookie", "x=3; z=4"),
            ("X-Keyloom-CSRF", "t"),
            ("Accept", "text/html"),
            ("accept", "application/json"),
        ],
    )
    assert raw.method == "POST"
    assert raw.query == (("a", "1"), ("b", "//"), ("a", "2"), ("c", ""))
    assert raw.cookies == {"x": "1", "y": "2", "z": "4"}
    assert raw.headers["x-keyloom-csrf"] == "t"
    assert raw.headers["accept"] == "text/html, application/json"


def test_parse_cookies_tolerates_junk():
    assert parse_cookies(['a=1; bad; =x; b="quoted"; c=; a=2;;  d = 5 ']) == {
        "a": "1",
        "b": "quoted",
        "c": "",
        "d": "5",
    }


_COOKIE_PARTS = st.sampled_from(
    [
        *("a=1", " a = 2 ", "a", "=x", '"', "b=a", ";", " "),
        *(f"{SESSION_COOKIE}=s1", f' {SESSION_COOKIE} ="s2"', f"x{SESSION_COOKIE}=3"),
        *(SESSION_COOKIE, f"{SESSION_COOKIE}="),
    ]
)


@given(
    st.lists(st.lists(_COOKIE_PARTS, max_size=6).map(";".join), max_size=3),
    st.sampled_from(["a", "b", SESSION_COOKIE]),
)
def test_one_cookie_reads_as_in_all_cookies(headers, name):
    # the session check reads its cookie alone: it must agree with the full parse,
    # duplicates of an auth cookie (read as none) included
    assert cookie_value(headers, name) == parse_cookies(headers).get(name)


def test_render_page_escapes_everything():
    page = render_page(
        "<x1>",
        "<x2>",
        code="<x3>",
        hint="<x4>",
        links=[('/back?"x"', "<x5>"), ("javascript:alert(1)", "bad")],
    )
    for raw in ("<x1>", "<x2>", "<x3>", "<x4>", "<x5>", '"x"'):
        assert raw not in page
    assert "&lt;x1&gt;" in page
    assert "javascript:" not in page  # only http(s) and path links are rendered


# -- ASGI, called directly ------------------------------------------------------------------


class ASGICall:
    """Collects what an ASGI app sends."""

    def __init__(self, incoming: list[dict[str, Any]] | None = None) -> None:
        self.incoming = list(incoming or [{"type": "http.request", "body": b""}])
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        return self.incoming.pop(0)

    async def send(self, message: Any) -> None:
        self.sent.append(dict(message))

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    @property
    def body(self) -> Any:
        return json.loads(b"".join(m.get("body", b"") for m in self.sent[1:]))


def http_scope(path: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "GET",
        "path": path,
        "query_string": b"",
        "headers": [],
        **extra,
    }


async def test_asgi_standalone_owns_lifespan(make_keyloom):
    from keyloom_core.web.asgi import KeyloomASGI

    keyloom = make_keyloom()
    app = KeyloomASGI(keyloom)
    lifespan = ASGICall([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    calls: list[ASGICall] = []

    async def receive() -> dict[str, Any]:
        message = await lifespan.receive()
        if message["type"] == "lifespan.shutdown":
            calls.append(await serve_one(app, http_scope("/api/auth/session")))
            calls.append(await serve_one(app, http_scope("/elsewhere")))
            assert keyloom.http is not None  # open while serving
        return message

    await app({"type": "lifespan"}, receive, lifespan.send)
    assert [m["type"] for m in lifespan.sent] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]
    with pytest.raises(RuntimeError):
        _ = keyloom.http  # closed again
    assert calls[0].status == 200
    assert calls[0].body == {"session": None, "user": None}
    assert calls[1].status == 404
    assert calls[1].body == {"error": "not_found"}


async def serve_one(app: Any, scope: dict[str, Any]) -> ASGICall:
    call = ASGICall()
    await app(scope, call.receive, call.send)
    return call


async def test_asgi_wrapped_app_gets_other_paths_and_handler(make_keyloom):
    from keyloom_core.web.asgi import KeyloomASGI, current_session, current_user

    keyloom = make_keyloom()
    seen: list[Any] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append((scope["path"], await current_user(scope), await current_session(scope)))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    app = KeyloomASGI(keyloom, inner)
    _, value = issue_session(keyloom, _result())
    cookie = [(b"cookie", f"{app.handler.session_cookie}={value}".encode())]
    await serve_one(app, http_scope("/dashboard", headers=cookie))
    await serve_one(app, http_scope("/dashboard"))
    auth = await serve_one(app, http_scope("/api/auth/session", headers=cookie))
    assert seen[0][0] == "/dashboard"
    assert seen[0][1]["id"] == "id-bob"
    assert seen[0][2].provider_id == "fake"
    assert seen[1][1:] == (None, None)
    assert auth.body["user"]["id"] == "id-bob"
    assert len(seen) == 2  # auth routes never reach the wrapped app
    await app._close_keyloom()  # opened lazily: no lifespan in this test


async def test_asgi_mounted_with_root_path(make_keyloom):
    from keyloom_core.web.asgi import KeyloomASGI

    app = KeyloomASGI(make_keyloom())
    call = await serve_one(app, http_scope("/session", root_path="/api/auth"))
    assert call.status == 200
    behind_proxy = await serve_one(app, http_scope("/prefix/api/auth/csrf", root_path="/prefix"))
    assert behind_proxy.status == 200
    assert "csrfToken" in behind_proxy.body
    assert call.body == {"session": None, "user": None}
    headers = dict(call.sent[0]["headers"])
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"content-length"] == str(len(call.sent[1]["body"])).encode()
    await app._close_keyloom()


async def test_asgi_wraps_the_apps_lifespan(make_keyloom):
    from keyloom_core.web.asgi import KeyloomASGI

    keyloom = make_keyloom()
    order: list[str] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                order.append("app startup")
                await send({"type": "lifespan.startup.complete"})
                order.append(f"keyloom open: {keyloom._http is not None}")
            else:
                order.append("app shutdown")
                await send({"type": "lifespan.shutdown.complete"})
                order.append(f"keyloom open: {keyloom._http is not None}")
                return

    app = KeyloomASGI(keyloom, inner)
    lifespan = ASGICall([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    await app({"type": "lifespan"}, lifespan.receive, lifespan.send)
    assert order == ["app startup", "keyloom open: True", "app shutdown", "keyloom open: False"]
    assert [m["type"] for m in lifespan.sent] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]


async def test_asgi_websocket_without_app_is_closed(make_keyloom):
    from keyloom_core.web.asgi import KeyloomASGI

    call = ASGICall([{"type": "websocket.connect"}])
    await KeyloomASGI(make_keyloom())({"type": "websocket", "path": "/ws"}, call.receive, call.send)
    assert call.sent == [{"type": "websocket.close", "code": 1000}]


async def test_helpers_need_the_integration():
    from aiohttp import web
    from aiohttp.test_utils import make_mocked_request

    from keyloom_core.web.aiohttp import current_user
    from keyloom_core.web.asgi import current_session

    with pytest.raises(RuntimeError, match="KeyloomASGI"):
        await current_session(http_scope("/"))
    with pytest.raises(RuntimeError, match="setup_keyloom"):
        await current_user(make_mocked_request("GET", "/", app=web.Application()))


async def test_response_header_list_order():
    response = AuthResponse(
        200, b"{}", "application/json", headers=(("X-A", "1"),), cookies=("a=1", "b=2")
    )
    assert response.header_list() == [
        ("Content-Type", "application/json"),
        ("X-A", "1"),
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"),
    ]


def _result() -> Any:
    from keyloom_core import LoginResult, Profile, TokenSet

    return LoginResult(
        provider_id="fake",
        profile=Profile(provider_id="fake", id="id-bob", name="Bob"),
        tokens=TokenSet(access_token="at"),
        granted_scopes=frozenset({"profile"}),
        requested_scopes=frozenset({"profile"}),
        callback_url="/",
    )

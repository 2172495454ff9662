"""Named hostile provider answers, each mapped to one typed answer of the web layer.

A small aiohttp server on 127.0.0.1 (``stresskit.HostileProvider``) stands in for TikTok's
token and user-info endpoints. Whatever it answers, the callback ends in a redirect with a
session, or in a 4xx/502/503/504 JSON error; never a 500. Everything read from it is size
limited (1 MiB bodies, aiohttp's 8 KiB header lines), inflated bodies included.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from urllib.parse import parse_qsl, urlsplit

import pytest
import stresskit
from keyloom_tiktok.emulator import REVOKE_PATH, TOKEN_PATH, USER_INFO_PATH

from keyloom_core.web import SESSION_COOKIE, STATE_COOKIE, AuthRequest

pytestmark = pytest.mark.anyio

GOOD_TOKEN = dict(stresskit.GOOD_TOKEN)
GOOD_USER = {
    "data": {"user": dict(stresskit.GOOD_USER)},
    "error": {"code": "ok", "message": "", "log_id": "x"},
}
MIB = 1 << 20
#: A token that cannot go into an ``Authorization`` header may be refused when it arrives
#: or when it is first used: either typed answer will do.
BAD_TOKEN = ("token_exchange_failed", "profile_failed", "provider_error")


def _json(body: object, **options: object) -> stresskit.Reply:
    return stresskit.Reply(body=json.dumps(body).encode(), **options)


def _token(**fields: object) -> stresskit.Reply:
    return _json({**GOOD_TOKEN, **fields})


def _user(**fields: object) -> stresskit.Reply:
    return _json({**GOOD_USER, "data": {"user": {**stresskit.GOOD_USER, **fields}}})


@pytest.fixture
async def hostile() -> AsyncIterator[tuple[stresskit.HostileProvider, stresskit.Stack]]:
    async with (
        stresskit.HostileProvider() as provider,
        stresskit.serve_app(
            stresskit.tiktok_provider(provider.url), timeout=2.0, retry=stresskit.FUZZ_RETRY
        ) as stack,
    ):
        yield provider, stack


async def _login(stack: stresskit.Stack) -> tuple[int, dict, str | None]:
    """The callback's status and JSON body, and the session cookie value if one was set."""
    start = await stack.keyloom.begin_login("tiktok")
    nonce = dict(parse_qsl(urlsplit(start.url).query))["state"]
    response = await stack.handler.handle(
        AuthRequest(
            "GET",
            "/oauth/tiktok/callback",
            query=[("code", "c"), ("state", nonce), ("scopes", "user.info.basic")],
            headers={"accept": "application/json"},
            cookies={STATE_COOKIE: start.state},
        )
    )
    session = next(
        (
            c.split(";")[0].split("=", 1)[1]
            for c in response.cookies
            if c.startswith(f"{SESSION_COOKIE}=")
        ),
        None,
    )
    return response.status, json.loads(response.body) if response.body else {}, session or None


TOKEN_CASES = {
    "not json": (
        stresskit.Reply(body=b"<html>oops</html>", content_type="text/html"),
        502,
        "token_exchange_failed",
    ),
    "json array": (_json([GOOD_TOKEN]), 502, "token_exchange_failed"),
    "json string": (_json("act.x"), 502, "token_exchange_failed"),
    "empty body": (stresskit.Reply(body=b""), 502, "token_exchange_failed"),
    "no access_token": (
        _json({k: v for k, v in GOOD_TOKEN.items() if k != "access_token"}),
        502,
        "token_exchange_failed",
    ),
    "access_token is a number": (_token(access_token=12345), 502, "token_exchange_failed"),
    "access_token is an object": (_token(access_token={"a": 1}), 502, "token_exchange_failed"),
    "expires_in is text": (_token(expires_in="soon"), 502, "token_exchange_failed"),
    "expires_in is NaN": (
        stresskit.Reply(body=json.dumps(GOOD_TOKEN).replace("86400", "NaN").encode()),
        502,
        "token_exchange_failed",
    ),
    "scope is a list": (_token(scope=["user.info.basic"]), 502, "token_exchange_failed"),
    "scope without user.info.basic": (_token(scope="video.list"), 403, "scope_denied"),
    "error in a 200": (_token(error="invalid_grant"), 502, "token_exchange_failed"),
    "HTTP 400 invalid_grant": (
        _json({"error": "invalid_grant"}, status=400),
        502,
        "token_exchange_failed",
    ),
    "HTTP 302 elsewhere": (
        stresskit.Reply(status=302, headers=(("Location", "http://127.0.0.1:1/x"),)),
        502,
        "token_exchange_failed",
    ),
    "HTTP 500": (_json({"error": "server_error"}, status=500), 502, "token_exchange_failed"),
    "HTTP 429 forever": (
        _json({}, status=429, headers=(("Retry-After", "0"),)),
        503,
        "rate_limited",
    ),
    "2 MiB with a length": (stresskit.Reply(body=b" " * (2 * MIB) + b"{}"), 502, "provider_error"),
    "2 MiB chunked": (
        stresskit.Reply(body=b" " * (2 * MIB) + b"{}", mode="chunked"),
        502,
        "provider_error",
    ),
    "gzip bomb": (stresskit.Reply(body=stresskit.gzip_bomb(), mode="gzip"), 502, "provider_error"),
    "10 KiB header": (
        _json(GOOD_TOKEN, headers=(("X-Padding", "p" * 10_000),)),
        503,
        "provider_unreachable",
    ),
    "lying Content-Length": (_json(GOOD_TOKEN, mode="lying_length"), 503, "provider_unreachable"),
    "connection reset": (stresskit.Reply(mode="reset"), 503, "provider_unreachable"),
    "body trickled past the timeout": (_json(GOOD_TOKEN, mode="slow"), 504, "provider_timeout"),
    # found by the fuzzing (see the report): each of these answers 500 today
    "expires_in beyond a float": (_token(expires_in=10**400), 502, "token_exchange_failed"),
    "refresh_expires_in beyond a float": (
        _token(refresh_expires_in=10**309),
        502,
        "token_exchange_failed",
    ),
    "deeply nested JSON": (stresskit.Reply(body=b"[" * 100_000), 502, "token_exchange_failed"),
    "access_token with a line break": (
        _token(access_token="act.a\r\nX-Injected: 1"),
        502,
        BAD_TOKEN,
    ),
    "access_token with a NUL": (_token(access_token="act.a\x00b"), 502, BAD_TOKEN),
}


@pytest.mark.parametrize("name", list(TOKEN_CASES))
async def test_hostile_token_answer(hostile, name):
    provider, stack = hostile
    reply, status, code = TOKEN_CASES[name]
    provider.set(reply, _json(GOOD_USER))
    got, body, session = await _login(stack)
    assert got == status, body
    assert body.get("error") in (code if isinstance(code, tuple) else (code,)), body
    assert session is None
    if name == "HTTP 302 elsewhere":
        assert provider.requests[TOKEN_PATH] == 1
    if name == "scope without user.info.basic":
        assert provider.requests[REVOKE_PATH] == 1  # the unwanted grant is revoked


USER_CASES = {
    "not json": (stresskit.Reply(body=b"\x89PNG", content_type="image/png"), 502, "profile_failed"),
    "no data": (_json({"error": {"code": "ok"}}), 502, "profile_failed"),
    "data is a list": (_json({"data": [], "error": {"code": "ok"}}), 502, "profile_failed"),
    "user is a string": (
        _json({"data": {"user": "x"}, "error": {"code": "ok"}}),
        502,
        "profile_failed",
    ),
    "error code not ok": (
        _json({**GOOD_USER, "error": {"code": "access_token_invalid"}}),
        502,
        "profile_failed",
    ),
    "error is a list": (_json({**GOOD_USER, "error": ["ok"]}), 302, None),
    "open_id is a number": (_user(open_id=5), 502, "profile_failed"),
    "display_name is a list": (_user(display_name=["x"]), 302, None),
    "huge display_name": (_user(display_name="n" * 600_000), 502, "profile_failed"),
    "huge avatar_url": (_user(avatar_url="https://a/" + "a" * 5000), 302, None),
    "2 MiB": (stresskit.Reply(body=b" " * (2 * MIB) + b"{}"), 502, "provider_error"),
    "gzip bomb": (stresskit.Reply(body=stresskit.gzip_bomb(), mode="gzip"), 502, "provider_error"),
    "reset every time": (stresskit.Reply(mode="reset"), 503, "provider_unreachable"),
    # found by the fuzzing (see the report)
    "deeply nested JSON": (stresskit.Reply(body=b'{"a":' * 100_000), 502, "profile_failed"),
}


@pytest.mark.parametrize("name", list(USER_CASES))
async def test_hostile_user_info_answer(hostile, name):
    provider, stack = hostile
    reply, status, code = USER_CASES[name]
    provider.set(_json(GOOD_TOKEN), reply)
    got, body, session = await _login(stack)
    assert (got, body.get("error")) == (status, code), body
    assert (session is not None) == (status == 302)
    assert provider.requests[USER_INFO_PATH] >= 1


@pytest.mark.parametrize(
    "name", ["lone surrogate", "surrogate pair halves", "escaped surrogate in the middle"]
)
async def test_profile_with_lone_surrogates_keeps_the_session_readable(hostile, name):
    """JSON may carry lone surrogates (``"\\ud800"``); the profile signs in, and the
    session answer that echoes the user must still be served (found by the fuzzing)."""
    provider, stack = hostile
    value = {
        "lone surrogate": "\ud800",
        "surrogate pair halves": "\udfff\ud800",
        "escaped surrogate in the middle": "a\udc80b",
    }[name]
    provider.set(_json(GOOD_TOKEN), _user(display_name=value))
    got, _, session = await _login(stack)
    assert got == 302
    assert session is not None
    answer = await stack.handler.handle(
        AuthRequest(
            "GET",
            "/session",
            headers={"accept": "application/json"},
            cookies={SESSION_COOKIE: session},
        )
    )
    assert answer.status == 200, answer.body
    assert json.loads(answer.body)["user"]["name"] is not None

"""The session cookie codec and the CSRF helpers, without a server."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import attrs
import pytest

import keyloom_core
from keyloom_core import LoginResult, PluginError, Profile, ProfileError, TokenSet
from keyloom_core.web import sessions as sessions_module
from keyloom_core.web.sessions import (
    MAX_COOKIE_VALUE,
    Session,
    check_csrf,
    encode_session,
    issue_session,
    new_csrf_token,
    read_session,
)

pytestmark = pytest.mark.anyio


def result(**profile: object) -> LoginResult:
    fields = {"id": "id-bob", "name": "Bob", **profile}
    return LoginResult(
        provider_id="fake",
        profile=Profile(provider_id="fake", **fields),  # type: ignore[arg-type]
        tokens=TokenSet(access_token="at-secret", refresh_token="rt-secret", account_id="open-1"),
        granted_scopes=frozenset({"profile", "email"}),
        requested_scopes=frozenset({"profile"}),
        callback_url="/",
    )


@pytest.fixture
def keyloom(make_keyloom):
    return make_keyloom()


async def test_to_json_has_the_javascript_shape():
    session = Session(
        id="sid",
        user={"id": "u1", "name": "Bob", "email": None, "emailVerified": False, "image": None},
        provider_id="fake",
        provider_account_id="open-1",
        scopes=["b", "a"],
        created_at=0,
        expires_at=86_400,
    )
    assert session.to_json() == {
        "session": {
            "id": "sid",
            "userId": "u1",
            "expiresAt": "1970-01-02T00:00:00.000Z",
            "createdAt": "1970-01-01T00:00:00.000Z",
            "updatedAt": "1970-01-01T00:00:00.000Z",
            "provider": "fake",
            "providerAccountId": "open-1",
            "scopes": ["a", "b"],
        },
        "user": {"id": "u1", "name": "Bob", "email": None, "emailVerified": False, "image": None},
    }
    assert "sid" not in repr(session)
    assert "Bob" not in repr(session)


async def test_issue_and_read_round_trip(keyloom):
    now = time.time()
    session, value = issue_session(keyloom, result(extra={"plan": "pro"}), now=now)
    assert session.expires_at == int(now + keyloom.session_ttl)
    assert session.provider_account_id == "open-1"  # from the token answer
    assert session.user["plan"] == "pro"
    assert read_session(keyloom, value, now=now) == session
    assert read_session(keyloom, value, now=session.expires_at + 1) is None
    assert "secret" not in value  # tokens never reach the cookie


async def test_a_read_session_has_every_field_of_the_issued_one(keyloom):
    session, value = issue_session(keyloom, result(extra={"plan": "pro"}))
    read = read_session(keyloom, value)
    assert read is not None
    assert attrs.asdict(read) == attrs.asdict(session)  # a field left unset would raise


async def test_a_cookie_read_again_is_remembered_and_its_expiry_checked_each_time(keyloom):
    now = time.time()
    session, value = issue_session(keyloom, result(), now=now)
    first = read_session(keyloom, value, now=now)
    assert first == session
    assert read_session(keyloom, value, now=now + 1) is first  # remembered, not re-verified
    assert read_session(keyloom, value, now=session.expires_at) is None  # expiry re-checked
    again = read_session(keyloom, value, now=now)
    assert again == session  # forgotten, verified afresh
    assert again is not first
    body, _, mac = value.partition(".")
    assert read_session(keyloom, f"{body}.{mac}==", now=now) is None  # another spelling
    assert read_session(keyloom, f"{body}x.{mac}", now=now) is None


async def test_the_remembered_cookies_are_bounded(keyloom, monkeypatch):
    monkeypatch.setattr(sessions_module, "VERIFIED_CACHE_SIZE", 3)
    now = time.time()
    values = [issue_session(keyloom, result(id=f"id-{n}"), now=now)[1] for n in range(5)]
    for value in values:
        assert read_session(keyloom, value, now=now) is not None
    remembered = sessions_module._VERIFIED[keyloom]
    assert list(remembered) == values[-3:]


@pytest.mark.parametrize("value", [None, "", "x", "a.b", "a.b.c", "é.é"])
async def test_read_garbage_is_none(keyloom, value):
    assert read_session(keyloom, value) is None


async def test_read_refuses_wrong_shapes(keyloom):
    signer = keyloom.signer("session")
    base = Session.from_login(result(), ttl=60).to_payload()
    for broken in (
        {**base, "v": 2},
        {**base, "u": {"name": "no id"}},
        {**base, "u": "bob"},
        {**base, "s": "profile"},
        {**base, "s": [1]},
        {**base, "u": {"id": 5}},
        {**base, "a": None},
        {**base, "iat": "1700000000"},
        {**base, "u": [["id", "bob"]]},
        {k: v for k, v in base.items() if k != "sid"},
        {k: v for k, v in base.items() if k != "u"},
    ):
        assert read_session(keyloom, signer.sign(broken, ttl=60)) is None


async def test_secret_rotation_keeps_sessions(make_keyloom):
    old = make_keyloom(secret="o" * 40)
    _, value = issue_session(old, result())
    rotated = make_keyloom(secret="n" * 40, old_secrets=["o" * 40])
    assert read_session(rotated, value) is not None
    assert read_session(make_keyloom(secret="n" * 40), value) is None


async def test_oversized_profile_drops_image_then_extras(keyloom, caplog):
    big_image = "https://img.example.com/" + "a" * 3000
    with caplog.at_level(logging.WARNING, logger="keyloom.sessions"):
        session, value = issue_session(keyloom, result(image=big_image, extra={"k": "v"}))
    assert "image" not in session.user
    assert session.user["k"] == "v"
    assert len(value) <= MAX_COOKIE_VALUE
    assert "image" in caplog.text
    assert "aaaa" not in caplog.text

    session, value = issue_session(keyloom, result(extra={"bio": "b" * 3000}))
    assert "bio" not in session.user
    assert len(value) <= MAX_COOKIE_VALUE

    with pytest.raises(ProfileError):
        issue_session(keyloom, result(name="n" * 4000))


async def test_non_json_extras_are_a_plugin_error(keyloom):
    with pytest.raises(PluginError) as info:
        issue_session(keyloom, result(extra={"when": object()}))
    assert info.value.plugin == "profile_overrides"


async def test_non_string_user_id_is_stringified(keyloom):
    session, value = issue_session(keyloom, result(id=12345))
    assert session.user_id == "12345"
    assert read_session(keyloom, value).user["id"] == "12345"


async def test_encode_uses_session_expiry(keyloom):
    session = Session.from_login(result(), ttl=100, now=1_000)
    value = encode_session(keyloom, session, now=1_000)
    assert read_session(keyloom, value, now=1_099) == session
    assert read_session(keyloom, value, now=1_100) is None


async def test_csrf_double_submit(keyloom, make_keyloom):
    token = new_csrf_token(keyloom)
    assert check_csrf(keyloom, token, token)
    assert not check_csrf(keyloom, token, None)
    assert not check_csrf(keyloom, None, token)
    assert not check_csrf(keyloom, token, new_csrf_token(keyloom))
    assert not check_csrf(keyloom, "abc", "abc")  # equal but not ours
    assert not check_csrf(keyloom, token, token + "é")
    assert not check_csrf(keyloom, "\udcff", "\udcff")
    other = new_csrf_token(make_keyloom(secret="z" * 40))
    assert not check_csrf(keyloom, other, other)
    expired = new_csrf_token(keyloom, now=time.time() - keyloom.session_ttl - 10)
    assert not check_csrf(keyloom, expired, expired)
    session_value = issue_session(keyloom, result())[1]
    assert not check_csrf(keyloom, session_value, session_value)  # other purpose


async def test_csrf_tokens_are_random(keyloom):
    tokens = {new_csrf_token(keyloom) for _ in range(50)}
    assert len(tokens) == 50
    assert all(json.dumps(t).isascii() for t in tokens)


async def test_web_modules_do_not_import_frameworks():
    code = (
        "import sys, keyloom_core, keyloom_core.web.sessions, keyloom_core.web, keyloom_core.web.asgi;"
        "print(sorted(m for m in ('aiohttp', 'starlette', 'uvicorn') if m in sys.modules))"
    )
    root = Path(keyloom_core.__file__).parent.parent
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout
    assert out.strip() == "[]"

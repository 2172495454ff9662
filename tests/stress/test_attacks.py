"""Attack cases against the real aiohttp app and the TikTok emulator, one named test each.

Every refused attempt must end without a session cookie and, where the attack is caught
before the provider is involved, without any call to the token endpoint (the emulator's
``CodeLedger`` counts each code submission).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
import traceback
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
import stresskit
import yarl
from keyloom_tiktok.emulator import DEFAULT_CLIENT_KEY, TOKEN_PATH

from keyloom_core import KeyloomError, define_keyloom
from keyloom_core._signing import Signer, b64encode
from keyloom_core.testing.emulator import CodeFailure, FaultInjector
from keyloom_core.web import CSRF_COOKIE, SESSION_COOKIE, STATE_COOKIE, AuthHandler, AuthRequest
from keyloom_core.web.sessions import Session, encode_session, issue_session, new_csrf_token

pytestmark = pytest.mark.anyio

JSON = dict(stresskit.JSON_ACCEPT)
HTML = dict(stresskit.HTML_ACCEPT)
OTHER_SECRET = "an-attackers-own-signing-secret-0123456789abc"


def _b64json(text: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64(data: dict) -> str:
    raw = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _with_query(url: str, **changes: str | None) -> str:
    """*url* with query parameters replaced (``None`` drops one)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in changes]
    query += [(k, v) for k, v in changes.items() if v is not None]
    return urlunsplit(parts._replace(query=urlencode(query)))


def _callback_for(stack: stresskit.Stack, params: dict[str, str]) -> str:
    return f"{stack.auth('/oauth/tiktok/callback')}?{urlencode(params)}"


def _ledger(stack: stresskit.Stack) -> stresskit.CodeLedger:
    assert stack.emulator is not None
    return stack.emulator.ledger


def _assert_refused(answer: stresskit.Answer, code: str, status: int = 400) -> None:
    assert answer.status == status, answer.text
    assert answer.json()["error"] == code
    assert not answer.cookie_value(SESSION_COOKIE)


# -- state --------------------------------------------------------------------------------------


async def test_forged_state(stack):
    """State cookies the app never issued (or altered) are refused before any token request."""
    async with stresskit.bare_client() as attacker:
        # the attacker runs a login with his own Keyloom (another secret) against the same
        # provider, so he holds a real code and a real-looking, self-signed state
        own = define_keyloom(
            providers=[stresskit.tiktok_provider(stack.emulator.url)],
            secret=OTHER_SECRET,
            base_url=stack.url,
            autoload=False,
        )
        start = await own.begin_login("tiktok")
        reply = await stresskit.call(attacker, "GET", start.url, encoded=True)
        params = dict(parse_qsl(urlsplit(reply.headers["Location"]).query))
        genuine = await stresskit.start_and_authorize(attacker, stack)
        sealed = _unb64(genuine.state_cookie)  # AES-GCM: format, key id, nonce, ciphertext+tag
        payload = stack.keyloom.states.read(genuine.state_cookie)
        own_signer = Signer([OTHER_SECRET], "state")

        def flipped(at: int) -> str:
            data = bytearray(sealed)
            data[at] ^= 1
            return b64encode(bytes(data))

        forgeries = {
            "sealed with another secret": start.state,
            "random": "Zm9yZ2Vk.Zm9yZ2Vk",
            "ciphertext byte flipped": flipped(30),
            "tag byte flipped": flipped(-1),
            "nonce byte flipped": flipped(12),
            "key id byte flipped": flipped(2),
            "tag cut off": b64encode(sealed[:-16]),
            "earlier format byte": b64encode(b"\x01" + sealed[1:]),
            "non-canonical spelling (== appended)": genuine.state_cookie + "==",
            "readable payload, no signature": _b64({**payload, "n": params["state"]}),
            "readable payload signed by the attacker": own_signer.sign(
                {**payload, "n": params["state"]}, ttl=600
            ),
            "empty": "",
            "huge": "a" * 5000 + "." + "b" * 2000,
        }
        for name, forged in forgeries.items():
            answer = await stresskit.call(
                attacker,
                "GET",
                _callback_for(stack, params),
                cookies={STATE_COOKIE: forged},
                headers=JSON,
            )
            _assert_refused(answer, "invalid_state")
            assert answer.json()["hint"] == "Start the sign-in again.", name
    assert _ledger(stack).submissions == 0
    assert stack.responses.sessions_issued == 0


async def test_state_from_another_provider(make_provider, fake_provider):
    """A state issued for one provider does not complete a login with another."""
    async with (
        stresskit.StressEmulator() as emulator,
        stresskit.serve_app(
            stresskit.tiktok_provider(emulator.url), make_provider(), emulator=emulator
        ) as stack,
        stresskit.bare_client() as client,
    ):
        fake_start = await stresskit.call(client, "GET", stack.auth("/oauth/fake/start"))
        fake_state = fake_start.cookie_value(STATE_COOKIE)
        fake_nonce = dict(parse_qsl(urlsplit(fake_start.headers["Location"]).query))["state"]
        tiktok = await stresskit.start_and_authorize(client, stack)
        # TikTok's real code, delivered with the state of the login started with "fake"
        answer = await stresskit.call(
            client,
            "GET",
            _callback_for(stack, {**tiktok.params, "state": fake_nonce}),
            cookies={STATE_COOKIE: fake_state},
            headers=JSON,
        )
        _assert_refused(answer, "invalid_state")
        assert "another provider" in answer.json()["message"]
        # and the other way round: the TikTok state on the fake provider's callback
        answer = await stresskit.call(
            client,
            "GET",
            f"{stack.auth('/oauth/fake/callback')}?{urlencode(tiktok.params)}",
            cookies={STATE_COOKIE: tiktok.state_cookie},
            headers=JSON,
        )
        _assert_refused(answer, "invalid_state")
        assert emulator.ledger.submissions == 0
        assert fake_provider.calls("/token") == []


async def test_replayed_state(stack, browser):
    """A callback (state and code) that already signed in is refused when sent again."""
    started = await stresskit.start_and_authorize(browser, stack)
    first = await stresskit.call(browser, "GET", started.callback_url, encoded=True, headers=JSON)
    assert first.status == 302
    assert first.cookie_value(SESSION_COOKIE)
    async with stresskit.bare_client() as replayer:
        for _ in range(3):
            again = await stresskit.call(
                replayer,
                "GET",
                started.callback_url,
                encoded=True,
                cookies={STATE_COOKIE: started.state_cookie},
                headers=JSON,
            )
            _assert_refused(again, "invalid_state")
            assert "already used" in again.json()["message"]
    ledger = _ledger(stack)
    assert ledger.submissions == 1  # the code was never sent again
    assert ledger.replays() == []
    assert stack.responses.sessions_issued == 1


async def test_expired_state(stack):
    """A state older than ``state_ttl`` is refused, even with a fresh code."""
    keyloom = stack.keyloom
    start = await keyloom.begin_login("tiktok", now=time.time() - keyloom.state_ttl - 5)
    async with stresskit.bare_client() as client:
        at_provider = await stresskit.call(client, "GET", start.url, encoded=True)
        callback = at_provider.headers["Location"]
        answer = await stresskit.call(
            client, "GET", callback, encoded=True, cookies={STATE_COOKIE: start.state}, headers=JSON
        )
        _assert_refused(answer, "invalid_state")
        assert "expired" in answer.json()["message"]
        # the cookie itself does not outlive the state
        fresh = await stresskit.call(client, "GET", stack.auth("/oauth/tiktok/start"))
        assert f"Max-Age={int(keyloom.state_ttl)}" in fresh.set_cookie(STATE_COOKIE)
    assert _ledger(stack).submissions == 0


async def test_stolen_state_cookie_used_with_another_browsers_session(stack):
    """One browser's state cookie never completes another browser's login, and the failed
    attempt does not spoil the owner's own sign-in."""
    async with stresskit.browser() as victim, stresskit.bare_client() as attacker:
        mine = await stresskit.start_and_authorize(victim, stack)
        theirs = await stresskit.start_and_authorize(attacker, stack)
        # the attacker plants the victim's stolen state cookie next to his own callback
        answer = await stresskit.call(
            attacker,
            "GET",
            theirs.callback_url,
            encoded=True,
            cookies={STATE_COOKIE: mine.state_cookie},
            headers=JSON,
        )
        _assert_refused(answer, "invalid_state")
        # login CSRF: the attacker's callback lands in the victim's browser
        answer = await stresskit.call(
            victim, "GET", theirs.callback_url, encoded=True, headers=JSON
        )
        _assert_refused(answer, "invalid_state")
        assert "does not match" in answer.json()["message"]
        assert answer.set_cookie(STATE_COOKIE) is None  # the victim's own state is kept
        assert _ledger(stack).submissions == 0
        # both real owners still sign in with their own callbacks
        done = await stresskit.call(victim, "GET", mine.callback_url, encoded=True)
        assert done.status == 302, done.text
        session = await stresskit.call(victim, "GET", stack.auth("/session"))
        assert session.json()["user"] is not None
        done = await stresskit.call(
            attacker,
            "GET",
            theirs.callback_url,
            encoded=True,
            cookies={STATE_COOKIE: theirs.state_cookie},
        )
        assert done.status == 302, done.text
    assert _ledger(stack).submissions == 2


# -- PKCE ---------------------------------------------------------------------------------------


async def test_pkce_downgrade_authorize_without_code_challenge_is_refused(stack):
    """An attacker-crafted authorize request without (or with a weak) PKCE gets no code.

    Dropping only ``code_challenge_method`` is no downgrade: TikTok takes the challenge as
    S256 (its own SDKs never send the method), so that code stays bound to the verifier.
    """
    async with stresskit.bare_client() as client:
        start = await stresskit.call(client, "GET", stack.auth("/oauth/tiktok/start"))
        location = start.headers["Location"]
        variants = {
            "code_challenge": _with_query(
                location, code_challenge=None, code_challenge_method=None
            ),
            "code_challenge_method": _with_query(location, code_challenge_method="plain"),
        }
        for expected, url in variants.items():
            answer = await stresskit.call(client, "GET", url, encoded=True)
            assert answer.status == 400, (expected, answer.text)
            assert "Location" not in answer.headers
            assert f'data-error-param="{expected}"' in answer.text
        assert stack.emulator.book._codes == {}
        no_method = _with_query(location, code_challenge_method=None)
        answer = await stresskit.call(client, "GET", no_method, encoded=True)
    assert answer.status == 302
    code = dict(parse_qsl(urlsplit(answer.headers["Location"]).query))["code"]
    (entry,) = stack.emulator.book._codes.values()
    assert entry.code.code == code
    assert entry.code.code_challenge == dict(parse_qsl(urlsplit(location).query))["code_challenge"]
    assert entry.code.code_challenge_method == "S256"


async def test_pkce_our_client_never_omits_it(stack):
    """Every authorize URL carries a fresh S256 challenge, and every code exchange the
    verifier that hashes to it."""
    challenges = []
    async with stresskit.bare_client() as client:
        for _ in range(20):
            started = await stresskit.start_and_authorize(client, stack)
            query = dict(parse_qsl(urlsplit(started.authorize_url).query))
            assert query["code_challenge_method"] == "S256"
            assert len(query["code_challenge"]) == 64  # TikTok: hex SHA-256
            int(query["code_challenge"], 16)
            challenges.append(query["code_challenge"])
            done = await stresskit.call(
                client,
                "GET",
                started.callback_url,
                encoded=True,
                cookies={STATE_COOKIE: started.state_cookie},
            )
            assert done.status == 302, done.text
            (submission,) = _ledger(stack).codes[started.params["code"]]
            assert (
                hashlib.sha256(submission.verifier.encode()).hexdigest() == query["code_challenge"]
            )
    assert len(set(challenges)) == 20


async def test_pkce_verifier_from_another_login_fails(stack):
    """A code is only redeemable with the verifier of the login that asked for it."""
    async with stresskit.bare_client() as client:
        first = await stresskit.start_and_authorize(client, stack)
        second = await stresskit.start_and_authorize(client, stack)
        # login 1's code delivered with login 2's (valid) state: Keyloom sends verifier 2
        answer = await stresskit.call(
            client,
            "GET",
            _callback_for(stack, {**first.params, "state": second.params["state"]}),
            cookies={STATE_COOKIE: second.state_cookie},
            headers=JSON,
        )
        _assert_refused(answer, "token_exchange_failed", 502)
        # straight at the token endpoint with the client's own credentials, too
        other_verifier = stack.keyloom.states.read(second.state_cookie)["v"]
        direct = await stresskit.call(
            client,
            "POST",
            stack.emulator.url + TOKEN_PATH,
            data={
                "client_key": DEFAULT_CLIENT_KEY,
                "client_secret": stack.keyloom.providers["tiktok"].client_secret,
                "grant_type": "authorization_code",
                "code": first.params["code"],
                "redirect_uri": stack.auth("/oauth/tiktok/callback"),
                "code_verifier": other_verifier,
            },
        )
        # TikTok answers OAuth errors with HTTP 200 (the emulator's default error_status)
        assert direct.status == (200 if stack.emulator.error_status == "200" else 400)
        assert direct.json()["error"] == "invalid_request"
    grants = stack.emulator.book
    code = first.params["code"]
    assert (
        grants.inspect_code(
            code, client_id=DEFAULT_CLIENT_KEY, redirect_uri=stack.auth("/oauth/tiktok/callback")
        )
        is not CodeFailure.USED
    )
    assert stack.responses.sessions_issued == 0


async def test_authorization_code_injection(stack):
    """The attacker's own code, injected into the victim's callback, never signs the victim
    in: without the victim's state it is refused outright; with a leaked state it fails PKCE
    (Keyloom sends the victim's verifier)."""
    async with stresskit.browser() as victim, stresskit.bare_client() as attacker:
        stolen = await stresskit.start_and_authorize(attacker, stack)
        pending = await stresskit.start_and_authorize(victim, stack)
        blind = await stresskit.call(
            victim, "GET", _callback_for(stack, stolen.params), headers=JSON
        )
        _assert_refused(blind, "invalid_state")
        assert _ledger(stack).submissions == 0
        leaked = await stresskit.call(
            victim,
            "GET",
            _callback_for(stack, {**stolen.params, "state": pending.params["state"]}),
            headers=JSON,
        )
        _assert_refused(leaked, "token_exchange_failed", 502)
        (submission,) = _ledger(stack).codes[stolen.params["code"]]
        # the emulator refused the verifier (with HTTP 200, as TikTok does, by default)
        assert submission.status == (200 if stack.emulator.error_status == "200" else 400)
        unused = stack.emulator.book.inspect_code(
            stolen.params["code"],
            client_id=DEFAULT_CLIENT_KEY,
            redirect_uri=stack.auth("/oauth/tiktok/callback"),
        )
        assert not isinstance(unused, CodeFailure)  # refused: the code was not redeemed
        session = await stresskit.call(victim, "GET", stack.auth("/session"))
        assert session.json() == {"session": None, "user": None}
        # the victim's state was spent by the injected callback: the genuine one is refused
        # as a replay, and the victim starts over
        genuine = await stresskit.call(
            victim, "GET", pending.callback_url, encoded=True, headers=JSON
        )
        _assert_refused(genuine, "invalid_state")
    assert stack.responses.sessions_issued == 0


# -- open redirects -----------------------------------------------------------------------------


def _open_redirects(app: str) -> list[str]:
    host_port = app.removeprefix("http://")
    port = host_port.split(":")[1]
    return [
        "//evil.com",
        "///evil.com",
        "////evil.com",
        "/\\evil.com",
        "\\\\evil.com",
        "\\/evil.com",
        "/\\/evil.com",
        "https://evil.com",
        "http://evil.com/dashboard",
        "HTTPS://EVIL.COM",
        "https:evil.com",
        "https:/evil.com",
        "https:///evil.com",
        "http:\\\\evil.com",
        "//evil.com@" + host_port,
        f"{app}@evil.com",
        f"{app}.evil.com",
        f"http://{host_port}@evil.com/",
        "http://evil.com#@" + host_port,
        "http://evil.com?@" + host_port,
        f"http://localhost:{port}/",
        "http://127.0.0.1:1/",
        f"https://{host_port}/",
        "%2F%2Fevil.com",
        "%252F%252Fevil.com",
        "%25252F%25252Fevil.com",
        "/%2F/evil.com",
        "/%2F%2Fevil.com",
        "/%5Cevil.com",
        "%5C%5Cevil.com",
        "%68ttps://evil.com",
        "/%09/evil.com",
        "/\t/evil.com",
        "\t//evil.com",
        " //evil.com",
        "/\r\n/evil.com",
        "\x00//evil.com",
        "/%00/evil.com",
        "//evil%E3%80%82com",
        "\uff0f\uff0fevil.com",
        "/\u2215evil.com",
        "javascript:alert(1)",
        "JaVaScRiPt:alert(1)",
        "java\tscript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "vbscript:msgbox(1)",
        "/..//evil.com",
        "/.//evil.com",
        "/%2e%2e//evil.com",
        "/" + "a" * 3000,
    ]


async def test_open_redirect_via_callback_url(stack):
    """No ``callbackUrl``, in any encoding, sends the browser off the app's origin."""
    app = yarl.URL(stack.url)
    payloads = _open_redirects(stack.url)
    refused = accepted = 0
    async with stresskit.bare_client() as client:
        for payload in payloads:
            for raw in (False, True):
                # as a browser encodes it, and exactly as written (pre-encoded payloads)
                if raw:
                    if any(c in payload for c in "\t\r\n\x00 ") or not payload.isascii():
                        continue
                    url = f"{stack.auth('/oauth/tiktok/start')}?callbackUrl={payload}"
                    start = await stresskit.call(client, "GET", url, encoded=True, headers=JSON)
                else:
                    start = await stresskit.call(
                        client,
                        "GET",
                        stack.auth("/oauth/tiktok/start"),
                        params={"callbackUrl": payload},
                        headers=JSON,
                    )
                if start.status == 400:
                    assert start.json()["error"] == "invalid_callback_url", (payload, start.text)
                    refused += 1
                    continue
                assert start.status == 302, (payload, start.text)
                accepted += 1
                at_provider = await stresskit.call(
                    client, "GET", start.headers["Location"], encoded=True
                )
                done = await stresskit.call(
                    client,
                    "GET",
                    at_provider.headers["Location"],
                    encoded=True,
                    cookies={STATE_COOKIE: start.cookie_value(STATE_COOKIE)},
                )
                assert done.status == 302, (payload, done.text)
                location = done.headers["Location"]
                target = yarl.URL(location)
                assert target.origin() == app.origin(), (payload, location)
                assert urlsplit(location).netloc == app.raw_authority, (payload, location)
                assert location.startswith(f"{stack.url}/"), (payload, location)
                assert not any(c in location for c in "\\\t\r\n\x00"), (payload, location)
    assert refused > accepted > 0
    # a same-origin URL, absolute or relative, with query and fragment, is kept as given
    async with stresskit.browser() as browser:
        outcome = await stresskit.browse_login(browser, stack, callback_url="/inbox?tab=1#top")
        assert outcome.label == "success", outcome


# -- sessions and logout ------------------------------------------------------------------------


async def test_session_cookie_tamper(stack, browser):
    """Every altered, forged, expired or cross-purpose session cookie reads as signed out."""
    outcome = await stresskit.browse_login(browser, stack)
    assert outcome.label == "success"
    (cookie,) = [c for c in browser.cookie_jar if c.key == SESSION_COOKIE]
    value = cookie.value
    body, _, mac = value.partition(".")
    payload = _b64json(body)
    result = stack.logins[-1]
    other = define_keyloom(
        providers=[stresskit.tiktok_provider(stack.emulator.url)],
        secret=OTHER_SECRET,
        base_url=stack.url,
        autoload=False,
    )
    now = time.time()
    expired = Session.from_login(result, ttl=60, now=now - 3600)
    started = await stack.keyloom.begin_login("tiktok")
    flipped = body[:10] + ("A" if body[10] != "A" else "B") + body[11:]
    tampered = {
        "payload byte flipped": f"{flipped}.{mac}",
        "user id changed": f"{_b64({**payload, 'u': {**payload['u'], 'id': 'admin'}})}.{mac}",
        "provider changed": f"{_b64({**payload, 'p': 'other'})}.{mac}",
        "expiry pushed": f"{_b64({**payload, 'exp': payload['exp'] + 10**8})}.{mac}",
        "signature flipped": f"{body}.{mac[:-2]}{'AA' if mac[-2:] != 'AA' else 'BB'}",
        "signature dropped": f"{body}.",
        "signature 'none'": f"{body}.none",
        "no signature part": body,
        "signed by another app": encode_session(other, Session.from_login(result, ttl=3600)),
        "expired": encode_session(stack.keyloom, expired, now=now - 3600),
        "a state token": started.state,
        "a CSRF token": new_csrf_token(stack.keyloom),
        "garbage": "x" * 3000,
        "empty": "",
    }
    async with stresskit.bare_client() as client:
        for name, forged in tampered.items():
            answer = await stresskit.call(
                client,
                "GET",
                stack.auth("/session"),
                cookies={SESSION_COOKIE: forged},
                headers=JSON,
            )
            assert answer.status == 200, name
            assert answer.json() == {"session": None, "user": None}, name
            if forged:
                assert answer.set_cookie(SESSION_COOKIE).startswith(f"{SESSION_COOKIE}=; "), name
            me = await stresskit.call(
                client, "GET", f"{stack.url}/me", cookies={SESSION_COOKIE: forged}
            )
            assert me.json() == {"user": None}, name
        # the genuine cookie still works, and a forged duplicate placed first does not win
        ok = await stresskit.call(
            client, "GET", stack.auth("/session"), cookies={SESSION_COOKIE: value}
        )
        assert ok.json()["user"]["id"] == payload["u"]["id"]
        shadowed = await stresskit.call(
            client,
            "GET",
            stack.auth("/session"),
            headers={
                "Cookie": f"{SESSION_COOKIE}={tampered['user id changed']}; {SESSION_COOKIE}={value}"
            },
        )
        assert shadowed.json()["user"] is None or shadowed.json()["user"]["id"] != "admin"


async def test_logout_csrf(stack, browser):
    """Logout needs the double-submit CSRF token; a cross-site request cannot log a user out."""
    assert (await stresskit.browse_login(browser, stack)).label == "success"

    async def signed_in() -> bool:
        answer = await stresskit.call(browser, "GET", stack.auth("/session"))
        return answer.json()["user"] is not None

    token = (await stresskit.call(browser, "GET", stack.auth("/csrf"))).json()["csrfToken"]
    async with stresskit.bare_client() as other:
        other_token = (await stresskit.call(other, "GET", stack.auth("/csrf"))).json()["csrfToken"]
    foreign = define_keyloom(
        providers=[stresskit.tiktok_provider(stack.emulator.url)],
        secret=OTHER_SECRET,
        base_url=stack.url,
        autoload=False,
    )
    forged_token = new_csrf_token(foreign)
    stale_token = new_csrf_token(stack.keyloom, now=time.time() - stack.keyloom.session_ttl - 60)
    session_value = next(c.value for c in browser.cookie_jar if c.key == SESSION_COOKIE)
    attempts = {
        "no header": ({}, None),
        "header from another browser": ({"x-keyloom-csrf": other_token}, None),
        "header and cookie forged alike": ({"x-keyloom-csrf": "forged.token"}, "forged.token"),
        "token signed by another app": ({"x-keyloom-csrf": forged_token}, forged_token),
        "expired token": ({"x-keyloom-csrf": stale_token}, stale_token),
        "empty token": ({"x-keyloom-csrf": ""}, ""),
        "token only in a form field": ({"Content-Type": "application/x-www-form-urlencoded"}, None),
    }
    async with stresskit.bare_client() as cross_site:
        for name, (headers, csrf_cookie) in attempts.items():
            cookies = {
                SESSION_COOKIE: session_value,
                CSRF_COOKIE: csrf_cookie if csrf_cookie is not None else token,
            }
            data = urlencode({"x-keyloom-csrf": token}) if "form" in name else None
            answer = await stresskit.call(
                cross_site,
                "POST",
                stack.auth("/logout"),
                headers=headers,
                cookies=cookies,
                data=data,
            )
            assert answer.status == 403, (name, answer.text)
            assert answer.json() == {"error": "csrf"}, name
            assert answer.set_cookie(SESSION_COOKIE) is None, name
        # a GET (an <img> or a link) is not a logout
        for method in ("GET", "HEAD", "PUT", "DELETE"):
            answer = await stresskit.call(
                cross_site, method, stack.auth("/logout"), cookies={SESSION_COOKIE: session_value}
            )
            assert answer.status in {403, 405}, (method, answer.status)
            assert answer.set_cookie(SESSION_COOKIE) is None
    assert await signed_in()
    out = await stresskit.call(
        browser, "POST", stack.auth("/logout"), headers={"x-keyloom-csrf": token}
    )
    assert out.status == 200
    assert out.json() == {"ok": True}
    assert out.set_cookie(SESSION_COOKIE).startswith(f"{SESSION_COOKIE}=; ")
    assert not await signed_in()


# -- secrets ------------------------------------------------------------------------------------

CANARY = "CANARY-client-secret-5f2c9e1d7b3a"
WRONG_CANARY = "CANARY-wrong-secret-0a9b8c7d6e5f"


async def test_client_secret_never_leaks(caplog, error_status):
    """Over full logins (and logouts, which revoke) and the failure paths, with every logger
    at DEBUG, the client secret (and the signing secret, and the issued tokens) never shows
    in logs, reprs, exception texts, tracebacks, answers, error pages or redirects."""
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    errors: list[KeyloomError] = []
    issued: list[object] = []
    stored: dict[str, object] = {}

    async def on_login(result):
        issued.append(result.tokens)
        stored[result.profile.id] = result.tokens

    async def on_logout(session):
        return stored.pop(session.user_id, None)

    def overrides(profile):
        if profile.name == "Second Viewer":
            msg = "an app bug"
            raise RuntimeError(msg)
        return {}

    injector = FaultInjector()
    app = stresskit.emulated_app(CANARY)
    async with stresskit.StressEmulator(
        clients=[app], faults=injector, error_status=error_status
    ) as emulator:
        provider = stresskit.tiktok_provider(
            emulator.url, secret=CANARY, profile_overrides=overrides
        )
        stack: stresskit.Stack

        async def login(html: bool = False) -> stresskit.Outcome:
            async with stresskit.browser() as browser:
                outcome = await stresskit.browse_login(browser, stack, html=html, transcript=seen)
                seen.append(repr(outcome))
                seen.extend(f"{cookie.key}={cookie.value}" for cookie in browser.cookie_jar)
                if outcome.label == "success":
                    token = (await stresskit.call(browser, "GET", stack.auth("/csrf"))).json()[
                        "csrfToken"
                    ]
                    out = await stresskit.call(
                        browser, "POST", stack.auth("/logout"), headers={"x-keyloom-csrf": token}
                    )
                    assert out.status == 200
            return outcome

        async with stresskit.serve_app(
            provider,
            emulator=emulator,
            on_login=on_login,
            on_logout=on_logout,
            timeout=stresskit.FAULT_KEYLOOM_TIMEOUT,
            retry=stresskit.FAULT_RETRY,
        ) as stack:
            keyloom = stack.keyloom
            seen += [
                repr(keyloom),
                str(keyloom),
                repr(provider),
                str(provider),
                repr(keyloom.providers),
            ]
            seen += [repr(keyloom.http), repr(keyloom.registry), repr(stack.handler)]
            assert (await login()).label == "success"  # its logout posts the secret to revoke
            assert (await login(html=True)).label == "success"
            for fault in ("500", "malformed_json", "reset", "truncated", "429", "timeout"):
                injector.queue(fault)
                await login(html=fault == "500")
            emulator.consent = "deny"
            assert (await login(html=True)).label == "access_denied"
            emulator.consent = "approve"
            emulator.default_user = "second-viewer"  # the app's profile_overrides raises
            assert (await login()).status == 500
            emulator.default_user = "emulated-creator"
            # the flow API's own errors, with their chains and tracebacks
            async with stresskit.bare_client() as client:
                started = await stresskit.start_and_authorize(client, stack)
                assert "client_secret" not in started.authorize_url
                seen += [started.authorize_url, started.callback_url]
                for state in ("forged.state", None):
                    with pytest.raises(KeyloomError) as caught:
                        await keyloom.complete_login("tiktok", started.params, state)
                    errors.append(caught.value)
                injector.queue("500")
                with pytest.raises(KeyloomError) as caught:
                    await keyloom.complete_login("tiktok", started.params, started.state_cookie)
                errors.append(caught.value)

        # an app configured with a wrong secret: the emulator answers invalid_client
        wrong = stresskit.tiktok_provider(emulator.url, secret=WRONG_CANARY)
        async with stresskit.serve_app(wrong, emulator=emulator) as stack:
            assert (await login()).label == "token_exchange_failed"
            assert (await login(html=True)).label == "token_exchange_failed"
            seen += [repr(wrong), repr(stack.keyloom)]

    assert len(errors) == 3
    for error in errors:
        seen += [
            str(error),
            repr(error),
            repr(vars(error)),
            "".join(traceback.format_exception(error)),
        ]
    for record in caplog.records:
        seen.append(record.getMessage())
        if record.exc_info:
            seen.append("".join(traceback.format_exception(*record.exc_info)))
    seen.append(caplog.text)
    everything = "\n".join(seen)
    assert len(caplog.records) > 50  # the logs really were captured
    assert "Sign-in failed" in everything  # and so were the error pages
    assert issued
    for secret in (CANARY, WRONG_CANARY, stresskit.SIGNING_SECRET):
        assert secret not in everything
        assert base64.b64encode(secret.encode()).decode().rstrip("=") not in everything
    for tokens in issued:
        assert tokens.access_token not in everything
        assert tokens.refresh_token not in everything


# -- what an outside audit of the web layer tried -----------------------------------------------


async def test_cookie_tossing_session_fixation(stack):
    """A sibling subdomain plants the attacker's own session cookie next to the victim's (a
    longer ``Path`` so it is sent first): the request reads as signed out. And with Secure
    cookies the names carry ``__Host-``, which no subdomain can set: a planted plain
    ``__keyloom_session`` is not even read."""
    async with stresskit.browser() as attacker, stresskit.browser() as victim:
        assert (await stresskit.browse_login(attacker, stack)).label == "success"
        assert (await stresskit.browse_login(victim, stack)).label == "success"
        planted = next(c.value for c in attacker.cookie_jar if c.key == SESSION_COOKIE)
        own = next(c.value for c in victim.cookie_jar if c.key == SESSION_COOKIE)
    async with stresskit.bare_client() as client:
        for header in (
            f"{SESSION_COOKIE}={planted}; {SESSION_COOKIE}={own}",
            f"{SESSION_COOKIE}={own}; {SESSION_COOKIE}={planted}",
        ):
            answer = await stresskit.call(
                client, "GET", stack.auth("/session"), headers={"Cookie": header}
            )
            assert answer.json() == {"session": None, "user": None}
            me = await stresskit.call(client, "GET", f"{stack.url}/me", headers={"Cookie": header})
            assert me.json() == {"user": None}
    secure = AuthHandler(
        define_keyloom(
            providers=[stresskit.tiktok_provider(stack.emulator.url)],
            secret=stresskit.SIGNING_SECRET,
            base_url="https://app.example.com",
            autoload=False,
        )
    )
    assert secure.session_cookie == "__Host-keyloom_session"
    tossed = await secure.handle(
        AuthRequest("GET", "/session", cookies={SESSION_COOKIE: planted})
    )
    assert json.loads(tossed.body) == {"session": None, "user": None}
    start = await secure.handle(AuthRequest("GET", "/oauth/tiktok/start"))
    assert all(c.startswith("__Host-keyloom_oauth=") for c in start.cookies)


async def test_csrf_token_minted_without_a_session_cannot_log_out(stack, browser):
    """Anyone can fetch a CSRF token while signed out and plant it (cookie and header); it
    is bound to no session, so it never logs a signed-in victim out."""
    assert (await stresskit.browse_login(browser, stack)).label == "success"
    session_value = next(c.value for c in browser.cookie_jar if c.key == SESSION_COOKIE)
    async with stresskit.bare_client() as attacker:

        async def try_logout(forged: str) -> None:
            answer = await stresskit.call(
                attacker,
                "POST",
                stack.auth("/logout"),
                headers={"x-keyloom-csrf": forged},
                cookies={SESSION_COOKIE: session_value, CSRF_COOKIE: forged},
            )
            assert answer.status == 403, answer.text
            assert answer.set_cookie(SESSION_COOKIE) is None

        # minted without a session, then for another session
        await try_logout((await stresskit.call(attacker, "GET", stack.auth("/csrf"))).json()["csrfToken"])
        other_session, _ = issue_session(stack.keyloom, stack.logins[-1])
        await try_logout(new_csrf_token(stack.keyloom, session_id=other_session.id))
    still = await stresskit.call(browser, "GET", stack.auth("/session"))
    assert still.json()["user"] is not None


class _CookieProbe:
    """Emulator middleware: sets a cookie on every token answer and records the ``Cookie``
    header of every API call."""

    __middleware_version__ = 1

    def __init__(self) -> None:
        self.seen: list[str | None] = []

    async def __call__(self, request, handler):
        if request.path.startswith("/v2/oauth/") or request.path.startswith("/v2/user/"):
            self.seen.append(request.headers.get("Cookie"))
        response = await handler(request)
        if request.path == TOKEN_PATH:
            response.set_cookie("provider_session", "set-during-another-users-login", path="/")
        return response


async def test_provider_cookies_are_not_carried_between_users():
    """A cookie the provider sets during one user's login is never sent with the next
    user's token request: the provider client keeps no cookies."""
    probe = _CookieProbe()
    async with stresskit.StressEmulator(middlewares=[probe]) as emulator:
        # a host name, not an IP address: a default cookie jar would keep its cookies
        origin = emulator.url.replace("127.0.0.1", "localhost")
        async with stresskit.serve_app(
            stresskit.tiktok_provider(origin), emulator=emulator
        ) as stack:
            for _ in range(3):
                async with stresskit.browser() as user:
                    assert (await stresskit.browse_login(user, stack)).label == "success"
    assert len(probe.seen) >= 6
    assert probe.seen == [None] * len(probe.seen)


async def test_malleable_signature_spellings(stack, browser):
    """A signed value with ``==``, ``!!`` or another spelling of its signature appended
    does not verify: one signed value has one spelling (deny lists keyed on it hold)."""
    assert (await stresskit.browse_login(browser, stack)).label == "success"
    value = next(c.value for c in browser.cookie_jar if c.key == SESSION_COOKIE)
    body, _, mac = value.partition(".")
    last = mac[-1]
    spellings = [value + "==", value + "!!", value + "=", f"{body}.{mac}A", f"={value}"]
    # the same signature bytes with different unused bits (base64's second spelling)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    spellings.append(f"{body}.{mac[:-1]}{alphabet[alphabet.index(last) ^ 1]}")
    async with stresskit.bare_client() as client:
        for spelling in spellings:
            answer = await stresskit.call(
                client, "GET", stack.auth("/session"), cookies={SESSION_COOKIE: spelling}
            )
            assert answer.json() == {"session": None, "user": None}, spelling


async def test_oversized_state_cookie_is_refused_at_start(stack):
    """A long non-ASCII ``callbackUrl`` under the character limit would make a state cookie
    over 4 KB that browsers drop silently: it is refused at ``/start`` with a clear 400."""
    async with stresskit.bare_client() as client:
        for callback in ("/" + "é" * 600, "/" + "例" * 500, "/%E4%BE%8B" * 300):
            answer = await stresskit.call(
                client,
                "GET",
                stack.auth("/oauth/tiktok/start"),
                params={"callbackUrl": callback},
                headers=JSON,
            )
            assert answer.status == 400, answer.text
            assert answer.json()["error"] == "invalid_callback_url"
            assert "too long" in answer.json()["message"]
            assert answer.set_cookie(STATE_COOKIE) is None
        fine = await stresskit.call(
            client, "GET", stack.auth("/oauth/tiktok/start"), params={"callbackUrl": "/" + "é" * 90}
        )
        assert fine.status == 302
        assert len(fine.set_cookie(STATE_COOKIE).encode()) < 4000
    assert _ledger(stack).submissions == 0


async def test_request_reprs_show_no_secrets(stack, browser):
    """The request object handed around (and logged by apps) hides the session cookie, the
    CSRF token, ``Authorization`` and the callback's code and state."""
    assert (await stresskit.browse_login(browser, stack)).label == "success"
    session_value = next(c.value for c in browser.cookie_jar if c.key == SESSION_COOKIE)
    token = (await stresskit.call(browser, "GET", stack.auth("/csrf"))).json()["csrfToken"]
    request = AuthRequest.from_raw(
        "POST",
        "/logout",
        b"code=an-authorization-code&state=a-state-nonce",
        [
            ("Cookie", f"{SESSION_COOKIE}={session_value}; {CSRF_COOKIE}={token}"),
            ("x-keyloom-csrf", token),
            ("Authorization", "Bearer a-bearer-token"),
        ],
    )
    shown = repr(request) + str(request)
    for secret in (session_value, token, "a-bearer-token", "an-authorization-code", "a-state-nonce"):
        assert secret not in shown
        assert all(part not in shown for part in secret.split("."))


async def test_non_ascii_base_url():
    """``https://例え.example`` is normalised to its IDNA form at configuration time, so no
    ``Location`` header or redirect URI ever holds a character HTTP cannot send."""
    keyloom = define_keyloom(
        providers=[stresskit.tiktok_provider("http://127.0.0.1:9")],
        secret=stresskit.SIGNING_SECRET,
        base_url="https://例え.example",
        autoload=False,
    )
    assert keyloom.base_url == "https://xn--r8jz45g.example"
    start = await AuthHandler(keyloom).handle(
        AuthRequest("GET", "/oauth/tiktok/start", query=[("callbackUrl", "/ページ")])
    )
    assert start.status == 302
    assert all(v.isascii() for _, v in start.header_list())
    with pytest.raises(KeyloomError):
        define_keyloom(
            providers=[stresskit.tiktok_provider("http://127.0.0.1:9")],
            secret=stresskit.SIGNING_SECRET,
            base_url="https://" + "ü" * 70 + ".example",
            autoload=False,
        )


async def test_head_requests(stack):
    """``HEAD`` on a GET route answers as ``GET`` without the body (not 405), on a route
    that changes state only as its ``GET`` would; ``HEAD`` never logs out."""
    async with stresskit.bare_client() as client:
        for path in ("/session", "/csrf", "/providers"):
            get = await stresskit.call(client, "GET", stack.auth(path))
            head = await stresskit.call(client, "HEAD", stack.auth(path))
            assert (head.status, head.body) == (get.status, b""), path
        logout = await stresskit.call(client, "HEAD", stack.auth("/logout"))
        assert logout.status == 405


async def test_token_store_rollback(tmp_path):
    """An older ciphertext of an account (an already rotated refresh token) written back
    into its row does not decrypt: the version is in the AEAD's associated data."""
    import sqlite3

    from keyloom_core import TokenSet
    from keyloom_core.tokens import SQLiteTokenStore, TokenDecryptionError

    path = tmp_path / "tokens.sqlite3"
    async with SQLiteTokenStore(path, secret=stresskit.SIGNING_SECRET) as store:
        await store.put("tiktok", "victim", TokenSet(access_token="a1", refresh_token="r1"), scopes=())
        with sqlite3.connect(path) as conn:
            (old,) = conn.execute("SELECT payload FROM keyloom_tokens").fetchone()
        conn.close()
        await store.put(
            "tiktok", "victim", TokenSet(access_token="a2", refresh_token="r2"), scopes=(), if_version=1
        )
        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE keyloom_tokens SET payload = ?", (old,))
        conn.close()
        with pytest.raises(TokenDecryptionError):
            await store.get("tiktok", "victim")


async def test_state_cookie_reveals_nothing(stack):
    """The state cookie is sealed (AES-GCM): the PKCE verifier, the redirect URI and the
    callback URL cannot be read from it."""
    async with stresskit.bare_client() as client:
        started = await stresskit.start_and_authorize(client, stack, callback_url="/secret/page")
    payload = stack.keyloom.states.read(started.state_cookie)
    raw = _unb64(started.state_cookie)
    for value in (payload["v"], payload["r"], payload["c"], payload["n"]):
        assert value.encode() not in raw
    assert b'"v"' not in raw

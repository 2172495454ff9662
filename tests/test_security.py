"""Core hardening: the provider client keeps no cookies, base URLs are ASCII, and the login
state is sealed (encrypted), not only signed."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from keyloom_core import ConfigurationError, StateError
from keyloom_core._signing import BadSignatureError
from keyloom_core.http import HttpClient

pytestmark = pytest.mark.anyio


# -- the provider HTTP client stores no cookies ----------------------------------------------


@pytest.fixture
async def cookie_setter() -> AsyncIterator[str]:
    """A provider that sets a cookie on ``/set`` and echoes the ``Cookie`` it gets."""

    async def set_cookie(_: web.Request) -> web.Response:
        response = web.json_response({})
        response.set_cookie("provider_session", "first-users-cookie", path="/")
        return response

    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"cookie": request.headers.get("Cookie")})

    app = web.Application()
    app.router.add_get("/set", set_cookie)
    app.router.add_get("/echo", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        # "localhost" (not an IP address): a default aiohttp jar would keep its cookies
        yield f"http://localhost:{port}"
    finally:
        await runner.cleanup()


async def test_the_provider_client_keeps_no_cookies(cookie_setter: str) -> None:
    async with HttpClient() as http:
        first = await http.get(f"{cookie_setter}/set")
        assert "provider_session" in first.headers.get("Set-Cookie", "")
        second = await http.get(f"{cookie_setter}/echo")
        assert second.json() == {"cookie": None}


async def test_keylooms_own_client_keeps_no_cookies(keyloom: Any, cookie_setter: str) -> None:
    await keyloom.http.get(f"{cookie_setter}/set")
    assert (await keyloom.http.get(f"{cookie_setter}/echo")).json() == {"cookie": None}
    assert len(keyloom.http.session.cookie_jar) == 0


# -- non-ASCII base URLs -----------------------------------------------------------------------


async def test_a_non_ascii_host_is_converted_to_idna(make_keyloom: Any) -> None:
    keyloom = make_keyloom(base_url="https://例え.example/")
    assert keyloom.base_url == "https://xn--r8jz45g.example"
    provider = keyloom.providers["fake"]
    assert keyloom.redirect_uri(provider) == (
        "https://xn--r8jz45g.example/api/auth/oauth/fake/callback"
    )
    with_path = make_keyloom(base_url="https://Bücher.example:8443/café")
    assert with_path.base_url == "https://xn--bcher-kva.example:8443/caf%C3%A9"
    assert with_path.base_url.isascii()


@pytest.mark.parametrize(
    "bad", ["https://\u2028.example", "https://" + "ü" * 70 + ".example", "https://a\x00b.example"]
)
async def test_a_host_that_is_no_domain_name_is_refused(make_keyloom: Any, bad: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        make_keyloom(base_url=bad)
    assert "base_url" in str(info.value)


# -- the login state is sealed -----------------------------------------------------------------


def _readable(value: str) -> bytes:
    raw = b""
    for part in value.split("."):
        try:
            raw += base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        except ValueError:
            continue
    return raw


async def test_the_state_hides_the_verifier_and_the_urls(keyloom: Any) -> None:
    start = await keyloom.begin_login("fake", callback_url="/private/path-of-the-user")
    assert b"/private/path-of-the-user" not in _readable(start.state)
    assert "/callback" not in str(_readable(start.state))
    assert keyloom.states.sealed
    payload = keyloom.states.read(start.state)
    assert payload["c"] == "/private/path-of-the-user"
    raw = _readable(start.state)
    for secret in (payload["v"], payload["c"], payload["r"], payload["n"]):
        assert secret.encode() not in raw
    with pytest.raises(ValueError):  # no JSON in there (the signed form was base64 JSON)
        json.loads(raw)


async def test_a_sealed_state_is_tamper_proof_and_bound_to_its_keys(
    keyloom: Any, make_keyloom: Any, authorize: Any
) -> None:
    start = await keyloom.begin_login("fake")
    query = await authorize(start)
    blob = bytearray(base64.urlsafe_b64decode(start.state + "=" * (-len(start.state) % 4)))
    blob[-5] ^= 1
    flipped = base64.urlsafe_b64encode(bytes(blob)).rstrip(b"=").decode()
    other = make_keyloom(secret="another-apps-secret-0123456789-abcdef")
    foreign = await other.begin_login("fake")
    signed = keyloom.signer("state").sign(keyloom.states.read(start.state), ttl=600)
    for forged in (flipped, foreign.state, signed, start.state + "A", "", "x" * 9000):
        with pytest.raises(StateError) as info:
            await keyloom.complete_login("fake", query, forged)
        assert info.value.code == "invalid_state"
    with pytest.raises(BadSignatureError):
        keyloom.states.read(signed)  # a merely signed state is not accepted once sealing is on
    result = await keyloom.complete_login("fake", query, start.state)
    assert result.profile.id == "id-alice"


def test_without_cryptography_the_state_is_signed() -> None:
    """The fallback: an installation without the ``tokens`` extra signs the state."""
    code = textwrap.dedent(
        """
        import sys
        sys.modules["cryptography"] = None  # as if it were not installed
        import anyio
        from keyloom_core import ProviderSpec, configure_provider, define_keyloom

        spec = ProviderSpec(
            id="fake", name="Fake", authorize_url="https://fake.invalid/authorize",
            token_url="https://fake.invalid/token", default_scopes={"profile"},
            known_scopes={"profile"},
        )
        keyloom = define_keyloom(
            providers=[configure_provider(spec, client_id="c", client_secret="s")],
            secret="x" * 40, base_url="https://app.example.com", autoload=False,
        )

        async def main():
            start = await keyloom.begin_login("fake", callback_url="/back")
            assert not keyloom.states.sealed
            assert keyloom.states.read(start.state)["c"] == "/back"
            assert keyloom.signer("state").unsign(start.state)["c"] == "/back"
            print("signed")

        anyio.run(main)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "signed"

"""An RFC 6749 error body wins over a 2xx status, in every built-in provider call.

Some providers (TikTok among them) answer OAuth errors with HTTP 200 and the error only in
the body. The server here is a real aiohttp application on 127.0.0.1 that answers every
call that way; what the core makes of it is asserted through Keyloom's public API.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from keyloom_core import (
    Keyloom,
    ProfileError,
    ProviderSpec,
    ReauthenticationRequiredError,
    RevokeError,
    TokenExchangeError,
    TokenSet,
    configure_provider,
    define_keyloom,
)

pytestmark = pytest.mark.anyio

LOG_ID = "202611221854370101130062072500FFA2"


class Answers:
    """A provider whose every endpoint answers the (status, body) a test sets."""

    def __init__(self) -> None:
        self.url = ""
        self.status = 200
        self.body = b"{}"
        self.content_type = "application/json"
        self.calls: list[str] = []

    def error(self, error: str, description: str) -> None:
        """Answer HTTP 200 with an RFC 6749 error body (and a ``log_id``, as TikTok does)."""
        self.status = 200
        self.body = (
            f'{{"error":"{error}","error_description":"{description}","log_id":"{LOG_ID}"}}'
        ).encode()
        self.content_type = "application/json"

    async def answer(self, request: web.Request) -> web.Response:
        self.calls.append(request.path)
        return web.Response(status=self.status, body=self.body, content_type=self.content_type)


@pytest.fixture
async def answers() -> AsyncIterator[Answers]:
    provider = Answers()
    app = web.Application()
    for path in ("/token", "/revoke"):
        app.router.add_post(path, provider.answer)
    app.router.add_get("/userinfo", provider.answer)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    provider.url = str(server.make_url("")).rstrip("/")
    try:
        yield provider
    finally:
        await server.close()


@pytest.fixture
async def keyloom(answers: Answers, fake_spec: ProviderSpec) -> AsyncIterator[Keyloom]:
    provider = configure_provider(
        fake_spec,
        endpoint_origin=answers.url,
        client_id="client",
        client_secret="client-secret-never-shown-8c1e",
    )
    instance = define_keyloom(
        providers=[provider],
        secret="error-bodies-signing-secret-0123456789",
        base_url="https://app.example.com",
        autoload=False,
    )
    async with instance:
        yield instance


def tokens() -> TokenSet:
    data: dict[str, Any] = {
        "access_token": "access-token-value",
        "refresh_token": "refresh-token-value",
        "expires_in": 3600,
        "scope": "profile",
    }
    return TokenSet.from_response(data)


async def test_a_revoke_refused_with_http_200_is_a_revoke_error(
    keyloom: Keyloom, answers: Answers
) -> None:
    answers.error("invalid_client", "Client key or client secret is invalid.")
    with pytest.raises(RevokeError) as info:
        await keyloom.revoke("fake", tokens())
    error = info.value
    assert error.error == "invalid_client"
    assert error.description == "Client key or client secret is invalid."
    assert error.log_id == LOG_ID
    assert error.http_status == 200
    assert error.provider_id == "fake"
    assert "client-secret-never-shown" not in str(error)
    assert answers.calls == ["/revoke"]


@pytest.mark.parametrize(
    ("body", "content_type"),
    [(b"{}", "application/json"), (b"", "application/json"), (b"OK", "text/plain")],
    ids=["empty-object", "empty-body", "text"],
)
async def test_a_2xx_revoke_without_an_error_is_confirmed(
    keyloom: Keyloom, answers: Answers, body: bytes, content_type: str
) -> None:
    answers.body, answers.content_type = body, content_type
    assert await keyloom.revoke("fake", tokens()) is True


async def test_a_code_exchange_refused_with_http_200_is_a_token_exchange_error(
    keyloom: Keyloom, answers: Answers
) -> None:
    answers.error("invalid_request", "Code verifier or code challenge is invalid.")
    start = await keyloom.begin_login("fake")
    state = parse_qs(urlsplit(start.url).query)["state"][0]
    with pytest.raises(TokenExchangeError) as info:
        await keyloom.complete_login("fake", {"code": "c", "state": state}, start.state)
    assert (info.value.error, info.value.http_status) == ("invalid_request", 200)
    assert info.value.log_id == LOG_ID


async def test_a_refresh_refused_with_http_200_requires_signing_in_again(
    keyloom: Keyloom, answers: Answers
) -> None:
    answers.error("invalid_grant", "Refresh token is invalid.")
    with pytest.raises(ReauthenticationRequiredError) as info:
        await keyloom.refresh("fake", tokens())
    assert (info.value.error, info.value.http_status) == ("invalid_grant", 200)


async def test_a_profile_refused_with_http_200_is_a_profile_error(
    keyloom: Keyloom, answers: Answers
) -> None:
    answers.error("invalid_token", "The access token expired.")
    with pytest.raises(ProfileError) as info:
        await keyloom.fetch_profile("fake", tokens())
    assert (info.value.error, info.value.http_status) == ("invalid_token", 200)

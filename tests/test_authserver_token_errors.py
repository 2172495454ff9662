"""The generic server's token and revocation refusals: typed reasons, one rendering hook."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from keyloom_core import ProviderSpec
from keyloom_core.pkce import new_code_verifier
from keyloom_core.testing.authserver import (
    AuthorizationServer,
    Client,
    EndpointFailure,
    RequestFailure,
)
from keyloom_core.testing.emulator import CodeFailure, TokenFailure

pytestmark = pytest.mark.anyio

REDIRECT = "https://app.example.test/callback/"
SPEC = ProviderSpec(
    id="strict",
    name="Strict",
    authorize_url="https://strict.example/oauth/authorize",
    token_url="https://strict.example/oauth/token",
    profile_url="https://strict.example/api/me",
    revoke_url="https://strict.example/oauth/revoke",
    known_scopes={"profile"},
    default_scopes={"profile"},
)
CLIENTS = [
    Client(client_id="a", client_secret="sa", redirect_uris=[REDIRECT]),
    Client(client_id="b", client_secret="sb", redirect_uris=[REDIRECT]),
]


class PlainServer(AuthorizationServer):
    spec = SPEC


class StrictServer(AuthorizationServer):
    """A dialect with every new switch set, its own codes, descriptions and error envelope."""

    spec = SPEC
    strict_requests = True
    client_token_ttl = 60.0
    client_token_prefix = "cc."
    min_verifier_length = 32
    revoke_forgets_consent = True
    remember_consent = True
    token_error_codes: ClassVar[Mapping[EndpointFailure, str]] = {
        CodeFailure.REDIRECT_MISMATCH: "invalid_request"
    }
    token_error_descriptions: ClassVar[Mapping[EndpointFailure, str]] = {
        RequestFailure.CONTENT_TYPE: "forms only",
        RequestFailure.SECRET_MISSING: "no secret",
        CodeFailure.REDIRECT_MISMATCH: "other redirect",
    }
    rendered: ClassVar[list[EndpointFailure]] = []

    def token_error(self, request: Any, failure: EndpointFailure) -> Any:
        self.rendered.append(failure)
        return super().token_error(request, failure)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _code(
    http: aiohttp.ClientSession, server: AuthorizationServer, verifier: str, client: str = "a"
) -> str:
    params = {
        "client_id": client,
        "redirect_uri": REDIRECT,
        "response_type": "code",
        "scope": "profile",
        "code_challenge": _s256(verifier),
        "code_challenge_method": "S256",
    }
    response = await http.get(server.authorize_url, params=params, allow_redirects=False)
    assert response.status == 302
    return parse_qs(urlsplit(response.headers["Location"]).query)["code"][0]


def _s256(verifier: str) -> str:
    """The S256 challenge of *verifier*, of any length (the kit's helper checks RFC 7636's)."""
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _basic(client_id: str, secret: str) -> dict[str, str]:
    value = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {value}"}


async def _post(
    http: aiohttp.ClientSession, url: str, data: Any, **kwargs: Any
) -> tuple[int, dict[str, Any]]:
    response = await http.post(url, data=data, **kwargs)
    return response.status, await response.json() if response.content_length else {}


async def test_strict_requests_name_each_refusal_with_its_description() -> None:
    StrictServer.rendered.clear()
    async with (
        StrictServer(clients=CLIENTS, consent="approve") as server,
        aiohttp.ClientSession() as http,
    ):
        url = server.token_url
        form = {"client_id": "a", "client_secret": "sa", "grant_type": "refresh_token"}
        status, body = await _post(http, url, None, json=form)
        assert (status, body["error"], body["error_description"]) == (
            400,
            "invalid_request",
            "forms only",
        )
        status, body = await _post(http, url, [*form.items(), ("grant_type", "refresh_token")])
        assert (status, body["error"]) == (400, "invalid_request")
        status, body = await _post(http, url, {"client_id": "a", "grant_type": "refresh_token"})
        assert (body["error"], body["error_description"]) == ("invalid_request", "no secret")
        status, body = await _post(http, url, {**form, "client_secret": "wrong"})
        assert (status, body["error"]) == (401, "invalid_client")
        # strict: credentials in the form only, as spec.token_auth_method says
        basic = _basic("a", "sa")
        status, body = await _post(http, url, {"grant_type": "refresh_token"}, headers=basic)
        assert body["error"] == "invalid_request"
        status, body = await _post(http, url, {k: v for k, v in form.items() if k != "grant_type"})
        assert body["error"] == "invalid_request"
        status, body = await _post(http, url, {**form, "grant_type": "password"})
        assert body["error"] == "unsupported_grant_type"
        status, body = await _post(http, url, form)  # no refresh_token
        assert body["error"] == "invalid_request"
        status, body = await _post(http, url, {**form, "refresh_token": "nope"})
        assert (status, body["error"]) == (400, "invalid_grant")
    assert StrictServer.rendered == [
        RequestFailure.CONTENT_TYPE,
        RequestFailure.MALFORMED,
        RequestFailure.SECRET_MISSING,
        RequestFailure.INVALID_CLIENT,
        RequestFailure.MALFORMED,
        RequestFailure.MALFORMED,
        RequestFailure.UNSUPPORTED_GRANT_TYPE,
        RequestFailure.MALFORMED,
        TokenFailure.UNKNOWN,
    ]


async def test_code_failures_verifier_length_and_the_code_table() -> None:
    async with (
        StrictServer(clients=CLIENTS, consent="approve") as server,
        aiohttp.ClientSession() as http,
    ):
        verifier = "v" * 32  # shorter than RFC 7636 allows, as this dialect permits
        code = await _code(http, server, verifier)
        form = {
            "client_id": "a",
            "client_secret": "sa",
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
        }
        status, body = await _post(http, server.token_url, {**form, "redirect_uri": REDIRECT + "x"})
        assert (body["error"], body["error_description"]) == ("invalid_request", "other redirect")
        status, body = await _post(http, server.token_url, {**form, "code_verifier": "w" * 32})
        assert (status, body["error"]) == (400, "invalid_grant")
        status, body = await _post(http, server.token_url, {**form, "code_verifier": verifier})
        assert status == 200
        assert body["access_token"]
        status, body = await _post(http, server.token_url, {**form, "code_verifier": verifier})
        assert (body["error"], body["error_description"]) == ("invalid_grant", "invalid grant")


async def test_a_code_of_a_user_who_left_is_refused() -> None:
    async with (
        StrictServer(clients=CLIENTS, consent="approve") as server,
        aiohttp.ClientSession() as http,
    ):
        verifier = new_code_verifier()
        code = await _code(http, server, verifier)
        server.default_user = "someone-else"  # the code's user may no longer sign in
        form = {
            "client_id": "a",
            "client_secret": "sa",
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "code_verifier": verifier,
        }
        status, body = await _post(http, server.token_url, form)
        assert (status, body["error"]) == (400, "invalid_grant")


async def test_client_credentials_only_where_offered() -> None:
    form = {"client_id": "a", "client_secret": "sa", "grant_type": "client_credentials"}
    async with (
        StrictServer(clients=CLIENTS) as server,
        PlainServer(clients=CLIENTS) as plain,
        aiohttp.ClientSession() as http,
    ):
        status, body = await _post(http, server.token_url, form)
        assert status == 200
        assert body["access_token"].startswith("cc.")
        assert body["expires_in"] == 60
        assert "refresh_token" not in body
        # the token has no user: the profile route refuses it
        headers = {"Authorization": f"Bearer {body['access_token']}"}
        assert (await http.get(server.profile_url, headers=headers)).status == 401
        status, body = await _post(http, plain.token_url, form)
        assert (status, body["error"]) == (400, "unsupported_grant_type")


async def test_revocation_refuses_another_clients_token_and_forgets_consent() -> None:
    async with (
        StrictServer(clients=CLIENTS, consent="approve") as server,
        aiohttp.ClientSession() as http,
    ):
        verifier = new_code_verifier()
        form = {
            "client_id": "a",
            "client_secret": "sa",
            "grant_type": "authorization_code",
            "code": await _code(http, server, verifier),
            "redirect_uri": REDIRECT,
            "code_verifier": verifier,
        }
        status, tokens = await _post(http, server.token_url, form)
        assert status == 200
        assert ("a", server.default_user) in server.granted
        revoke = server.url_for("/oauth/revoke")
        status, body = await _post(http, revoke, {"client_id": "a", "client_secret": "sa"})
        assert body["error"] == "invalid_request"  # strict: the token is required
        theirs = {"client_id": "b", "client_secret": "sb", "token": tokens["access_token"]}
        status, body = await _post(http, revoke, theirs)
        assert (status, body["error"]) == (400, "invalid_request")
        assert ("a", server.default_user) in server.granted
        status, body = await _post(
            http, revoke, {**theirs, "client_id": "a", "client_secret": "sa"}
        )
        assert (status, body) == (200, {})
        assert ("a", server.default_user) not in server.granted
        # an unknown token is not an error (RFC 7009 §2.2)
        status, body = await _post(
            http, revoke, {**theirs, "client_id": "a", "client_secret": "sa"}
        )
        assert status == 200


async def test_plain_reading_takes_a_repeated_parameter_and_basic_credentials() -> None:
    async with PlainServer(clients=CLIENTS) as server, aiohttp.ClientSession() as http:
        form = [("grant_type", "refresh_token"), ("grant_type", "refresh_token")]
        status, body = await _post(http, server.token_url, form, headers=_basic("a", "sa"))
        assert (status, body["error"]) == (400, "invalid_grant")
        status, body = await _post(http, server.token_url, form, headers=_basic("a", "x"))
        assert (status, body["error"]) == (401, "invalid_client")


# -- consent settings -------------------------------------------------------------------------


class ConsentServer(AuthorizationServer):
    spec = SPEC
    require_pkce = False
    remember_consent = True
    rotate_refresh_tokens = False
    required_scopes = frozenset({"profile"})
    scope_descriptions: ClassVar[Mapping[str, str]] = {"email": "Read your address"}

    def remembers_consent(self, pending: Any) -> bool:
        return pending.params.get("prompt") != "consent"

    def consent_page_options(self, pending: Any) -> Mapping[str, Any]:
        return {"title": f"Allow {pending.client_id}?", "approve_label": "Yes"}


def _authorize_params(**extra: str) -> dict[str, str]:
    return {
        "client_id": "a",
        "redirect_uri": REDIRECT,
        "response_type": "code",
        "scope": "profile email profile",
        **extra,
    }


async def test_withheld_and_required_scopes_when_approving_at_once() -> None:
    async with (
        ConsentServer(clients=CLIENTS, consent="approve") as server,
        aiohttp.ClientSession() as http,
    ):
        server.withheld_scopes = frozenset({"profile", "email"})  # profile cannot be withheld
        response = await http.get(
            server.authorize_url, params=_authorize_params(), allow_redirects=False
        )
        code = parse_qs(urlsplit(response.headers["Location"]).query)["code"][0]
        form = {
            "client_id": "a",
            "client_secret": "sa",
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
        }
        status, body = await _post(http, server.token_url, form)
        assert (status, body["scope"]) == (200, "profile")
        # without rotation, a refresh keeps the refresh token
        refresh = {**form, "grant_type": "refresh_token", "refresh_token": body["refresh_token"]}
        status, again = await _post(http, server.token_url, refresh)
        assert (status, again["refresh_token"]) == (200, body["refresh_token"])


async def test_the_consent_page_its_options_and_a_remembered_consent() -> None:
    async with (
        ConsentServer(clients=CLIENTS, consent="form") as server,
        aiohttp.ClientSession() as http,
    ):
        server.withheld_scopes = frozenset({"email"})
        page = await http.get(server.authorize_url, params=_authorize_params())
        text = await page.text()
        assert "<title>Allow a?</title>" in text
        assert "Read your address" in text
        assert ">Yes<" in text
        assert text.count('value="email"') == 1
        assert 'value="email" checked' not in text
        request_id = re.search(r'name="request_id" value="([^"]+)"', text)
        assert request_id is not None
        # nothing ticked: the required scope is granted all the same
        answer = {"request_id": request_id.group(1), "decision": "approve"}
        back = await http.post(
            server.url_for(server.consent_path), data=answer, allow_redirects=False
        )
        assert back.status == 302
        assert server.granted[("a", server.default_user)] == {"profile"}
        # remembered now, unless the request asks for the page again
        params = _authorize_params(scope="profile")
        again = await http.get(server.authorize_url, params=params, allow_redirects=False)
        assert again.status == 302
        params["prompt"] = "consent"
        forced = await http.get(server.authorize_url, params=params, allow_redirects=False)
        assert forced.status == 200


class DescribedServer(AuthorizationServer):
    spec = SPEC
    redirect_error_descriptions: ClassVar[Mapping[str, str]] = {"access_denied": "said no"}


async def test_added_clients_and_described_redirect_errors() -> None:
    async with (
        DescribedServer(clients=CLIENTS[:1], consent="deny") as server,
        PlainServer(clients=CLIENTS, consent="deny") as plain,
        aiohttp.ClientSession() as http,
    ):
        params = _authorize_params(client_id="b", state="st")
        unknown = await http.get(server.authorize_url, params=params, allow_redirects=False)
        assert unknown.status == 400
        server.add_client(CLIENTS[1])
        server.add_user("second")
        assert server.users == {"second": "second"}
        denied = await http.get(server.authorize_url, params=params, allow_redirects=False)
        query = parse_qs(urlsplit(denied.headers["Location"]).query)
        assert query == {
            "error": ["access_denied"],
            "error_description": ["said no"],
            "state": ["st"],
        }
        bare = await http.get(plain.authorize_url, params=params, allow_redirects=False)
        assert "error_description" not in parse_qs(urlsplit(bare.headers["Location"]).query)

"""What the generic server reads from a spec's revocation and nested-scope fields."""

from __future__ import annotations

import base64

import aiohttp
import attrs
import pytest

from keyloom_core import ProviderSpec
from keyloom_core.testing.authserver import AuthorizationServer, Client
from keyloom_core.testing.emulator import TokenFailure

pytestmark = pytest.mark.anyio

APP = Client(client_id="app/1", client_secret="s3cret", redirect_uris=["http://127.0.0.1/cb"])
OTHER = Client(client_id="other", client_secret="other-secret", redirect_uris=["http://127.0.0.1/"])

#: A GitHub-like revocation: DELETE, a JSON body, the app's basic credentials in the path.
APP_STYLE = ProviderSpec(
    id="appstyle",
    name="App Style",
    authorize_url="https://appstyle.example/oauth/authorize",
    token_url="https://appstyle.example/oauth/token",
    profile_url="https://api.appstyle.example/user",
    revoke_url="https://api.appstyle.example/apps/{client_id}/token",
    known_scopes={"user", "read:user", "user:email", "repo"},
    implied_scopes={"user": "read:user user:email"},
    revoke_method="DELETE",
    revoke_encoding="json",
    revoke_token_param="access_token",
    revoke_auth_method="client_secret_basic",
)


class AppStyleServer(AuthorizationServer):
    """A provider's own revocation API, as the spec declares it."""

    spec = APP_STYLE
    revocation_api = True


def _basic(client: Client) -> dict[str, str]:
    secret = base64.b64encode(f"{client.client_id}:{client.client_secret}".encode()).decode()
    return {"Authorization": f"Basic {secret}"}


def test_nested_scopes_keep_the_wider_one_and_only_known_ones() -> None:
    assert AppStyleServer.narrowest_scopes(["read:user", "user", "bogus", "repo", "user"]) == (
        "user",
        "repo",
    )
    open_spec = attrs.evolve(APP_STYLE, known_scopes=frozenset(), implied_scopes={})
    server = type("OpenServer", (AuthorizationServer,), {"spec": open_spec})
    assert server.narrowest_scopes(["b", "a", "b"]) == ("b", "a")  # no rules: each once


async def test_the_revocation_route_takes_the_specs_method_body_and_client() -> None:
    async with AppStyleServer(clients=[APP, OTHER]) as server, aiohttp.ClientSession() as http:
        url = server.revocation_url()
        assert url == server.url_for("/apps/app%2F1/token")
        assert server.revocation_url("other") == server.url_for("/apps/other/token")
        token = server.book.issue_tokens(client_id=APP.client_id, user_id="u", scopes=("user",))
        body = {"access_token": token.access_token}
        async with http.post(url, json=body, headers=_basic(APP)) as response:
            assert response.status == 405  # spec.revoke_method is DELETE
        async with http.delete(url, json=body, headers=_basic(OTHER)) as response:
            assert response.status == 401  # the path names another client
        async with http.delete(url, json=body) as response:
            assert response.status == 401  # no credentials
        async with http.delete(url, data=b"{not json", headers=_basic(APP)) as response:
            assert response.status == 404  # no token read, never a 500
        bad_json = {**_basic(APP), "Content-Type": "application/json"}
        async with http.delete(url, data=b"{not json", headers=bad_json) as response:
            assert response.status == 404
        async with http.delete(url, json=["a", "list"], headers=_basic(APP)) as response:
            assert response.status == 404
        async with http.delete(url, json=body, headers=_basic(APP)) as response:
            assert response.status == 204
        assert server.book.lookup_access(token.access_token) is TokenFailure.REVOKED


async def test_a_form_revocation_with_the_secret_in_the_body() -> None:
    spec = attrs.evolve(
        APP_STYLE,
        revoke_url="https://appstyle.example/oauth/revoke",
        revoke_method="POST",
        revoke_encoding="form",
        revoke_token_param="token",
        revoke_auth_method="client_secret_post",
    )
    server = type("FormServer", (AppStyleServer,), {"spec": spec})(clients=[APP])
    async with server, aiohttp.ClientSession() as http:
        token = server.book.issue_tokens(client_id=APP.client_id, user_id="u", scopes=("user",))
        form = {"client_id": APP.client_id, "client_secret": "wrong", "token": token.access_token}
        async with http.post(server.revocation_url(), data=form) as response:
            assert response.status == 401
        async with http.post(server.revocation_url(), json=form) as response:
            assert response.status == 401  # a form, not JSON
        form["client_secret"] = APP.client_secret
        async with http.post(server.revocation_url(), data=form) as response:
            assert response.status == 204

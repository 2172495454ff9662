"""Declared rules for servers that bend RFC 6749: looser redirect URIs, form answers, API revocation."""

from __future__ import annotations

import argparse
import base64
import inspect
import logging
from typing import ClassVar
from urllib.parse import parse_qs, urlsplit

import aiohttp
import attrs
import pytest

from keyloom_core import ProviderSpec
from keyloom_core.testing.authserver import (
    AVATAR_PATH,
    AuthorizationServer,
    Client,
    RedirectUriPolicy,
    client_factory,
    redirect_uri_matches,
)

pytestmark = pytest.mark.anyio

SPEC = ProviderSpec(
    id="loose",
    name="Loose",
    authorize_url="https://loose.example/oauth/authorize",
    token_url="https://loose.example/oauth/token",
    profile_url="https://api.loose.example/user",
    revoke_url="https://api.loose.example/apps/{client_id}/token",
    known_scopes={"profile"},
    default_scopes={"profile"},
    revoke_method="DELETE",
    revoke_encoding="json",
    revoke_token_param="access_token",
    revoke_auth_method="client_secret_basic",
)
RULES = {"subpaths": True, "subdomains": True, "any_loopback_port": True}


@attrs.frozen(kw_only=True)
class LooseClient(Client):
    """A client whose redirect URIs match loosely, with an option of its own."""

    redirect_uris: tuple[str, ...] = attrs.field(alias="callbacks", converter=tuple)
    long_lived: bool = False
    redirect_uri_rules: ClassVar = RULES


class LooseServer(AuthorizationServer):
    """Every rule of this module switched on."""

    spec = SPEC
    make_client = client_factory(LooseClient)
    client_flags: ClassVar = {"long_lived": "tokens that live long"}
    form_encoded_answers = True
    redirect_uri_mismatch_error = "redirect_uri_mismatch"
    revocation_api = True
    require_pkce = False


APP = LooseClient(client_id="app", client_secret="s3cret", callbacks=["http://127.0.0.1/cb"])


@pytest.mark.parametrize(
    ("candidate", "accepted"),
    [
        ("http://example.com/path", True),
        ("http://example.com/path/", True),
        ("http://example.com/path/below?x=1", True),
        ("http://sub.example.com/path", True),
        ("http://example.com/pathology", False),
        ("http://badexample.com/path", False),
        ("http://example.com:8080/path", False),
        ("http://example.com:99999/path", False),  # an invalid port: refused, never raised
        ("https://example.com/path", False),
        ("http://example.com/path#frag", False),
    ],
)
def test_loose_rules_accept_subpaths_and_subdomains(candidate: str, accepted: bool) -> None:
    assert redirect_uri_matches("http://example.com/path", candidate, **RULES) is accepted


def test_each_switch_loosens_only_its_part() -> None:
    registered = "http://127.0.0.1/cb"
    assert redirect_uri_matches(registered, "http://127.0.0.1:8123/cb", any_loopback_port=True)
    assert not redirect_uri_matches(
        registered, "http://127.0.0.1:8123/cb/x", any_loopback_port=True
    )
    assert not redirect_uri_matches(registered, "http://127.0.0.1:8123/cb")
    assert not redirect_uri_matches("http://example.com/cb", "http://example.com:1/cb", **RULES)
    assert redirect_uri_matches("http://a.test/cb", "http://x.a.test/cb", subdomains=True)
    assert not redirect_uri_matches("http://a.test/cb", "http://x.a.test/cb/y", subdomains=True)
    assert not redirect_uri_matches("http://a.test/cb", "http://a.test/cb?x=1", subdomains=True)
    assert redirect_uri_matches("http://a.test/cb", "http://a.test/cb/y", subpaths=True)
    assert not redirect_uri_matches("http://a.test/cb", "http://x.a.test/cb", subpaths=True)


def test_a_client_class_declares_its_rules() -> None:
    assert APP.accepts_redirect_uri("http://127.0.0.1:5000/cb/deeper")
    assert not APP.accepts_redirect_uri("http://127.0.0.1:5000/other")
    plain = Client(client_id="c", client_secret="s", redirect_uris=["http://127.0.0.1/cb"])
    assert not plain.accepts_redirect_uri("http://127.0.0.1:5000/cb/deeper")


def test_client_factory_builds_the_client_type_with_its_fields_as_keywords() -> None:
    app = LooseServer.make_client("id", "secret", ["http://127.0.0.1/"], long_lived=True)
    assert isinstance(app, LooseClient)
    assert (app.client_id, app.redirect_uris, app.long_lived) == (
        "id",
        ("http://127.0.0.1/",),
        True,
    )
    parameters = inspect.signature(LooseServer.make_client).parameters
    assert list(parameters) == ["client_id", "client_secret", "redirect_uris", "name", "long_lived"]
    server = LooseServer.for_client("id", "secret", ["http://127.0.0.1/"], (), long_lived=True)
    assert server.default_app.long_lived
    with pytest.raises(TypeError):
        LooseServer.make_client("id", "secret", ["http://127.0.0.1/"], nope=True)


def test_client_flags_are_switches_of_the_command_line() -> None:
    parser = argparse.ArgumentParser()
    LooseServer.add_arguments(parser)
    assert LooseServer.client_options(parser.parse_args(["--long-lived"])) == {"long_lived": True}
    assert LooseServer.client_options(parser.parse_args([])) == {"long_lived": False}
    assert AuthorizationServer.client_options(parser.parse_args([])) == {}


def test_the_user_label_is_the_name_else_the_user_key() -> None:
    @attrs.frozen
    class Member:
        login: str
        name: str | None = None

    server = type("Members", (LooseServer,), {"user_key_attribute": "login"})
    assert server.user_label(Member("ada", "Ada L.")) == "Ada L."
    assert server.user_label(Member("bob")) == "bob"
    assert AuthorizationServer.user_label("plain-user") == "plain-user"


async def test_a_mismatched_redirect_uri_goes_to_the_registered_one() -> None:
    params = {"client_id": "app", "redirect_uri": "http://elsewhere.test/cb", "state": "st"}
    async with (
        LooseServer(clients=[APP], consent="approve") as server,
        aiohttp.ClientSession() as http,
        http.get(server.authorize_url, params=params, allow_redirects=False) as response,
    ):
        assert response.status == 302
        location = response.headers["Location"]
        assert location.startswith("http://127.0.0.1/cb?")
        assert parse_qs(urlsplit(location).query) == {
            "error": ["redirect_uri_mismatch"],
            "state": ["st"],
        }
        unknown = {**params, "client_id": "nobody"}
        async with http.get(server.authorize_url, params=unknown) as page:
            assert page.status == 400  # an unknown client still gets the error page


async def test_token_answers_are_a_form_unless_json_is_accepted() -> None:
    form = {"client_id": "app", "client_secret": "s3cret", "code": "x", "grant_type": "x"}
    async with LooseServer(clients=[APP]) as server, aiohttp.ClientSession() as http:
        async with http.post(server.token_url, data=form) as response:
            assert response.content_type == "application/x-www-form-urlencoded"
            assert parse_qs(await response.text())["error"] == ["unsupported_grant_type"]
        headers = {"Accept": "application/json"}
        async with http.post(server.token_url, data=form, headers=headers) as response:
            assert response.content_type == "application/json"
            assert (await response.json())["error"] == "unsupported_grant_type"


async def test_revocation_by_the_providers_own_api() -> None:
    secret = base64.b64encode(b"app:s3cret").decode()
    auth = {"Authorization": f"Basic {secret}"}
    async with LooseServer(clients=[APP]) as server, aiohttp.ClientSession() as http:
        url = server.revocation_url()
        pair = server.book.issue_tokens(client_id="app", user_id="u", scopes=())
        body = {"access_token": pair.access_token}
        async with http.delete(url, json=body) as response:
            assert response.status == 401
            assert (await response.json())["error"] == "invalid_client"
        async with http.delete(url, json={"access_token": "nope"}, headers=auth) as response:
            assert response.status == 404
        refresh = {"access_token": pair.refresh_token}
        async with http.delete(url, json=refresh, headers=auth) as response:
            assert response.status == 404  # only access tokens
        async with http.delete(url, json=body, headers=auth) as response:
            assert response.status == 204
        async with http.delete(url, json=body, headers=auth) as response:
            assert response.status == 404  # revoked already


async def test_the_avatar_url_is_the_kits_for_everyone() -> None:
    async with LooseServer(clients=[APP]) as server, aiohttp.ClientSession() as http:
        assert server.avatar_url(object()) == server.url_for(AVATAR_PATH)
        async with http.get(server.avatar_url(None)) as response:
            assert response.content_type == "image/svg+xml"


WEB = RedirectUriPolicy(loopback="forbidden", static=True, max_length=64, kind="web apps")
DESKTOP = RedirectUriPolicy(schemes=("http", "https"), loopback="required", port_required=True)


@pytest.mark.parametrize(
    ("policy", "uri", "problem"),
    [
        (WEB, "https://app.example/cb", None),
        (WEB, "https://app.example:8443/cb", None),
        (WEB, "https://app.example/" + "a" * 64, "must be shorter than 64 characters"),
        (WEB, "https://app.example/cb?x=1", "must be static: no query string or fragment"),
        (WEB, "https://app.example/cb#x", "must be static: no query string or fragment"),
        (WEB, "app.example/cb", "must be an absolute URL"),
        (WEB, "https://app.example/c b", "must be an absolute URL"),
        (WEB, "http://app.example/cb", "must use https for web apps"),
        (
            WEB,
            "https://LOCALHOST:3000/cb",
            "must not be on 127.0.0.1 or [::1] or localhost for web apps",
        ),
        (WEB, "https://app.example:*/cb", "has an invalid port"),
        (WEB, "https://app.example:0/cb", "has an invalid port"),
        (DESKTOP, "http://127.0.0.1:*/cb", None),
        (DESKTOP, "https://[::1]:3000/cb?x=1", None),  # not static
        (DESKTOP, "ftp://localhost:21/cb", "must use http or https"),
        (DESKTOP, "http://app.example:3000/cb", "must be on 127.0.0.1 or [::1] or localhost"),
        (DESKTOP, "http://localhost/cb", "must have a port (or * for any port)"),
        (DESKTOP, "http://localhost:70000/cb", "has an invalid port"),
    ],
)
def test_a_redirect_uri_policy_names_the_problem(
    policy: RedirectUriPolicy, uri: str, problem: str | None
) -> None:
    assert policy.problem(uri) == problem


def test_an_open_policy_takes_any_https_uri() -> None:
    open_policy = RedirectUriPolicy()
    assert open_policy.problem("https://127.0.0.1/cb?x=1") is None
    assert open_policy.problem("https://localhost:*/cb") is None
    assert open_policy.problem("https://app.example:*/cb") == "has an invalid port"


class DenyingServer(AuthorizationServer):
    """A grant of no scope is a denial."""

    spec = SPEC
    no_scope_denial = "Nothing was granted."
    require_pkce = False


async def test_a_grant_of_no_scope_is_a_denial_when_declared(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="keyloom_core.testing.authserver")
    client = Client(client_id="c", client_secret="s", redirect_uris=["http://127.0.0.1/cb"])
    params = {"client_id": "c", "redirect_uri": "http://127.0.0.1/cb", "response_type": "code"}
    async with aiohttp.ClientSession() as http:
        for server_type, scope, expected in (
            (
                DenyingServer,
                "",
                {"error": ["access_denied"], "error_description": ["Nothing was granted."]},
            ),
            (DenyingServer, "profile", None),
            (LooseServer, "", None),
        ):
            query = {**params, "scope": scope}
            async with (
                server_type(clients=[client], consent="approve") as server,
                http.get(server.authorize_url, params=query, allow_redirects=False) as response,
            ):
                answer = parse_qs(urlsplit(response.headers["Location"]).query)
            if expected is None:
                assert "code" in answer, server_type
            else:
                assert answer == expected
    assert "authorization granted to client c" in caplog.text


async def test_describe_lists_the_routes_and_the_redirect_uris() -> None:
    async with LooseServer(clients=[APP]) as server:
        assert server.describe() == [
            f"  authorize:  {server.authorize_url}",
            f"  token:      {server.token_url}",
            f"  revoke:     {server.revocation_url()}",
            f"  user info:  {server.profile_url}",
            "  redirect URI:  http://127.0.0.1/cb",
        ]

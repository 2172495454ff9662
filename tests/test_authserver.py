"""The generic fake authorization server (keyloom_core.testing.authserver)."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from typing import ClassVar
from urllib.parse import parse_qs, urlsplit

import aiohttp
import attrs
import pytest

from keyloom_core import ProviderSpec, configure_provider, hookimpl
from keyloom_core.pkce import new_code_verifier, s256_challenge
from keyloom_core.testing.authserver import (
    AVATAR_PATH,
    CONSENT_PATH,
    AuthorizationServer,
    Client,
    DeprecatedAlias,
    PendingAuthorization,
    deprecated_module_names,
)
from keyloom_core.testing.conformance import CHECKS, ConformanceTarget, run_conformance
from keyloom_core.testing.emulator import AuthorizationCode, ManualClock, SlidingWindowLimiter

pytestmark = pytest.mark.anyio

REDIRECT = "https://app.example.test/callback/"
C = Client(client_id="c", client_secret="s", redirect_uris=[REDIRECT])

PLAIN = ProviderSpec(
    id="plain",
    name="Plain",
    authorize_url="https://plain.example/oauth/authorize",
    token_url="https://plain.example/oauth/token",
    profile_url="https://plain.example/api/userinfo",
    revoke_url="https://plain.example/oauth/revoke",
    known_scopes={"profile", "email"},
    default_scopes={"profile"},
    emulator=f"{__name__}:PlainEmulator",
)

#: Every dialect field the server reads, away from its RFC default.
DIALECT = ProviderSpec(
    id="dialect",
    name="Dialect",
    authorize_url="https://dialect.example/v2/auth/",
    token_url="https://dialect.example/v2/token/",
    profile_url="https://api.dialect.example/v2/me/",
    revoke_url="https://dialect.example/v2/revoke/",
    known_scopes={"profile", "email", "video.list"},
    default_scopes={"profile", "email"},
    scope_separator=",",
    client_id_param="client_key",
    pkce_encoding="hex",
    token_auth_method="client_secret_basic",
    account_id_field="open_id",
    emulator=f"{__name__}:DialectEmulator",
)


class PlainEmulator(AuthorizationServer):
    spec = PLAIN


class DialectEmulator(AuthorizationServer):
    spec = DIALECT
    error_status = 200  # errors come as 200 with an error body
    user: ClassVar[dict[str, str]] = {"sub": "u-7", "name": "Dee", "email": "dee@dialect.test"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Plugin:
    def __init__(self, spec: ProviderSpec) -> None:
        self.spec = spec

    @hookimpl
    def register_providers(self, register: Callable[..., None]) -> None:
        register(self.spec, lambda **options: configure_provider(self.spec, **options))


@pytest.mark.parametrize("spec", [PLAIN, DIALECT], ids=["plain", "dialect"])
def test_conformance_suite_passes_against_the_generic_server(spec: ProviderSpec) -> None:
    """The core, configured from *spec*, logs in through a server reading the same spec."""
    target = ConformanceTarget(provider_id=spec.id, plugin=Plugin(spec))
    report = run_conformance(target, [name for name in CHECKS if name != "discoverable"])
    assert report.ok, str(report)


# -- the dialect on the wire -----------------------------------------------------------------


async def _authorize(
    http: aiohttp.ClientSession, server: AuthorizationServer, **params: str
) -> aiohttp.ClientResponse:
    url = server.url_for(urlsplit(server.spec.authorize_url).path)
    return await http.get(url, params=params, allow_redirects=False)


def _back(response: aiohttp.ClientResponse) -> dict[str, str]:
    assert response.status == 302
    location = response.headers["Location"]
    assert location.startswith(REDIRECT + "?")
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


async def test_dialect_parameters_pkce_basic_auth_and_error_status() -> None:
    clients = [Client(client_id="key-1", client_secret="secret-1", redirect_uris=[REDIRECT])]
    verifier = new_code_verifier()
    async with (
        DialectEmulator(clients=clients, consent="approve") as server,
        aiohttp.ClientSession() as http,
    ):
        common = {"redirect_uri": REDIRECT, "response_type": "code", "state": "st"}
        # the client id travels as client_key; client_id is unknown here
        wrong_param = await _authorize(http, server, client_id="key-1", **common)
        assert wrong_param.status == 400
        assert "Invalid client_key" in await wrong_param.text()
        back = _back(
            await _authorize(
                http,
                server,
                client_key="key-1",
                scope="profile,email",
                code_challenge=s256_challenge(verifier, "hex"),
                code_challenge_method="S256",
                **common,
            )
        )
        assert back["state"] == "st"
        token_url = server.url_for("/v2/token/")
        form = {"grant_type": "authorization_code", "code": back["code"]}
        form |= {"redirect_uri": REDIRECT, "code_verifier": verifier}
        basic = "Basic " + base64.b64encode(b"key-1:secret-1").decode()
        # the secret in the body is not how this provider authenticates clients
        in_body = await http.post(token_url, data=form | {"client_key": "key-1"})
        assert in_body.status == 200  # the subclass's error status
        assert (await in_body.json())["error"] == "invalid_client"
        answer = await http.post(token_url, data=form, headers={"Authorization": basic})
        tokens = await answer.json()
        assert answer.status == 200
        assert tokens["scope"] in {"profile,email", "email,profile"}
        assert tokens["open_id"] == "u-7"
        # a replayed code: the error status is the subclass's 200
        replay = await http.post(token_url, data=form, headers={"Authorization": basic})
        assert replay.status == 200
        assert (await replay.json())["error"] == "invalid_grant"
        me = await http.get(
            server.url_for("/v2/me/"),
            headers={"Authorization": f"Bearer {tokens['access_token']}"},
        )
        assert await me.json() == {
            "sub": "u-7",
            "name": "Dee",
            "picture": server.url_for(AVATAR_PATH),
            "email": "dee@dialect.test",
            "email_verified": True,
        }


async def test_a_base64url_challenge_fails_where_the_spec_says_hex() -> None:
    clients = [Client(client_id="key-1", client_secret="secret-1", redirect_uris=[REDIRECT])]
    verifier = new_code_verifier()
    async with (
        DialectEmulator(clients=clients, consent="approve") as server,
        aiohttp.ClientSession() as http,
    ):
        back = _back(
            await _authorize(
                http,
                server,
                client_key="key-1",
                redirect_uri=REDIRECT,
                response_type="code",
                code_challenge=s256_challenge(verifier),
                code_challenge_method="S256",
            )
        )
        basic = "Basic " + base64.b64encode(b"key-1:secret-1").decode()
        form = {"grant_type": "authorization_code", "code": back["code"]}
        form |= {"redirect_uri": REDIRECT, "code_verifier": verifier}
        answer = await http.post(
            server.url_for("/v2/token/"), data=form, headers={"Authorization": basic}
        )
        assert (await answer.json())["error"] == "invalid_grant"


# -- consent, refusals -----------------------------------------------------------------------


async def test_consent_page_grants_the_scopes_left_checked() -> None:
    async with PlainEmulator(clients=[C]) as server, aiohttp.ClientSession() as http:
        params = {"client_id": "c", "redirect_uri": REDIRECT, "response_type": "code"}
        params |= {"scope": "profile email", "state": "x", "code_challenge_method": "S256"}
        params["code_challenge"] = s256_challenge(new_code_verifier())

        async def consent_form() -> dict[str, str]:
            page = await _authorize(http, server, **params)
            text = await page.text()
            assert page.status == 200
            assert f'action="{CONSENT_PATH}"' in text
            assert 'value="profile"' in text
            assert 'value="email"' in text
            found = re.search(r'name="request_id" value="([^"]+)"', text)
            assert found is not None
            return {"request_id": found.group(1)}

        form = await consent_form()
        approve = await http.post(
            server.url_for(CONSENT_PATH),
            data=[*form.items(), ("scope", "profile"), ("decision", "approve")],
            allow_redirects=False,
        )
        code = server.book.inspect_code(
            _back(approve)["code"], client_id="c", redirect_uri=REDIRECT
        )
        assert isinstance(code, AuthorizationCode)
        assert code.scopes == ("profile",)
        # a request is answered once
        again = await http.post(
            server.url_for(CONSENT_PATH), data=[*form.items(), ("decision", "approve")]
        )
        assert again.status == 400
        deny = await http.post(
            server.url_for(CONSENT_PATH),
            data=[*(await consent_form()).items(), ("decision", "deny")],
            allow_redirects=False,
        )
        assert _back(deny) == {"error": "access_denied", "state": "x"}


@pytest.mark.parametrize(
    ("params", "status", "error"),
    [
        ({"client_id": "other"}, 400, "client_id"),
        ({"redirect_uri": "https://evil.example/cb"}, 400, "redirect_uri"),
    ],
)
async def test_unknown_client_or_redirect_gets_a_page_never_a_redirect(
    params: dict[str, str], status: int, error: str
) -> None:
    async with (
        PlainEmulator(clients=[C], consent="approve") as server,
        aiohttp.ClientSession() as http,
    ):
        query = {"client_id": "c", "redirect_uri": REDIRECT, "response_type": "code"} | params
        answer = await _authorize(http, server, **query)
        assert answer.status == status
        assert "Location" not in answer.headers
        assert f'data-error-param="{error}"' in await answer.text()


async def test_missing_pkce_is_an_invalid_request_redirect() -> None:
    async with (
        PlainEmulator(clients=[C], consent="approve") as server,
        aiohttp.ClientSession() as http,
    ):
        query = {"client_id": "c", "redirect_uri": REDIRECT, "response_type": "code"}
        assert _back(await _authorize(http, server, **query))["error"] == "invalid_request"


async def test_bad_bearer_and_unsupported_grant_are_typed_errors() -> None:
    async with (
        PlainEmulator(clients=[C]) as server,
        aiohttp.ClientSession() as http,
    ):
        me = await http.get(server.url_for("/api/userinfo"), headers={"Authorization": "x"})
        assert me.status == 401
        assert (await me.json())["error"] == "invalid_token"
        form = {"grant_type": "password", "client_id": "c", "client_secret": "s"}
        answer = await http.post(server.url_for("/oauth/token"), data=form)
        assert answer.status == 400
        assert (await answer.json())["error"] == "unsupported_grant_type"


# -- options kept out of the main path ------------------------------------------------------


async def test_rate_limit_answers_429_with_retry_after() -> None:
    clock = ManualClock()
    limiter = SlidingWindowLimiter(limit=2, window=60.0, clock=clock)
    async with (
        PlainEmulator(clients=[C], rate_limit=limiter) as server,
        aiohttp.ClientSession() as http,
    ):
        url = server.url_for("/api/userinfo")
        statuses = [(await http.get(url)).status for _ in range(2)]
        limited = await http.get(url)
        assert statuses == [401, 401]
        assert limited.status == 429
        assert (await limited.json())["error"] == "rate_limited"
        assert int(limited.headers["Retry-After"]) >= 1
        clock.advance(61)
        assert (await http.get(url)).status == 401


async def test_faults_apply_to_the_spec_routes_only() -> None:
    async with (
        PlainEmulator(clients=[C]) as server,
        aiohttp.ClientSession() as http,
    ):
        assert server.faults is not None
        assert server.is_api_path("/oauth/token/")
        assert not server.is_api_path("/oauth/authorize")
        server.faults.queue("500")
        assert (await http.post(server.url_for("/oauth/revoke"))).status == 500
        assert (await http.post(server.url_for("/oauth/revoke"))).status == 401


def test_default_client_and_for_client() -> None:
    [client] = PlainEmulator().clients.values()
    assert client == Client(
        client_id="keyloom-plain-emulator",
        client_secret="keyloom-plain-emulator-secret",
        redirect_uris=["http://127.0.0.1:8765/callback/"],
    )
    assert "keyloom-plain-emulator-secret" not in repr(client)
    one = PlainEmulator.for_client("c", "s", [REDIRECT], ["profile"], consent="deny")
    assert list(one.clients.values()) == [C]
    assert one.consent == "deny"


def test_main_refuses_a_non_loopback_host(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        DialectEmulator.main(["--host", "192.0.2.1"])
    assert exit_info.value.code == 2
    assert "loopback" in capsys.readouterr().err


def test_main_names_the_client_id_option_after_the_spec(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        DialectEmulator.main(["--help"])
    out = capsys.readouterr().out
    assert "--client-key" in out
    assert "--redirect-uri" in out


def test_names_the_github_emulator_had_warn_and_name_their_replacement() -> None:
    from keyloom_github import SCOPES
    from keyloom_github import emulator as github_emulator

    with pytest.warns(DeprecationWarning, match=r"TOKEN_PATH is deprecated; use SPEC\.token_url"):
        assert github_emulator.TOKEN_PATH == "/login/oauth/access_token"
    with pytest.warns(DeprecationWarning, match=r"use keyloom_github\.SCOPES"):
        assert github_emulator.KNOWN_SCOPES is SCOPES
    with pytest.warns(DeprecationWarning, match=r"use GitHubEmulator\.main"):
        assert github_emulator.main == github_emulator.GitHubEmulator.main
    with pytest.raises(AttributeError, match="no attribute 'NOPE'"):
        _ = github_emulator.NOPE


def test_a_subclass_adds_its_own_command_line_options() -> None:
    import argparse

    from keyloom_github.emulator import GitHubEmulator

    parser = argparse.ArgumentParser()
    parser.add_argument("--redirect-uri", action="append", default=[])
    GitHubEmulator.add_arguments(parser)
    args = parser.parse_args(["--expiring-tokens", "--callback-url", "http://127.0.0.1/cb"])
    assert args.redirect_uri == ["http://127.0.0.1/cb"]
    assert GitHubEmulator.client_options(args) == {"expiring_tokens": True}
    app = GitHubEmulator.make_client(
        "id", "secret", args.redirect_uri, **GitHubEmulator.client_options(args)
    )
    assert app.expiring_tokens


# -- options for servers like GitHub's, and the deprecated names ----------------------------


class AppStyleEmulator(AuthorizationServer):
    """Every option a GitHub-style server sets, away from its default."""

    spec = attrs.evolve(PLAIN, revoke_url="https://plain.example/apps/{client_id}/token")
    api_paths = frozenset({"/api/extra"})
    default_redirect_uris = ("http://127.0.0.1/a/", "http://localhost/b/")
    require_response_type = False
    partial_consent = False
    refresh_ttl = 1234.0
    token_prefixes = ("at_", "rt_")
    revoke_method = "DELETE"
    old_name = DeprecatedAlias("book.refresh_ttl")


async def test_the_options_of_an_app_style_server() -> None:
    server = AppStyleEmulator(consent="form")
    assert server.default_app.redirect_uris == ("http://127.0.0.1/a/", "http://localhost/b/")
    assert (server.book.refresh_ttl, server.book.access_prefix) == (1234.0, "at_")
    assert server.is_api_path("/apps/any-client/token/")
    assert server.is_api_path("/api/extra")
    assert not server.is_api_path("/apps/a/b/token")
    pending = PendingAuthorization(
        request_id="r",
        client_id="c",
        redirect_uri=REDIRECT,
        scopes=("a", "b"),
        params={},
        expires_at=0,
    )
    assert server.consented_scopes(pending, {"scope": ["a"]}) == ("a", "b")  # all or nothing
    assert (
        server.check_authorization({"code_challenge": "x", "code_challenge_method": "S256"}) is None
    )
    assert (
        server.check_authorization(
            {"response_type": "token", "code_challenge": "x", "code_challenge_method": "S256"}
        )
        == "invalid_request"
    )
    async with server, aiohttp.ClientSession() as http:
        path = "/apps/" + server.default_client_id() + "/token"
        async with http.post(server.url_for(path)) as response:
            assert response.status == 405  # revocation is a DELETE here
        assert server.profile_url == server.url_for("/api/userinfo")


def test_a_deprecated_alias_and_keyword_warn_and_name_the_replacement() -> None:
    with pytest.warns(
        DeprecationWarning, match=r"AppStyleEmulator\.old_name is deprecated; use book\.refresh_ttl"
    ):
        server = AppStyleEmulator(old_name=99)
    assert server.book.refresh_ttl == 99
    with pytest.warns(DeprecationWarning, match=r"AppStyleEmulator\.old_name is deprecated"):
        assert server.old_name == 99
    assert isinstance(AppStyleEmulator.old_name, DeprecatedAlias)


def test_deprecated_module_names() -> None:
    getattr_ = deprecated_module_names("pkg.mod", {"OLD": ("pkg.NEW", 42)})
    with pytest.warns(DeprecationWarning, match=r"^pkg\.mod\.OLD is deprecated; use pkg\.NEW$"):
        assert getattr_("OLD") == 42
    with pytest.raises(AttributeError, match=r"module 'pkg\.mod' has no attribute 'NOPE'"):
        getattr_("NOPE")


def test_basic_credentials_are_form_urldecoded() -> None:
    """RFC 6749 §2.3.1: the id and secret are form-urlencoded before the base64, as the
    core's client sends them (``oauth2.client_authentication``)."""
    from urllib.parse import quote_plus

    from aiohttp.test_utils import make_mocked_request

    secret = "s3cr+t/x=:y é"
    encoded = f"{quote_plus('key 1')}:{quote_plus(secret)}".encode()
    header = "Basic " + base64.b64encode(encoded).decode()
    request = make_mocked_request("POST", "/token", headers={"Authorization": header})
    assert AuthorizationServer.basic_credentials(request) == ("key 1", secret)

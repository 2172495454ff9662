"""Dialect a provider declares in its spec, honoured by the core without a hook.

Nested scopes (``implied_scopes``), the revocation request (``revoke_method``,
``revoke_encoding``, ``revoke_token_param``, ``revoke_auth_method``, ``{client_id}`` in the
URL), per-provider API headers (``api_headers``), and the helper plugins use to keep old
module names importable (``deprecated_module_names``).
"""

from __future__ import annotations

import base64
import json
import sys
import types
import warnings
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl

import attrs
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from keyloom_core import (
    ConfigurationError,
    HttpClient,
    ProviderSpec,
    RevokeError,
    TokenSet,
    configure_provider,
    define_keyloom,
    deprecated_module_names,
    oauth2,
)

pytestmark = pytest.mark.anyio

SPEC = ProviderSpec(
    id="nested",
    name="Nested",
    authorize_url="https://provider.example/authorize",
    token_url="https://provider.example/token",
    profile_url="https://api.provider.example/me",
    revoke_url="https://api.provider.example/revoke",
    known_scopes="files files:read files:write mail mail:read",
    implied_scopes={"files": "files:read files:write", "mail": ["mail:read", "mail"]},
    default_scopes="files:read",
)
# The revocation dialect of a provider that deviates in every declared way.
DELETING = attrs.evolve(
    SPEC,
    revoke_url="https://api.provider.example/apps/{client_id}/grant",
    revoke_method="DELETE",
    revoke_encoding="json",
    revoke_token_param="access_token",
    revoke_auth_method="client_secret_basic",
    api_headers={"Accept": "application/vnd.nested+json", "Nested-Version": "2024-01-01"},
)
TOKENS = TokenSet(access_token="at-123", refresh_token="rt-456")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def configure(spec: ProviderSpec, **options: Any) -> Any:
    options.setdefault("client_id", "app/id")
    options.setdefault("client_secret", "s3cret")
    return configure_provider(spec, **options)


def start(spec: ProviderSpec, scopes: str) -> None:
    provider = configure(spec, scopes=scopes)
    define_keyloom(
        providers=[provider],
        secret="spec-dialect-test-secret-0123456789abcdef",
        base_url="https://app.example.test",
        autoload=False,
    )


# -- implied scopes -------------------------------------------------------------------------


def test_a_scope_and_one_it_includes_are_refused_together() -> None:
    start(SPEC, "files mail:read")  # unrelated scopes are fine
    start(SPEC, "files:read files:write")
    with pytest.raises(ConfigurationError) as caught:
        start(SPEC, "files files:write files:read")
    assert str(caught.value).endswith(
        "Nested scope 'files' includes files:read, files:write: request 'files' alone"
    )
    assert caught.value.provider_id == "nested"
    with pytest.raises(ConfigurationError, match="'mail' includes mail:read:"):
        start(SPEC, "mail mail:read")


def test_implied_scopes_are_parsed_and_a_scope_never_includes_itself() -> None:
    assert SPEC.implied_scopes == {
        "files": frozenset({"files:read", "files:write"}),
        "mail": frozenset({"mail:read"}),
    }
    start(SPEC, "mail")  # "mail" lists itself; that is no conflict
    assert hash(SPEC) == hash(attrs.evolve(SPEC))  # the spec stays hashable
    assert ProviderSpec(id="x", name="X", authorize_url="", token_url="").implied_scopes == {}


def test_check_implied_scopes_is_the_policy_s_check() -> None:
    oauth2.check_implied_scopes(configure(SPEC, scopes="files mail"))
    with pytest.raises(ConfigurationError, match="request 'mail' alone"):
        oauth2.check_implied_scopes(configure(SPEC, scopes="mail:read mail"))


# -- the revocation request -----------------------------------------------------------------


class Recorder:
    """A provider API on 127.0.0.1 that records each request and answers as scripted."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.status = 200
        self.body: object = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        self.requests.append(
            {
                "method": request.method,
                "path": request.raw_path,
                "headers": dict(request.headers),
                "content_type": request.content_type,
                "body": raw.decode(),
            }
        )
        if self.body is None:
            return web.Response(status=self.status)
        return web.json_response(self.body, status=self.status)


@pytest.fixture
async def api() -> AsyncIterator[tuple[Recorder, str]]:
    recorder = Recorder()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", recorder.handle)
    async with TestServer(app, host="127.0.0.1") as server:
        yield recorder, str(server.make_url("/")).rstrip("/")


async def revoke(spec: ProviderSpec, origin: str, tokens: TokenSet = TOKENS) -> bool | None:
    provider = configure(spec, endpoint_origin=origin)
    async with HttpClient() as http:
        return await oauth2.revoke_token(provider, tokens, http)


async def test_the_default_is_rfc_7009(api: tuple[Recorder, str]) -> None:
    recorder, origin = api
    assert await revoke(SPEC, origin) is True
    (request,) = recorder.requests
    assert (request["method"], request["path"]) == ("POST", "/revoke")
    assert request["content_type"] == "application/x-www-form-urlencoded"
    form = dict(parse_qsl(request["body"]))
    assert form == {"client_id": "app/id", "client_secret": "s3cret", "token": "at-123"}
    assert "Authorization" not in request["headers"]


async def test_rfc_7009_with_basic_authentication_and_hints(api: tuple[Recorder, str]) -> None:
    recorder, origin = api
    spec = attrs.evolve(SPEC, token_auth_method="client_secret_basic", revoke_refresh_token=True)
    assert await revoke(spec, origin) is True
    basic = base64.b64encode(b"app%2Fid:s3cret").decode()
    for request, (token, hint) in zip(
        recorder.requests, [("rt-456", "refresh_token"), ("at-123", "access_token")], strict=True
    ):
        assert (request["method"], request["path"]) == ("POST", "/revoke")
        assert request["content_type"] == "application/x-www-form-urlencoded"
        assert request["headers"]["Authorization"] == f"Basic {basic}"
        assert parse_qsl(request["body"]) == [("token", token), ("token_type_hint", hint)]


async def test_a_declared_revocation_dialect(api: tuple[Recorder, str]) -> None:
    recorder, origin = api
    recorder.status = 204
    assert await revoke(DELETING, origin) is True
    (request,) = recorder.requests
    assert request["method"] == "DELETE"
    assert request["path"] == "/apps/app%2Fid/grant"  # the client id, quoted as one segment
    assert request["content_type"] == "application/json"
    assert json.loads(request["body"]) == {"access_token": "at-123"}  # no secret in the body
    basic = base64.b64encode(b"app%2Fid:s3cret").decode()  # RFC 6749 2.3.1: form-encoded
    assert request["headers"]["Authorization"] == f"Basic {basic}"
    assert request["headers"]["Accept"] == "application/vnd.nested+json"
    assert request["headers"]["Nested-Version"] == "2024-01-01"


async def test_the_token_endpoint_keeps_its_own_authentication(api: tuple[Recorder, str]) -> None:
    recorder, origin = api
    assert DELETING.token_auth_method == "client_secret_post"
    only_json = attrs.evolve(DELETING, revoke_auth_method=None)
    await revoke(only_json, origin)
    body = json.loads(recorder.requests[0]["body"])
    assert body == {"client_id": "app/id", "client_secret": "s3cret", "access_token": "at-123"}
    assert "Authorization" not in recorder.requests[0]["headers"]


async def test_both_tokens_in_json_carry_their_hints(api: tuple[Recorder, str]) -> None:
    recorder, origin = api
    await revoke(attrs.evolve(DELETING, revoke_refresh_token=True), origin)
    bodies = [json.loads(r["body"]) for r in recorder.requests]
    assert bodies == [
        {"access_token": "rt-456", "token_type_hint": "refresh_token"},
        {"access_token": "at-123", "token_type_hint": "access_token"},
    ]


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (404, {"message": "Not Found"}, "http_404"),
        (422, {"error": "invalid_request", "error_description": "bad"}, "invalid_request"),
        (200, {"error": "invalid_client"}, "invalid_client"),
    ],
)
async def test_refusals_raise_revoke_error(
    api: tuple[Recorder, str], status: int, body: object, error: str | None
) -> None:
    recorder, origin = api
    recorder.status, recorder.body = status, body
    with pytest.raises(RevokeError) as caught:
        await revoke(DELETING, origin)
    assert caught.value.http_status == status
    assert caught.value.error == error
    assert "s3cret" not in str(caught.value)
    assert "at-123" not in str(caught.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("revoke_method", "PUT"),
        ("revoke_encoding", "xml"),
        ("revoke_auth_method", "private_key_jwt"),
    ],
)
def test_the_revocation_fields_are_checked(field: str, value: Any) -> None:
    changes: dict[str, Any] = {field: value}
    with pytest.raises(ValueError, match=field):
        attrs.evolve(SPEC, **changes)


@pytest.mark.parametrize("name", ["Authorization", "content-type"])
def test_api_headers_cannot_set_what_each_request_sets(name: str) -> None:
    with pytest.raises(ValueError, match=f"api_headers cannot set {name}"):
        attrs.evolve(SPEC, api_headers={name: "x"})


def test_the_spec_s_mappings_cannot_be_changed_behind_its_back() -> None:
    with pytest.raises(TypeError):
        DELETING.api_headers["Nested-Version"] = "2099-01-01"  # type: ignore[index]
    with pytest.raises(TypeError):
        SPEC.implied_scopes["mail"] = frozenset()  # type: ignore[index]
    assert DELETING.api_headers == {
        "Accept": "application/vnd.nested+json",
        "Nested-Version": "2024-01-01",
    }


def test_a_public_client_cannot_revoke_with_a_secret_it_does_not_have() -> None:
    public = attrs.evolve(SPEC, token_auth_method="none")
    assert configure(public, client_secret="").client_id == "app/id"
    with pytest.raises(ConfigurationError, match="no client secret"):
        configure(attrs.evolve(public, revoke_auth_method="client_secret_basic"), client_secret="")


async def test_the_profile_request_sends_the_api_headers(api: tuple[Recorder, str]) -> None:
    recorder, origin = api
    recorder.body = {"id": 7, "name": "Seven"}
    for spec in (SPEC, DELETING):
        provider = configure(spec, endpoint_origin=origin)
        async with HttpClient() as http:
            profile = await oauth2.fetch_profile(provider, TOKENS, http)
        assert profile is not None
        assert profile.id == "7"
    plain, declared = (r["headers"] for r in recorder.requests)
    assert plain["Accept"] == "application/json"
    assert "Nested-Version" not in plain
    assert declared["Accept"] == "application/vnd.nested+json"
    assert declared["Nested-Version"] == "2024-01-01"
    assert declared["Authorization"] == "Bearer at-123"


# -- deprecated module names ----------------------------------------------------------------


def test_deprecated_module_names_warn_and_name_the_replacement() -> None:
    module = types.ModuleType("oldplugin")
    module.__getattr__ = deprecated_module_names(  # type: ignore[method-assign]
        "oldplugin", {"old_hook": ("newplace.new_hook", len)}
    )
    sys.modules["oldplugin"] = module
    try:
        with pytest.warns(DeprecationWarning, match="old_hook") as caught:
            from oldplugin import old_hook  # type: ignore[import-not-found]
        assert old_hook is len
        assert str(caught[0].message) == "oldplugin.old_hook is deprecated; use newplace.new_hook"
        assert caught[0].filename == __file__  # the warning points at the importer
        assert "old_hook" not in dir(module)  # so pluggy never sees it as a hook
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(AttributeError, match="module 'oldplugin' has no attribute 'nope'"):
                _ = module.nope
    finally:
        del sys.modules["oldplugin"]

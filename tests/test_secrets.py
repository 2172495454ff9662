"""Secrets stay secret: client secrets, signing secrets and tokens never reach reprs, errors or logs."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from keyloom_core import (
    HttpResponse,
    Keyloom,
    KeyloomError,
    LoginResult,
    Provider,
    TokenSet,
)

pytestmark = pytest.mark.anyio

Login = Callable[..., Awaitable[LoginResult]]
Authorize = Callable[..., Awaitable[dict[str, str]]]
MakeKeyloom = Callable[..., Keyloom]
MakeProvider = Callable[..., Provider]


def _log_text(records: list[logging.LogRecord]) -> str:
    parts = []
    for record in records:
        parts.append(record.getMessage())
        if record.exc_info and record.exc_info[1] is not None:
            parts.append(repr(record.exc_info[1]))
            parts.append(str(record.exc_info[1]))
        if record.exc_text:
            parts.append(record.exc_text)
    return "\n".join(parts)


def _error_texts(error: BaseException) -> str:
    texts = []
    seen: BaseException | None = error
    while seen is not None:
        texts += [str(seen), repr(seen), str(getattr(seen, "hint", ""))]
        seen = seen.__cause__ or seen.__context__
    return "\n".join(texts)


async def test_reprs_hide_the_client_secret(
    make_keyloom: MakeKeyloom, make_provider: MakeProvider, fake_provider: Any
) -> None:
    provider = make_provider()
    keyloom = make_keyloom(provider)
    for text in (
        repr(provider),
        str(provider),
        repr(keyloom),
        str(keyloom),
        repr(keyloom.providers),
    ):
        assert fake_provider.client_secret not in text
        assert keyloom.secrets[0] not in text
    assert fake_provider.client_id in repr(provider)  # the id is not secret


def test_reprs_hide_tokens() -> None:
    tokens = TokenSet(access_token="at-SECRET-ACCESS", refresh_token="rt-SECRET-REFRESH")
    for text in (repr(tokens), str(tokens)):
        assert "SECRET" not in text
    response = HttpResponse(status=200, headers={}, body=b'{"access_token": "at-SECRET"}')
    assert "SECRET" not in repr(response)


async def test_login_result_repr_hides_tokens(keyloom: Keyloom, login: Login) -> None:
    result = await login(keyloom)
    assert result.tokens.access_token not in repr(result)
    assert result.tokens.refresh_token not in repr(result)


async def test_full_login_logs_no_secret_at_debug(
    make_keyloom: MakeKeyloom,
    login: Login,
    fake_provider: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with make_keyloom() as keyloom:
        result = await login(keyloom)
        fresh = await keyloom.refresh("fake", result.tokens)
        await keyloom.revoke("fake", fresh)
    assert any(r.name.startswith("keyloom") for r in caplog.records)  # logging was on
    logged = _log_text(caplog.records)
    token_call = fake_provider.calls("/token")[0]
    for secret in (
        fake_provider.client_secret,
        keyloom.secrets[0],
        result.tokens.access_token,
        result.tokens.refresh_token,
        fresh.access_token,
        fresh.refresh_token,
        token_call["code"],
        token_call["code_verifier"],
    ):
        assert secret not in logged


async def test_errors_and_their_logs_carry_no_secret(
    make_keyloom: MakeKeyloom,
    make_provider: MakeProvider,
    authorize: Authorize,
    fake_provider: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    failures: list[KeyloomError] = []
    wrong_secret = "wrong-client-secret-ALSO-SECRET-91ab"
    async with make_keyloom(make_provider(client_secret=wrong_secret)) as bad:
        start = await bad.begin_login("fake")
        query = await authorize(start)
        try:
            await bad.complete_login("fake", query, start.state)
        except KeyloomError as exc:
            failures.append(exc)
    async with make_keyloom() as keyloom:
        start = await keyloom.begin_login("fake")
        query = await authorize(start)
        for bad_query, state in (
            ({**query, "state": "x"}, start.state),  # mismatch
            (query, start.state[:-3] + "AAA"),  # forged
            ({**query, "error": "access_denied"}, start.state),
        ):
            try:
                await keyloom.complete_login("fake", bad_query, state)
            except KeyloomError as exc:
                failures.append(exc)
        try:
            await keyloom.refresh(
                "fake", TokenSet(access_token="at-x", refresh_token="rt-UNKNOWN-SECRET")
            )
        except KeyloomError as exc:
            failures.append(exc)
    assert len(failures) == 5
    texts = "\n".join(_error_texts(e) for e in failures) + _log_text(caplog.records)
    for secret in (
        wrong_secret,
        fake_provider.client_secret,
        keyloom.secrets[0],
        query["code"],
        "rt-UNKNOWN-SECRET",
    ):
        assert secret not in texts

"""A login that the app refuses after the provider issued tokens gives the tokens back."""

from __future__ import annotations

import pytest

from keyloom_core import AccessDeniedError
from keyloom_core.web import AuthHandler, AuthRequest

pytestmark = pytest.mark.anyio


async def _callback(handler: AuthHandler, authorize) -> tuple[int, str]:
    start = await handler.handle(AuthRequest("GET", "/oauth/fake/start"))
    location = dict(start.header_list())["Location"]
    state = next(c for c in start.cookies if c.startswith(f"{handler.state_cookie}=")).split(";")[0]
    query = await authorize(_Start(location))
    reply = await handler.handle(
        AuthRequest(
            "GET",
            "/oauth/fake/callback",
            query=tuple(query.items()),
            cookies={handler.state_cookie: state.partition("=")[2]},
        )
    )
    return reply.status, reply.body.decode()


class _Start:
    def __init__(self, url: str) -> None:
        self.url = url


@pytest.mark.parametrize(
    "failure", [AccessDeniedError("not on the guest list"), RuntimeError("db down")]
)
async def test_tokens_revoked_when_on_login_refuses(
    keyloom, fake_provider, authorize, failure
) -> None:
    async def on_login(result) -> None:
        raise failure

    handler = AuthHandler(keyloom, on_login=on_login)
    status, body = await _callback(handler, authorize)
    assert status == (403 if isinstance(failure, AccessDeniedError) else 500)
    assert "Traceback" not in body
    assert len(fake_provider.revoked) == 1  # the issued access token went back


async def test_accepted_login_revokes_nothing(keyloom, fake_provider, authorize) -> None:
    handler = AuthHandler(keyloom)
    status, _ = await _callback(handler, authorize)
    assert status == 302
    assert fake_provider.revoked == []


async def test_on_login_is_deprecated_for_the_login_succeeded_hook(keyloom) -> None:
    async def on_login(result) -> None:
        return None

    with pytest.warns(DeprecationWarning, match="login_succeeded hook"):
        AuthHandler(keyloom, on_login=on_login)


async def test_a_refused_login_leaves_no_session_record(
    make_keyloom, fake_provider, authorize
) -> None:
    from keyloom_core.store import MemoryStore

    async def on_login(result) -> None:
        raise AccessDeniedError("not on the guest list")

    async with make_keyloom(store=MemoryStore()) as keyloom:
        with pytest.warns(DeprecationWarning, match="login_succeeded"):
            handler = AuthHandler(keyloom, on_login=on_login)
        status, _ = await _callback(handler, authorize)
        assert status == 403
        assert len(fake_provider.revoked) == 1
        assert await keyloom.sessions.list("id-alice") == []

"""Web logout through the token manager: stored tokens deleted and revoked at the provider."""

from __future__ import annotations

import aiohttp
import pytest

from keyloom_core.tokens import MemoryTokenStore, TokenManager
from keyloom_core.web import AuthHandler, AuthRequest
from keyloom_core.web.sessions import issue_session, new_csrf_token

pytestmark = pytest.mark.anyio


async def test_logout_route_deletes_and_revokes_stored_tokens(make_keyloom, login, emulator) -> None:
    manager = TokenManager(MemoryTokenStore())
    keyloom = make_keyloom(manager.plugin)
    manager.bind(keyloom)
    handler = AuthHandler(keyloom, on_logout=manager.on_logout)
    async with keyloom:
        result = await login(keyloom)
        account = result.profile.id
        assert (await manager.store.get("tiktok", account)) is not None
        session, cookie = issue_session(keyloom, result)
        csrf = new_csrf_token(keyloom, session_id=session.id)
        response = await handler.handle(
            AuthRequest(
                "POST",
                "/logout",
                headers={"x-keyloom-csrf": csrf},
                cookies={handler.session_cookie: cookie, handler.csrf_cookie: csrf},
            )
        )
        assert response.status == 200
        assert await manager.store.get("tiktok", account) is None
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                f"{emulator.url}/v2/user/info/",
                params={"fields": "open_id"},
                headers={"Authorization": f"Bearer {result.tokens.access_token}"},
            ) as info,
        ):
            assert info.status == 401  # revoked at the provider

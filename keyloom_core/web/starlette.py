"""``require_user``: the signed-in user as a Starlette / FastAPI dependency (needs starlette).

With :class:`~keyloom_core.web.asgi.KeyloomASGI` wrapping the app::

    from fastapi import Depends, FastAPI
    from keyloom_core.web.asgi import KeyloomASGI
    from keyloom_core.web.starlette import EXCEPTION_HANDLERS, require_user

    api = FastAPI(exception_handlers=EXCEPTION_HANDLERS)

    @api.get("/me")
    async def me(user: dict = Depends(require_user)) -> dict:
        return {"id": user["id"], "name": user["name"]}

    app = KeyloomASGI(keyloom, api)

A signed-out request gets ``401 {"error": "sign_in_required"}`` (without
:data:`EXCEPTION_HANDLERS`, FastAPI's own ``{"detail": "sign_in_required"}``). In a
Starlette endpoint, ``user = await require_user(request)``, with
``Starlette(..., exception_handlers=EXCEPTION_HANDLERS)``.
"""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response

from ._users import signed_in_user
from .asgi import _handler, current_session

__all__ = ["EXCEPTION_HANDLERS", "SignedOutError", "require_user"]


class SignedOutError(HTTPException):
    """401: nobody is signed in; answered as ``{"error": "sign_in_required"}``."""

    def __init__(self) -> None:
        super().__init__(401, detail="sign_in_required", headers={"Cache-Control": "no-store"})


async def require_user(request: HTTPConnection) -> dict[str, Any]:
    """The signed-in user object (as in ``GET /session``); raises :class:`SignedOutError`.

    :raises SignedOutError: nobody is signed in (or the user was deleted).
    """
    session = await current_session(request.scope)  # only the session cookie is read
    user = await signed_in_user(_handler(request.scope).keyloom, session)
    if user is None:
        raise SignedOutError
    return user


async def _signed_out(_request: Request, _exc: Exception) -> Response:
    return JSONResponse(
        {"error": "sign_in_required"}, status_code=401, headers={"Cache-Control": "no-store"}
    )


EXCEPTION_HANDLERS: dict[Any, Any] = {SignedOutError: _signed_out}
"""Pass to ``Starlette(exception_handlers=...)`` or ``FastAPI(exception_handlers=...)``."""

"""One generic fake authorization server that reads its dialect from a :class:`ProviderSpec`.

:class:`AuthorizationServer` is a complete RFC 6749 (authorization code and refresh grants),
RFC 7636 (S256 PKCE) and RFC 7009 (revocation) server on 127.0.0.1, with a user-info route.
It takes every provider-specific detail from its :attr:`~AuthorizationServer.spec`:

- the routes: the paths of ``authorize_url``, ``token_url``, ``profile_url`` and
  ``revoke_url``;
- the client id parameter (``client_id_param``) and the scope separator
  (``scope_separator``), in requests and answers;
- the PKCE challenge encoding (``pkce_encoding``);
- how clients authenticate (``token_auth_method``: form body, HTTP Basic or none);
- the token answer's account and refresh-lifetime fields (``account_id_field``,
  ``refresh_expires_field``).

A provider's emulator is a subclass that sets :attr:`~AuthorizationServer.spec` and overrides
only what its provider does differently::

    class ExampleEmulator(AuthorizationServer):
        spec = SPEC

    if __name__ == "__main__":
        raise SystemExit(ExampleEmulator.main())

The emulated user answers authorization requests as :attr:`~EmulatorServer.consent` says:
``"approve"`` or ``"deny"`` at once, or ``"form"``, a small consent page. Fault injection
(``faults=``, a :class:`~keyloom_core.testing.emulator.FaultInjector`) and rate limiting
(``rate_limit=``, a :class:`~keyloom_core.testing.emulator.SlidingWindowLimiter`) are
optional constructor keywords, for the tests that need them.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hmac
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Final
from urllib.parse import urlencode, urlsplit

from aiohttp import web

from keyloom_core.models import ProviderSpec

from .emulator import (
    AccessToken,
    AuthorizationCode,
    EmulatorServer,
    FaultInjector,
    GrantBook,
    Handler,
    ScopeOption,
    SlidingWindowLimiter,
    TokenFailure,
    TokenPair,
    add_emulator_arguments,
    consent_page,
    emulator_main,
    emulator_options,
    html_response,
    message_page,
    verify_s256,
)

if TYPE_CHECKING:
    from typing import Self

__all__ = ["AVATAR_PATH", "CONSENT_PATH", "DEFAULT_CALLBACK", "AuthorizationServer"]

#: Where the consent form posts its answer.
CONSENT_PATH: Final = "/emulator/consent"
#: The emulated user's avatar (a real provider's would be on a CDN).
AVATAR_PATH: Final = "/emulator/avatar.svg"
#: The redirect URI registered by default: where ``keyloom login`` listens.
DEFAULT_CALLBACK: Final = "http://127.0.0.1:8765/callback/"

_AVATAR: Final = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64">'
    '<rect width="64" height="64" fill="#2f6feb"/></svg>'
)

Clients = Mapping[str, tuple[str, Sequence[str]]]


def _path(url: str | None) -> str | None:
    return urlsplit(url).path or "/" if url else None


class AuthorizationServer(EmulatorServer):
    """A fake RFC 6749 / 7636 / 7009 authorization server speaking :attr:`spec`'s dialect.

    Subclasses set :attr:`spec` and override only their provider's quirks: :attr:`user`,
    :meth:`profile`, :meth:`token_answer`, :meth:`error_answer` (and :attr:`error_status`),
    :meth:`check_authorization` or any route handler.

    :param clients: ``client_id -> (client_secret, registered redirect URIs)``; by default
        one client, ``keyloom-{id}-emulator`` with the secret ``keyloom-{id}-emulator-secret``
        and :data:`DEFAULT_CALLBACK`.
    :param rate_limit: An optional limiter of the token, profile and revocation routes,
        keyed by route; a request over the limit gets :meth:`error_answer` with status 429,
        ``rate_limited`` and a ``Retry-After`` header.
    :param options: :class:`~keyloom_core.testing.emulator.EmulatorServer`'s (``host``,
        ``port``, ``consent``, ``clock``, ``faults``...). ``faults`` defaults to an idle
        :class:`~keyloom_core.testing.emulator.FaultInjector`, so tests can queue faults.
    """

    #: The provider this server fakes; every subclass sets it.
    spec: ClassVar[ProviderSpec]
    #: The signed-in user, as the default :meth:`profile` answers it.
    user: ClassVar[Mapping[str, str]] = {
        "sub": "1001",
        "name": "Emulated User",
        "email": "user@example.test",
    }
    #: The HTTP status of token and revocation errors (RFC 6749 §5.2: 400; a wrong client
    #: secret always gets 401). Some providers answer errors with 200.
    error_status: ClassVar[int] = 400
    #: Access token lifetime in seconds.
    access_ttl: ClassVar[float] = 3600.0

    def __init__(
        self,
        *,
        clients: Clients | None = None,
        rate_limit: SlidingWindowLimiter | None = None,
        **options: Any,
    ) -> None:
        """Register *clients*; nothing listens until started."""
        options.setdefault("faults", FaultInjector())
        super().__init__(**options)
        spec = self.spec
        default = (f"keyloom-{spec.id}-emulator-secret", (DEFAULT_CALLBACK,))
        self.clients: dict[str, tuple[str, Sequence[str]]] = dict(
            clients or {f"keyloom-{spec.id}-emulator": default}
        )
        self.rate_limit = rate_limit
        self.book = GrantBook(clock=self.clock, access_ttl=self.access_ttl)
        self.routes = {
            "authorize": _path(spec.authorize_url),
            "token": _path(spec.token_url),
            "profile": _path(spec.profile_url),
            "revoke": _path(spec.revoke_url),
        }

    def is_api_path(self, path: str) -> bool:
        """Whether *path* is the token, profile or revocation route (where faults apply)."""
        return path.rstrip("/") in {
            p.rstrip("/") for k, p in self.routes.items() if p and k != "authorize"
        }

    # -- the conformance convention ------------------------------------------------------

    @classmethod
    def for_client(
        cls,
        client_id: str,
        client_secret: str,
        redirect_uris: Sequence[str],
        scopes: Iterable[str],
        **options: Any,
    ) -> Self:
        """A server where one client is registered (any scope may be requested)."""
        del scopes
        return cls(clients={client_id: (client_secret, tuple(redirect_uris))}, **options)

    def expected_profile(self, client_id: str, scopes: Iterable[str]) -> Mapping[str, Any]:
        """The :attr:`user` as the core normalises the default :meth:`profile`."""
        del client_id
        email = self.user.get("email") if "email" in set(scopes) else None
        return {
            "id": self.user["sub"],
            "name": self.user.get("name"),
            "email": email,
            "image": self.url_for(AVATAR_PATH),
        }

    # -- quirks a subclass may override ---------------------------------------------------

    def profile(self, token: AccessToken) -> Mapping[str, Any]:
        """The profile route's JSON for *token*: OpenID-style claims, ``email`` if granted."""
        answer: dict[str, Any] = {
            "sub": self.user["sub"],
            "name": self.user.get("name"),
            "picture": self.url_for(AVATAR_PATH),
        }
        if "email" in token.scopes and "email" in self.user:
            answer |= {"email": self.user["email"], "email_verified": True}
        return answer

    def token_answer(self, pair: TokenPair) -> Mapping[str, Any]:
        """The token endpoint's JSON for a new *pair* (RFC 6749 §5.1, in the spec's fields)."""
        now = self.clock()
        answer: dict[str, Any] = {
            "access_token": pair.access_token,
            "token_type": "Bearer",
            "expires_in": pair.expires_in(now),
            "refresh_token": pair.refresh_token,
            "scope": self.spec.scope_separator.join(pair.scopes),
        }
        if (refresh_in := pair.refresh_expires_in(now)) is not None:
            answer[self.spec.refresh_expires_field] = refresh_in
        if self.spec.account_id_field:
            answer[self.spec.account_id_field] = pair.user_id
        return answer

    def error_answer(self, status: int, error: str, description: str = "") -> web.Response:
        """An error of the token, profile or revocation route (RFC 6749 §5.2 shape)."""
        body = {"error": error, "error_description": description or error.replace("_", " ")}
        return web.json_response(body, status=status)

    def check_authorization(self, params: Mapping[str, str]) -> str | None:
        """Return an RFC 6749 §4.1.2.1 error code for an approved request, or ``None``."""
        pkce = params.get("code_challenge_method") == "S256" and params.get("code_challenge")
        if params.get("response_type") != "code" or not pkce:
            return "invalid_request"
        return None

    # -- routes --------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        """The spec's routes, the consent form's answer and the avatar."""
        handlers = {
            "authorize": self.authorize,
            "token": self.token,
            "profile": self.userinfo,
            "revoke": self.revoke,
        }
        for name, path in self.routes.items():
            if path is not None:
                method = (
                    app.router.add_get if name in {"authorize", "profile"} else app.router.add_post
                )
                method(path, self._limited(handlers[name]))
        app.router.add_post(CONSENT_PATH, self.consent_answer)
        app.router.add_get(AVATAR_PATH, self.avatar)

    def _limited(self, handler: Handler) -> Handler:
        async def limited(request: web.Request) -> web.StreamResponse:
            wait = None if self.rate_limit is None else self.rate_limit.hit(request.path)
            if wait is not None and self.is_api_path(request.path):
                response = self.error_answer(429, "rate_limited")
                response.headers["Retry-After"] = str(max(1, round(wait)))
                return response
            return await handler(request)

        return limited

    def refused(self, params: Mapping[str, str]) -> web.Response | None:
        """An error page, never a redirect, for an unknown client or redirect URI."""
        client = self.clients.get(params.get(self.spec.client_id_param, ""))
        if client is not None and params.get("redirect_uri") in client[1]:
            return None
        param = self.spec.client_id_param if client is None else "redirect_uri"
        page = message_page(
            title="Error", heading=f"Invalid {param}", attributes={"error-param": param}
        )
        return html_response(page, status=400)

    async def authorize(self, request: web.Request) -> web.StreamResponse:
        """Answer as :attr:`consent` says, or show the consent page."""
        params = dict(request.query)
        if (refused := self.refused(params)) is not None:
            return refused
        if self.consent != "form":
            return self.redirect(params, approve=self.consent == "approve")
        names = [s for s in params.get("scope", "").split(self.spec.scope_separator) if s]
        page = consent_page(
            app_name=params[self.spec.client_id_param],
            action=CONSENT_PATH,
            scopes=[ScopeOption(name) for name in names],
            hidden={k: v for k, v in params.items() if k != "scope"},
            provider_name=self.spec.name,
        )
        return html_response(page)

    async def consent_answer(self, request: web.Request) -> web.StreamResponse:
        """The consent page's answer: the checked scopes and ``approve`` or ``deny``."""
        form = await request.post()
        params = {k: str(v) for k, v in form.items() if k not in {"scope", "decision"}}
        chosen = [str(v) for v in form.getall("scope", [])]
        params["scope"] = self.spec.scope_separator.join(chosen)
        if (refused := self.refused(params)) is not None:
            return refused
        return self.redirect(params, approve=form.get("decision") == "approve")

    def redirect(self, params: Mapping[str, str], *, approve: bool) -> web.StreamResponse:
        """Send the user back to the client with a code or an error (RFC 6749 §4.1.2)."""
        back = {"state": params.get("state", "")}
        error = "access_denied" if not approve else self.check_authorization(params)
        if error is not None:
            back["error"] = error
        else:
            code = self.book.issue_code(
                client_id=params[self.spec.client_id_param],
                redirect_uri=params["redirect_uri"],
                user_id=self.user["sub"],
                scopes=[s for s in params.get("scope", "").split(self.spec.scope_separator) if s],
                code_challenge=params["code_challenge"],
                code_challenge_method="S256",
            )
            back["code"] = code.code
        separator = "&" if "?" in params["redirect_uri"] else "?"
        raise web.HTTPFound(f"{params['redirect_uri']}{separator}{urlencode(back)}")

    def client_of(self, request: web.Request, form: Mapping[str, str]) -> str | None:
        """The authenticated client's id, as ``spec.token_auth_method`` says, or ``None``."""
        method = self.spec.token_auth_method
        client_id = form.get(self.spec.client_id_param, "")
        secret: str | None = form.get("client_secret", "")
        if method == "client_secret_basic":
            try:
                basic = request.headers.get("Authorization", "").removeprefix("Basic ")
                client_id, _, secret = (
                    base64.b64decode(basic, validate=True).decode().partition(":")
                )
            except (binascii.Error, UnicodeDecodeError):
                return None
        elif method == "none":
            secret = None
        client = self.clients.get(client_id)
        if client is None or (secret is not None and not hmac.compare_digest(client[0], secret)):
            return None
        return client_id

    async def token(self, request: web.Request) -> web.StreamResponse:
        """RFC 6749 §4.1.3 and §6: the ``authorization_code`` and ``refresh_token`` grants."""
        form = {k: str(v) for k, v in (await request.post()).items()}
        client_id = self.client_of(request, form)
        if client_id is None:
            return self.error_answer(401, self.invalid_client_error)
        pair: TokenPair | TokenFailure
        grant = form.get("grant_type")
        if grant == "authorization_code":
            where = {"client_id": client_id, "redirect_uri": form.get("redirect_uri", "")}
            code = self.book.inspect_code(form.get("code", ""), **where)
            encodings = (self.spec.pkce_encoding,)
            verifier = form.get("code_verifier", "")
            if not isinstance(code, AuthorizationCode) or not verify_s256(
                verifier, code.code_challenge or "", encodings=encodings
            ):
                return self.error_answer(self.error_status, self.invalid_grant_error)
            self.book.consume_code(code.code, **where)
            pair = self.book.issue_tokens(
                client_id=client_id, user_id=code.user_id, scopes=code.scopes
            )
        elif grant == "refresh_token":
            pair = self.book.refresh(form.get("refresh_token", ""), client_id=client_id)
        else:
            return self.error_answer(self.error_status, "unsupported_grant_type")
        if not isinstance(pair, TokenPair):
            return self.error_answer(self.error_status, self.invalid_grant_error)
        return web.json_response(dict(self.token_answer(pair)))

    async def userinfo(self, request: web.Request) -> web.StreamResponse:
        """The profile route: :meth:`profile` of the bearer token, or 401 ``invalid_token``."""
        bearer = request.headers.get("Authorization", "")
        record = self.book.lookup_access(bearer.removeprefix("Bearer ").strip())
        if not bearer.startswith("Bearer ") or not isinstance(record, AccessToken):
            return self.error_answer(401, "invalid_token")
        return web.json_response(dict(self.profile(record)))

    async def revoke(self, request: web.Request) -> web.StreamResponse:
        """RFC 7009: revoke the token's grant; an unknown token is not an error."""
        form = {k: str(v) for k, v in (await request.post()).items()}
        client_id = self.client_of(request, form)
        if client_id is None:
            return self.error_answer(401, self.invalid_client_error)
        self.book.revoke(form.get("token", ""), client_id=client_id)
        return web.Response(status=200)

    async def avatar(self, request: web.Request) -> web.StreamResponse:
        """A one-colour SVG avatar."""
        del request
        return web.Response(text=_AVATAR, content_type="image/svg+xml")

    # -- command line --------------------------------------------------------------------

    @classmethod
    def main(cls, argv: Sequence[str] | None = None) -> int:
        """Serve until Ctrl-C: ``python -m your_plugin.emulator [--consent form] ...``.

        The options are :func:`~keyloom_core.testing.emulator.add_emulator_arguments`'s (the
        client id option named after ``spec.client_id_param``) and ``--redirect-uri``.
        """
        spec = cls.spec
        parser = argparse.ArgumentParser(prog=f"python -m {cls.__module__}")
        option = "--" + spec.client_id_param.replace("_", "-")
        builtin = (f"keyloom-{spec.id}-emulator", f"keyloom-{spec.id}-emulator-secret")
        add_emulator_arguments(
            parser, client_id=builtin[0], client_secret=builtin[1], client_id_option=option
        )
        parser.add_argument(
            "--redirect-uri",
            action="append",
            default=[],
            help=f"a registered redirect URI (repeatable; default {DEFAULT_CALLBACK})",
        )

        def build(args: argparse.Namespace) -> AuthorizationServer:
            uris = tuple(args.redirect_uri or [DEFAULT_CALLBACK])
            return cls(
                clients={args.client_id: (args.client_secret, uris)}, **emulator_options(args)
            )

        def describe(server: AuthorizationServer) -> list[str]:
            return [f"  redirect URIs: {', '.join(next(iter(server.clients.values()))[1])}"]

        return emulator_main(f"{spec.name} emulator", parser, build, describe, argv)

"""A local OpenID Provider built on the emulator kit, with switches that make it misbehave.

:class:`OpenIDEmulator` serves discovery, a JWK set, authorization (the user approves at
once), the token endpoint (authorization code with S256 PKCE, refresh with rotation, ID
tokens signed RS256), UserInfo and RFC 7009 revocation, for one registered client. Unlike
a certified provider it can be told to lie: sign with a key it does not publish, put
another ``aud``, ``iss`` or ``nonce`` in the ID token, answer UserInfo for another
subject, send the callback a foreign ``iss``, or rotate its signing key.

It needs the ``oidc`` extra (PyJWT with ``cryptography``). Nothing here logs tokens,
codes or secrets.
"""

from __future__ import annotations

import base64
import hmac
import secrets
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal
from urllib.parse import unquote_plus, urlencode

import attrs
import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from ..oidc import at_hash
from .emulator import EmulatorServer, verify_s256

__all__ = ["OpenIDEmulator", "SigningKey"]

AuthMethod = Literal["client_secret_basic", "client_secret_post", "none"]


@attrs.frozen
class SigningKey:
    """An RSA signing key and its ``kid``.

    Attributes:
        kid: The key id published in the JWK set and the tokens' headers.
        private: The private key.
    """

    kid: str
    private: rsa.RSAPrivateKey = attrs.field(repr=False)

    @classmethod
    def generate(cls) -> SigningKey:
        """A fresh 2048-bit key with a random ``kid``."""
        return cls(secrets.token_urlsafe(8), rsa.generate_private_key(65537, 2048))

    def jwk(self) -> dict[str, Any]:
        """The public JWK."""
        data: dict[str, Any] = jwt.algorithms.RSAAlgorithm.to_jwk(
            self.private.public_key(), as_dict=True
        )
        return {**data, "kid": self.kid, "use": "sig", "alg": "RS256"}


@attrs.define
class _Grant:
    user: str
    scope: str
    nonce: str | None = None
    redirect_uri: str = ""
    challenge: str = ""


def _error(status: int, error: str) -> web.Response:
    return web.json_response({"error": error}, status=status)


class OpenIDEmulator(EmulatorServer):
    """A loopback OpenID Provider for one client; see the module docstring.

    :param client_id: The registered client's id.
    :param client_secret: Its secret (ignored for ``none``).
    :param redirect_uris: Its redirect URIs (exact matches).
    :param auth_method: The one client authentication method the token and revocation
        endpoints accept.
    :param users: Claims of each user (``alice`` by default); the emulated user is
        :attr:`user`.

    Attributes:
        user: Who signs in next.
        id_token_claims: Claims put over the next ID tokens' (e.g. ``{"aud": "x"}``).
        sign_with: A key to sign with instead of the published one (a forgery).
        userinfo_claims: Claims put over UserInfo's answer (e.g. another ``sub``).
        callback_iss: The ``iss`` of the callback, ``None`` to leave it out.
        revoked: ``(token, token_type_hint)`` of every revocation, in order.
        discovery_fetches: How often the discovery document was fetched.
        jwks_fetches: How often the JWK set was fetched.
        last_authorize: The query of the last authorization request.
    """

    api_paths: ClassVar[frozenset[str]] = frozenset({"/token", "/userinfo", "/revoke"})

    def __init__(
        self,
        *,
        client_id: str = "oidc-client",
        client_secret: str = "oidc-secret",  # noqa: S107
        redirect_uris: Sequence[str] = (),
        auth_method: AuthMethod = "client_secret_basic",
        users: Mapping[str, Mapping[str, Any]] | None = None,
        **options: Any,
    ) -> None:
        """Configure the emulator; nothing is bound until :meth:`start`."""
        options.setdefault("consent", "approve")
        super().__init__(**options)
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uris = tuple(redirect_uris)
        self.auth_method: AuthMethod = auth_method
        self.users = dict(
            users
            or {"alice": {"name": "Alice", "email": "alice@example.com", "email_verified": True}}
        )
        self.user = next(iter(self.users))
        self.key = SigningKey.generate()
        self.id_token_claims: dict[str, Any] = {}
        self.sign_with: SigningKey | None = None
        self.userinfo_claims: dict[str, Any] = {}
        self.callback_iss: str | None = ""  # "" means: the issuer
        self.revoked: list[tuple[str, str | None]] = []
        self.discovery_fetches = 0
        self.jwks_fetches = 0
        self.last_authorize: dict[str, str] = {}
        self._codes: dict[str, _Grant] = {}
        self._access: dict[str, _Grant] = {}
        self._refresh: dict[str, _Grant] = {}

    @classmethod
    def for_client(
        cls,
        client_id: str,
        client_secret: str,
        redirect_uris: Sequence[str],
        scopes: Any,
        **options: Any,
    ) -> OpenIDEmulator:
        """An emulator with one registered client (the conformance convention)."""
        del scopes
        return cls(
            client_id=client_id,
            client_secret=client_secret,
            redirect_uris=redirect_uris,
            **options,
        )

    @property
    def issuer(self) -> str:
        """The issuer: the server's URL."""
        return self.url

    def rotate_key(self) -> SigningKey:
        """Sign with a new key from now on and publish only it; returns the old one."""
        old, self.key = self.key, SigningKey.generate()
        return old

    def add_routes(self, app: web.Application) -> None:
        """Discovery, JWKS, authorize, token, userinfo and revoke."""
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/jwks", self._jwks)
        app.router.add_get("/authorize", self._authorize)
        app.router.add_post("/token", self._token)
        app.router.add_get("/userinfo", self._userinfo)
        app.router.add_post("/revoke", self._revoke)

    # -- routes --------------------------------------------------------------------------

    async def _discovery(self, _: web.Request) -> web.Response:
        self.discovery_fetches += 1
        return web.json_response(
            {
                "issuer": self.issuer,
                "authorization_endpoint": self.url_for("/authorize"),
                "token_endpoint": self.url_for("/token"),
                "userinfo_endpoint": self.url_for("/userinfo"),
                "revocation_endpoint": self.url_for("/revoke"),
                "jwks_uri": self.url_for("/jwks"),
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "token_endpoint_auth_methods_supported": [self.auth_method],
                "authorization_response_iss_parameter_supported": True,
            }
        )

    async def _jwks(self, _: web.Request) -> web.Response:
        self.jwks_fetches += 1
        return web.json_response({"keys": [self.key.jwk()]})

    async def _authorize(self, request: web.Request) -> web.StreamResponse:
        query = dict(request.query)
        self.last_authorize = query
        redirect = query.get("redirect_uri", "")
        if query.get("client_id") != self.client_id or redirect not in self.redirect_uris:
            return _error(400, "invalid_request")
        if query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
            return _error(400, "invalid_request")
        back: dict[str, str] = {"state": query.get("state", "")}
        if self.consent == "deny":
            back["error"] = "access_denied"
        else:
            code = secrets.token_urlsafe(24)
            self._codes[code] = _Grant(
                user=self.user,
                scope=query.get("scope", ""),
                nonce=query.get("nonce"),
                redirect_uri=redirect,
                challenge=query["code_challenge"],
            )
            back["code"] = code
        iss = self.issuer if self.callback_iss == "" else self.callback_iss
        if iss is not None:
            back["iss"] = iss
        raise web.HTTPFound(f"{redirect}?{urlencode(back)}")

    def _client_ok(self, request: web.Request, form: Mapping[str, str]) -> bool:
        header = request.headers.get("Authorization", "")
        if self.auth_method == "client_secret_basic":
            if not header.startswith("Basic ") or "client_secret" in form:
                return False
            try:
                raw = base64.b64decode(header[6:], validate=True).decode()
            except ValueError:
                return False
            user, _, password = raw.partition(":")
            return unquote_plus(user) == self.client_id and hmac.compare_digest(
                unquote_plus(password).encode(), self.client_secret.encode()
            )
        if header:
            return False
        if self.auth_method == "none":
            return form.get("client_id") == self.client_id and "client_secret" not in form
        return form.get("client_id") == self.client_id and hmac.compare_digest(
            form.get("client_secret", "").encode(), self.client_secret.encode()
        )

    async def _token(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        if not self._client_ok(request, form):
            return _error(401, "invalid_client")
        if form.get("grant_type") == "authorization_code":
            grant = self._codes.pop(form.get("code", ""), None)
            if (
                grant is None
                or form.get("redirect_uri") != grant.redirect_uri
                or not verify_s256(form.get("code_verifier", ""), grant.challenge)
            ):
                return _error(400, "invalid_grant")
        elif form.get("grant_type") == "refresh_token":
            grant = self._refresh.pop(form.get("refresh_token", ""), None)  # rotation
            if grant is None:
                return _error(400, "invalid_grant")
            grant = attrs.evolve(grant, nonce=None)
        else:
            return _error(400, "unsupported_grant_type")
        access, refresh = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        self._access[access] = self._refresh[refresh] = grant
        answer = {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": 3600,
            "refresh_token": refresh,
            "scope": grant.scope,
        }
        if "openid" in grant.scope.split():
            answer["id_token"] = self.id_token(grant.user, nonce=grant.nonce, access_token=access)
        return web.json_response(answer)

    def id_token(
        self, user: str, *, nonce: str | None = None, access_token: str | None = None
    ) -> str:
        """An ID token for *user*, with :attr:`id_token_claims` over the honest claims."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": f"sub-{user}",
            "aud": self.client_id,
            "iat": now,
            "exp": now + 300,
            "auth_time": now,
            **({"nonce": nonce} if nonce else {}),
            **({"at_hash": at_hash(access_token, "RS256")} if access_token else {}),
            **self.users.get(user, {}),
            **self.id_token_claims,
        }
        key = self.sign_with or self.key
        return jwt.encode(claims, key.private, algorithm="RS256", headers={"kid": key.kid})

    async def _userinfo(self, request: web.Request) -> web.Response:
        header = request.headers.get("Authorization", "")
        grant = self._access.get(header.removeprefix("Bearer "))
        if not header.startswith("Bearer ") or grant is None:
            return _error(401, "invalid_token")
        return web.json_response(
            {
                "sub": f"sub-{grant.user}",
                **self.users.get(grant.user, {}),
                **self.userinfo_claims,
            }
        )

    async def _revoke(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        if not self._client_ok(request, form):
            return _error(401, "invalid_client")
        token = form.get("token", "")
        self.revoked.append((token, form.get("token_type_hint")))
        grant = self._refresh.pop(token, None)
        if grant is not None:  # revoking a refresh token ends its grant's access tokens
            for value in [k for k, g in self._access.items() if g is grant]:
                del self._access[value]
        self._access.pop(token, None)
        return web.Response(status=200)

    def is_active(self, token: str) -> bool:
        """Whether *token* (access or refresh) is still valid here."""
        return token in self._access or token in self._refresh

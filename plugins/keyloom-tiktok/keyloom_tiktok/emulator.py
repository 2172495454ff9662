"""A local TikTok Login Kit (OAuth 2.0, v2 API) for tests and development.

:class:`~keyloom_core.testing.authserver.AuthorizationServer` reading the plugin's ``SPEC``
(``client_key``, comma-separated scopes, hex PKCE), plus TikTok's own rules, as its
documentation and the issues of clients that got them wrong describe them: apps of two
types with TikTok's redirect URI rules (:mod:`keyloom_tiktok.emulator_redirects`) and
approved scopes; an HTML error page, never a redirect, for a bad ``client_key``,
``redirect_uri`` or missing PKCE, and TikTok's scope error page for an unknown or unapproved
scope; the ``scopes`` callback parameter and codes that need percent-decoding; credentials
in the form body only; ``act.``/``rft.``/``clt.`` tokens, rotating refresh tokens and client
credentials; ``{error, error_description, log_id}`` OAuth errors; ``open_id`` per app and
``union_id`` per user.

Its defaults follow what TikTok is documented or observed to do, where that departs from
RFC 6749 too: OAuth errors come with HTTP 200 (``error_status="4xx"`` gives RFC statuses),
a ``code_challenge`` without its method means S256 (TikTok's own SDKs send none),
32-character verifiers pass (TikTok's Android SDK), a revoke forgets the remembered consent,
the 429 has no ``Retry-After``, and tokens live 2 hours (access) and 180 days (refresh).
Each behaviour TikTok's pages leave open has a constructor knob for the alternative.

Besides the spec's routes (authorization also without its trailing slash) it serves
``/emulator/avatar/{user_id}.svg``, ``/emulator/@{username}`` (the ``profile_deep_link``)
and TikTok's v2 APIs of :mod:`keyloom_tiktok.emulator_api`: ``/v2/user/info/`` (the spec's
profile route, whose per-app :attr:`~TikTokEmulator.rate_limiter` and error options are
here) with the Display and Content Posting APIs. In tests::

    async with TikTokEmulator(consent="approve") as tiktok:
        authorize_url = tiktok.authorize_url

or alone: ``python -m keyloom_tiktok.emulator --port 9000`` (see ``--help``).
"""

from __future__ import annotations

import argparse
import logging
import uuid
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal, TypeAlias, get_args
from urllib.parse import quote, urlencode

import attrs
from aiohttp import web

from keyloom_core.testing.authserver import (
    AuthorizationServer,
    Client,
    DeprecatedAlias,
    EndpointFailure,
    PendingAuthorization,
    RegisteredClient,
    RequestFailure,
    Setting,
    deprecated_module_names,
)
from keyloom_core.testing.emulator import (
    AuthorizationCode,
    CodeFailure,
    ConsentMode,
    FaultKind,
    PkceEncoding,
    SlidingWindowLimiter,
    TokenFailure,
    TokenPair,
    avatar_response,
    html_response,
    log_id,
    message_page,
)
from keyloom_tiktok import BASIC, SPEC
from keyloom_tiktok.emulator_api import FIELD_SCOPES as _FIELD_SCOPES
from keyloom_tiktok.emulator_api import USER_INFO_PATH, ContentAPI, api_headers
from keyloom_tiktok.emulator_redirects import (
    MAX_REDIRECT_URIS,
    AppType,
    redirect_uri_problem,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

__all__ = [
    "AUTHORIZE_PATH",
    "CONSENT_PATH",
    "DEFAULT_APPROVED_SCOPES",
    "DEFAULT_CLIENT_KEY",
    "DEFAULT_CLIENT_SECRET",
    "DEFAULT_USERS",
    "KNOWN_SCOPES",
    "REVOKE_PATH",
    "SCOPE_DESCRIPTIONS",
    "TOKEN_PATH",
    "USER_INFO_PATH",
    "AppType",
    "ConsentMode",
    "EmulatedApp",
    "EmulatedUser",
    "ErrorStatus",
    "PkceMode",
    "TikTokEmulator",
    "main",
    "redirect_uri_problem",
]

logger = logging.getLogger(__name__)

AUTHORIZE_PATH: Final = "/v2/auth/authorize/"
CONSENT_PATH: Final = "/v2/auth/authorize/consent"
TOKEN_PATH: Final = "/v2/oauth/token/"
REVOKE_PATH: Final = "/v2/oauth/revoke/"

#: Which PKCE challenge encodings the token endpoint accepts.
PkceMode: TypeAlias = Literal["hex", "base64url", "either"]
#: The HTTP status of OAuth errors (token and revoke endpoints): ``"200"`` as TikTok
#: answers, with the error in the body, or ``"4xx"``: 400, and 401 for ``invalid_client``.
ErrorStatus: TypeAlias = Literal["200", "4xx"]

_PORTABILITY: Final = "Download a copy of your TikTok data"

#: Every scope in TikTok's scopes reference, with the text shown on the consent screen.
SCOPE_DESCRIPTIONS: Final[Mapping[str, str]] = {
    "user.info.basic": "Read your profile info (avatar, display name)",
    "user.info.profile": "Read your profile details (bio, profile link, verification, username)",
    "user.info.stats": "Read your statistics (followers, following, likes, video count)",
    "video.list": "Read your public videos",
    "video.upload": "Share content as a draft to your TikTok account",
    "video.publish": "Post content to your account",
    "portability.activity.ongoing": f"{_PORTABILITY}: activity, on an ongoing basis",
    "portability.activity.single": f"{_PORTABILITY}: activity, once",
    "portability.all.ongoing": f"{_PORTABILITY}: all of it, on an ongoing basis",
    "portability.all.single": f"{_PORTABILITY}: all of it, once",
    "portability.directmessages.ongoing": f"{_PORTABILITY}: direct messages, ongoing",
    "portability.directmessages.single": f"{_PORTABILITY}: direct messages, once",
    "portability.postsandprofile.ongoing": f"{_PORTABILITY}: posts and profile, ongoing",
    "portability.postsandprofile.single": f"{_PORTABILITY}: posts and profile, once",
    "research.adlib.basic": "Research API: the commercial content library",
    "research.data.basic": "Research API: public data",
    "research.data.u18eu": "Research API: public data of EU users under 18",
    "research.data.vra": "Research API: data for vetted researchers",
    "local.product.manage": "Manage your local service products",
    "local.shop.manage": "Manage your local service shops",
    "local.voucher.manage": "Manage your local service vouchers",
    "minis.public.upsert": "Publish your TikTok Minis",
}
KNOWN_SCOPES: Final = frozenset(SCOPE_DESCRIPTIONS)
#: Scopes a new app is approved for by default (``user.info.basic`` is always included).
DEFAULT_APPROVED_SCOPES: Final = frozenset(
    {"user.info.basic", "user.info.profile", "user.info.stats", "video.list"}
)
__getattr__ = deprecated_module_names(
    __name__, {"FIELD_SCOPES": ("keyloom_tiktok.emulator_api.FIELD_SCOPES", _FIELD_SCOPES)}
)

DEFAULT_CLIENT_KEY: Final = "awkeyloomemulator"
DEFAULT_CLIENT_SECRET: Final = "keyloom-emulator-client-secret"
_DEFAULT_REDIRECT_URIS: Final = (
    "http://127.0.0.1:*/callback/",
    "http://localhost:*/callback/",
    "http://127.0.0.1:*/api/auth/oauth/tiktok/callback",
    "http://localhost:*/api/auth/oauth/tiktok/callback",
)
_OPEN_ID_NAMESPACE: Final = uuid.UUID("6f1d3c52-4a55-4b7e-9d8a-7c1f0e2b9a41")
_UNION_ID_NAMESPACE: Final = uuid.UUID("0b8e7f15-2d6c-4f3a-8e21-5a9c4d7e1f60")
_PKCE_ENCODINGS: Final[Mapping[str, tuple[PkceEncoding, ...]]] = {
    "hex": ("hex",),
    "base64url": ("base64url",),
    "either": ("hex", "base64url"),
}
_MAX_VERIFIER_LENGTH: Final = 128
_AVATAR_COLOURS: Final = ("#fe2c55", "#25f4ee", "#7b61ff", "#ff9f1c", "#2ec4b6", "#3a86ff")

_TOKEN_ERRORS: Final[Mapping[EndpointFailure, str]] = {
    RequestFailure.CONTENT_TYPE: (
        "Only `application/x-www-form-urlencoded` is accepted as Content-Type."
    ),
    RequestFailure.MALFORMED: "The request parameters are malformed.",
    RequestFailure.SECRET_MISSING: "Client secret is missed in request.",
    RequestFailure.INVALID_CLIENT: "Client key or client secret is invalid.",
    RequestFailure.UNSUPPORTED_GRANT_TYPE: "The grant type is not supported.",
    RequestFailure.INVALID_VERIFIER: "Code verifier or code challenge is invalid.",
    RequestFailure.UNKNOWN_USER: "The user of this code no longer exists.",
    RequestFailure.FOREIGN_TOKEN: "The token was issued to another client.",
    CodeFailure.UNKNOWN: "Authorization code is invalid.",
    CodeFailure.EXPIRED: "Authorization code is expired.",
    CodeFailure.USED: "Authorization code has been used.",
    CodeFailure.CLIENT_MISMATCH: "Authorization code was issued to another client.",
    CodeFailure.REDIRECT_MISMATCH: "Redirect_uri is not matched with the uri when requesting code.",
    TokenFailure.UNKNOWN: "Refresh token is invalid.",
    TokenFailure.EXPIRED: "Refresh token is expired.",
    TokenFailure.REVOKED: "Refresh token has been revoked or rotated.",
    TokenFailure.CLIENT_MISMATCH: "Refresh token was issued to another client.",
}


def _str_tuple(values: Iterable[str]) -> tuple[str, ...]:
    return (values,) if isinstance(values, str) else tuple(values)


def _approved(values: Iterable[str]) -> frozenset[str]:
    return frozenset(_str_tuple(values)) | {BASIC}


@attrs.frozen(kw_only=True)
class EmulatedApp(Client):
    """A client registered with the emulated TikTok developer portal.

    Attributes:
        client_id: TikTok's client id, the ``client_key`` (the constructor's keyword).
        client_secret: The client secret.
        redirect_uris: Registered redirect URIs (1 to 10), checked by the rules of
            *app_type* (see :func:`redirect_uri_problem`).
        app_type: ``"web"`` or ``"desktop"``; desktop apps must use PKCE.
        approved_scopes: Scopes the app was approved for; ``user.info.basic`` is always in.
        name: The app name shown on the consent screen.

    """

    client_id: str = attrs.field(alias="client_key", validator=attrs.validators.min_len(1))
    client_secret: str = attrs.field(repr=False, validator=attrs.validators.min_len(1))
    redirect_uris: tuple[str, ...] = attrs.field(converter=_str_tuple)
    app_type: AppType = attrs.field(
        default="web", validator=attrs.validators.in_(get_args(AppType))
    )
    approved_scopes: frozenset[str] = attrs.field(
        default=DEFAULT_APPROVED_SCOPES, converter=_approved
    )

    def __attrs_post_init__(self) -> None:
        """Check the redirect URIs and scopes like the developer portal does."""
        if not 1 <= len(self.redirect_uris) <= MAX_REDIRECT_URIS:
            raise ValueError("an app needs 1 to 10 redirect URIs")
        for uri in self.redirect_uris:
            problem = redirect_uri_problem(uri, self.app_type)
            if problem is not None:
                raise ValueError(f"redirect URI {uri!r} {problem}")
        unknown = self.approved_scopes - KNOWN_SCOPES
        if unknown:
            raise ValueError(f"unknown scopes: {', '.join(sorted(unknown))}")

    @classmethod
    def default(cls) -> EmulatedApp:
        """Return the built-in test app: a desktop app with loopback wildcard-port redirects.

        Its redirect URIs are ``http://127.0.0.1:*/callback/``,
        ``http://localhost:*/callback/`` and the same hosts with
        ``/api/auth/oauth/tiktok/callback``.
        """
        return cls(
            client_key=DEFAULT_CLIENT_KEY,
            client_secret=DEFAULT_CLIENT_SECRET,
            redirect_uris=_DEFAULT_REDIRECT_URIS,
            app_type="desktop",
        )

    @property
    def client_key(self) -> str:
        """The :attr:`client_id` (TikTok's name for it)."""
        return self.client_id


@attrs.frozen(kw_only=True)
class EmulatedUser:
    """A TikTok account in the emulator's user directory.

    Attributes:
        user_id: Internal id (also used in avatar URLs).
        display_name: The display name.
        username: The unique handle, without ``@``.
        bio_description: The profile bio.
        is_verified: The verification badge.
        follower_count: Followers.
        following_count: Accounts followed.
        likes_count: Likes received.
        video_count: Public videos.

    """

    user_id: str = attrs.field(validator=attrs.validators.matches_re(r"[A-Za-z0-9._-]{1,64}"))
    display_name: str
    username: str = attrs.field(validator=attrs.validators.matches_re(r"[A-Za-z0-9._]{1,24}"))
    bio_description: str = ""
    is_verified: bool = False
    follower_count: int = 0
    following_count: int = 0
    likes_count: int = 0
    video_count: int = 0


#: The built-in user directory; the first user is the default.
DEFAULT_USERS: Final = (
    EmulatedUser(
        user_id="emulated-creator",
        display_name="Emulated Creator",
        username="emulated.creator",
        bio_description="Testing sign-in against an emulated TikTok.",
        is_verified=True,
        follower_count=12_345,
        following_count=321,
        likes_count=987_654,
        video_count=42,
    ),
    EmulatedUser(
        user_id="second-viewer",
        display_name="Second Viewer",
        username="second.viewer",
        follower_count=17,
        following_count=230,
        likes_count=45,
    ),
)


class TikTokEmulator(AuthorizationServer):
    """TikTok Login Kit v2 on a loopback port.

    Every constructor argument is also an attribute that may be changed while the emulator
    runs (for example ``emulator.consent = "deny"`` or ``emulator.faults.rate = 0.5``).

    :param clients: Registered apps; defaults to :meth:`EmulatedApp.default`.
    :param users: The user directory; defaults to :data:`DEFAULT_USERS`.
    :param default_user: The user id signed in by default; defaults to the first user.
    :param consent: ``"form"`` (an HTML consent page to submit), ``"approve"`` (the user
        grants at once) or ``"deny"`` (the user refuses at once).
    :param withheld_scopes: Optional scopes the user declines (``"approve"`` mode) or that
        start unticked (``"form"`` mode). ``user.info.basic`` cannot be withheld.
    :param error_status: The HTTP status of OAuth errors at the token and revoke endpoints:
        ``"200"`` (TikTok's observed behaviour: the error is only in the body) or ``"4xx"``
        (400, and 401 for ``invalid_client``, as RFC 6749 §5.2 has it). Injected faults
        keep their own status.
    :param api_errors_http_200: Answer v2 API errors (``/v2/user/info/`` and the routes of
        :mod:`~keyloom_tiktok.emulator_api`) with HTTP 200 too (one client reports TikTok
        doing so; its documentation gives 400/401/429).
    :param require_pkce_web: Whether web apps must send a PKCE challenge too.
    :param require_code_challenge_method: Refuse a ``code_challenge`` sent without
        ``code_challenge_method`` (error page). By default it means S256, because TikTok's
        own SDKs never send the method.
    :param pkce_encoding: Challenge encodings the token endpoint accepts.
    :param min_verifier_length: The shortest code verifier accepted (at most 128). TikTok's
        Android SDK sends 32 characters; ``43`` applies RFC 7636 (and TikTok's desktop doc).
    :param rotate_refresh_tokens: Whether a refresh returns a new refresh token and kills
        the old one.
    :param access_token_ttl: Access token lifetime in seconds (2 hours, as TikTok's 2026
        pages say; the classic page said 24 hours).
    :param refresh_token_ttl: Refresh token lifetime in seconds (180 days, as TikTok's 2026
        pages say; the classic page said 365 days).
    :param client_token_ttl: Client-credentials token lifetime in seconds.
    :param code_ttl: Authorization code lifetime in seconds.
    :param consent_ttl: Seconds a consent form stays valid.
    :param codes_need_encoding: Put ``*``, ``!``, ``~`` and a ``%xx`` sequence in codes, so
        clients must decode the callback parameter exactly once.
    :param auto_auth: Skip the consent form (in ``"form"`` mode) when the user already
        granted every requested scope to the app, unless ``disable_auto_auth=1`` is sent.
    :param revoke_forgets_consent: Whether revoking a live access token also forgets the
        user's remembered consent to the app, so the next sign-in shows the consent form
        again (TikTok removes the app from the user's connected apps).
    :param user_info_rate_limit: ``/v2/user/info/`` requests allowed per app per window,
        or ``None`` for no limit.
    :param rate_limit_window: Sliding window length in seconds.
    :param rate_limit_retry_after: Add a ``Retry-After`` header to the 429 of the v2 APIs'
        rate limits. TikTok documents none, so by default there is none.
    :param faults: Fault injector for the token, revoke and user-info endpoints; a disabled
        one (rate 0) by default.
    :param clock: The time source (codes, tokens, rate limits, consent forms).
    :param host: A loopback address.
    :param port: The port, ``0`` for a free one.
    """

    spec = SPEC
    builtin_client = (DEFAULT_CLIENT_KEY, DEFAULT_CLIENT_SECRET)
    default_redirect_uris = _DEFAULT_REDIRECT_URIS
    default_users = DEFAULT_USERS
    user_key_attribute = "user_id"
    consent_path = CONSENT_PATH
    user: ClassVar[Mapping[str, str]] = {"sub": "emulated-creator"}
    api_paths = frozenset({TOKEN_PATH, REVOKE_PATH, USER_INFO_PATH})
    required_scopes = frozenset({BASIC})
    scope_descriptions = SCOPE_DESCRIPTIONS
    redirect_error_descriptions: ClassVar[Mapping[str, str]] = {
        "access_denied": "The user denied the authorization request."
    }
    no_scope_denial = "The user did not grant any permission."
    strict_requests = True
    client_token_prefix = "clt."
    token_prefixes = ("act.", "rft.")
    token_error_descriptions = _TOKEN_ERRORS
    client_scopes_option = "approved_scopes"
    # TikTok's own example answers a redirect URI mismatch with invalid_request.
    token_error_codes: ClassVar[Mapping[EndpointFailure, str]] = {
        CodeFailure.REDIRECT_MISMATCH: "invalid_request",
        RequestFailure.INVALID_VERIFIER: "invalid_request",
    }
    clients: dict[str, EmulatedApp]  # type: ignore[assignment]  # it registers only apps

    # The constructor's options (see the class docstring), settable while the emulator runs:
    error_status = Setting[ErrorStatus](  # type: ignore[assignment]  # TikTok's two modes
        "200",
        choices=get_args(ErrorStatus),
        flag="--error-status",
        help_text="HTTP status of token and revoke errors: 200 as TikTok answers, or 4xx",
    )
    api_errors_http_200: bool = False
    require_pkce_web = Setting(
        default=True, flag="--no-pkce-web", help_text="do not require PKCE from web apps"
    )
    require_code_challenge_method: bool = False
    pkce_encoding = Setting[PkceMode]("hex", choices=get_args(PkceMode), flag="--pkce-encoding")
    min_verifier_length = Setting(32, bounds=(1, _MAX_VERIFIER_LENGTH))
    rotate_refresh_tokens = Setting(
        default=True, flag="--no-rotation", help_text="keep refresh tokens on refresh"
    )
    access_token_ttl = Setting[float](7_200, at="book.access_ttl", flag="--access-token-ttl")
    refresh_token_ttl = Setting[float](
        15_552_000, at="book.refresh_ttl", flag="--refresh-token-ttl"
    )
    client_token_ttl: float | None = 7_200
    code_ttl = Setting[float](600.0, at="book.code_ttl")
    codes_need_encoding: bool = True
    auto_auth: bool = True
    revoke_forgets_consent: bool = True
    user_info_rate_limit = Setting[int | None](
        600, at="rate_limiter.limit", flag="--user-info-rate-limit"
    )
    rate_limit_window = Setting[float](60.0, at="rate_limiter.window")
    rate_limit_retry_after: bool = False
    #: The kit's :attr:`book` of codes and tokens, by TikTok's emulator's older name.
    grants = DeprecatedAlias("book")
    #: The kit's :attr:`profile_url` (the spec's ``/v2/user/info/``), by an older name.
    user_info_url = DeprecatedAlias("profile_url")

    def setup(self) -> None:
        """Refuse an empty user directory; build the per-app ``/v2/user/info/`` limiter."""
        if not self.users:
            raise ValueError("the emulator needs at least one user")
        #: The per-app rate limiter of ``/v2/user/info/``.
        self.rate_limiter = SlidingWindowLimiter(None, 60.0, clock=self.clock)

    # -- the apps, the conformance convention and the command line -------------------------

    @classmethod
    def make_client(
        cls,
        client_id: str,
        client_secret: str,
        redirect_uris: Sequence[str],
        app_type: AppType | None = None,
        approved_scopes: Iterable[str] = DEFAULT_APPROVED_SCOPES,
    ) -> EmulatedApp:
        """An app; a desktop one if every redirect URI is a loopback one (unless *app_type*)."""
        uris = tuple(redirect_uris)
        if app_type is None:
            desktop = all(redirect_uri_problem(uri, "desktop") is None for uri in uris)
            app_type = "desktop" if desktop else "web"
        return EmulatedApp(
            client_key=client_id,
            client_secret=client_secret,
            redirect_uris=uris,
            app_type=app_type,
            approved_scopes=approved_scopes,
        )

    @staticmethod
    def user_label(user: EmulatedUser) -> str:
        """The display name and the ``@username``."""
        return f"{user.display_name} (@{user.username})"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """The app's type and scopes, and the settings' flags (TikTok's open behaviours)."""
        parser.add_argument("--app-type", choices=get_args(AppType), default="desktop")
        parser.add_argument(
            "--scopes",
            default=",".join(sorted(DEFAULT_APPROVED_SCOPES)),
            help="comma-separated scopes the app is approved for",
        )
        super().add_arguments(parser)

    @classmethod
    def client_options(cls, args: argparse.Namespace) -> dict[str, Any]:
        """``--app-type`` and ``--scopes``; a web app needs its own ``--redirect-uri``."""
        if args.app_type == "web" and not args.redirect_uri:
            raise ValueError("web apps need at least one --redirect-uri (https, not localhost)")
        return {"app_type": args.app_type, "approved_scopes": args.scopes.split(",")}

    def describe(self) -> list[str]:
        """The kit's lines (the endpoints and the redirect URIs), then the app type."""
        return [*super().describe(), f"  app type:      {self.default_app.app_type}"]

    def expected_profile(self, client_id: str, scopes: Iterable[str]) -> Mapping[str, Any]:
        """The default user as Keyloom should normalise it: ``open_id``, name, avatar, no e-mail."""
        del scopes
        user = self.users[self.default_user]
        return {
            "id": self.open_id(user.user_id, client_id),
            "name": user.display_name,
            "email": None,
            "image": self.url_for(f"/emulator/avatar/{user.user_id}.svg"),
        }

    @property
    def pkce_encodings(self) -> tuple[PkceEncoding, ...]:
        """The encodings :attr:`pkce_encoding` names."""
        return _PKCE_ENCODINGS[self.pkce_encoding]

    @property
    def revoke_url(self) -> str:
        """Absolute URL of the revocation endpoint."""
        return self.url_for(REVOKE_PATH)

    @staticmethod
    def open_id(user_id: str, client_key: str) -> str:
        """Return the ``open_id`` of a user for an app (stable per user and client key)."""
        return str(uuid.uuid5(_OPEN_ID_NAMESPACE, f"{client_key}\x00{user_id}"))

    @staticmethod
    def union_id(user_id: str) -> str:
        """Return the ``union_id`` of a user (the same for every app)."""
        return str(uuid.uuid5(_UNION_ID_NAMESPACE, user_id))

    # -- routes, faults and TikTok's answers ---------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        """The kit's routes, authorization without its slash, per-user pages, the APIs."""
        super().add_routes(app)
        app.router.add_get(AUTHORIZE_PATH.rstrip("/"), self.authorize)
        app.router.add_get("/emulator/avatar/{user_id}.svg", self.avatar)
        app.router.add_get("/emulator/@{username}", self.profile_page)
        ContentAPI.of(self).add_routes(app)

    def render_fault(
        self, kind: FaultKind, status: int, request: web.Request
    ) -> web.StreamResponse:
        """Shape injected HTTP errors like TikTok: v2 envelope or OAuth error body."""
        del kind
        if request.path == USER_INFO_PATH:
            return ContentAPI.of(self).fault(status)
        error = "server_error" if status == 500 else "temporarily_unavailable"
        return self.answer(request, self.error_body(error, "Injected fault."), status)

    # -- authorization -------------------------------------------------------------------

    def refused(self, params: Mapping[str, str]) -> web.Response | None:
        """TikTok's error page, naming the parameter to correct; never a redirect."""
        param = self._page_problem(params)
        if param is None:
            return None
        logger.info("authorization refused with an error page: %s", param)
        paragraphs = [
            "This may be due to specific app settings.",
            "If you're a developer, correct the following and try again:",
        ]
        if param == "client_secret":
            paragraphs.insert(
                0,
                "The client secret was sent to the authorization endpoint, where it ends up "
                "in browser history and server logs. Never send it there, and rotate it.",
            )
        page = message_page(
            title="TikTok",
            heading="We couldn't log in with TikTok",
            paragraphs=paragraphs,
            code=param,
            attributes={"error-param": param},
        )
        return html_response(page, status=400)

    def _page_problem(self, params: Mapping[str, str]) -> str | None:
        app = self.clients.get(params.get("client_key", ""))
        method = params.get("code_challenge_method")
        if params.get("error_type") == "scope":  # where a scope error sent the browser
            return "scope"
        if app is None or "client_secret" in params:
            return "client_key" if app is None else "client_secret"
        if not app.accepts_redirect_uri(params.get("redirect_uri", "")):
            return "redirect_uri"
        if not params.get("code_challenge"):
            pkce_needed = app.app_type == "desktop" or self.require_pkce_web
            return "code_challenge" if pkce_needed else None
        # TikTok's SDKs send no code_challenge_method: its absence means S256.
        if method != "S256" and (method is not None or self.require_code_challenge_method):
            return "code_challenge_method"
        return None

    async def authorize(self, request: web.Request) -> web.StreamResponse:
        """Check ``response_type`` and the scopes before the kit's consent, as TikTok does.

        An unknown or unapproved scope is not told to the client: the browser stays on
        TikTok, whose URL gains ``error=invalid_scope&error_type=scope``, and gets the error
        page there. A wrong ``response_type`` or no scope goes back to the client.
        """
        query = request.query
        if (page := self.refused(query)) is not None:
            return page
        app = self.clients[query["client_key"]]
        scopes = self.requested_scopes(query.get("scope", ""))
        if query.get("response_type") != "code":
            error, description = "unsupported_response_type", "The response_type must be code."
        elif not query.get("scope", "").strip() or not scopes:
            error, description = "invalid_request", "The scope parameter is missing."
        elif not app.approved_scopes.issuperset(scopes):
            logger.info("authorization refused for its scopes: %s", ",".join(scopes))
            here = [(k, v) for k, v in query.items() if k not in {"error", "error_type"}]
            here += [("error", "invalid_scope"), ("error_type", "scope")]
            location = f"{request.path}?{urlencode(here, quote_via=quote)}"
            return web.Response(
                status=302, headers={"Location": location, "Cache-Control": "no-store"}
            )
        else:
            return await super().authorize(request)
        params = {"error": error, "error_description": description, **self._state(query)}
        return self.back(query["redirect_uri"], params)

    def remembers_consent(self, pending: PendingAuthorization) -> bool:
        """:attr:`auto_auth`, unless the request says ``disable_auto_auth=1``."""
        return self.auto_auth and pending.params.get("disable_auto_auth") != "1"

    def consent_page_options(self, pending: PendingAuthorization) -> Mapping[str, Any]:
        """TikTok's title, notice, button labels and colour."""
        return {
            "title": f"TikTok - Authorize {self.clients[pending.client_id].name}",
            "notice": f"Emulated TikTok. You will return to {pending.redirect_uri}",
            "approve_label": "Authorize",
            "deny_label": "Cancel",
            "accent": "#fe2c55",
        }

    def check_authorization(self, params: Mapping[str, str]) -> str | None:
        """Nothing left to check: :meth:`authorize` did before the consent."""
        del params
        return None

    def callback_params(
        self, pending: PendingAuthorization, code: AuthorizationCode
    ) -> dict[str, str]:
        """``code``, the granted ``scopes`` (comma-separated) and ``state``."""
        scopes = {"scopes": ",".join(code.scopes)}
        return {"code": code.code, **scopes, **self._state(pending.params)}

    # -- token endpoint ------------------------------------------------------------------

    def token_answer(self, client: RegisteredClient, pair: TokenPair) -> Mapping[str, Any]:
        """The kit's answer with the user's ``open_id`` for this app, keys sorted as TikTok's."""
        answer = dict(super().token_answer(client, pair))
        answer["open_id"] = self.open_id(pair.user_id or "", client.client_id)
        answer["refresh_expires_in"] = answer.get("refresh_expires_in") or 0
        return dict(sorted(answer.items()))

    def token_error_status(self, failure: EndpointFailure) -> int:
        """200, or (``"4xx"``) 401 for ``invalid_client`` and 400 for the others."""
        if self.error_status == "200":
            return 200
        return 401 if failure is RequestFailure.INVALID_CLIENT else 400

    def answer(
        self, request: web.Request, body: Mapping[str, Any], status: int = 200
    ) -> web.Response:
        """JSON with an ``x-tt-logid`` header; an error's body carries the ``log_id`` too."""
        del request
        lid = log_id(self.clock)
        if "error" in body:
            description = body["error_description"]
            logger.info("OAuth error %s (%s), log_id %s", body["error"], description, lid)
            body = {**body, "log_id": lid}
        return web.json_response(dict(body), status=status, headers=api_headers(lid))

    # -- user info -----------------------------------------------------------------------

    async def userinfo(self, request: web.Request) -> web.StreamResponse:
        """``/v2/user/info/``, served by :meth:`ContentAPI.user_info` with the other v2 routes."""
        return await ContentAPI.of(self).user_info(request)

    # -- helper pages --------------------------------------------------------------------

    async def avatar(self, request: web.Request) -> web.StreamResponse:
        """A user's avatar: their initials on a colour of their own."""
        user = self.users.get(request.match_info.get("user_id", self.default_user))
        if user is None:
            raise web.HTTPNotFound
        try:
            size = min(max(int(request.query.get("size", "168")), 16), 1080)
        except ValueError:
            size = 168
        colour = _AVATAR_COLOURS[int(self.union_id(user.user_id)[:8], 16) % 6]
        return avatar_response(user.display_name, size=size, colour=colour)

    async def profile_page(self, request: web.Request) -> web.StreamResponse:
        """A tiny profile page (the ``profile_deep_link``)."""
        username = request.match_info["username"]
        user = next((u for u in self.users.values() if u.username == username), None)
        if user is None:
            raise web.HTTPNotFound
        page = message_page(
            title=f"{user.display_name} (@{user.username})",
            heading=user.display_name,
            paragraphs=[
                f"@{user.username}" + (" (verified)" if user.is_verified else ""),
                user.bio_description,
                (
                    f"{user.follower_count} followers, {user.following_count} following, "
                    f"{user.likes_count} likes, {user.video_count} videos"
                ),
            ],
        )
        return html_response(page)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the emulator from the command line (``python -m keyloom_tiktok.emulator``)."""
    return TikTokEmulator.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())

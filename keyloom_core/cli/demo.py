"""``keyloom demo``: a small site that signs in with an installed provider (TikTok by default).

With the provider's credentials set (``TIKTOK_CLIENT_ID`` / ``TIKTOK_CLIENT_SECRET`` for
TikTok, ``{env_prefix}_CLIENT_ID`` / ``_CLIENT_SECRET`` for any other) it talks to the
provider itself; without them it starts the emulator the provider's plugin ships on
127.0.0.1 and points the provider at it, so it works on a machine with no credentials and
no network. Any provider whose ``ProviderSpec.emulator`` names an emulator can be demoed
(``keyloom demo --provider github``).

Sessions are server-side, in the embedded SQLite store: a file in the per-user data folder
(``$XDG_DATA_HOME/keyloom/demo.db``, ``~/Library/Application Support/keyloom`` on macOS,
``%LOCALAPPDATA%\\keyloom`` on Windows), or any store URL given with ``--store``
(``memory://``, ``sqlite:///path.db``, ``redis://…``). The dashboard lists the signed-in
user's sessions and offers "Sign out everywhere" (``keyloom.sessions.revoke_all``).

Users and their linked accounts live in a :class:`~keyloom_core.users.MemoryAdapter`, like
the sign-ins' tokens (which are in memory too: a user kept across restarts would have
accounts without tokens). The dashboard lists the user's linked accounts (``GET
/api/auth/accounts``) with an "Unlink" button each (a CSRF-protected ``POST
/api/auth/accounts/unlink``; the last account's is disabled), and a "Link …" button for
each other provider of :data:`LINKABLE` that is installed (``/oauth/{id}/start?link=1``):
against its emulator too in emulator mode, and in provider mode when its
``{env_prefix}_CLIENT_ID`` / ``_CLIENT_SECRET`` are set.

A provider's plugin module (``ProviderSpec.plugin``) may offer ``demo_dashboard(*, keyloom,
tokens, provider_id, emulator)`` returning a :class:`DemoDashboard`: its routes are added to
the demo app and its section to the signed-in page, with the sign-ins' tokens kept by a
:class:`~keyloom_core.tokens.TokenManager` on a :class:`~keyloom_core.tokens.MemoryTokenStore`
(with the ``tokens`` extra installed; without it the page shows the profile only).
"""

from __future__ import annotations

import argparse
import html
import importlib
import os
import secrets
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import attrs
from aiohttp import web

from .._config import define_keyloom
from .._plugins import PluginRegistry, RegisteredProvider
from ..errors import ConfigurationError, KeyloomError
from ..store import open_store
from ..users import MemoryAdapter
from ..web import CSRF_HEADER
from ..web._wire import cookie_value
from ..web.aiohttp import KEYLOOM_HANDLER, current_session, setup_keyloom
from ..web.sessions import check_csrf
from ._democheck import link_once, sign_in_once
from ._demopage import (
    ACCOUNTS_SCRIPT,
    EVERYWHERE_SCRIPT,
    SIGN_IN_SCRIPT,
    SIGN_OUT_SCRIPT,
    accounts_html,
    page_html,
    profile_html,
)

if TYPE_CHECKING:
    from .._keyloom import Keyloom
    from ..models import Provider
    from ..tokens import TokenManager
    from ..web import Session

__all__ = [
    "DEFAULT_PROVIDER",
    "LINKABLE",
    "DemoDashboard",
    "DemoSite",
    "add_arguments",
    "default_store_url",
    "demo_site",
    "run",
]

DEFAULT_PROVIDER = "tiktok"
#: Scopes the demo asks for, by provider; others ask for their spec's default scopes.
DEMO_SCOPES = {"tiktok": ("user.info.basic", "user.info.profile", "user.info.stats")}
#: Scopes the demo adds against the emulator only: at the real provider they need products
#: and an app review that a newcomer's app does not have yet.
EMULATOR_SCOPES = {"tiktok": ("video.list", "video.upload", "video.publish")}
#: Providers the signed-in page offers to link, when their plugin is installed.
LINKABLE = ("tiktok", "github")


def default_store_url() -> str:
    """The demo's SQLite store: ``keyloom/demo.db`` in the per-user data folder."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return f"sqlite://{(base / 'keyloom' / 'demo.db').resolve()}"


class DemoDashboard(Protocol):
    """What a provider's plugin adds to the demo's signed-in page (``demo_dashboard``)."""

    @property
    def style(self) -> str:
        """CSS added to the page."""

    @property
    def script(self) -> str:
        """JavaScript added to the page (``BASE`` and ``PROVIDER`` are defined)."""

    def add_routes(self, app: web.Application) -> None:
        """Add the dashboard's routes to the demo app."""

    async def section(self, request: web.Request, session: Session) -> str:
        """The HTML section for the signed-in *session*, escaped."""


def _token_manager() -> TokenManager | None:
    """A token manager on a memory store; ``None`` without ``keyloom-core[tokens]``."""
    try:
        from ..tokens import MemoryTokenStore, TokenManager  # noqa: PLC0415 - optional extra
    except ImportError:
        return None
    return TokenManager(MemoryTokenStore())


def _demo_dashboard(registered: RegisteredProvider, **parts: Any) -> DemoDashboard | None:
    """The provider plugin's ``demo_dashboard(**parts)``, if its module offers one."""
    module = registered.spec.plugin
    factory = getattr(importlib.import_module(module), "demo_dashboard", None) if module else None
    return factory(**parts) if callable(factory) else None


@attrs.frozen
class DemoSite:
    """The demo's running parts.

    Attributes:
        url: The demo site's URL.
        mode: ``"emulator"``, or the provider's id when it talks to the provider itself.
        provider_id: The provider the demo signs in with.
        keyloom: The Keyloom instance serving it.
        emulator_url: The emulator's URL in emulator mode.
        store: The store URL (sessions, used states, rate limits).
        linkable: The providers the signed-in page offers to link (:data:`LINKABLE`).
    """

    url: str
    mode: str
    provider_id: str
    keyloom: Keyloom
    emulator_url: str | None
    store: str = "memory://"
    linkable: tuple[str, ...] = ()


async def _signed_in(keyloom: Keyloom, request: web.Request) -> Session | None:
    """The request's session, if its user still exists (the demo keeps users in memory)."""
    session = await current_session(request)
    if session is None or keyloom.users is None:
        return session
    return session if await keyloom.users.get(session.user_id) is not None else None


def _build_app(
    keyloom: Keyloom,
    provider_id: str,
    *,
    emulated: bool,
    extension: DemoDashboard | None = None,
    linkable: tuple[str, ...] = (),
) -> web.Application:
    provider = keyloom.provider(provider_id)
    name = html.escape(provider.spec.name)
    routes = web.RouteTableDef()
    footer = (
        f"<p class=mode>Mode: {f'local {name} emulator' if emulated else name}"
        " &middot; redirect URI "
        f"<code>{html.escape(keyloom.redirect_uri(provider))}</code></p>"
    )

    def page(title: str, body: str, script: str, style: str = "") -> web.Response:
        text = page_html(title, body, script, keyloom.base_path, provider_id, style)
        return web.Response(text=text, content_type="text/html")

    @routes.get("/")
    async def index(request: web.Request) -> web.StreamResponse:
        if await _signed_in(keyloom, request) is not None:
            raise web.HTTPFound("/dashboard")
        body = (
            f"<h1>Keyloom demo</h1><p class=lead>Sign in with your {name} account.</p>"
            f"<button id=signin type=button>Sign in with {name}</button>" + footer
        )
        return page("Sign in", body, SIGN_IN_SCRIPT)

    @routes.get("/dashboard")
    async def dashboard(request: web.Request) -> web.StreamResponse:
        session = await _signed_in(keyloom, request)
        if session is None:
            raise web.HTTPFound("/")
        others = len(await keyloom.sessions.list(session.user_id)) - 1
        body = (
            profile_html(keyloom, session, provider, others)
            + accounts_html(keyloom, linkable)
            + (await extension.section(request, session) if extension else "")
            + "<button id=signout type=button class=secondary>Sign out</button>"
            "<p></p><button id=everywhere type=button class=secondary>"
            "Sign out everywhere</button>" + footer
        )
        scripts = SIGN_OUT_SCRIPT + EVERYWHERE_SCRIPT + ACCOUNTS_SCRIPT
        if extension is None:
            return page("Dashboard", body, scripts)
        return page("Dashboard", body, scripts + extension.script, extension.style)

    @routes.post("/signout-everywhere")
    async def signout_everywhere(request: web.Request) -> web.StreamResponse:
        session = await current_session(request)
        handler = request.app[KEYLOOM_HANDLER]
        if session is None or not check_csrf(
            keyloom,
            cookie_value(request.headers.getall("Cookie", ()), handler.csrf_cookie),
            request.headers.get(CSRF_HEADER),
            session_id=session.id,
        ):
            return web.json_response({"error": "csrf"}, status=403)
        ended = await keyloom.sessions.revoke_all(session.user_id)
        return web.json_response({"ok": True, "ended": ended})

    app = web.Application()
    app.add_routes(routes)
    if extension is not None:
        extension.add_routes(app)
    setup_keyloom(app, keyloom)
    return app


def _registered(registry: PluginRegistry, provider_id: str) -> RegisteredProvider:
    registered = registry.providers.get(provider_id)
    if registered is None:
        msg = f"no installed plugin offers the provider '{provider_id}'"
        hint = "pip install keyloom-tiktok" if provider_id == DEFAULT_PROVIDER else None
        raise ConfigurationError(msg, hint=hint or "keyloom providers lists what is installed")
    return registered


def _emulator_class(registered: RegisteredProvider) -> Any:
    if not registered.spec.emulator:
        msg = f"the {registered.spec.name} plugin ships no emulator: set its credentials"
        raise ConfigurationError(msg, provider_id=registered.spec.id)
    module, _, name = registered.spec.emulator.partition(":")
    return getattr(importlib.import_module(module), name)


def _listening_socket(host: str, port: int) -> socket.socket:
    """The demo's listening socket (*port* ``0``: a free one).

    Bound before the emulators start, so that none of them can take its port.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


@asynccontextmanager
async def demo_site(
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    emulator: bool | None = None,
    provider_id: str = DEFAULT_PROVIDER,
    store: str | None = None,
) -> AsyncIterator[DemoSite]:
    """Start the demo (and the emulator when there are no credentials); yields its parts.

    *store* is a store URL; by default the SQLite file of :func:`default_store_url`.
    """
    registry = PluginRegistry()
    registered = _registered(registry, provider_id)
    spec = registered.spec
    use_emulator = (
        emulator if emulator is not None else not os.environ.get(f"{spec.env_prefix}_CLIENT_ID")
    )
    sock = _listening_socket(host, port)
    port = sock.getsockname()[1]
    base_url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    secret = os.environ.get("KEYLOOM_SECRET") or secrets.token_urlsafe(32)
    async with AsyncExitStack() as stack:
        stack.callback(sock.close)
        provider, emu = await _provider(registered, use_emulator, base_url, stack)
        others = [
            await _provider(registry.providers[other], use_emulator, base_url, stack)
            for other in LINKABLE
            if other != provider_id
            and other in registry.providers
            and (
                registry.providers[other].spec.emulator
                if use_emulator
                else os.environ.get(f"{registry.providers[other].spec.env_prefix}_CLIENT_ID")
            )
        ]
        linkable = tuple(other.id for other, _ in others)
        store_url = store or default_store_url()
        tokens = _token_manager()
        keyloom = define_keyloom(
            providers=[provider, *(other for other, _ in others)],
            secret=secret,
            base_url=base_url,
            store=open_store(store_url),
            plugins=[tokens.plugin] if tokens else [],
            adapter=MemoryAdapter(),
        )
        dashboard = None
        if tokens is not None:
            tokens.bind(keyloom)
            dashboard = _demo_dashboard(
                registered, keyloom=keyloom, tokens=tokens, provider_id=provider_id, emulator=emu
            )
        app = _build_app(
            keyloom, provider_id, emulated=use_emulator, extension=dashboard, linkable=linkable
        )
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        await web.SockSite(runner, sock).start()
        yield DemoSite(
            url=base_url,
            mode="emulator" if use_emulator else provider_id,
            provider_id=provider_id,
            keyloom=keyloom,
            emulator_url=emu.url if emu is not None else None,
            store=store_url,
            linkable=linkable,
        )


async def _provider(
    registered: RegisteredProvider, emulated: bool, base_url: str, stack: AsyncExitStack
) -> tuple[Provider, Any]:
    """The demo's configured provider, and its emulator (started on *stack*) if *emulated*."""
    spec = registered.spec
    scopes = DEMO_SCOPES.get(spec.id, tuple(sorted(spec.default_scopes)))
    if not emulated:
        return registered.factory(scopes=scopes), None
    scopes = (*scopes, *EMULATOR_SCOPES.get(spec.id, ()))
    client_id, client_secret = "demo-client", secrets.token_urlsafe(24)
    emu = _emulator_class(registered).for_client(
        client_id=client_id,
        client_secret=client_secret,
        redirect_uris=[f"{base_url}/api/auth/oauth/{spec.id}/callback"],
        scopes=scopes,
    )
    await stack.enter_async_context(emu)
    provider = registered.factory(
        client_id=client_id,
        client_secret=client_secret,
        scopes=scopes,
        endpoint_origin=emu.url,
    )
    return provider, emu


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``keyloom demo``."""
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on")
    parser.add_argument("--port", type=int, default=8000, help="port (0 picks a free one)")
    parser.add_argument(
        "--provider",
        default=DEFAULT_PROVIDER,
        help=f"provider to sign in with (default {DEFAULT_PROVIDER}; see: keyloom providers)",
    )
    parser.add_argument(
        "--store",
        default=None,
        help="where sessions live: memory://, sqlite:///path.db or redis://host:6379/0 "
        "(default: an SQLite file in the per-user data folder)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="sign in once end to end against the emulator, print the result and exit",
    )


async def _serve(args: argparse.Namespace) -> int:
    async with demo_site(
        host=args.host, port=args.port, provider_id=args.provider, store=args.store
    ) as site:
        provider = site.keyloom.provider(site.provider_id)
        prefix = provider.spec.env_prefix
        print(f"Keyloom demo: {site.url}/  (open it in a browser)")
        if site.mode == "emulator":
            print(
                f"Mode: local {provider.spec.name} emulator at {site.emulator_url} "
                f"(set {prefix}_CLIENT_ID and {prefix}_CLIENT_SECRET for {provider.spec.name})"
            )
        else:
            print(f"Mode: {provider.spec.name} (credentials from {prefix}_CLIENT_ID / _SECRET)")
        print(f"Redirect URI: {site.keyloom.redirect_uri(provider)}")
        print(f"Sessions: server-side in {site.store}")
        names = ", ".join(site.keyloom.provider(p).spec.name for p in site.linkable)
        print(f"Users and linked accounts: in memory (linkable: {names or 'none installed'})")
        print("Press Ctrl+C to stop.", flush=True)
        await anyio.sleep_forever()
    return 0


async def _check(args: argparse.Namespace) -> int:
    async with demo_site(
        host=args.host,
        port=args.port or 0,
        emulator=True,
        provider_id=args.provider,
        store=args.store,
    ) as site:
        name, scopes = await sign_in_once(site.url, site.provider_id)
        linked = [
            f"linked {site.keyloom.provider(other).spec.name} and unlinked it"
            for other in site.linkable
            if await link_once(site.url, site.provider_id, other)
        ]
    done = "; ".join([f"signed in as {name!r} with scopes {', '.join(scopes)}", *linked])
    print(f"demo check passed: {done}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the demo until interrupted (or once, with ``--check``)."""
    try:
        return anyio.run(_check if args.check else _serve, args)
    except KeyloomError as exc:
        print(f"keyloom demo: {exc}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"keyloom demo: cannot start: {exc}", file=sys.stderr)
        return 1

"""``keyloom demo``: a small site that signs in with TikTok.

With ``TIKTOK_CLIENT_ID`` / ``TIKTOK_CLIENT_SECRET`` set it talks to TikTok itself; without
them it starts the TikTok plugin's emulator on 127.0.0.1 and points the provider at it,
so it works on a machine with no credentials and no network.
"""

from __future__ import annotations

import argparse
import html
import importlib
import os
import secrets
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any

import attrs

from .._config import define_keyloom
from ..errors import ConfigurationError, KeyloomError

if TYPE_CHECKING:
    from aiohttp import web

    from .._keyloom import Keyloom

__all__ = ["DemoSite", "add_arguments", "demo_site", "run"]

PROVIDER = "tiktok"
DEMO_SCOPES = ("user.info.basic", "user.info.profile", "user.info.stats")

_STYLE = """
:root{color-scheme:light dark;--ink:#161823;--paper:#fff;--muted:#6b6e78;--line:#e3e3e6;
--accent:#fe2c55;--accent2:#25f4ee}
@media (prefers-color-scheme:dark){
:root{--ink:#f1f1f2;--paper:#121212;--muted:#a0a3ab;--line:#2c2c30}}
*{box-sizing:border-box}
body{margin:0;font:16px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;
color:var(--ink);background:var(--paper);display:grid;place-items:center;min-height:100vh}
main{width:min(440px,92vw);padding:2rem;border:1px solid var(--line);border-radius:16px}
h1{font-size:1.4rem;margin:0 0 .25rem}p.lead{color:var(--muted);margin:0 0 1.5rem}
button{all:unset;box-sizing:border-box;width:100%;text-align:center;cursor:pointer;
padding:.8rem 1rem;
border-radius:10px;background:var(--ink);color:var(--paper);font-weight:600;
box-shadow:-2px -2px 0 var(--accent2),2px 2px 0 var(--accent)}
button[disabled]{opacity:.7;cursor:progress}
button.secondary{background:transparent;color:var(--ink);border:1px solid var(--line);
box-shadow:none}
.profile{display:flex;gap:1rem;align-items:center;margin-bottom:1.25rem}
.profile img{width:72px;height:72px;border-radius:50%;border:2px solid var(--line)}
dl{display:grid;grid-template-columns:auto 1fr;gap:.35rem 1rem;margin:0 0 1.5rem}
dt{color:var(--muted)}dd{margin:0;overflow-wrap:anywhere}code{font-size:.85rem}
.chip{display:inline-block;padding:.1rem .5rem;margin:0 .25rem .25rem 0;border-radius:99px;
border:1px solid var(--line);font-size:.8rem}.chip.off{opacity:.5;text-decoration:line-through}
.mode{margin-top:1.5rem;font-size:.8rem;color:var(--muted);overflow-wrap:anywhere}
"""

_SIGN_IN_SCRIPT = """
document.getElementById("signin").addEventListener("click", (event) => {
  const button = event.currentTarget;
  button.disabled = true;
  button.textContent = "Connecting\\u2026";
  const params = new URLSearchParams({callbackUrl: "/dashboard"});
  window.location.assign(`${BASE}/oauth/tiktok/start?${params}`);
});
"""

_SIGN_OUT_SCRIPT = """
document.getElementById("signout").addEventListener("click", async (event) => {
  const button = event.currentTarget;
  button.disabled = true;
  button.textContent = "Signing out\\u2026";
  const csrf = await (await fetch(`${BASE}/csrf`, {credentials: "same-origin"})).json();
  await fetch(`${BASE}/logout`, {method: "POST", credentials: "same-origin",
    headers: {"x-keyloom-csrf": csrf.csrfToken}});
  window.location.assign("/");
});
"""


def _page(title: str, body: str, script: str, base_path: str) -> str:
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main>{body}</main><script>const BASE = {base_path!r};{script}</script>"
        "</body></html>"
    )


@attrs.frozen
class DemoSite:
    """The demo's running parts.

    Attributes:
        url: The demo site's URL.
        mode: ``"emulator"`` or ``"tiktok"``.
        keyloom: The Keyloom instance serving it.
        emulator_url: The emulator's URL in emulator mode.
    """

    url: str
    mode: str
    keyloom: Keyloom
    emulator_url: str | None


def _build_app(keyloom: Keyloom, mode: str) -> web.Application:
    from aiohttp import web  # noqa: PLC0415

    from ..web.aiohttp import current_session, setup_keyloom  # noqa: PLC0415

    routes = web.RouteTableDef()
    footer = (
        f'<p class=mode>Mode: {"local TikTok emulator" if mode == "emulator" else "TikTok"}'
        " &middot; redirect URI "
        f"<code>{html.escape(keyloom.redirect_uri(keyloom.provider(PROVIDER)))}</code></p>"
    )

    @routes.get("/")
    async def index(request: web.Request) -> web.StreamResponse:
        if await current_session(request) is not None:
            raise web.HTTPFound("/dashboard")
        body = (
            "<h1>Keyloom demo</h1><p class=lead>Sign in with your TikTok account.</p>"
            "<button id=signin type=button>Sign in with TikTok</button>" + footer
        )
        return web.Response(
            text=_page("Sign in", body, _SIGN_IN_SCRIPT, keyloom.base_path),
            content_type="text/html",
        )

    @routes.get("/dashboard")
    async def dashboard(request: web.Request) -> web.StreamResponse:
        session = await current_session(request)
        if session is None:
            raise web.HTTPFound("/")
        user = session.user
        granted = sorted(session.scopes)
        declined = sorted(set(keyloom.provider(PROVIDER).scopes) - set(granted))
        chips = "".join(f"<span class=chip>{html.escape(s)}</span>" for s in granted) + "".join(
            f"<span class='chip off' title='declined'>{html.escape(s)}</span>" for s in declined
        )
        image = user.get("image")
        avatar = f'<img src="{html.escape(image)}" alt="avatar">' if image else ""
        name = html.escape(str(user.get("name") or "TikTok user"))
        body = (
            f"<div class=profile>{avatar}<div><h1 id=display-name>{name}</h1>"
            "<p class=lead>Signed in with TikTok</p></div></div>"
            "<dl><dt>open_id</dt>"
            f"<dd><code id=open-id>{html.escape(str(user.get('id')))}</code></dd>"
            f"<dt>Scopes</dt><dd id=scopes>{chips}</dd></dl>"
            "<button id=signout type=button class=secondary>Sign out</button>" + footer
        )
        return web.Response(
            text=_page("Dashboard", body, _SIGN_OUT_SCRIPT, keyloom.base_path),
            content_type="text/html",
        )

    app = web.Application()
    app.add_routes(routes)
    setup_keyloom(app, keyloom)
    return app


def _emulator_class(keyloom_plugins: Any) -> Any:
    registered = keyloom_plugins.providers.get(PROVIDER)
    if registered is None or not registered.spec.emulator:
        msg = "the TikTok plugin is not installed: pip install keyloom-tiktok"
        raise ConfigurationError(msg)
    module, _, name = registered.spec.emulator.partition(":")
    return getattr(importlib.import_module(module), name)


@asynccontextmanager
async def demo_site(
    *, host: str = "127.0.0.1", port: int = 8000, emulator: bool | None = None
) -> AsyncIterator[DemoSite]:
    """Start the demo (and the emulator when there are no credentials); yields its parts."""
    from aiohttp import web  # noqa: PLC0415

    from .._plugins import PluginRegistry  # noqa: PLC0415

    use_emulator = emulator if emulator is not None else not os.environ.get("TIKTOK_CLIENT_ID")
    async with AsyncExitStack() as stack:
        sock_port = port
        if sock_port == 0:
            import socket  # noqa: PLC0415

            with socket.socket() as s:
                s.bind((host, 0))
                sock_port = s.getsockname()[1]
        base_url = f"http://{host}:{sock_port}"
        redirect_uri = f"{base_url}/api/auth/oauth/{PROVIDER}/callback"
        secret = os.environ.get("KEYLOOM_SECRET") or secrets.token_urlsafe(32)
        emulator_url = None
        registry = PluginRegistry()
        factory = registry.providers[PROVIDER].factory if PROVIDER in registry.providers else None
        if factory is None:
            msg = "the TikTok plugin is not installed: pip install keyloom-tiktok"
            raise ConfigurationError(msg)
        if use_emulator:
            emulator_cls = _emulator_class(registry)
            client_id, client_secret = "demo-client-key", secrets.token_urlsafe(24)
            emu = emulator_cls.for_client(
                client_id=client_id,
                client_secret=client_secret,
                redirect_uris=[redirect_uri],
                scopes=DEMO_SCOPES,
            )
            await stack.enter_async_context(emu)
            emulator_url = emu.url
            provider = factory(
                client_id=client_id,
                client_secret=client_secret,
                scopes=DEMO_SCOPES,
                endpoint_origin=emulator_url,
            )
        else:
            provider = factory(scopes=DEMO_SCOPES)
        keyloom = define_keyloom(providers=[provider], secret=secret, base_url=base_url)
        app = _build_app(keyloom, "emulator" if use_emulator else "tiktok")
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        await web.TCPSite(runner, host, sock_port).start()
        yield DemoSite(
            url=base_url,
            mode="emulator" if use_emulator else "tiktok",
            keyloom=keyloom,
            emulator_url=emulator_url,
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``keyloom demo``."""
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on")
    parser.add_argument("--port", type=int, default=8000, help="port (0 picks a free one)")
    parser.add_argument(
        "--check",
        action="store_true",
        help="sign in once end to end against the emulator, print the result and exit",
    )


async def _serve(args: argparse.Namespace) -> int:
    import anyio  # noqa: PLC0415

    async with demo_site(host=args.host, port=args.port) as site:
        print(f"Keyloom demo: {site.url}/  (open it in a browser)")
        if site.mode == "emulator":
            print(
                "Mode: local TikTok emulator at "
                f"{site.emulator_url} (set TIKTOK_CLIENT_ID and TIKTOK_CLIENT_SECRET for TikTok)"
            )
        else:
            print("Mode: TikTok (credentials from TIKTOK_CLIENT_ID / TIKTOK_CLIENT_SECRET)")
        print(f"Redirect URI: {site.keyloom.redirect_uri(site.keyloom.provider(PROVIDER))}")
        print("Press Ctrl+C to stop.", flush=True)
        await anyio.sleep_forever()
    return 0


async def _check(args: argparse.Namespace) -> int:
    from ._democheck import sign_in_once  # noqa: PLC0415

    async with demo_site(host=args.host, port=args.port or 0, emulator=True) as site:
        name, scopes = await sign_in_once(site.url)
    print(f"demo check passed: signed in as {name!r} with scopes {', '.join(scopes)}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the demo until interrupted (or once, with ``--check``)."""
    import anyio  # noqa: PLC0415

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

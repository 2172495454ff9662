"""``keyloom login <provider>``: sign in from a terminal over a loopback redirect.

It serves ``http://127.0.0.1:<port>/callback/`` with a tiny aiohttp server (the loopback
redirect URI that desktop apps register, e.g. with TikTok's desktop Login Kit), starts the
login with that redirect URI, opens the browser (or prints the URL with ``--no-browser``),
waits for the callback, completes the login and prints the profile, the granted scopes and
when the tokens expire. The tokens themselves are printed only with ``--show-tokens``.

Credentials come from the environment (``{PREFIX}_CLIENT_ID`` / ``_CLIENT_SECRET``).
``--emulator URL`` (or ``KEYLOOM_EMULATOR_URL``) points the provider at a running emulator
(``python -m keyloom_tiktok.emulator``, for example) instead of the real provider.
"""

from __future__ import annotations

import argparse
import html
import os
import secrets
import sys
import time
import webbrowser
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
from aiohttp import web

from .._config import define_keyloom
from .._plugins import PluginRegistry, RegisteredProvider
from ..errors import KeyloomError
from ..models import LoginResult, Provider, TokenSet

__all__ = ["CALLBACK_PATH", "DEFAULT_PORT", "EMULATOR_ENV", "add_arguments", "login", "run"]

DEFAULT_PORT = 8765
CALLBACK_PATH = "/callback/"
EMULATOR_ENV = "KEYLOOM_EMULATOR_URL"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the provider and the options."""
    parser.add_argument("provider", help="provider id, e.g. tiktok (see: keyloom providers)")
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"loopback port of the redirect URI (default {DEFAULT_PORT}; 0 for a free one)",
    )
    parser.add_argument(
        "--no-browser", action="store_true", help="print the URL instead of opening a browser"
    )
    parser.add_argument(
        "--show-tokens", action="store_true", help="also print the access and refresh tokens"
    )
    parser.add_argument(
        "--scopes",
        nargs="+",
        metavar="SCOPE",
        help="scopes to request (space- or comma-separated; default: the provider's)",
    )
    parser.add_argument(
        "--emulator",
        metavar="URL",
        default=os.environ.get(EMULATOR_ENV) or None,
        help=f"serve the provider's endpoints from this emulator (default: ${EMULATOR_ENV})",
    )
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait for the sign-in"
    )


def _page(title: str, text: str) -> str:
    return (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}"
        f"</title></head><body><h1>{html.escape(title)}</h1><p>{html.escape(text)}</p>"
        "</body></html>"
    )


class _Callback:
    """The loopback server's state: the first callback query and the outcome page."""

    def __init__(self) -> None:
        self.query: dict[str, str] | None = None
        self.received = anyio.Event()
        self.done = anyio.Event()
        self.title = "Sign-in finished"
        self.text = "You can close this tab and return to the terminal."

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self.query is not None:
            return web.Response(status=410, text="This sign-in was already handled.")
        self.query = dict(request.query)
        self.received.set()
        with anyio.move_on_after(30):
            await self.done.wait()
        return web.Response(
            text=_page(self.title, self.text),
            content_type="text/html",
            headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
        )


@asynccontextmanager
async def _loopback_server(port: int, callback: _Callback) -> AsyncIterator[int]:
    app = web.Application()
    app.router.add_get(CALLBACK_PATH, callback.handle)
    app.router.add_get(CALLBACK_PATH.rstrip("/"), callback.handle)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


def _expiry(expires_at: float | None, now: float) -> str:
    if expires_at is None:
        return "no expiry given"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(expires_at))
    minutes = max(int(expires_at - now), 0) // 60
    days, minutes = divmod(minutes, 24 * 60)
    left = f"{days}d {minutes // 60}h" if days else f"{minutes // 60}h {minutes % 60:02d}m"
    return f"{stamp} (in {left})"


def _report(result: LoginResult, *, show_tokens: bool) -> str:
    profile, tokens = result.profile, result.tokens
    now = time.time()
    lines = [
        f"Signed in with {result.provider_id}.",
        f"  id:       {profile.id}",
        f"  name:     {profile.name or '-'}",
        f"  email:    {profile.email or '-'}{' (verified)' if profile.email_verified else ''}",
        f"  image:    {profile.image or '-'}",
        f"  scopes:   {', '.join(sorted(result.granted_scopes)) or '-'}",
        f"  access token expires:  {_expiry(tokens.expires_at, now)}",
    ]
    if tokens.refresh_token:
        lines.append(f"  refresh token expires: {_expiry(tokens.refresh_expires_at, now)}")
    else:
        lines.append("  refresh token: none")
    if show_tokens:
        lines += _token_lines(tokens)
    else:
        lines.append("  (tokens hidden; --show-tokens prints them)")
    return "\n".join(lines) + "\n"


def _token_lines(tokens: TokenSet) -> list[str]:
    lines = [f"  access token:  {tokens.access_token}"]
    if tokens.refresh_token:
        lines.append(f"  refresh token: {tokens.refresh_token}")
    return lines


def _find(provider_id: str) -> RegisteredProvider:
    registry = PluginRegistry(autoload=True, strict=False)
    registered = registry.providers.get(provider_id)
    if registered is None:
        error = registry.missing(provider_id)
        if not error.message.startswith("no installed plugin"):
            raise error  # broken, claimed twice or switched off: it says why
        known = ", ".join(sorted(registry.providers)) or "none installed"
        msg = f"no installed plugin offers '{provider_id}' (providers: {known})"
        raise KeyloomError(msg, hint="keyloom providers lists them")
    return registered


def _configure(
    registered: RegisteredProvider, redirect_uri: str, origin: str | None, scopes: list[str] | None
) -> Provider:
    options: dict[str, Any] = {"redirect_uri": redirect_uri}
    if origin:
        options["endpoint_origin"] = origin
    if scopes:
        options["scopes"] = scopes
    provider: object = registered.factory(**options)
    if not isinstance(provider, Provider):
        msg = f"the factory of '{registered.spec.id}' did not return a Provider"
        raise KeyloomError(msg)
    return provider


async def login(args: argparse.Namespace, out: Any = None) -> int:
    """Run the login described by *args*; returns the exit code.

    :param out: where to print (default ``sys.stdout``).
    """
    write = (out or sys.stdout).write
    flush = getattr(out or sys.stdout, "flush", lambda: None)
    scopes = [s for part in args.scopes or () for s in part.replace(",", " ").split()] or None
    try:
        registered = _find(args.provider)
    except KeyloomError as exc:
        write(f"✗ {exc}\n" + (f"  {exc.hint}\n" if exc.hint else ""))
        return 2
    callback = _Callback()
    async with AsyncExitStack() as stack:
        port = await stack.enter_async_context(_loopback_server(args.port, callback))
        redirect_uri = f"http://127.0.0.1:{port}{CALLBACK_PATH}"
        try:
            provider = _configure(registered, redirect_uri, args.emulator, scopes)
            keyloom = define_keyloom(
                providers=[provider],
                secret=secrets.token_urlsafe(32),  # the login state never leaves this process
                base_url=f"http://127.0.0.1:{port}",
                plugins=[registered.plugin.plugin],
                autoload=False,
            )
        except KeyloomError as exc:
            write(f"✗ {exc}\n" + (f"  fix: {exc.hint}\n" if exc.hint else ""))
            return 2
        await stack.enter_async_context(keyloom)
        start = await keyloom.begin_login(provider.id, redirect_uri=redirect_uri)
        write(f"Redirect URI (register it with {provider.spec.name}): {redirect_uri}\n")
        write(f"Open this URL to sign in:\n  {start.url}\n")
        flush()
        if not args.no_browser:
            await anyio.to_thread.run_sync(webbrowser.open, start.url)
        try:
            with anyio.fail_after(args.timeout):
                await callback.received.wait()
        except TimeoutError:
            write(f"✗ no sign-in within {args.timeout:g}s\n")
            return 1
        query: Mapping[str, str] = callback.query or {}
        try:
            result = await keyloom.complete_login(provider.id, query, start.state)
        except KeyloomError as exc:
            callback.title, callback.text = "Sign-in failed", str(exc)
            callback.done.set()
            write(f"✗ sign-in failed: {exc} ({exc.code})\n")
            if exc.hint:
                write(f"  fix: {exc.hint}\n")
            return 1
        name = result.profile.name or result.profile.id
        callback.title, callback.text = f"Signed in as {name}", callback.text
        callback.done.set()
        write(_report(result, show_tokens=args.show_tokens))
        flush()
        await anyio.sleep(0.05)  # let the browser's page go out before the server stops
    return 0


def run(args: argparse.Namespace) -> int:
    """``keyloom login``: sign in and print the result."""
    return anyio.run(login, args, backend="asyncio")

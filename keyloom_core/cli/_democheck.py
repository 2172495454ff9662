"""``keyloom demo --check``: one sign-in through the demo as a browser would do it.

It follows every redirect itself, fills the emulator's consent form (keeping the ticked
scopes, pressing the approve button), lands on the dashboard and signs out again. With a
linkable provider installed it then links that provider's account to the signed-in user
and unlinks it (:func:`link_once`).
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urljoin

import aiohttp

from ..errors import KeyloomError

__all__ = ["consent", "link_once", "sign_in_once"]


class _FormReader(HTMLParser):
    """Collects the first form's action and the fields a browser would submit."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: list[tuple[str, str]] = []
        self.buttons: dict[str, tuple[str, str]] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and self.action is None:
            self.action = a.get("action", "")
        elif tag == "input" and "name" in a and "disabled" not in a:
            kind = a.get("type", "text")
            if kind == "hidden" or (kind == "checkbox" and "checked" in a):
                self.fields.append((a["name"], a.get("value", "on")))
        elif tag == "button" and "name" in a:
            self.buttons[a.get("value", "")] = (a["name"], a.get("value", ""))
        elif tag == "option" and "selected" in a:
            self.fields.append(("user", a.get("value", "")))


class DemoCheckError(KeyloomError):
    """The demo did not behave as a signed-in browser expects."""

    code = "demo_check_failed"


async def consent(http: aiohttp.ClientSession, start_url: str) -> tuple[int, str, str]:
    """Open *start_url*, approve the emulator's consent form as it is (if it shows one).

    Returns where the redirects ended: the HTTP status, the path and the page (without a
    consent form, as when the emulator remembers the consent, where the first ones ended).
    """
    async with http.get(start_url) as answer:
        page = await answer.text()
        consent_url = str(answer.url)
        form = _FormReader()
        form.feed(page)
        if form.action is None or "approve" not in form.buttons:
            return answer.status, answer.url.path, page
    fields = [*form.fields, form.buttons["approve"]]
    async with http.post(urljoin(consent_url, form.action), data=fields) as landed:
        return landed.status, landed.url.path, await landed.text()


async def sign_in_once(site_url: str, provider_id: str) -> tuple[str, list[str]]:
    """Sign in through the demo at *site_url*; return the display name and granted scopes."""
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as http:
        start = f"{site_url}/api/auth/oauth/{provider_id}/start?callbackUrl=/dashboard"
        status, path, dashboard = await consent(http, start)
        if path != "/dashboard" or status != 200:
            msg = f"expected the dashboard, got HTTP {status} at {path}"
            raise DemoCheckError(msg)
        name = re.search(r"id=display-name>([^<]*)<", dashboard)
        scopes = re.findall(r"<span class=chip>([^<]*)</span>", dashboard)
        async with http.get(f"{site_url}/api/auth/session") as session:
            if (await session.json()).get("user") is None:
                msg = "the session endpoint does not see the signed-in user"
                raise DemoCheckError(msg)
        async with http.get(f"{site_url}/api/auth/csrf") as csrf:
            token = (await csrf.json())["csrfToken"]
        async with http.post(
            f"{site_url}/api/auth/logout", headers={"x-keyloom-csrf": token}
        ) as out:
            if out.status != 200:
                msg = f"sign-out answered HTTP {out.status}"
                raise DemoCheckError(msg)
        return (name.group(1) if name else "?"), scopes


async def link_once(site_url: str, provider_id: str, other_id: str) -> int:
    """Sign in with *provider_id*, link *other_id*, unlink it; the accounts seen linked."""
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as http:
        auth = f"{site_url}/api/auth"
        for start in (
            f"{auth}/oauth/{provider_id}/start?callbackUrl=/dashboard",
            f"{auth}/oauth/{other_id}/start?link=1&callbackUrl=/dashboard",
        ):
            status, path, _ = await consent(http, start)
            if path != "/dashboard" or status != 200:
                msg = f"expected the dashboard, got HTTP {status} at {path}"
                raise DemoCheckError(msg)
        async with http.get(f"{auth}/accounts") as answer:
            accounts = (await answer.json()).get("accounts", [])
        linked = {a["provider"]: a for a in accounts}
        if set(linked) != {provider_id, other_id} or len({a["userId"] for a in accounts}) != 1:
            msg = f"expected one user with two linked accounts, got {sorted(linked)}"
            raise DemoCheckError(msg)
        async with http.get(f"{auth}/csrf") as csrf:
            token = (await csrf.json())["csrfToken"]
        query = {"provider": other_id, "providerAccountId": linked[other_id]["providerAccountId"]}
        async with http.post(
            f"{auth}/accounts/unlink", params=query, headers={"x-keyloom-csrf": token}
        ) as unlinked:
            if unlinked.status != 200:
                msg = f"unlinking answered HTTP {unlinked.status}"
                raise DemoCheckError(msg)
        return len(accounts)

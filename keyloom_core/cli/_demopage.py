"""The pages of ``keyloom demo``: style, scripts, the page frame, the linked-accounts part."""

from __future__ import annotations

import html
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .._keyloom import Keyloom
    from ..models import Provider
    from ..web import Session

__all__ = [
    "ACCOUNTS_SCRIPT",
    "EVERYWHERE_SCRIPT",
    "SIGN_IN_SCRIPT",
    "SIGN_OUT_SCRIPT",
    "accounts_html",
    "page_html",
    "profile_html",
]

STYLE = """
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
#accounts{margin:0 0 1.5rem}#accounts h2{font-size:1.05rem;margin:0 0 .5rem}
#account-list{list-style:none;padding:0;margin:0 0 .75rem}
.account{display:flex;gap:.75rem;align-items:center;justify-content:space-between;
padding:.4rem 0;border-bottom:1px solid var(--line)}
.account span{overflow-wrap:anywhere}.account button{width:auto;padding:.3rem .8rem}
#accounts-note{color:var(--accent)}#accounts .link{margin-bottom:.5rem}
[hidden]{display:none!important}
"""

SIGN_IN_SCRIPT = """
document.getElementById("signin").addEventListener("click", (event) => {
  const button = event.currentTarget;
  button.disabled = true;
  button.textContent = "Connecting\\u2026";
  const params = new URLSearchParams({callbackUrl: "/dashboard"});
  window.location.assign(`${BASE}/oauth/${PROVIDER}/start?${params}`);
});
"""

SIGN_OUT_SCRIPT = """
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


EVERYWHERE_SCRIPT = """
document.getElementById("everywhere").addEventListener("click", async (event) => {
  const button = event.currentTarget;
  button.disabled = true;
  button.textContent = "Signing out everywhere\\u2026";
  const csrf = await (await fetch(`${BASE}/csrf`, {credentials: "same-origin"})).json();
  await fetch("/signout-everywhere", {method: "POST", credentials: "same-origin",
    headers: {"x-keyloom-csrf": csrf.csrfToken}});
  window.location.assign("/");
});
"""


ACCOUNTS_SCRIPT = """
(() => {
const list = document.getElementById("account-list");
if (!list) return;
const NAMES = JSON.parse(list.dataset.names);
const note = document.getElementById("accounts-note");
const say = (text) => { note.textContent = text; note.hidden = !text; };
const problem = async (response) => {
  try { return (await response.json()).message || `HTTP ${response.status}`; }
  catch { return `HTTP ${response.status}`; }
};
const unlink = async (account, button) => {
  button.disabled = true;
  button.textContent = "Unlinking\u2026";
  const csrf = await (await fetch(`${BASE}/csrf`, {credentials: "same-origin"})).json();
  const query = new URLSearchParams({provider: account.provider,
    providerAccountId: account.providerAccountId});
  const response = await fetch(`${BASE}/accounts/unlink?${query}`, {method: "POST",
    credentials: "same-origin", headers: {"x-keyloom-csrf": csrf.csrfToken}});
  say(response.ok ? "" : `Not unlinked: ${await problem(response)}`);
  await show();
};
const show = async () => {
  const response = await fetch(`${BASE}/accounts`, {credentials: "same-origin"});
  if (!response.ok) { say(`The accounts could not be read: ${await problem(response)}`); return; }
  const {accounts} = await response.json();
  list.replaceChildren(...accounts.map((account) => {
    const item = document.createElement("li");
    item.className = "account";
    item.dataset.provider = account.provider;
    item.dataset.account = account.providerAccountId;
    const label = document.createElement("span");
    label.textContent = `${NAMES[account.provider] || account.provider} \u00b7 `
      + account.providerAccountId;
    const button = document.createElement("button");
    button.type = "button";
    button.className = "unlink secondary";
    button.textContent = "Unlink";
    if (accounts.length === 1) {
      button.disabled = true;
      button.title = "The only account left to sign in with: link another one first";
    }
    button.addEventListener("click", () => unlink(account, button));
    item.append(label, button);
    return item;
  }));
  for (const link of document.querySelectorAll("button[data-link]")) {
    link.hidden = accounts.some((account) => account.provider === link.dataset.link);
  }
  list.dataset.count = String(accounts.length);
};
for (const link of document.querySelectorAll("button[data-link]")) {
  link.addEventListener("click", () => {
    link.disabled = true;
    link.textContent = "Connecting\u2026";
    const params = new URLSearchParams({link: "1", callbackUrl: "/dashboard"});
    window.location.assign(`${BASE}/oauth/${link.dataset.link}/start?${params}`);
  });
}
show();
})();
"""


def page_html(
    title: str, body: str, script: str, base_path: str, provider_id: str, style: str = ""
) -> str:
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{STYLE}{style}</style></head>"
        f"<body><main>{body}</main><script>const BASE = {base_path!r};"
        f"const PROVIDER = {provider_id!r};{script}</script></body></html>"
    )


def accounts_html(keyloom: Keyloom, linkable: tuple[str, ...]) -> str:
    """The linked-accounts section (filled by the page's script from ``GET /accounts``)."""
    if keyloom.users is None:
        return ""
    names = {p.id: p.spec.name for p in keyloom.providers.values()}
    buttons = "".join(
        f'<button id="link-{html.escape(p)}" type=button class="secondary link" '
        f'data-link="{html.escape(p)}">Link {html.escape(names[p])}</button>'
        for p in linkable
    )
    return (
        "<section id=accounts><h2>Linked accounts</h2>"
        f'<ul id=account-list aria-live=polite data-names="{html.escape(json.dumps(names))}">'
        "</ul><p id=accounts-note class=note role=status hidden></p>"
        f"{buttons}</section>"
    )


def profile_html(keyloom: Keyloom, session: Session, provider: Provider, others: int) -> str:
    """Who is signed in: name, avatar, ids, granted and declined scopes, other browsers.

    *provider* is the demo's provider, named when the session's is not configured.
    """
    user = session.user
    via = keyloom.providers.get(session.provider_id, provider)
    count = f"and {others} other browser{'s' * (others != 1)}" if others else "only here"
    granted = sorted(session.scopes)
    declined = sorted(set(via.scopes) - set(granted))
    chips = "".join(f"<span class=chip>{html.escape(s)}</span>" for s in granted) + "".join(
        f"<span class='chip off' title='declined'>{html.escape(s)}</span>" for s in declined
    )
    image = user.get("image")
    avatar = f'<img src="{html.escape(image)}" alt="avatar">' if image else ""
    display = html.escape(str(user.get("name") or f"{via.spec.name} user"))
    user_row = (
        f"<dt>User id</dt><dd><code id=user-id>{html.escape(session.user_id)}</code></dd>"
        if keyloom.users is not None
        else ""
    )
    return (
        f"<div class=profile>{avatar}<div><h1 id=display-name>{display}</h1>"
        f"<p class=lead id=signed-in-with>Signed in with {html.escape(via.spec.name)}</p>"
        f"</div></div><dl>{user_row}<dt>Account id</dt>"
        f"<dd><code id=account-id>{html.escape(session.provider_account_id)}</code></dd>"
        f"<dt>Scopes</dt><dd id=scopes>{chips}</dd>"
        f"<dt>Signed in</dt><dd id=sessions>{count}</dd></dl>"
    )

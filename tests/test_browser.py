"""The demo app driven by real headless Chromium against the TikTok emulator."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

pytestmark = [pytest.mark.anyio, pytest.mark.browser]

CHROMIUM = os.environ.get("KEYLOOM_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("KEYLOOM_ARTIFACTS", Path(__file__).parent.parent / "artifacts"))
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

if not shutil.which(CHROMIUM):
    pytest.skip(
        f"Chromium not found at {CHROMIUM} (scripts/test.sh installs it)", allow_module_level=True
    )

playwright_api = pytest.importorskip("playwright.async_api")
pytest.importorskip("keyloom_tiktok")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def site(tmp_path):
    from keyloom_core.cli.demo import demo_site

    store = f"sqlite://{tmp_path}/demo.db"  # the demo's default kind of store, in a temp folder
    async with demo_site(port=0, emulator=True, store=store) as running:
        yield running


@pytest.fixture
async def page():
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        context = await browser.new_context()
        tab = await context.new_page()
        tab.set_default_timeout(15_000)
        try:
            yield tab
        finally:
            await browser.close()


async def test_sign_in_untick_optional_scope_and_sign_out(site, page) -> None:
    await page.goto(f"{site.url}/")
    button = page.locator("#signin")
    assert await button.inner_text() == "Sign in with TikTok"
    await button.click()
    # The emulator's consent page: untick an optional scope, then approve.
    await page.wait_for_selector("form button.approve")
    assert "TikTok" in await page.content()
    stats = page.locator("input[type=checkbox][value='user.info.stats']")
    assert await stats.is_checked()
    await stats.uncheck()
    await page.click("form button.approve")
    await page.wait_for_url(f"{site.url}/dashboard")

    assert await page.inner_text("#display-name") == "Emulated Creator"
    open_id = await page.inner_text("#account-id")
    assert len(open_id) > 10
    granted = await page.locator("#scopes .chip:not(.off)").all_inner_texts()
    declined = await page.locator("#scopes .chip.off").all_inner_texts()
    assert sorted(granted) == [
        "user.info.basic",
        "user.info.profile",
        "video.list",
        "video.publish",
        "video.upload",
    ]
    assert declined == ["user.info.stats"]
    avatar = page.locator(".profile img")
    assert await avatar.evaluate("img => img.complete && img.naturalWidth > 0")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    await page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 1000

    session = await page.evaluate("fetch('/api/auth/session').then(r => r.json())")
    assert session["user"]["id"] == await page.inner_text("#user-id")
    assert session["user"]["email"] is None
    # the one linked account: listed from GET /accounts, its unlink button disabled
    await page.wait_for_selector("#account-list[data-count='1']")
    only = page.locator("#account-list li.account")
    assert await only.get_attribute("data-account") == open_id
    assert await only.locator("button.unlink").is_disabled()

    await page.click("#signout")
    await page.wait_for_url(f"{site.url}/")
    await page.wait_for_selector("#signin")
    session = await page.evaluate("fetch('/api/auth/session').then(r => r.json())")
    assert session == {"session": None, "user": None}
    # the dashboard is closed again
    await page.goto(f"{site.url}/dashboard")
    assert page.url == f"{site.url}/"


async def test_dashboard_shows_stats_videos_chart_and_uploads_a_draft(
    site, page, tmp_path: Path
) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(f"{site.url}/")
    await page.click("#signin")
    await page.wait_for_selector("form button.approve")
    for scope in ("user.info.stats", "video.list", "video.upload"):
        assert await page.locator(f"input[type=checkbox][value='{scope}']").is_checked()
    await page.click("form button.approve")
    await page.wait_for_url(f"{site.url}/dashboard")

    # stats, with the exact figure in the tile's title
    assert await page.inner_text("#tt-stat-followers b") == "12.3K"
    assert await page.get_attribute("#tt-stat-followers b", "title") == "12345"
    assert await page.inner_text("#tt-stat-videos b") == "42"
    # recent videos: covers that load, titles, counts; and the chart across them
    videos = page.locator("#tt-videos li.video")
    assert await videos.count() == 12
    first = videos.first
    assert (await first.locator(".title").inner_text()).strip()
    counts = await first.locator(".counts").all_inner_texts()
    assert "\u2665" in counts[0]
    assert "comments" in counts[1]
    loaded = await page.eval_on_selector_all(
        "#tt-videos img", "imgs => imgs.filter(i => i.complete && i.naturalWidth > 0).length"
    )
    assert loaded == 12
    assert await page.locator("#tt-chart rect.views").count() == 12
    assert await page.locator("#tt-chart polyline.likes").count() == 1
    box = await page.locator("#tt-chart").bounding_box()
    assert box is not None
    assert box["width"] > 200
    assert box["height"] > 40

    # upload: inbox draft by default, bytes sent, then TikTok's final status
    assert await page.locator("input[name=mode][value=inbox]").is_checked()
    assert await page.locator("#tt-privacy").is_disabled()
    clip = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + bytes(300_000)
    await page.set_input_files(
        "#tt-file", files=[{"name": "clip.mp4", "mimeType": "video/mp4", "buffer": clip}]
    )
    await page.click("#tt-upload button[type=submit]")
    await page.wait_for_selector("#tt-status[data-status]", timeout=30_000)
    assert await page.get_attribute("#tt-status", "data-status") == "SEND_TO_USER_INBOX"
    assert await page.inner_text("#tt-status") == "Final status: SEND_TO_USER_INBOX"
    assert "sent to TikTok in 1 chunk" in await page.inner_text("#tt-sent")
    progress = await page.eval_on_selector("#tt-progress", "p => [p.value, p.max]")
    assert progress == [1, 1]

    # direct posting offers the creator's privacy options
    await page.check("input[name=mode][value=direct]")
    await page.wait_for_selector("#tt-privacy option[value=SELF_ONLY]", state="attached")
    assert await page.locator("#tt-privacy").is_enabled()
    await page.check("input[name=mode][value=inbox]")
    assert await page.locator("#tt-privacy").is_disabled()

    shot = tmp_path / "dashboard-tiktok.png"
    await page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    assert errors == []


async def test_button_shows_connecting_state(site, page) -> None:
    seen: list[tuple[str, bool]] = []
    await page.expose_function("reportButton", lambda text, disabled: seen.append((text, disabled)))
    await page.add_init_script(
        """
        document.addEventListener("DOMContentLoaded", () => {
          const button = document.getElementById("signin");
          if (!button) return;
          new MutationObserver(() => reportButton(button.textContent, button.disabled))
            .observe(button, {attributes: true, childList: true, characterData: true, subtree: true});
        });
        """
    )
    await page.goto(f"{site.url}/")
    await page.click("#signin")
    await page.wait_for_selector("form button.approve")  # the consent page loaded
    assert ("Connecting…", True) in seen


async def test_deny_shows_friendly_error_page(site, page) -> None:
    await page.goto(f"{site.url}/")
    await page.click("#signin")
    await page.wait_for_selector("form button.deny")
    await page.click("form button.deny")
    await page.wait_for_load_state()
    assert "/api/auth/oauth/tiktok/callback" in page.url
    text = await page.inner_text("body")
    assert "cancel" in text.lower()
    assert "Traceback" not in text
    await page.goto(f"{site.url}/api/auth/session")
    assert json.loads(await page.inner_text("body")) == {"session": None, "user": None}


async def test_sign_out_everywhere_ends_the_other_browsers_session(site) -> None:
    assert site.keyloom.sessions.server_side
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            tabs = []
            for _ in range(2):  # two browsers: separate cookie jars
                tab = await (await browser.new_context()).new_page()
                tab.set_default_timeout(15_000)
                await tab.goto(f"{site.url}/")
                await tab.click("#signin")
                # The emulator asks for consent once per user, then signs in straight away.
                await tab.wait_for_function(
                    "location.pathname === '/dashboard' || "
                    "!!document.querySelector('form button.approve')"
                )
                if not tab.url.endswith("/dashboard"):
                    await tab.click("form button.approve")
                await tab.wait_for_url(f"{site.url}/dashboard")
                tabs.append(tab)
            first, second = tabs
            await first.reload()
            assert await first.inner_text("#sessions") == "and 1 other browser"
            await first.click("#everywhere")
            await first.wait_for_url(f"{site.url}/")
            await first.wait_for_selector("#signin")
            session = await second.evaluate("fetch('/api/auth/session').then(r => r.json())")
            assert session == {"session": None, "user": None}
            await second.goto(f"{site.url}/dashboard")
            assert second.url == f"{site.url}/"
        finally:
            await browser.close()


async def test_link_github_see_two_accounts_and_unlink_one(site, page) -> None:
    pytest.importorskip("keyloom_github")
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(f"{site.url}/")
    await page.click("#signin")
    await page.click("form button.approve")
    await page.wait_for_url(f"{site.url}/dashboard")
    user_id = await page.inner_text("#user-id")
    await page.wait_for_selector("#account-list[data-count='1']")
    assert await page.locator("#account-list li.account").get_attribute("data-provider") == (
        "tiktok"
    )

    # link GitHub: the embedded GitHub emulator's consent page, then back to the dashboard
    link = page.locator("#link-github")
    assert await link.inner_text() == "Link GitHub"
    await link.click()
    await page.wait_for_selector("form button.approve")
    assert "GitHub" in await page.content()
    await page.click("form button.approve")
    await page.wait_for_url(f"{site.url}/dashboard")
    assert await page.inner_text("#user-id") == user_id  # the same user
    assert await page.inner_text("#signed-in-with") == "Signed in with GitHub"
    await page.wait_for_selector("#account-list[data-count='2']")
    rows = page.locator("#account-list li.account")
    assert sorted(await rows.evaluate_all("rows => rows.map(r => r.dataset.provider)")) == [
        "github",
        "tiktok",
    ]
    assert await page.locator("#link-github").is_hidden()  # linked already
    assert await page.locator("#tt-stats").count() == 1  # the TikTok part stays
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "dashboard-linked.png"), full_page=True)

    # unlink GitHub: one account left, its button disabled, "Link GitHub" offered again
    await page.click("#account-list li[data-provider=github] button.unlink")
    await page.wait_for_selector("#account-list[data-count='1']")
    assert await rows.get_attribute("data-provider") == "tiktok"
    assert await rows.locator("button.unlink").is_disabled()
    assert await page.locator("#link-github").is_visible()
    assert await page.locator("#accounts-note").is_hidden()
    accounts = await page.evaluate("fetch('/api/auth/accounts').then(r => r.json())")
    assert [a["provider"] for a in accounts["accounts"]] == ["tiktok"]
    assert errors == []

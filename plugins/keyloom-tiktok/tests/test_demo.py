"""The TikTok dashboard of ``keyloom demo`` over HTTP: the page, its JSON routes, uploads.

The demo runs for real on 127.0.0.1 in emulator mode (the emulated TikTok is a real aiohttp
server too); an ``aiohttp`` client plays the browser, signs in through the consent form and
calls the dashboard's routes as the page's script does.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import anyio
import pytest
from keyloom_tiktok.api import Video
from keyloom_tiktok.demo import PREFIX, chart_svg, compact

from keyloom_core.cli.demo import DemoSite, demo_site

pytestmark = pytest.mark.anyio

MP4_LIKE = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + bytes(40_000)


@pytest.fixture
async def site() -> AsyncIterator[DemoSite]:
    async with demo_site(port=0, emulator=True) as running:
        yield running


@pytest.fixture
async def browser() -> AsyncIterator[aiohttp.ClientSession]:
    """A client that keeps the demo's cookies (set for the IP address 127.0.0.1)."""
    jar = aiohttp.CookieJar(unsafe=True)
    timeout = aiohttp.ClientTimeout(total=20)
    async with aiohttp.ClientSession(cookie_jar=jar, timeout=timeout) as session:
        yield session


SignIn = Callable[..., Awaitable[str]]


async def _sign_in(
    site: DemoSite, browser: aiohttp.ClientSession, authorize: Any, untick: tuple[str, ...] = ()
) -> str:
    start = f"{site.url}/api/auth/oauth/tiktok/start?callbackUrl=/dashboard"
    async with browser.get(start, allow_redirects=False) as response:
        assert response.status == 302
        authorize_url = response.headers["Location"]
    outcome = await authorize(authorize_url, untick=untick)
    assert outcome.status == 302
    assert outcome.location is not None
    async with browser.get(outcome.location) as landed:
        assert landed.url.path == "/dashboard", landed.url
        assert landed.status == 200
        return await landed.text()


@pytest.fixture
def sign_in(site: DemoSite, browser: aiohttp.ClientSession, authorize: Any) -> SignIn:
    async def sign_in(*, untick: tuple[str, ...] = ()) -> str:
        return await _sign_in(site, browser, authorize, untick)

    return sign_in


async def _json(
    browser: aiohttp.ClientSession, url: str, **options: Any
) -> tuple[int, dict[str, Any]]:
    method = "POST" if "data" in options else "GET"
    async with browser.request(method, url, **options) as response:
        return response.status, await response.json()


async def _csrf(browser: aiohttp.ClientSession, site: DemoSite) -> str:
    status, body = await _json(browser, f"{site.url}/api/auth/csrf")
    assert status == 200
    token: str = body["csrfToken"]
    return token


def _form(name: str, data: bytes, **fields: str) -> aiohttp.FormData:
    form = aiohttp.FormData()
    for key, value in fields.items():
        form.add_field(key, value)
    form.add_field("video", data, filename=name, content_type="video/mp4")
    return form


async def _final_status(
    browser: aiohttp.ClientSession, site: DemoSite, publish_id: str
) -> dict[str, Any]:
    seen = []
    for _ in range(40):  # the demo's emulator finishes processing in about two seconds
        status, body = await _json(
            browser, f"{site.url}{PREFIX}/status", params={"publish_id": publish_id}
        )
        assert status == 200, body
        seen.append(body["status"])
        if body["final"]:
            assert "PROCESSING_UPLOAD" in seen
            return body
        await anyio.sleep(0.25)
    pytest.fail(f"no final status: {seen}")


async def test_the_page_shows_stats_videos_chart_and_the_upload_form(sign_in: SignIn) -> None:
    page = await sign_in()
    assert "<section id=tiktok>" in page
    assert 'id="tt-stat-followers"><b title="12345">12.3K</b>' in page
    assert 'id="tt-stat-likes"><b title="987654">987.7K</b>' in page
    assert page.count("<li class=video ") == 12
    assert page.count("<rect class=views ") == 12
    assert "<svg id=tt-chart " in page
    assert "<polyline class=likes points=" in page
    assert "<form id=tt-upload " in page
    assert "<input type=radio name=mode value=inbox checked>" in page
    assert "tt-upload-note" not in page
    assert "access_token" not in page
    assert "refresh_token" not in page


async def test_json_routes_for_stats_videos_and_creator(
    site: DemoSite, browser: aiohttp.ClientSession, sign_in: SignIn
) -> None:
    await sign_in()
    status, body = await _json(browser, f"{site.url}{PREFIX}/stats")
    assert status == 200
    assert body["user"]["display_name"] == "Emulated Creator"
    assert body["user"]["follower_count"] == 12_345
    assert body["user"]["video_count"] == 42

    status, body = await _json(browser, f"{site.url}{PREFIX}/videos", params={"limit": "5"})
    assert status == 200
    videos = body["videos"]
    assert len(videos) == 5
    times = [v["create_time"] for v in videos]
    assert times == sorted(times, reverse=True)
    assert all(v["cover_image_url"].startswith(site.emulator_url or "?") for v in videos)
    async with browser.get(videos[0]["cover_image_url"]) as cover:
        assert cover.status == 200
        assert cover.content_type == "image/svg+xml"

    for bad in ("0", "21", "x"):
        status, body = await _json(browser, f"{site.url}{PREFIX}/videos", params={"limit": bad})
        assert status == 400
        assert body["error"] == "invalid_request"

    status, body = await _json(browser, f"{site.url}{PREFIX}/creator")
    assert status == 200
    assert "SELF_ONLY" in body["privacy_level_options"]


async def test_upload_to_inbox_and_direct_post_reach_a_final_status(
    site: DemoSite, browser: aiohttp.ClientSession, sign_in: SignIn
) -> None:
    await sign_in()
    url = f"{site.url}{PREFIX}/upload"
    headers = {"x-keyloom-csrf": await _csrf(browser, site)}

    status, body = await _json(browser, url, data=_form("clip.mp4", MP4_LIKE), headers=headers)
    assert status == 200, body
    assert body["direct"] is False
    assert body["uploaded_bytes"] == len(MP4_LIKE)
    assert body["chunks"] == 1
    final = await _final_status(browser, site, body["publish_id"])
    assert final["status"] == "SEND_TO_USER_INBOX"
    assert final["uploaded_bytes"] == len(MP4_LIKE)

    form = _form("clip.mp4", MP4_LIKE, mode="direct", privacy_level="SELF_ONLY")
    status, body = await _json(browser, url, data=form, headers=headers)
    assert status == 200, body
    assert body["direct"] is True
    final = await _final_status(browser, site, body["publish_id"])
    assert final["status"] == "PUBLISH_COMPLETE"


async def test_bad_uploads_get_clear_errors(
    site: DemoSite, browser: aiohttp.ClientSession, sign_in: SignIn
) -> None:
    await sign_in()
    url = f"{site.url}{PREFIX}/upload"
    # no CSRF token: refused before anything is read or sent
    status, body = await _json(browser, url, data=_form("clip.mp4", MP4_LIKE))
    assert (status, body["error"]) == (403, "csrf")
    headers = {"x-keyloom-csrf": await _csrf(browser, site)}
    cases = [
        (_form("notes.txt", b"hello"), 400, "unsupported_file"),
        (_form("clip.mp4", b""), 400, "invalid_request"),
        (_form("clip.mp4", MP4_LIKE, mode="later"), 400, "invalid_request"),
        (_form("clip.mp4", MP4_LIKE, mode="direct"), 400, "invalid_request"),
        (_form("clip.mp4", MP4_LIKE, mode="direct", privacy_level="EVERYONE_ELSE"), 400, None),
    ]
    for form, expected, error in cases:
        status, body = await _json(browser, url, data=form, headers=headers)
        assert status == expected, body
        assert error is None or body["error"] == error
        assert "Traceback" not in body["message"]
    status, body = await _json(browser, url, data=b"plain", headers=headers)
    assert (status, body["error"]) == (400, "invalid_request")
    for publish_id in ("", "x" * 200, "<script>"):
        status, body = await _json(
            browser, f"{site.url}{PREFIX}/status", params={"publish_id": publish_id}
        )
        assert (status, body["error"]) == (400, "invalid_request")


async def test_privacy_option_the_creator_lacks_is_refused_by_name(
    site: DemoSite, browser: aiohttp.ClientSession, sign_in: SignIn
) -> None:
    await sign_in()
    headers = {"x-keyloom-csrf": await _csrf(browser, site)}
    form = _form("clip.mp4", MP4_LIKE, mode="direct", privacy_level="FOLLOWER_OF_CREATOR")
    status, body = await _json(browser, f"{site.url}{PREFIX}/upload", data=form, headers=headers)
    assert (status, body["error"]) == (400, "tiktok_creator_options")
    assert "privacy level" in body["message"]
    assert "SELF_ONLY" in body["message"]


async def test_scopes_not_granted_are_named(
    site: DemoSite, browser: aiohttp.ClientSession, sign_in: SignIn
) -> None:
    page = await sign_in(untick=("user.info.stats", "video.list", "video.upload", "video.publish"))
    assert "<svg" not in page
    assert "Grant the user.info.stats permission" in page
    assert "Grant the video.list permission" in page
    assert "Grant the video.upload permission" in page
    assert "<form id=tt-upload" not in page
    for route, scope in (("stats", "user.info.stats"), ("videos", "video.list")):
        status, body = await _json(browser, f"{site.url}{PREFIX}/{route}")
        assert (status, body["error"], body["scope"]) == (403, "scope_not_granted", scope)
    status, body = await _json(browser, f"{site.url}{PREFIX}/creator")
    assert (status, body["scope"]) == (403, "video.publish")
    headers = {"x-keyloom-csrf": await _csrf(browser, site)}
    status, body = await _json(
        browser, f"{site.url}{PREFIX}/upload", data=_form("clip.mp4", MP4_LIKE), headers=headers
    )
    assert (status, body["scope"]) == (403, "video.upload")


async def test_signed_out_requests_are_refused(
    site: DemoSite, browser: aiohttp.ClientSession
) -> None:
    for route in ("stats", "videos", "creator", "status"):
        status, body = await _json(browser, f"{site.url}{PREFIX}/{route}")
        assert (status, body["error"]) == (401, "not_signed_in")
    status, body = await _json(
        browser, f"{site.url}{PREFIX}/upload", data=_form("clip.mp4", MP4_LIKE)
    )
    assert (status, body["error"]) == (401, "not_signed_in")


async def test_without_the_tokens_extra_the_demo_shows_the_profile_only(
    monkeypatch: pytest.MonkeyPatch, browser: aiohttp.ClientSession, authorize: Any
) -> None:
    monkeypatch.setitem(sys.modules, "keyloom_core.tokens", None)  # as if not installed
    async with demo_site(port=0, emulator=True) as site:
        page = await _sign_in(site, browser, authorize)
        assert "id=display-name>Emulated Creator<" in page
        assert "<section id=tiktok>" not in page
        async with browser.get(f"{site.url}{PREFIX}/stats") as response:
            assert response.status == 404


def test_the_chart_escapes_titles_and_scales_each_series() -> None:
    videos = [
        Video(id="2", title='<script>alert("x")</script>', view_count=1000, like_count=10),
        Video(id="1", title="a & b", view_count=500, like_count=40),
    ]
    svg = chart_svg(videos, width=200, height=100)
    assert "<script>" not in svg
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;: 1,000 views, 10 likes" in svg
    assert "a &amp; b: 500 views, 40 likes" in svg
    assert "views (max 1K)" in svg
    assert "likes (max 40)" in svg
    # oldest first: the second video's bar is on the left and half as tall as the newest one's
    assert svg.index("a &amp; b") < svg.index("&lt;script&gt;")
    assert chart_svg([]) == ""


def test_compact_numbers() -> None:
    assert [compact(n) for n in (None, 7, 999, 1000, 12_345, 987_654, 2_500_000)] == [
        "\u2013",
        "7",
        "999",
        "1K",
        "12.3K",
        "987.7K",
        "2.5M",
    ]

"""The TikTok part of ``keyloom demo``: stats, recent videos with a chart, and an upload form.

``keyloom demo`` looks for ``demo_dashboard`` in the provider's plugin module and, when it
finds it, calls it with the running parts (``keyloom``, ``tokens``, ``provider_id``,
``emulator``); the :class:`TikTokDashboard` it returns adds its routes to the demo app and
its section to the signed-in page.

Routes (JSON, for the TikTok account of the request's session: the one it signed in with,
or, with a users adapter, the TikTok account linked to its user):

========  ==============================  ===============================================
``GET``   ``/demo/tiktok/stats``          profile and stats (``user.info.stats``)
``GET``   ``/demo/tiktok/videos``         recent videos (``video.list``), ``?limit=1..20``
``GET``   ``/demo/tiktok/creator``        ``creator_info``: privacy options (``video.publish``)
``POST``  ``/demo/tiktok/upload``         multipart ``video`` file, ``mode`` = ``inbox`` or
                                          ``direct`` (with ``privacy_level``); CSRF header
``GET``   ``/demo/tiktok/status``         ``?publish_id=``: the post's status
========  ==============================  ===============================================

Errors answer ``{"error": code, "message": text}`` with a fitting HTTP status; a scope the
user did not grant is named (``"scope"``) so the page can say which one to grant.
"""

from __future__ import annotations

import html
import re
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import anyio
from aiohttp import BodyPartReader, web

from keyloom_core import KeyloomError, ReauthenticationRequiredError, ScopeDeniedError
from keyloom_core.web import CSRF_HEADER, Session
from keyloom_core.web.aiohttp import KEYLOOM_HANDLER, current_session
from keyloom_core.web.sessions import check_csrf

from .api import (
    CreatorOptionsError,
    DirectPost,
    TikTokAPI,
    TikTokAPIError,
    TikTokRateLimitedError,
    UserInfo,
    Video,
)

if TYPE_CHECKING:
    from keyloom_core import Keyloom
    from keyloom_core.tokens import TokenManager

__all__ = ["PREFIX", "TikTokDashboard", "chart_svg"]

PREFIX: Final = "/demo/tiktok"
#: Videos shown on the page (one ``video.list`` page).
RECENT: Final = 12
#: Largest file the demo accepts for upload.
MAX_UPLOAD: Final = 64 * 1024 * 1024
#: Seconds the emulated TikTok takes to process an upload in the demo (30 by default).
EMULATED_PROCESSING_SECONDS: Final = 2.0
_MAX_PAGE: Final = 20
_SUFFIXES: Final = (".mp4", ".mov", ".webm")
_PUBLISH_ID: Final = re.compile(r"[A-Za-z0-9._~-]{1,128}")
_PRIVACY: Final = re.compile(r"[A-Z_]{1,40}")
_PIECE: Final = 256 * 1024

STYLE: Final = """
main{width:min(900px,94vw)}
#tiktok h2{font-size:1.05rem;margin:1.5rem 0 .5rem}
.stats{display:grid;grid-template-columns:repeat(4,1fr);gap:.5rem;margin:0 0 1rem}
.stat{border:1px solid var(--line);border-radius:12px;padding:.6rem;text-align:center}
.stat b{display:block;font-size:1.2rem}.stat span{color:var(--muted);font-size:.8rem}
.note{color:var(--muted);border:1px dashed var(--line);border-radius:10px;padding:.6rem .8rem}
.videos{list-style:none;padding:0;margin:0;display:grid;
grid-template-columns:repeat(auto-fill,minmax(120px,1fr));gap:.75rem}
.video img{width:100%;aspect-ratio:3/4;object-fit:cover;border-radius:10px;
border:1px solid var(--line);background:var(--line)}
.video .title{display:block;font-size:.85rem;font-weight:600;overflow-wrap:anywhere}
.video .counts{display:block;font-size:.75rem;color:var(--muted)}
#tt-chart{width:100%;height:auto;border:1px solid var(--line);border-radius:12px}
#tt-chart .views{fill:var(--accent2);opacity:.55}
#tt-chart .likes{fill:none;stroke:var(--accent);stroke-width:2}
#tt-chart .dot{fill:var(--accent)}#tt-chart text{fill:var(--muted);font-size:11px}
#tt-upload{display:grid;gap:.6rem;margin-bottom:1.5rem}
#tt-upload label{display:flex;gap:.5rem;align-items:center}
#tt-upload progress{width:100%}#tt-status.final{font-weight:600}
#tt-status.failed,.error{color:var(--accent)}
"""

SCRIPT: Final = """
(() => {
const form = document.getElementById("tt-upload");
if (!form) return;
const API = form.dataset.api;
const POLL_MS = 2500;  // TikTok allows 30 status calls a minute per token
const bar = document.getElementById("tt-progress");
const sent = document.getElementById("tt-sent");
const statusLine = document.getElementById("tt-status");
const privacy = document.getElementById("tt-privacy");
const say = (text, kind) => { statusLine.textContent = text; statusLine.className = kind || ""; };
const kb = (n) => n < 1024 ? `${n} B` : n < 1048576 ? `${(n / 1024).toFixed(1)} KB`
  : `${(n / 1048576).toFixed(1)} MB`;
const problem = async (response) => {
  try { return (await response.json()).message || `HTTP ${response.status}`; }
  catch { return `HTTP ${response.status}`; }
};
form.querySelectorAll("input[name=mode]").forEach((radio) => radio.addEventListener(
  "change", async () => {
    const direct = form.elements.mode.value === "direct";
    privacy.disabled = !direct;
    if (!direct || privacy.options.length) return;
    const response = await fetch(`${API}/creator`, {credentials: "same-origin"});
    if (!response.ok) { say(await problem(response), "failed"); return; }
    for (const level of (await response.json()).privacy_level_options) {
      privacy.add(new Option(level.replaceAll("_", " ").toLowerCase(), level));
    }
  }));
const poll = async (publishId) => {
  for (let round = 0; round < 120; round++) {
    const query = new URLSearchParams({publish_id: publishId});
    const response = await fetch(`${API}/status?${query}`, {credentials: "same-origin"});
    if (!response.ok) { say(await problem(response), "failed"); return; }
    const status = await response.json();
    if (status.final) {
      say(`Final status: ${status.status}` + (status.fail_reason ? ` (${status.fail_reason})` : ""),
        status.status === "FAILED" ? "final failed" : "final");
      statusLine.dataset.status = status.status;
      return;
    }
    say(`TikTok status: ${status.status}\\u2026`);
    await new Promise((done) => setTimeout(done, POLL_MS));
  }
  say("TikTok is still processing the video; check back later.", "failed");
};
form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  delete statusLine.dataset.status;
  say("Uploading\\u2026");
  const csrf = await (await fetch(`${BASE}/csrf`, {credentials: "same-origin"})).json();
  const request = new XMLHttpRequest();
  request.open("POST", `${API}/upload`);
  request.setRequestHeader("x-keyloom-csrf", csrf.csrfToken);
  request.upload.addEventListener("progress", (e) => {
    if (!e.lengthComputable) return;
    bar.max = e.total; bar.value = e.loaded;
    sent.textContent = `${kb(e.loaded)} of ${kb(e.total)} sent`;
  });
  request.addEventListener("load", async () => {
    button.disabled = false;
    let answer = {};
    try { answer = JSON.parse(request.responseText); } catch { answer = {}; }
    if (request.status !== 200) {
      say(answer.message || `Upload failed (HTTP ${request.status})`, "failed"); return;
    }
    sent.textContent = `${kb(answer.uploaded_bytes)} sent to TikTok in ${answer.chunks} chunk(s)`;
    bar.max = 1; bar.value = 1;
    await poll(answer.publish_id);
  });
  request.addEventListener("error", () => {
    button.disabled = false; say("The upload was interrupted; try again.", "failed");
  });
  request.send(new FormData(form));
});
})();
"""


class DemoRequestError(Exception):
    """A demo request that gets a JSON error answer (``status``, ``error``, ``message``)."""

    def __init__(self, status: int, error: str, message: str, *, scope: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.scope = scope


def _friendly(exc: KeyloomError | ValueError) -> DemoRequestError:
    """The answer a failed API call gets: what happened and what to do, no internals."""
    scope = None
    if isinstance(exc, ScopeDeniedError):
        scope = ", ".join(sorted(exc.missing))
        msg = f"Grant the {scope} permission (sign out, sign in again and leave it ticked)."
        status, error = 403, "scope_not_granted"
    elif isinstance(exc, ReauthenticationRequiredError):
        status, error, msg = 401, "sign_in_again", "Your TikTok sign-in ended: sign in again."
    elif isinstance(exc, TikTokRateLimitedError):
        status, error, msg = 429, "rate_limited", "TikTok asks to slow down: try again soon."
    elif isinstance(exc, CreatorOptionsError):
        allowed = f" ({', '.join(exc.allowed)})" if exc.allowed else ""
        status, error, msg = 400, exc.code, f"{exc.message}{allowed}"
    elif isinstance(exc, TikTokAPIError):
        status, error, msg = 502, exc.code, f"TikTok refused the call: {exc}"
    elif isinstance(exc, KeyloomError):
        status, error, msg = 502, exc.code, str(exc)
    else:
        status, error, msg = 400, "invalid_request", str(exc)
    return DemoRequestError(status, error, msg, scope=scope)


def _error_response(error: DemoRequestError) -> web.Response:
    body: dict[str, object] = {"error": error.error, "message": error.message}
    if error.scope:
        body["scope"] = error.scope
    return web.json_response(body, status=error.status)


def compact(number: int | None) -> str:
    """``12345`` as ``12.3K``; ``None`` as a dash."""
    if number is None:
        return "\u2013"
    for size, unit in ((1_000_000_000, "B"), (1_000_000, "M"), (1_000, "K")):
        if abs(number) >= size:
            return f"{number / size:.1f}".rstrip("0").rstrip(".") + unit
    return str(number)


def chart_svg(videos: Iterable[Video], *, width: int = 640, height: int = 180) -> str:
    """An inline SVG: views as bars and likes as a line, oldest video on the left.

    Each series is scaled to its own maximum (views run far above likes); every bar has a
    ``<title>`` with the video's title and counts. All text is escaped.
    """
    items = list(videos)[::-1]
    if not items:
        return ""
    pad, top, bottom = 8, 22, 18
    plot = height - top - bottom
    most_views = max((v.view_count or 0) for v in items) or 1
    most_likes = max((v.like_count or 0) for v in items) or 1
    step = (width - 2 * pad) / len(items)
    bars, points = [], []
    for i, video in enumerate(items):
        views, likes = video.view_count or 0, video.like_count or 0
        bar = plot * views / most_views
        x = pad + i * step
        label = html.escape(
            f"{video.title or video.id}: {views:,} views, {likes:,} likes", quote=True
        )
        bars.append(
            f'<rect class=views x="{x + step * 0.15:.1f}" y="{top + plot - bar:.1f}" '
            f'width="{step * 0.7:.1f}" height="{bar:.1f}"><title>{label}</title></rect>'
        )
        points.append((x + step / 2, top + plot - plot * likes / most_likes))
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    dots = "".join(f'<circle class=dot cx="{x:.1f}" cy="{y:.1f}" r="2.5"/>' for x, y in points)
    legend = (
        f'<text x="{pad}" y="14">\u25ae views (max {compact(most_views)})</text>'
        f'<text x="{width - pad}" y="14" text-anchor="end">'
        f"\u2014 likes (max {compact(most_likes)})</text>"
        f'<text x="{pad}" y="{height - 4}">older</text>'
        f'<text x="{width - pad}" y="{height - 4}" text-anchor="end">newer</text>'
    )
    return (
        f'<svg id=tt-chart viewBox="0 0 {width} {height}" role="img" '
        'aria-label="Views and likes of recent videos" xmlns="http://www.w3.org/2000/svg">'
        f'{legend}{"".join(bars)}<polyline class=likes points="{line}"/>{dots}</svg>'
    )


def _user_json(user: UserInfo) -> dict[str, object]:
    return {
        "display_name": user.display_name,
        "username": user.username,
        "is_verified": user.is_verified,
        "follower_count": user.follower_count,
        "following_count": user.following_count,
        "likes_count": user.likes_count,
        "video_count": user.video_count,
    }


def _video_json(video: Video) -> dict[str, object]:
    return {
        "id": video.id,
        "title": video.title or "",
        "cover_image_url": _safe_url(video.cover_image_url),
        "share_url": _safe_url(video.share_url),
        "create_time": video.create_time,
        "view_count": video.view_count,
        "like_count": video.like_count,
        "comment_count": video.comment_count,
        "share_count": video.share_count,
    }


def _safe_url(url: str | None) -> str | None:
    """*url* if it is an http(s) URL, else ``None`` (no ``javascript:`` in an ``src``)."""
    return url if url and url.lower().startswith(("https://", "http://")) else None


def _note(element_id: str, error: DemoRequestError) -> str:
    return f"<p class=note id={element_id}>{html.escape(error.message)}</p>"


class TikTokDashboard:
    """The TikTok section of the demo's signed-in page, and the routes behind it.

    :param keyloom: The demo's Keyloom instance.
    :param tokens: The token manager the sign-ins store their tokens in.
    :param provider_id: The TikTok provider's id.
    :param emulator: The running emulator in emulator mode (its uploads are processed in
        :data:`EMULATED_PROCESSING_SECONDS`), else ``None``.
    """

    style: str = STYLE
    script: str = SCRIPT

    def __init__(
        self,
        *,
        keyloom: Keyloom,
        tokens: TokenManager,
        provider_id: str = "tiktok",
        emulator: Any = None,
    ) -> None:
        self.keyloom = keyloom
        self.tokens = tokens
        self.provider_id = provider_id
        if emulator is not None:
            from .emulator_api import ContentAPI  # noqa: PLC0415 - emulator mode only

            ContentAPI.of(emulator).processing_seconds = EMULATED_PROCESSING_SECONDS

    def __repr__(self) -> str:
        return f"TikTokDashboard(provider_id={self.provider_id!r})"

    def api(self, session: Session) -> TikTokAPI:
        """The API client for the session's account."""
        return self._api(session.provider_account_id)

    def _api(self, account_id: str) -> TikTokAPI:
        return TikTokAPI.for_account(
            self.keyloom, self.tokens, account_id, provider_id=self.provider_id
        )

    async def account(self, session: Session) -> tuple[str, frozenset[str]] | None:
        """The session's TikTok account id and granted scopes, or ``None``.

        The account the session signed in with, else (with a users adapter) the TikTok
        account linked to the session's user: a user who signed in with TikTok and then
        linked another provider keeps the TikTok dashboard.
        """
        if session.provider_id == self.provider_id:
            return session.provider_account_id, session.scopes
        users = self.keyloom.users
        if users is None:
            return None
        for linked in await users.accounts(session.user_id):
            if linked.provider == self.provider_id:
                return linked.provider_account_id, linked.scope
        return None

    # -- the page ----------------------------------------------------------------------

    async def section(self, request: web.Request, session: Session) -> str:
        """The dashboard's HTML: stats, videos and chart, upload form (escaped)."""
        del request
        found = await self.account(session)
        if found is None:
            return ""
        account_id, granted = found
        api = self._api(account_id)
        parts = ["<section id=tiktok>", await self._stats_html(api)]
        parts.append(await self._videos_html(api))
        parts.append(self._upload_html(granted))
        parts.append("</section>")
        return "".join(parts)

    async def _stats_html(self, api: TikTokAPI) -> str:
        try:
            user = await api.user_info()
        except (KeyloomError, ValueError) as exc:
            return _note("tt-stats-note", _friendly(exc))
        if not user.has_stats:
            missing = ScopeDeniedError({"user.info.stats"}, provider_id=self.provider_id)
            return _note("tt-stats-note", _friendly(missing))
        tiles = (
            ("followers", "Followers", user.follower_count),
            ("following", "Following", user.following_count),
            ("likes", "Likes", user.likes_count),
            ("videos", "Videos", user.video_count),
        )
        cells = "".join(
            f'<div class=stat id="tt-stat-{key}"><b title="{value if value is not None else ""}">'
            f"{compact(value)}</b><span>{label}</span></div>"
            for key, label, value in tiles
        )
        return f"<div class=stats id=tt-stats>{cells}</div>"

    async def _videos_html(self, api: TikTokAPI) -> str:
        try:
            videos = [video async for video in api.videos(limit=RECENT, page_size=RECENT)]
        except (KeyloomError, ValueError) as exc:
            return "<h2>Recent videos</h2>" + _note("tt-videos-note", _friendly(exc))
        if not videos:
            return "<h2>Recent videos</h2><p class=note id=tt-videos-note>No videos yet.</p>"
        items = []
        for video in videos:
            cover = _safe_url(video.cover_image_url)
            title = html.escape(video.title or video.id)
            image = (
                f'<img src="{html.escape(cover)}" alt="" referrerpolicy="no-referrer">'
                if cover
                else ""
            )
            counts = (
                f'<span class=counts title="views, likes">\u25b6 {compact(video.view_count)}'
                f" \u00b7 \u2665 {compact(video.like_count)}</span>"
                f"<span class=counts>{compact(video.comment_count)} comments \u00b7 "
                f"{compact(video.share_count)} shares</span>"
            )
            items.append(
                f'<li class=video data-id="{html.escape(video.id)}">{image}'
                f"<span class=title>{title}</span>{counts}</li>"
            )
        return (
            "<h2>Recent videos</h2>"
            + chart_svg(videos)
            + f"<ul class=videos id=tt-videos>{''.join(items)}</ul>"
        )

    def _upload_html(self, granted: frozenset[str]) -> str:
        head = "<h2>Upload a video</h2>"
        if "video.upload" not in granted and "video.publish" not in granted:
            missing = ScopeDeniedError({"video.upload"}, provider_id=self.provider_id)
            return head + _note("tt-upload-note", _friendly(missing))
        inbox_ok = "video.upload" in granted
        direct_ok = "video.publish" in granted
        inbox = (
            "<label><input type=radio name=mode value=inbox"
            + (" checked" if inbox_ok else " disabled")
            + "> Send to my TikTok inbox as a draft</label>"
        )
        direct = (
            "<label><input type=radio name=mode value=direct"
            + ("" if direct_ok else " disabled")
            + (" checked" if direct_ok and not inbox_ok else "")
            + "> Post directly"
            + ("" if direct_ok else " (grant video.publish)")
            + "</label>"
        )
        privacy = (
            "<label>Who can watch <select id=tt-privacy name=privacy_level"
            + ("" if direct_ok and not inbox_ok else " disabled")
            + "></select></label>"
        )
        return (
            head
            + f'<form id=tt-upload data-api="{PREFIX}">'
            + '<input type=file id=tt-file name=video required accept="'
            + ",".join(["video/mp4", "video/quicktime", "video/webm", *_SUFFIXES])
            + '">'
            + inbox
            + direct
            + privacy
            + "<button type=submit>Upload</button>"
            + "<progress id=tt-progress max=1 value=0></progress>"
            + "<span id=tt-sent aria-live=polite></span>"
            + "<p id=tt-status role=status></p></form>"
        )

    # -- the routes --------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        """Add the dashboard's JSON routes to the demo app."""
        app.router.add_get(f"{PREFIX}/stats", self._route(self._stats))
        app.router.add_get(f"{PREFIX}/videos", self._route(self._videos))
        app.router.add_get(f"{PREFIX}/creator", self._route(self._creator))
        app.router.add_post(f"{PREFIX}/upload", self._route(self._upload))
        app.router.add_get(f"{PREFIX}/status", self._route(self._status))

    def _route(
        self, handler: Callable[[web.Request, TikTokAPI], Awaitable[Mapping[str, object]]]
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def route(request: web.Request) -> web.StreamResponse:
            session = await current_session(request)
            found = await self.account(session) if session is not None else None
            if session is None or found is None:
                msg = "Sign in with TikTok first."
                return _error_response(DemoRequestError(401, "not_signed_in", msg))
            if request.method == "POST" and not self._csrf_ok(request, session):
                msg = "The page is out of date: reload it and try again."
                return _error_response(DemoRequestError(403, "csrf", msg))
            try:
                try:
                    body = await handler(request, self._api(found[0]))
                except (KeyloomError, ValueError) as exc:
                    raise _friendly(exc) from exc
            except DemoRequestError as error:
                return _error_response(error)
            return web.json_response(dict(body), headers={"Cache-Control": "no-store"})

        return route

    def _csrf_ok(self, request: web.Request, session: Session) -> bool:
        handler = request.app[KEYLOOM_HANDLER]
        return check_csrf(
            self.keyloom,
            request.cookies.get(handler.csrf_cookie),
            request.headers.get(CSRF_HEADER),
            session_id=session.id,
        )

    @staticmethod
    async def _stats(request: web.Request, api: TikTokAPI) -> Mapping[str, object]:
        del request
        user = await api.user_info()
        if not user.has_stats:
            raise ScopeDeniedError({"user.info.stats"}, provider_id=api.provider_id)
        return {"user": _user_json(user)}

    @staticmethod
    async def _videos(request: web.Request, api: TikTokAPI) -> Mapping[str, object]:
        raw = request.query.get("limit", str(RECENT))
        if not raw.isdigit() or not 1 <= int(raw) <= _MAX_PAGE:
            msg = f"limit must be 1 to {_MAX_PAGE}"
            raise DemoRequestError(400, "invalid_request", msg)
        limit = int(raw)
        videos = [v async for v in api.videos(limit=limit, page_size=limit)]
        return {"videos": [_video_json(v) for v in videos]}

    @staticmethod
    async def _creator(request: web.Request, api: TikTokAPI) -> Mapping[str, object]:
        del request
        info = await api.creator_info()
        return {
            "nickname": info.nickname,
            "privacy_level_options": list(info.privacy_level_options),
            "max_video_post_duration_sec": info.max_video_post_duration_sec,
            "comment_disabled": info.comment_disabled,
            "duet_disabled": info.duet_disabled,
            "stitch_disabled": info.stitch_disabled,
        }

    @staticmethod
    async def _status(request: web.Request, api: TikTokAPI) -> Mapping[str, object]:
        publish_id = request.query.get("publish_id", "")
        if not _PUBLISH_ID.fullmatch(publish_id):
            raise DemoRequestError(400, "invalid_request", "publish_id is missing or malformed")
        status = await api.status(publish_id)
        return {
            "publish_id": status.publish_id,
            "status": status.status,
            "final": status.final,
            "fail_reason": status.fail_reason,
            "uploaded_bytes": status.uploaded_bytes,
        }

    async def _upload(self, request: web.Request, api: TikTokAPI) -> Mapping[str, object]:
        if not request.content_type.startswith("multipart/"):
            raise DemoRequestError(400, "invalid_request", "send the video as multipart/form-data")
        folder = Path(await anyio.to_thread.run_sync(tempfile.mkdtemp))
        try:
            fields, path = await _read_form(request, folder)
            mode = fields.get("mode", "inbox")
            if mode not in {"inbox", "direct"}:
                raise DemoRequestError(400, "invalid_request", "mode must be inbox or direct")
            direct = None
            if mode == "direct":
                level = fields.get("privacy_level", "")
                if not _PRIVACY.fullmatch(level):
                    msg = "choose who can watch the video"
                    raise DemoRequestError(400, "invalid_request", msg)
                direct = DirectPost(privacy_level=level, title=path.stem[:150])
            chunks: list[int] = []
            post = await api.upload_video(
                path, direct=direct, on_progress=lambda sent, _total: chunks.append(sent)
            )
            return {
                "publish_id": post.publish_id,
                "direct": post.direct,
                "uploaded_bytes": post.uploaded_bytes,
                "chunks": len(chunks),
            }
        finally:
            await anyio.to_thread.run_sync(shutil.rmtree, folder, True)  # noqa: FBT003


async def _read_form(request: web.Request, folder: Path) -> tuple[dict[str, str], Path]:
    """The form's short fields, and its ``video`` file streamed into *folder*."""
    fields: dict[str, str] = {}
    path: Path | None = None
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            raise DemoRequestError(400, "invalid_request", "nested multipart is not accepted")
        if part.name == "video" and part.filename is not None and path is None:
            suffix = Path(part.filename).suffix.lower()
            if suffix not in _SUFFIXES:
                msg = "TikTok takes MP4, MOV or WebM files (.mp4, .mov, .webm)"
                raise DemoRequestError(400, "unsupported_file", msg)
            path = folder / f"upload{suffix}"
            await _save(part, path)
        elif part.name in {"mode", "privacy_level"}:
            fields[part.name] = (await part.read(decode=True))[:64].decode("utf-8", "replace")
        else:
            await part.release()
    if path is None:
        raise DemoRequestError(400, "invalid_request", "choose a video file")
    if (await anyio.Path(path).stat()).st_size == 0:
        raise DemoRequestError(400, "invalid_request", "the file is empty")
    return fields, path


async def _save(part: BodyPartReader, path: Path) -> None:
    size = 0
    async with await anyio.open_file(path, "wb") as out:
        while piece := await part.read_chunk(_PIECE):
            size += len(piece)
            if size > MAX_UPLOAD:
                msg = f"the demo takes files up to {MAX_UPLOAD // (1024 * 1024)} MB"
                raise DemoRequestError(413, "too_large", msg)
            await out.write(piece)

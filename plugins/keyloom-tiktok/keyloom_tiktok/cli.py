"""``keyloom tiktok``: list a signed-in account's videos and upload one, from the terminal.

::

    keyloom tiktok videos [--limit 20]
    keyloom tiktok upload clip.mp4 [--direct --privacy SELF_ONLY --title "…"] [--wait]

The account's tokens come from the SQLite token store the app keeps (``--store``, default
``$KEYLOOM_TOKEN_STORE`` or ``keyloom-tokens.sqlite3``, encrypted with ``$KEYLOOM_SECRET``);
``--account`` (or ``$TIKTOK_ACCOUNT``) is the user's ``open_id``. The app's credentials
(``$TIKTOK_CLIENT_ID`` / ``$TIKTOK_CLIENT_SECRET``) are needed to refresh tokens.
``--emulator URL`` (or ``$KEYLOOM_EMULATOR_URL``) talks to a local emulator instead of TikTok.

Long uploads show a progress bar with ``pip install "keyloom-tiktok[cli]"`` (Rich).
Registered in the ``keyloom.commands`` entry-point group as ``tiktok``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO, get_args

from keyloom_core import KeyloomError, define_keyloom
from keyloom_core.tokens import SQLiteTokenStore, TokenManager

from . import tiktok
from .api import DirectPost, PrivacyLevel, PublishedPost, TikTokAPI

__all__ = ["main"]

DEFAULT_STORE = "keyloom-tokens.sqlite3"
PRIVACY_LEVELS = get_args(PrivacyLevel)


def _say(stream: TextIO, text: str) -> None:
    stream.write(text + "\n")
    stream.flush()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keyloom tiktok", description="TikTok's APIs for a signed-in account."
    )
    parser.add_argument(
        "--account",
        default=os.environ.get("TIKTOK_ACCOUNT"),
        help="the account's open_id (default: $TIKTOK_ACCOUNT)",
    )
    parser.add_argument(
        "--store",
        default=os.environ.get("KEYLOOM_TOKEN_STORE", DEFAULT_STORE),
        help=f"the SQLite token store (default: $KEYLOOM_TOKEN_STORE or {DEFAULT_STORE})",
    )
    parser.add_argument(
        "--emulator",
        default=os.environ.get("KEYLOOM_EMULATOR_URL") or None,
        metavar="URL",
        help="a local TikTok emulator's URL (default: $KEYLOOM_EMULATOR_URL)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    videos = commands.add_parser("videos", help="list the account's public videos, newest first")
    videos.add_argument("--limit", type=int, default=20, help="how many (default 20)")
    upload = commands.add_parser(
        "upload", help="upload a video to the account's inbox, or post it with --direct"
    )
    upload.add_argument("file", type=Path, help="an .mp4, .mov or .webm file")
    upload.add_argument("--direct", action="store_true", help="post at once (video.publish)")
    upload.add_argument(
        "--privacy",
        choices=PRIVACY_LEVELS,
        help="privacy level of a direct post (required with it)",
    )
    upload.add_argument("--title", default="", help="the caption of a direct post")
    upload.add_argument("--wait", action="store_true", help="wait for TikTok's final status")
    upload.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


class _Bar:
    """A Rich progress bar when Rich is installed (the ``cli`` extra), else nothing."""

    def __init__(self, total: int, label: str, *, enabled: bool, out: TextIO) -> None:
        self._progress: Any = None
        self._task: Any = None
        if not enabled:
            return
        try:
            progress = importlib.import_module("rich.progress")
            console = importlib.import_module("rich.console")
        except ImportError:
            _say(out, '(pip install "keyloom-tiktok[cli]" for a progress bar)')
            return
        self._progress = progress.Progress(
            progress.TextColumn("{task.description}"),
            progress.BarColumn(),
            progress.DownloadColumn(),
            progress.TransferSpeedColumn(),
            progress.TimeRemainingColumn(),
            console=console.Console(file=out),
            transient=False,
        )
        self._task = self._progress.add_task(label, total=total)

    def __enter__(self) -> Callable[[int, int], None]:
        if self._progress is not None:
            self._progress.start()
        return self.update

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, sent: int, total: int) -> None:
        """Move the bar to *sent* of *total* bytes."""
        if self._progress is not None:
            self._progress.update(self._task, completed=sent, total=total)


async def _videos(api: TikTokAPI, limit: int, out: TextIO) -> int:
    count = 0
    async for video in api.videos(limit=limit):
        count += 1
        title = (video.title or video.video_description or "").replace("\n", " ")[:60]
        _say(
            out,
            f"{video.id}  {video.view_count or 0:>10} views  {video.like_count or 0:>8} likes  "
            f"{title}",
        )
    _say(out, f"{count} videos")
    return 0


async def _upload(api: TikTokAPI, args: argparse.Namespace, out: TextIO) -> int:
    direct = None
    if args.direct:
        if args.privacy is None:
            _say(sys.stderr, "error: --direct needs --privacy (TikTok has no default)")
            return 2
        creator = await api.creator_info()
        _say(out, f"posting as {creator.nickname} (@{creator.username})")
        direct = DirectPost(privacy_level=args.privacy, title=args.title)
    size = args.file.stat().st_size
    with _Bar(size, args.file.name, enabled=not args.no_progress, out=out) as progress:
        post: PublishedPost = await api.upload_video(args.file, direct=direct, on_progress=progress)
    _say(out, f"publish_id {post.publish_id} ({post.uploaded_bytes} bytes sent)")
    if args.wait:
        async for status in api.statuses(post.publish_id):
            _say(out, f"status {status.status}")
            if status.fail_reason:
                _say(out, f"failed: {status.fail_reason}")
                return 1
    return 0


async def _run(args: argparse.Namespace, out: TextIO) -> int:
    secret = os.environ.get("KEYLOOM_SECRET")
    if not secret:
        _say(sys.stderr, "error: set KEYLOOM_SECRET (it encrypts the token store)")
        return 2
    if not args.account:
        _say(sys.stderr, "error: pass --account OPEN_ID (or set TIKTOK_ACCOUNT)")
        return 2
    store = SQLiteTokenStore(args.store, secret=secret)
    manager = TokenManager(store)
    keyloom = define_keyloom(
        providers=[tiktok(endpoint_origin=args.emulator)],
        secret=secret,
        base_url="http://127.0.0.1",
        autoload=False,
        timeout=120.0,
        plugins=[manager.plugin],
    )
    manager.bind(keyloom)
    try:
        async with keyloom:
            api = TikTokAPI.for_account(keyloom, manager, args.account)
            if args.command == "videos":
                return await _videos(api, args.limit, out)
            return await _upload(api, args, out)
    finally:
        await store.aclose()


def main(argv: list[str], *, out: TextIO | None = None) -> int:
    """Run ``keyloom tiktok ARGS``; returns the exit code (0 ok, 1 failed, 2 usage)."""
    args = _parser().parse_args(argv)
    stream = out if out is not None else sys.stdout
    try:
        return asyncio.run(_run(args, stream))
    except KeyloomError as exc:
        _say(sys.stderr, f"error: {exc}")
        if exc.hint:
            _say(sys.stderr, f"hint: {exc.hint}")
        return 1
    except (OSError, ValueError) as exc:
        _say(sys.stderr, f"error: {exc}")
        return 1


def _script(argv: Sequence[str] | None = None) -> int:  # pragma: no cover - console use
    return main(list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(_script())

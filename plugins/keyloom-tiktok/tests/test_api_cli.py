"""``keyloom tiktok videos`` and ``keyloom tiktok upload`` against the emulator.

The account signs in through the emulated TikTok, its tokens land in a SQLite token store, and
the command (run in a worker thread, with its own event loop, as from a terminal) reads them.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import io
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest
from keyloom_tiktok.cli import main
from keyloom_tiktok.emulator import DEFAULT_CLIENT_KEY, DEFAULT_CLIENT_SECRET, EmulatedApp
from keyloom_tiktok.emulator_api import ContentAPI

from keyloom_core.tokens import SQLiteTokenStore, TokenManager

pytestmark = pytest.mark.anyio

SECRET = "cli-tests-secret-cli-tests-secret-0123456789"
ALL_SCOPES = (
    "user.info.basic",
    "user.info.profile",
    "user.info.stats",
    "video.list",
    "video.upload",
    "video.publish",
)


@attrs.frozen
class Setup:
    emulator: Any
    open_id: str
    store: Path

    @property
    def content(self) -> ContentAPI:
        return ContentAPI.of(self.emulator)

    def argv(self, *args: str) -> list[str]:
        return [
            "--store",
            str(self.store),
            "--account",
            self.open_id,
            "--emulator",
            self.emulator.url,
            *args,
        ]


MakeSetup = Callable[..., Awaitable[Setup]]


@pytest.fixture
def make_setup(
    make_emulator: Any,
    make_keyloom: Any,
    login: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> MakeSetup:
    monkeypatch.setenv("KEYLOOM_SECRET", SECRET)
    monkeypatch.setenv("TIKTOK_CLIENT_ID", DEFAULT_CLIENT_KEY)
    monkeypatch.setenv("TIKTOK_CLIENT_SECRET", DEFAULT_CLIENT_SECRET)
    monkeypatch.delenv("TIKTOK_ACCOUNT", raising=False)
    monkeypatch.delenv("KEYLOOM_EMULATOR_URL", raising=False)

    async def make(scopes: tuple[str, ...] = ALL_SCOPES) -> Setup:
        app = attrs.evolve(EmulatedApp.default(), approved_scopes=ALL_SCOPES)
        emulator = await make_emulator(clients=[app], consent="approve")
        path = tmp_path / "tokens.sqlite3"
        store = SQLiteTokenStore(path, secret=SECRET)
        manager = TokenManager(store)
        keyloom = await make_keyloom(emulator, scopes=scopes, plugins=(manager.plugin,))
        manager.bind(keyloom)
        result = await login(keyloom, emulator)
        await store.aclose()
        return Setup(emulator, result.profile.id, path)

    return make


async def run(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    code = await anyio.to_thread.run_sync(functools.partial(main, argv, out=out))
    return code, out.getvalue()


def test_the_command_is_registered_for_the_core_cli() -> None:
    found = [
        e for e in importlib.metadata.entry_points(group="keyloom.commands") if e.name == "tiktok"
    ]
    assert len(found) == 1
    assert found[0].load() is main


async def test_videos_lists_the_newest_videos(make_setup: MakeSetup) -> None:
    setup = await make_setup()
    code, out = await run(setup.argv("videos", "--limit", "5"))
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[-1] == "5 videos"
    assert len(lines) == 6
    assert all("views" in line and "likes" in line for line in lines[:5])


async def test_upload_to_the_inbox(make_setup: MakeSetup, tmp_path: Path) -> None:
    setup = await make_setup()
    video = tmp_path / "clip.mp4"
    video.write_bytes(bytes(6 * 1024 * 1024))
    code, out = await run(setup.argv("upload", str(video), "--no-progress"))
    assert code == 0, out
    assert "publish_id v_inbox_file~" in out
    assert f"({6 * 1024 * 1024} bytes sent)" in out
    (post,) = setup.content.posts.values()
    assert post.received == 6 * 1024 * 1024
    assert not post.direct


async def test_direct_post_and_wait(make_setup: MakeSetup, tmp_path: Path) -> None:
    setup = await make_setup()
    setup.content.processing_seconds = 0
    video = tmp_path / "clip.mp4"
    video.write_bytes(bytes(1024 * 1024))
    code, out = await run(
        setup.argv(
            "upload", str(video), "--direct", "--privacy", "SELF_ONLY", "--title", "hi", "--wait"
        )
    )
    assert code == 0, out
    assert "posting as Emulated Creator (@emulated.creator)" in out
    assert out.strip().splitlines()[-1] == "status PUBLISH_COMPLETE"
    (post,) = setup.content.posts.values()
    assert (post.direct, post.privacy_level, post.title) == (True, "SELF_ONLY", "hi")


async def test_upload_shows_a_progress_bar_with_the_cli_extra(
    make_setup: MakeSetup, tmp_path: Path
) -> None:
    setup = await make_setup()
    video = tmp_path / "clip.mp4"
    video.write_bytes(bytes(12 * 1024 * 1024))
    code, out = await run(setup.argv("upload", str(video)))
    assert code == 0
    if importlib.util.find_spec("rich") is not None:
        assert "clip.mp4" in out
        assert "12.6/12.6 MB" in out
    else:  # without the extra: a hint instead of a bar, and the upload still done
        assert 'pip install "keyloom-tiktok[cli]"' in out
    assert "publish_id v_inbox_file~" in out


async def test_usage_and_scope_errors(
    make_setup: MakeSetup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    setup = await make_setup(scopes=("user.info.basic", "video.list"))
    video = tmp_path / "clip.mp4"
    video.write_bytes(bytes(1024))
    assert (await run(setup.argv("upload", str(video), "--direct")))[0] == 2
    assert "--privacy" in capsys.readouterr().err
    assert (await run(setup.argv("upload", str(video))))[0] == 1
    err = capsys.readouterr().err
    assert "video.upload" in err
    assert "hint:" in err
    assert setup.content.posts == {}
    no_account = [a for a in setup.argv("videos") if a not in {"--account", setup.open_id}]
    assert (await run(no_account))[0] == 2
    assert (await run([*setup.argv("upload", str(tmp_path / "missing.mp4"))]))[0] == 1

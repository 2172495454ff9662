"""TikTok API client: listing videos, and uploading a 256 MB file against a bare aiohttp loop.

``python benchmarks/bench_tiktok_api.py`` (``--quick`` for a smoke run). The emulator runs in its
own process (pinned to one core when there are two); the contenders run here. Figures:

- listing 1,000 videos in pages of 20 through ``TikTokAPI.videos()``: calls and ms (median);
- uploading a 256 MB file (``upload_video``, inbox draft, 16 MiB chunks) in MB/s, against a bare
  aiohttp loop that PUTs the same chunks (read whole from disk, no retries, no checks) to an
  upload URL of its own, alternating in rounds; target: Keyloom >= 0.8x the bare loop;
- peak RSS growth of this process during its first Keyloom upload, sampled every 2 ms; target:
  at most one chunk + 16 MB.

On Python 3.11 the bare loop pays for handing aiohttp a whole chunk: asyncio's socket transport
buffers what the socket does not take at once in a bytearray and trims it from the front after
each send. ``upload_video`` streams each chunk in 1 MiB pieces, waiting for the socket to drain.

The file is generated in a temporary folder and deleted afterwards. Targets are reported, never
asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import Figure, cpu_plan, ensure_importable, figures_table, pin, section

ensure_importable()

import aiohttp  # noqa: E402
from keyloom_tiktok.api import ChunkPlan, RateLimits, TikTokAPI  # noqa: E402

from keyloom_core import HttpClient, TokenSet  # noqa: E402
from keyloom_core.tokens import MemoryTokenStore, TokenManager  # noqa: E402

MB = 1_000_000
MIB = 1024 * 1024
CHUNK = 16 * MIB
VIDEOS = 1000
TARGET_VS_BARE = 0.8
SCOPES = ["user.info.basic", "video.list", "video.upload", "video.publish"]

#: The emulator process: one user with 1,000 videos, caps out of reach, a token printed as JSON.
EMULATOR = r"""
import asyncio, json, sys
from keyloom_tiktok.emulator import EmulatedUser, TikTokEmulator, EmulatedApp
from keyloom_tiktok.emulator_api import ContentAPI
import attrs

async def main():
    user = EmulatedUser(user_id="bench-creator", display_name="Bench Creator",
                        username="bench.creator", video_count=1000, likes_count=5_000_000)
    app = attrs.evolve(EmulatedApp.default(), approved_scopes=SCOPES)
    emulator = TikTokEmulator(clients=[app], users=[user], user_info_rate_limit=None)
    content = ContentAPI.of(emulator)
    content.pending_share_cap = 10**9
    content.limits.clear()
    async with emulator:
        pair = emulator.book.issue_tokens(client_id=app.client_key, user_id=user.user_id, scopes=SCOPES)
        print(json.dumps({"url": emulator.url, "token": pair.access_token,
                          "open_id": emulator.open_id(user.user_id, app.client_key)}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

SCOPES = json.loads(sys.argv[1])
asyncio.run(main())
"""


def start_emulator(cpu: int | None) -> tuple[subprocess.Popen[str], dict[str, str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", EMULATOR, json.dumps(SCOPES)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    pin(proc.pid, cpu)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise RuntimeError("the emulator did not start")
    return proc, json.loads(line)


def rss() -> int:
    statm = Path("/proc/self/statm").read_text(encoding="ascii")
    return int(statm.split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Samples this process's RSS in a thread while the block runs."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.base = 0
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss())
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        self.base = self.peak = rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss())

    @property
    def growth(self) -> int:
        return self.peak - self.base


def make_file(folder: Path, size: int) -> Path:
    path = folder / "bench.mp4"
    block = os.urandom(4 * MIB)
    with path.open("wb") as file:
        left = size
        while left > 0:
            file.write(block[: min(left, len(block))])
            left -= len(block)
    return path


async def _slices(data: bytes):
    view = memoryview(data)
    for start in range(0, len(view), MIB):
        yield view[start : start + MIB]


async def bare_upload(
    session: aiohttp.ClientSession, url: str, token: str, path: Path, *, sliced: bool = False
) -> None:
    """What an app writes by hand: init, then PUT each chunk read whole from disk.

    *sliced*: hand aiohttp the chunk in 1 MiB slices (with ``Content-Length``) instead of whole.
    """
    plan = ChunkPlan.for_size(path.stat().st_size, CHUNK)
    async with session.post(
        f"{url}/v2/post/publish/inbox/video/init/",
        json={"source_info": plan.as_source_info()},
        headers={"Authorization": f"Bearer {token}"},
    ) as response:
        upload_url = (await response.json())["data"]["upload_url"]
    with path.open("rb") as file:
        for first, last in plan.ranges():
            file.seek(first)
            data = file.read(last - first + 1)
            headers = {
                "Content-Type": "video/mp4",
                "Content-Range": f"bytes {first}-{last}/{plan.video_size}",
            }
            if sliced:
                headers["Content-Length"] = str(len(data))
            body = _slices(data) if sliced else data
            async with session.put(upload_url, data=body, headers=headers) as response:
                await response.read()
                assert response.status in {201, 206}, response.status


async def run(args: argparse.Namespace, info: dict[str, str], folder: Path) -> list[Figure]:
    store = MemoryTokenStore()
    tokens = TokenSet(
        access_token=info["token"], expires_at=time.time() + 86_400, scopes=frozenset(SCOPES)
    )
    await store.put("tiktok", info["open_id"], tokens, scopes=SCOPES)
    manager = TokenManager(store)
    figures: list[Figure] = []
    async with HttpClient(timeout=60) as http:
        api = TikTokAPI(
            http, manager, info["open_id"], api_origin=info["url"], rate_limits=RateLimits({})
        )

        section(f"listing {VIDEOS} videos, pages of 20")
        timings, calls = [], 0
        for _ in range(args.list_rounds):
            calls = 0
            started = time.perf_counter()
            async for page in api.video_pages(page_size=20):
                calls += 1
                del page
            timings.append((time.perf_counter() - started) * 1000)
        count = len([v async for v in api.videos()])
        print(
            f"{count} videos in {calls} calls, median {statistics.median(timings):.1f} ms "
            f"({min(timings):.1f}..{max(timings):.1f}, {args.list_rounds} rounds)"
        )
        figures.append(
            Figure(
                f"list {count} videos (pages of 20)",
                f"{calls} calls, {statistics.median(timings):.0f} ms",
            )
        )

        size = args.size_mb * MB
        section(f"uploading {args.size_mb} MB ({size // CHUNK} chunks of {CHUNK // MIB} MiB)")
        path = make_file(folder, size)
        with PeakRSS() as memory:  # the first upload of the process: nothing reused yet
            await api.upload_video(path, chunk_size=CHUNK)
        await bare_upload(http.session, info["url"], info["token"], path)  # warm-up
        keyloom, bare, sliced = [], [], []
        for _ in range(args.rounds):
            started = time.perf_counter()
            await api.upload_video(path, chunk_size=CHUNK)
            keyloom.append(size / MB / (time.perf_counter() - started))
            started = time.perf_counter()
            await bare_upload(http.session, info["url"], info["token"], path)
            bare.append(size / MB / (time.perf_counter() - started))
            started = time.perf_counter()
            await bare_upload(http.session, info["url"], info["token"], path, sliced=True)
            sliced.append(size / MB / (time.perf_counter() - started))
        k, b, s = statistics.median(keyloom), statistics.median(bare), statistics.median(sliced)
        print(f"keyloom upload_video: {k:.0f} MB/s ({min(keyloom):.0f}..{max(keyloom):.0f})")
        print(f"bare aiohttp PUT loop: {b:.0f} MB/s ({min(bare):.0f}..{max(bare):.0f})")
        print(
            f"bare loop, chunks sliced in 1 MiB: {s:.0f} MB/s ({min(sliced):.0f}..{max(sliced):.0f})"
        )
        print(
            f"peak RSS growth during one upload: {memory.growth / MIB:.1f} MiB "
            f"(limit: one chunk + 16 MB = {(CHUNK + 16 * MB) / MIB:.1f} MiB)"
        )
        figures.append(
            Figure(
                "upload MB/s, keyloom vs bare aiohttp",
                f"{k:.0f} vs {b:.0f} ({k / b:.2f}x)",
                f">= {TARGET_VS_BARE}x",
                k / b >= TARGET_VS_BARE,
            )
        )
        figures.append(
            Figure("upload MB/s, bare loop with 1 MiB slices", f"{s:.0f} (keyloom: {k / s:.2f}x)")
        )
        figures.append(
            Figure(
                "peak RSS growth during upload",
                f"{memory.growth / MIB:.1f} MiB",
                f"<= {(CHUNK + 16 * MB) / MIB:.1f} MiB",
                memory.growth <= CHUNK + 16 * MB,
            )
        )
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: 64 MB, 1 round")
    parser.add_argument("--size-mb", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--list-rounds", type=int, default=5)
    args = parser.parse_args()
    if args.quick:
        args.size_mb, args.rounds, args.list_rounds = 64, 1, 2
    emulator_cpu, own_cpu = cpu_plan()
    proc, info = start_emulator(emulator_cpu)
    pin(0, own_cpu)
    try:
        with tempfile.TemporaryDirectory(prefix="keyloom-bench-") as folder:
            figures = asyncio.run(run(args, info, Path(folder)))
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    section("TikTok API summary")
    print(figures_table(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

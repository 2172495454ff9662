"""``FILE_UPLOAD``: TikTok's chunk plan, and the chunk ``PUT``s streamed from disk.

TikTok's rules (Content Posting API, "Media transfer"):

- ``total_chunk_count = floor(video_size / chunk_size)``; the final chunk absorbs the
  trailing bytes, so it may be larger than ``chunk_size`` (up to 128 MB);
- every other chunk is at least 5 MB and at most 64 MB;
- a video under 5 MB goes in one chunk whose size is the video's;
- over 64 MB, several chunks are required; 1 to 1000 chunks, sent in order;
- at most 4 GB.

"MB" is not defined there, so the plan keeps every chunk between 5 MiB and 64,000,000
bytes, which satisfies either reading.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Final

import anyio
import attrs

from keyloom_core import NetworkError, ProviderTimeoutError, RetryPolicy

from ._errors import (
    UploadError,
    UploadNotFoundError,
    UploadRangeError,
    UploadRejectedError,
    UploadURLExpiredError,
)

if TYPE_CHECKING:
    import aiohttp

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "MAX_CHUNKS",
    "MAX_CHUNK_SIZE",
    "MAX_VIDEO_SIZE",
    "MIN_CHUNK_SIZE",
    "ChunkPlan",
    "Progress",
    "content_type_for",
    "mp4_duration",
    "upload_chunks",
]

MIN_CHUNK_SIZE: Final = 5 * 1024 * 1024
MAX_CHUNK_SIZE: Final = 64_000_000
MAX_FINAL_CHUNK: Final = 128_000_000
MAX_CHUNKS: Final = 1000
MAX_VIDEO_SIZE: Final = 4 * 1024**3
DEFAULT_CHUNK_SIZE: Final = 16 * 1024 * 1024
#: Bytes read from disk at a time while a chunk streams out.
PIECE_SIZE: Final = 1024 * 1024

#: ``on_progress(sent_bytes, total_bytes)``, called after each acknowledged chunk.
Progress = Callable[[int, int], object]

_CONTENT_TYPES: Final = {".mp4": "video/mp4", ".mov": "video/quicktime", ".webm": "video/webm"}
_RANGE: Final = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+)")


def content_type_for(path: Path) -> str:
    """``video/mp4``, ``video/quicktime`` or ``video/webm`` from the file's suffix.

    :raises ValueError: another suffix (TikTok takes MP4, MOV and WebM only).
    """
    try:
        return _CONTENT_TYPES[path.suffix.lower()]
    except KeyError:
        msg = f"TikTok takes .mp4, .mov or .webm videos, not {path.suffix or 'no suffix'!r}"
        raise ValueError(msg) from None


@attrs.frozen
class ChunkPlan:
    """How a file is cut into chunks, exactly as announced in ``source_info``.

    Attributes:
        video_size: Bytes in the file.
        chunk_size: Bytes in every chunk but the last.
        total_chunk_count: Chunks (``video_size // chunk_size``, at least 1).
    """

    video_size: int
    chunk_size: int
    total_chunk_count: int

    @classmethod
    def for_size(cls, video_size: int, chunk_size: int = DEFAULT_CHUNK_SIZE) -> ChunkPlan:
        """The plan TikTok accepts for *video_size* bytes, near *chunk_size* per chunk.

        A video under 5 MiB, or one that fits in a single chunk of at most 64,000,000
        bytes, is one chunk. Otherwise *chunk_size* is clamped to [5 MiB, 64,000,000] and
        raised if the file would need more than 1000 chunks.

        :raises ValueError: an empty file, or one over 4 GiB.
        """
        if video_size <= 0:
            raise ValueError("the video is empty")
        if video_size > MAX_VIDEO_SIZE:
            raise ValueError("TikTok takes videos of at most 4 GB")
        if video_size < MIN_CHUNK_SIZE or video_size <= min(chunk_size, MAX_CHUNK_SIZE):
            return cls(video_size, video_size, 1)
        size = min(
            max(chunk_size, MIN_CHUNK_SIZE, math.ceil(video_size / MAX_CHUNKS)), MAX_CHUNK_SIZE
        )
        return cls(video_size, size, video_size // size)

    def as_source_info(self) -> dict[str, object]:
        """``source_info`` of an init request for this plan."""
        return {
            "source": "FILE_UPLOAD",
            "video_size": self.video_size,
            "chunk_size": self.chunk_size,
            "total_chunk_count": self.total_chunk_count,
        }

    def ranges(self) -> Iterator[tuple[int, int]]:
        """``(first, last)`` byte of each chunk, inclusive, in order."""
        for index in range(self.total_chunk_count):
            first = index * self.chunk_size
            final = index == self.total_chunk_count - 1
            last = self.video_size - 1 if final else first + self.chunk_size - 1
            yield first, last

    def boundaries(self) -> frozenset[int]:
        """Byte counts at which a chunk ends (what TikTok can have acknowledged)."""
        return frozenset(last + 1 for _, last in self.ranges()) | {0}


async def _pieces(path: Path, first: int, last: int) -> AsyncIterator[bytes]:
    """Bytes *first* to *last* of *path*, one piece at a time (memory: one piece)."""
    async with await anyio.open_file(path, "rb") as file:
        await file.seek(first)
        left = last - first + 1
        while left > 0:
            piece = await file.read(min(PIECE_SIZE, left))
            if not piece:
                msg = "the file shrank during the upload"
                raise UploadRejectedError(msg, provider_id="tiktok")
            left -= len(piece)
            yield piece


def _acknowledged(header: str | None, plan: ChunkPlan) -> int | None:
    """Bytes TikTok holds, from its ``Content-Range: bytes 0-N/TOTAL`` answer header.

    Whether ``N`` is a count or the last byte's index is not documented: the reading that
    falls on a chunk boundary wins.
    """
    match = _RANGE.search(header or "")
    if match is None:
        return None
    end = int(match.group(2))
    boundaries = plan.boundaries()
    for candidate in (end + 1, end):
        if candidate in boundaries:
            return candidate
    return None


def _failure(status: int, uploaded: int) -> UploadError:
    cls: type[UploadError]
    if status == 403:
        cls, text = UploadURLExpiredError, "the upload URL has expired: start a new post"
    elif status == 404:
        cls, text = UploadNotFoundError, "TikTok knows no such upload"
    elif status == 416:
        cls, text = UploadRangeError, "the chunk does not follow TikTok's upload progress"
    elif status == 400:
        cls, text = UploadRejectedError, "TikTok refused the chunk's headers"
    else:
        cls, text = UploadError, "the chunk upload failed"
    error = cls(f"{text} (HTTP {status})", provider_id="tiktok", http_status=status)
    error.uploaded = uploaded
    return error


async def _put_chunk(
    session: aiohttp.ClientSession,
    upload_url: str,
    path: Path,
    plan: ChunkPlan,
    first: int,
    last: int,
    *,
    content_type: str,
    retry: RetryPolicy,
    limits: aiohttp.ClientTimeout,
) -> tuple[int, str | None]:
    """PUT one chunk, retrying transport failures and 5xx; return the final status and range."""
    import aiohttp  # noqa: PLC0415

    headers = {
        "Content-Type": content_type,
        "Content-Length": str(last - first + 1),
        "Content-Range": f"bytes {first}-{last}/{plan.video_size}",
    }
    attempt = 0
    while True:
        attempt += 1
        try:
            async with session.put(
                upload_url,
                data=_pieces(path, first, last),
                headers=headers,
                timeout=limits,
                allow_redirects=False,
            ) as response:
                status = response.status
                progress = response.headers.get("Content-Range")
                await response.read()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            delay = retry.delay(attempt, None)
            if delay is None:
                cls = ProviderTimeoutError if isinstance(exc, TimeoutError) else NetworkError
                msg = f"the chunk upload failed ({type(exc).__name__})"
                raise cls(msg, provider_id="tiktok") from exc
        else:
            delay = retry.delay(attempt, None) if status >= 500 else None
            if delay is None:
                return status, progress
        await anyio.sleep(delay)


async def upload_chunks(
    session: aiohttp.ClientSession,
    upload_url: str,
    path: Path,
    plan: ChunkPlan,
    *,
    content_type: str,
    retry: RetryPolicy,
    on_progress: Progress | None = None,
    chunk_timeout: float = 300.0,
) -> int:
    """PUT every chunk of *path* to *upload_url*, in order; return the bytes TikTok holds.

    Each chunk streams from disk (memory: one piece of 1 MiB). A chunk that fails on the
    way (connection lost, timeout, 5xx) is sent again from the last acknowledged byte, up
    to ``retry.attempts`` times; when TikTok answers 416 with a progress header showing it
    did receive the chunk, the upload simply goes on. The post is never initialised again.

    :raises UploadURLExpiredError: 403: more than an hour since the post was initialised.
    :raises UploadRangeError: 416 that no retry explains.
    :raises UploadError: another refusal, or failures beyond the retries.
    """
    import aiohttp  # noqa: PLC0415

    timeout = aiohttp.ClientTimeout(total=chunk_timeout, sock_connect=10)
    uploaded = 0
    for first, last in plan.ranges():
        if uploaded > first:  # acknowledged already (a lost answer, then 416)
            continue
        status, progress = await _put_chunk(
            session,
            upload_url,
            path,
            plan,
            first,
            last,
            content_type=content_type,
            retry=retry,
            limits=timeout,
        )
        if status in {201, 206}:
            uploaded = last + 1
        elif (
            status == 416 and (held := _acknowledged(progress, plan)) is not None and (held > first)
        ):
            uploaded = held
        else:
            held = _acknowledged(progress, plan) if status == 416 else None
            raise _failure(status, uploaded if held is None else held)
        if on_progress is not None:
            on_progress(uploaded, plan.video_size)
    return uploaded


def _read_boxes(file: object, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """``(type, payload_start, box_end)`` of the ISO-BMFF boxes in [start, end)."""
    read, seek = file.read, file.seek  # type: ignore[attr-defined]
    offset = start
    while offset + 8 <= end:
        seek(offset)
        header = read(16)
        if len(header) < 8:
            return
        size, kind = struct.unpack(">I4s", header[:8])
        payload = offset + 8
        if size == 1 and len(header) >= 16:
            size = struct.unpack(">Q", header[8:16])[0]
            payload = offset + 16
        elif size == 0:
            size = end - offset
        if size < 8:
            return
        yield kind, payload, offset + size
        offset += size


def mp4_duration(path: Path) -> float | None:
    """The duration in seconds that an MP4 / MOV file declares (``moov/mvhd``), or ``None``.

    Reads box headers only (blocking: run it in a worker thread).
    """
    try:
        with path.open("rb") as file:
            end = path.stat().st_size
            for kind, payload, box_end in _read_boxes(file, 0, end):
                if kind != b"moov":
                    continue
                for inner, inner_payload, _ in _read_boxes(file, payload, box_end):
                    if inner != b"mvhd":
                        continue
                    file.seek(inner_payload)
                    head = file.read(32)
                    if head[:1] == b"\x01":
                        timescale, duration = struct.unpack(">IQ", head[20:32])
                    else:
                        timescale, duration = struct.unpack(">II", head[12:20])
                    return duration / timescale if timescale else None
    except (OSError, struct.error):
        return None
    return None

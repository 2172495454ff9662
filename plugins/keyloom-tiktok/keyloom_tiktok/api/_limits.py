"""Client-side pacing within TikTok's documented per-endpoint rate limits."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Hashable, Mapping
from typing import Final

import anyio

from ._errors import TikTokRateLimitedError

__all__ = ["DEFAULT_LIMITS", "RateLimits"]

#: ``(calls, window seconds, per account?)`` for each endpoint group, from TikTok's docs:
#: 600/min per endpoint for the Display API; per user token 6/min for each init endpoint,
#: 20/min for ``creator_info`` and 30/min for ``status/fetch``. Cancel has no documented limit.
DEFAULT_LIMITS: Final[Mapping[str, tuple[int, float, bool]]] = {
    "user_info": (600, 60.0, False),
    "video_list": (600, 60.0, False),
    "video_query": (600, 60.0, False),
    "video_init": (6, 60.0, True),
    "inbox_init": (6, 60.0, True),
    "content_init": (6, 60.0, True),
    "creator_info": (20, 60.0, True),
    "status": (30, 60.0, True),
}

_MAX_KEYS: Final = 10_000


class RateLimits:
    """Sliding windows that keep calls within TikTok's limits, shared by the clients given it.

    A call that would exceed its endpoint's window waits for room, at most *max_wait*
    seconds; a longer wait raises :class:`TikTokRateLimitedError` at once (with
    ``retry_after``), without calling TikTok. One instance per process is what the
    clients share by default (:meth:`shared`).

    :param limits: ``{group: (calls, window_seconds, per_account)}``; defaults to
        :data:`DEFAULT_LIMITS`. A group not listed is not paced.
    :param max_wait: Longest wait for room, in seconds.
    :param clock: A monotonic clock.
    """

    _shared: RateLimits | None = None

    def __init__(
        self,
        limits: Mapping[str, tuple[int, float, bool]] | None = None,
        *,
        max_wait: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = dict(DEFAULT_LIMITS if limits is None else limits)
        self.max_wait = max_wait
        self._clock = clock
        self._calls: dict[Hashable, deque[float]] = {}

    def __repr__(self) -> str:
        return f"RateLimits(groups={len(self.limits)}, max_wait={self.max_wait:g})"

    @classmethod
    def shared(cls) -> RateLimits:
        """The process-wide instance clients use unless given another."""
        if cls._shared is None:
            cls._shared = cls()
        return cls._shared

    async def acquire(self, group: str, account: str) -> None:
        """Take a slot for one *group* call on behalf of *account*, waiting if needed.

        :raises TikTokRateLimitedError: no slot within :attr:`max_wait` seconds.
        """
        rule = self.limits.get(group)
        if rule is None:
            return
        calls, window, per_account = rule
        key = (group, account) if per_account else group
        while True:
            now = self._clock()
            times = self._calls.get(key)
            if times is None:
                if len(self._calls) >= _MAX_KEYS:
                    self._calls.pop(next(iter(self._calls)))
                times = self._calls[key] = deque()
            while times and times[0] <= now - window:
                times.popleft()
            if len(times) < calls:
                times.append(now)
                return
            wait = times[0] + window - now
            if wait > self.max_wait:
                msg = f"TikTok allows {calls} {group} calls per {window:g} s; wait {wait:.1f} s"
                raise TikTokRateLimitedError(
                    msg, retry_after=wait, provider_id="tiktok", error="rate_limit_exceeded"
                )
            await anyio.sleep(wait)

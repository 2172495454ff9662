"""Server memory held by pending logins: none by design, the state travels in a signed value.

Run alone (``python benchmarks/bench_memory.py --pending 10000``) it prints one JSON object;
``run.py`` runs it in a fresh interpreter so other benchmarks do not blur the figure.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import tracemalloc
from pathlib import Path
from typing import Any

from _common import APP_URL, CLIENT_KEY, CLIENT_SECRET, SECRET, ensure_importable

YIELD_EVERY = 64


def rss_bytes() -> int:
    """Resident set size now (``/proc/self/statm``; peak RSS where that is missing)."""
    try:
        statm = Path("/proc/self/statm").read_text(encoding="ascii")
        return int(statm.split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


async def _begin(keyloom: Any, n: int) -> int:
    """Begin *n* logins and hand each state to the "browser" (dropped); return state bytes.

    The event loop gets a turn now and then, as between requests in a server: each provider
    call arms a timeout timer, and cancelled timers leave the loop's heap when it runs.
    """
    total = 0
    for i in range(n):
        start = await keyloom.begin_login("tiktok", callback_url="/welcome")
        total += len(start.state)
        if i % YIELD_EVERY == 0:
            await asyncio.sleep(0)
    await asyncio.sleep(0)
    return total


async def measure(pending: int) -> dict[str, Any]:
    """RSS and traced-heap growth across *pending* begun logins."""
    from keyloom_tiktok import tiktok

    from keyloom_core import MemoryStateGuard, define_keyloom

    provider = tiktok(
        client_id=CLIENT_KEY, client_secret=CLIENT_SECRET, endpoint_origin="http://127.0.0.1:9"
    )
    guard = MemoryStateGuard()
    keyloom = define_keyloom(
        providers=[provider],
        secret=SECRET,
        base_url=APP_URL,
        autoload=False,
        state_guard=guard,
    )
    async with keyloom:
        await _begin(keyloom, 1000)  # warm caches, interned strings, allocator pools
        gc.collect()
        rss_before = rss_bytes()
        state_bytes = await _begin(keyloom, pending)
        gc.collect()
        rss_after = rss_bytes()
        # The same again under tracemalloc: what is still allocated afterwards, to the byte.
        tracemalloc.start()
        gc.collect()
        traced_before = tracemalloc.get_traced_memory()[0]
        await _begin(keyloom, pending)
        gc.collect()
        traced_after, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return {
        "pending": pending,
        "rss_growth": rss_after - rss_before,
        "rss_before": rss_before,
        "traced_growth": traced_after - traced_before,
        "traced_peak_growth": traced_peak - traced_before,
        "state_bytes_per_login": state_bytes / max(1, pending),
        "server_side_states": len(guard),
    }


def main(argv: list[str] | None = None) -> int:
    """Print the measurement as JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pending", type=int, default=10_000)
    args = parser.parse_args(argv)
    ensure_importable()
    print(json.dumps(asyncio.run(measure(args.pending))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Logins across several workers sharing one store: failures and logins per second.

Starts the TikTok emulator, ``redis-server`` and the multi-worker test app
(``tests/workers/apps.py``) under ``uvicorn --workers 4`` (ASGI) and, with ``--gunicorn``,
also under gunicorn's aiohttp worker; all on 127.0.0.1, all stopped at the end. Each
sign-in is the browser's three requests (``/start``, the emulator's authorize, the
``/callback``), from one of 4096 client addresses (``X-Forwarded-For`` through a trusted
proxy, so the rate limits stay per address as in production). Prints a table; run
standalone: ``python benchmarks/bench_workers.py`` (``--quick`` for 1,000 logins).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "workers"))

import harness  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logins", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="1,000 logins")
    parser.add_argument("--gunicorn", action="store_true", help="also gunicorn + aiohttp")
    args = parser.parse_args()
    total = 1_000 if args.quick else max(1, min(args.logins, 100_000))
    servers = ["uvicorn", "gunicorn"] if args.gunicorn else ["uvicorn"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="keyloom-workers-") as tmp:
        folder = Path(tmp)
        with harness.emulator() as emulator_url, harness.redis_server(folder) as redis:
            stores = {"redis": redis.url, "sqlite": f"sqlite://{folder}/keyloom.db"}
            for server in servers:
                for name, url in stores.items():
                    with harness.Workers(server, url, emulator_url, count=args.workers) as app:
                        outcomes, took = anyio.run(
                            harness.run_logins, app.url, total, args.concurrency
                        )
                    counts = harness.tally(outcomes)
                    ok = counts.pop("ok", 0)
                    failures = sum(counts.values())
                    detail = ", ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "-"
                    rows.append((server, name, ok, failures, detail, ok / took))
                    print(
                        f"{server}/{name}: {ok} ok, {failures} failed in {took:.1f} s", flush=True
                    )
    print(
        f"\n{total:,} logins across {args.workers} workers at concurrency {args.concurrency} "
        "(each: /start, authorize, /callback)"
    )
    print(f"{'server':<9} {'store':<7} {'ok':>7} {'failed':>7} {'logins/s':>9}  failures")
    for server, name, ok, failures, detail, rate in rows:
        print(f"{server:<9} {name:<7} {ok:>7,} {failures:>7,} {rate:>9,.0f}  {detail}")
    return 0 if all(row[3] == 0 for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Instructions per login under valgrind: a figure that does not move with the machine's load.

Wall time on a shared two-core machine moves by ±15 %; instruction counts repeat to about
1 %. Each contender runs twice under ``valgrind --tool=callgrind`` in a fresh interpreter,
with a small and a large number of logins against the same emulator (which runs natively);
the difference divided by the difference in logins is the cost of one login, with the
interpreter's start-up, the imports and the first-login warm-up cancelled out.

``python benchmarks/bench_instructions.py`` prints the table; ``run.py`` calls :func:`measure`.
Without valgrind it says so and measures nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from _common import EmulatorProcess, ensure_importable, table

HERE = Path(__file__).resolve().parent
COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")
TIMEOUT = 900.0  # seconds for one run under valgrind


@dataclass(frozen=True)
class Count:
    """Instructions per login of one contender."""

    contender: str
    concurrency: int
    per_login: float


def _collected(contender: str, logins: int, concurrency: int, origin: str) -> int:
    """Total instructions of one child run of *logins* logins."""
    with tempfile.TemporaryDirectory() as scratch:
        cmd = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={Path(scratch) / 'out'}",
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            contender,
            str(logins),
            str(concurrency),
            origin,
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    match = COLLECTED.search(done.stderr)
    if done.returncode != 0 or match is None:
        tail = done.stderr.strip().splitlines()[-3:]
        msg = f"{contender} under valgrind failed ({done.returncode}): {' | '.join(tail)}"
        raise RuntimeError(msg)
    return int(match.group(1))


def measure(
    contenders: list[str], *, concurrency: int = 100, small: int = 200, large: int = 1200
) -> list[Count] | None:
    """Instructions per login of each contender; ``None`` when valgrind is not installed."""
    if shutil.which("valgrind") is None:
        return None
    counts = []
    with EmulatorProcess() as emulator:
        for contender in contenders:
            low = _collected(contender, small, concurrency, emulator.url)
            high = _collected(contender, large, concurrency, emulator.url)
            counts.append(Count(contender, concurrency, (high - low) / (large - small)))
    return counts


def measure_core(*, small: int = 100, large: int = 600) -> float | None:
    """Instructions per core login (``bench_core.py``'s stub provider, no HTTP), or ``None``.

    The core's own path, free of the emulator and the event loop's I/O: it repeats to a
    few hundred instructions, so it shows what a change to the core saves.
    """
    if shutil.which("valgrind") is None:
        return None
    low = _collected("core", small, 1, "-")
    high = _collected("core", large, 1, "-")
    return (high - low) / (large - small)


def report(counts: list[Count] | None) -> str:
    """The table, with each contender's ratio to ``raw``."""
    if counts is None:
        return "instructions per login: valgrind is not installed (apt-get install valgrind)"
    raw = next((c.per_login for c in counts if c.contender == "raw"), None)
    rows = [
        [
            c.contender,
            str(c.concurrency),
            f"{c.per_login / 1e6:.3f} M",
            f"{raw / c.per_login:.2f}x" if raw else "-",
        ]
        for c in counts
    ]
    return table(["contender", "conc", "instructions/login", "raw/contender"], rows)


async def _child(contender: str, logins: int, concurrency: int, origin: str) -> None:
    if contender == "core":
        from bench_core import _logins, build_keyloom

        keyloom = build_keyloom()
        async with keyloom:
            await _logins(keyloom, 50)  # warm-up, in both runs alike
            await _logins(keyloom, logins)
        return
    from bench_login import KeyloomContender, Raw, _session, run_batch

    async with _session() as session:
        runner = Raw(session, origin) if contender == "raw" else KeyloomContender(session, origin)
        await runner.open()
        try:
            batch = await run_batch(runner.login, logins, concurrency, collect=False)
        finally:
            await runner.close()
    if batch.errors:
        raise SystemExit(f"{batch.errors} logins failed: {batch.first_error}")


def main(argv: list[str] | None = None) -> None:
    """Print the instructions per login of raw aiohttp and Keyloom."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", nargs=4, metavar=("CONTENDER", "N", "CONC", "ORIGIN"))
    parser.add_argument("--contenders", default="raw,keyloom")
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--core", action="store_true", help="also the core login, no HTTP")
    args = parser.parse_args(argv)
    if args.child:
        contender, logins, concurrency, origin = args.child
        asyncio.run(_child(contender, int(logins), int(concurrency), origin))
        return
    ensure_importable()
    print(report(measure(args.contenders.split(","), concurrency=args.concurrency)))
    if args.core:
        core = measure_core()
        if core is not None:
            print(f"core instructions per login (stub provider, no HTTP): {core / 1e3:.0f} k")


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()

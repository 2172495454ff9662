"""Shared helpers of the benchmarks: statistics, CPU pinning, the emulator process, the table."""

from __future__ import annotations

import contextlib
import os
import re
import select
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
#: The emulator's built-in desktop app (loopback redirect URIs on any port, PKCE required).
CLIENT_KEY = "awkeyloomemulator"
CLIENT_SECRET = "keyloom-emulator-client-secret"
APP_URL = "http://127.0.0.1:8000"
REDIRECT_URI = f"{APP_URL}/api/auth/oauth/tiktok/callback"
SCOPE = "user.info.basic"
#: What keyloom-tiktok asks ``/v2/user/info/`` for when only ``user.info.basic`` is granted;
#: every contender asks for the same fields.
PROFILE_FIELDS = "open_id,union_id,avatar_url,avatar_url_100,avatar_large_url,display_name"
SECRET = "benchmark-secret-benchmark-secret-0123456789"
STARTUP_TIMEOUT = 20.0


# -- statistics ------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    """The median, or NaN for no values."""
    return statistics.median(values) if values else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    """The *q*-th percentile (0-100) by the nearest-rank method, or NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def spread(values: Sequence[float]) -> str:
    """``min..max`` of the rounds, to show how noisy a median is."""
    if not values:
        return "-"
    return f"{min(values):.4g}..{max(values):.4g}"


# -- CPU pinning -----------------------------------------------------------------------------


def cpus() -> list[int]:
    """The CPUs this process may run on."""
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


def cpu_plan() -> tuple[int | None, int | None]:
    """``(emulator_cpu, contender_cpu)``: one core each, or ``None`` when there are not two."""
    available = cpus()
    if len(available) < 2:
        return None, None
    return available[0], available[1]


def pin(pid: int, cpu: int | None) -> None:
    """Pin process *pid* (0: this one) to *cpu*; a no-op for ``None``."""
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(pid, {cpu})


@contextlib.contextmanager
def pinned(cpu: int | None) -> Iterator[None]:
    """Run the block pinned to *cpu*, then restore the previous affinity."""
    before = cpus()
    pin(0, cpu)
    try:
        yield
    finally:
        if cpu is not None and before:
            os.sched_setaffinity(0, set(before))


# -- the emulator in its own process ---------------------------------------------------------


def ensure_importable() -> None:
    """Make ``keyloom_core`` and ``keyloom_tiktok`` importable here and in child processes.

    Installed packages win; otherwise the source folders are put on ``sys.path`` and on
    ``PYTHONPATH`` (made absolute, so children may run from any folder).
    """
    sources = [ROOT, ROOT / "plugins" / "keyloom-tiktok"]
    entries = [e for e in os.environ.get("PYTHONPATH", "").split(os.pathsep) if e]
    entries = [str(Path(e).resolve()) for e in entries]
    try:
        import keyloom_tiktok  # noqa: F401

        import keyloom_core  # noqa: F401
    except ImportError:
        for path in reversed(sources):
            sys.path.insert(0, str(path))
        entries = [str(p) for p in sources] + entries
    if entries:
        os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(entries))


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process *pid* so far (Linux ``/proc``), else ``None``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_for_line(proc: subprocess.Popen[str], pattern: str) -> re.Match[str] | None:
    """The first line *proc* prints that matches *pattern*, within :data:`STARTUP_TIMEOUT`."""
    assert proc.stdout is not None
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if not ready:
            return None
        line = proc.stdout.readline()
        if not line:
            return None
        if found := re.search(pattern, line):
            return found
    return None


@dataclass
class EmulatorProcess:
    """``python -m keyloom_tiktok.emulator`` on a free loopback port, in its own process.

    Consent ``approve`` (no form), faults off, the user-info rate limit raised out of reach,
    logging at WARNING (an access log line per request would cost the emulator's one core).
    """

    cpu: int | None = None
    url: str = ""
    _proc: subprocess.Popen[str] | None = field(default=None, repr=False)

    def __enter__(self) -> EmulatorProcess:
        cmd = [
            sys.executable,
            "-m",
            "keyloom_tiktok.emulator",
            "--host",
            LOOPBACK,
            "--port",
            "0",
            "--consent",
            "approve",
            "--user-info-rate-limit",
            "1000000000",
            "--fault-rate",
            "0",
            "--log-level",
            "WARNING",
        ]
        self._proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        pin(self._proc.pid, self.cpu)
        try:
            self.url = self._read_url()
            self._wait_healthy()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def cpu_seconds(self) -> float | None:
        """The emulator's user + system CPU seconds so far (Linux ``/proc``), else ``None``."""
        return None if self._proc is None else process_cpu_seconds(self._proc.pid)

    def _read_url(self) -> str:
        assert self._proc is not None
        found = wait_for_line(self._proc, r"listening on (http://\S+)")
        if found:
            return found.group(1).rstrip("/")
        msg = f"the TikTok emulator did not start (exit code {self._proc.poll()})"
        raise RuntimeError(msg)

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.url}/emulator/health", timeout=2) as resp,
            ):
                if resp.status == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError("the TikTok emulator never answered its health check")

    def __exit__(self, *exc_info: object) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


# -- the report ------------------------------------------------------------------------------


@dataclass
class Figure:
    """One line of the final table."""

    name: str
    value: str
    target: str = ""
    ok: bool | None = None  #: ``None``: no target, or not measured
    note: str = ""

    @property
    def verdict(self) -> str:
        """``pass``, ``MISS`` or ``-``."""
        if self.ok is None:
            return "-"
        return "pass" if self.ok else "MISS"


def section(title: str) -> None:
    """Print a section heading."""
    print(f"\n== {title} ==", flush=True)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table with left-aligned columns."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)), line]
    out += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(out)


def figures_table(figures: Sequence[Figure]) -> str:
    """The summary table."""
    rows = [[f.name, f.value, f.target or "-", f.verdict, f.note] for f in figures]
    return table(["figure", "measured", "target", "result", "note"], rows)

"""Cold start: fresh interpreters importing the core and discovering the installed plugins."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from _common import ROOT, median, spread, table

PASS = "pass"
IMPORT = "import keyloom_core"
DISCOVERY = (
    "import keyloom_core; from keyloom_core._plugins import PluginRegistry; PluginRegistry()"
)
LENIENT = (
    "import keyloom_core; from keyloom_core._plugins import PluginRegistry; "
    "PluginRegistry(strict=False)"
)
LIST_PROVIDERS = (
    "from keyloom_core._plugins import PluginRegistry; r = PluginRegistry(strict=False); "
    "print(','.join(sorted(r.providers)) or '-'); print(len(r.broken))"
)
TIMEOUT = 60


@dataclass
class Timing:
    """Wall milliseconds of one command over several fresh runs."""

    label: str
    command: list[str]
    runs: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def ms(self) -> float:
        """The median run."""
        return median(self.runs)


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT, check=False
    )


def time_command(label: str, command: list[str], runs: int, ok: tuple[int, ...] = (0,)) -> Timing:
    """Run *command* once to check it works (exit code in *ok*), then *runs* times timed."""
    timing = Timing(label, command)
    first = _run(command)
    if first.returncode not in ok:
        last = (first.stderr.strip() or first.stdout.strip()).splitlines()[-1:] or ["?"]
        timing.error = f"exit {first.returncode}: {last[0][:100]}"
        return timing
    for _ in range(runs):
        started = time.perf_counter()
        _run(command)
        timing.runs.append((time.perf_counter() - started) * 1e3)
    return timing


def _keyloom_script() -> str | None:
    beside = Path(sys.executable).with_name("keyloom")
    return str(beside) if beside.exists() else shutil.which("keyloom")


@dataclass
class StartupResults:
    """Every cold-start figure."""

    baseline: Timing
    import_only: Timing
    discovery: Timing
    lenient: Timing | None
    cli: Timing | None
    cli_skipped: str | None
    providers: str
    broken: int
    imports: list[tuple[str, float, float]]

    @property
    def discovery_ms(self) -> float | None:
        """Import + discovery wall time (the strict registry, else the lenient one)."""
        for timing in (self.discovery, self.lenient):
            if timing is not None and timing.runs:
                return timing.ms
        return None

    def report(self) -> str:
        """The timings and the heaviest imports."""
        rows = []
        for timing in (self.baseline, self.import_only, self.discovery, self.lenient, self.cli):
            if timing is None:
                continue
            shown = (
                " ".join(timing.command[1:])
                if timing.command[0] == sys.executable
                else (" ".join([Path(timing.command[0]).name, *timing.command[1:]]))
            )
            if timing.error:
                rows.append([timing.label, "error", "-", timing.error])
                continue
            rows.append([timing.label, f"{timing.ms:.1f}", spread(timing.runs), shown[:90]])
        lines = [
            f"plugins discovered: providers {self.providers}; broken entry points: {self.broken}",
            table(["what", "median ms", "runs min..max", "command"], rows),
        ]
        if self.cli_skipped:
            lines.append(f"`keyloom providers`: skipped ({self.cli_skipped})")
        if self.imports:
            lines += [
                "",
                (
                    "heaviest imports under `python -X importtime -c 'import keyloom_core'` "
                    "(median of runs, µs):"
                ),
                table(
                    ["module", "cumulative", "self"],
                    [[m, f"{c:.0f}", f"{s:.0f}"] for m, c, s in self.imports],
                ),
            ]
        return "\n".join(lines)


_IMPORTTIME = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def import_profile(runs: int, top: int = 15) -> list[tuple[str, float, float]]:
    """``(module, cumulative µs, self µs)`` of the heaviest imports below ``keyloom_core``."""
    cumulative: dict[str, list[float]] = defaultdict(list)
    own: dict[str, list[float]] = defaultdict(list)
    for _ in range(max(1, runs)):
        proc = _run([sys.executable, "-X", "importtime", "-c", IMPORT])
        inside = False
        for line in proc.stderr.splitlines()[::-1]:  # children print before their parent
            found = _IMPORTTIME.match(line)
            if not found:
                continue
            self_us, cum_us, indent, module = found.groups()
            if module == "keyloom_core":
                inside = True
            elif not inside or len(indent) == 0:
                continue
            cumulative[module].append(float(cum_us))
            own[module].append(float(self_us))
    ranked = sorted(cumulative, key=lambda m: -median(cumulative[m]))
    return [(m, median(cumulative[m]), median(own[m])) for m in ranked[:top]]


def run_startup(runs: int) -> StartupResults:
    """Measure the interpreter baseline, the import, import + discovery and the CLI."""
    py = sys.executable
    baseline = time_command("python -c pass", [py, "-c", PASS], runs)
    import_only = time_command("import keyloom_core", [py, "-c", IMPORT], runs)
    discovery = time_command("import + PluginRegistry()", [py, "-c", DISCOVERY], runs)
    lenient = None
    if discovery.error:
        lenient = time_command("  same, strict=False", [py, "-c", LENIENT], runs)
    listed = _run([py, "-c", LIST_PROVIDERS]).stdout.split()
    providers, broken = (listed[0], int(listed[1])) if len(listed) == 2 else ("?", -1)
    cli, skipped = None, None
    script = _keyloom_script()
    if script is None:
        skipped = "no `keyloom` console script installed"
    else:
        # Exit code 1 means "some plugin is broken", listed like the rest: still a timing.
        cli = time_command("keyloom providers", [script, "providers"], runs, ok=(0, 1))
        if cli.error:
            skipped, cli = f"`keyloom providers` failed: {cli.error}", None
    return StartupResults(
        baseline,
        import_only,
        discovery,
        lenient,
        cli,
        skipped,
        providers,
        broken,
        import_profile(max(3, runs // 4)),
    )

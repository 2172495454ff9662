"""Stress report: load, injected faults and fuzzing through the real aiohttp.web integration.

Everything runs in this process on 127.0.0.1: the TikTok emulator, the app
(``setup_keyloom``) and the simulated browsers (one aiohttp session and cookie jar each).
The harness is ``tests/stress/stresskit.py``, shared with the ``tests/stress`` suite (which
runs smaller numbers of the same scenarios).

- Load: 10,000 complete logins (start → emulator authorize → callback → session check) by
  200 browsers at once; successes, failures, latency percentiles, peak RSS, and open file
  descriptors and asyncio tasks before, after (app still up, idle pool open) and after
  shutdown (must be back at the baseline).
- Faults: 2,000 logins while the emulator injects 20 % faults of every kind on its token and
  user-info endpoints; outcome counts, 500 answers (must be 0), code replays (must be 0).
- Fuzz: Hypothesis-generated hostile callback requests to ``AuthHandler.handle`` and over
  HTTP, and hostile provider answers; unhandled (must be 0).
- Attacks: every attack of ``tests/stress/test_attacks.py`` (forged, replayed and stolen
  state, PKCE downgrade, code injection, open redirects, tampered sessions, logout CSRF,
  cookie tossing, unbound CSRF tokens, provider cookies carried between users, malleable
  signatures, oversized state cookies, secrets in reprs, non-ASCII base URLs, HEAD, token
  store rollback, readable state), run against the real app; each must be refused.

Run::

    PYTHONPATH=.:plugins/keyloom-tiktok python benchmarks/stress.py [--quick]

Exits 1 when a figure misses its target.
"""

from __future__ import annotations

import argparse
import ast
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from xml.etree import ElementTree as ET

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "stress"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp  # noqa: E402
import stresskit  # noqa: E402
from _common import Figure, figures_table, section, table  # noqa: E402

from keyloom_core import define_keyloom  # noqa: E402


def _n(value: float) -> str:
    return f"{value:,.0f}"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms"


def load_phase(logins: int, concurrency: int, full: bool) -> list[Figure]:
    section(f"load: {logins:,} logins, {concurrency} browsers at once")
    with stresskit.LoopRunner() as runner:
        report, res = runner.run(
            stresskit.measured_load(logins=logins, concurrency=concurrency), timeout=900
        )
    rows = [[label, _n(count)] for label, count in report.outcomes.most_common()]
    print(table(["outcome", "logins"], rows))
    for problem in report.problems[:10]:
        print(f"  problem: {problem}")
    print(
        f"wall {report.seconds:.1f} s; fds {res.fds_baseline} baseline, {res.fds_before} warm, "
        f"{res.fds_idle_after} idle after ({res.pooled_after} pooled keep-alive connections to "
        f"the emulator, {res.acquired_after} checked out), {res.fds_after_shutdown} after "
        f"shutdown; tasks {res.tasks_baseline} / {res.tasks_before} / {res.tasks_idle_after} / "
        f"{res.tasks_after_shutdown}; RSS {res.rss_before_mb:.0f} -> {res.rss_after_mb:.0f} MiB",
        flush=True,
    )
    tolerance = 8
    fds_ok = (
        res.fds_after_shutdown <= res.fds_baseline + tolerance
        and res.fds_idle_after <= res.fds_before + 2 * res.pooled_after + tolerance
        and res.acquired_after == 0
    )
    tasks_ok = (
        res.tasks_after_shutdown <= res.tasks_baseline
        and res.tasks_idle_after <= res.tasks_before + res.pooled_after + tolerance
    )
    return [
        Figure(
            "load: logins @ concurrency",
            f"{logins:,} @ {concurrency}",
            "10,000 @ 200",
            (logins, concurrency) == (10_000, 200) if full else None,
            "" if full else "--quick",
        ),
        Figure(
            "load: successes / failures",
            f"{_n(report.successes)} / {_n(report.failures)}",
            "0 failures",
            report.failures == 0 and not report.problems,
        ),
        Figure(
            "load: throughput", f"{report.throughput:,.0f} logins/s", note="one process, one core"
        ),
        Figure(
            "load: latency p50 / p99",
            f"{_ms(report.p(50))} / {_ms(report.p(99))}",
            note="whole login, 4 browser requests",
        ),
        Figure(
            "load: peak RSS",
            f"{res.peak_rss_mb:.0f} MiB",
            note=f"{res.rss_before_mb:.0f} MiB before the run",
        ),
        Figure(
            "load: open fds before / after",
            f"{res.fds_before} / {res.fds_idle_after} / {res.fds_after_shutdown}",
            f"back to {res.fds_baseline} (+{tolerance})",
            fds_ok,
            f"warm / idle with {res.pooled_after} pooled / after shutdown",
        ),
        Figure(
            "load: asyncio tasks before / after",
            f"{res.tasks_before} / {res.tasks_idle_after} / {res.tasks_after_shutdown}",
            f"back to {res.tasks_baseline}",
            tasks_ok,
            "warm / idle / after shutdown",
        ),
    ]


def fault_phase(logins: int, concurrency: int, rate: float) -> list[Figure]:
    section(f"faults: {logins:,} logins at {rate:.0%} injected faults, {concurrency} at once")
    with stresskit.LoopRunner() as runner:
        run = runner.run(
            stresskit.fault_run(logins=logins, concurrency=concurrency, rate=rate), timeout=900
        )
    report = run.report
    rows = [
        [label, _n(count), f"{count / logins:.1%}"]
        for label, count in report.outcomes.most_common()
    ]
    print(table(["outcome", "logins", "share"], rows))
    print(table(["injected fault", "count"], [[k, _n(v)] for k, v in run.injected.items()]))
    for problem in report.problems[:10]:
        print(f"  problem: {problem}")
    print(
        f"{run.code_submissions:,} code submissions for {run.codes:,} codes; "
        f"{run.resubmitted:,} codes resubmitted, each only after a 429/503 answer",
        flush=True,
    )
    typed = logins - len(report.problems) - sum(report.outcomes[c] for c in run.unknown_codes)
    return [
        Figure("faults: logins @ fault rate", f"{logins:,} @ {rate:.0%}", "20 %", rate == 0.2),
        *(
            Figure(
                f"faults: outcome {label}",
                f"{count:,} ({count / logins:.1%})",
                note="HTTP "
                + ", ".join(str(s) for s in sorted(report.label_statuses[label], key=str)),
            )
            for label, count in report.outcomes.most_common()
        ),
        Figure(
            "faults: injected",
            f"{sum(run.injected.values()):,}",
            note=", ".join(f"{k} {v}" for k, v in run.injected.items()),
        ),
        Figure("faults: typed outcomes", f"{_n(typed)} / {_n(logins)}", "all", typed == logins),
        Figure("faults: HTTP 500 answers", _n(run.server_errors), "0", run.server_errors == 0),
        Figure(
            "faults: codes replayed after use",
            _n(len(run.replays) + len(run.unsafe_resubmissions)),
            "0",
            not run.replays and not run.unsafe_resubmissions,
            f"{run.resubmitted} safe retries after 429/503",
        ),
    ]


def fuzz_phase(handler_examples: int, http_examples: int, provider_examples: int) -> list[Figure]:
    section("fuzz: Hypothesis-generated hostile requests and provider answers")
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)  # the provider's own 400s
    tallies: dict[str, stresskit.FuzzTally] = {}
    with stresskit.LoopRunner() as runner:
        stack = runner.enter(stresskit.stress_stack(timeout=2.0))
        assert stack.emulator is not None
        foreign = define_keyloom(
            providers=[stresskit.tiktok_provider(stack.emulator.url)],
            secret="another-apps-secret-0123456789-abcdefghij",
            base_url=stack.url,
            autoload=False,
        )
        mint = stresskit.StateMint(stack.keyloom, foreign=foreign)
        began = time.perf_counter()
        tallies["callbacks via AuthHandler.handle"] = stresskit.fuzz_handler(
            runner, stack.handler, mint, examples=handler_examples, stop_on_failure=False
        )
        client = runner.enter(stresskit.browser())
        tallies["callbacks over HTTP"] = stresskit.fuzz_http(
            runner, stack, client, mint, examples=http_examples, stop_on_failure=False
        )
        hostile = runner.enter(stresskit.HostileProvider())
        hostile_stack = runner.enter(
            stresskit.serve_app(
                stresskit.tiktok_provider(hostile.url), timeout=2.0, retry=stresskit.FUZZ_RETRY
            )
        )
        tallies["hostile provider answers (logins)"] = stresskit.fuzz_provider(
            runner,
            hostile_stack.handler,
            hostile,
            examples=provider_examples,
            stop_on_failure=False,
        )
        seconds = time.perf_counter() - began
    rows = [
        [
            name,
            _n(t.cases),
            _n(t.unhandled),
            _n(t.logged_errors),
            " ".join(f"{s}:{n}" for s, n in sorted(t.statuses.items())),
        ]
        for name, t in tallies.items()
    ]
    print(table(["corpus", "cases", "unhandled", "errors logged", "statuses"], rows))
    unhandled = sum(t.unhandled for t in tallies.values())
    failures = sorted({f[:150] for t in tallies.values() for f in t.failures})
    for failure in failures[:12]:
        print(f"  unhandled: {failure}")
    callbacks = (
        tallies["callbacks via AuthHandler.handle"].cases + tallies["callbacks over HTTP"].cases
    )
    print(f"{seconds:.1f} s", flush=True)
    return [
        Figure(
            "fuzz: callback requests",
            _n(callbacks),
            ">= 10,000",
            callbacks >= 10_000 if handler_examples >= 1_250 else None,
            f"{tallies['callbacks over HTTP'].cases:,} of them over HTTP",
        ),
        Figure(
            "fuzz: hostile provider answers",
            _n(tallies["hostile provider answers (logins)"].cases),
            note=f"{tallies['hostile provider answers (logins)'].signed_in} signed in",
        ),
        Figure(
            "fuzz: unhandled",
            _n(unhandled),
            "0",
            unhandled == 0,
            "500 answers or exceptions out of the handler",
        ),
    ]


_AUDIT_MARKER = "# -- what an outside audit of the web layer tried"


def _attack_docs(path: Path) -> dict[str, tuple[str, bool]]:
    """By test name: the first sentence of its docstring, and whether it is one of the
    attacks of the outside audit (the tests after its section marker)."""
    source = path.read_text()
    before, _, _ = source.partition(_AUDIT_MARKER)
    audit_from = before.count("\n") + 1 if _AUDIT_MARKER in source else 10**9
    docs: dict[str, tuple[str, bool]] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.AsyncFunctionDef | ast.FunctionDef) and node.name.startswith(
            "test_"
        ):
            text = " ".join((ast.get_docstring(node) or "").split())
            docs[node.name] = (text.split(". ")[0].rstrip("."), node.lineno > audit_from)
    return docs


def attack_phase() -> list[Figure]:
    section("attacks: tests/stress/test_attacks.py against the real app, each must be refused")
    path = ROOT / "tests" / "stress" / "test_attacks.py"
    docs = _attack_docs(path)
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "attacks.xml"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                f"--junitxml={report}",
                str(path),
            ],
            cwd=ROOT,
            capture_output=True,
            timeout=900,
            check=False,
        )
        cases = ET.parse(report).getroot().iter("testcase") if report.exists() else []
        outcomes: dict[str, str] = {}
        for case in cases:
            name = case.get("name", "").split("[")[0]
            if case.find("failure") is not None or case.find("error") is not None:
                outcomes[name] = "NOT REFUSED"
            elif case.find("skipped") is not None:
                outcomes.setdefault(name, "skipped")
            else:
                outcomes.setdefault(name, "refused")
    rows = [
        [
            name.removeprefix("test_").replace("_", " ") + (" (audit)" if audit else ""),
            outcomes.get(name, "not run"),
            doc if len(doc) <= 100 else doc[:99] + "…",
        ]
        for name, (doc, audit) in docs.items()
    ]
    print(table(["attack", "outcome", "what"], rows), flush=True)
    refused = sum(1 for name in docs if outcomes.get(name) == "refused")
    return [
        Figure(
            "attacks: refused",
            f"{refused}/{len(docs)}",
            f"{len(docs)}/{len(docs)}",
            refused == len(docs),
            "one pytest test per attack, run in a subprocess",
        )
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="smaller numbers (about 30 s)")
    args = parser.parse_args()
    root = logging.getLogger()
    root.addHandler(logging.NullHandler())  # nothing printed; the fuzzing counts ERROR records
    root.setLevel(logging.WARNING)
    full = not args.quick
    print(
        f"Keyloom stress report: Python {platform.python_version()}, aiohttp "
        f"{aiohttp.__version__}, {os.cpu_count()} CPUs, {'full' if full else 'quick'} run",
        flush=True,
    )
    began = time.perf_counter()
    figures: list[Figure] = []
    figures += load_phase(10_000 if full else 1_000, 200 if full else 100, full)
    figures += fault_phase(2_000 if full else 300, 100 if full else 50, 0.2)
    figures += fuzz_phase(1_400 if full else 150, 300 if full else 50, 1_000 if full else 150)
    figures += attack_phase()
    section(f"summary ({time.perf_counter() - began:.0f} s)")
    print(figures_table(figures), flush=True)
    return 1 if any(f.ok is False for f in figures) else 0


if __name__ == "__main__":
    raise SystemExit(main())

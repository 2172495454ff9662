"""Load: complete logins through the real aiohttp.web integration, and no leaks after them.

Simulated browsers (an ``aiohttp`` session and cookie jar each) run start → TikTok emulator
authorize (consent ``approve``) → callback → session check, 200 at once. This suite runs
2,000 logins; ``benchmarks/stress.py`` runs the full 10,000 with the same harness.
"""

from __future__ import annotations

import pytest
import stresskit

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

LOGINS = 2_000
CONCURRENCY = 200
#: Slack for descriptors and tasks that come and go on their own (the fd listing itself,
#: aiohttp's timer handles and a connection or two still closing).
TOLERANCE = 8


async def test_logins_at_200_concurrent_all_succeed_without_leaks():
    report, figures = await stresskit.measured_load(logins=LOGINS, concurrency=CONCURRENCY)
    print(
        f"\n{report.logins} logins @ {report.concurrency}: {report.successes} ok, "
        f"{report.failures} failed, {report.throughput:.0f}/s, p50 {report.p(50) * 1000:.0f} ms, "
        f"p99 {report.p(99) * 1000:.0f} ms; {figures}"
    )
    assert report.problems == []
    assert report.successes == LOGINS, report.outcomes
    assert len(report.latencies) == LOGINS
    # While the app still runs: no connection of the Keyloom client is left checked out, and
    # whatever fds/tasks remain are the idle keep-alive pool to the emulator (both ends of
    # each pooled connection live in this process, and the emulator has a task per one).
    assert figures.acquired_after == 0
    assert figures.pooled_after <= CONCURRENCY
    assert figures.fds_idle_after <= figures.fds_before + 2 * figures.pooled_after + TOLERANCE
    assert figures.tasks_idle_after <= figures.tasks_before + figures.pooled_after + TOLERANCE
    # Once everything is shut down: back to where the process was before it started.
    assert figures.fds_after_shutdown <= figures.fds_baseline + TOLERANCE
    assert figures.tasks_after_shutdown <= figures.tasks_baseline
    assert figures.rss_after_mb - figures.rss_before_mb < 150


async def test_repeated_rounds_do_not_grow_fds_or_tasks():
    """Three rounds on one stack: after the first, fds and tasks stay flat."""
    async with stresskit.stress_stack() as stack:
        seen = []
        for _ in range(3):
            report = await stresskit.run_logins(stack, logins=300, concurrency=50)
            assert report.successes == 300, report.outcomes
            await stresskit.settle(lambda: stresskit.pool(stack.keyloom)[0] == 0)
            acquired, idle = stresskit.pool(stack.keyloom)
            assert acquired == 0
            seen.append((stresskit.open_fds() - 2 * idle, stresskit.task_count() - idle))
        (fds1, tasks1), *later = seen
        for fds, tasks in later:
            assert fds <= fds1 + TOLERANCE, seen
            assert tasks <= tasks1 + TOLERANCE, seen
        assert stack.responses.server_errors == 0
        assert stack.responses.sessions_issued == 900 + 0

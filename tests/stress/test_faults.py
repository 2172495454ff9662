"""Faults: the TikTok emulator injects 500, 503, 429 (Retry-After), timeouts, delays,
malformed JSON, truncated bodies and connection resets.

Every login ends in success or a typed error; the web layer answers 4xx/502/503/504 with a
JSON or HTML message, never 500; and a code is only ever submitted again after an answer that
says the provider did not act on it (429/503), never after the emulator consumed it. The
injector runs the real handler before losing its answer (``process_first``), so a lost
answer to a code exchange means a consumed code: replaying it would be the bug.
"""

from __future__ import annotations

import pytest
import stresskit
from keyloom_tiktok.emulator import TOKEN_PATH, USER_INFO_PATH

from keyloom_core.testing.emulator import FAULT_KINDS

pytestmark = pytest.mark.anyio

LOGINS = 600
CONCURRENCY = 60


@pytest.mark.slow
async def test_20_percent_faults_every_login_typed_never_500_no_code_replayed(error_status):
    run = await stresskit.fault_run(
        logins=LOGINS, concurrency=CONCURRENCY, rate=0.2, error_status=error_status
    )
    report = run.report
    print(
        f"\n{LOGINS} logins at 20 % faults: {dict(report.outcomes)}; injected {run.injected}; "
        f"{run.code_submissions} code submissions for {run.codes} codes, "
        f"{run.resubmitted} resubmitted after 429/503"
    )
    assert report.problems == []
    assert run.server_errors == 0
    assert run.unknown_codes == []
    assert set(report.statuses) <= {302} | stresskit.ERROR_STATUSES
    assert report.successes > LOGINS // 2
    assert report.failures > 0
    assert all(run.injected[kind] > 0 for kind in FAULT_KINDS), run.injected
    # every authorization led to one code, and every code reached the token endpoint
    assert run.codes == LOGINS
    assert run.replays == []
    assert run.unsafe_resubmissions == []
    assert run.missing_verifier == 0


CASES = [
    # (endpoint, queued faults, expected label, callback status, code submissions)
    (TOKEN_PATH, ["500"], "token_exchange_failed", 502, 1),
    (TOKEN_PATH, ["503"], "success", 302, 2),
    (TOKEN_PATH, ["429"], "success", 302, 2),
    (TOKEN_PATH, ["429", "429", "429"], "rate_limited", 503, 3),
    (TOKEN_PATH, ["timeout"], "provider_timeout", 504, 1),
    (TOKEN_PATH, ["delay"], "success", 302, 1),
    (TOKEN_PATH, ["malformed_json"], "token_exchange_failed", 502, 1),
    (TOKEN_PATH, ["truncated"], "provider_unreachable", 503, 1),
    (TOKEN_PATH, ["reset"], "provider_unreachable", 503, 1),
    (USER_INFO_PATH, ["500"], "profile_failed", 502, 1),
    (USER_INFO_PATH, ["503"], "success", 302, 1),
    (USER_INFO_PATH, ["429"], "success", 302, 1),
    (USER_INFO_PATH, ["timeout"], "provider_timeout", 504, 1),
    (USER_INFO_PATH, ["malformed_json"], "profile_failed", 502, 1),
    (USER_INFO_PATH, ["truncated"], "success", 302, 1),
    (USER_INFO_PATH, ["reset"], "success", 302, 1),
]


@pytest.mark.parametrize("html", [False, True], ids=["json", "html"])
@pytest.mark.parametrize(
    ("path", "faults", "label", "status", "submissions"),
    CASES,
    ids=[f"{'token' if c[0] == TOKEN_PATH else 'userinfo'}-{'+'.join(c[1])}" for c in CASES],
)
async def test_each_fault_maps_to_one_typed_answer(
    path, faults, label, status, submissions, html, error_status
):
    injector = stresskit.fault_injector(0.0)
    injector.paths = [path]
    injector.queue(*faults)
    if faults.count("429") > 1:  # three waits of 1 s would outlast the 1.5 s budget
        injector.retry_after = 0
    async with (
        stresskit.stress_stack(
            faults=injector,
            emulator_options={"error_status": error_status},
            timeout=stresskit.FAULT_KEYLOOM_TIMEOUT,
            retry=stresskit.FAULT_RETRY,
        ) as stack,
        stresskit.browser() as browser,
    ):
        outcome = await stresskit.browse_login(browser, stack, html=html)
        assert stack.emulator is not None
        ledger = stack.emulator.ledger
        assert outcome.problem is None, outcome
        assert (outcome.label, outcome.status) == (label, status)
        assert ledger.submissions == submissions
        assert ledger.replays() == []
        assert ledger.unsafe_resubmissions() == []
        assert stack.responses.server_errors == 0
        assert stack.responses.sessions_issued == (1 if label == "success" else 0)
        await stresskit.settle(lambda: stresskit.pool(stack.keyloom)[0] == 0)
        assert stresskit.pool(stack.keyloom)[0] == 0

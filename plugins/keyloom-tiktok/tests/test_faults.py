"""TikTok logins when TikTok misbehaves: injected faults, rate limits, timeouts."""

from __future__ import annotations

import collections
import time
from typing import Any

import anyio
import pytest
from keyloom_tiktok.emulator import REVOKE_PATH, TOKEN_PATH, USER_INFO_PATH

from keyloom_core import (
    KeyloomError,
    NetworkError,
    ProfileError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitedError,
    RetryPolicy,
    ScopeDeniedError,
    TokenExchangeError,
)
from keyloom_core.testing.emulator import FaultInjector

pytestmark = pytest.mark.anyio

BASIC, STATS = "user.info.basic", "user.info.stats"
FAULT_KINDS = ("500", "503", "429", "timeout", "malformed_json", "truncated", "reset")
FAST_RETRY = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05, max_retry_after=2.0)


def outcome_of(error: KeyloomError) -> str:
    detail = getattr(error, "error", None) or getattr(error, "http_status", None)
    return f"{type(error).__name__}({detail})" if detail else type(error).__name__


# -- many logins under random faults -----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("process_first", "logins"),
    [(False, 200), (True, 100)],
    ids=["fault-before-handler", "fault-after-handler"],
)
async def test_logins_under_injected_faults_end_in_success_or_a_typed_error(
    make_emulator: Any, make_keyloom: Any, login: Any, process_first: bool, logins: int
) -> None:
    faults = FaultInjector(
        rate=0.2,
        seed=20_240_917,
        kinds=FAULT_KINDS,
        timeout_seconds=1.5,
        retry_after=0,
        process_first=process_first,
    )
    emulator = await make_emulator(consent="approve", faults=faults, user_info_rate_limit=None)
    keyloom = await make_keyloom(emulator, timeout=1.0, retry=FAST_RETRY)
    outcomes: collections.Counter[str] = collections.Counter()
    unexpected: list[str] = []
    limiter = anyio.CapacityLimiter(10)

    async def one() -> None:
        async with limiter:
            try:
                with anyio.fail_after(10):
                    result = await login(keyloom, emulator)
            except KeyloomError as error:
                outcomes[outcome_of(error)] += 1
                if not isinstance(error, ProviderError):
                    unexpected.append(f"{type(error).__name__}: {error}")
            except Exception as error:
                unexpected.append(f"{type(error).__name__}: {error!r}")
            else:
                assert result.profile.name == "Emulated Creator"
                outcomes["success"] += 1

    started = time.monotonic()
    async with anyio.create_task_group() as group:
        for _ in range(logins):
            group.start_soon(one)
    elapsed = time.monotonic() - started

    exchanges = emulator.code_exchanges()
    per_code = collections.Counter(e.form.get("code") for e in exchanges)
    injected = {kind: n for kind, n in faults.counts.items() if n}
    print(
        f"\n{logins} logins in {elapsed:.1f}s, injected faults {injected} "
        f"({faults.total} in {len(emulator.requests)} requests)"
    )
    for outcome, count in outcomes.most_common():
        print(f"  {outcome:<48} {count}")
    print(f"  code exchanges: {len(exchanges)}, most sends of one code: {max(per_code.values())}")

    assert unexpected == []
    assert sum(outcomes.values()) == logins
    assert outcomes["success"] > 0
    assert outcomes["success"] < logins
    assert faults.total > 0
    replayed = [e for e in exchanges if e.code_used_on_arrival]
    assert replayed == [], f"{len(replayed)} authorization codes were re-sent after redemption"


# -- single, deterministic faults ---------------------------------------------------------------


async def test_a_503_on_the_code_exchange_is_retried_with_the_same_unused_code(
    make_emulator: Any, make_keyloom: Any, login: Any
) -> None:
    emulator = await make_emulator(consent="approve", faults=FaultInjector(retry_after=0))
    keyloom = await make_keyloom(emulator, retry=FAST_RETRY)
    emulator.faults.queue("503")
    result = await login(keyloom, emulator)
    assert result.profile.name == "Emulated Creator"
    first, second = emulator.code_exchanges()
    assert (first.status, second.status) == (503, 200)
    assert first.form["code"] == second.form["code"]
    assert not second.code_used_on_arrival


@pytest.mark.parametrize(
    ("kind", "error_type", "error"),
    [
        ("500", TokenExchangeError, "server_error"),
        ("malformed_json", TokenExchangeError, None),
        ("truncated", NetworkError, None),
        ("reset", NetworkError, None),
    ],
)
@pytest.mark.parametrize("process_first", [False, True])
async def test_a_failed_code_exchange_is_never_retried(
    make_emulator: Any,
    make_keyloom: Any,
    login: Any,
    kind: str,
    error_type: type[ProviderError],
    error: str | None,
    process_first: bool,
) -> None:
    faults = FaultInjector(process_first=process_first)
    emulator = await make_emulator(consent="approve", faults=faults)
    keyloom = await make_keyloom(emulator, retry=FAST_RETRY)
    faults.queue(kind)
    with pytest.raises(error_type) as info:
        await login(keyloom, emulator)
    assert info.value.error == error
    assert info.value.provider_id == "tiktok"
    assert len(emulator.code_exchanges()) == 1
    assert emulator.calls(USER_INFO_PATH) == []


async def test_a_hanging_token_endpoint_times_out(
    make_emulator: Any, make_keyloom: Any, login: Any
) -> None:
    faults = FaultInjector(timeout_seconds=3.0)
    emulator = await make_emulator(consent="approve", faults=faults)
    keyloom = await make_keyloom(emulator, timeout=0.5, retry=FAST_RETRY)
    faults.queue("timeout")
    started = time.monotonic()
    with pytest.raises(ProviderTimeoutError) as info:
        await login(keyloom, emulator)
    assert time.monotonic() - started < 2.0
    assert info.value.provider_id == "tiktok"
    assert len(emulator.code_exchanges()) == 1


@pytest.mark.parametrize("kind", ["truncated", "reset", "503"])
async def test_a_broken_profile_answer_is_retried(
    make_emulator: Any, make_keyloom: Any, login: Any, kind: str
) -> None:
    faults = FaultInjector(retry_after=0)
    emulator = await make_emulator(consent="approve", faults=faults)
    keyloom = await make_keyloom(emulator, retry=FAST_RETRY)
    tokens = (await login(keyloom, emulator)).tokens
    faults.queue(kind)
    profile = await keyloom.fetch_profile("tiktok", tokens)
    assert profile.name == "Emulated Creator"
    assert len(emulator.calls(USER_INFO_PATH)) == 3  # the login's, the faulted one, the retry


@pytest.mark.parametrize(("kind", "error"), [("500", "internal_error"), ("malformed_json", None)])
async def test_a_bad_profile_answer_is_a_profile_error(
    make_emulator: Any, make_keyloom: Any, login: Any, kind: str, error: str | None
) -> None:
    faults = FaultInjector()
    emulator = await make_emulator(consent="approve", faults=faults)
    keyloom = await make_keyloom(emulator, retry=FAST_RETRY)
    tokens = (await login(keyloom, emulator)).tokens
    faults.queue(kind)
    with pytest.raises(ProfileError) as info:
        await keyloom.fetch_profile("tiktok", tokens)
    assert info.value.error == error
    assert info.value.provider_id == "tiktok"


async def test_a_hanging_profile_endpoint_times_out(
    make_emulator: Any, make_keyloom: Any, login: Any
) -> None:
    faults = FaultInjector(timeout_seconds=3.0)
    emulator = await make_emulator(consent="approve", faults=faults)
    keyloom = await make_keyloom(emulator, timeout=0.5, retry=FAST_RETRY)
    tokens = (await login(keyloom, emulator)).tokens
    faults.queue("timeout")
    started = time.monotonic()
    with pytest.raises(ProviderTimeoutError):
        await keyloom.fetch_profile("tiktok", tokens)
    assert time.monotonic() - started < 2.0


# -- TikTok's rate limit on /v2/user/info/ ------------------------------------------------------


async def test_a_rate_limited_profile_request_without_retry_after_gives_up_after_backoff(
    make_emulator: Any, make_keyloom: Any, login: Any
) -> None:
    """§A10: TikTok's 429 has no ``Retry-After``: the client backs off, then reports it."""
    emulator = await make_emulator(
        consent="approve", user_info_rate_limit=1, rate_limit_window=60.0
    )
    keyloom = await make_keyloom(emulator, retry=FAST_RETRY)
    await login(keyloom, emulator)
    started = time.monotonic()
    with pytest.raises(RateLimitedError) as info:
        await login(keyloom, emulator)
    assert time.monotonic() - started < 1.0
    assert info.value.retry_after is None
    assert info.value.http_status == 429
    assert [r.status for r in emulator.calls(USER_INFO_PATH)] == [200, 429, 429, 429]


async def test_a_rate_limited_profile_request_is_retried_after_the_window(
    make_emulator: Any, make_keyloom: Any, login: Any
) -> None:
    # A provider that does send Retry-After (the emulator's knob; TikTok documents none).
    emulator = await make_emulator(
        consent="approve",
        user_info_rate_limit=1,
        rate_limit_window=1.0,
        rate_limit_retry_after=True,
    )
    keyloom = await make_keyloom(emulator, retry=FAST_RETRY)
    await login(keyloom, emulator)  # uses the window's only request
    started = time.monotonic()
    result = await login(keyloom, emulator)
    elapsed = time.monotonic() - started
    assert result.profile.name == "Emulated Creator"
    assert [r.status for r in emulator.calls(USER_INFO_PATH)] == [200, 429, 200]
    assert 0.9 <= elapsed < 2.0  # Retry-After: 1 was honoured


@pytest.mark.parametrize(
    "retry",
    [
        RetryPolicy(attempts=1),
        RetryPolicy(attempts=3, max_retry_after=0.5),  # TikTok asks for longer: give up
    ],
    ids=["no-retries", "retry-after-too-long"],
)
async def test_a_rate_limit_that_outlasts_the_retries_is_rate_limited_error(
    make_emulator: Any, make_keyloom: Any, login: Any, retry: RetryPolicy
) -> None:
    emulator = await make_emulator(
        consent="approve",
        user_info_rate_limit=1,
        rate_limit_window=60.0,
        rate_limit_retry_after=True,
    )
    keyloom = await make_keyloom(emulator, retry=retry)
    await login(keyloom, emulator)
    started = time.monotonic()
    with pytest.raises(RateLimitedError) as info:
        await login(keyloom, emulator)
    assert time.monotonic() - started < 1.0
    assert info.value.retry_after is not None
    assert info.value.retry_after > 1
    assert info.value.http_status == 429
    assert info.value.provider_id == "tiktok"
    assert [r.status for r in emulator.calls(USER_INFO_PATH)] == [200, 429]


async def test_rate_limit_retries_are_bounded_by_the_attempts(
    make_emulator: Any, make_keyloom: Any, login: Any
) -> None:
    emulator = await make_emulator(
        consent="approve", user_info_rate_limit=1, rate_limit_window=60.0
    )
    faults = FaultInjector(retry_after=0)
    emulator.faults = faults
    keyloom = await make_keyloom(emulator, retry=RetryPolicy(attempts=3, max_retry_after=2.0))
    await login(keyloom, emulator)
    faults.queue("429", "429", "429")
    tokens_before = len(emulator.calls(TOKEN_PATH))
    with pytest.raises(ProviderError) as info:
        await login(keyloom, emulator)
    # The token request drew all three queued 429s: three attempts, then the error.
    assert isinstance(info.value, RateLimitedError)
    assert len(emulator.calls(TOKEN_PATH)) - tokens_before == 3


# -- revocation after a scope denial -----------------------------------------------------------


@pytest.mark.parametrize("kind", ["reset", "500", "timeout"])
async def test_a_scope_denial_is_reported_even_when_revocation_fails(
    make_emulator: Any, make_keyloom: Any, login: Any, kind: str
) -> None:
    faults = FaultInjector(paths=[REVOKE_PATH], timeout_seconds=3.0)
    emulator = await make_emulator(faults=faults)
    keyloom = await make_keyloom(
        emulator, timeout=0.5, retry=FAST_RETRY, required_scopes=[BASIC, STATS]
    )
    faults.queue(kind)
    started = time.monotonic()
    with pytest.raises(ScopeDeniedError) as info:
        await login(keyloom, emulator, untick=[STATS], drop=["scopes"])
    assert time.monotonic() - started < 2.0
    assert info.value.missing == {STATS}
    assert len(emulator.calls(REVOKE_PATH)) >= 1

"""Tests of the provider-neutral emulator kit (keyloom_core.testing.emulator)."""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import hashlib
import json
import logging
import re
from html.parser import HTMLParser
from typing import TYPE_CHECKING

import aiohttp
import pytest
from aiohttp import web

from keyloom_core.testing import emulator as emulator_kit
from keyloom_core.testing.emulator import (
    FAULT_KINDS,
    HEALTH_PATH,
    LOOPBACK_HOST,
    AccessToken,
    AuthorizationCode,
    CodeFailure,
    EmulatorServer,
    FaultInjector,
    FaultKind,
    GrantBook,
    ManualClock,
    PendingRequests,
    ScopeOption,
    SlidingWindowLimiter,
    TokenFailure,
    TokenPair,
    UserOption,
    add_emulator_arguments,
    consent_page,
    emulator_main,
    emulator_options,
    faults_from_args,
    html_response,
    log_id,
    message_page,
    remaining_seconds,
    s256_challenge,
    verify_s256,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

pytestmark = pytest.mark.anyio

REDIRECT = "https://app.example.test/callback/"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def book(clock: ManualClock) -> GrantBook:
    return GrantBook(clock=clock, access_prefix="act.", refresh_prefix="rft.")


def issue_code(book: GrantBook, **overrides: object) -> AuthorizationCode:
    params: dict[str, object] = {
        "client_id": "client-a",
        "redirect_uri": REDIRECT,
        "user_id": "user-1",
        "scopes": ["read", "write"],
    }
    params.update(overrides)
    return book.issue_code(**params)  # type: ignore[arg-type]


def issue_pair(book: GrantBook, **overrides: object) -> TokenPair:
    params: dict[str, object] = {"client_id": "client-a", "user_id": "user-1", "scopes": ["read"]}
    params.update(overrides)
    return book.issue_tokens(**params)  # type: ignore[arg-type]


# --- clock, ids, PKCE --------------------------------------------------------------------------


def test_manual_clock_advances_and_refuses_to_go_back() -> None:
    clock = ManualClock(100.0)
    assert clock() == 100.0
    assert clock.advance(5) == 105.0
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1)


def test_log_id_is_a_utc_timestamp_plus_random_hex() -> None:
    value = log_id(ManualClock(0.0))
    assert re.fullmatch(r"19700101000000[0-9A-F]{20}", value)
    assert log_id() != log_id()


def test_remaining_seconds_rounds_float_noise_and_never_goes_negative() -> None:
    now = 1_700_000_000.123
    assert remaining_seconds(now + 86_400, now) == 86_400
    assert remaining_seconds(now + 0.2, now) == 1
    assert remaining_seconds(now - 10, now) == 0


def test_s256_challenge_matches_rfc7636_appendix_b() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert s256_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    assert s256_challenge(verifier, "hex") == (
        "13d31e961a1ad8ec2f16b10c4c982e0876a878ad6df144566ee1894acb70f9c3"
    )


def test_verify_s256_honours_the_accepted_encodings() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    hex_challenge = s256_challenge(verifier, "hex")
    b64_challenge = s256_challenge(verifier)
    assert verify_s256(verifier, b64_challenge)
    assert not verify_s256(verifier, hex_challenge)
    assert verify_s256(verifier, hex_challenge, encodings=("hex",))
    assert verify_s256(verifier, b64_challenge, encodings=("hex", "base64url"))
    short_challenge = base64.urlsafe_b64encode(hashlib.sha256(b"too-short").digest()).rstrip(b"=")
    assert not verify_s256("too-short", short_challenge.decode())
    assert not verify_s256(verifier, "non-ascii-é")


# --- GrantBook: codes --------------------------------------------------------------------------


def test_code_is_single_use_and_bound(book: GrantBook) -> None:
    code = issue_code(book, code_challenge="abc", code_challenge_method="S256")
    assert "abc" not in repr(code)
    assert code.code not in repr(code)
    result = book.consume_code(code.code, client_id="client-a", redirect_uri=REDIRECT)
    assert result == code
    assert result.scopes == ("read", "write")
    again = book.consume_code(code.code, client_id="client-a", redirect_uri=REDIRECT)
    assert again is CodeFailure.USED


def test_unknown_code(book: GrantBook) -> None:
    result = book.consume_code("nope", client_id="client-a", redirect_uri=REDIRECT)
    assert result is CodeFailure.UNKNOWN


def test_code_expires_after_its_ttl(book: GrantBook, clock: ManualClock) -> None:
    code = issue_code(book)
    clock.advance(599)
    assert isinstance(
        book.inspect_code(code.code, client_id="client-a", redirect_uri=REDIRECT),
        AuthorizationCode,
    )
    clock.advance(1)
    result = book.consume_code(code.code, client_id="client-a", redirect_uri=REDIRECT)
    assert result is CodeFailure.EXPIRED


def test_code_ttl_can_be_overridden_per_code(book: GrantBook, clock: ManualClock) -> None:
    code = issue_code(book, ttl=5)
    clock.advance(5)
    result = book.consume_code(code.code, client_id="client-a", redirect_uri=REDIRECT)
    assert result is CodeFailure.EXPIRED


def test_mismatches_are_reported_and_do_not_use_the_code(book: GrantBook) -> None:
    code = issue_code(book)
    other_client = book.consume_code(code.code, client_id="client-b", redirect_uri=REDIRECT)
    assert other_client is CodeFailure.CLIENT_MISMATCH
    no_slash = REDIRECT.rstrip("/")
    other_redirect = book.consume_code(code.code, client_id="client-a", redirect_uri=no_slash)
    assert other_redirect is CodeFailure.REDIRECT_MISMATCH
    assert book.consume_code(code.code, client_id="client-a", redirect_uri=REDIRECT) == code


def test_inspect_does_not_use_the_code(book: GrantBook) -> None:
    code = issue_code(book)
    for _ in range(2):
        assert book.inspect_code(code.code, client_id="client-a", redirect_uri=REDIRECT) == code
    assert book.consume_code(code.code, client_id="client-a", redirect_uri=REDIRECT) == code


def test_code_factory_is_used_and_collisions_are_avoided(clock: ManualClock) -> None:
    values = iter(["same", "same", "other"])
    book = GrantBook(clock=clock, code_factory=lambda: next(values))
    assert issue_code(book).code == "same"
    assert issue_code(book).code == "other"


# --- GrantBook: tokens -------------------------------------------------------------------------


def test_issue_tokens_with_prefixes_and_lifetimes(book: GrantBook, clock: ManualClock) -> None:
    pair = issue_pair(book)
    assert pair.access_token.startswith("act.")
    assert pair.refresh_token is not None
    assert pair.refresh_token.startswith("rft.")
    assert pair.expires_in(clock()) == 86_400
    assert pair.refresh_expires_in(clock()) == 31_536_000
    assert pair.access_token not in repr(pair)
    assert pair.refresh_token not in repr(pair)
    found = book.lookup_access(pair.access_token)
    assert isinstance(found, AccessToken)
    assert (found.client_id, found.user_id, found.scopes) == ("client-a", "user-1", ("read",))
    assert found.expires_in(clock()) == 86_400


def test_token_values_are_unique(book: GrantBook) -> None:
    pairs = [issue_pair(book) for _ in range(50)]
    values = {p.access_token for p in pairs} | {p.refresh_token for p in pairs}
    assert len(values) == 100


def test_client_credentials_style_tokens_have_no_refresh(
    book: GrantBook, clock: ManualClock
) -> None:
    pair = book.issue_tokens(
        client_id="client-a",
        user_id=None,
        scopes=(),
        refresh=False,
        access_ttl=7200,
        access_prefix="clt.",
    )
    assert pair.access_token.startswith("clt.")
    assert pair.refresh_token is None
    assert pair.refresh_expires_in(clock()) is None
    assert pair.expires_in(clock()) == 7200


def test_access_token_expires(book: GrantBook, clock: ManualClock) -> None:
    pair = issue_pair(book, access_ttl=10)
    clock.advance(10)
    assert book.lookup_access(pair.access_token) is TokenFailure.EXPIRED
    assert book.lookup_access("act.unknown") is TokenFailure.UNKNOWN


def test_refresh_rotates_by_default(book: GrantBook, clock: ManualClock) -> None:
    first = issue_pair(book)
    assert first.refresh_token is not None
    clock.advance(100)
    second = book.refresh(first.refresh_token, client_id="client-a")
    assert isinstance(second, TokenPair)
    assert second.grant_id == first.grant_id
    assert second.access_token != first.access_token
    assert second.refresh_token not in {None, first.refresh_token}
    assert second.refresh_expires_in(clock()) == 31_536_000
    assert second.scopes == first.scopes
    assert book.refresh(first.refresh_token, client_id="client-a") is TokenFailure.REVOKED
    assert isinstance(book.lookup_access(first.access_token), AccessToken)


def test_refresh_without_rotation_keeps_the_token_and_its_expiry(
    book: GrantBook, clock: ManualClock
) -> None:
    first = issue_pair(book)
    assert first.refresh_token is not None
    clock.advance(100)
    for _ in range(3):
        again = book.refresh(first.refresh_token, client_id="client-a", rotate=False)
        assert isinstance(again, TokenPair)
        assert again.refresh_token == first.refresh_token
        assert again.refresh_expires_in(clock()) == 31_536_000 - 100


def test_refresh_failures(book: GrantBook, clock: ManualClock) -> None:
    pair = issue_pair(book, refresh_ttl=50)
    assert pair.refresh_token is not None
    assert book.refresh("rft.unknown", client_id="client-a") is TokenFailure.UNKNOWN
    assert book.refresh(pair.refresh_token, client_id="client-b") is TokenFailure.CLIENT_MISMATCH
    clock.advance(50)
    assert book.refresh(pair.refresh_token, client_id="client-a") is TokenFailure.EXPIRED


def test_revoke_by_access_token_kills_the_grant(book: GrantBook) -> None:
    pair = issue_pair(book)
    assert pair.refresh_token is not None
    refreshed = book.refresh(pair.refresh_token, client_id="client-a", rotate=False)
    assert isinstance(refreshed, TokenPair)
    assert book.revoke(pair.access_token) is None
    assert book.lookup_access(pair.access_token) is TokenFailure.REVOKED
    assert book.lookup_access(refreshed.access_token) is TokenFailure.REVOKED
    assert book.refresh(pair.refresh_token, client_id="client-a") is TokenFailure.REVOKED
    assert book.revoke(pair.access_token) is TokenFailure.REVOKED


def test_revoke_by_refresh_token_and_client_check(book: GrantBook) -> None:
    pair = issue_pair(book)
    assert pair.refresh_token is not None
    assert book.revoke(pair.refresh_token, client_id="client-b") is TokenFailure.CLIENT_MISMATCH
    assert isinstance(book.lookup_access(pair.access_token), AccessToken)
    assert book.revoke(pair.refresh_token, client_id="client-a") is None
    assert book.lookup_access(pair.access_token) is TokenFailure.REVOKED
    assert book.revoke("unknown") is TokenFailure.UNKNOWN
    assert not book.revoke_grant("missing")


def test_revoking_an_expired_access_token_still_kills_its_refresh_token(
    book: GrantBook, clock: ManualClock
) -> None:
    pair = issue_pair(book, access_ttl=10)
    assert pair.refresh_token is not None
    clock.advance(20)
    assert book.revoke(pair.access_token) is None
    assert book.refresh(pair.refresh_token, client_id="client-a") is TokenFailure.REVOKED


def test_dead_entries_are_forgotten_after_retention(clock: ManualClock) -> None:
    book = GrantBook(clock=clock, retention=100, code_ttl=10, access_ttl=10, refresh_ttl=20)
    code = issue_code(book)
    expiring = issue_pair(book)
    revoked = issue_pair(book)
    book.revoke(revoked.access_token)
    clock.advance(15)
    assert book.lookup_access(expiring.access_token) is TokenFailure.EXPIRED
    clock.advance(200)
    book.prune()
    assert book.sizes() == dict.fromkeys(
        ("codes", "access_tokens", "refresh_tokens", "grants", "revoked"), 0
    )
    assert book.lookup_access(expiring.access_token) is TokenFailure.UNKNOWN
    assert book.lookup_access(revoked.access_token) is TokenFailure.UNKNOWN
    assert book.consume_code(code.code, client_id="client-a", redirect_uri=REDIRECT) is (
        CodeFailure.UNKNOWN
    )


def test_pruning_happens_lazily_on_use(clock: ManualClock) -> None:
    book = GrantBook(clock=clock, retention=0, code_ttl=1, prune_interval=10)
    for _ in range(5):
        issue_code(book)
    assert book.sizes()["codes"] == 5
    clock.advance(11)
    book.lookup_access("anything")
    assert book.sizes()["codes"] == 0


def test_tables_are_capped(clock: ManualClock) -> None:
    book = GrantBook(clock=clock, max_entries=3)
    codes = [issue_code(book) for _ in range(5)]
    pairs = [issue_pair(book) for _ in range(5)]
    sizes = book.sizes()
    assert sizes["codes"] == 3
    assert sizes["access_tokens"] <= 3
    assert sizes["refresh_tokens"] <= 3
    assert sizes["grants"] <= 3
    oldest = book.consume_code(codes[0].code, client_id="client-a", redirect_uri=REDIRECT)
    assert oldest is CodeFailure.UNKNOWN
    assert isinstance(book.lookup_access(pairs[-1].access_token), AccessToken)
    assert book.lookup_access(pairs[0].access_token) is TokenFailure.UNKNOWN
    with pytest.raises(ValueError, match="max_entries"):
        GrantBook(max_entries=0)


# --- SlidingWindowLimiter ----------------------------------------------------------------------


def test_sliding_window_limiter(clock: ManualClock) -> None:
    limiter = SlidingWindowLimiter(2, 60, clock=clock)
    assert limiter.hit("a") is None
    clock.advance(10)
    assert limiter.hit("a") is None
    assert limiter.hit("b") is None
    clock.advance(5)
    assert limiter.hit("a") == pytest.approx(45)
    clock.advance(45)
    assert limiter.hit("a") is None
    assert limiter.hit("a") == pytest.approx(10)
    limiter.reset("a")
    assert limiter.hit("a") is None
    limiter.limit = None
    assert all(limiter.hit("a") is None for _ in range(100))


def test_limiter_keys_are_bounded(clock: ManualClock) -> None:
    limiter = SlidingWindowLimiter(1, 60, clock=clock, max_keys=3)
    for key in range(10):
        assert limiter.hit(key) is None
    assert len(limiter._hits) <= 3


# --- FaultInjector: selection ------------------------------------------------------------------


def draw(injector: FaultInjector, count: int) -> list[FaultKind | None]:
    return [injector.choose() for _ in range(count)]


def test_fault_sequence_is_deterministic_for_a_seed() -> None:
    first = draw(FaultInjector(rate=0.5, seed=7), 200)
    second = draw(FaultInjector(rate=0.5, seed=7), 200)
    other = draw(FaultInjector(rate=0.5, seed=8), 200)
    assert first == second
    assert first != other
    assert 50 < sum(kind is not None for kind in first) < 150
    assert set(first) - {None} == set(FAULT_KINDS)


def test_kind_order_does_not_change_the_sequence() -> None:
    one = draw(FaultInjector(rate=1, seed=3, kinds=["500", "reset", "delay"]), 50)
    two = draw(FaultInjector(rate=1, seed=3, kinds=["delay", "500", "reset"]), 50)
    assert one == two
    assert set(one) == {"500", "reset", "delay"}


def test_changing_the_rate_does_not_shift_the_sequence() -> None:
    reference = draw(FaultInjector(rate=0.5, seed=11), 40)
    injector = FaultInjector(rate=0.0, seed=11)
    quiet = draw(injector, 10)
    injector.rate = 0.5
    assert quiet == [None] * 10
    assert draw(injector, 30) == reference[10:]


def test_rate_bounds_and_kind_validation() -> None:
    assert draw(FaultInjector(rate=0), 50) == [None] * 50
    assert None not in draw(FaultInjector(rate=1), 50)
    with pytest.raises(ValueError, match="between 0 and 1"):
        FaultInjector(rate=1.5)
    with pytest.raises(ValueError, match="unknown fault kinds"):
        FaultInjector(kinds=["404"])
    with pytest.raises(ValueError, match="at least one"):
        FaultInjector(kinds=[])


def test_queued_faults_come_first_and_do_not_consume_draws() -> None:
    reference = draw(FaultInjector(rate=0.5, seed=5), 10)
    injector = FaultInjector(rate=0.5, seed=5)
    injector.queue("reset", "429")
    assert draw(injector, 12) == ["reset", "429", *reference]
    with pytest.raises(ValueError, match="unknown"):
        injector.queue("bogus")


def test_reset_restarts_the_sequence_and_counts() -> None:
    injector = FaultInjector(rate=0.5, seed=2)
    first = draw(injector, 20)
    injector.counts["500"] = 3
    injector.reset()
    assert injector.total == 0
    assert draw(injector, 20) == first
    injector.reset(seed=99)
    assert injector.seed == 99
    assert draw(injector, 20) == draw(FaultInjector(rate=0.5, seed=99), 20)


def test_path_eligibility() -> None:
    injector = FaultInjector()
    assert injector.applies_to("/anything")
    assert not injector.applies_to("/anything", default=False)
    injector.paths = ["/api/token/"]
    assert injector.applies_to("/api/token")
    assert injector.applies_to("/api/token/", default=False)
    assert not injector.applies_to("/consent")


# --- FaultInjector: on the wire ----------------------------------------------------------------


class DemoServer(EmulatorServer):
    """A minimal emulator: one API path and one page."""

    api_paths = frozenset({"/api/data"})

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.calls = 0

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/api/data", self.data)
        app.router.add_post("/api/data", self.data)
        app.router.add_get("/page", self.page)

    async def data(self, _request: web.Request) -> web.StreamResponse:
        self.calls += 1
        return web.json_response({"ok": True, "n": self.calls})

    async def page(self, _request: web.Request) -> web.StreamResponse:
        return html_response("<p>page</p>")


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


@pytest.fixture
async def demo() -> AsyncIterator[DemoServer]:
    async with DemoServer(faults=FaultInjector(rate=0.0, seed=1)) as server:
        yield server


def injector_of(server: EmulatorServer) -> FaultInjector:
    assert server.faults is not None
    return server.faults


@pytest.mark.parametrize(("kind", "status"), [("500", 500), ("503", 503), ("429", 429)])
async def test_status_faults(
    demo: DemoServer, http: aiohttp.ClientSession, kind: FaultKind, status: int
) -> None:
    injector_of(demo).queue(kind)
    async with http.get(demo.url_for("/api/data")) as response:
        assert response.status == status
        body = await response.json()
        assert "error" in body
        if status == 500:
            assert "Retry-After" not in response.headers
        else:
            assert response.headers["Retry-After"] == "1"
    assert injector_of(demo).counts[kind] == 1
    assert demo.calls == 0


async def test_delay_fault_then_normal_answer(
    demo: DemoServer, http: aiohttp.ClientSession
) -> None:
    injector = injector_of(demo)
    injector.delay_seconds = 0.05
    injector.queue("delay")
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with http.get(demo.url_for("/api/data")) as response:
        assert response.status == 200
        assert (await response.json())["ok"] is True
    assert loop.time() - started >= 0.05
    assert injector.counts["delay"] == 1


async def test_timeout_fault_outlasts_the_client(
    demo: DemoServer, http: aiohttp.ClientSession
) -> None:
    injector = injector_of(demo)
    injector.timeout_seconds = 5
    injector.queue("timeout")
    with pytest.raises(asyncio.TimeoutError):
        async with http.get(demo.url_for("/api/data"), timeout=aiohttp.ClientTimeout(total=0.2)):
            pass
    assert injector.counts["timeout"] == 1


async def test_malformed_json_fault(demo: DemoServer, http: aiohttp.ClientSession) -> None:
    injector_of(demo).queue("malformed_json")
    async with http.get(demo.url_for("/api/data")) as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        with pytest.raises(json.JSONDecodeError):
            await response.json()


async def test_truncated_fault(demo: DemoServer, http: aiohttp.ClientSession) -> None:
    injector_of(demo).queue("truncated")
    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.get(demo.url_for("/api/data")) as response:
            await response.read()


async def test_reset_fault(demo: DemoServer, http: aiohttp.ClientSession) -> None:
    # POST: aiohttp retries idempotent requests once after a reset connection.
    injector_of(demo).queue("reset")
    with pytest.raises(aiohttp.ClientConnectionError):
        async with http.post(demo.url_for("/api/data")) as response:
            await response.read()
    assert injector_of(demo).counts["reset"] == 1
    async with http.get(demo.url_for("/api/data")) as response:
        assert response.status == 200


async def test_process_first_runs_the_handler_before_losing_the_answer(
    demo: DemoServer, http: aiohttp.ClientSession
) -> None:
    injector = injector_of(demo)
    injector.process_first = True
    injector.queue("reset")
    with pytest.raises(aiohttp.ClientConnectionError):
        async with http.post(demo.url_for("/api/data")) as response:
            await response.read()
    assert demo.calls == 1


async def test_faults_only_hit_api_paths_and_are_counted(
    demo: DemoServer, http: aiohttp.ClientSession
) -> None:
    injector = injector_of(demo)
    injector.rate = 1.0
    injector.kinds = ["503"]
    async with http.get(demo.url_for("/page")) as response:
        assert response.status == 200
    for _ in range(3):
        async with http.get(demo.url_for("/api/data")) as response:
            assert response.status == 503
    assert injector.counts["503"] == 3
    assert injector.total == 3
    injector.paths = ["/page"]
    async with http.get(demo.url_for("/page")) as response:
        assert response.status == 503
    async with http.get(demo.url_for("/api/data")) as response:
        assert response.status == 200
    demo.faults = None
    async with http.get(demo.url_for("/page")) as response:
        assert response.status == 200


async def test_seeded_faults_repeat_across_servers(http: aiohttp.ClientSession) -> None:
    async def statuses() -> list[int]:
        faults = FaultInjector(rate=0.4, seed=1234, kinds=["500", "503", "429"])
        async with DemoServer(faults=faults) as server:
            result = []
            for _ in range(25):
                async with http.get(server.url_for("/api/data")) as response:
                    result.append(response.status)
            assert faults.total == sum(status != 200 for status in result)
            return result

    first, second = await statuses(), await statuses()
    assert first == second
    assert {500, 503, 429} & set(first)
    assert 200 in first


async def test_injector_as_a_plain_middleware(http: aiohttp.ClientSession) -> None:
    injector = FaultInjector(rate=1.0, kinds=["500"])

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hi")

    app = web.Application(middlewares=[injector])
    app.router.add_get("/", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        async with http.get(f"http://127.0.0.1:{port}/") as response:
            assert response.status == 500
        injector.rate = 0
        async with http.get(f"http://127.0.0.1:{port}/") as response:
            assert await response.text() == "hi"
    finally:
        await runner.cleanup()


# --- EmulatorServer ----------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "example.com", "::"])
def test_server_refuses_non_loopback_hosts(host: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        DemoServer(host=host)


def test_server_accepts_loopback_hosts() -> None:
    assert DemoServer(host="localhost").host == "127.0.0.1"
    assert DemoServer(host="127.0.0.2").host == "127.0.0.2"
    assert DemoServer(host="::1").host == "::1"


async def test_server_lifecycle(http: aiohttp.ClientSession) -> None:
    server = DemoServer()
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.url
    async with server:
        assert server.started
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", server.url)
        assert server.url_for("page") == server.url + "/page"
        with pytest.raises(RuntimeError, match="already running"):
            await server.start()
        async with http.get(server.url_for("/page")) as response:
            assert response.status == 200
            assert response.headers["X-Frame-Options"] == "DENY"
        url = server.url
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.port
    await server.stop()
    with pytest.raises(aiohttp.ClientConnectionError):
        async with http.get(url + "/page"):
            pass


async def test_server_stops_promptly_with_a_hanging_request(http: aiohttp.ClientSession) -> None:
    faults = FaultInjector(rate=1.0, kinds=["timeout"], timeout_seconds=30)
    server = await DemoServer(faults=faults).start()
    request = asyncio.ensure_future(http.get(server.url_for("/api/data")))
    await asyncio.sleep(0.1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await server.stop()
    assert loop.time() - started < 5
    with pytest.raises(aiohttp.ClientError):
        await request


async def test_serve_forever_returns_after_stop() -> None:
    server = DemoServer()
    task = asyncio.ensure_future(server.serve_forever())
    for _ in range(100):
        if server.started:
            break
        await asyncio.sleep(0.01)
    assert server.started
    await server.stop()
    await asyncio.wait_for(task, 5)


async def test_access_log_has_no_query_strings(
    demo: DemoServer, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="keyloom_core.testing.emulator")
    async with http.get(demo.url_for("/page"), params={"client_secret": "s3cr3t-value"}):
        pass
    await asyncio.sleep(0.05)
    assert any("/page" in record.getMessage() for record in caplog.records)
    assert "s3cr3t-value" not in caplog.text


def test_base_server_requires_routes() -> None:
    with pytest.raises(NotImplementedError):
        EmulatorServer().build_app()


async def test_every_server_answers_health(demo: DemoServer, http: aiohttp.ClientSession) -> None:
    injector_of(demo).rate = 1.0  # faults apply to api_paths only
    async with http.get(demo.url_for(HEALTH_PATH)) as response:
        assert response.status == 200
        assert await response.json() == {"status": "ok"}


# --- PendingRequests ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Pending:
    request_id: str
    expires_at: float


def test_pending_requests_are_taken_once_and_never_after_expiry(clock: ManualClock) -> None:
    pending = PendingRequests[Pending](clock)
    first, second = Pending("a", clock() + 60), Pending("b", clock() + 10)
    pending.add(first)
    pending.add(second)
    assert pending.take("a") == first
    assert pending.take("a") is None
    assert pending.take("unknown") is None
    clock.advance(10)
    assert pending.take("b") is None


def test_pending_requests_drop_the_expired_then_the_oldest(clock: ManualClock) -> None:
    pending = PendingRequests[Pending](clock, limit=2)
    pending.add(Pending("short", clock() + 5))
    pending.add(Pending("a", clock() + 60))
    clock.advance(5)
    pending.add(Pending("b", clock() + 60))  # "short" expired: room without evicting "a"
    assert len(pending) == 2
    pending.add(Pending("c", clock() + 60))  # full: the oldest, "a", goes
    assert len(pending) == 2
    assert pending.take("a") is None
    assert pending.take("b") is not None
    assert pending.take("c") is not None


# --- Command line ------------------------------------------------------------------------------


def demo_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="demo")
    add_emulator_arguments(
        parser,
        client_id="builtin-id",
        client_secret="builtin-secret",
        client_id_option="--client-key",
    )
    parser.add_argument("--fail", action="store_true")
    return parser


def demo_factory(args: argparse.Namespace) -> DemoServer:
    if args.fail:
        raise ValueError("this demo cannot start")
    return DemoServer(**emulator_options(args))


def test_shared_arguments_and_the_options_they_give() -> None:
    argv = ["--client-key", "k", "--port", "9", "--consent", "deny", "--fault-rate", "0.5"]
    args = demo_parser().parse_args([*argv, "--seed", "7", "--fault-kinds", "reset,500"])
    assert (args.client_id, args.client_secret, args.log_level) == ("k", None, "INFO")
    options = emulator_options(args)
    assert (options["host"], options["port"], options["consent"]) == (LOOPBACK_HOST, 9, "deny")
    faults = options["faults"]
    assert (faults.rate, faults.seed, faults.kinds) == (0.5, 7, ("500", "reset"))
    defaults = demo_parser().parse_args([])
    assert defaults.client_id == "builtin-id"
    assert faults_from_args(defaults).kinds == FAULT_KINDS
    assert faults_from_args(defaults).rate == 0
    with pytest.raises(SystemExit):
        demo_parser().parse_args(["--consent", "maybe"])
    assert "--client-key CLIENT_KEY" in demo_parser().format_help()


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace run_forever: start, announce and stop at once; record the URL."""
    urls: list[str] = []

    def run_forever(
        server: EmulatorServer, *, on_ready: Callable[[EmulatorServer], None] | None = None
    ) -> None:
        async def serve() -> None:
            async with server:
                urls.append(server.url)
                if on_ready is not None:
                    on_ready(server)

        asyncio.run(serve())

    monkeypatch.setattr(emulator_kit, "run_forever", run_forever)
    monkeypatch.setattr(logging, "basicConfig", lambda **kwargs: urls.append(kwargs["level"]))
    return urls


@pytest.mark.parametrize(
    ("argv", "secret"),
    [
        ([], "builtin-secret"),
        (["--client-key", "other"], None),
        (["--client-key", "other", "--client-secret", "mine"], "mine"),
    ],
)
def test_emulator_main_serves_and_announces(
    served: list[str], capsys: pytest.CaptureFixture[str], argv: list[str], secret: str | None
) -> None:
    def describe(server: DemoServer) -> list[str]:
        return [f"  page:       {server.url_for('/page')}"]

    argv = [*argv, "--consent", "approve", "--log-level", "debug"]
    assert emulator_main("Demo emulator", demo_parser(), demo_factory, describe, argv) == 0
    level, url = served
    assert level == "DEBUG"
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"Demo emulator listening on {url}"
    assert lines[1] == f"  client_key:    {'other' if argv[0] == '--client-key' else 'builtin-id'}"
    shown = lines[2].removeprefix("  client_secret: ")
    assert (shown == secret) if secret else re.fullmatch(r"[\w-]{32}", shown)
    assert lines[3:] == [f"  page:       {url}/page", "  consent: approve; press Ctrl-C to stop"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--fail"], "this demo cannot start"), (["--fault-kinds", "nope"], "unknown fault kinds")],
)
def test_emulator_main_reports_a_bad_configuration_as_a_usage_error(
    served: list[str], capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as caught:
        emulator_main("Demo emulator", demo_parser(), demo_factory, lambda _server: [], argv)
    assert caught.value.code == 2
    assert f"demo: error: {message}" in capsys.readouterr().err
    assert served == ["INFO"]  # logging configured, nothing served


# --- HTML helpers ------------------------------------------------------------------------------


class FormParser(HTMLParser):
    """Collect inputs, options and buttons of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[dict[str, str | None]] = []
        self.buttons: list[dict[str, str | None]] = []
        self.options: list[dict[str, str | None]] = []
        self.forms: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        target = {"input": self.inputs, "button": self.buttons, "option": self.options}
        if tag in target:
            target[tag].append(dict(attrs))
        if tag == "form":
            self.forms.append(dict(attrs))


EVIL = '"><script>alert(1)</script>'


def test_consent_page_structure_and_escaping() -> None:
    page = consent_page(
        app_name=EVIL,
        action="/consent?x=1&y=2",
        scopes=[
            ScopeOption("base", "Basic " + EVIL, required=True),
            ScopeOption("extra", "Extra"),
            ScopeOption(EVIL, "Weird", checked=False),
        ],
        hidden={"request_id": EVIL},
        users=[UserOption("u1", "One"), UserOption("u2", EVIL)],
        selected_user="u2",
        notice=EVIL,
        provider_name="Example",
    )
    assert "<script>" not in page
    parser = FormParser()
    parser.feed(page)
    assert parser.forms == [{"method": "post", "action": "/consent?x=1&y=2"}]
    hidden = {i["name"]: i["value"] for i in parser.inputs if i.get("type") == "hidden"}
    assert hidden == {"scope": "base", "request_id": EVIL}
    boxes = [i for i in parser.inputs if i.get("type") == "checkbox"]
    assert len(boxes) == 3
    assert "disabled" in boxes[0]
    assert "checked" in boxes[0]
    assert boxes[0].get("name") is None
    assert boxes[1]["name"] == "scope"
    assert boxes[1]["value"] == "extra"
    assert "checked" in boxes[1]
    assert boxes[2]["value"] == EVIL
    assert "checked" not in boxes[2]
    assert [(b["name"], b["value"]) for b in parser.buttons] == [
        ("decision", "deny"),
        ("decision", "approve"),
    ]
    assert [o["value"] for o in parser.options] == ["u1", "u2"]
    assert "selected" in parser.options[1]


def test_consent_page_without_users_has_no_picker() -> None:
    page = consent_page(app_name="App", action="/c", scopes=[ScopeOption("a")], accent="#0a0")
    assert "<select" not in page
    assert "<title>Authorize App</title>" in page
    assert "--accent:#0a0" in page


def test_consent_page_refuses_a_css_injection_through_the_accent() -> None:
    with pytest.raises(ValueError, match="accent"):
        consent_page(app_name="App", action="/c", scopes=[], accent="red}</style><script>")


def test_message_page_escapes_everything() -> None:
    page = message_page(
        title=EVIL, heading=EVIL, paragraphs=[EVIL], code=EVIL, attributes={"error-param": EVIL}
    )
    assert "<script>" not in page
    assert 'data-error-param="&quot;&gt;&lt;script&gt;' in page


def test_html_response_headers() -> None:
    response = html_response("<p>x</p>", status=400)
    assert response.status == 400
    assert response.content_type == "text/html"
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["Cache-Control"] == "no-store"

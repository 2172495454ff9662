"""Core CPU per login with no HTTP: ``begin_login`` + ``complete_login`` on a stub provider.

A tiny plugin registers a provider spec and answers ``exchange_code`` / ``fetch_profile``
with canned objects, so what is timed is the core alone: callback URL check, PKCE, state
signing and verification, single-use guard, plugin dispatch, scope checks, the events.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from _common import APP_URL, SECRET, median, spread

STUB_ID = "stub"
YIELD_EVERY = 64  # let the event loop run now and then, as real logins would


def _stub_plugin() -> Any:
    from keyloom_core import Profile, ProviderSpec, TokenSet, hookimpl

    spec = ProviderSpec(
        id=STUB_ID,
        name="Stub",
        authorize_url="https://stub.invalid/authorize",
        token_url="https://stub.invalid/token",
        profile_url="https://stub.invalid/userinfo",
        known_scopes=("profile", "email"),
        default_scopes=("profile",),
    )
    tokens = TokenSet(
        access_token="stub-access",
        expires_at=time.time() + 3600,
        refresh_token="stub-refresh",
        scopes=frozenset({"profile"}),
        account_id="stub-user",
    )
    profile = Profile(provider_id=STUB_ID, id="stub-user", name="Stub User")

    class StubPlugin:
        """Registers the stub provider; answers its token and profile calls at once."""

        @hookimpl
        def register_providers(self, register: Callable[..., None]) -> None:
            register(spec, None)

        @hookimpl
        async def exchange_code(self, provider: Any) -> Any:
            return tokens if provider.id == STUB_ID else None

        @hookimpl
        async def fetch_profile(self, provider: Any) -> Any:
            return profile if provider.id == STUB_ID else None

    return StubPlugin(), spec


def build_keyloom() -> Any:
    """A Keyloom instance with only the stub provider (no entry points loaded)."""
    from keyloom_core import configure_provider, define_keyloom

    plugin, spec = _stub_plugin()
    provider = configure_provider(spec, client_id="stub-client", client_secret="stub-secret")
    return define_keyloom(
        providers=[provider], plugins=[plugin], autoload=False, secret=SECRET, base_url=APP_URL
    )


def _state_of(url: str) -> str:
    """The ``state`` query parameter of an authorization URL (URL-safe, so not encoded)."""
    return url.partition("&state=")[2].partition("&")[0]


async def _logins(keyloom: Any, n: int) -> float:
    """CPU seconds for *n* logins."""
    begin, complete = keyloom.begin_login, keyloom.complete_login
    started = time.process_time()
    for i in range(n):
        start = await begin(STUB_ID, callback_url="/dashboard")
        query = {"code": "stub-code", "state": _state_of(start.url)}
        result = await complete(STUB_ID, query, start.state)
        if result.profile.id != "stub-user":
            raise RuntimeError("unexpected login result")
        if i % YIELD_EVERY == 0:
            await asyncio.sleep(0)
    return time.process_time() - started


@dataclass
class CoreResults:
    """Microseconds of CPU per login, one figure per round."""

    per_round: list[float]
    logins: int

    @property
    def us_per_login(self) -> float:
        """The median round."""
        return median(self.per_round)

    def report(self) -> str:
        """One line."""
        return (
            f"core CPU per login: {self.us_per_login:.1f} µs (median of {len(self.per_round)} "
            f"rounds of {self.logins}; rounds {spread(self.per_round)} µs)"
        )


async def run_core(*, rounds: int, logins: int, warmup: int) -> CoreResults:
    """Time *rounds* rounds of *logins* stub logins."""
    keyloom = build_keyloom()
    async with keyloom:
        await _logins(keyloom, warmup)
        per_round = []
        for _ in range(rounds):
            gc.collect()
            per_round.append(await _logins(keyloom, logins) / logins * 1e6)
    return CoreResults(per_round, logins)


async def profile_core(logins: int) -> Any:
    """Run *logins* stub logins under pyinstrument; return its session."""
    from pyinstrument import Profiler

    keyloom = build_keyloom()
    async with keyloom:
        await _logins(keyloom, min(logins, 500))
        profiler = Profiler(interval=0.0001, async_mode="disabled")
        profiler.start()
        await _logins(keyloom, logins)
        profiler.stop()
    return profiler.last_session

"""Fixtures of the reliability and security suite (the harness is ``stresskit.py``).

``error_status``
    ``"200"`` or ``"4xx"``: the TikTok emulator's error-status mode (OAuth errors with HTTP
    200 as TikTok answers them, or with RFC 6749 statuses); tests that take it run in both.
``stack``
    The TikTok emulator (consent ``approve``, a ``CodeLedger`` counting each code's
    submissions to its token endpoint, in each ``error_status`` mode) and the real
    aiohttp.web app signing in with it, both on 127.0.0.1; a :class:`stresskit.Stack`.
``browser``
    A simulated browser: an ``aiohttp.ClientSession`` with its own cookie jar.

The fixtures of ``tests/conftest.py`` (``fake_provider``, ``make_provider``...) work here
too.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

sys.path.insert(0, str(Path(__file__).parent))

import stresskit


@pytest.fixture(params=["200", "4xx"], ids=["errors-200", "errors-4xx"])
def error_status(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def stack(error_status: str) -> AsyncIterator[stresskit.Stack]:
    async with stresskit.stress_stack(emulator_options={"error_status": error_status}) as running:
        yield running


@pytest.fixture
async def browser() -> AsyncIterator[aiohttp.ClientSession]:
    async with stresskit.browser() as session:
        yield session

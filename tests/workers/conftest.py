"""The multi-worker harness: run by ``nox -s workers`` only (``KEYLOOM_WORKER_TESTS=1``).

These tests start real processes (the TikTok emulator, ``redis-server``, four app workers
under uvicorn or gunicorn) on 127.0.0.1 and take a minute or two, so the quick ``tests``
session leaves them out.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import harness

if os.environ.get("KEYLOOM_WORKER_TESTS") != "1":
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(scope="session")
def emulator_url() -> Iterator[str]:
    pytest.importorskip("keyloom_tiktok.emulator")
    with harness.emulator() as url:
        yield url


@pytest.fixture(scope="session")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.RedisProcess]:
    pytest.importorskip("redis")
    if harness.redis_binary() is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    with harness.redis_server(tmp_path_factory.mktemp("redis-workers")) as server:
        yield server


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/workers" in str(item.path):
            item.add_marker(pytest.mark.slow)

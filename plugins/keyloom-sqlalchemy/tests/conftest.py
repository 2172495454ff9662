"""Fixtures shared by the SQL tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from keyloom_sqlalchemy.testing import postgres_server


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL server on 127.0.0.1 for the module's tests: its ``postgresql+asyncpg`` URL."""
    pytest.importorskip("asyncpg", reason="asyncpg is not installed (the postgresql extra)")
    with postgres_server() as url:
        if url is None:
            pytest.skip("PostgreSQL is not installed here (initdb/pg_ctl): apt-get install postgresql")
        yield url

"""Opening an app's SQLite file: private to its owner, WAL, one schema."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Literal

__all__ = ["connect"]


def connect(
    path: Path, *, busy_timeout: float, schema: str, synchronous: Literal["NORMAL", "FULL"]
) -> sqlite3.Connection:
    """Open *path* (created owner-only if missing) in WAL mode with *schema* applied.

    The connection is in autocommit mode (callers begin their own transactions) and may be
    used from the worker thread that owns it.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    conn = sqlite3.connect(
        path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
    )
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.executescript(schema)
    except BaseException:
        conn.close()
        raise
    return conn

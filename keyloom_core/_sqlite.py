"""Opening an app's SQLite file: private to its owner, WAL, one schema."""

from __future__ import annotations

import os
import sqlite3
import time
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
        _use_wal(conn)
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.executescript(schema)
    except BaseException:
        conn.close()
        raise
    return conn


def _use_wal(conn: sqlite3.Connection, attempts: int = 100) -> None:
    """Switch the file to WAL, waiting for other processes that open it at the same time.

    Changing the journal mode can answer "database is locked" at once, without the busy
    timeout, while another connection opens the new file; this runs in a worker thread,
    so it waits by sleeping.
    """
    for attempt in range(attempts):
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.01 * (1 + attempt % 5))
        else:
            return

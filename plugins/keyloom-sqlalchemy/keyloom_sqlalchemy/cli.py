"""``keyloom db init URL``: create Keyloom's tables in a database (for apps without migrations)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
import time
from typing import TextIO

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import create_async_engine

from .adapter import create_tables
from .models import metadata

__all__ = ["DATABASE_ENV", "main"]

DATABASE_ENV = "KEYLOOM_DATABASE_URL"


def _say(stream: TextIO, text: str) -> None:
    stream.write(f"{text}\n")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keyloom db",
        description="Keyloom's tables: users, accounts and the shared store.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    init = commands.add_parser("init", help="create the tables if they do not exist")
    init.add_argument(
        "url",
        nargs="?",
        help=f"the database URL (sqlite+aiosqlite:///app.db, postgresql+asyncpg://…); "
        f"default ${DATABASE_ENV}",
    )
    return parser


async def _init(url: str) -> None:
    before = set(threading.enumerate())
    engine = create_async_engine(url)
    try:
        await create_tables(engine)
    finally:
        await engine.dispose()
        # A driver's connection thread (aiosqlite's, after a failed connect) still answers
        # this loop: let it finish before asyncio.run closes the loop, or it prints
        # "Event loop is closed" from its thread. Bounded: at most 2 seconds.
        deadline = time.monotonic() + 2.0
        for thread in set(threading.enumerate()) - before:
            await asyncio.to_thread(thread.join, max(0.0, deadline - time.monotonic()))


def main(argv: list[str], *, out: TextIO | None = None) -> int:
    """Run ``keyloom db ARGS``; returns the exit code (0 ok, 1 failed, 2 usage)."""
    args = _parser().parse_args(argv)
    stream = out if out is not None else sys.stdout
    url = args.url or os.environ.get(DATABASE_ENV)
    if not url:
        _say(sys.stderr, f"error: give the database URL or set {DATABASE_ENV}")
        return 2
    try:
        asyncio.run(_init(url))
    except (SQLAlchemyError, OSError, ValueError) as exc:
        # The URL may hold a password: name the failure, not the URL.
        _say(sys.stderr, f"error: could not create the tables: {type(exc).__name__}")
        return 1
    _say(stream, f"created (if missing): {', '.join(sorted(metadata.tables))}")
    return 0

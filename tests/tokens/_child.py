"""A separate app process: asks a shared token store for an account's access token.

Run by the multi-process tests: ``python _child.py --store sqlite|redis --location PATH|URL
--origin EMULATOR_URL --account OPEN_ID [--clock-offset S] [--wait]``. With ``--wait`` it
prints ``ready`` once set up and waits for a line on stdin, so that two processes can be
released together. It prints one JSON line: the access token and the stored version.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import anyio
import anyio.to_thread
from keyloom_tiktok import tiktok
from keyloom_tiktok.emulator import DEFAULT_CLIENT_KEY, DEFAULT_CLIENT_SECRET

from keyloom_core import KeyloomError, define_keyloom
from keyloom_core.tokens import SQLiteTokenStore, TokenManager, TokenStore

SECRET = "token-store-test-secret-0123456789-abcdefghij"


async def main(args: argparse.Namespace) -> dict[str, object]:
    store: TokenStore
    if args.store == "sqlite":
        store = SQLiteTokenStore(args.location, secret=SECRET)
    else:
        from keyloom_core.tokens.redis import RedisTokenStore

        store = RedisTokenStore(args.location, secret=SECRET)
    offset = args.clock_offset
    manager = TokenManager(store, clock=lambda: time.time() + offset)
    keyloom = define_keyloom(
        providers=[
            tiktok(
                client_id=DEFAULT_CLIENT_KEY,
                client_secret=DEFAULT_CLIENT_SECRET,
                endpoint_origin=args.origin,
                scopes=("user.info.basic", "video.list"),
            )
        ],
        secret=SECRET,
        base_url="http://127.0.0.1:8000",
        autoload=False,
        plugins=[manager.plugin],
    )
    manager.bind(keyloom)
    try:
        async with keyloom:
            await store.get("tiktok", args.account)  # connect before the start signal
            if args.wait:
                print("ready", flush=True)
                await anyio.to_thread.run_sync(sys.stdin.readline)
            try:
                token = await manager.access_token("tiktok", args.account)
            except KeyloomError as exc:
                return {"error": exc.code}
            grant = await store.get("tiktok", args.account)
            assert grant is not None
            return {"token": token, "version": grant.version}
    finally:
        await store.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", choices=("sqlite", "redis"), required=True)
    parser.add_argument("--location", required=True)
    parser.add_argument("--origin", required=True)
    parser.add_argument("--account", required=True)
    parser.add_argument("--clock-offset", type=float, default=0.0)
    parser.add_argument("--wait", action="store_true")
    result = anyio.run(main, parser.parse_args())
    print(json.dumps(result), flush=True)

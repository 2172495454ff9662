"""Inbound rate limits on the login routes, counted in the store, and the client's address."""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

import attrs

from ..errors import ConfigurationError
from ._base import Store, TooManyRequestsError

__all__ = ["Limit", "RateLimits", "client_address", "parse_networks"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_MAX_FORWARDED_HOPS: Final = 16


@attrs.frozen
class Limit:
    """At most *count* events per fixed window of *window* seconds.

    Attributes:
        count: Events allowed per window.
        window: The window's length in seconds.
    """

    count: int
    window: float

    def __attrs_post_init__(self) -> None:
        if self.count < 1 or self.window <= 0:
            msg = "a rate limit needs count >= 1 and window > 0"
            raise ConfigurationError(msg)


@attrs.frozen
class RateLimits:
    """Inbound limits per client address, shared by every process through the store.

    The defaults leave a person (even several behind one office NAT) far from any limit
    and stop a script: a sign-in is one ``/start`` and one ``/callback``.

    Attributes:
        start: ``GET /oauth/{provider}/start`` per address (default 30 a minute).
        callback: ``GET /oauth/{provider}/callback`` per address (default 30 a minute).
        failed_callback: Refused callbacks per address (bad, replayed or forged state,
            a code the provider refused); over it, every callback from the address is
            refused until the window ends (default 10 in 10 minutes).
    """

    start: Limit | None = Limit(30, 60.0)
    callback: Limit | None = Limit(30, 60.0)
    failed_callback: Limit | None = Limit(10, 600.0)

    async def check(
        self, store: Store, route: str, address: str, *, now: float | None = None
    ) -> None:
        """Count a request to *route* (``"start"``/``"callback"``) from *address*.

        :raises TooManyRequestsError: over the route's limit, or (callbacks) over the
            failed-callback limit.
        """
        limit = self.start if route == "start" else self.callback
        if route == "callback" and self.failed_callback is not None:
            await _enforce(store, "failed_callback", address, self.failed_callback, 0, now)
        if limit is not None:
            await _enforce(store, route, address, limit, 1, now)

    async def failed(self, store: Store, address: str) -> None:
        """Count one refused callback from *address*."""
        if self.failed_callback is not None:
            await store.hit(f"failed_callback:{address}", self.failed_callback.window)


async def _enforce(
    store: Store, name: str, address: str, limit: Limit, amount: int, now: float | None
) -> None:
    count, reset_at = await store.hit(f"{name}:{address}", limit.window, amount)
    if count > limit.count or (amount == 0 and count >= limit.count):
        now = time.time() if now is None else now
        wait = math.ceil(reset_at - now)
        msg = "too many sign-in requests from this address"
        raise TooManyRequestsError(msg, retry_after=wait, limit=name)


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """Trusted proxy addresses or networks (``"10.0.0.0/8"``, ``"127.0.0.1"``).

    :raises ConfigurationError: a value is not an address or network.
    """
    try:
        return tuple(ipaddress.ip_network(v.strip(), strict=False) for v in values)
    except ValueError as exc:
        msg = f"trusted_proxies holds something that is not an IP address or network: {exc}"
        raise ConfigurationError(msg) from None


def _ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    value = value.strip().strip('"')
    if value.startswith("["):  # Forwarded: "[2001:db8::1]:4711"
        value = value[1:].partition("]")[0]
    elif value.count(":") == 1:  # "192.0.2.1:4711"
        value = value.partition(":")[0]
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def _forwarded_chain(headers: Mapping[str, str]) -> list[str]:
    # Proxies append to X-Forwarded-For and pass a client's own Forwarded header through
    # untouched: with both present, only X-Forwarded-For was written by the proxy.
    forwarded = None if headers.get("x-forwarded-for") else headers.get("forwarded")
    if forwarded:
        chain = []
        for element in forwarded.split(","):
            for pair in element.split(";"):
                key, _, value = pair.strip().partition("=")
                if key.lower() == "for":
                    chain.append(value)
        return chain
    return [v for v in headers.get("x-forwarded-for", "").split(",") if v.strip()]


def client_address(peer: str | None, headers: Mapping[str, str], trusted: Sequence[Network]) -> str:
    """The client's address: the peer's, or, when the peer is a trusted proxy, the last
    address in ``X-Forwarded-For`` (or else ``Forwarded``) that is not a trusted proxy.

    Headers from an untrusted peer are ignored: anyone can write them.
    """  # noqa: D205
    address = _ip(peer) if peer else None
    if address is None:
        return peer or "unknown"
    if not trusted:
        return str(address)
    chain = _forwarded_chain(headers)[-_MAX_FORWARDED_HOPS:]
    while any(address in net for net in trusted) and chain:
        hop = _ip(chain.pop())
        if hop is None:
            break
        address = hop
    return str(address)

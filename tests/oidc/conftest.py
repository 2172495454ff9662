"""A real, independent, OpenID Certified provider on 127.0.0.1: panva's ``oidc-provider``.

The harness is ``oidckit.py``. Every test in this folder is marked ``oidc``: the default
``tests`` session deselects them, ``nox -s oidc`` runs them.

Fixtures:

``op``
    A running provider (module scope): :class:`RealProvider`. Its clients share one secret
    and differ by authentication method (``basic-client``, ``post-client``,
    ``public-client``); all may redirect to the ``op`` and ``mixup`` callbacks.
``browser``
    Plays the user's browser: ``await browser(url)`` follows the provider's redirects, with
    its cookies, until it is sent back to the app, and returns that callback's query.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urljoin, urlsplit

import aiohttp
import pytest

sys.path.insert(0, str(Path(__file__).parent))

import oidckit

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.oidc)


@pytest.fixture(scope="module")
def op(tmp_path_factory: pytest.TempPathFactory) -> Iterator[oidckit.RealProvider]:
    oidckit.npm_ci()
    provider = oidckit.RealProvider(tmp_path_factory.mktemp("oidc-provider"))
    provider.start()
    try:
        yield provider
    finally:
        provider.stop()


@pytest.fixture
async def browser() -> AsyncIterator[oidckit.Browser]:
    jar = aiohttp.CookieJar(unsafe=True)  # cookies for 127.0.0.1
    async with aiohttp.ClientSession(cookie_jar=jar) as session:

        async def follow(url: str) -> dict[str, str]:
            for _ in range(12):  # bounded: authorize → interactions → authorize → app
                if url.startswith(oidckit.BASE_URL):
                    return dict(parse_qsl(urlsplit(url).query))
                async with session.get(url, allow_redirects=False) as resp:
                    assert resp.status in {302, 303}, f"{resp.status}: {await resp.text()}"
                    url = urljoin(url, resp.headers["Location"])
            pytest.fail("too many redirects")

        yield follow

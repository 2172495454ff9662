"""The pytest plugin of keyloom-core (entry point ``pytest11``: ``keyloom``).

It is inert unless used: it registers two fixtures and nothing else (no hooks, options or
markers), and imports the conformance kit and the emulators only when a fixture is
requested, so test runs that do not use them pay nothing.

``keyloom_conformance``
    ``keyloom_conformance(provider_id, checks=None, **options) -> ConformanceReport``: runs
    the conformance checks of :mod:`keyloom_core.testing.conformance` (all, or the named
    ones) against the installed plugin that offers *provider_id*; *options* are
    :class:`~keyloom_core.testing.conformance.ConformanceTarget`'s. Call it from a
    synchronous test and assert ``report.ok`` (``str(report)`` lists each check).
``keyloom_emulator``
    ``keyloom_emulator(provider_id, *, redirect_uris=..., **options) -> EmulatorServer``:
    the provider's own emulator, not started, with one client registered through
    :meth:`~keyloom_core.testing.emulator.EmulatorServer.for_client` (client id
    ``keyloom-test-client``, secret ``keyloom-test-secret``, consent ``"approve"`` unless
    given). Use it as ``async with keyloom_emulator("github") as emulator:``.

A plugin's own suite usually subclasses
:class:`~keyloom_core.testing.conformance.ProviderConformance` instead, which needs no
fixture at all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .conformance import ConformanceReport
    from .emulator import EmulatorServer

__all__ = ["TEST_CLIENT_ID", "TEST_CLIENT_SECRET", "keyloom_conformance", "keyloom_emulator"]

#: The client id ``keyloom_emulator`` registers by default.
TEST_CLIENT_ID = "keyloom-test-client"
#: The client secret ``keyloom_emulator`` registers by default (a test value, not a secret).
TEST_CLIENT_SECRET = "keyloom-test-secret"


@pytest.fixture
def keyloom_conformance() -> Callable[..., ConformanceReport]:
    """Run the conformance checks against an installed provider plugin."""

    def run(
        provider_id: str, checks: Iterable[str] | None = None, **options: Any
    ) -> ConformanceReport:
        from .conformance import ConformanceTarget, run_conformance  # noqa: PLC0415

        return run_conformance(ConformanceTarget(provider_id=provider_id, **options), checks)

    return run


@pytest.fixture
def keyloom_emulator() -> Callable[..., EmulatorServer]:
    """Build (without starting) a provider's own emulator with one registered client."""

    def build(
        provider_id: str,
        *,
        client_id: str = TEST_CLIENT_ID,
        client_secret: str = TEST_CLIENT_SECRET,
        redirect_uris: Sequence[str] | None = None,
        scopes: Iterable[str] | None = None,
        **options: Any,
    ) -> EmulatorServer:
        from .._plugins import PluginRegistry  # noqa: PLC0415
        from .conformance import BASE_URL, load_emulator_class  # noqa: PLC0415

        registry = PluginRegistry(strict=False)
        registered = registry.providers.get(provider_id)
        if registered is None:
            pytest.fail(str(registry.missing(provider_id)))
        spec = registered.spec
        cls = load_emulator_class(spec)
        uris = redirect_uris or [f"{BASE_URL}/api/auth/oauth/{spec.id}/callback"]
        options.setdefault("consent", "approve")
        chosen = scopes if scopes is not None else spec.default_scopes
        return cls.for_client(client_id, client_secret, list(uris), sorted(chosen), **options)

    return build

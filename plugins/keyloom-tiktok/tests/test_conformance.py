"""The TikTok plugin passes Keyloom's provider conformance suite against its own emulator."""

from __future__ import annotations

from keyloom_core.testing.conformance import ProviderConformance


class TestTikTokConformance(ProviderConformance):
    """Every conformance check, with the scopes a typical app asks for."""

    provider_id = "tiktok"
    scopes = ("user.info.basic", "user.info.profile")


class TestTikTokConformanceWithRfcErrorStatuses(TestTikTokConformance):
    """The same checks with the emulator answering OAuth errors with 4xx, not TikTok's 200."""

    emulator_options = {"error_status": "4xx"}  # noqa: RUF012 (read-only class setting)

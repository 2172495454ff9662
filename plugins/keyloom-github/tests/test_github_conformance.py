"""The GitHub plugin passes Keyloom's provider conformance suite against its own emulator."""

from __future__ import annotations

from keyloom_core.testing.conformance import ProviderConformance


class TestGitHubConformance(ProviderConformance):
    """A classic OAuth app: tokens that never expire, no refresh token."""

    provider_id = "github"


class TestGitHubAppConformance(ProviderConformance):
    """A GitHub App with expiring user tokens: refresh tokens that rotate."""

    provider_id = "github"
    scopes = ("read:user", "user:email", "gist")
    emulator_options = {"expiring_tokens": True}  # noqa: RUF012 - read-only class data

"""Configuration errors: named, raised at start-up, pointing at the fix."""

from __future__ import annotations

import attrs
import pytest

from keyloom_core import (
    ConfigurationError,
    ProviderSpec,
    UnknownProviderError,
    configure_provider,
    define_keyloom,
)

SECRET = "k" * 40
BASE = "https://app.example.com"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "KEYLOOM_SECRET",
        "KEYLOOM_URL",
        "APP_URL",
        "ACME_CLIENT_ID",
        "ACME_CLIENT_SECRET",
        "ACME_ID_CLIENT_ID",
        "ACME_ID_CLIENT_SECRET",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KEYLOOM_DISABLE_PLUGIN_AUTOLOAD", "1")


@pytest.fixture
def spec() -> ProviderSpec:
    return ProviderSpec(
        id="acme",
        name="Acme",
        authorize_url="https://acme.example/authorize",
        token_url="https://acme.example/token",
        profile_url="https://acme.example/me",
        known_scopes={"user.read", "user.email", "video.list", "video.upload"},
        default_scopes={"user.read"},
    )


def provider(spec: ProviderSpec, **options: object) -> object:
    options.setdefault("client_id", "id")
    options.setdefault("client_secret", "secret")
    return configure_provider(spec, **options)  # type: ignore[arg-type]


def define(spec: ProviderSpec, **options: object) -> object:
    options.setdefault("providers", [provider(spec)])
    options.setdefault("secret", SECRET)
    options.setdefault("base_url", BASE)
    return define_keyloom(**options)  # type: ignore[arg-type]


def test_valid_configuration(spec: ProviderSpec) -> None:
    keyloom = define(spec)
    assert list(keyloom.providers) == ["acme"]
    assert keyloom.base_url == BASE
    assert keyloom.redirect_uri(keyloom.providers["acme"]) == (
        "https://app.example.com/api/auth/oauth/acme/callback"
    )


def test_missing_secret_names_the_env_var(spec: ProviderSpec) -> None:
    with pytest.raises(ConfigurationError, match="KEYLOOM_SECRET") as info:
        define(spec, secret=None)
    assert "secrets.token_urlsafe" in (info.value.hint or "")


def test_secret_and_url_from_the_environment(
    spec: ProviderSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEYLOOM_SECRET", SECRET)
    monkeypatch.setenv("KEYLOOM_URL", "https://env.example.com/")
    keyloom = define(spec, secret=None, base_url=None)
    assert keyloom.base_url == "https://env.example.com"


def test_short_secret(spec: ProviderSpec) -> None:
    with pytest.raises(ConfigurationError, match="at least 32 characters"):
        define(spec, secret="x" * 31)
    assert define(spec, secret="x" * 32)


def test_missing_base_url(spec: ProviderSpec) -> None:
    with pytest.raises(ConfigurationError, match="KEYLOOM_URL"):
        define(spec, base_url=None)


def test_missing_client_id_names_the_env_var(spec: ProviderSpec) -> None:
    with pytest.raises(ConfigurationError, match="ACME_CLIENT_ID") as info:
        configure_provider(spec, client_secret="s")
    assert info.value.provider_id == "acme"


def test_missing_client_secret_names_the_env_var(spec: ProviderSpec) -> None:
    with pytest.raises(ConfigurationError, match="ACME_CLIENT_SECRET"):
        configure_provider(spec, client_id="i")


def test_credentials_from_the_environment(
    spec: ProviderSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACME_CLIENT_ID", "env-id")
    monkeypatch.setenv("ACME_CLIENT_SECRET", "env-secret")
    configured = configure_provider(spec)
    assert (configured.client_id, configured.client_secret) == ("env-id", "env-secret")
    assert configure_provider(spec, client_id="given").client_id == "given"


def test_env_prefix_of_a_hyphenated_id() -> None:
    spec = ProviderSpec(
        id="acme-id", name="Acme ID", authorize_url="https://a/", token_url="https://a/t"
    )
    with pytest.raises(ConfigurationError, match="ACME_ID_CLIENT_ID"):
        configure_provider(spec)


def test_blank_env_var_counts_as_missing(
    spec: ProviderSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACME_CLIENT_ID", "   ")
    with pytest.raises(ConfigurationError, match="ACME_CLIENT_ID"):
        configure_provider(spec, client_secret="s")


def test_unknown_scope_is_named(spec: ProviderSpec) -> None:
    with pytest.raises(ConfigurationError, match=r"video\.delete") as info:
        define(spec, providers=[provider(spec, scopes=["user.read", "video.delete"])])
    assert info.value.provider_id == "acme"
    assert "user.read" not in str(info.value).split("(known")[0]


def test_unapproved_scope_names_the_scope(spec: ProviderSpec) -> None:
    configured = provider(spec, scopes="user.read video.upload", approved_scopes=["user.read"])
    with pytest.raises(ConfigurationError, match=r"video\.upload") as info:
        define(spec, providers=[configured])
    assert "approved_scopes" in str(info.value)
    assert info.value.hint
    assert "review" in info.value.hint


def test_approved_scopes_allow_the_scope(spec: ProviderSpec) -> None:
    configured = provider(
        spec, scopes="user.read video.upload", approved_scopes="user.read,video.upload"
    )
    assert define(spec, providers=[configured])


def test_required_scope_not_requested(spec: ProviderSpec) -> None:
    configured = provider(spec, scopes=["user.read"], required_scopes=["user.read", "video.list"])
    with pytest.raises(ConfigurationError, match=r"video\.list"):
        define(spec, providers=[configured])


def test_required_scopes_default_to_the_requested_defaults(spec: ProviderSpec) -> None:
    configured = configure_provider(
        spec, client_id="i", client_secret="s", scopes=["user.read", "video.list"]
    )
    assert configured.required_scopes == {"user.read"}
    assert configured.optional_scopes == {"video.list"}


def test_no_scopes(spec: ProviderSpec) -> None:
    with pytest.raises(ConfigurationError, match="no scopes"):
        define(spec, providers=[provider(spec, scopes=[], required_scopes=[])])


@pytest.mark.parametrize(
    "url",
    ["http://app.example.com", "http://192.168.1.10:8000", "http://localhost.evil.com"],
)
def test_http_base_url_outside_localhost(spec: ProviderSpec, url: str) -> None:
    with pytest.raises(ConfigurationError, match="https") as info:
        define(spec, base_url=url)
    assert info.value.hint


@pytest.mark.parametrize(
    "url", ["http://localhost:8000", "http://127.0.0.1:8000/", "http://[::1]:8000"]
)
def test_http_on_loopback_is_allowed(spec: ProviderSpec, url: str) -> None:
    assert define(spec, base_url=url).base_url == url.rstrip("/")


@pytest.mark.parametrize(
    "url",
    [
        "app.example.com",
        "ftp://app.example.com",
        "https://",
        "https://a.com/?x=1",
        "https://a.com/#f",
    ],
)
def test_malformed_base_url(spec: ProviderSpec, url: str) -> None:
    with pytest.raises(ConfigurationError, match="base_url"):
        define(spec, base_url=url)


@pytest.mark.parametrize("path", ["api/auth", "/api/auth/"])
def test_bad_base_path(spec: ProviderSpec, path: str) -> None:
    with pytest.raises(ConfigurationError, match="base_path"):
        define(spec, base_path=path)


def test_duplicate_provider(spec: ProviderSpec) -> None:
    with pytest.raises(ConfigurationError, match="'acme' is configured twice"):
        define(spec, providers=[provider(spec), provider(spec, client_id="other")])


def test_no_provider(spec: ProviderSpec) -> None:
    with pytest.raises(ConfigurationError, match="at least one provider"):
        define(spec, providers=[])


def test_unknown_provider_id(spec: ProviderSpec) -> None:
    with pytest.raises(UnknownProviderError, match="nosuch") as info:
        define(spec, providers=["nosuch"])
    assert isinstance(info.value, LookupError)


def test_provider_must_be_a_provider_or_id(spec: ProviderSpec) -> None:
    with pytest.raises(ConfigurationError, match="dict"):
        define(spec, providers=[{"id": "acme"}])


@pytest.mark.parametrize("bad_id", ["Acme", "1acme", "ac me", "a" * 33, "", "acme\n"])
def test_provider_id_is_validated(bad_id: str) -> None:
    with pytest.raises(ValueError):
        ProviderSpec(id=bad_id, name="X", authorize_url="https://a/", token_url="https://a/t")


def test_endpoint_origin_moves_every_endpoint(spec: ProviderSpec) -> None:
    moved = configure_provider(
        spec, client_id="i", client_secret="s", endpoint_origin="http://127.0.0.1:9999"
    ).spec
    assert moved.authorize_url == "http://127.0.0.1:9999/authorize"
    assert moved.token_url == "http://127.0.0.1:9999/token"
    assert moved.profile_url == "http://127.0.0.1:9999/me"
    assert moved.revoke_url is None


def test_configuration_is_immutable(spec: ProviderSpec) -> None:
    keyloom = define(spec)
    with pytest.raises(AttributeError):
        keyloom.base_url = "https://evil.com"  # type: ignore[misc]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        keyloom.settings.base_url = "https://evil.com"  # type: ignore[misc]
    assert keyloom.base_url != "https://evil.com"


@pytest.mark.parametrize("old", ["", "short", "x" * 31])
def test_old_secrets_must_be_as_strong_as_the_secret(spec: ProviderSpec, old: str) -> None:
    # A weak old secret would let anyone sign sessions that are still accepted.
    with pytest.raises(ConfigurationError, match=r"32 characters|no secret"):
        define(spec, old_secrets=[old])


def test_settings_that_were_attributes_still_read_with_a_warning(spec: ProviderSpec) -> None:
    guard = object()
    keyloom = define(spec, state_guard=guard)
    with pytest.warns(DeprecationWarning, match=r"keyloom\.settings\.state_guard"):
        assert keyloom.state_guard is guard
    with pytest.warns(DeprecationWarning, match=r"keyloom\.settings\.retry"):
        assert keyloom.retry is None
    with pytest.warns(DeprecationWarning, match=r"keyloom\.settings\.session"):
        assert keyloom.session is None
    assert keyloom.settings.state_guard is guard


def test_profile_fields_name_only_id_name_and_image(spec: ProviderSpec) -> None:
    aliased = attrs.evolve(spec, profile_fields={"name": "username", "image": "avatar"})
    assert dict(aliased.profile_fields) == {"name": "username", "image": "avatar"}
    assert hash(aliased)  # still a frozen, hashable value
    with pytest.raises(ValueError, match=r"not \['email'\]"):
        attrs.evolve(spec, profile_fields={"email": "mail"})  # its verification is asserted

"""The kit's declared options (``Setting``), its constructor's checks and its redirect URI rule."""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence
from typing import Literal
from urllib.parse import quote, unquote

import aiohttp
import attrs
import pytest

from keyloom_core import ProviderSpec
from keyloom_core.testing.authserver import (
    AuthorizationServer,
    Client,
    DeprecatedAlias,
    RedirectUriParts,
    Setting,
    redirect_uri_matches,
    split_redirect_uri,
)
from keyloom_core.testing.emulator import SlidingWindowLimiter, avatar_response

pytestmark = pytest.mark.anyio

SPEC = ProviderSpec(
    id="opts",
    name="Opts",
    authorize_url="https://opts.example/oauth/authorize",
    token_url="https://opts.example/oauth/token",
    profile_url="https://opts.example/api/me",
    known_scopes={"profile"},
    default_scopes={"profile"},
)


class OptionsEmulator(AuthorizationServer):
    """A server with one option of each kind."""

    spec = SPEC
    mode = Setting[Literal["a", "b"]]("a", choices=("a", "b"), flag="--mode", help_text="a or b")
    strict = Setting(default=True, flag="--lenient")
    verbose = Setting(default=False, flag="--verbose")
    depth = Setting(3, bounds=(1, 9), flag="--depth")
    tags = Setting[frozenset[str]](frozenset(), convert=frozenset)
    code_lifetime = Setting[float](42.0, at="book.code_ttl", flag="--code-lifetime")
    limit = Setting[int | None](5, at="limiter.limit")
    plain_option: bool = False
    old_mode = DeprecatedAlias("mode")

    def setup(self) -> None:
        """The limiter ``limit`` reaches."""
        self.limiter = SlidingWindowLimiter(None, 60.0, clock=self.clock)


def test_settings_have_their_defaults_and_forward_where_they_say() -> None:
    server = OptionsEmulator()
    assert (server.mode, server.strict, server.depth, server.tags) == ("a", True, 3, frozenset())
    assert server.book.code_ttl == 42.0  # set to the default after setup()
    assert server.limiter.limit == 5
    server.code_lifetime = 7.0
    assert (server.book.code_ttl, server.code_lifetime) == (7.0, 7.0)
    assert isinstance(OptionsEmulator.mode, Setting)


def test_the_constructor_sets_declared_options_and_checks_them() -> None:
    server = OptionsEmulator(mode="b", depth=9, tags=["x", "x"], limit=None, plain_option=True)
    assert (server.mode, server.depth, server.tags) == ("b", 9, frozenset({"x"}))
    assert (server.limiter.limit, server.plain_option) == (None, True)
    with pytest.raises(ValueError, match=r"^mode must be one of \('a', 'b'\)$"):
        OptionsEmulator(mode="c")
    with pytest.raises(ValueError, match=r"^depth must be between 1 and 9$"):
        server.depth = 10
    assert server.depth == 9  # a refused value changes nothing


def test_an_unknown_option_names_the_closest_and_the_valid_ones() -> None:
    with pytest.raises(TypeError, match=r"unknown options 'dept' \(did you mean 'depth'\?\)") as e:
        OptionsEmulator(dept=4)
    message = str(e.value)
    assert message.startswith("OptionsEmulator() got unknown options")
    for valid in ("depth", "plain_option", "consent", "port", "clients", "users"):
        assert f" {valid}" in message
    assert "old_mode" not in message  # accepted, but deprecated: not offered
    with pytest.raises(TypeError, match=r"unknown options 'zzz'; valid: "):
        OptionsEmulator(zzz=1)


def test_option_names_are_settings_aliases_and_annotated_defaults() -> None:
    names = OptionsEmulator.option_names()
    assert {"mode", "depth", "limit", "old_mode", "plain_option"} <= names
    assert {"withheld_scopes", "min_verifier_length", "error_status"} <= names  # the kit's
    assert not {"spec", "user", "setup", "book", "access_ttl"} & names  # ClassVar or methods


def test_a_deprecated_alias_is_still_a_keyword() -> None:
    with pytest.warns(
        DeprecationWarning, match=r"OptionsEmulator\.old_mode is deprecated; use mode"
    ):
        server = OptionsEmulator(old_mode="b")
    assert server.mode == "b"


def test_flags_come_from_the_settings() -> None:
    parser = argparse.ArgumentParser()
    OptionsEmulator.add_arguments(parser)
    assert OptionsEmulator.server_options(parser.parse_args([])) == {
        "mode": "a",
        "strict": True,
        "verbose": False,
        "depth": 3,
        "code_lifetime": 42.0,
    }
    argv = ["--mode", "b", "--lenient", "--verbose", "--depth", "5", "--code-lifetime", "1.5"]
    options = OptionsEmulator.server_options(parser.parse_args(argv))
    assert options == {
        "mode": "b",
        "strict": False,
        "verbose": True,
        "depth": 5,
        "code_lifetime": 1.5,
    }
    assert OptionsEmulator(**options).book.code_ttl == 1.5
    with pytest.raises(SystemExit):
        parser.parse_args(["--mode", "c"])
    assert "a or b" in parser.format_help()


def test_main_reports_a_bad_setting_as_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        OptionsEmulator.main(["--depth", "0"])
    assert exited.value.code == 2
    assert "depth must be between 1 and 9" in capsys.readouterr().err


def test_split_redirect_uri() -> None:
    assert split_redirect_uri("http://127.0.0.1:*/cb?x") == RedirectUriParts(
        "http", "127.0.0.1", "*", "/cb?x"
    )
    assert split_redirect_uri("https://[::1]:8080") == RedirectUriParts(
        "https", "[::1]", "8080", ""
    )
    assert split_redirect_uri("https://app.example/") == RedirectUriParts(
        "https", "app.example", None, "/"
    )
    for bad in ("app.example/cb", "://x/", "https:///cb", "https://u@app.example/", "https://[::1"):
        assert split_redirect_uri(bad) is None, bad


@pytest.mark.parametrize(
    ("candidate", "accepted"),
    [
        ("http://127.0.0.1:*/cb/", True),
        ("http://127.0.0.1:5000/cb/", True),
        ("http://127.0.0.1:65535/cb/", True),
        ("http://127.0.0.1/cb/", False),
        ("http://127.0.0.1:0/cb/", False),
        ("http://127.0.0.1:65536/cb/", False),
        ("http://127.0.0.1:50x/cb/", False),
        ("http://127.0.0.1:5000/cb", False),
        ("http://127.0.0.1:5000/cb/?x=1", False),
        ("http://127.0.0.1:5000/cb/#x", False),
        ("https://127.0.0.1:5000/cb/", False),
        ("http://localhost:5000/cb/", False),
    ],
)
def test_a_star_port_matches_any_port(candidate: str, accepted: bool) -> None:
    assert redirect_uri_matches("http://127.0.0.1:*/cb/", candidate) is accepted


def test_without_a_star_only_the_exact_uri_matches() -> None:
    assert redirect_uri_matches("https://app.example/cb?x=1", "https://app.example/cb?x=1")
    assert not redirect_uri_matches("http://127.0.0.1:8000/cb", "http://127.0.0.1:8001/cb")


async def test_a_kit_client_registered_with_a_star_port_signs_in_from_any_port() -> None:
    client = Client(client_id="c", client_secret="s", redirect_uris="http://127.0.0.1:*/cb")
    assert client.accepts_redirect_uri("http://127.0.0.1:41234/cb")
    params = {
        "client_id": "c",
        "redirect_uri": "http://127.0.0.1:41234/cb",
        "response_type": "code",
        "state": "st",
    }
    async with (
        OptionsEmulator(clients=[client], consent="approve", require_pkce=False) as server,
        aiohttp.ClientSession() as http,
        http.get(server.authorize_url, params=params, allow_redirects=False) as response,
    ):
        assert response.status == 302
        assert response.headers["Location"].startswith("http://127.0.0.1:41234/cb?code=")


@attrs.frozen(kw_only=True)
class ReviewedClient(Client):
    """A client with the scopes it was approved for."""

    approved: tuple[str, ...] = attrs.field(default=(), converter=tuple)


class ReviewedEmulator(AuthorizationServer):
    """A server whose clients record their approved scopes."""

    spec = SPEC
    client_scopes_option = "approved"

    @classmethod
    def make_client(
        cls,
        client_id: str,
        client_secret: str,
        redirect_uris: Sequence[str],
        approved: Iterable[str] = (),
    ) -> ReviewedClient:
        """A client approved for *approved*."""
        return ReviewedClient(
            client_id=client_id,
            client_secret=client_secret,
            redirect_uris=redirect_uris,
            approved=approved,
        )


def test_for_client_hands_the_scopes_to_the_client_scopes_option() -> None:
    server = ReviewedEmulator.for_client("c", "s", ["http://127.0.0.1/cb"], ["profile", "x"])
    assert server.default_app.approved == ("profile", "x")
    plain = OptionsEmulator.for_client("c", "s", ["http://127.0.0.1/cb"], ["profile"], depth=2)
    assert (type(plain.default_app), plain.depth) == (Client, 2)


def test_codes_that_need_encoding_decode_once_to_themselves() -> None:
    plain = OptionsEmulator().new_code()
    assert quote(plain, safe="") == plain
    code = OptionsEmulator(codes_need_encoding=True).new_code()
    assert {"*", "!", "~", "%"} <= set(code)
    assert quote(code, safe="") != code  # it needs encoding
    assert unquote(code) != code  # decoding twice changes it


def test_an_initials_avatar() -> None:
    response = avatar_response("Ada <Lovelace> King", size=80, colour="#123456", max_age=60)
    assert response.content_type == "image/svg+xml"
    assert response.headers["Cache-Control"] == "public, max-age=60"
    svg = response.text or ""
    assert 'width="80"' in svg
    assert 'fill="#123456"' in svg
    assert ">A&lt;</text>" in svg  # the first two words' initials, escaped
    assert 'aria-label="Ada &lt;Lovelace&gt; King"' in svg
    assert ">?</text>" in (avatar_response("  ").text or "")


@attrs.frozen
class Member:
    """A user known by a login."""

    login: str


class LoginEmulator(AuthorizationServer):
    """Users known by their login."""

    spec = SPEC
    default_users = (Member("ada"), Member("bob"))
    user_key_attribute = "login"


def test_users_are_known_by_the_user_key_attribute() -> None:
    server = LoginEmulator()
    assert list(server.users) == ["ada", "bob"]
    assert server.default_user == "ada"
    assert AuthorizationServer.user_key("plain") == "plain"  # no such attribute: itself


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("depth", "40", "depth must be a number, not str"),
        ("depth", True, "depth must be a number, not bool"),
        ("code_lifetime", "10", "code_lifetime must be a number, not str"),
        ("strict", "no", "strict must be True or False, not str"),
    ],
)
def test_a_setting_of_the_wrong_type_is_a_type_error_naming_it(
    option: str, value: object, message: str
) -> None:
    with pytest.raises(TypeError, match=message):
        OptionsEmulator(**{option: value})


def test_a_single_withheld_scope_is_one_scope() -> None:
    server = OptionsEmulator(withheld_scopes="profile")
    assert server.withheld_scopes == frozenset({"profile"})

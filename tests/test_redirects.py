"""``callback_url`` validation: only same-origin paths, in any encoding (no open redirects)."""

from __future__ import annotations

from urllib.parse import urljoin, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyloom_core import InvalidRedirectError
from keyloom_core._redirects import MAX_CALLBACK_URL, _checked, safe_callback_url

BASE = "https://app.example.com"

REFUSED = [
    "//evil.com",
    "///evil.com",
    "//evil.com/path",
    "/\\evil.com",
    "\\/evil.com",
    "\\\\evil.com",
    "https://evil.com",
    "https://evil.com/dashboard",
    "http://app.example.com/dashboard",  # same host, other scheme: another origin
    "https://app.example.com.evil.com/",
    "https://app.example.com@evil.com/",
    "https://evil.com#https://app.example.com/",
    "https:evil.com",
    "https:/evil.com",
    "javascript:alert(1)",
    "JavaScript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "evil.com",
    "dashboard",
    "%2F%2Fevil.com",
    "/%2F%2Fevil.com",
    "/%2f%2fevil.com",
    "%2F/evil.com",
    "/%252F%252Fevil.com",
    "%252F%252Fevil.com",
    "/%5Cevil.com",
    "/%255Cevil.com",
    "/\t/evil.com",
    "/\n/evil.com",
    "/\r/evil.com",
    "/%09/evil.com",
    "/%0a/evil.com",
    "/%0D/evil.com",
    "/%2509/evil.com",
    " //evil.com",
    "\t//evil.com",
    "/\x00/evil.com",
    "/\x7f",
    "/%25252525252F/evil.com",  # "/" encoded six times: more than is ever legitimate
    "/" + "a" * MAX_CALLBACK_URL,
]

ACCEPTED = [
    (None, "/"),
    ("", "/"),
    ("/", "/"),
    ("/dashboard", "/dashboard"),
    ("/dashboard?tab=1&x=y", "/dashboard?tab=1&x=y"),
    ("/dashboard#settings", "/dashboard#settings"),
    ("/a/b?c=d#e", "/a/b?c=d#e"),
    ("/a//b", "/a//b"),  # a double slash inside a path is harmless
    ("/next?url=https://evil.com", "/next?url=https://evil.com"),  # in the query: just data
    ("/files/%2Fetc", "/files/%2Fetc"),
    ("/caf%C3%A9", "/caf%C3%A9"),
    ("https://app.example.com/dashboard", "/dashboard"),
    ("https://app.example.com/dashboard?tab=1#top", "/dashboard?tab=1#top"),
    ("https://APP.example.com/x", "/x"),
    ("HTTPS://app.example.com/x", "/x"),
    ("https://app.example.com", "/"),
    ("https://app.example.com?x=1", "/?x=1"),
]


@pytest.mark.parametrize("value", REFUSED, ids=repr)
def test_refused(value: str) -> None:
    with pytest.raises(InvalidRedirectError):
        safe_callback_url(value, BASE)


@pytest.mark.parametrize(("value", "expected"), ACCEPTED, ids=repr)
def test_accepted(value: str | None, expected: str) -> None:
    assert safe_callback_url(value, BASE) == expected


def test_query_with_an_encoded_space_is_accepted() -> None:
    # an app passing its current path and query (``/search?q=red%20shoes``) back as the
    # callback: an encoded space cannot move a browser to another origin
    assert safe_callback_url("/search?q=red%20shoes", BASE) == "/search?q=red%20shoes"


def test_base_url_with_a_port_and_path() -> None:
    base = "http://localhost:8000"
    assert safe_callback_url("http://localhost:8000/x", base) == "/x"
    with pytest.raises(InvalidRedirectError):
        safe_callback_url("http://localhost:9000/x", base)


def test_error_is_safe_to_show_to_users() -> None:
    with pytest.raises(InvalidRedirectError) as info:
        safe_callback_url("https://evil.com/steal", BASE)
    assert info.value.status == 400
    assert info.value.code == "invalid_callback_url"
    assert "evil" not in str(info.value)


def _same_origin(path: str) -> bool:
    target = urlsplit(urljoin(BASE + "/", path))
    return (target.scheme, target.netloc) == ("https", "app.example.com")


PIECES = [
    "/",
    "//",
    "\\",
    "%2F",
    "%2f",
    "%5C",
    "%25",
    "%09",
    "\t",
    "\n",
    " ",
    "%20",
    ":",
    "@",
    "?",
    "#",
    ".",
    "evil.com",
    "app.example.com",
    "https:",
    "javascript:",
]
URLISH = st.lists(st.sampled_from(PIECES), max_size=8).map("".join)


@given(st.one_of(URLISH, st.text(max_size=40)))
def test_whatever_is_accepted_resolves_to_this_origin(value: str) -> None:
    try:
        path = safe_callback_url(value, BASE)
    except InvalidRedirectError:
        return
    assert path.startswith("/")
    assert not path.startswith("//")
    assert "\\" not in path
    assert _same_origin(path)
    # browsers drop tabs and newlines anywhere in a URL: what is left must be safe too
    stripped = "".join(c for c in path if c not in "\t\n\r")
    assert not stripped.startswith("//")
    assert _same_origin(stripped)


def test_non_ascii_paths_come_back_percent_encoded() -> None:
    # A Location header carries bytes, not text: the redirect must not depend on encoding.
    assert safe_callback_url("/中文?q=é#s", BASE) == "/%E4%B8%AD%E6%96%87?q=%C3%A9#s"
    assert safe_callback_url("/a%20b?x=1&y=2", BASE) == "/a%20b?x=1&y=2"  # left as it was


PLAIN = st.text(
    alphabet="abcXYZ019/._~!$&'()*+,;=:@?#-", max_size=30
).map(lambda rest: "/" + rest)


@given(PLAIN)
def test_the_plain_path_shortcut_agrees_with_the_full_check(value: str) -> None:
    # Plain paths skip the decoding and resolving: they must get the full check's answer.
    try:
        expected: str | None = _checked(value, BASE)
    except InvalidRedirectError:
        expected = None
    try:
        got: str | None = safe_callback_url(value, BASE)
    except InvalidRedirectError:
        got = None
    assert got == expected

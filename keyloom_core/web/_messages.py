"""The framework-neutral values of the auth protocol: a request, a response, a small page.

Adapters build an :class:`AuthRequest` from their framework's request and send the
:class:`AuthResponse` they get back as it is.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping
from typing import Final
from urllib.parse import parse_qsl

import attrs

from ._wire import headers_repr, parse_cookies, query_repr

__all__ = [
    "COMMON_HEADERS",
    "HTML_HEADERS",
    "HTML_TYPE",
    "AuthRequest",
    "AuthResponse",
    "json_response",
    "redirect",
    "render_page",
    "wants_html",
]

_JSON_TYPE: Final = "application/json"
HTML_TYPE: Final = "text/html; charset=utf-8"
COMMON_HEADERS: Final = (("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"))
HTML_HEADERS: Final = (
    (
        "Content-Security-Policy",
        (
            "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; "
            "form-action 'none'; frame-ancestors 'none'"
        ),
    ),
    ("Referrer-Policy", "no-referrer"),
)


def _upper(value: str) -> str:
    return value.upper()


def _pairs(value: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    return tuple(value)


@attrs.frozen
class AuthRequest:
    """A request to one of the auth routes, independent of any web framework.

    Attributes:
        method: The HTTP method, upper case.
        path: The path below the base path, e.g. ``/session`` or ``/oauth/tiktok/start``.
        query: The query parameters in order, repeated keys kept.
        headers: Header values by lower-case name (repeated headers joined with ``", "``).
        cookies: Cookie values by name.
        client: The peer's address (the TCP client, or a proxy), if the server knows it.

    The repr hides secrets: cookies, the ``Cookie``, ``Authorization`` and CSRF headers,
    and the callback's ``code`` and ``state`` parameters.
    """

    method: str = attrs.field(converter=_upper)
    path: str
    query: tuple[tuple[str, str], ...] = attrs.field(
        default=(), converter=_pairs, repr=query_repr
    )
    headers: Mapping[str, str] = attrs.field(
        factory=dict, eq=False, hash=False, repr=headers_repr
    )
    cookies: Mapping[str, str] = attrs.field(factory=dict, eq=False, hash=False, repr=False)
    client: str | None = attrs.field(default=None, eq=False, hash=False, repr=False)

    @classmethod
    def from_raw(
        cls,
        method: str,
        path: str,
        query_string: str | bytes,
        headers: Iterable[tuple[str, str]],
        client: str | None = None,
    ) -> AuthRequest:
        """Build a request from the raw query string and the header pairs.

        *query_string* is still percent-encoded (as sent); ``Cookie`` headers are parsed.
        """
        if isinstance(query_string, bytes):
            query_string = query_string.decode("latin-1")
        query = parse_qsl(query_string, keep_blank_values=True)
        merged: dict[str, str] = {}
        cookie_headers: list[str] = []
        for name, value in headers:
            key = name.lower()
            if key == "cookie":
                cookie_headers.append(value)
            merged[key] = f"{merged[key]}, {value}" if key in merged else value
        return cls(
            method=method,
            path=path,
            query=tuple(query),
            headers=merged,
            cookies=parse_cookies(cookie_headers),
            client=client,
        )


@attrs.frozen
class AuthResponse:
    """The answer to an :class:`AuthRequest`, for an adapter to send as is.

    Attributes:
        status: The HTTP status.
        body: The body bytes.
        content_type: The ``Content-Type``, or ``None`` for an empty body.
        headers: Other headers, in order.
        cookies: ``Set-Cookie`` header values, one per cookie.
    """

    status: int
    body: bytes = attrs.field(default=b"", repr=False)
    content_type: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    cookies: tuple[str, ...] = attrs.field(default=(), repr=False)

    def header_list(self) -> list[tuple[str, str]]:
        """Every header to send: ``Content-Type``, the others, then one ``Set-Cookie`` each."""
        out = [("Content-Type", self.content_type)] if self.content_type else []
        out.extend(self.headers)
        out.extend(("Set-Cookie", cookie) for cookie in self.cookies)
        return out


def json_response(
    status: int,
    data: object,
    *,
    headers: tuple[tuple[str, str], ...] = (),
    cookies: tuple[str, ...] = (),
) -> AuthResponse:
    body = json.dumps(data, separators=(",", ":")).encode()  # ASCII: lone surrogates survive
    headers = (*COMMON_HEADERS, *headers)
    return AuthResponse(status, body, _JSON_TYPE, headers=headers, cookies=cookies)


def wants_html(request: AuthRequest) -> bool:
    """Whether the client is a browser navigating (it accepts HTML, not JSON)."""
    accept = request.headers.get("accept", "").lower()
    return "text/html" in accept and "application/json" not in accept


def redirect(location: str, *, cookies: tuple[str, ...]) -> AuthResponse:
    return AuthResponse(
        302,
        headers=(("Location", location), *COMMON_HEADERS, ("Referrer-Policy", "no-referrer")),
        cookies=cookies,
    )


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>{title}</title>
<style>
body{{margin:0;min-height:100vh;display:grid;place-items:center;background:#f4f5f7;
color:#1d2330;font:16px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif}}
main{{max-width:30rem;margin:1rem;padding:2rem;background:#fff;border-radius:12px;
box-shadow:0 2px 16px rgba(0,0,0,.08)}}
h1{{margin:0 0 .75rem;font-size:1.35rem}}
.hint{{color:#555;font-size:.95rem}}
code{{background:#eef0f4;padding:.1rem .4rem;border-radius:4px;font-size:.85rem}}
nav a{{display:inline-block;margin:.5rem 1rem 0 0;color:#2456d3}}
</style></head>
<body><main><h1>{title}</h1><p>{text}</p>{hint}<p><code>{code}</code></p>
<nav>{links}</nav></main></body></html>
"""


def render_page(
    title: str,
    text: str,
    *,
    code: str,
    hint: str | None = None,
    links: Iterable[tuple[str, str]] = (),
) -> str:
    """A small, styled HTML page; every value is escaped.

    *links* are ``(url, label)`` pairs; only ``http(s)`` URLs and paths are rendered.
    """
    esc = html.escape
    hint_html = f'<p class="hint">{esc(hint)}</p>' if hint else ""
    links_html = "".join(
        f'<a href="{esc(url)}">{esc(label)}</a>'
        for url, label in links
        if url.startswith(("https://", "http://", "/"))
    )
    return _PAGE.format(
        title=esc(title), text=esc(text), hint=hint_html, code=esc(code), links=links_html
    )

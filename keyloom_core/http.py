"""The HTTP client plugins use: one shared aiohttp session, timeouts, size limits, retries.

aiohttp is imported only when a session is opened, so configuration, plugin discovery and
the command line stay fast.
"""

from __future__ import annotations

import functools
import json
import logging
import random
import re
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

import attrs

from ._deadline import call_deadline
from .errors import NetworkError, ProviderError, ProviderTimeoutError, RateLimitedError

if TYPE_CHECKING:
    import aiohttp

__all__ = ["HttpClient", "HttpResponse", "RetryPolicy", "form_encode"]

log = logging.getLogger("keyloom.http")

DEFAULT_MAX_BODY = 1 << 20
_RETRY_STATUSES_UNSAFE = frozenset({429, 503})
_RETRY_STATUSES_SAFE = frozenset({429, 502, 503, 504})
_HTTP_TOO_MANY = 429
_FORM = "application/x-www-form-urlencoded"


@attrs.frozen
class RetryPolicy:
    """How calls are retried: exponential backoff with full jitter, honouring ``Retry-After``.

    A call that is not safe to repeat (a code exchange, a rotating refresh) is retried only
    when the provider certainly did not act on it: the connection never opened, or it
    answered 429 / 503. Safe calls are also retried after timeouts, resets and 502/504.

    Attributes:
        attempts: Total tries, the first included.
        base_delay: First backoff in seconds; doubles on each retry.
        max_delay: Cap on one backoff.
        max_retry_after: A longer ``Retry-After`` is not waited for: the error is raised.
    """

    attempts: int = attrs.field(default=3, validator=attrs.validators.ge(1))
    base_delay: float = 0.2
    max_delay: float = 5.0
    max_retry_after: float = 10.0

    def delay(self, attempt: int, retry_after: float | None) -> float | None:
        """Seconds to wait before retry number *attempt* (1-based), or ``None`` to give up."""
        if attempt >= self.attempts:
            return None
        if retry_after is not None:
            return retry_after if retry_after <= self.max_retry_after else None
        return random.uniform(0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    import email.utils  # noqa: PLC0415  (rarely needed; costs ~8 ms to import)

    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _log_answer(method: str, url: str, status: int, attempt: int) -> None:
    if log.isEnabledFor(logging.DEBUG):  # the path only: queries may carry secrets
        log.debug("%s %s -> %s (attempt %d)", method, urlsplit(url).path, status, attempt)


def _classify(
    exc: Exception, where: str, idempotent: bool, provider_id: str | None
) -> tuple[ProviderError, bool]:
    """Map a transport exception to a typed error, and say whether a retry is safe."""
    import aiohttp  # noqa: PLC0415

    if isinstance(exc, ProviderError):
        exc.provider_id = exc.provider_id or provider_id
        return exc, False
    if isinstance(exc, aiohttp.ClientConnectorError):  # never connected: always safe
        return NetworkError(
            f"cannot connect to the provider ({where})", provider_id=provider_id
        ), True
    if isinstance(exc, TimeoutError):
        msg = f"the provider did not answer in time ({where})"
        return ProviderTimeoutError(msg, provider_id=provider_id), idempotent
    if isinstance(exc, (aiohttp.ClientError, OSError)):
        msg = f"connection to the provider failed ({where}): {type(exc).__name__}"
        return NetworkError(msg, provider_id=provider_id), idempotent
    if isinstance(exc, ValueError):  # e.g. a header value aiohttp refuses to send
        msg = f"cannot send this request to the provider ({where}): {type(exc).__name__}"
        return ProviderError(msg, provider_id=provider_id), False
    raise exc


@attrs.frozen
class HttpResponse:
    """A provider's answer, read whole (within the size limit).

    Attributes:
        status: HTTP status.
        headers: Response headers (case-insensitive mapping).
        body: The raw body (hidden from repr: it may hold tokens).
    """

    status: int
    headers: Mapping[str, str] = attrs.field(repr=False)
    body: bytes = attrs.field(repr=False)

    @property
    def ok(self) -> bool:
        """Whether the status is 2xx."""
        return 200 <= self.status < 300

    def json(
        self, error: type[ProviderError] = ProviderError, provider_id: str | None = None
    ) -> Any:
        """Parse the body as JSON (an empty body reads as ``{}``), or raise *error*.

        The error never quotes the body, which may hold tokens.
        """
        try:
            return json.loads(self.body) if self.body.strip() else {}
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise error(
                f"provider answered HTTP {self.status} with a body that is not JSON",
                provider_id=provider_id,
                http_status=self.status,
            ) from exc

    def json_object(
        self, error: type[ProviderError] = ProviderError, provider_id: str | None = None
    ) -> dict[str, Any]:
        """Parse the body as a JSON object, or raise *error* (never with the body's text)."""
        data = self.json(error, provider_id)
        if not isinstance(data, dict):
            raise error(
                f"provider answered HTTP {self.status} with JSON that is not an object",
                provider_id=provider_id,
                http_status=self.status,
            )
        return data


_URL_SAFE = re.compile(r"[A-Za-z0-9._~-]*").fullmatch
#: What ``quote_plus(c, safe="")`` makes of each byte, for one ``str.translate`` pass.
_QUOTED_BYTES = [
    chr(b) if _URL_SAFE(chr(b)) else "+" if b == 0x20 else f"%{b:02X}" for b in range(256)
]


def _quote(text: str) -> str:
    """``quote_plus(text, safe="")``.

    ``quote_plus`` looks up every byte in Python; a redirect URI in each token request's
    form took about 40 k instructions a login that way (``bench_instructions.py``). Text
    that needs no quoting is used as it is; the rest goes through a byte table once.
    """
    if _URL_SAFE(text):
        return text
    return text.encode().decode("latin-1").translate(_QUOTED_BYTES)


@functools.lru_cache(maxsize=256)
def _quote_public(text: str) -> str:
    return _quote(text)


#: Parameter names (never secrets), quoted once.
_quote_name = functools.lru_cache(maxsize=64)(_quote)


def _quote_known(text: str) -> str:
    """:func:`_quote`, remembering only what needed quoting (never a state or a challenge)."""
    return text if _URL_SAFE(text) else _quote_public(text)


def _encode(params: Mapping[str, str], quote: Callable[[str], str]) -> str:
    """``urlencode(params, doseq=True)``, through *quote* when every key and value is text.

    Parameter names, the same on every request, are quoted through the cache (a cache hit
    costs half the check that they need no quoting).
    """
    parts = []
    for key, value in getattr(params, "items", tuple)():
        if type(key) is not str or type(value) is not str:  # numbers, lists, str enums
            return urlencode(params, doseq=True)
        parts.append(f"{_quote_name(key)}={quote(value)}")
    return "&".join(parts) if parts or not params else urlencode(params, doseq=True)


def query_encode(params: Mapping[str, str]) -> str:
    """:func:`form_encode` for public parameters, such as an authorization URL's query.

    Values that need quoting (a redirect URI, a scope list) are the same on every login of
    a provider, so their quoted form is remembered (256 at most): quoting a redirect URI
    character by character is the largest single cost of building the URL. Never use it
    for secrets, which must not linger in a cache.
    """
    return _encode(params, _quote_known)


def form_encode(params: Mapping[str, str]) -> str:
    """``urlencode(params, doseq=True)``: an ``application/x-www-form-urlencoded`` body.

    Text that needs no quoting (states, challenges, verifiers, ids) is used as it is: that
    skips ``quote_plus`` for nearly every pair of a login's requests. Anything but a mapping
    of plain ``str`` (numbers, lists, ``str`` enums, a sequence of pairs) goes to
    ``urlencode``.
    """
    return _encode(params, _quote)


def _prepare(
    headers: Mapping[str, str] | None, bearer: str | None, data: Mapping[str, str] | None
) -> tuple[dict[str, str], bytes | None]:
    """The headers and the form body of a request.

    The form is encoded once here rather than by aiohttp's ``FormData`` on every attempt:
    the same bytes, at a fraction of the cost.
    """
    hdrs = dict(headers or {})
    if bearer is not None:
        hdrs["Authorization"] = f"Bearer {bearer}"
    if data is None:
        return hdrs, None
    if "content-type" not in map(str.lower, hdrs):
        hdrs["Content-Type"] = _FORM
    return hdrs, form_encode(data).encode()


class HttpClient:
    """One shared ``aiohttp.ClientSession`` for all provider calls of a Keyloom instance.

    Use as an async context manager. A session passed in is borrowed and left open.

    Provider calls are stateless, so the session this client opens keeps no cookies
    (``aiohttp.DummyCookieJar``): a cookie a provider sets while one user signs in is
    never sent with the next user's calls. A borrowed session should be created with
    ``cookie_jar=aiohttp.DummyCookieJar()`` for the same reason.

    :param session: An app-owned session to borrow instead of opening one.
    :param timeout: Total seconds for one attempt of one request.
    :param connect_timeout: Seconds to open a connection.
    :param retry: The retry policy.
    :param max_body: Largest response body accepted, in bytes.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession | None = None,
        *,
        timeout: float = 10.0,
        connect_timeout: float = 5.0,
        retry: RetryPolicy | None = None,
        max_body: int = DEFAULT_MAX_BODY,
    ) -> None:
        self._session = session
        self._owned = session is None
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self.retry = retry or RetryPolicy()
        self.max_body = max_body

    def __repr__(self) -> str:
        state = "open" if self._session is not None else "closed"
        return f"<HttpClient {state} timeout={self._timeout}s>"

    async def __aenter__(self) -> HttpClient:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def open(self) -> None:
        """Open the session (a no-op for a borrowed one, or if already open)."""
        if self._session is None:
            import aiohttp  # noqa: PLC0415  (kept off the import path of the CLI)

            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(
                    total=self._timeout, sock_connect=self._connect_timeout
                ),
                connector=aiohttp.TCPConnector(limit=256, ttl_dns_cache=300),
                cookie_jar=aiohttp.DummyCookieJar(),
                headers={"User-Agent": "keyloom-python"},
                raise_for_status=False,
            )
            self._owned = True

    async def close(self) -> None:
        """Close the session if this client opened it."""
        session, self._session = self._session, None
        if session is not None and self._owned:
            import anyio  # noqa: PLC0415  (kept off the import path of plugin discovery)

            with anyio.CancelScope(shield=True):
                await session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        """The underlying session (opened on first use of :meth:`open`)."""
        if self._session is None:
            msg = "HttpClient is not open: use 'async with keyloom:'"
            raise RuntimeError(msg)
        return self._session

    def post_form(
        self,
        url: str,
        form: Mapping[str, str],
        *,
        idempotent: bool = False,
        headers: Mapping[str, str] | None = None,
        provider_id: str | None = None,
    ) -> Coroutine[Any, Any, HttpResponse]:
        """POST an ``application/x-www-form-urlencoded`` body (token, refresh, revoke calls).

        Like :meth:`get`, it returns :meth:`request`'s coroutine to await rather than being
        a coroutine of its own: one object less alive through the call, which under load
        means fewer garbage collections (``bench_login.py`` counts them).
        """
        return self.request(
            "POST",
            url,
            data=form,
            headers=headers,
            idempotent=idempotent,
            provider_id=provider_id,
        )

    def get(
        self,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        bearer: str | None = None,
        headers: Mapping[str, str] | None = None,
        provider_id: str | None = None,
    ) -> Coroutine[Any, Any, HttpResponse]:
        """GET, optionally with a bearer token (safe to retry); returns the call to await."""
        return self.request(
            "GET",
            url,
            params=params,
            bearer=bearer,
            headers=headers,
            idempotent=True,
            provider_id=provider_id,
        )

    async def request(
        self,
        method: str,
        url: str,
        *,
        data: Mapping[str, str] | None = None,
        json_body: object = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        bearer: str | None = None,
        idempotent: bool,
        provider_id: str | None = None,
    ) -> HttpResponse:
        """Send a request with retries; return the answer whatever its status.

        :raises RateLimitedError: still rate-limited after the retries.
        :raises ProviderTimeoutError: no answer in time.
        :raises NetworkError: the connection failed or broke.
        :raises ProviderError: the body is larger than ``max_body``.
        """
        hdrs, body = _prepare(headers, bearer, data)
        statuses = _RETRY_STATUSES_SAFE if idempotent else _RETRY_STATUSES_UNSAFE
        attempt = 0
        while True:
            attempt += 1
            try:  # the request inline: a coroutine less on the way of every answer
                async with self.session.request(
                    method,
                    url,
                    data=body,
                    json=json_body,
                    params=params,
                    headers=hdrs,
                    allow_redirects=False,
                ) as resp:
                    read = resp.read() if self._sized(resp) else self._chunks(resp)
                    answer = await read
                    response = HttpResponse(status=resp.status, headers=resp.headers, body=answer)
            except Exception as exc:
                where = f"{method} {urlsplit(url).path}"
                failure, retryable = _classify(exc, where, idempotent, provider_id)
                delay = self.retry.delay(attempt, None) if retryable else None
                if delay is None:
                    raise failure from exc
                log.info("%s: %s, retrying in %.2fs", where, type(exc).__name__, delay)
            else:
                _log_answer(method, url, response.status, attempt)
                if response.status not in statuses:
                    return response
                where = f"{method} {urlsplit(url).path}"
                retry_after = _retry_after(response.headers.get("Retry-After"))
                delay = self.retry.delay(attempt, retry_after)
                import anyio  # noqa: PLC0415  (off the import path of discovery and the answer's)

                budget = min(anyio.current_effective_deadline(), call_deadline())
                if delay is not None and anyio.current_time() + delay >= budget:
                    delay = None  # the caller's time budget would run out while waiting
                if delay is None:
                    if response.status == _HTTP_TOO_MANY:
                        raise RateLimitedError(
                            f"rate limited by the provider ({where})",
                            retry_after=retry_after,
                            provider_id=provider_id,
                            http_status=response.status,
                        )
                    return response
                log.info("%s: HTTP %s, retrying in %.2fs", where, response.status, delay)
            import anyio  # noqa: PLC0415  (off the import path of discovery and the answer's)

            await anyio.sleep(delay)

    def _sized(self, resp: aiohttp.ClientResponse) -> bool:
        """Whether *resp*'s length, checked against :attr:`max_body`, is its body's true size.

        :raises ProviderError: the declared length is too large.
        """
        length = resp.content_length
        if length is not None and length > self.max_body:
            raise ProviderError(
                f"provider answer is too large ({length} bytes)", http_status=resp.status
            )
        return length is not None and resp.headers.get("Content-Encoding", "identity") == "identity"

    async def _chunks(self, resp: aiohttp.ClientResponse) -> bytes:
        """The body of *resp*, read in chunks up to :attr:`max_body`.

        :raises ProviderError: the body is larger.
        """
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(65536):
            size += len(chunk)
            if size > self.max_body:
                raise ProviderError("provider answer is too large", http_status=resp.status)
            chunks.append(chunk)
        return b"".join(chunks)

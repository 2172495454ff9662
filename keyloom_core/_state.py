"""Login state: what a started login remembers, sealed into the browser, accepted once.

``begin_login`` writes a :class:`LoginState` into a value that the browser keeps (the
state cookie); the provider echoes only its random ``nonce`` (the ``state`` parameter).
``complete_login`` verifies the value and its expiry, checks the echo in constant time,
and asks the :class:`StateGuard` to accept the nonce once.

With ``cryptography`` installed (the ``tokens`` extra) the value is sealed: AES-256-GCM
with a key derived from the app's secrets exactly as the token store derives its own
(HKDF-SHA256, purpose ``login-state/v1``), so the PKCE verifier, redirect URI and callback
URL cannot be read from the cookie. Without it the value is HMAC-signed: authentic but
readable (base64 JSON).
"""

from __future__ import annotations

import collections
import hmac
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from ._signing import (
    MAX_TOKEN_LENGTH,
    BadSignatureError,
    ExpiredError,
    Signer,
    b64decode,
    b64encode,
)
from .errors import StateError

if TYPE_CHECKING:
    from .tokens._crypto import TokenCipher

__all__ = ["LoginState", "LoginStates", "MemoryStateGuard", "StateGuard"]

_SEAL_PURPOSE = "login-state/v1"
_SEAL_AD = b"keyloom-login-state"


def _state_cipher(secrets: Sequence[str]) -> TokenCipher | None:
    """The AEAD that seals login states, or ``None`` without ``cryptography``."""
    try:
        from .tokens._crypto import TokenCipher  # noqa: PLC0415  (optional, and costly)
    except ImportError:
        return None
    return TokenCipher(secrets[0], secrets[1:], purpose=_SEAL_PURPOSE)


class StateGuard(Protocol):
    """Remembers used login states so each is accepted once (shared between app processes)."""

    async def use_once(self, key: str, expires_at: float) -> bool:
        """Record *key* as used until *expires_at*; ``False`` if it was already used."""
        ...


class MemoryStateGuard:
    """In-process :class:`StateGuard`; memory is bounded by logins completed per state TTL."""

    def __init__(self) -> None:
        self._used: collections.OrderedDict[str, float] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._used)

    async def use_once(self, key: str, expires_at: float) -> bool:
        """Record *key*; ``False`` if it was seen before and has not expired."""
        now = time.time()
        while self._used:  # entries share one TTL, so the oldest expire first
            oldest, exp = next(iter(self._used.items()))
            if exp > now:
                break
            del self._used[oldest]
        if key in self._used:
            return False
        self._used[key] = expires_at
        return True


@attrs.frozen
class LoginState:
    """What a started login needs to finish, kept (signed) by the browser.

    Attributes:
        provider_id: The provider the login was started with.
        nonce: The random ``state`` parameter the provider must echo.
        code_verifier: The PKCE verifier (hidden from repr).
        callback_url: Where to send the user afterwards (a same-origin path).
        redirect_uri: The redirect URI sent to the provider, echoed at the exchange.
        max_age: An OpenID login's ``max_age`` (seconds, as sent), checked against the ID
            token's ``auth_time``; ``None`` otherwise.
        link_to: The user the login links its account to (``begin_login(link_to=...)``),
            or ``None`` for a sign-in.
        expires_at: When the state stops being accepted (epoch seconds).
    """

    provider_id: str
    nonce: str = attrs.field(repr=False)
    code_verifier: str = attrs.field(repr=False)
    callback_url: str
    redirect_uri: str
    max_age: str | None = None
    expires_at: int = 0
    link_to: str | None = None

    def to_payload(self) -> dict[str, str]:
        """The compact payload to sign (the signer adds the expiry)."""
        payload = {  # one-letter keys: the value travels in a cookie
            "p": self.provider_id,
            "n": self.nonce,
            "v": self.code_verifier,
            "c": self.callback_url,
            "r": self.redirect_uri,
        }
        if self.max_age is not None:
            payload["m"] = self.max_age
        if self.link_to is not None:
            payload["l"] = self.link_to
        return payload

    @classmethod
    def from_payload(cls, data: Mapping[str, Any]) -> LoginState:
        """Read a verified payload; :class:`BadSignatureError` if it is not a login state."""
        provider_id, nonce, verifier = data.get("p"), data.get("n"), data.get("v")
        callback_url, redirect_uri = data.get("c"), data.get("r")
        max_age, link_to = data.get("m"), data.get("l")
        if not (
            type(provider_id) is type(nonce) is type(verifier) is str
            and type(callback_url) is type(redirect_uri) is str
            and (max_age is None or type(max_age) is str)
            and (link_to is None or type(link_to) is str)
        ):
            raise BadSignatureError("malformed")
        return cls(
            provider_id=provider_id,
            nonce=nonce,
            code_verifier=verifier,
            callback_url=callback_url,
            redirect_uri=redirect_uri,
            max_age=max_age,
            expires_at=data["exp"],
            link_to=link_to,
        )


class LoginStates:
    """Signs login states, verifies them on the callback, and accepts each once.

    :param secrets: the instance's secrets, current first.
    :param ttl: seconds a started login stays valid.
    :param guard: where used states are remembered.
    """

    def __init__(self, secrets: Sequence[str], *, ttl: float, guard: StateGuard) -> None:
        self._secrets = tuple(secrets)
        self._signer = Signer(secrets, "state")
        self._cipher: TokenCipher | None = None
        self._cipher_loaded = False  # built on first use: importing cryptography takes time
        #: What the cipher raises for a value it cannot decrypt (set with the cipher).
        self._refused: type[Exception] = LookupError
        self.ttl = ttl
        self.guard = guard

    def __repr__(self) -> str:
        return f"LoginStates(ttl={self.ttl:g}, guard={type(self.guard).__name__})"

    def _aead(self) -> TokenCipher | None:
        if not self._cipher_loaded:
            self._cipher = _state_cipher(self._secrets)
            if self._cipher is not None:
                from .tokens._store import TokenDecryptionError  # noqa: PLC0415  (with the cipher)

                self._refused = TokenDecryptionError
            self._cipher_loaded = True
        return self._cipher

    @property
    def sealed(self) -> bool:
        """Whether states are encrypted (``cryptography`` is installed), not only signed."""
        return self._aead() is not None

    def seal(self, state: LoginState, *, now: float) -> str:
        """The value the browser keeps for *state*: encrypted if possible, else signed."""
        cipher = self._aead()
        if cipher is None:
            return self._signer.sign(state.to_payload(), ttl=self.ttl, now=now)
        payload = {**state.to_payload(), "exp": int(now + self.ttl)}
        return b64encode(cipher.encrypt(payload, _SEAL_AD))

    def read(self, value: str, *, now: float | None = None) -> dict[str, Any]:
        """The payload of a state *value*, checked for authenticity and expiry, not spent.

        The keys are ``p`` (provider), ``n`` (nonce), ``v`` (PKCE verifier), ``c``
        (callback URL), ``r`` (redirect URI), ``exp``, and when set ``m`` (OpenID
        ``max_age``) and ``l`` (the user a linking login links to).

        :raises BadSignatureError: forged, tampered or malformed.
        :raises ExpiredError: genuine but expired.
        """
        cipher = self._aead()
        if cipher is None:
            return self._signer.unsign(value, now=now)
        if len(value) > MAX_TOKEN_LENGTH:
            raise BadSignatureError("malformed")
        try:
            data = cipher.decrypt(b64decode(value), _SEAL_AD)
        except ValueError:
            raise BadSignatureError("malformed") from None
        except self._refused:
            raise BadSignatureError("signature") from None
        if not isinstance(data.get("exp"), int):
            raise BadSignatureError("malformed")
        if data["exp"] <= (time.time() if now is None else now):
            raise ExpiredError("expired")
        return data

    async def use(
        self, provider_id: str, echoed: str | None, stored: str | None, now: float | None = None
    ) -> LoginState:
        """The login state of a callback, verified and spent.

        :param echoed: the ``state`` parameter the provider sent back.
        :param stored: the signed value from the browser.
        :raises StateError: missing, forged, expired, another provider's, not matching the
            echo, or already used (``reason`` says which).
        """
        state = self._verify(provider_id, echoed, stored, now)
        if not await self.guard.use_once(state.nonce, float(state.expires_at)):
            msg = "this sign-in link was already used"
            raise StateError(msg, reason="replayed", provider_id=provider_id)
        return state

    def _verify(
        self, provider_id: str, echoed: str | None, stored: str | None, now: float | None
    ) -> LoginState:
        if not stored:
            msg = "no sign-in is in progress in this browser"
            raise StateError(msg, reason="missing", provider_id=provider_id)
        try:
            state = LoginState.from_payload(self.read(stored, now=now))
        except ExpiredError:
            msg = "the sign-in took too long and expired"
            raise StateError(msg, reason="expired", provider_id=provider_id) from None
        except BadSignatureError as exc:
            msg = "the sign-in state is not valid"
            raise StateError(msg, reason=str(exc), provider_id=provider_id) from None
        if state.provider_id != provider_id:
            msg = "the sign-in was started with another provider"
            raise StateError(msg, reason="provider", provider_id=provider_id)
        if not echoed:
            msg = "the callback has no state"
            raise StateError(msg, reason="missing", provider_id=provider_id)
        if not hmac.compare_digest(echoed.encode(errors="replace"), state.nonce.encode()):
            msg = "the callback's state does not match this browser's sign-in"
            raise StateError(msg, reason="mismatch", provider_id=provider_id)
        return state

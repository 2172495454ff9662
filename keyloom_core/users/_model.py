"""The user and account values, in the data model of the JavaScript Keyloom."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import attrs

__all__ = ["Account", "User", "new_user_id"]


def new_user_id() -> str:
    """A new random user id (URL-safe, 128 bits)."""
    return secrets.token_urlsafe(16)


def _iso(moment: datetime | None) -> str | None:
    """*moment* as JavaScript serialises a ``Date`` (``2026-01-02T03:04:05.000Z``)."""
    if moment is None:
        return None
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


def _parse(value: object) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        msg = "a time must be an ISO 8601 string"
        raise TypeError(msg)
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        msg = "times must carry a time zone (use datetime.now(UTC))"
        raise ValueError(msg)
    return value


def _opt_str(value: object) -> str | None:
    if value is not None and not isinstance(value, str):
        msg = "expected a string or None"
        raise TypeError(msg)
    return value


def _scope(value: Iterable[str]) -> frozenset[str]:
    if isinstance(value, str):
        msg = "scope must be a collection of scope names"
        raise TypeError(msg)
    return frozenset(value)


def now_utc() -> datetime:
    """The current time, in UTC, to the millisecond (what every store can keep)."""
    moment = datetime.now(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


@attrs.frozen
class User:
    """A person using the app, whatever they sign in with.

    Attributes:
        id: The stable id an app's own tables refer to.
        email: The e-mail address, if a provider gave one (``None`` for TikTok).
        email_verified: When a provider asserted the address verified, or ``None``.
        name: Display name, if any.
        image: Avatar URL, if any.
        created_at: When the user was created (UTC).
        updated_at: When the user was last changed (UTC).
    """

    id: str
    email: str | None = attrs.field(default=None, repr=False)
    email_verified: datetime | None = attrs.field(default=None, converter=_aware)
    name: str | None = None
    image: str | None = attrs.field(default=None, repr=False)
    created_at: datetime = attrs.field(factory=now_utc, converter=_aware)
    updated_at: datetime = attrs.field(factory=now_utc, converter=_aware)

    def to_json(self) -> dict[str, Any]:
        """The user object of the Keyloom HTTP protocol, in the JavaScript data model."""
        return {
            "id": self.id,
            "email": self.email,
            "emailVerified": _iso(self.email_verified),
            "name": self.name,
            "image": self.image,
            "createdAt": _iso(self.created_at),
            "updatedAt": _iso(self.updated_at),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> User:
        """Read back what :meth:`to_json` wrote.

        :raises TypeError: a field has the wrong type.
        :raises ValueError: a time is not ISO 8601.
        """
        user_id = data.get("id")
        if not isinstance(user_id, str) or not user_id:
            msg = "a user needs a string id"
            raise TypeError(msg)
        return cls(
            id=user_id,
            email=_opt_str(data.get("email")),
            email_verified=_parse(data.get("emailVerified")),
            name=_opt_str(data.get("name")),
            image=_opt_str(data.get("image")),
            created_at=_parse(data.get("createdAt")) or now_utc(),
            updated_at=_parse(data.get("updatedAt")) or now_utc(),
        )


@attrs.frozen
class Account:
    """A provider account linked to a user. The tokens stay in the (encrypted) token store.

    Attributes:
        user_id: The user it belongs to.
        provider: The provider id (``"tiktok"``).
        provider_account_id: The provider's id for the account (``TokenSet.account_id``, or
            the profile's id), unique per provider.
        scope: The scopes granted at the last sign-in.
        expires_at: When the access token of the last sign-in expires (epoch seconds), if
            the provider said.
    """

    user_id: str
    provider: str
    provider_account_id: str
    scope: frozenset[str] = attrs.field(default=frozenset(), converter=_scope)
    expires_at: float | None = None

    @property
    def key(self) -> tuple[str, str]:
        """``(provider, provider_account_id)``: what identifies the account."""
        return (self.provider, self.provider_account_id)

    def to_json(self) -> dict[str, Any]:
        """The account in the JavaScript data model (``userId``, ``providerAccountId``…)."""
        return {
            "userId": self.user_id,
            "provider": self.provider,
            "providerAccountId": self.provider_account_id,
            "scope": " ".join(sorted(self.scope)),
            "expiresAt": self.expires_at,
        }

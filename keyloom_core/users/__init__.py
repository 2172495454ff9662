"""Users and their linked provider accounts: the data model, the adapter protocol, the rules.

Give Keyloom an adapter and every login resolves to a :class:`User`, whatever provider it
used: ``define_keyloom(providers=[...], adapter=MemoryAdapter())`` (or the SQLAlchemy one
of ``keyloom-sqlalchemy``). Without one, everything works as before (the session's user is
the provider's profile).

- :class:`User`, :class:`Account`: attrs values, in the JavaScript Keyloom data model
  (``to_json``: ``emailVerified``, ``createdAt``, ``updatedAt``, ``providerAccountId``).
- :class:`Adapter`: where users and accounts live; :class:`MemoryAdapter` for tests.
  :class:`AtomicUnlinkAdapter`: the optional ``unlink_account_unless_last`` that makes
  "never unlink the last account" hold under concurrent unlinks.
- :class:`Users` (``keyloom.users``): the sign-in and linking rules, documented in
  :mod:`keyloom_core.users._rules` and the README, enforced by the core.
"""

from __future__ import annotations

from ._adapter import Adapter, AtomicUnlinkAdapter, MemoryAdapter
from ._errors import (
    AccountConflictError,
    AccountNotFoundError,
    LastAccountError,
    LinkingError,
    SignInRequiredError,
    UserNotFoundError,
)
from ._model import Account, User, new_user_id
from ._rules import Users, refreshed_user

__all__ = [
    "Account",
    "AccountConflictError",
    "AccountNotFoundError",
    "Adapter",
    "AtomicUnlinkAdapter",
    "LastAccountError",
    "LinkingError",
    "MemoryAdapter",
    "SignInRequiredError",
    "User",
    "UserNotFoundError",
    "Users",
    "new_user_id",
    "refreshed_user",
]

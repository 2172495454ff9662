"""The typed errors of users and accounts."""

from __future__ import annotations

from ..errors import KeyloomError

__all__ = [
    "AccountConflictError",
    "AccountNotFoundError",
    "LastAccountError",
    "LinkingError",
    "SignInRequiredError",
    "UserNotFoundError",
]


class LinkingError(KeyloomError):
    """Root of the errors of the sign-in and linking rules."""

    code = "linking_error"
    status = 400


class AccountConflictError(LinkingError):
    """The provider account is already linked to another user; it is never moved."""

    code = "account_linked_elsewhere"
    status = 409
    default_hint = "Sign in with that account and unlink it there first, or link another account."


class LastAccountError(LinkingError):
    """Unlinking the user's last account would leave no way to sign in."""

    code = "last_account"
    status = 409
    default_hint = "Link another account first, or delete the user."


class AccountNotFoundError(LinkingError, LookupError):
    """No such account is linked to the user."""

    code = "account_not_found"
    status = 404


class UserNotFoundError(LinkingError, LookupError):
    """No such user (deleted, or the id is wrong)."""

    code = "user_not_found"
    status = 404


class SignInRequiredError(LinkingError):
    """The action needs a signed-in user (linking an account, listing accounts)."""

    code = "sign_in_required"
    status = 401

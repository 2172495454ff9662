"""The memory adapter passes the adapter contract suite."""

from __future__ import annotations

import anyio
import pytest

from keyloom_core.testing.adapter import AdapterContract
from keyloom_core.users import (
    Account,
    AccountConflictError,
    AccountNotFoundError,
    LastAccountError,
    MemoryAdapter,
    User,
)


class TestMemoryAdapter(AdapterContract):
    @pytest.fixture
    def adapter(self) -> MemoryAdapter:
        return MemoryAdapter()


class _MovesAccounts(MemoryAdapter):
    """Broken on purpose: linking a held account moves it."""

    async def link_account(self, account: Account) -> Account:
        await self.unlink_account(account.provider, account.provider_account_id)
        return await super().link_account(account)


class _CheckThenInsert(MemoryAdapter):
    """Broken on purpose: checks the account, then links it after a pause (no constraint)."""

    async def link_account(self, account: Account) -> Account:
        held = self._accounts.get(account.key)
        if held is not None and held.user_id != account.user_id:
            raise AccountConflictError("held", provider_id=account.provider)
        await anyio.sleep(0)
        self._accounts[account.key] = account
        return account


class _CaseSensitiveEmail(MemoryAdapter):
    """Broken on purpose: compares addresses exactly."""

    async def get_user_by_email(self, email: str) -> User | None:
        found = await super().get_user_by_email(email)
        return found if found is not None and found.email == email else None


class _CheckThenUnlink(MemoryAdapter):
    """Broken on purpose: counts the user's accounts, then unlinks after a pause."""

    async def unlink_account_unless_last(
        self, user_id: str, provider: str, provider_account_id: str
    ) -> Account:
        accounts = await self.list_accounts(user_id)
        found = next((a for a in accounts if a.key == (provider, provider_account_id)), None)
        if found is None:
            raise AccountNotFoundError("no such account", provider_id=provider)
        if len(accounts) == 1:
            raise LastAccountError("last", provider_id=provider)
        await anyio.sleep(0)
        await self.unlink_account(provider, provider_account_id)
        return found


class _UnlinksTheLast(MemoryAdapter):
    """Broken on purpose: never refuses the last account."""

    async def unlink_account_unless_last(
        self, user_id: str, provider: str, provider_account_id: str
    ) -> Account:
        del user_id
        found = self._accounts[(provider, provider_account_id)]
        await self.unlink_account(provider, provider_account_id)
        return found


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("broken", "check"),
    [
        (_MovesAccounts, "test_an_account_has_one_user"),
        (_CheckThenInsert, "test_concurrent_links_of_one_account"),
        (_CaseSensitiveEmail, "test_user_by_email"),
        (_CheckThenUnlink, "test_concurrent_unlinks_keep_one_account"),
        (_UnlinksTheLast, "test_unlink_unless_last"),
    ],
)
async def test_the_contract_catches_a_broken_adapter(
    broken: type[MemoryAdapter], check: str
) -> None:
    with pytest.raises((AssertionError, pytest.fail.Exception)):
        await getattr(AdapterContract(), check)(broken())

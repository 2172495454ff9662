"""The sign-in and linking rules, driven through real logins against the fake provider."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

from keyloom_core import (
    ConfigurationError,
    Keyloom,
    LoginResult,
    Provider,
    ProviderSpec,
    hookimpl,
)
from keyloom_core.users import (
    Account,
    AccountConflictError,
    AccountNotFoundError,
    LastAccountError,
    MemoryAdapter,
    User,
    UserNotFoundError,
    Users,
)

pytestmark = pytest.mark.anyio

Authorize = Callable[..., Awaitable[dict[str, str]]]


class Events:
    """Records the user events."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str | None]] = []

    @hookimpl
    async def user_created(self, user: User, account: Account) -> None:
        self.seen.append(("user_created", user.id, account.provider))

    @hookimpl
    async def account_linked(self, user: User, account: Account) -> None:
        self.seen.append(("account_linked", user.id, account.provider))

    @hookimpl
    async def account_unlinked(self, user: User, account: Account) -> None:
        self.seen.append(("account_unlinked", user.id, account.provider))

    @hookimpl
    async def user_deleted(self, user: User) -> None:
        self.seen.append(("user_deleted", user.id, None))


@pytest.fixture
def spec_for(fake_spec: ProviderSpec) -> Callable[[str], ProviderSpec]:
    def make(provider_id: str) -> ProviderSpec:
        return ProviderSpec(
            id=provider_id,
            name=provider_id.title(),
            authorize_url=fake_spec.authorize_url,
            token_url=fake_spec.token_url,
            profile_url=fake_spec.profile_url,
            revoke_url=fake_spec.revoke_url,
            known_scopes=fake_spec.known_scopes,
            default_scopes=fake_spec.default_scopes,
        )

    return make


@pytest.fixture
def two_providers(
    make_provider: Callable[..., Provider], spec_for: Callable[[str], ProviderSpec]
) -> list[Provider]:
    return [make_provider(), make_provider(spec_for("other"))]


async def _login(
    keyloom: Keyloom,
    authorize: Authorize,
    provider_id: str = "fake",
    *,
    user: str = "alice",
    link_to: str | None = None,
) -> LoginResult:
    start = await keyloom.begin_login(provider_id, link_to=link_to)
    query = await authorize(start, user=user)
    return await keyloom.complete_login(provider_id, query, start.state)


async def test_without_an_adapter_nothing_changes(keyloom: Keyloom, authorize: Authorize) -> None:
    assert keyloom.users is None
    result = await _login(keyloom, authorize)
    assert result.user is None
    assert result.session_user()["id"] == "id-alice"
    with pytest.raises(ConfigurationError, match="adapter"):
        await keyloom.begin_login("fake", link_to="someone")


async def test_first_login_creates_a_user_and_second_signs_it_in(
    make_keyloom: Callable[..., Keyloom], authorize: Authorize
) -> None:
    adapter, events = MemoryAdapter(), Events()
    async with make_keyloom(adapter=adapter, plugins=[events]) as keyloom:
        first = await _login(keyloom, authorize)
        second = await _login(keyloom, authorize)
    assert first.user is not None
    assert second.user is not None
    assert first.user.id == second.user.id != "id-alice"
    assert first.user.email == "alice@example.com"
    assert first.user.email_verified is not None
    assert first.session_user()["id"] == first.user.id
    assert set(first.session_user()) >= {"createdAt", "updatedAt", "emailVerified"}
    accounts = await adapter.list_accounts(first.user.id)
    assert [(a.provider, a.provider_account_id) for a in accounts] == [("fake", "id-alice")]
    assert accounts[0].expires_at is not None
    assert events.seen == [
        ("user_created", first.user.id, "fake"),
        ("account_linked", first.user.id, "fake"),
    ]


async def test_known_account_refreshes_the_profile_per_the_policy(
    make_keyloom: Callable[..., Keyloom], authorize: Authorize
) -> None:
    adapter = MemoryAdapter()
    async with make_keyloom(adapter=adapter) as keyloom:
        first = await _login(keyloom, authorize)
        assert first.user is not None
        stale = await adapter.update_user(
            User(
                id=first.user.id,
                name="Old",
                image=None,
                email=None,
                created_at=first.user.created_at,
                updated_at=first.user.updated_at,
            )
        )
        again = await _login(keyloom, authorize)
    assert again.user is not None
    assert again.user.name == "Alice"
    assert again.user.image == "https://img.example.com/alice.png"
    assert again.user.email == "alice@example.com"
    assert again.user.created_at == stale.created_at
    assert again.user.updated_at >= stale.updated_at


async def test_link_mode_links_to_the_signed_in_user(
    make_keyloom: Callable[..., Keyloom], authorize: Authorize, two_providers: list[Provider]
) -> None:
    adapter, events = MemoryAdapter(), Events()
    async with make_keyloom(*two_providers, adapter=adapter, plugins=[events]) as keyloom:
        first = await _login(keyloom, authorize, user="alice")
        assert first.user is not None
        # another person's account at the other provider, linked on purpose by alice
        linked = await _login(keyloom, authorize, "other", user="al", link_to=first.user.id)
        # signing in with it afterwards is alice
        later = await _login(keyloom, authorize, "other", user="al")
    assert linked.user is not None
    assert later.user is not None
    assert linked.user.id == later.user.id == first.user.id
    accounts = await adapter.list_accounts(first.user.id)
    assert {a.provider for a in accounts} == {"fake", "other"}
    assert events.seen[-1] == ("account_linked", first.user.id, "other")


async def test_linking_an_account_held_by_another_user_is_refused_and_nothing_moves(
    make_keyloom: Callable[..., Keyloom],
    authorize: Authorize,
    two_providers: list[Provider],
    fake_provider: Any,
) -> None:
    adapter = MemoryAdapter()
    async with make_keyloom(*two_providers, adapter=adapter) as keyloom:
        victim = await _login(keyloom, authorize, "other", user="victim")
        attacker = await _login(keyloom, authorize, "fake", user="attacker")
        assert victim.user is not None
        assert attacker.user is not None
        revoked = len(fake_provider.revoked)
        with pytest.raises(AccountConflictError) as caught:
            await _login(keyloom, authorize, "other", user="victim", link_to=attacker.user.id)
        assert caught.value.status == 409
        assert len(fake_provider.revoked) > revoked  # the refused login's tokens went back
        holder = await adapter.get_user_by_account("other", "id-victim")
    assert holder is not None
    assert holder.id == victim.user.id
    assert [a.provider for a in await adapter.list_accounts(attacker.user.id)] == ["fake"]


async def test_link_to_a_deleted_user_is_refused(
    make_keyloom: Callable[..., Keyloom], authorize: Authorize
) -> None:
    async with make_keyloom(adapter=MemoryAdapter()) as keyloom:
        with pytest.raises(UserNotFoundError):
            await _login(keyloom, authorize, link_to="gone")


async def test_email_linking_is_off_by_default(
    make_keyloom: Callable[..., Keyloom], authorize: Authorize, two_providers: list[Provider]
) -> None:
    async with make_keyloom(*two_providers, adapter=MemoryAdapter()) as keyloom:
        one = await _login(keyloom, authorize, "fake")
        two = await _login(keyloom, authorize, "other")
    assert one.user is not None
    assert two.user is not None
    assert one.user.id != two.user.id


@pytest.mark.parametrize("setting", [True, ["fake", "other"]])
async def test_email_linking_when_turned_on_and_verified(
    make_keyloom: Callable[..., Keyloom],
    authorize: Authorize,
    two_providers: list[Provider],
    setting: bool | list[str],
) -> None:
    adapter = MemoryAdapter()
    async with make_keyloom(*two_providers, adapter=adapter, link_by_email=setting) as keyloom:
        one = await _login(keyloom, authorize, "fake")
        two = await _login(keyloom, authorize, "other")
    assert one.user is not None
    assert two.user is not None
    assert one.user.id == two.user.id


async def test_email_linking_never_joins_a_user_an_untrusted_provider_vouched_for(
    make_keyloom: Callable[..., Keyloom], authorize: Authorize, two_providers: list[Provider]
) -> None:
    # "fake" (not trusted for linking) asserts the address first, as an attacker's identity
    # provider would; the victim's first sign-in with the trusted "other" is a user of its own
    adapter = MemoryAdapter()
    async with make_keyloom(*two_providers, adapter=adapter, link_by_email=["other"]) as keyloom:
        planted = await _login(keyloom, authorize, "fake")
        victim = await _login(keyloom, authorize, "other")
    assert planted.user is not None
    assert victim.user is not None
    assert planted.user.id != victim.user.id
    assert [a.provider for a in await adapter.list_accounts(victim.user.id)] == ["other"]


async def test_email_linking_never_without_a_verified_email(
    make_keyloom: Callable[..., Keyloom],
    authorize: Authorize,
    make_provider: Callable[..., Provider],
    spec_for: Callable[[str], ProviderSpec],
) -> None:
    unverified = make_provider(
        spec_for("other"), profile_overrides=lambda _profile: {"email_verified": False}
    )
    # TikTok's profile: no e-mail at all
    no_email = make_provider(
        spec_for("tiktok"), profile_overrides=lambda _p: {"email": None, "email_verified": False}
    )
    providers = [make_provider(), no_email, unverified]
    async with make_keyloom(*providers, adapter=MemoryAdapter(), link_by_email=True) as keyloom:
        one = await _login(keyloom, authorize, "fake")
        tiktok = await _login(keyloom, authorize, "tiktok")
        other = await _login(keyloom, authorize, "other")
    assert tiktok.user is not None
    assert tiktok.user.email is None
    assert tiktok.user.email_verified is None
    ids = {r.user.id for r in (one, tiktok, other) if r.user is not None}
    assert len(ids) == 3


async def test_unlink_rules_and_delete_user(
    make_keyloom: Callable[..., Keyloom],
    authorize: Authorize,
    two_providers: list[Provider],
    fake_provider: Any,
) -> None:
    adapter, events = MemoryAdapter(), Events()
    async with make_keyloom(
        *two_providers, adapter=adapter, plugins=[events], store="memory://"
    ) as keyloom:
        users = keyloom.users
        assert isinstance(users, Users)
        first = await _login(keyloom, authorize, "fake")
        assert first.user is not None
        uid = first.user.id
        with pytest.raises(LastAccountError) as caught:
            await users.unlink(uid, "fake", "id-alice")
        assert caught.value.status == 409
        await _login(keyloom, authorize, "other", user="bob", link_to=uid)
        with pytest.raises(AccountNotFoundError):
            await users.unlink(uid, "other", "id-nobody")
        removed = await users.unlink(uid, "other", "id-bob")
        assert removed.provider == "other"
        assert [a.provider for a in await users.accounts(uid)] == ["fake"]
        record = await keyloom.sessions.create(
            user=first.session_user(),
            provider_id="fake",
            provider_account_id="id-alice",
            scopes=frozenset(),
        )
        assert await users.delete(uid) is True
        assert await users.delete(uid) is False
        assert await keyloom.sessions.get(record.id) is None
        assert await adapter.get_user(uid) is None
        assert await adapter.get_user_by_account("fake", "id-alice") is None
    assert [e[0] for e in events.seen][-2:] == ["account_unlinked", "user_deleted"]


async def test_a_failing_listener_does_not_undo_the_change(
    make_keyloom: Callable[..., Keyloom], authorize: Authorize
) -> None:
    class Broken:
        @hookimpl
        async def user_created(self, user: User, account: Account) -> None:
            del user, account
            raise ConfigurationError("listener failed")

    adapter = MemoryAdapter()
    async with make_keyloom(adapter=adapter, plugins=[Broken()]) as keyloom:
        result = await _login(keyloom, authorize)
    assert result.user is not None
    assert await adapter.get_user(result.user.id) == result.user


@pytest.mark.parametrize("run", range(100))
async def test_two_first_logins_at_once_create_one_user(
    make_keyloom: Callable[..., Keyloom], authorize: Authorize, run: int
) -> None:
    del run
    adapter = MemoryAdapter()
    async with make_keyloom(adapter=adapter) as keyloom:
        starts = [await keyloom.begin_login("fake") for _ in range(2)]
        queries = [await authorize(s) for s in starts]
        results: list[LoginResult] = []

        async def one(i: int) -> None:
            results.append(await keyloom.complete_login("fake", queries[i], starts[i].state))

        async with anyio.create_task_group() as tg:
            tg.start_soon(one, 0)
            tg.start_soon(one, 1)
    ids = {r.user.id for r in results if r.user is not None}
    assert len(ids) == 1
    assert len(adapter._users) == 1


class _Interleaved(MemoryAdapter):
    """Lets two sign-ins both find the account unknown before either links it."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = 0
        self.both = anyio.Event()

    async def get_user_by_account(self, provider: str, provider_account_id: str) -> User | None:
        found = await super().get_user_by_account(provider, provider_account_id)
        if found is None and not self.both.is_set():
            self.waiting += 1
            if self.waiting == 2:
                self.both.set()
            await self.both.wait()
        return found


@pytest.mark.parametrize("run", range(100))
async def test_forced_race_creates_one_user_and_the_loser_retries(
    make_keyloom: Callable[..., Keyloom], authorize: Authorize, run: int
) -> None:
    del run
    adapter, events = _Interleaved(), Events()
    async with make_keyloom(adapter=adapter, plugins=[events]) as keyloom:
        starts = [await keyloom.begin_login("fake") for _ in range(2)]
        queries = [await authorize(s) for s in starts]
        results: list[LoginResult] = []

        async def one(i: int) -> None:
            results.append(await keyloom.complete_login("fake", queries[i], starts[i].state))

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(one, 0)
                tg.start_soon(one, 1)
    assert adapter.waiting == 2
    ids = {r.user.id for r in results if r.user is not None}
    assert len(ids) == 1
    assert len(adapter._users) == 1
    assert [e[0] for e in events.seen] == ["user_created", "account_linked"]


async def test_unlink_and_delete_revoke_the_stored_tokens(
    make_keyloom: Callable[..., Keyloom],
    authorize: Authorize,
    two_providers: list[Provider],
    fake_provider: Any,
) -> None:
    from keyloom_core.tokens import MemoryTokenStore, TokenManager

    store = MemoryTokenStore()
    manager = TokenManager(store)
    async with make_keyloom(
        *two_providers, adapter=MemoryAdapter(), plugins=[manager.plugin]
    ) as keyloom:
        manager.bind(keyloom)
        users = keyloom.users
        assert users is not None
        first = await _login(keyloom, authorize, "fake")
        assert first.user is not None
        await _login(keyloom, authorize, "other", user="bob", link_to=first.user.id)
        bob = await store.get("other", "id-bob")
        alice = await store.get("fake", "id-alice")
        assert bob is not None
        assert alice is not None
        await users.unlink(first.user.id, "other", "id-bob")
        assert await store.get("other", "id-bob") is None
        assert bob.tokens.access_token in fake_provider.revoked
        await users.delete(first.user.id)
        assert await store.get("fake", "id-alice") is None
        assert alice.tokens.access_token in fake_provider.revoked

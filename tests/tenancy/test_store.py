"""The tenancy store contract, on SQLite and on Redis: workspaces, quotas, tokens, owners."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from aragora.control_plane import (
    ConflictError,
    ControlPlaneCoordinator,
    NotFoundError,
    ValidationError,
)
from aragora.tenancy import (
    PLANS,
    Role,
    TokenExistsError,
    TokenInfo,
    TokenNotFoundError,
    WorkspaceExistsError,
    WorkspaceNotFoundError,
    WorkspaceQuotas,
    generate_token,
    token_hash,
)
from aragora.tenancy.store import TenancyStore, create_tenancy_store
from tests.conftest import CoordinatorFactory
from tests.tenancy.conftest import SECRET_KEY


async def _second_view(cp_factory: CoordinatorFactory) -> TenancyStore:
    """A tenancy store on another coordinator of the same SQLite file or Redis prefix."""
    return create_tenancy_store((await cp_factory()).store)


async def _new_token(
    tenancy: TenancyStore,
    workspace: str = "acme",
    role: Role = Role.SUBMITTER,
    expires_at: float | None = None,
) -> tuple[TokenInfo, str]:
    token_id, token = generate_token()
    info = await tenancy.create_token(
        workspace, role, token_hash(SECRET_KEY, token), token_id, expires_at, "tester"
    )
    return info, token


# -- workspaces ------------------------------------------------------------------------
async def test_workspaces_are_created_listed_and_read(tenancy: TenancyStore) -> None:
    before = await tenancy.now()
    acme = await tenancy.create_workspace("acme")
    await tenancy.create_workspace("beta-2", plan="free")
    assert acme.name == "acme" and acme.plan == "standard"
    assert acme.quotas == WorkspaceQuotas()
    assert acme.quota_overrides == ()
    assert before - 1 <= acme.created_at <= await tenancy.now() + 1
    assert await tenancy.get_workspace("acme") == acme
    assert [w.name for w in await tenancy.list_workspaces()] == ["acme", "beta-2"]
    assert (await tenancy.get_workspace("beta-2")).quotas == PLANS["free"]


async def test_a_duplicate_workspace_is_a_conflict_and_changes_nothing(
    tenancy: TenancyStore,
) -> None:
    first = await tenancy.create_workspace("acme", plan="free")
    with pytest.raises(WorkspaceExistsError) as caught:
        await tenancy.create_workspace("acme", plan="unlimited")
    assert isinstance(caught.value, ConflictError)
    assert await tenancy.get_workspace("acme") == first
    assert len(await tenancy.list_workspaces()) == 1


async def test_concurrent_creates_of_one_name_let_exactly_one_win(tenancy: TenancyStore) -> None:
    results = await asyncio.gather(
        *(tenancy.create_workspace("race") for _ in range(10)), return_exceptions=True
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert all(isinstance(r, WorkspaceExistsError) for r in results if isinstance(r, Exception))


async def test_an_unknown_workspace_is_not_found(tenancy: TenancyStore) -> None:
    with pytest.raises(WorkspaceNotFoundError) as caught:
        await tenancy.get_workspace("nope")
    assert isinstance(caught.value, NotFoundError)
    with pytest.raises(WorkspaceNotFoundError):
        await tenancy.update_quotas("nope", {"max_agents": 1})
    with pytest.raises(WorkspaceNotFoundError):
        await tenancy.list_tokens("nope")


@pytest.mark.parametrize(
    ("call", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "has space"}, "name"),
        ({"name": "acme\n"}, "name"),
        ({"name": "{tag}"}, "name"),
        ({"name": "x" * 65}, "name"),
        ({"name": "ok", "plan": "gold"}, "plan"),
        ({"name": "ok", "quota_overrides": {"max_cats": 1}}, "quota_overrides"),
        ({"name": "ok", "quota_overrides": {"max_agents": -1}}, "quota_overrides.max_agents"),
        ({"name": "ok", "quota_overrides": {"max_agents": True}}, "quota_overrides.max_agents"),
        ({"name": "ok", "quota_overrides": {"max_agents": 1.5}}, "quota_overrides.max_agents"),
        ({"name": "ok", "quota_overrides": {"max_agents": 2**53}}, "quota_overrides.max_agents"),
    ],
)
async def test_bad_workspace_input_names_the_field_and_writes_nothing(
    tenancy: TenancyStore, call: dict[str, object], field: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        await tenancy.create_workspace(**call)  # type: ignore[arg-type]
    assert caught.value.field == field
    assert await tenancy.list_workspaces() == []


async def test_quota_overrides_persist_and_apply_over_the_plan(
    tenancy: TenancyStore, cp_factory: CoordinatorFactory
) -> None:
    created = await tenancy.create_workspace(
        "acme", plan="free", quota_overrides={"max_agents": 50, "max_payload_bytes": None}
    )
    expected = dataclasses.replace(PLANS["free"], max_agents=50, max_payload_bytes=None)
    assert created.quotas == expected
    assert created.quota_overrides == (("max_agents", 50), ("max_payload_bytes", None))

    other = await _second_view(cp_factory)
    assert await other.get_workspace("acme") == created
    assert await other.list_workspaces() == [created]


async def test_quota_updates_merge_replace_and_survive_a_change_of_plan(
    tenancy: TenancyStore, cp_factory: CoordinatorFactory
) -> None:
    await tenancy.create_workspace("acme", plan="free", quota_overrides={"max_agents": 50})
    merged = await tenancy.update_quotas("acme", {"max_running_tasks": None})
    assert merged.quota_overrides == (("max_agents", 50), ("max_running_tasks", None))
    assert merged.quotas.max_running_tasks is None and merged.quotas.max_agents == 50

    replanned = await tenancy.update_quotas("acme", {}, plan="standard")
    assert replanned.plan == "standard"
    assert replanned.quotas == dataclasses.replace(
        WorkspaceQuotas(), max_agents=50, max_running_tasks=None
    )

    reset = await tenancy.update_quotas("acme", {"max_pending_tasks": 7}, replace=True)
    assert reset.quota_overrides == (("max_pending_tasks", 7),)
    assert reset.quotas == dataclasses.replace(WorkspaceQuotas(), max_pending_tasks=7)

    other = await _second_view(cp_factory)
    assert await other.get_workspace("acme") == reset

    with pytest.raises(ValidationError):
        await tenancy.update_quotas("acme", {"max_agents": -5})
    with pytest.raises(ValidationError):
        await tenancy.update_quotas("acme", {}, plan="gold")
    assert await tenancy.get_workspace("acme") == reset


# -- tokens ----------------------------------------------------------------------------
async def test_a_token_is_stored_by_hash_and_found_by_hash(tenancy: TenancyStore) -> None:
    await tenancy.create_workspace("acme")
    info, token = await _new_token(tenancy, role=Role.OPERATOR, expires_at=4_000_000_000.0)
    assert info.workspace_id == "acme" and info.role is Role.OPERATOR
    assert info.expires_at == 4_000_000_000.0 and info.revoked_at is None
    assert info.created_by == "tester"
    assert {f.name for f in dataclasses.fields(TokenInfo)}.isdisjoint({"token_hash", "token"})

    assert await tenancy.lookup_token(token_hash(SECRET_KEY, token)) == info
    assert await tenancy.get_token(info.token_id) == info
    assert await tenancy.lookup_token(token_hash(b"another key" * 3, token)) is None
    assert await tenancy.lookup_token("0" * 64) is None
    with pytest.raises(ValidationError):
        await tenancy.lookup_token(token)


async def test_token_ids_and_hashes_are_unique(tenancy: TenancyStore) -> None:
    await tenancy.create_workspace("acme")
    await tenancy.create_workspace("beta")
    info, token = await _new_token(tenancy)
    with pytest.raises(TokenExistsError):  # the same id
        await tenancy.create_token("beta", Role.VIEWER, "a" * 64, info.token_id)
    with pytest.raises(TokenExistsError):  # the same secret
        await tenancy.create_token("beta", Role.VIEWER, token_hash(SECRET_KEY, token), "tok_x")
    with pytest.raises(WorkspaceNotFoundError):
        await tenancy.create_token("nope", Role.VIEWER, "b" * 64, "tok_y")
    assert await tenancy.list_tokens() == [info]
    assert await tenancy.list_tokens("beta") == []


@pytest.mark.parametrize(
    ("call", "field"),
    [
        ({"role": "root"}, "role"),
        ({"token_hash": "XYZ"}, "token_hash"),
        ({"token_id": "abc"}, "token_id"),
        ({"token_id": "tok_a b"}, "token_id"),
        ({"expires_at": float("nan")}, "expires_at"),
        ({"created_by": ""}, "created_by"),
    ],
)
async def test_bad_token_input_names_the_field(
    tenancy: TenancyStore, call: dict[str, object], field: str
) -> None:
    await tenancy.create_workspace("acme")
    args: dict[str, object] = {
        "workspace": "acme",
        "role": Role.VIEWER,
        "token_hash": "c" * 64,
        "token_id": "tok_ok",
        **call,
    }
    with pytest.raises(ValidationError) as caught:
        await tenancy.create_token(**args)  # type: ignore[arg-type]
    assert caught.value.field == field
    assert await tenancy.list_tokens() == []


async def test_tokens_are_listed_per_workspace_and_in_all(tenancy: TenancyStore) -> None:
    await tenancy.create_workspace("acme")
    await tenancy.create_workspace("beta")
    a1, _ = await _new_token(tenancy, "acme")
    b1, _ = await _new_token(tenancy, "beta", Role.AGENT)
    a2, _ = await _new_token(tenancy, "acme", Role.ADMIN)
    assert {t.token_id for t in await tenancy.list_tokens("acme")} == {a1.token_id, a2.token_id}
    assert await tenancy.list_tokens("beta") == [b1]
    assert {t.token_id for t in await tenancy.list_tokens()} == {
        a1.token_id,
        a2.token_id,
        b1.token_id,
    }


async def test_revoking_is_immediate_idempotent_and_on_the_store_clock(
    tenancy: TenancyStore, cp: ControlPlaneCoordinator
) -> None:
    await tenancy.create_workspace("acme")
    info, token = await _new_token(tenancy)
    cp.store.set_clock_offset(1000)
    revoked = await tenancy.revoke_token(info.token_id)
    assert revoked.revoked_at is not None and revoked.revoked_at >= info.created_at + 999
    cp.store.set_clock_offset(2000)
    again = await tenancy.revoke_token(info.token_id)
    assert again == revoked
    assert await tenancy.lookup_token(token_hash(SECRET_KEY, token)) == revoked
    with pytest.raises(TokenNotFoundError):
        await tenancy.revoke_token("tok_unknown")
    with pytest.raises(TokenNotFoundError):
        await tenancy.get_token("tok_unknown")


async def test_upsert_keeps_an_unchanged_token_and_rekeys_a_changed_one(
    tenancy: TenancyStore,
) -> None:
    await tenancy.create_workspace("default")
    await tenancy.create_workspace("other")
    first = await tenancy.upsert_token("default", Role.ADMIN, "1" * 64, "tok_fixed")
    assert await tenancy.upsert_token("default", Role.ADMIN, "1" * 64, "tok_fixed") == first
    revoked = await tenancy.revoke_token("tok_fixed")
    assert await tenancy.upsert_token("default", Role.ADMIN, "1" * 64, "tok_fixed") == revoked

    fresh = await tenancy.upsert_token("default", Role.ADMIN, "2" * 64, "tok_fixed")
    assert fresh.revoked_at is None
    assert await tenancy.lookup_token("1" * 64) is None
    assert await tenancy.lookup_token("2" * 64) == fresh
    assert [t.token_id for t in await tenancy.list_tokens("default")] == ["tok_fixed"]

    await tenancy.create_token("default", Role.VIEWER, "3" * 64, "tok_other")
    with pytest.raises(TokenExistsError):  # the hash of another token
        await tenancy.upsert_token("default", Role.ADMIN, "3" * 64, "tok_fixed")
    for other_hash in ("2" * 64, "4" * 64):  # the id in another workspace
        with pytest.raises(TokenExistsError):
            await tenancy.upsert_token("other", Role.ADMIN, other_hash, "tok_fixed")
    assert await tenancy.lookup_token("2" * 64) == fresh


# -- agent owners ----------------------------------------------------------------------
async def test_the_first_token_owns_an_agent_and_a_second_is_refused(
    tenancy: TenancyStore,
) -> None:
    await tenancy.create_workspace("acme")
    one, _ = await _new_token(tenancy, role=Role.AGENT)
    two, _ = await _new_token(tenancy, role=Role.AGENT)
    assert await tenancy.agent_owner("acme", "worker-1") is None
    assert await tenancy.claim_agent_owner("acme", "worker-1", one.token_id) is True
    assert await tenancy.claim_agent_owner("acme", "worker-1", one.token_id) is True
    assert await tenancy.claim_agent_owner("acme", "worker-1", two.token_id) is False
    assert await tenancy.agent_owner("acme", "worker-1") == one.token_id
    assert await tenancy.claim_agent_owner("acme", "worker-2", two.token_id) is True


async def test_agent_owners_are_per_workspace(tenancy: TenancyStore) -> None:
    await tenancy.create_workspace("acme")
    await tenancy.create_workspace("beta")
    one, _ = await _new_token(tenancy, "acme", Role.AGENT)
    two, _ = await _new_token(tenancy, "beta", Role.AGENT)
    assert await tenancy.claim_agent_owner("acme", "worker", one.token_id)
    assert await tenancy.claim_agent_owner("beta", "worker", two.token_id)
    assert await tenancy.agent_owner("acme", "worker") == one.token_id
    assert await tenancy.agent_owner("beta", "worker") == two.token_id


async def test_concurrent_claims_of_one_agent_let_exactly_one_token_win(
    tenancy: TenancyStore, cp_factory: CoordinatorFactory
) -> None:
    await tenancy.create_workspace("acme")
    tokens = [(await _new_token(tenancy, role=Role.AGENT))[0] for _ in range(6)]
    views = [tenancy, await _second_view(cp_factory)]
    results = await asyncio.gather(
        *(
            views[i % 2].claim_agent_owner("acme", "worker", t.token_id)
            for i, t in enumerate(tokens)
        )
    )
    assert results.count(True) == 1
    winner = tokens[results.index(True)].token_id
    assert await tenancy.agent_owner("acme", "worker") == winner


async def test_a_revoked_or_expired_owner_can_be_replaced(
    tenancy: TenancyStore, cp: ControlPlaneCoordinator
) -> None:
    await tenancy.create_workspace("acme")
    now = await tenancy.now()
    old, _ = await _new_token(tenancy, role=Role.AGENT)
    new, _ = await _new_token(tenancy, role=Role.AGENT)
    assert await tenancy.claim_agent_owner("acme", "a1", old.token_id)
    await tenancy.revoke_token(old.token_id)
    assert await tenancy.claim_agent_owner("acme", "a1", new.token_id) is True
    assert await tenancy.agent_owner("acme", "a1") == new.token_id

    short, _ = await _new_token(tenancy, role=Role.AGENT, expires_at=now + 60)
    assert await tenancy.claim_agent_owner("acme", "a2", short.token_id)
    assert await tenancy.claim_agent_owner("acme", "a2", new.token_id) is False
    cp.store.set_clock_offset(120)
    assert await tenancy.claim_agent_owner("acme", "a2", new.token_id) is True


async def test_releasing_an_agent_frees_its_id(tenancy: TenancyStore) -> None:
    await tenancy.create_workspace("acme")
    one, _ = await _new_token(tenancy, role=Role.AGENT)
    two, _ = await _new_token(tenancy, role=Role.AGENT)
    await tenancy.claim_agent_owner("acme", "worker", one.token_id)
    await tenancy.release_agent_owner("acme", "worker")
    await tenancy.release_agent_owner("acme", "worker")
    assert await tenancy.agent_owner("acme", "worker") is None
    assert await tenancy.claim_agent_owner("acme", "worker", two.token_id)


@pytest.mark.parametrize("agent_id", ["", "has space", "a,b", "worker\n"])
async def test_a_bad_agent_id_is_a_validation_error(tenancy: TenancyStore, agent_id: str) -> None:
    with pytest.raises(ValidationError) as caught:
        await tenancy.claim_agent_owner("acme", agent_id, "tok_x")
    assert caught.value.field == "agent_id"

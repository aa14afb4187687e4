"""TenancyService on SQLite and on Redis: issue, authenticate, revoke, bootstrap; secrets
are never at rest."""

from __future__ import annotations

import pytest

from aragora.control_plane import (
    ConfigError,
    ControlPlaneConfig,
    ControlPlaneCoordinator,
    StoreUnavailableError,
    ValidationError,
)
from aragora.store import create_store
from aragora.tenancy import (
    AuthenticationError,
    Principal,
    Role,
    WorkspaceNotFoundError,
    generate_token,
    looks_valid,
)
from aragora.tenancy.service import BOOTSTRAP_TOKEN_ID, TenancyService
from aragora.tenancy.store import TenancyStore, create_tenancy_store
from aragora.tenancy.tokens import checksum
from tests.conftest import CoordinatorFactory
from tests.tenancy.conftest import SECRET_KEY, everything_stored


async def _reason(service: TenancyService, token: str) -> str:
    with pytest.raises(AuthenticationError) as caught:
        await service.authenticate(token)
    assert token not in str(caught.value) or not token
    return caught.value.reason


async def test_an_issued_token_authenticates_as_its_workspace_and_role(
    service: TenancyService,
) -> None:
    await service.create_workspace("acme")
    info, secret = await service.issue_token("acme", Role.SUBMITTER, created_by="token:tok_admin")
    assert looks_valid(secret)
    assert info.created_by == "token:tok_admin" and info.expires_at is None
    principal = await service.authenticate(secret)
    assert principal == Principal("acme", Role.SUBMITTER, info.token_id)


async def test_roles_may_be_given_by_value(service: TenancyService) -> None:
    await service.create_workspace("acme")
    _, secret = await service.issue_token("acme", "agent")  # type: ignore[arg-type]
    assert (await service.authenticate(secret)).role is Role.AGENT


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("", "malformed"),
        ("x" * 5000, "malformed"),
        ("acp_short_abcdef", "malformed"),
        ("acp_" + "a" * 30, "malformed"),
        ("acp_" + "a" * 30 + "_" + checksum("b" * 30), "checksum"),
    ],
)
async def test_malformed_tokens_are_refused(
    service: TenancyService, token: str, reason: str
) -> None:
    assert await _reason(service, token) == reason


async def test_a_one_character_change_is_refused_without_asking_the_store(
    config: ControlPlaneConfig,
) -> None:
    """The store here is never opened: any lookup would raise StoreUnavailableError."""
    unopened = TenancyService(create_tenancy_store(create_store(config)), SECRET_KEY)
    _, token = generate_token()
    for position in (4, 15, len(token) - 8, len(token) - 6, len(token) - 1):
        changed = (
            token[:position] + ("1" if token[position] != "1" else "2") + token[position + 1 :]
        )
        assert await _reason(unopened, changed) == "checksum"
    assert await _reason(unopened, token[:-1]) == "malformed"
    with pytest.raises(StoreUnavailableError):  # a well-formed token does reach the store
        await unopened.authenticate(token)


async def test_unknown_tokens_are_refused(service: TenancyService) -> None:
    await service.create_workspace("acme")
    _, never_issued = generate_token()
    assert await _reason(service, never_issued) == "unknown"
    assert await _reason(service, "some-random-string") == "unknown"

    _, secret = await service.issue_token("acme", Role.VIEWER)
    other_key = TenancyService(service.store, b"another server key of 32+ bytes!")
    assert await _reason(other_key, secret) == "unknown"


async def test_a_token_expires_on_the_store_clock(
    service: TenancyService, cp: ControlPlaneCoordinator
) -> None:
    await service.create_workspace("acme")
    info, secret = await service.issue_token("acme", Role.VIEWER, expires_in_s=600)
    assert info.expires_at is not None
    assert info.created_at + 599 <= info.expires_at <= info.created_at + 601
    cp.store.set_clock_offset(300)
    assert (await service.authenticate(secret)).token_id == info.token_id
    cp.store.set_clock_offset(601)
    assert await _reason(service, secret) == "expired"


async def test_a_revoked_token_is_refused_and_revoking_again_is_harmless(
    service: TenancyService,
) -> None:
    await service.create_workspace("acme")
    info, secret = await service.issue_token("acme", Role.OPERATOR)
    keep, kept_secret = await service.issue_token("acme", Role.OPERATOR)
    revoked = await service.revoke(info.token_id)
    assert revoked.revoked_at is not None
    assert await _reason(service, secret) == "revoked"
    assert await service.revoke(info.token_id) == revoked
    assert (await service.authenticate(kept_secret)).token_id == keep.token_id


async def test_a_revocation_is_seen_at_once_by_another_coordinator(
    service: TenancyService, cp_factory: CoordinatorFactory
) -> None:
    elsewhere = TenancyService(create_tenancy_store((await cp_factory()).store), SECRET_KEY)
    await service.create_workspace("acme")
    info, secret = await service.issue_token("acme", Role.AGENT)
    assert (await elsewhere.authenticate(secret)).token_id == info.token_id
    other, other_secret = await elsewhere.issue_token("acme", Role.AGENT)
    assert (await service.authenticate(other_secret)).token_id == other.token_id

    await service.revoke(info.token_id)
    assert await _reason(elsewhere, secret) == "revoked"
    await elsewhere.revoke(other.token_id)
    assert await _reason(service, other_secret) == "revoked"


async def test_bad_issue_requests_write_nothing(service: TenancyService) -> None:
    await service.create_workspace("acme")
    with pytest.raises(ValidationError) as caught:
        await service.issue_token("acme", "root")  # type: ignore[arg-type]
    assert caught.value.field == "role"
    for bad in (0, -1, float("inf"), float("nan")):
        with pytest.raises(ValidationError) as caught:
            await service.issue_token("acme", Role.VIEWER, expires_in_s=bad)
        assert caught.value.field == "expires_in_s"
    with pytest.raises(WorkspaceNotFoundError):
        await service.issue_token("nope", Role.VIEWER)
    assert await service.store.list_tokens() == []


async def test_token_secrets_are_never_stored(
    service: TenancyService, cp: ControlPlaneCoordinator
) -> None:
    await service.create_workspace("acme")
    bootstrap_secret = "plain bootstrap value 8c1f2d"
    await service.bootstrap_admin(bootstrap_secret)
    issued = [await service.issue_token("acme", role) for role in Role]
    admin_secret = await TenancyService(service.store, SECRET_KEY).bootstrap_admin(None)
    assert admin_secret is None  # tok_bootstrap already is an active admin
    await service.revoke(issued[0][0].token_id)

    stored = await everything_stored(cp.store)
    for info, secret in issued:
        assert secret not in stored
        assert secret[4:-7] not in stored  # not even the random part
        assert info.token_id in stored  # the scan does see tenancy data
        assert service.hash_token(secret) in stored
    assert bootstrap_secret not in stored
    assert service.hash_token(bootstrap_secret) in stored


# -- bootstrap -------------------------------------------------------------------------
async def test_bootstrap_without_a_token_issues_one_admin_token_once(
    service: TenancyService, tenancy: TenancyStore
) -> None:
    secret = await service.bootstrap_admin(None)
    assert secret is not None and looks_valid(secret)
    principal = await service.authenticate(secret)
    assert principal.workspace_id == "default" and principal.role is Role.ADMIN
    assert await service.bootstrap_admin(None) is None
    assert await service.bootstrap_admin("") is None
    assert [w.name for w in await tenancy.list_workspaces()] == ["default"]
    assert len(await tenancy.list_tokens("default")) == 1

    await service.revoke(principal.token_id)  # every admin lost: the next start makes one
    again = await service.bootstrap_admin(None)
    assert again is not None and again != secret
    assert (await service.authenticate(again)).role is Role.ADMIN


async def test_bootstrap_with_a_given_token_is_idempotent(
    service: TenancyService, tenancy: TenancyStore
) -> None:
    assert await service.bootstrap_admin("correct horse battery staple") is None
    first = await tenancy.get_token(BOOTSTRAP_TOKEN_ID)
    assert await service.bootstrap_admin("correct horse battery staple") is None
    assert await tenancy.list_tokens("default") == [first]
    principal = await service.authenticate("correct horse battery staple")
    assert principal == Principal("default", Role.ADMIN, BOOTSTRAP_TOKEN_ID)
    assert await service.bootstrap_admin(None) is None  # an admin token exists


async def test_a_revoked_bootstrap_token_stays_revoked_until_its_value_changes(
    service: TenancyService,
) -> None:
    await service.bootstrap_admin("first value")
    await service.revoke(BOOTSTRAP_TOKEN_ID)
    await service.bootstrap_admin("first value")
    assert await _reason(service, "first value") == "revoked"

    await service.bootstrap_admin("second value")
    assert await _reason(service, "first value") == "unknown"
    assert (await service.authenticate("second value")).token_id == BOOTSTRAP_TOKEN_ID


async def test_bootstrap_accepts_a_generated_token_but_not_a_broken_one(
    service: TenancyService,
) -> None:
    _, token = generate_token()
    await service.bootstrap_admin(token)
    assert (await service.authenticate(token)).token_id == BOOTSTRAP_TOKEN_ID
    with pytest.raises(ConfigError, match="ARAGORA_ADMIN_TOKEN"):
        await service.bootstrap_admin(token[:-1] + ("1" if token[-1] != "1" else "2"))
    with pytest.raises(ConfigError, match="ARAGORA_ADMIN_TOKEN"):
        await service.bootstrap_admin("y" * 5000)


def test_a_short_secret_key_is_a_config_error(tenancy: TenancyStore) -> None:
    with pytest.raises(ConfigError):
        TenancyService(tenancy, b"short")

"""Workspaces, API tokens, principals and quotas.

* :mod:`.models`: the shared vocabulary (roles, actions, principals, workspaces,
  quotas, token info).
* :mod:`.tokens`: the ``acp_`` token format, generation and keyed hashing.
* :mod:`.keyfiles`: the server's secret key and the admin token file on disk.
* :mod:`.store`: ``TenancyStore`` and ``create_tenancy_store``, with the
  backends in :mod:`.redis_store` and :mod:`.sqlite_store`.
* :mod:`.service`: ``TenancyService``: issue, authenticate, revoke, bootstrap.

Only modules that depend on nothing but the control plane's exception tree are
re-exported here: policy, audit and perhaps the coordinator import :mod:`.models`, and
importing a module runs its package's ``__init__`` first, so anything heavier here
could close an import cycle. Import
``TenancyService`` from :mod:`aragora.tenancy.service` and ``TenancyStore`` /
``create_tenancy_store`` from :mod:`aragora.tenancy.store`.
"""

from aragora.tenancy.errors import (
    AUTHENTICATION_FAILED_MESSAGE,
    AuthenticationError,
    TokenExistsError,
    TokenNotFoundError,
    WorkspaceExistsError,
    WorkspaceNotFoundError,
)
from aragora.tenancy.keyfiles import load_server_secret, write_token_file
from aragora.tenancy.models import (
    PLANS,
    Action,
    Principal,
    Role,
    TokenInfo,
    Workspace,
    WorkspaceQuotas,
    role_allows,
)
from aragora.tenancy.tokens import generate_token, looks_valid, token_hash

__all__ = [
    "AUTHENTICATION_FAILED_MESSAGE",
    "PLANS",
    "Action",
    "AuthenticationError",
    "Principal",
    "Role",
    "TokenExistsError",
    "TokenInfo",
    "TokenNotFoundError",
    "Workspace",
    "WorkspaceExistsError",
    "WorkspaceNotFoundError",
    "WorkspaceQuotas",
    "generate_token",
    "load_server_secret",
    "looks_valid",
    "role_allows",
    "token_hash",
    "write_token_file",
]

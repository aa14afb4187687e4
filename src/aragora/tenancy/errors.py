"""Errors of workspaces and API tokens, as branches of the control plane's one tree.

Each derives from a class in :mod:`aragora.control_plane.errors`, so code that maps
``NotFoundError`` to 404 and ``ConflictError`` to 409 handles these too::

    ControlPlaneError
    ├── AuthenticationError        a presented token is malformed, unknown, expired or revoked
    ├── NotFoundError
    │   ├── WorkspaceNotFoundError no workspace of that name
    │   └── TokenNotFoundError     no token with that id
    └── ConflictError
        ├── WorkspaceExistsError   create_workspace: the name is taken
        └── TokenExistsError       create_token: the token id or its hash is already stored
"""

from __future__ import annotations

from typing import Final, Literal

from aragora.control_plane.errors import ConflictError, ControlPlaneError, NotFoundError

AuthenticationFailure = Literal["malformed", "checksum", "unknown", "expired", "revoked"]
"""Why a token was refused; for logs and metrics only."""

AUTHENTICATION_FAILED_MESSAGE: Final = "the bearer token is not valid"
"""The one message callers are shown, whatever the reason: telling an unknown token
from a revoked or expired one would help someone probing with stolen or guessed tokens."""


class AuthenticationError(ControlPlaneError):
    """A presented token does not authenticate anyone.

    ``reason`` says why (``malformed``, ``checksum``, ``unknown``, ``expired`` or
    ``revoked``) for logs; show callers :data:`AUTHENTICATION_FAILED_MESSAGE` instead.
    The token itself is never part of the error.
    """

    def __init__(self, reason: AuthenticationFailure) -> None:
        super().__init__(f"authentication failed: {reason}")
        self.reason: AuthenticationFailure = reason


class WorkspaceNotFoundError(NotFoundError):
    """No workspace with this name."""

    def __init__(self, name: str) -> None:
        super().__init__(f"workspace {name!r} not found")
        self.name = name


class WorkspaceExistsError(ConflictError):
    """A workspace with this name already exists."""

    def __init__(self, name: str) -> None:
        super().__init__(f"workspace {name!r} already exists")
        self.name = name


class TokenNotFoundError(NotFoundError):
    """No token with this id."""

    def __init__(self, token_id: str) -> None:
        super().__init__(f"token {token_id!r} not found")
        self.token_id = token_id


class TokenExistsError(ConflictError):
    """The token id, or the token's hash, is already stored."""

    def __init__(self, token_id: str) -> None:
        super().__init__(f"token {token_id!r} (or a token with the same secret) already exists")
        self.token_id = token_id

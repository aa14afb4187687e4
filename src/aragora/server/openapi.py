"""Final touches to the generated OpenAPI document.

FastAPI documents every response model as ``application/json``; errors are served as
``application/problem+json``, so their bodies are moved there. The document declares
bearer authentication (so ``/docs`` can send a token) on every operation except the
open probes.
"""

from __future__ import annotations

from typing import Any

from aragora.server.middleware.tenancy import OPEN_PATHS
from aragora.server.problems import PROBLEM_MEDIA_TYPE

BEARER_SCHEME = "apiToken"
_HEALTH_PATHS = ("/health", "/readyz", "/livez")


def finish_openapi(document: dict[str, Any]) -> None:
    """Adjust ``document`` in place."""
    for path, operations in document.get("paths", {}).items():
        for operation in operations.values():
            for status, response in operation.get("responses", {}).items():
                content = response.get("content") or {}
                is_error = status[:1] in ("4", "5")
                # Health answers a failing check as health+json, not as a problem.
                if is_error and "application/json" in content and not path.endswith(_HEALTH_PATHS):
                    content[PROBLEM_MEDIA_TYPE] = content.pop("application/json")
            if path not in OPEN_PATHS:
                operation["security"] = [{BEARER_SCHEME: []}]
    components = document.setdefault("components", {})
    components.setdefault("securitySchemes", {})[BEARER_SCHEME] = {
        "type": "http",
        "scheme": "bearer",
        "description": "An API token (acp_...) issued through /api/control-plane/tokens, "
        "or the bootstrap admin token (ARAGORA_ADMIN_TOKEN or <data-dir>/admin.token).",
    }

"""The HTTP server of the control plane: a FastAPI app and a uvicorn runner.

``create_app`` builds the app (for tests and embedding); ``build_services`` builds its
tenancy, policy and rate-limit services where no lifespan runs (ASGI test transports);
``serve`` runs it until SIGINT/SIGTERM; ``config_for_serve`` chooses the store as
``aragora serve`` does.
"""

from aragora.server.app import create_app
from aragora.server.run import config_for_serve, serve
from aragora.server.services import build_services

__all__ = ["build_services", "config_for_serve", "create_app", "serve"]

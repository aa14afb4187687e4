"""Pure ASGI middleware: authentication and tenancy, request body limits."""

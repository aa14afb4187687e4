"""The routes an app serves, read from ``app.routes``, and requests to call each one.

Tests iterate the app's own routes rather than a list of their own, so a route added
without an authorization entry or without workspace scoping fails them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts

from aragora.server.authz import route_access

Route = tuple[str, str]
"""(method, path template)"""


def served_routes(app: FastAPI) -> list[Route]:
    """Every (method, path template) the app serves, ``HEAD`` left out (it is ``GET``)."""
    routes: set[Route] = set()
    for context in iter_route_contexts(app.routes):
        path = context.path
        assert isinstance(path, str), context
        for method in context.methods or ():
            if method != "HEAD":
                routes.add((method, path))
    return sorted(routes)


def guarded_routes(app: FastAPI) -> list[Route]:
    """The served routes that need a token."""
    out = []
    for method, path in served_routes(app):
        access = route_access(method, path)
        assert access is not None, f"{method} {path} has no entry in ROUTE_ACCESS"
        if not access.is_open:
            out.append((method, path))
    return out


def fill(path: str, params: Mapping[str, str]) -> str:
    """The path template with its parameters filled in; KeyError for an unknown one."""
    names = [part[1:-1] for part in path.split("/") if part.startswith("{")]
    for name in names:
        path = path.replace("{" + name + "}", params[name])
    return path


async def call(
    client: httpx.AsyncClient,
    route: Route,
    params: Mapping[str, str],
    bodies: Mapping[Route, Any] | None = None,
    query: Mapping[str, str] | None = None,
) -> httpx.Response:
    """Call one route with its path filled from ``params`` and its body (if any) from
    ``bodies``; claims never wait."""
    method, path = route
    body = None if bodies is None else bodies.get(route)
    return await client.request(method, fill(path, params), json=body, params=query)

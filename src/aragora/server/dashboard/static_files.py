"""Serving the dashboard's static files, ahead of the API and without a token.

:class:`DashboardMiddleware` answers ``GET``/``HEAD`` of ``/`` (the page) and of
``/ui/<file>`` (its modules, styles and icons) from :data:`STATIC_DIR`, and passes every
other request on to the app unchanged, so no API route is shadowed and the tenancy
middleware still guards everything else. The files hold no data: the page reads all it
shows from the authenticated API, with the token the user typed in (kept in session
storage, sent as ``Authorization: Bearer``, never in a URL).

Every answer carries a strict Content-Security-Policy (scripts and styles only from
this origin, no inline scripts, no framing), ``X-Content-Type-Options: nosniff`` and
``Referrer-Policy: no-referrer``; ``Cache-Control: no-cache`` makes browsers revalidate
(the files carry an ETag), so an upgraded server serves its own page.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse, PlainTextResponse
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STATIC_DIR: Final = Path(__file__).parent / "static"
ASSET_PREFIX: Final = "/ui"
PAGE_PATHS: Final = frozenset({"/", "/index.html"})

CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS: Final = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cache-control": "no-cache",
}


class DashboardMiddleware:
    """Pure ASGI middleware serving the page and its assets; see the module docstring."""

    def __init__(self, app: ASGIApp, static_dir: Path = STATIC_DIR) -> None:
        self.app = app
        self._index = static_dir / "index.html"
        self._assets = StaticFiles(directory=static_dir)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        root = scope.get("root_path", "")
        path = _app_path(scope)
        send_secured = _with_headers(send)
        if path in PAGE_PATHS:
            page = FileResponse(self._index, media_type="text/html; charset=utf-8")
            await page(scope, receive, send_secured)
        elif path.startswith(ASSET_PREFIX + "/"):
            child = {**scope, "path": root + path, "root_path": root + ASSET_PREFIX}
            try:
                response = await self._assets.get_response(self._assets.get_path(child), child)
            except HTTPException as exc:  # unknown file or a path escaping the directory
                response = PlainTextResponse(str(exc.detail), status_code=exc.status_code)
            await response(child, receive, send_secured)
        else:
            await self.app(scope, receive, send)


def _app_path(scope: Scope) -> str:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def _with_headers(send: Send) -> Send:
    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = MutableHeaders(scope=message)
            for name, value in SECURITY_HEADERS.items():
                headers[name] = value
        await send(message)

    return send_with_headers

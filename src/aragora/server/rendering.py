"""JSON responses that render any stored value, including strings that are not valid Unicode.

Values stored through the library (not over HTTP) may hold lone surrogates, which
UTF-8 cannot encode. Such a body is rendered with ASCII escapes instead (``"\\ud800"``),
which JSON allows, so reading a task never fails with a 500.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import JSONResponse


class SafeJSONResponse(JSONResponse):
    """Compact UTF-8 JSON; ASCII-escaped when a string cannot be encoded as UTF-8."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return json.dumps(content, allow_nan=False, separators=(",", ":")).encode("ascii")

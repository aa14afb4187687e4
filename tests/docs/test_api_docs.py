"""``docs/api.md`` is what ``python -m aragora.server.openapi_docs`` prints today."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from aragora.server.openapi_docs import openapi_document, render, type_of

API_PAGE = Path(__file__).resolve().parents[2] / "docs" / "api.md"
REGENERATE = "python -m aragora.server.openapi_docs > docs/api.md"


def test_api_page_is_up_to_date() -> None:
    assert API_PAGE.read_text(encoding="utf-8") == render(openapi_document()), (
        f"docs/api.md is stale; regenerate it: {REGENERATE}"
    )


def test_the_module_prints_the_page_and_every_operation_is_on_it() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "aragora.server.openapi_docs"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    document = openapi_document()
    for path, operations in document["paths"].items():
        for method in operations:
            assert f"### `{method.upper()} {path}`" in done.stdout
    for name in document["components"]["schemas"]:
        assert f"### {name}\n" in done.stdout
    assert done.stdout == render(document)


def test_types_are_described_readably() -> None:
    nullable = {"anyOf": [{"type": "string"}, {"type": "null"}]}
    assert type_of(nullable) == "string \\| null"
    assert type_of({"type": "array", "items": {"$ref": "#/components/schemas/TaskOut"}}) == (
        "array of [TaskOut](#schema-taskout)"
    )
    assert type_of({"enum": ["high", "low"]}) == '`"high"` \\| `"low"`'
    assert type_of({}) == "any"

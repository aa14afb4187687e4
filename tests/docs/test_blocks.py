"""How documentation blocks and their ``doc-test`` markers are read."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.docs.blocks import DEFAULT_TIMEOUT_S, MarkerError, extract_blocks

DOC = Path("guide.md")


def test_shell_blocks_are_found_in_order_and_other_languages_are_not() -> None:
    text = "\n".join(
        [
            "# Guide",
            "```sh",
            "aragora agents list",
            "```",
            "```python",
            "print('not a command')",
            "```",
            "```bash",
            "aragora task list",
            "```",
        ]
    )
    blocks = extract_blocks(DOC, text)
    assert [(b.line, b.code) for b in blocks] == [
        (2, "aragora agents list\n"),
        (8, "aragora task list\n"),
    ]
    assert blocks[0].directives.timeout_s == DEFAULT_TIMEOUT_S


def test_a_marker_applies_to_the_next_block_only() -> None:
    text = "\n".join(
        [
            '<!-- doc-test: interrupt-when="Dashboard:" expect="summary:" timeout=90 -->',
            "",
            "```sh",
            "aragora demo",
            "```",
            "```sh",
            "aragora task list",
            "```",
        ]
    )
    first, second = extract_blocks(DOC, text)
    assert first.directives.interrupt_when == "Dashboard:"
    assert first.directives.expect == ("summary:",)
    assert first.directives.timeout_s == 90
    assert second.directives.interrupt_when is None


def test_a_marker_followed_by_prose_is_dropped() -> None:
    text = "<!-- doc-test: skip slow -->\nSome prose.\n```sh\nls\n```\n"
    (block,) = extract_blocks(DOC, text)
    assert block.directives.skip_reason is None


def test_skip_keeps_its_reason() -> None:
    text = "<!-- doc-test: skip runs the whole test suite -->\n```sh\n./scripts/test\n```\n"
    (block,) = extract_blocks(DOC, text)
    assert block.directives.skip_reason == "runs the whole test suite"


@pytest.mark.parametrize(
    ("marker", "reason"),
    [
        ("skip", "needs a reason"),
        ("interupt-when=x", "unknown doc-test directive 'interupt-when'"),
        ("expect", "needs a value"),
        ("timeout=soon", "is not a number"),
    ],
)
def test_a_bad_marker_is_an_error_naming_the_line(marker: str, reason: str) -> None:
    text = f"text\n<!-- doc-test: {marker} -->\n```sh\nls\n```\n"
    with pytest.raises(MarkerError, match=f"guide.md:2: .*{reason}"):
        extract_blocks(DOC, text)

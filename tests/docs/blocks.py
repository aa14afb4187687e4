"""Shell blocks of the documentation, and the markers that say how a test runs them.

A block is a fenced code block whose language is ``sh``, ``bash`` or ``shell`` in
``README.md`` or ``docs/*.md``. It runs as one bash script (``set -eo pipefail``), so
every command in it must succeed. An HTML comment right before the fence (blank lines
may come between) changes how it runs::

    <!-- doc-test: skip REASON -->              not run; the reason is required
    <!-- doc-test: interrupt-when="TEXT" -->    long-running: once TEXT appears in its
                                                output, send SIGINT; it must exit 0
    <!-- doc-test: expect="TEXT" -->            its output must contain TEXT (repeatable)
    <!-- doc-test: timeout=SECONDS -->          more time than the default
    <!-- doc-test: cwd=repo -->                 run at the repository root (for
                                                ``./scripts/...``), not in a sandbox

Directives may be combined in one comment, e.g.
``<!-- doc-test: interrupt-when="Dashboard:" expect="summary:" -->``. An unknown
directive, or ``skip`` without a reason, is an error, so a typo never hides a block.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

SHELL_LANGUAGES = frozenset({"sh", "bash", "shell"})
DEFAULT_TIMEOUT_S = 45.0
_FENCE = re.compile(r"^(?P<indent>[ ]{0,3})(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\s]*)")
_MARKER = re.compile(r"^\s*<!--\s*doc-test:(?P<body>.*?)-->\s*$")


class MarkerError(ValueError):
    """A ``doc-test`` marker that cannot be understood."""


@dataclass(frozen=True)
class Directives:
    """How to run one block (see the module docstring)."""

    skip_reason: str | None = None
    interrupt_when: str | None = None
    expect: tuple[str, ...] = ()
    timeout_s: float = DEFAULT_TIMEOUT_S
    cwd_repo: bool = False


@dataclass(frozen=True)
class Block:
    """One shell block: where it is, its text and its directives."""

    path: Path
    line: int
    code: str
    directives: Directives = field(default_factory=Directives)

    @property
    def id(self) -> str:
        return f"{self.path.name}:{self.line}"


def parse_marker(body: str) -> Directives:
    """The directives of a marker's text (what follows ``doc-test:``)."""
    words = shlex.split(body)
    if not words:
        raise MarkerError("empty doc-test marker")
    if words[0] == "skip":
        reason = " ".join(words[1:]).strip()
        if not reason:
            raise MarkerError("doc-test: skip needs a reason")
        return Directives(skip_reason=reason)
    interrupt_when: str | None = None
    expect: list[str] = []
    timeout_s = DEFAULT_TIMEOUT_S
    cwd_repo = False
    for word in words:
        name, sep, value = word.partition("=")
        if not sep or not value:
            raise MarkerError(f"doc-test directive {word!r} needs a value (name=value)")
        if name == "interrupt-when":
            interrupt_when = value
        elif name == "expect":
            expect.append(value)
        elif name == "cwd":
            if value != "repo":
                raise MarkerError(f"doc-test cwd must be 'repo', not {value!r}")
            cwd_repo = True
        elif name == "timeout":
            try:
                timeout_s = float(value)
            except ValueError:
                raise MarkerError(f"doc-test timeout {value!r} is not a number") from None
        else:
            raise MarkerError(f"unknown doc-test directive {name!r}")
    return Directives(
        interrupt_when=interrupt_when,
        expect=tuple(expect),
        timeout_s=timeout_s,
        cwd_repo=cwd_repo,
    )


def extract_blocks(path: Path, text: str | None = None) -> list[Block]:
    """Every shell block of the Markdown file ``path``, in order."""
    lines = (path.read_text(encoding="utf-8") if text is None else text).splitlines()
    blocks: list[Block] = []
    pending: Directives | None = None
    index = 0
    while index < len(lines):
        line = lines[index]
        marker = _MARKER.match(line)
        if marker is not None:
            try:
                pending = parse_marker(marker.group("body"))
            except MarkerError as exc:
                raise MarkerError(f"{path.name}:{index + 1}: {exc}") from None
            index += 1
            continue
        fence = _FENCE.match(line)
        if fence is None:
            if line.strip():
                pending = None
            index += 1
            continue
        closing = fence.group("fence")
        start = index
        body: list[str] = []
        index += 1
        while index < len(lines) and not lines[index].lstrip().startswith(closing):
            body.append(lines[index])
            index += 1
        index += 1
        if fence.group("info").lower() in SHELL_LANGUAGES:
            blocks.append(Block(path, start + 1, "\n".join(body) + "\n", pending or Directives()))
        pending = None
    return blocks

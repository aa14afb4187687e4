"""The agents' append-only execution logs: one JSON object per line.

Each line is written with a single ``write(2)`` on a descriptor opened with
``O_APPEND``, so a SIGKILL can at worst leave the last line torn; readers skip a line
that does not parse (only the last one can be torn). Events:

* ``start``: a handler began running ``task`` for ``attempt`` (``chaos`` is the
  submitter's task number, ``None`` for a probe);
* ``end``: that handler ended with ``outcome`` (``ok``, ``injected_failure``,
  ``designed_failure`` or ``cancelled``); missing when the agent was killed meanwhile;
* ``report``: the agent's complete/fail call for ``task``/``attempt`` was ``accepted``
  by the server or ``rejected`` (with the HTTP ``status``), e.g. after its lease was lost.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class ExecutionLog:
    """Appends events to one agent's log file (several processes may share it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        # A torn line left by a killed writer must not swallow the next event.
        size = os.fstat(self._fd).st_size
        if size and _last_byte(path) != b"\n":
            os.write(self._fd, b"\n")

    def write(self, event: dict[str, Any]) -> None:
        line = json.dumps(event, separators=(",", ":")) + "\n"
        os.write(self._fd, line.encode("utf-8"))

    def close(self) -> None:
        os.close(self._fd)


def _last_byte(path: Path) -> bytes:
    with path.open("rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1)


def read_events(path: Path) -> Iterator[dict[str, Any]]:
    """Every whole event of the log at ``path``, skipping a torn line."""
    if not path.exists():
        return
    with path.open("rb") as handle:
        for raw in handle:
            try:
                event = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(event, dict):
                yield event


class LogTail:
    """Reads new whole lines of a growing log, keeping the tasks now in flight."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self.in_flight: set[tuple[str, int]] = set()

    def poll(self) -> list[dict[str, Any]]:
        """The events appended since the last call (a line still being written waits)."""
        if not self.path.exists():
            return []
        with self.path.open("rb") as handle:
            handle.seek(self._offset)
            chunk = handle.read()
        end = chunk.rfind(b"\n") + 1
        self._offset += end
        events: list[dict[str, Any]] = []
        for raw in chunk[:end].splitlines():
            try:
                event = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if not isinstance(event, dict):
                continue
            events.append(event)
            key = (str(event.get("task")), int(event.get("attempt") or 0))
            if event.get("ev") == "start":
                self.in_flight.add(key)
            elif event.get("ev") == "end":
                self.in_flight.discard(key)
        return events

    def forget_in_flight(self) -> None:
        """The process was killed: what it was running will never end here."""
        self.in_flight.clear()

"""Errors the processes logged: a server error or an agent giving up is a finding even
when every task came out right."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

MAX_EXAMPLES = 10
_ID = re.compile(r"[0-9a-f]{32}|\d+(\.\d+)?")


def scan_logs(server_logs: list[Path], agent_logs: list[Path]) -> dict[str, Any]:
    """Server lines at level error/critical (alerts aside, they are expected under
    faults), answers with status 500, and agent ERROR lines, grouped by message."""
    server_errors: Counter[str] = Counter()
    status_500 = 0
    for path in server_logs:
        for line in _lines(path):
            if "(status 500" in line:
                status_500 += 1
            if ('"level": "error"' in line or '"level": "critical"' in line) and (
                '"logger": "aragora.alerts"' not in line
            ):
                server_errors[_shape(line)] += 1
    agent_errors: Counter[str] = Counter()
    for path in agent_logs:
        for line in _lines(path):
            if " ERROR " in line or "Traceback" in line:
                agent_errors[_shape(line.split(" ERROR ", 1)[-1])] += 1
    return {
        "server_errors": sum(server_errors.values()),
        "server_status_500": status_500,
        "agent_errors": sum(agent_errors.values()),
        "examples": [m for m, _ in (server_errors + agent_errors).most_common(MAX_EXAMPLES)],
    }


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()
    except OSError:
        return []


def _shape(line: str) -> str:
    """The line with ids and numbers masked, so repeats group together."""
    return _ID.sub("N", line)[:300]

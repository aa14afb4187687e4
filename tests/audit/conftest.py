"""An audit log on the test's coordinator store (SQLite file or Redis key prefix)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from aragora.audit import AuditEvent, AuditLog
from aragora.control_plane import ControlPlaneCoordinator


@pytest.fixture
async def audit(cp: ControlPlaneCoordinator) -> AsyncIterator[AuditLog]:
    log = AuditLog.for_store(cp.store)
    yield log
    await log.close()


async def append_many(
    log: AuditLog, n: int, workspace_id: str = "default", start: int = 0
) -> list[AuditEvent]:
    """``n`` events, one after another, with resources ``task:<start>`` onwards."""
    return [
        await log.append(
            workspace_id,
            principal="tok-1",
            action="task.submit",
            resource=f"task:{i}",
            outcome="allowed",
            correlation_id=f"corr-{i}",
            client_address="10.0.0.1",
            details={"i": i, "ratio": i / 3},
        )
        for i in range(start, start + n)
    ]

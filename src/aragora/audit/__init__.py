"""The audit trail: one hash chain of events per workspace, on Redis or SQLite.

Every event records who (``principal``) did what (``action``) to which ``resource``,
with what ``outcome``, when (store clock), and the request's correlation id and client
address. Each event's hash covers all its fields and the previous event's hash, so
``AuditLog.verify`` finds the first event that was edited, removed, inserted or moved.
Appends are atomic in the store, so many instances appending at once build one chain.

    log = AuditLog.for_store(coordinator.store)
    await log.append("ws", principal=p, action=Action.TASK_SUBMIT,
                     resource=f"task:{task_id}", outcome=Outcome.ALLOWED)
    result = await log.verify("ws")
"""

from aragora.audit.base import AuditIntegrityError, AuditStore, ChainHead
from aragora.audit.events import GENESIS_HASH, SYSTEM_PRINCIPAL, AuditEvent, Outcome
from aragora.audit.log import AuditLog, audit_store_for
from aragora.audit.verify import ChainVerifier, VerifyResult, verify_export

__all__ = [
    "GENESIS_HASH",
    "SYSTEM_PRINCIPAL",
    "AuditEvent",
    "AuditIntegrityError",
    "AuditLog",
    "AuditStore",
    "ChainHead",
    "ChainVerifier",
    "Outcome",
    "VerifyResult",
    "audit_store_for",
    "verify_export",
]

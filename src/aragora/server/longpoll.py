"""Long-polls that end when their work ends, the client leaves, or the server stops.

A long-poll races its work (a claim with ``wait_s``, a wait for a task to finish)
against two other outcomes:

* the client disconnects: the work is cancelled and :class:`ClientGone` is raised;
  the app answers it with an empty response that no one receives, and logs nothing;
* the server begins to shut down: the work is cancelled and :data:`SHUTDOWN` is
  returned, so the handler answers at once with the current state instead of holding
  the shutdown until its grace period runs out.

A claim cancelled in the instant its store operation succeeded leaves the task leased
to an agent that never hears of it; the lease expires after the task's ``timeout_s``
and the reaper requeues it, as for any lost response.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive

from aragora.server.state import ServerState

T = TypeVar("T")

logger = logging.getLogger(__name__)

CANCEL_GRACE_S = 1.0
"""How long a long-poll waits for its cancelled work to stop before answering anyway."""
CLIENT_GONE_STATUS = 499
"""Status of the response to a client that disconnected (never delivered, as in nginx logs)."""


class Interrupted(enum.Enum):
    SHUTDOWN = "shutdown"


SHUTDOWN = Interrupted.SHUTDOWN


class ClientGone(Exception):
    """The client disconnected while its long-poll waited."""


async def _client_disconnected(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


def _discard_outcome(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


async def long_poll(
    request: Request, state: ServerState, work: Coroutine[Any, Any, T]
) -> T | Interrupted:
    """Run ``work`` until it returns, the client leaves, or the server stops.

    Returns the work's result (its exception propagates), or :data:`SHUTDOWN`; raises
    :class:`ClientGone` when the client disconnected first.
    """
    work_task = asyncio.ensure_future(work)
    shutdown_task = asyncio.ensure_future(state.shutdown_event.wait())
    gone_task = asyncio.ensure_future(_client_disconnected(request.receive))
    tasks = (work_task, shutdown_task, gone_task)
    async with state.long_polls.track():
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            _, stuck = await asyncio.wait(tasks, timeout=CANCEL_GRACE_S)
            for task in stuck:
                # Work that does not honour its cancellation (a library swallowing it)
                # must not hold the answer, nor a graceful shutdown, until it ends.
                logger.warning("a long-poll's work ignored its cancellation; answering anyway")
                task.add_done_callback(_discard_outcome)
    if work_task.done() and not work_task.cancelled():
        return work_task.result()
    if gone_task.done() and not gone_task.cancelled():
        # Finished, or failed reading from a connection that broke: gone either way.
        gone_task.exception()
        raise ClientGone
    return SHUTDOWN


async def handle_client_gone(request: Request, exc: Exception) -> Response:
    """Exception handler for :class:`ClientGone`: an empty answer nobody will read."""
    return Response(status_code=CLIENT_GONE_STATUS)

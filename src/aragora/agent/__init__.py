"""The agent SDK: serve task types with plain functions, the control plane does the rest.

::

    from aragora.agent import Agent

    agent = Agent("writer-1", capabilities=["debate"], model="local-echo")

    @agent.task("debate")
    async def debate(payload: dict, ctx) -> dict:
        return {"answer": payload["topic"].upper()}

    if __name__ == "__main__":
        agent.run()

See ``aragora.agent.worker`` for the lifecycle (registration, heartbeats, claiming,
reporting, draining) and ``aragora.agent.context`` for what a handler is given.
"""

from aragora.agent.context import PermanentError, TaskContext
from aragora.agent.worker import Agent, Handler

__all__ = ["Agent", "Handler", "PermanentError", "TaskContext"]

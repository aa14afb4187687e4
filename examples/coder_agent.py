"""An agent that writes code: task types "code" and "execute", model "coder-large".

It holds the capabilities ``code`` and ``python``, so it may also run "execute" tasks
under the example rule ``examples/policies/no-execute.cedar``. Run it with a token of
role ``agent``::

    export ARAGORA_URL=http://127.0.0.1:8080
    export ARAGORA_TOKEN=$(aragora token create --role agent)
    python examples/coder_agent.py

The model is simulated: it answers after a short, variable delay.
"""

import asyncio
import os
import random
import re

from aragora.agent import Agent, PermanentError, TaskContext

agent = Agent(
    os.environ.get("CODER_AGENT_ID", "coder-1"),
    capabilities=["code", "python"],
    model="coder-large",
    concurrency=2,
)


def _function_name(spec: str) -> str:
    words = re.findall(r"[a-z0-9]+", spec.lower())[:4]
    return "_".join(words) or "solution"


@agent.task("code")
async def code(payload: dict[str, object], ctx: TaskContext) -> dict[str, object]:
    """A Python function stub for ``payload["spec"]``."""
    spec = payload.get("spec")
    if not isinstance(spec, str) or not spec.strip():
        raise PermanentError('payload["spec"] must be a non-empty string')
    await asyncio.sleep(random.uniform(0.2, 0.8))  # stands in for the model call
    ctx.report_cost(0.002)
    name = _function_name(spec)
    source = f'def {name}() -> None:\n    """{spec.strip()}"""\n    raise NotImplementedError\n'
    return {"language": "python", "source": source}


@agent.task("execute")
async def execute(payload: dict[str, object], ctx: TaskContext) -> dict[str, object]:
    """Pretend to run ``payload["source"]`` and say how long it was."""
    source = payload.get("source")
    if not isinstance(source, str):
        raise PermanentError('payload["source"] must be a string')
    await asyncio.sleep(random.uniform(0.05, 0.2))
    return {"exit_code": 0, "lines": len(source.splitlines())}


if __name__ == "__main__":
    agent.run()

"""An agent that summarises text: task type "summarize", model "summarizer-small".

Run it against a server with a token of role ``agent`` (or ``aragora agent run
examples.summarizer_agent:agent``)::

    export ARAGORA_URL=http://127.0.0.1:8080
    export ARAGORA_TOKEN=$(aragora token create --role agent)
    python examples/summarizer_agent.py

The model call is simulated: it takes a fraction of a second and its cost (reported to
the control plane, which books it against the workspace budget) grows with the text.
"""

import asyncio
import os
import random

from aragora.agent import Agent, PermanentError, TaskContext

SUMMARY_WORDS = 12
COST_PER_WORD = 0.0001

agent = Agent(
    os.environ.get("SUMMARIZER_AGENT_ID", "summarizer-1"),
    capabilities=["summarize"],
    model="summarizer-small",
    concurrency=2,
)


@agent.task("summarize")
async def summarize(payload: dict[str, object], ctx: TaskContext) -> dict[str, object]:
    """The first words of ``payload["text"]``; a missing text fails at once (no retry)."""
    text = payload.get("text")
    if not isinstance(text, str) or not text.strip():
        raise PermanentError('payload["text"] must be a non-empty string')
    await asyncio.sleep(random.uniform(0.1, 0.5))  # stands in for the model call
    words = text.split()
    ctx.report_cost(COST_PER_WORD * len(words))
    summary = " ".join(words[:SUMMARY_WORDS]) + (" ..." if len(words) > SUMMARY_WORDS else "")
    return {"summary": summary, "words": len(words)}


if __name__ == "__main__":
    agent.run()

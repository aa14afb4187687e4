"""An agent that answers "echo" tasks. Run it with: python examples/echo_agent.py

Against a local ``aragora serve`` (http://127.0.0.1:8080) started in this directory, it
uses the admin token the server wrote to ./.aragora/admin.token. Elsewhere, give it a
token of role ``agent``::

    export ARAGORA_URL=https://cp.example.com
    export ARAGORA_TOKEN=$(aragora token create --role agent --workspace team-a)
    python examples/echo_agent.py
"""

from aragora.agent import Agent, TaskContext

agent = Agent("echo-1", capabilities=["echo"], model="local-echo")


@agent.task("echo")
async def echo(payload: dict[str, object], ctx: TaskContext) -> dict[str, object]:
    return {"echo": payload, "task_id": ctx.task_id, "attempt": ctx.attempt}


if __name__ == "__main__":
    agent.run()

"""An agent that answers "echo" tasks. Run it with: python examples/echo_agent.py"""

from aragora.agent import Agent, TaskContext

agent = Agent("echo-1", capabilities=["echo"], model="local-echo")


@agent.task("echo")
async def echo(payload: dict[str, object], ctx: TaskContext) -> dict[str, object]:
    return {"echo": payload, "task_id": ctx.task_id, "attempt": ctx.attempt}


if __name__ == "__main__":
    agent.run()

"""A worker agent in a process of its own, for the cross-process and crash tests.

It reads its configuration from the environment (``ARAGORA_*``, see
``ControlPlaneConfig.from_env``), registers one agent and reports every step as one
line on stdout, flushed at once, so a test can wait for exactly the moment it needs::

    ready                        the agent is registered
    waiting                      about to wait for work (a long-poll claim)
    claimed <task id> <lease>    a task is leased to the agent
    completed <task id>          its result is recorded
    holding                      (--hold) it holds its tasks and will never finish them
    done                         nothing more to do; the process exits

The result of every task is ``{"agent": <agent id>, "pid": <process id>}``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from aragora.control_plane import ControlPlaneConfig, ControlPlaneCoordinator, Task


def _say(*words: str) -> None:
    print(*words, flush=True)


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agent", required=True, help="agent id to register")
    parser.add_argument("--max", type=int, default=1, help="max concurrent tasks of the agent")
    parser.add_argument(
        "--count", type=int, default=0, help="tasks to finish (or hold); 0: until none is left"
    )
    parser.add_argument(
        "--wait-s", type=float, default=0.0, help="how long each claim waits for work"
    )
    parser.add_argument(
        "--gate", action="store_true", help="read one line from stdin before each completion"
    )
    parser.add_argument(
        "--hold", action="store_true", help="claim --count tasks, then block without finishing"
    )
    return parser.parse_args(argv)


async def _claim(cp: ControlPlaneCoordinator, agent: str, wait_s: float) -> Task | None:
    if wait_s > 0:
        _say("waiting")
    task = await cp.claim_task(agent, wait_s=wait_s)
    if task is not None:
        assert task.lease_token is not None
        _say("claimed", task.id, task.lease_token)
    return task


async def _run(args: argparse.Namespace) -> None:
    config = ControlPlaneConfig.from_env()
    async with ControlPlaneCoordinator(config, run_reaper=False) as cp:
        await cp.register_agent(args.agent, [], model="worker", max_concurrent_tasks=args.max)
        _say("ready")
        if args.hold:
            held = 0
            while held < args.count:
                if await _claim(cp, args.agent, args.wait_s) is None:
                    raise SystemExit(f"only {held} of {args.count} tasks to hold were found")
                held += 1
            _say("holding")
            sys.stdin.read()  # until the test kills this process (or closes stdin)
            return
        finished = 0
        while args.count == 0 or finished < args.count:
            batch: list[Task] = []
            while len(batch) < args.max and (args.count == 0 or finished + len(batch) < args.count):
                task = await _claim(cp, args.agent, args.wait_s)
                if task is None:
                    break
                batch.append(task)
            if not batch:
                break
            for task in batch:
                if args.gate:
                    sys.stdin.readline()
                assert task.lease_token is not None
                result = {"agent": args.agent, "pid": os.getpid()}
                await cp.complete_task(task.id, result, lease_token=task.lease_token)
                _say("completed", task.id)
                finished += 1
        _say("done")


def main(argv: list[str] | None = None) -> None:
    asyncio.run(_run(_parse_args(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    main()

"""Producer process: ``python -m bench.peers.producer JOB_JSON`` runs one measurement.

The benchmark runs each measurement (W1 then W2 of one system, or W5 of one store) in a
process of its own, so that a peer client that blocks for good (a synchronous call
cannot be cancelled from an event loop) is killed with its process instead of hanging
the run, and so that no system's client state outlives its measurement. This process
starts the worker process (``WorkerProcess``), measures, stops the worker and prints
one line per event on stdout:

* ``WORKER <pid>``: the worker's process id (its process group), for the parent to kill
  if this process has to be killed;
* ``RESULT <json>``: the measurement;
* ``UNAVAILABLE <reason>`` or ``FAILED <reason>``: why there is none.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench import workloads
from bench.peers import load_adapter
from bench.peers.aragora import AragoraAdapter
from bench.peers.base import Settings, Unavailable, WorkerProcess, import_peer

_control: Any = None


def _say(kind: str, text: str) -> None:
    """One protocol line on the control stream (the original stdout)."""
    _control.write(f"{kind} {' '.join(text.split())}\n")
    _control.flush()


class _RedisCpu:
    """CPU seconds (user + system) of the Redis server, or None when it cannot be read."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._client: Any = None

    def __call__(self) -> float | None:
        try:
            if self._client is None:
                self._client = import_peer("redis").Redis.from_url(self._url)
            info = self._client.info("cpu")
            return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
        except Exception:
            return None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


async def _measure(job: dict[str, Any]) -> dict[str, Any]:
    settings = Settings.from_json(json.dumps(job["settings"]))
    cls = load_adapter(settings.system)
    cls.check()
    adapter = cls(settings)
    worker = WorkerProcess(
        settings, Path(job["log_path"]), on_start=lambda pid: _say("WORKER", str(pid))
    )
    redis_cpu = _RedisCpu(job["redis_url"])
    timeout_s = float(job["timeout_s"])
    try:
        await adapter.open()
        if job["kind"] == "mix":
            if not isinstance(adapter, AragoraAdapter):
                raise TypeError("W5 runs on our control plane only")
            rate, check = await workloads.mix(adapter, worker, int(job["tasks"]), timeout_s)
            return {"tasks_per_s": rate, "check": asdict(check)}
        w1 = await workloads.throughput(
            adapter, worker, int(job["tasks"]), timeout_s, job.get("profile_path"), redis_cpu
        )
        samples = await workloads.latency(adapter, worker, int(job["samples"]), timeout_s)
        return {"w1": asdict(w1), "latency_s": samples}
    finally:
        worker.stop()
        redis_cpu.close()
        try:
            await adapter.close()
        except Exception as exc:
            print(f"closing the producer failed: {exc!r}", file=sys.stderr)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m bench.peers.producer JOB_JSON", file=sys.stderr)
        return 2
    global _control
    job = json.loads(argv[1])
    _control = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything a client library prints goes to the log, not the protocol
    try:
        result = asyncio.run(_measure(job))
    except Unavailable as exc:
        _say("UNAVAILABLE", str(exc))
        return 1
    except Exception as exc:
        traceback.print_exc()
        _say("FAILED", f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        return 1
    _say("RESULT", json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

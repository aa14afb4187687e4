"""What every system under comparison provides, and the worker process they all run in.

A system (our control plane on one store, or a peer task queue) is an ``Adapter``:

* in the benchmark process, the *producer* side: ``open``, ``submit(value)`` returning a
  handle, ``result(handle, timeout_s)`` returning the task's return value (raising
  ``TimeoutError`` when it is not there in time), ``close``;
* in a separate process, the *worker* side: ``run_worker(settings, gate)`` builds the
  system's worker, calls ``gate.wait_for_go()`` and then runs the worker until
  ``gate`` says stop (or the process is killed).

``WorkerProcess`` starts ``python -m bench.peers.worker`` in a process group of its own, waits
until it reports ready (imports done, objects built, nothing consumed yet), sends "go"
(the instant the measurement starts) and at the end closes the child's stdin, gives it
a grace period and kills its whole process group.

Every system gets a ``Settings`` of its own: its own Redis database (``redis_url`` ends
in ``/<db>``) and a unique ``namespace`` for queue names and key prefixes, so systems never
see each other's keys and the benchmark flushes only databases it marked as its own.
"""

from __future__ import annotations

import abc
import contextlib
import importlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

REPO_ROOT = Path(__file__).resolve().parents[2]
READY_LINE = "READY"
GO_LINE = "GO"
STOP_GRACE_S = 5.0
RESULT_POLL_S = 0.001
"""Poll interval for peers whose client polls for a result (arq, taskiq)."""
ADD_ONE = "add_one"
"""Name under which every system registers the no-op task: ``add_one(x: int) -> x + 1``."""


def add_one(x: int) -> int:
    """The no-op task of every workload: take an int, return it plus one."""
    return x + 1


async def add_one_async(x: int) -> int:
    """``add_one`` as a coroutine function, for the async peers (arq, saq, taskiq)."""
    return x + 1


def child_env() -> dict[str, str]:
    """The environment of a benchmark child process: this one, with the repository on
    ``PYTHONPATH`` (``bench`` is not an installed package) and unbuffered output."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Unavailable(Exception):
    """The system cannot run here (not installed, fails to import, cannot start)."""


class WorkerFailed(Exception):
    """The worker process exited or never became ready; carries the end of its log."""


def import_peer(module: str) -> Any:
    """Import a peer's module by name, typed ``Any``: peers are optional and untyped here.

    An ImportError (or any error raised while importing) becomes ``Unavailable``."""
    try:
        imported: ModuleType = importlib.import_module(module)
    except Exception as exc:  # broken installs raise more than ImportError
        raise Unavailable(f"import {module}: {type(exc).__name__}: {exc}") from exc
    return imported


def distribution_version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a system needs, on both sides; JSON-serialisable for the child."""

    system: str
    redis_url: str
    namespace: str
    options: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Settings:
        data = json.loads(text)
        return cls(data["system"], data["redis_url"], data["namespace"], dict(data["options"]))


class Gate:
    """The worker's side of the start/stop protocol with ``WorkerProcess``.

    ``wait_for_go`` reports ready on the control stream and blocks until the parent
    writes "GO". After that a watcher thread waits for the parent to close stdin (or to
    die): it then calls ``on_stop`` if one was given, and exits the process hard if it
    is still alive ``STOP_GRACE_S`` later.
    """

    def __init__(self, control: Any) -> None:
        self._control = control
        self.stopped = threading.Event()

    def wait_for_go(self, on_stop: Callable[[], None] | None = None) -> None:
        self._control.write(READY_LINE + "\n")
        self._control.flush()
        line = sys.stdin.readline()
        if line.strip() != GO_LINE:
            os._exit(0)  # the parent went away before the start
        threading.Thread(
            target=self._watch_stdin, args=(on_stop,), name="bench-stop", daemon=True
        ).start()

    def _watch_stdin(self, on_stop: Callable[[], None] | None) -> None:
        while sys.stdin.readline():
            pass
        self.stopped.set()
        if on_stop is None:
            os._exit(0)
        on_stop()
        time.sleep(STOP_GRACE_S)
        os._exit(0)


class Adapter(abc.ABC):
    """One system under comparison; see the module docstring."""

    name: ClassVar[str]
    """Row label, also the ``--systems`` name."""
    distribution: ClassVar[str]
    """PyPI distribution whose version is reported."""
    worker_config: ClassVar[str]
    """The worker configuration, as documented in the table."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @classmethod
    def describe_worker(cls, options: dict[str, Any]) -> str:
        """The worker configuration for ``Settings.options`` (``worker_config`` by default)."""
        return cls.worker_config

    @classmethod
    def version(cls) -> str:
        return distribution_version(cls.distribution)

    requires: ClassVar[tuple[str, ...]] = ()
    """Modules the system needs; ``check`` imports them."""

    @classmethod
    def check(cls) -> None:
        """Raise ``Unavailable`` when the system cannot run here (before anything starts)."""
        for module in cls.requires:
            import_peer(module)

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect the producer."""

    @abc.abstractmethod
    async def submit(self, value: int) -> Any:
        """Queue ``add_one(value)``; return a handle for ``result``."""

    @abc.abstractmethod
    async def result(self, handle: Any, timeout_s: float) -> Any:
        """The task's return value; ``TimeoutError`` when not available within ``timeout_s``."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release the producer's connections."""

    @classmethod
    @abc.abstractmethod
    def run_worker(cls, settings: Settings, gate: Gate) -> None:
        """In the worker process: build the worker, ``gate.wait_for_go()``, run until stopped."""


class WorkerProcess:
    """A worker child process leading its own process group (so the group can be killed)."""

    def __init__(
        self,
        settings: Settings,
        log_path: Path,
        on_start: Callable[[int], None] | None = None,
    ) -> None:
        """``on_start(pid)`` is called as soon as the process exists."""
        self.settings = settings
        self.log_path = log_path
        self._on_start = on_start
        self._proc: subprocess.Popen[str] | None = None

    def start(self, timeout_s: float) -> None:
        """Spawn the worker and wait until it reports ready (``WorkerFailed`` otherwise)."""
        with self.log_path.open("w") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "bench.peers.worker", self.settings.to_json()],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                cwd=REPO_ROOT,
                env=child_env(),
                text=True,
                start_new_session=True,
            )
        if self._on_start is not None:
            self._on_start(self._proc.pid)
        assert self._proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WorkerFailed(f"not ready within {timeout_s:.0f}s{self._log_tail()}")
            readable, _, _ = select.select([self._proc.stdout], [], [], min(remaining, 0.5))
            if readable:
                line = self._proc.stdout.readline()
                if line.strip() == READY_LINE:
                    return
                if not line:
                    self._proc.wait(timeout=STOP_GRACE_S)
                    raise WorkerFailed(
                        f"exited with {self._proc.returncode} before ready{self._log_tail()}"
                    )

    def go(self) -> None:
        """Let the worker start consuming: the instant a throughput measurement starts."""
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write(GO_LINE + "\n")
        self._proc.stdin.flush()

    def cpu_seconds(self) -> float | None:
        """CPU time of the worker and its reaped children (user + system), from /proc."""
        if self._proc is None:
            return None
        try:
            stat = Path(f"/proc/{self._proc.pid}/stat").read_text()
        except OSError:
            return None
        fields = stat.rsplit(")", 1)[1].split()
        utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
        return (utime + stime + cutime + cstime) / os.sysconf("SC_CLK_TCK")

    def check_alive(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            raise WorkerFailed(f"exited with {self._proc.returncode}{self._log_tail()}")

    def stop(self) -> None:
        """Close stdin (the worker's stop signal), wait ``STOP_GRACE_S``, kill the group."""
        proc = self._proc
        if proc is None:
            return
        self._proc = None
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=STOP_GRACE_S)
        # The group holds the worker and anything it forked (rq's work horses).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=STOP_GRACE_S)
        if proc.stdout is not None:
            proc.stdout.close()

    def _log_tail(self, lines: int = 3) -> str:
        try:
            tail = self.log_path.read_text(errors="replace").strip().splitlines()[-lines:]
        except OSError:
            return ""
        return (": " + " | ".join(line.strip() for line in tail)) if tail else ""

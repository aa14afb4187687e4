"""Every shell block of README.md and docs/*.md runs, and succeeds, against a real server.

Each page gets its own ``aragora serve`` (embedded SQLite store in a temporary
directory, started on first use) and a sandbox directory to run in, holding links to
``examples/``, ``scripts/``, ``bench/``, ``chaos/`` and ``.venv/`` of this checkout, so
that files a block writes stay out of the repository (a block that needs the checkout
itself, e.g. to run ``pytest tests/...``, says ``cwd=repo``). The blocks of a page run
in order against its server and share its state, as a reader following the page would.
Every block runs with:

* ``ARAGORA_URL`` and ``ARAGORA_TOKEN`` (an admin token of workspace ``default``)
  pointing at the page's server, ``ARAGORA_DATA_DIR`` inside the sandbox, every other
  ``ARAGORA_*`` variable of the test run removed;
* the virtual environment's ``bin`` first on ``PATH``, so ``aragora`` and ``python``
  are this checkout's;
* ``bash`` with ``set -eo pipefail``, in a process group of its own that is stopped
  (SIGTERM, then SIGKILL) when the block ends, so an agent a block starts with ``&``
  never outlives it.

How a block may deviate (skip with a reason, run until some output then Ctrl-C, expect
some output, take longer, run at the repository root) is in :mod:`tests.docs.blocks`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from aragora.tenancy.tokens import generate_token
from tests.docs.blocks import Block, extract_blocks
from tests.e2e.conftest import Processes, ServerProc

ROOT = Path(__file__).resolve().parents[2]
DOC_FILES = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))
BLOCKS = [block for path in DOC_FILES for block in extract_blocks(path)]
VENV = Path(sys.prefix)
SANDBOX_LINKS = {
    name: ROOT / name
    for name in ("examples", "scripts", "bench", "chaos")
    if (ROOT / name).is_dir()
} | {".venv": VENV}
"""What a page's sandbox links to: what its commands read, never what they write."""
GROUP_STOP_TIMEOUT_S = 20.0
OUTPUT_TAIL_CHARS = 4000


def _group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def _stop_group(pgid: int) -> None:
    """SIGTERM what is left of the group, SIGKILL it after a grace period."""
    deadline = time.monotonic() + GROUP_STOP_TIMEOUT_S
    sent = False
    while _group_members(pgid):
        if time.monotonic() > deadline:
            for pid in _group_members(pgid):
                os.kill(pid, signal.SIGKILL)
            return
        if not sent:
            os.killpg(pgid, signal.SIGTERM)
            sent = True
        time.sleep(0.05)  # noqa: sleep-ok (processes of another parent: nothing to wait on)


@dataclass
class DocWorld:
    """The servers and sandboxes of the pages, made on first use."""

    root: Path
    processes: Processes
    servers: dict[Path, ServerProc] = field(default_factory=dict)

    def server_for(self, page: Path) -> ServerProc:
        if page not in self.servers:
            self.servers[page] = self.processes.server(token=generate_token()[1])
        return self.servers[page]

    def sandbox_for(self, page: Path) -> Path:
        sandbox = self.root / f"sandbox-{page.stem}"
        if not sandbox.exists():
            sandbox.mkdir()
            for name, target in SANDBOX_LINKS.items():
                (sandbox / name).symlink_to(target, target_is_directory=True)
        return sandbox


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DocWorld]:
    root = tmp_path_factory.mktemp("docs")
    processes = Processes(root, redis_url="redis://unused")
    try:
        yield DocWorld(root, processes)
    finally:
        processes.close()


@dataclass(frozen=True)
class BlockRun:
    returncode: int | None
    output: str
    timed_out: bool


def _wait_for_text(
    proc: subprocess.Popen[bytes], out_path: Path, text: str, deadline: float
) -> bool:
    """True once ``text`` is in the output; False when the process ended or time ran out."""
    while time.monotonic() < deadline:
        if text in out_path.read_text(errors="replace"):
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.1)  # noqa: sleep-ok (output goes to a file: nothing to await)
    return False


def run_block(block: Block, world: DocWorld) -> BlockRun:
    """Run ``block`` as the module docstring says; its exit status and output."""
    server = world.server_for(block.path)
    sandbox = world.sandbox_for(block.path)
    directives = block.directives
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARAGORA_")}
    env.update(
        ARAGORA_URL=server.url,
        ARAGORA_TOKEN=server.token or "",
        ARAGORA_DATA_DIR=str(sandbox / ".aragora"),
        PATH=f"{VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        VIRTUAL_ENV=str(VENV),
    )
    out_path = sandbox / f".block-{block.line}.out"
    cwd = ROOT if directives.cwd_repo else sandbox
    with out_path.open("wb") as out:
        proc = subprocess.Popen(
            ["bash", "-c", "set -eo pipefail\n" + block.code],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + directives.timeout_s
    timed_out = False
    try:
        if directives.interrupt_when is not None and _wait_for_text(
            proc, out_path, directives.interrupt_when, deadline
        ):
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            timed_out = True
    finally:
        _stop_group(proc.pid)
        proc.wait()
    return BlockRun(proc.returncode, out_path.read_text(errors="replace"), timed_out)


RUNNABLE = [b for b in BLOCKS if b.directives.skip_reason is None]
"""Blocks marked ``skip`` are not collected; the test below bounds how many there are."""


@pytest.mark.timeout(300)
@pytest.mark.parametrize("block", RUNNABLE, ids=[b.id for b in RUNNABLE])
def test_doc_block_runs(block: Block, world: DocWorld) -> None:
    run = run_block(block, world)
    where = f"{block.path.relative_to(ROOT)}, block at line {block.line}:\n{block.code}"
    tail = run.output[-OUTPUT_TAIL_CHARS:]
    assert not run.timed_out, f"timed out after {block.directives.timeout_s:g}s: {where}\n{tail}"
    if block.directives.interrupt_when is not None:
        assert block.directives.interrupt_when in run.output, f"never printed: {where}\n{tail}"
    assert run.returncode == 0, f"exit status {run.returncode}: {where}\n{tail}"
    for text in block.directives.expect:
        assert text in run.output, f"{text!r} not in the output: {where}\n{tail}"


def test_the_readme_has_blocks_and_every_skip_has_a_reason() -> None:
    readme = [b for b in BLOCKS if b.path.name == "README.md"]
    assert len(readme) >= 3
    skipped = [b for b in BLOCKS if b.directives.skip_reason is not None]
    assert len(skipped) <= len(BLOCKS) // 4, [b.id for b in skipped]

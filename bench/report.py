"""Results of the peer comparison: Markdown tables and a JSON document.

Figures are medians over the repeats; the range of the repeats follows in brackets.
Ratios are to the best *peer* of the same run: for throughput ours ÷ best peer (above
1 is faster), for latency ours ÷ best peer (below 1 is faster).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.workloads import MixCheck, Throughput, median, percentile


@dataclass(slots=True)
class SystemResult:
    """W1 and W2 of one system over the repeats, or why it has none."""

    name: str
    version: str
    worker: str
    is_peer: bool
    status: str = "ok"
    tasks_per_s: list[float] = field(default_factory=list)
    worker_cpu_us: list[float] = field(default_factory=list)
    producer_cpu_us: list[float] = field(default_factory=list)
    redis_cpu_us: list[float] = field(default_factory=list)
    p50_ms: list[float] = field(default_factory=list)
    p99_ms: list[float] = field(default_factory=list)
    latency_samples_ms: list[list[float]] = field(default_factory=list)

    def add_throughput(self, w1: Throughput) -> None:
        self.tasks_per_s.append(w1.tasks_per_s)
        if w1.worker_cpu_s is not None:
            self.worker_cpu_us.append(w1.worker_cpu_s / w1.tasks * 1e6)
        self.producer_cpu_us.append(w1.producer_cpu_s / w1.tasks * 1e6)
        if w1.redis_cpu_s is not None:
            self.redis_cpu_us.append(w1.redis_cpu_s / w1.tasks * 1e6)

    def add_latency(self, seconds: list[float]) -> None:
        ms = [s * 1000 for s in seconds]
        self.latency_samples_ms.append(ms)
        self.p50_ms.append(percentile(ms, 50))
        self.p99_ms.append(percentile(ms, 99))

    @property
    def ok(self) -> bool:
        return self.status == "ok" and bool(self.tasks_per_s)

    def to_json(self) -> dict[str, Any]:
        return {
            "system": self.name,
            "version": self.version,
            "worker": self.worker,
            "peer": self.is_peer,
            "status": self.status,
            "w1_tasks_per_s": self.tasks_per_s,
            "w1_tasks_per_s_median": _median(self.tasks_per_s),
            "w1_worker_cpu_us_per_task": self.worker_cpu_us,
            "w1_producer_cpu_us_per_task": self.producer_cpu_us,
            "w1_redis_cpu_us_per_task": self.redis_cpu_us,
            "w2_p50_ms": self.p50_ms,
            "w2_p99_ms": self.p99_ms,
            "w2_p50_ms_median": _median(self.p50_ms),
            "w2_p99_ms_median": _median(self.p99_ms),
            "w2_samples_ms": [[round(v, 4) for v in run] for run in self.latency_samples_ms],
        }


@dataclass(slots=True)
class MixResult:
    """W5 on one store over the repeats."""

    store: str
    tasks: int
    status: str = "ok"
    tasks_per_s: list[float] = field(default_factory=list)
    checks: list[MixCheck] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "tasks": self.tasks,
            "status": self.status,
            "tasks_per_s": self.tasks_per_s,
            "tasks_per_s_median": _median(self.tasks_per_s),
            "checks": [
                {
                    "claims": c.claims,
                    "priority_violations": c.priority_violations,
                    "fifo_violations": c.fifo_violations,
                    "routing_violations": c.routing_violations,
                    "claims_per_agent": c.claims_per_agent,
                }
                for c in self.checks
            ],
        }


def _median(values: list[float]) -> float | None:
    return median(values) if values else None


def _cpu(values: list[float]) -> str:
    return f"{median(values):,.0f}" if values else "-"


def _spread(values: list[float], fmt: str) -> str:
    text = format(median(values), fmt)
    if len(values) > 1:
        text += f" ({format(min(values), fmt)}-{format(max(values), fmt)})"
    return text


def peer_table(results: list[SystemResult]) -> str:
    peers = [r for r in results if r.is_peer and r.ok]
    best_rate = max((median(r.tasks_per_s) for r in peers), default=None)
    best_p50 = min((median(r.p50_ms) for r in peers if r.p50_ms), default=None)
    best = [f"W1 {r.name}" for r in peers if best_rate and median(r.tasks_per_s) == best_rate] + [
        f"W2 p50 {r.name}" for r in peers if best_p50 and r.p50_ms and median(r.p50_ms) == best_p50
    ]
    lines = [
        "| system | version | W1 tasks/s | W1 ÷ best peer | W2 p50 ms | W2 p99 ms "
        "| p50 ÷ best peer | CPU µs/task: worker | producer | Redis |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if not r.ok:
            lines.append(f"| {r.name} | {r.version} | {r.status} | | | | | | | |")
            continue
        rate = median(r.tasks_per_s)
        rate_ratio = f"{rate / best_rate:.2f}" if best_rate else "-"
        if r.p50_ms:
            p50, p99 = _spread(r.p50_ms, ".2f"), _spread(r.p99_ms, ".2f")
            p50_ratio = f"{median(r.p50_ms) / best_p50:.2f}" if best_p50 else "-"
        else:
            p50 = p99 = p50_ratio = "-"
        lines.append(
            f"| {r.name} | {r.version} | {_spread(r.tasks_per_s, ',.0f')} | {rate_ratio} "
            f"| {p50} | {p99} | {p50_ratio} | {_cpu(r.worker_cpu_us)} "
            f"| {_cpu(r.producer_cpu_us)} | {_cpu(r.redis_cpu_us)} |"
        )
    if best:
        lines.append(f"\nBest peer: {'; '.join(best)}.")
    return "\n".join(lines)


def worker_table(results: list[SystemResult]) -> str:
    lines = ["| system | worker (one process) |", "|---|---|"]
    lines += [f"| {r.name} | {r.worker} |" for r in results]
    return "\n".join(lines)


def mix_table(mixes: list[MixResult], results: list[SystemResult]) -> str:
    w1 = {r.name: median(r.tasks_per_s) for r in results if r.ok}
    lines = [
        "| store | tasks | agents | tasks/s | ÷ W1 same store | priority order | FIFO per queue "
        "| routing | claims per agent |",
        "|---|---:|---:|---:|---:|---|---|---|---|",
    ]
    for m in mixes:
        if m.status != "ok" or not m.tasks_per_s:
            lines.append(f"| {m.store} | {m.tasks} | | {m.status} | | | | | |")
            continue
        rate = median(m.tasks_per_s)
        base = w1.get(f"aragora-{m.store}")
        ratio = f"{rate / base:.2f}" if base else "-"
        prio = sum(c.priority_violations for c in m.checks)
        fifo = sum(c.fifo_violations for c in m.checks)
        routing = sum(c.routing_violations for c in m.checks)
        per_agent = [v for c in m.checks for v in c.claims_per_agent.values()]
        agents = max(len(c.claims_per_agent) for c in m.checks)
        lines.append(
            f"| {m.store} | {m.tasks} | {agents} | {_spread(m.tasks_per_s, ',.0f')} | {ratio} "
            f"| {_verdict(prio)} | {_verdict(fifo)} | {_verdict(routing)} "
            f"| {min(per_agent)}-{max(per_agent)} |"
        )
    return "\n".join(lines)


def _verdict(violations: int) -> str:
    return "held" if violations == 0 else f"VIOLATED ({violations})"


def write_json(
    path: Path, meta: dict[str, Any], results: list[SystemResult], mixes: list[MixResult]
) -> None:
    document = {
        "meta": meta,
        "w1_w2": [r.to_json() for r in results],
        "w5": [m.to_json() for m in mixes],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")


# -- W3 (HTTP path) and W4 (scale) ------------------------------------------------------
def markdown_table(header: list[str], rows: list[list[str]], right: int = 1) -> str:
    """A Markdown table; every column from index ``right`` on is right-aligned (numbers)."""
    align = ["---" if i < right else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def spread(values: list[float], fmt: str) -> str:
    """Median of ``values`` with the range in brackets when there are several; "-" if none."""
    return _spread(values, fmt) if values else "-"


def ratio(numerator: float | None, denominator: float | None, fmt: str = ".2f") -> str:
    if numerator is None or not denominator:
        return "-"
    return format(numerator / denominator, fmt)


def median_or_none(values: list[float]) -> float | None:
    return _median(values)


@dataclass(slots=True)
class PathResult:
    """W1 and W2 of one path (library or HTTP) on one store over the repeats (W3)."""

    path: str
    store: str
    concurrency: int
    worker: str
    status: str = "ok"
    tasks_per_s: list[float] = field(default_factory=list)
    worker_cpu_us: list[float] = field(default_factory=list)
    server_cpu_us: list[float] = field(default_factory=list)
    producer_cpu_us: list[float] = field(default_factory=list)
    redis_cpu_us: list[float] = field(default_factory=list)
    p50_ms: list[float] = field(default_factory=list)
    p99_ms: list[float] = field(default_factory=list)

    def add_latency(self, seconds: list[float]) -> None:
        ms = [s * 1000 for s in seconds]
        self.p50_ms.append(percentile(ms, 50))
        self.p99_ms.append(percentile(ms, 99))

    @property
    def ok(self) -> bool:
        return self.status == "ok" and bool(self.tasks_per_s)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "store": self.store,
            "concurrency": self.concurrency,
            "worker": self.worker,
            "status": self.status,
            "w1_tasks_per_s": self.tasks_per_s,
            "w1_tasks_per_s_median": _median(self.tasks_per_s),
            "w1_worker_cpu_us_per_task": self.worker_cpu_us,
            "w1_server_cpu_us_per_task": self.server_cpu_us,
            "w1_producer_cpu_us_per_task": self.producer_cpu_us,
            "w1_redis_cpu_us_per_task": self.redis_cpu_us,
            "w2_p50_ms": self.p50_ms,
            "w2_p99_ms": self.p99_ms,
            "w2_p50_ms_median": _median(self.p50_ms),
            "w2_p99_ms_median": _median(self.p99_ms),
        }


def w3_table(results: list[PathResult]) -> str:
    """W1/W2 per path with the HTTP ÷ library ratios of the same store and concurrency."""
    library = {(r.store, r.concurrency): r for r in results if r.path == "library" and r.ok}
    rows = []
    for r in results:
        if not r.ok:
            rows.append([r.store, r.path, str(r.concurrency), r.status] + [""] * 8)
            continue
        base = library.get((r.store, r.concurrency))
        w1_ratio = p50_ratio = "-"
        if base is not None and r.path != "library":
            w1_ratio = ratio(median(r.tasks_per_s), median(base.tasks_per_s))
            p50_ratio = ratio(_median(r.p50_ms), _median(base.p50_ms))
        rows.append(
            [
                r.store,
                r.path,
                str(r.concurrency),
                spread(r.tasks_per_s, ",.0f"),
                w1_ratio,
                spread(r.p50_ms, ".2f"),
                spread(r.p99_ms, ".2f"),
                p50_ratio,
                _cpu(r.worker_cpu_us),
                _cpu(r.server_cpu_us),
                _cpu(r.producer_cpu_us),
                _cpu(r.redis_cpu_us),
            ]
        )
    header = [
        "store",
        "path",
        "worker concurrency",
        "W1 tasks/s",
        "W1 HTTP ÷ library",
        "W2 p50 ms",
        "W2 p99 ms",
        "p50 HTTP ÷ library",
        "CPU µs/task: worker",
        "server",
        "producer",
        "Redis",
    ]
    return markdown_table(header, rows, right=2)


def write_document(path: Path, document: dict[str, Any]) -> None:
    """Write a benchmark's results as indented JSON."""
    path.write_text(json.dumps(document, indent=2) + "\n")

"""How the demo draws a snapshot: a Rich view for a terminal, plain lines otherwise."""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from aragora.demo.monitor import TASK_STATUSES, BreakerWatch, Snapshot
from aragora.demo.traffic import TrafficStats

STATUS_STYLES = {
    "pending": "yellow",
    "delayed": "magenta",
    "running": "cyan",
    "completed": "green",
    "failed": "red",
    "cancelled": "dim",
}
BREAKER_STYLES = {"closed": "green", "half_open": "yellow", "open": "bold red"}


@dataclass(frozen=True)
class Banner:
    """What the user needs to look at the demo from elsewhere."""

    dashboard_url: str
    sign_in_role: str
    sign_in_token: str
    admin_token_file: str
    data_dir: str


def banner_lines(banner: Banner) -> list[str]:
    return [
        f"Dashboard: {banner.dashboard_url}",
        f"Sign in with this {banner.sign_in_role} token: {banner.sign_in_token}",
        f"CLI: export ARAGORA_URL={banner.dashboard_url.rstrip('/')} "
        f"ARAGORA_TOKEN=$(cat {banner.admin_token_file})",
        f"Data directory: {banner.data_dir}",
    ]


def render(
    banner: Banner,
    snapshot: Snapshot | None,
    traffic: TrafficStats,
    breakers: BreakerWatch,
    elapsed_s: float,
) -> RenderableType:
    """The live view: banner, task counts, agents with their breakers, recent tasks."""
    header = Text("\n".join(banner_lines(banner)))
    header.append(f"\nRunning for {elapsed_s:.0f}s. Press Ctrl-C to stop.", style="dim")
    parts: list[RenderableType] = [Panel(header, title="aragora demo", border_style="blue")]
    if snapshot is None:
        parts.append(Text("waiting for the first snapshot ...", style="dim"))
        return Group(*parts)

    counts = Table(title="Tasks", title_justify="left", expand=False)
    counts.add_column("submitted", justify="right")
    for status in TASK_STATUSES:
        counts.add_column(status, justify="right", style=STATUS_STYLES[status])
    counts.add_column("retried attempts", justify="right")
    counts.add_row(
        str(traffic.submitted),
        *(str(snapshot.counts[s]) for s in TASK_STATUSES),
        str(snapshot.retried),
    )

    agents = Table(title="Agents", title_justify="left")
    for column in ("agent", "model", "capabilities", "status", "running", "breaker", "errors"):
        agents.add_column(column)
    for agent in snapshot.agents:
        opened = breakers.opened.get(agent.agent_id, 0)
        agents.add_row(
            agent.agent_id,
            agent.model,
            ", ".join(agent.capabilities),
            agent.status,
            f"{agent.running}/{agent.max_concurrent_tasks}",
            Text(
                f"{agent.breaker_state} (opened {opened}x)",
                style=BREAKER_STYLES.get(agent.breaker_state, ""),
            ),
            f"{agent.error_rate:.0%}",
        )

    recent = Table(title="Recent tasks", title_justify="left")
    for column in ("task", "type", "priority", "status", "attempt", "agent"):
        recent.add_column(column)
    for task in snapshot.recent:
        status = task.status.value
        recent.add_row(
            task.id,
            task.task_type,
            task.priority.value,
            Text(status, style=STATUS_STYLES.get(status, "")),
            str(task.attempt),
            task.agent_id or "-",
        )
    parts += [counts, agents, recent]
    if traffic.refused:
        parts.append(
            Text(f"{traffic.refused} submits refused; last: {traffic.last_error}", style="red")
        )
    return Group(*parts)


def status_line(snapshot: Snapshot, traffic: TrafficStats, elapsed_s: float) -> str:
    """One plain line for logs: counts, then each agent's status and breaker."""
    counts = " ".join(f"{s}={snapshot.counts[s]}" for s in TASK_STATUSES)
    agents = " ".join(f"{a.agent_id}:{a.status}/{a.breaker_state}" for a in snapshot.agents)
    return (
        f"t={elapsed_s:.1f}s submitted={traffic.submitted} {counts} "
        f"retried={snapshot.retried} refused={traffic.refused} | {agents}"
    )


def summary_line(snapshot: Snapshot | None, traffic: TrafficStats, breakers: BreakerWatch) -> str:
    """The last line the demo prints, in ``key=value`` form."""
    counts = snapshot.counts if snapshot is not None else dict.fromkeys(TASK_STATUSES, 0)
    retried = snapshot.retried if snapshot is not None else 0
    fields = {
        "submitted": traffic.submitted,
        "refused": traffic.refused,
        **counts,
        "retried": retried,
        "breaker_opened": sum(breakers.opened.values()),
        "breaker_closed": sum(breakers.closed.values()),
    }
    return "summary: " + " ".join(f"{k}={v}" for k, v in fields.items())

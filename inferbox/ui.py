"""Everything the user sees: tables and the live progress display (rich)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from inferbox.bootstrap.plan import Plan
from inferbox.events import Event


def plan_table(plan: Plan) -> Table:
    table = Table(title=f"install plan ({plan.cluster.provider} cluster {plan.cluster.name!r}, "
                        f"context {plan.cluster.context}, gpu {'on' if plan.cluster.gpu else 'off'})")
    for column in ("wave", "phase", "chart", "version", "namespace", "after", "timeout", "waits for"):
        table.add_column(column, overflow="fold")
    for index, wave in enumerate(plan.waves(), start=1):
        for phase in wave:
            table.add_row(str(index), phase.name, phase.chart.chart, phase.chart_version, phase.namespace,
                          ", ".join(phase.depends_on) or "-", f"{phase.timeout_s}s",
                          "\n".join(c.short() for c in phase.checks) or "-")
    total, path = plan.critical_path()
    table.caption = (f"node image {plan.cluster.node_image}\nphases in one wave run in parallel; "
                     f"critical path {' -> '.join(path)} ~{total:.0f}s "
                     f"(sum of phases ~{sum(p.expected_s for p in plan.phases)}s)")
    return table


def plan_json(plan: Plan, root: Path) -> str:
    return json.dumps(plan.to_dict(root), indent=2)


class ProgressView:
    """A live table of phases on a terminal; one line per event elsewhere (CI logs)."""

    _STYLE = {"waiting": "dim", "running": "yellow", "done": "green", "unchanged": "cyan", "failed": "bold red"}

    def __init__(self, console: Console, plan: Plan) -> None:
        self.console = console
        self.state = {p.name: ["waiting", "", 0.0, None] for p in plan.phases}
        self._lock = threading.Lock()
        self._live: Live | None = None

    def __enter__(self) -> ProgressView:
        if self.console.is_terminal:
            self._live = Live(self._table(), console=self.console, refresh_per_second=4, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.update(self._table())
            self._live.__exit__(None, None, None)

    def __call__(self, event: Event) -> None:
        with self._lock:
            if event.phase in self.state:
                row = self.state[event.phase]
                if event.kind == "phase-started":
                    row[0], row[2] = "running", time.monotonic()
                elif event.kind in ("phase-done", "phase-skipped", "phase-failed"):
                    row[0] = {"phase-done": "done", "phase-skipped": "unchanged", "phase-failed": "failed"}[event.kind]
                    row[3] = event.duration_s
                row[1] = event.message.splitlines()[0] if event.message else row[1]
            if self._live is not None:
                self._live.update(self._table())
            else:
                where = f"[{event.phase}] " if event.phase else ""
                took = f" ({event.duration_s:.1f}s)" if event.duration_s is not None else ""
                self.console.print(f"{event.kind:14} {where}{event.message}{took}", markup=False, highlight=False)

    def _table(self) -> Table:
        table = Table(title="bootstrap")
        for column in ("phase", "state", "time", "step"):
            table.add_column(column, overflow="fold")
        now = time.monotonic()
        for name, (state, step, started, took) in self.state.items():
            seconds = took if took is not None else (now - started if started else 0.0)
            table.add_row(name, f"[{self._STYLE[state]}]{state}[/]", f"{seconds:.1f}s" if seconds else "", step)
        return table

"""Everything the user sees: tables and the live progress display (rich)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from rich.console import Console, ConsoleOptions, RenderResult
from rich.live import Live
from rich.measure import Measurement
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from inferbox.bootstrap.plan import Plan
from inferbox.events import Event

Cell = str | Text


class FitTable:
    """A table that never cuts or splits a cell: a table where the width allows it, else a list
    with one block per row (``column: value`` lines, each printed whole however long), so a
    command or a fix can always be copied, at 80 columns or in a CI log.

    Cells may hold several lines (one item per line). A ``str`` cell, the title, the caption and
    the column names are plain text, never Rich markup: a cell may hold a name, a path, a command
    or a message quoting a file. Style a cell with :class:`~rich.text.Text` (see :func:`styled`),
    kept in both layouts.
    """

    def __init__(self, title: str = "", columns: Sequence[str] = (), *, caption: str | None = None) -> None:
        self.title = title
        self.columns = list(columns)
        self.justify: dict[str, str] = {}
        self.caption = caption
        self.rows: list[list[Cell]] = []

    def add_column(self, name: str, *, justify: str = "left") -> None:
        """As Rich's Table.add_column; ``justify`` applies where the table layout is used."""
        self.columns.append(name)
        self.justify[name] = justify

    def add_row(self, *cells: Cell) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"{self.title}: {len(cells)} cells for {len(self.columns)} columns")
        self.rows.append(list(cells))

    def table(self) -> Table:
        # Text, not str: Rich would read a str title, caption or header as markup.
        table = Table(title=Text(self.title), caption=Text(self.caption) if self.caption is not None else None)
        for column in self.columns:
            table.add_column(Text(column), no_wrap=True,
                             justify=self.justify.get(column, "left"))  # type: ignore[arg-type]
        for row in self.rows:
            # Plain strings stay plain: a command's "[...]" is text, never Rich markup.
            table.add_row(*(cell if isinstance(cell, Text) else Text(cell) for cell in row))
        return table

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement.get(console, options.update(width=1 << 16), self.table())

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        table = self.table()
        natural = Measurement.get(console, options.update(width=1 << 16), table).maximum
        if natural <= options.max_width:
            yield table
            return
        yield from self._list(console)

    def _list(self, console: Console) -> Iterator[Segment]:
        """Raw segments: the console does not wrap them, so no line is ever split or cut."""
        def line(*parts: Cell) -> Iterator[Segment]:
            for part in parts:
                yield from (part if isinstance(part, Text) else Text(part)).render(console)
            yield Segment.line()

        yield from line(Text(self.title, style="bold"))
        for row in self.rows:
            head, *rest = row
            yield from line("- ", head)
            for column, cell in zip(self.columns[1:], rest, strict=True):
                values = (cell.plain if isinstance(cell, Text) else cell).splitlines()
                if not values:
                    continue  # an empty cell: no line
                if isinstance(cell, Text) and len(values) == 1:
                    yield from line(f"    {column}: ", cell)
                    continue
                yield from line(f"    {column}: {values[0]}")
                for more in values[1:]:
                    yield from line(f"    {' ' * len(column)}  {more}")
        if self.caption:
            for caption_line in self.caption.splitlines():
                yield from line(caption_line)


def styled(text: str, style: str) -> Text:
    """``text`` as written (never Rich markup: it may hold a name, a path, a message) in ``style``."""
    return Text(text, style=style)


def labelled(label: str, style: str, message: str) -> Text:
    """``label`` in ``style``, a space, then ``message`` as plain text (never Rich markup)."""
    return Text.assemble((label, style), " ", message)


def warning(message: str) -> Text:
    """``warning: message``, the label in yellow; the message is printed as written."""
    return labelled("warning:", "yellow", message)


def plan_table(plan: Plan) -> FitTable:
    total, path = plan.critical_path()
    table = FitTable(f"install plan ({plan.cluster.provider} cluster {plan.cluster.name!r}, "
                     f"context {plan.cluster.context}, gpu {'on' if plan.cluster.gpu else 'off'})",
                     ("phase", "wave", "chart", "version", "namespace", "after", "timeout", "waits for"),
                     caption=f"node image {plan.cluster.node_image}\nphases in one wave run in parallel; "
                             f"critical path {' -> '.join(path)} ~{total:.0f}s "
                             f"(sum of phases ~{sum(p.expected_s for p in plan.phases)}s)")
    for index, wave in enumerate(plan.waves(), start=1):
        for phase in wave:
            table.add_row(phase.name, str(index), phase.chart.chart, phase.chart_version, phase.namespace,
                          ", ".join(phase.depends_on) or "-", f"{phase.timeout_s}s",
                          "\n".join(c.short() for c in phase.checks) or "-")
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
            # The step is an event's message (a command, its output): Text, never read as markup.
            table.add_row(Text(name), styled(state, self._STYLE[state]), f"{seconds:.1f}s" if seconds else "",
                          Text(step))
        return table

"""Bootstrap events: one stream feeds the JSON event log (for CI) and the progress display."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO


@dataclass(frozen=True)
class Event:
    kind: str  # run-started, phase-started, step, phase-skipped, phase-done, phase-failed, run-done, run-failed
    phase: str | None = None
    message: str = ""
    duration_s: float | None = None
    time: float = field(default_factory=time.time)
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        record = {k: v for k, v in asdict(self).items() if v not in (None, {}, "")}
        return json.dumps(record, sort_keys=True, default=str)


Listener = Callable[[Event], None]


class EventLog:
    """Thread-safe fan-out of events to listeners and, optionally, a JSON-lines file."""

    def __init__(self, path: Path | None = None, listeners: list[Listener] | None = None) -> None:
        self.path = path
        self.listeners = list(listeners or [])
        self.events: list[Event] = []
        self._lock = threading.Lock()
        self._file: TextIO | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("w", encoding="utf-8")

    def emit(self, kind: str, phase: str | None = None, message: str = "", *, duration_s: float | None = None,
             **data: Any) -> Event:
        event = Event(kind=kind, phase=phase, message=message, duration_s=duration_s, data=data)
        with self._lock:
            self.events.append(event)
            if self._file is not None:
                self._file.write(event.to_json() + "\n")
                self._file.flush()
            for listener in self.listeners:
                listener(event)
        return event

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def read_durations(path: Path) -> dict[str, float]:
    """Measured phase durations from an event log (phase-done and phase-skipped events)."""
    durations: dict[str, float] = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if record.get("kind") in ("phase-done", "phase-skipped") and "duration_s" in record:
            durations[record["phase"]] = float(record["duration_s"])
    return durations

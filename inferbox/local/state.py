"""``.inferbox/local/predictors.json``: which local predictors run, on which port, as which process.

Every read-modify-write happens under an exclusive ``flock`` on a lock file beside it, so two
``invoke deploy-model`` runs at once cannot both start the same model; writes are atomic
(temporary file + rename), so a crash never leaves half a file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from inferbox.errors import InferboxError
from inferbox.locks import stderr_log

STATE_VERSION = 1


@dataclass(frozen=True)
class PredictorRecord:
    model: str
    server: str
    pid: int
    pid_start: int | None  # kernel start time of pid (see procs.start_ticks): tells reuse apart
    http_port: int
    host: str
    started_at: str  # ISO 8601, UTC
    log: str
    model_dir: str
    device: str | None = None  # what the server runs on, where inferbox chose it (vllm: "cpu, bfloat16")

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"


class StateFile:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / "predictors.json"
        self._lock_path = directory / "predictors.lock"

    @contextlib.contextmanager
    def locked(self) -> Iterator[dict[str, PredictorRecord]]:
        """The records, under the lock; what the block leaves in the dict is written back."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self._lock_path, "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                # Deploys hold it while they install and start a model (minutes for the LLM): say why we wait.
                stderr_log(f"waiting for {self._lock_path}: another inferbox command is deploying or stopping a "
                           "local predictor")
                fcntl.flock(lock, fcntl.LOCK_EX)
            records = self.read()
            before = dict(records)
            yield records
            if records != before:
                self._write(records)

    def read(self) -> dict[str, PredictorRecord]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise InferboxError(f"{self.path}: not valid JSON ({exc}); stop stray predictors by hand and delete "
                                "it") from exc
        try:
            return {name: PredictorRecord(**fields) for name, fields in (data.get("predictors") or {}).items()}
        except TypeError as exc:
            raise InferboxError(f"{self.path}: unexpected content ({exc})") from exc

    def _write(self, records: dict[str, PredictorRecord]) -> None:
        data: dict[str, Any] = {"version": STATE_VERSION,
                                "predictors": {name: asdict(rec) for name, rec in sorted(records.items())}}
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, self.path)

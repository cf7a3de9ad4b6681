"""Local predictors: deploy, predict, stop - KServe's model server as a local process, or for an LLM
vLLM's own OpenAI-compatible server (the engine of KServe's Hugging Face runtime).

``deploy`` is idempotent: a model whose recorded process still runs is left alone; a record
whose process is gone (or whose pid now belongs to another process) is cleaned and the model
started again. Start-up is judged by the server's own readiness endpoint, against a deadline, and
a failed start is stopped and explained with the end of its log.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from inferbox.config import Settings
from inferbox.errors import InferboxError
from inferbox.hints import invoke
from inferbox.local import client, llm, procs
from inferbox.local.artifacts import is_built
from inferbox.local.env import PredictorEnv, kserve_requirement
from inferbox.local.state import PredictorRecord, StateFile
from inferbox.models.catalog import Catalog, ModelSpec
from inferbox.runner import Command, Runner
from inferbox.tools.nvidia import NvidiaSmi

DEFAULT_STARTUP_TIMEOUT_S = 120.0
# vLLM compiles the model with torch.compile on its first start (about 2 minutes on 2 CPU cores; cached
# under .inferbox/local/cache afterwards).
LLM_STARTUP_TIMEOUT_S = 600.0
# How often to ask the readiness endpoint while a server starts: KServe has no way to push it.
_READY_POLL_S = 0.1
_DEVICE_LINE = re.compile(r"loaded on device=(\w+)")


class LocalStartError(InferboxError):
    """A local predictor did not become ready; the message ends with its log tail."""


@dataclass(frozen=True)
class LocalPaths:
    directory: Path  # .inferbox/local: state, logs, built models
    venv: Path
    requirements: Path
    root: Path  # the project root: the predictor imports inferbox.local.server from here

    @classmethod
    def for_settings(cls, settings: Settings, *, venv: Path | None = None) -> LocalPaths:
        directory = local_dir(settings.state_dir)
        return cls(directory=directory, venv=venv or directory / "venv",
                   requirements=settings.root / "models" / "local-predictor", root=settings.root)

    def log(self, model: str) -> Path:
        return self.directory / f"{model}.log"

    def model_dir(self, model: str) -> Path:
        return self.directory / "models" / model

    @property
    def cache(self) -> Path:
        """vLLM's compile cache (VLLM_CACHE_ROOT): kept across starts and deploys."""
        return self.directory / "cache" / "vllm"


@dataclass(frozen=True)
class DeployOutcome:
    record: PredictorRecord
    started: bool
    notes: list[str] = field(default_factory=list)
    device: str | None = None

    def message(self) -> str:
        rec = self.record
        where = f"{rec.base_url} (pid {rec.pid}{', ' + self.device if self.device else ''})"
        head = f"{rec.model}: started at {where}" if self.started else f"{rec.model}: already running at {where}"
        return "\n".join([*self.notes, head])


@dataclass(frozen=True)
class Prediction:
    model: str
    v1: client.Answer
    v2: client.Answer

    @property
    def v1_predictions(self) -> list[Any]:
        return list(self.v1.body["predictions"])

    @property
    def v2_outputs(self) -> list[Any]:
        return client.v2_outputs(self.v2.body)


class LocalTarget:
    """Local predictors of catalog models, tracked in ``<directory>/predictors.json``."""

    def __init__(self, paths: LocalPaths, catalog: Catalog, runner: Runner, *, kserve_version: str,
                 startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S) -> None:
        self.paths = paths
        self.catalog = catalog
        self.runner = runner
        self.env = PredictorEnv(paths.venv, paths.requirements, kserve_requirement(kserve_version))
        self.state = StateFile(paths.directory)
        self.startup_timeout_s = startup_timeout_s

    # -- deploy -------------------------------------------------------------------------------
    def deploy(self, name: str) -> DeployOutcome:
        model = self._local_model(name)
        assert model.local.server is not None  # the catalog guarantees it for supported models
        notes: list[str] = []
        with self.state.locked() as records:
            current = records.get(name)
            if current is not None:
                if procs.is_running(current.pid, current.pid_start):
                    # One predictor per model: the running one is the answer ("already running at").
                    return DeployOutcome(current, started=False, device=current.device or self.device(name))
                notes.append(f"{name}: pid {current.pid} is gone (stale record removed)")
                del records[name]
            device = self._device(model)
            installed = self.env.ensure(model.local.server, self.runner, gpu=device is not None and device.gpu)
            if installed:
                notes.append(f"installed the predictor environment: {', '.join(installed)}")
            self._build(model)
            with procs.terminations_raise():
                record = self._start(model, device)
                try:
                    self._wait_ready(record)
                    if record.server == "vllm":
                        self._warm_up(record)
                except BaseException:
                    # Never leave a half-started server behind, even on Ctrl-C or a SIGTERM.
                    procs.stop(record.pid, record.pid_start, grace_s=5.0)
                    raise
            records[name] = record
        return DeployOutcome(record, started=True, notes=notes, device=record.device or self.device(name))

    def _local_model(self, name: str) -> ModelSpec:
        model = self.catalog.get(name)
        if not model.local.supported:
            runnable = ", ".join(m.name for m in self.catalog.local_models())
            raise InferboxError(f"model {name!r} cannot run locally: {model.local.reason} (local models: {runnable})")
        return model

    def _predictor_env(self) -> dict[str, str]:
        # HF_HUB_OFFLINE: the local target never downloads weights at run time.
        return {**os.environ, "PYTHONPATH": str(self.paths.root), "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}

    def _build(self, model: ModelSpec) -> None:
        assert model.local.server is not None
        out = self.paths.model_dir(model.name)
        if is_built(model.local.server, out, model.local.weights):
            return
        weights = [model.local.weights] if model.local.weights else []
        self.runner.run(Command((str(self.env.python), "-m", "inferbox.local.artifacts", model.local.server, str(out),
                                 *weights),
                                env={"PYTHONPATH": str(self.paths.root), "HF_HUB_OFFLINE": "1"}, timeout=600))

    def _device(self, model: ModelSpec) -> llm.Device | None:
        """For the LLM server: the GPU when nvidia-smi sees one, else the CPU, with the dtype to use."""
        if model.local.server != "vllm":
            return None
        return llm.choose_device(model, NvidiaSmi(self.runner).query())

    def _start(self, model: ModelSpec, device: llm.Device | None) -> PredictorRecord:
        assert model.local.server is not None
        port = client.free_port()
        env = self._predictor_env()
        if device is not None:
            argv = llm.server_argv(self.env.python, model, self.paths.model_dir(model.name), port, device)
            env |= llm.server_env(self.paths.cache, device)
        else:
            argv = [str(self.env.python), "-m", "inferbox.local.server", "--model_name", model.name,
                    "--server", model.local.server, "--model-dir", str(self.paths.model_dir(model.name)),
                    "--http_port", str(port)]
        log = self.paths.log(model.name)
        log.parent.mkdir(parents=True, exist_ok=True)
        started_at = datetime.now(UTC).isoformat(timespec="seconds")
        log.write_text(f"# inferbox: {model.name} starting at {started_at}: {' '.join(argv)}\n")
        pid = procs.spawn_detached(argv, log, env)
        return PredictorRecord(model=model.name, server=model.local.server, pid=pid, pid_start=procs.start_ticks(pid),
                               http_port=port, host=client.LOOPBACK, started_at=started_at, log=str(log),
                               model_dir=str(self.paths.model_dir(model.name)),
                               device=device.describe() if device else None)

    def _wait_ready(self, record: PredictorRecord) -> None:
        timeout_s = max(self.startup_timeout_s, LLM_STARTUP_TIMEOUT_S) if record.server == "vllm" else \
            self.startup_timeout_s
        deadline = time.monotonic() + timeout_s
        ready = llm.is_ready if record.server == "vllm" else client.is_ready
        while True:
            if ready(record.http_port, record.model):
                return
            if not procs.is_running(record.pid, record.pid_start):
                raise self._start_error(record, "the server exited during start-up")
            if time.monotonic() >= deadline:
                raise self._start_error(record, f"not ready after {timeout_s:.0f}s")
            time.sleep(_READY_POLL_S)

    def _warm_up(self, record: PredictorRecord) -> None:
        try:
            llm.warm_up(record.base_url, record.model)
        except InferboxError as exc:
            raise self._start_error(record, f"ready, but its warm-up chat failed: {exc}") from None

    def _start_error(self, record: PredictorRecord, reason: str) -> LocalStartError:
        tail = procs.log_tail(Path(record.log))
        if "address already in use" in tail.lower():
            reason += f" (port {record.http_port} was taken meanwhile: deploy again)"
        return LocalStartError(f"local predictor {record.model}: {reason}\n--- last lines of {record.log} ---\n{tail}")

    def device(self, name: str) -> str | None:
        """The device a neural model runs on: as inferbox chose it (the LLM), or as the model reported
        loading on it (its log); None for others."""
        record = self.state.read().get(name)
        if record is not None and record.device:
            return record.device
        found = _DEVICE_LINE.findall(procs.log_tail(self.paths.log(name), lines=400))
        return found[-1] if found else None

    # -- use ----------------------------------------------------------------------------------
    def running(self, name: str) -> PredictorRecord:
        record = self.state.read().get(name)
        if record is None or not procs.is_running(record.pid, record.pid_start):
            raise InferboxError(f"no local predictor runs for {name!r}: "
                                f"{invoke(f'deploy-model {name} --target local')}")
        return record

    def chat(self, name: str, prompt: str, *, max_tokens: int = 128,
             on_text: Callable[[str], None] | None = None) -> llm.StreamedChat:
        """Stream one chat completion from the model's local LLM server (see :func:`llm.stream_chat`)."""
        record = self.running(name)
        if record.server != "vllm":
            raise InferboxError(f"{name} is not an LLM (it serves {', '.join(self.catalog.get(name).protocols)}): "
                                f"{invoke(f'predict {name}')} sends it instances")
        return llm.stream_chat(record.base_url, name, prompt, max_tokens=max_tokens, on_text=on_text)

    def predict(self, name: str, instances: list[Any] | None = None, *, timeout_s: float = 30.0) -> Prediction:
        """Send the same instances over V1 and V2; raise with the server's answer on an error."""
        model = self.catalog.get(name)
        if instances is None:
            if model.example is None:
                raise InferboxError(f"model {name!r} has no example input in the catalog: pass --data")
            instances = list(model.example.instances)
        record = self.running(name)
        answers = {}
        for protocol, path, body in (("v1", client.v1_path(name), client.v1_request(instances)),
                                     ("v2", client.v2_path(name), client.v2_request(instances))):
            try:
                answer = client.request(record.http_port, "POST", path, body, timeout_s=timeout_s)
            except OSError as exc:
                raise client.PredictError(f"{protocol} {record.base_url}{path}: {exc}") from exc
            if not answer.ok:
                raise client.PredictError(f"{protocol} {record.base_url}{path}: HTTP {answer.status}: {answer.body}")
            answers[protocol] = answer
        return Prediction(name, v1=answers["v1"], v2=answers["v2"])

    def status(self) -> list[tuple[PredictorRecord, bool]]:
        return [(rec, procs.is_running(rec.pid, rec.pid_start)) for rec in self.state.read().values()]

    # -- down ---------------------------------------------------------------------------------
    def down(self, name: str | None = None) -> list[str]:
        """Stop one model's predictor, or all; stale records are removed. Safe to repeat."""
        return stop_predictors(self.paths.directory, name)


def stop_predictors(directory: Path, name: str | None = None) -> list[str]:
    """Stop one model's predictor, or all, from the state in ``directory`` alone; stale records
    are removed. Safe to repeat.

    Reads no configuration (catalog, versions.toml): a predictor must be stoppable whatever
    became of the files it was started from. Each record carries its pid and start time."""
    done: list[str] = []
    with StateFile(directory).locked() as records:
        names = [name] if name is not None else sorted(records)
        for model in names:
            record = records.pop(model, None)
            if record is None:
                done.append(f"{model}: not running")
            elif procs.stop(record.pid, record.pid_start):
                done.append(f"{model}: stopped pid {record.pid}")
            else:
                done.append(f"{model}: pid {record.pid} was already gone (stale record removed)")
    return done or ["no local predictors"]


def local_dir(state_dir: Path) -> Path:
    """Where local predictors keep their state, logs and built models (.inferbox/local)."""
    return state_dir / "local"


def local_target(settings: Settings, catalog: Catalog, runner: Runner, **kwargs: Any) -> LocalTarget:
    return LocalTarget(LocalPaths.for_settings(settings), catalog, runner,
                       kserve_version=settings.versions.charts.kserve.version, **kwargs)

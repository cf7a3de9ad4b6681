"""The install plan as data: phases with dependencies, charts, values and health checks.

A plan can be printed (table or JSON), tested and executed. Execution order comes from the
dependency graph alone; ``waves()`` groups phases that may run in parallel.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from inferbox.errors import ConfigError, PlanError
from inferbox.tools.helm import ChartSource


class CheckKind(StrEnum):
    CRD_ESTABLISHED = "crd-established"
    DEPLOYMENT_AVAILABLE = "deployment-available"
    DAEMONSET_READY = "daemonset-ready"
    STATEFULSET_READY = "statefulset-ready"
    JOB_COMPLETE = "job-complete"
    WEBHOOK_READY = "webhook-ready"
    CONDITION_READY = "condition-ready"
    RESOURCE_EXISTS = "resource-exists"
    # Every GPU node (label nvidia.com/gpu.present=true) advertises allocatable ``name`` > 0;
    # ``namespace`` and ``selector`` find the device plugin pod on a node that does not.
    GPU_ALLOCATABLE = "gpu-allocatable"


@dataclass(frozen=True)
class HealthCheck:
    """One condition a phase waits for. ``probe`` is the object a webhook must answer a
    server-side dry-run create for; ``api_version``/``kind`` name a custom resource."""

    kind: CheckKind
    name: str
    namespace: str | None = None
    probe: Mapping[str, Any] | None = None
    api_version: str | None = None
    resource_kind: str | None = None
    selector: str | None = None
    # CONDITION_READY: the status condition that must be True ("Programmed" for a Gateway).
    condition: str = "Ready"
    # Wait only once the phase's own manifests are applied (a workload that needs one of them).
    after_manifests: bool = False

    def short(self) -> str:
        """A compact label for tables: "deploy cert-manager", "crd issuers.cert-manager.io"."""
        label = {CheckKind.CRD_ESTABLISHED: "crd", CheckKind.DEPLOYMENT_AVAILABLE: "deploy",
                 CheckKind.DAEMONSET_READY: "ds", CheckKind.STATEFULSET_READY: "sts", CheckKind.JOB_COMPLETE: "job",
                 CheckKind.WEBHOOK_READY: "webhook", CheckKind.CONDITION_READY: "ready",
                 CheckKind.RESOURCE_EXISTS: "exists", CheckKind.GPU_ALLOCATABLE: "gpus"}[self.kind]
        if self.kind is CheckKind.CONDITION_READY and self.condition != "Ready":
            label = self.condition.lower()
        return f"{label} {self.name}"

    def describe(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return {
            CheckKind.CRD_ESTABLISHED: f"CRD {self.name} Established",
            CheckKind.DEPLOYMENT_AVAILABLE: f"deployment {where} Available",
            CheckKind.DAEMONSET_READY: f"daemonset {where} ready on every node",
            CheckKind.STATEFULSET_READY: f"statefulset {where} ready",
            CheckKind.JOB_COMPLETE: f"job {where} Complete",
            CheckKind.WEBHOOK_READY: f"webhook service {where} has ready endpoints and answers a dry-run "
                                     f"{(self.probe or {}).get('kind', 'create')}",
            CheckKind.CONDITION_READY: f"{(self.resource_kind or 'resource').lower()} {where} {self.condition}",
            CheckKind.RESOURCE_EXISTS: f"{(self.resource_kind or 'resource').lower()} {where} exists",
            CheckKind.GPU_ALLOCATABLE: f"every GPU node (nvidia.com/gpu.present=true) to advertise allocatable "
                                       f"{self.name} > 0",
        }[self.kind]


class PreStep(StrEnum):
    # A KServe install interrupted before its controller came up leaves webhook configurations
    # pointing at a service with no endpoints; every later apply of its kinds then fails.
    CLEANUP_ORPHANED_WEBHOOKS = "cleanup-orphaned-webhooks"


@dataclass(frozen=True)
class Phase:
    name: str
    release: str
    namespace: str
    chart_key: str
    chart: ChartSource
    chart_name: str  # as helm reports it in "<name>-<version>"
    chart_version: str
    values_file: Path | None
    depends_on: tuple[str, ...] = ()
    checks: tuple[HealthCheck, ...] = ()
    set_values: Mapping[str, str] = field(default_factory=dict)
    timeout_s: int = 300
    expected_s: int = 60
    pre_steps: tuple[PreStep, ...] = ()
    webhook_service: str | None = None  # the service the pre-step's orphan check looks at
    manifests: tuple[str, ...] = ()  # templates under manifests/ applied after the chart

    def values(self) -> dict[str, Any]:
        """The merged user-supplied values: the values file, then ``--set`` overrides."""
        merged: dict[str, Any] = {}
        if self.values_file is not None:
            try:
                loaded = yaml.safe_load(self.values_file.read_text()) or {}
            except (OSError, yaml.YAMLError) as exc:
                raise ConfigError(str(self.values_file), [("<file>", str(exc))]) from exc
            if not isinstance(loaded, dict):
                raise ConfigError(str(self.values_file), [("<top level>", "must be a mapping")])
            merged = loaded
        for dotted, value in self.set_values.items():
            _set_dotted(merged, dotted, yaml.safe_load(value))
        return merged

    def values_digest(self) -> str:
        return values_digest(self.values())


def values_digest(values: Mapping[str, Any]) -> str:
    canonical = json.dumps(values, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _set_dotted(target: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = target
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


@dataclass(frozen=True)
class ClusterStep:
    provider: str
    name: str
    context: str
    node_image: str
    gpu: bool


@dataclass(frozen=True)
class Plan:
    cluster: ClusterStep
    phases: tuple[Phase, ...]

    def __post_init__(self) -> None:
        names = [p.name for p in self.phases]
        duplicates = {n for n in names if names.count(n) > 1}
        if duplicates:
            raise PlanError(f"duplicate phase names: {sorted(duplicates)}")
        for phase in self.phases:
            missing = [d for d in phase.depends_on if d not in names]
            if missing:
                raise PlanError(f"phase {phase.name!r} depends on unknown phase(s) {missing}")
        self.waves()  # raises on a cycle

    def phase(self, name: str) -> Phase:
        for phase in self.phases:
            if phase.name == name:
                return phase
        raise PlanError(f"no phase named {name!r}")

    def waves(self) -> list[list[Phase]]:
        """Phases grouped by dependency depth: each wave needs only earlier waves."""
        done: set[str] = set()
        remaining = list(self.phases)
        waves: list[list[Phase]] = []
        while remaining:
            ready = [p for p in remaining if set(p.depends_on) <= done]
            if not ready:
                cycle = sorted(p.name for p in remaining)
                raise PlanError(f"dependency cycle among phases {cycle}")
            waves.append(ready)
            done.update(p.name for p in ready)
            remaining = [p for p in remaining if p.name not in done]
        return waves

    def order(self) -> list[Phase]:
        return [p for wave in self.waves() for p in wave]

    def critical_path(self, durations: Mapping[str, float] | None = None) -> tuple[float, list[str]]:
        """Longest chain of dependent phases, by expected (or given) duration."""
        cost = {p.name: float((durations or {}).get(p.name, p.expected_s)) for p in self.phases}
        finish: dict[str, tuple[float, list[str]]] = {}
        for phase in self.order():
            before = max((finish[d] for d in phase.depends_on), default=(0.0, []), key=lambda f: f[0])
            finish[phase.name] = (before[0] + cost[phase.name], [*before[1], phase.name])
        return max(finish.values(), default=(0.0, []), key=lambda f: f[0])

    def to_dict(self, root: Path | None = None) -> dict[str, Any]:
        def rel(path: Path | None) -> str | None:
            if path is None:
                return None
            return str(path.relative_to(root)) if root and path.is_relative_to(root) else str(path)

        phases = []
        for p in self.phases:
            phases.append({
                "name": p.name, "release": p.release, "namespace": p.namespace,
                "chart": asdict(p.chart), "values_file": rel(p.values_file), "set": dict(p.set_values),
                "depends_on": list(p.depends_on), "timeout_s": p.timeout_s, "expected_s": p.expected_s,
                "pre_steps": [s.value for s in p.pre_steps], "manifests": list(p.manifests),
                "checks": [{"kind": c.kind.value, "target": c.describe()} for c in p.checks],
            })
        total, path = self.critical_path()
        return {
            "cluster": asdict(self.cluster),
            "phases": phases,
            "waves": [[p.name for p in wave] for wave in self.waves()],
            "critical_path": {"phases": path, "expected_s": total},
            "sum_expected_s": sum(p.expected_s for p in self.phases),
        }

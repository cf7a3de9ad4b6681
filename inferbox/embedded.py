"""The embedded local target: a real control plane as local processes, no Docker needed.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler built from the pinned sources
(inferbox.testenv), with kwok simulating two CPU and two GPU nodes. Pods are scheduled, admitted
and reported Running/Ready by kwok, but no container runs: it proves what the API server,
admission, RBAC, quotas and the scheduler make of the platform's objects, not their behaviour.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from inferbox.config import Settings
from inferbox.errors import ClusterError
from inferbox.k8s import Kube
from inferbox.testenv import BuildError, ControlPlane, ControlPlaneError, TestenvPins, ensure_binaries
from inferbox.testenv.procs import wait_for_stop_signal
from inferbox.ui import FitTable, labelled

GPU = "nvidia.com/gpu"


def shared_crds(settings: Settings) -> Path | None:
    """The upstream CRDs beside the checkout (``../shared/crds``), when present."""
    folder = settings.root.parent / "shared" / "crds"
    return folder if folder.is_dir() else None


def nodes_table(kube: Kube) -> FitTable:
    table = FitTable("embedded cluster nodes (simulated by kwok)")
    for column in ("node", "cpu", "memory", GPU, "taints"):
        table.add_column(column)
    for node in kube.list("v1", "Node"):
        capacity = (node.get("status") or {}).get("capacity") or {}
        spec_taints = (node.get("spec") or {}).get("taints") or []
        taints = [f"{t['key']}={t.get('value', '')}:{t['effect']}" for t in spec_taints]
        table.add_row(node["metadata"]["name"], capacity.get("cpu", ""), capacity.get("memory", ""),
                      capacity.get(GPU, "-"), ", ".join(taints) or "-")
    return table


def run(settings: Settings, console: Console, *, build_only: bool = False, once: bool = False,
        crds: list[Path] | None = None) -> None:
    """Build (once, cached) and start the embedded control plane; stay up until Ctrl-C unless ``once``."""
    pins = TestenvPins.from_mapping(settings.versions.testenv.model_dump())
    try:
        def log(line: str) -> None:
            console.print(labelled("testenv:", "dim", line), soft_wrap=True)

        binaries = ensure_binaries(pins, log=log)
        if build_only:
            console.print(f"embedded control plane binaries ready in {binaries.bin_dir}", markup=False)
            return
        with ControlPlane(binaries, log=log) as cp:
            folders = crds if crds is not None else [f for f in [shared_crds(settings)] if f]
            for folder in folders:
                done = cp.install_crds(folder)
                console.print(f"installed {len(done.crds)} CRDs from {folder}", markup=False)
            kube = Kube.connect(kubeconfig=cp.kubeconfig)
            console.print(f"Kubernetes {kube.server_version()} up in {cp.started_in or 0:.1f}s", markup=False)
            console.print(nodes_table(kube))
            console.print(f"export KUBECONFIG={cp.kubeconfig} PATH={binaries.bin_dir}:$PATH", soft_wrap=True,
                          markup=False, highlight=False)
            if not once:
                console.print("kubectl and helm work against it; Ctrl-C stops it and removes its state.")
                wait_for_stop_signal()
    except (BuildError, ControlPlaneError) as exc:
        raise ClusterError(f"embedded control plane: {exc}") from exc

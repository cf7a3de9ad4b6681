"""invoke gpu-check: a pod that requests one GPU, runs nvidia-smi, and reports the GPU it got.

The end-to-end proof that a predictor asking for ``nvidia.com/gpu: 1`` gets a usable GPU: the
device plugin advertised one, the scheduler placed the pod, the NVIDIA runtime in the node
mounted the device and the driver's nvidia-smi. The bootstrap runs it last when GPUs are on.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from typing import Any

from inferbox.bootstrap.phases import GPU_NAMESPACE
from inferbox.config import Settings
from inferbox.errors import ClusterError, InferboxError, KubeError, WaitTimeout
from inferbox.k8s import Kube, ObjectRef
from inferbox.render import Renderer
from inferbox.wait import Deadline, Waiter, describe_pod

POD_NAME = "inferbox-gpu-check"
_DONE = ("Succeeded", "Failed")


@dataclass(frozen=True)
class Gpu:
    name: str
    memory: str  # as nvidia-smi prints it, e.g. "143771 MiB"


@dataclass(frozen=True)
class GpuCheckResult:
    node: str
    gpus: list[Gpu]


def pod_manifest(settings: Settings, renderer: Renderer) -> dict[str, Any]:
    (pod,) = renderer.objects("gpu/gpu-check.yaml.j2", name=POD_NAME, namespace=GPU_NAMESPACE,
                              image=settings.versions.gpu.check_image)
    return pod


def parse_nvidia_smi(lines: list[str]) -> list[Gpu]:
    """``nvidia-smi --query-gpu=name,memory.total --format=csv,noheader`` output -> GPUs."""
    return [Gpu(row[0].strip(), row[1].strip()) for row in csv.reader(lines) if len(row) == 2]


def start(kube: Kube, pod: dict[str, Any], *, deadline: Deadline | None = None) -> None:
    """Create the pod afresh: a finished pod cannot run again, so the last one goes first."""
    ref = ObjectRef("v1", "Pod", POD_NAME, GPU_NAMESPACE)
    if kube.delete(ref):
        Waiter(kube).gone(ref, deadline or Deadline(60))
    kube.create(pod)


def scheduled_node(kube: Kube, timeout_s: float) -> str:
    """The node the scheduler put the pod on; WaitTimeout (with the pod's events) when none takes it."""
    ref = ObjectRef("v1", "Pod", POD_NAME, GPU_NAMESPACE)
    pod = Waiter(kube).until(ref, lambda p: bool((p.get("spec") or {}).get("nodeName")), Deadline(timeout_s),
                             what="the gpu-check pod to be scheduled onto a GPU node", pods=False)
    return str(pod["spec"]["nodeName"])


def run(kube: Kube, settings: Settings, renderer: Renderer, *, timeout_s: float = 300) -> GpuCheckResult:
    """Run the pod to completion and read what nvidia-smi printed; InferboxError naming the pod's
    state, events and output when it did not succeed."""
    ref = ObjectRef("v1", "Pod", POD_NAME, GPU_NAMESPACE)
    deadline = Deadline(timeout_s)  # one deadline for the whole check, replacing the last pod included
    try:
        start(kube, pod_manifest(settings, renderer), deadline=deadline)
        node = scheduled_node(kube, deadline.remaining())
        pod = Waiter(kube).until(ref, lambda p: (p.get("status") or {}).get("phase") in _DONE, deadline,
                                 what="the gpu-check pod to finish")
    except WaitTimeout as exc:
        raise InferboxError(f"gpu-check: {exc}") from exc
    try:
        output = kube.pod_log(GPU_NAMESPACE, POD_NAME, tail_lines=64)
    except (KubeError, ClusterError) as exc:
        output = [f"(no output: {exc})"]
    gpus = parse_nvidia_smi(output)
    if pod["status"]["phase"] != "Succeeded" or not gpus:
        details = "\n  ".join([*describe_pod(pod), *output])
        raise InferboxError(f"gpu-check: the pod on node {node} ended {pod['status']['phase']} without a GPU "
                            f"from nvidia-smi:\n  {details}\n  the node's NVIDIA runtime is the usual cause: "
                            "see `invoke doctor` and README, \"GPUs\"")
    return GpuCheckResult(node, gpus)

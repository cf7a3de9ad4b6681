"""Fake nodes for the test control plane, played by kwok.

The GPU nodes look to the scheduler the way nodes under the NVIDIA GPU
operator do: an ``nvidia.com/gpu`` extended resource, the labels GPU feature
discovery sets, and the ``nvidia.com/gpu=present:NoSchedule`` taint that
keeps non-GPU workloads off them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DEFAULT_NODES",
    "GPU_RESOURCE",
    "GPU_TAINT",
    "KWOK_NODE_ANNOTATION",
    "KWOK_NODE_SELECTOR",
    "FakeNode",
    "node_manifest",
]

# kwok manages only nodes carrying this annotation (--manage-nodes-with-annotation-selector).
KWOK_NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
KWOK_NODE_SELECTOR = "=".join(KWOK_NODE_ANNOTATION)
GPU_RESOURCE = "nvidia.com/gpu"
GPU_TAINT = {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}
GPU_PRODUCT = "NVIDIA-H100-80GB-HBM3"


@dataclass(frozen=True)
class FakeNode:
    """One kwok-managed node; ``gpus`` > 0 makes it a GPU node."""

    name: str
    cpu: str = "8"
    memory: str = "32Gi"
    pods: str = "110"
    gpus: int = 0
    gpu_product: str = GPU_PRODUCT
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def is_gpu(self) -> bool:
        return self.gpus > 0


DEFAULT_NODES: tuple[FakeNode, ...] = (
    FakeNode("kwok-cpu-0"),
    FakeNode("kwok-cpu-1"),
    FakeNode("kwok-gpu-0", cpu="16", memory="128Gi", gpus=2),
    FakeNode("kwok-gpu-1", cpu="16", memory="128Gi", gpus=2),
)


def _gpu_labels(node: FakeNode) -> dict[str, str]:
    # The subset of GPU feature discovery labels that charts select on.
    return {
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.product": node.gpu_product,
        "nvidia.com/gpu.count": str(node.gpus),
        "nvidia.com/gpu.memory": "81559",
        "nvidia.com/gpu.family": "hopper",
        "nvidia.com/gpu.deploy.device-plugin": "true",
    }


def node_manifest(node: FakeNode) -> dict[str, Any]:
    """The Node object to create; kwok fills in conditions, addresses, nodeInfo."""
    labels = {
        "kubernetes.io/hostname": node.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "type": "kwok",
        **(_gpu_labels(node) if node.is_gpu else {}),
        **node.labels,
    }
    resources = {"cpu": node.cpu, "memory": node.memory, "pods": node.pods}
    if node.is_gpu:
        resources[GPU_RESOURCE] = str(node.gpus)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node.name,
            "labels": labels,
            "annotations": {KWOK_NODE_ANNOTATION[0]: KWOK_NODE_ANNOTATION[1],
                            "node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {"taints": [dict(GPU_TAINT)] if node.is_gpu else []},
        # Nodes may carry status on create; kwok keeps what is set here.
        "status": {"capacity": resources, "allocatable": dict(resources)},
    }

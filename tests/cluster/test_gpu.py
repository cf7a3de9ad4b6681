"""The GPU readiness wait and gpu-check against a real API server and scheduler, with kwok's
GPU nodes (2 GPUs each) and one GPU node whose device plugin found nothing (allocatable 0)."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client

from inferbox import PROJECT_ROOT
from inferbox.bootstrap import gpucheck
from inferbox.bootstrap.phases import GPU_NAMESPACE, build_plan
from inferbox.bootstrap.plan import CheckKind, HealthCheck
from inferbox.config import Settings
from inferbox.errors import WaitTimeout
from inferbox.k8s import Kube, ObjectRef
from inferbox.render import Renderer
from inferbox.testenv import GPU_RESOURCE, ControlPlane
from inferbox.testenv.nodes import FakeNode, node_manifest
from inferbox.testenv.waiting import wait_for
from inferbox.wait import Deadline, Waiter

pytestmark = [pytest.mark.cluster, pytest.mark.embedded]


@pytest.fixture(scope="module")
def kube(control_plane: ControlPlane) -> Kube:
    return Kube.connect(kubeconfig=control_plane.kubeconfig)


@pytest.fixture
def gpu_check(make_settings: Callable[..., Settings]) -> HealthCheck:
    """The device plugin phase's GPU wait, exactly as the plan has it."""
    plan = build_plan(make_settings(), gpu=True)
    (check,) = [c for c in plan.phase("gpu-device-plugin").checks if c.kind is CheckKind.GPU_ALLOCATABLE]
    return check


@pytest.fixture
def gpu_namespace(core: client.CoreV1Api) -> Iterator[str]:
    try:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=GPU_NAMESPACE)))
    except client.ApiException as exc:
        if exc.status != 409:
            raise
    yield GPU_NAMESPACE


def test_the_wait_passes_when_every_gpu_node_advertises_gpus(kube: Kube, gpu_check: HealthCheck) -> None:
    nodes = Waiter(kube).gpu_nodes(gpu_check, Deadline(30))
    assert {"kwok-gpu-0", "kwok-gpu-1"} <= set(nodes)


def test_the_wait_fails_naming_the_node_and_its_plugin_pod(kube: Kube, core: client.CoreV1Api, gpu_check: HealthCheck,
                                                           gpu_namespace: str) -> None:
    name = f"kwok-gpu-empty-{uuid.uuid4().hex[:5]}"
    node = node_manifest(FakeNode(name, cpu="8", memory="32Gi", gpus=2))
    node["status"]["allocatable"][GPU_RESOURCE] = "0"  # the plugin found no GPU in this node
    core.create_node(node)
    labels = dict(pair.split("=") for pair in (gpu_check.selector or "").split(","))
    plugin = client.V1Pod(
        metadata=client.V1ObjectMeta(name=f"nvidia-device-plugin-{name}", labels=labels),
        spec=client.V1PodSpec(node_name=name, tolerations=[client.V1Toleration(operator="Exists")],
                              containers=[client.V1Container(name="nvidia-device-plugin-ctr",
                                                             image="nvcr.io/nvidia/k8s-device-plugin:v0.20.0")]))
    core.create_namespaced_pod(gpu_namespace, plugin)
    try:
        with pytest.raises(WaitTimeout) as err:
            Waiter(kube).gpu_nodes(gpu_check, Deadline(3), phase="gpu-device-plugin")
        report = str(err.value)
        assert f"node {name}: allocatable nvidia.com/gpu = 0" in report
        assert f"nvidia-device-plugin-{name}" in report  # the plugin pod on that node
        assert "logs" in report  # its last lines, or why there are none (kwok runs no kubelet)
        assert "kwok-gpu-0" not in report  # the healthy GPU nodes are not blamed
        assert "(phase 'gpu-device-plugin')" in report
        # Once the plugin advertises the node's GPUs, the same wait passes.
        patched = copy.deepcopy(node["status"])
        patched["allocatable"][GPU_RESOURCE] = "2"
        core.patch_node_status(name, {"status": patched})
        assert name in Waiter(kube).gpu_nodes(gpu_check, Deadline(30))
    finally:
        core.delete_namespaced_pod(plugin.metadata.name, gpu_namespace, grace_period_seconds=0)
        core.delete_node(name)


def test_gpu_check_pod_is_scheduled_onto_a_gpu_node(kube: Kube, core: client.CoreV1Api,
                                                    make_settings: Callable[..., Settings], gpu_namespace: str) -> None:
    settings = make_settings()
    pod = gpucheck.pod_manifest(settings, Renderer(Path(PROJECT_ROOT) / "manifests"))
    assert pod["spec"]["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": 1}
    assert pod["spec"]["containers"][0]["image"] == settings.versions.gpu.check_image
    gpucheck.start(kube, pod)
    try:
        node = gpucheck.scheduled_node(kube, 60)
        labels = core.read_node(node).metadata.labels
        assert labels["nvidia.com/gpu.present"] == "true"
        # Starting again replaces the pod (a finished pod cannot run twice).
        first_uid = core.read_namespaced_pod(gpucheck.POD_NAME, gpu_namespace).metadata.uid
        gpucheck.start(kube, pod)
        assert core.read_namespaced_pod(gpucheck.POD_NAME, gpu_namespace).metadata.uid != first_uid
        wait_for(lambda: core.read_namespaced_pod(gpucheck.POD_NAME, gpu_namespace).spec.node_name, timeout=60,
                 what="the second gpu-check pod to be scheduled")
    finally:
        kube.delete(ObjectRef("v1", "Pod", gpucheck.POD_NAME, gpu_namespace))


def test_parse_nvidia_smi() -> None:
    assert gpucheck.parse_nvidia_smi(["NVIDIA H200, 143771 MiB", "NVIDIA H200, 143771 MiB", ""]) == [
        gpucheck.Gpu("NVIDIA H200", "143771 MiB")] * 2

"""Scheduling onto kwok's fake GPU and CPU nodes, through the real scheduler and controllers."""

from __future__ import annotations

import pytest
from kubernetes import client

from inferbox.testenv import GPU_RESOURCE, GPU_TAINT
from inferbox.testenv.waiting import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.embedded]

GPU_TOLERATION = client.V1Toleration(key=GPU_TAINT["key"], operator="Exists", effect=GPU_TAINT["effect"])


def deployment(name: str, *, gpus: int = 0, tolerate_gpu: bool = False) -> client.V1Deployment:
    resources = client.V1ResourceRequirements(
        requests={"cpu": "100m", "memory": "64Mi", **({GPU_RESOURCE: str(gpus)} if gpus else {})},
        limits={GPU_RESOURCE: str(gpus)} if gpus else None,
    )
    labels = {"app": name}
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1DeploymentSpec(
            replicas=1,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(
                    containers=[client.V1Container(name="server", image="example.invalid/model-server:1",
                                                   resources=resources)],
                    tolerations=[GPU_TOLERATION] if tolerate_gpu else None,
                ),
            ),
        ),
    )


def only_pod(core: client.CoreV1Api, namespace: str, app: str) -> client.V1Pod | None:
    pods = core.list_namespaced_pod(namespace, label_selector=f"app={app}").items
    return pods[0] if len(pods) == 1 else None


def condition(pod: client.V1Pod | None, type_: str) -> client.V1PodCondition | None:
    if pod is None or pod.status is None:
        return None
    return next((c for c in pod.status.conditions or [] if c.type == type_), None)


def is_ready(pod: client.V1Pod | None) -> bool:
    ready = condition(pod, "Ready")
    return ready is not None and ready.status == "True"


def test_gpu_deployment_runs_on_a_gpu_node(api: client.ApiClient, core: client.CoreV1Api, namespace: str) -> None:
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment(namespace, deployment("llm", gpus=1, tolerate_gpu=True))

    pod = wait_for(lambda: (p := only_pod(core, namespace, "llm")) and is_ready(p) and p,
                   timeout=60, what="the GPU pod to be Ready",
                   describe=lambda: str(only_pod(core, namespace, "llm")))
    node = core.read_node(pod.spec.node_name)
    assert node.metadata.labels["nvidia.com/gpu.present"] == "true"
    assert int(node.status.allocatable[GPU_RESOURCE]) >= 1
    assert pod.status.phase == "Running"
    # The Deployment and ReplicaSet controllers saw it too.
    wait_for(lambda: apps.read_namespaced_deployment(name="llm", namespace=namespace).status.ready_replicas == 1,
             timeout=30, what="Deployment llm readyReplicas=1")


def test_more_gpus_than_any_node_has_stays_pending(api: client.ApiClient, core: client.CoreV1Api,
                                                    namespace: str) -> None:
    most = max(int(n.status.allocatable.get(GPU_RESOURCE, "0")) for n in core.list_node().items)
    client.AppsV1Api(api).create_namespaced_deployment(namespace, deployment("huge", gpus=most + 1,
                                                                             tolerate_gpu=True))

    scheduled = wait_for(lambda: condition(only_pod(core, namespace, "huge"), "PodScheduled"),
                         timeout=60, what="the scheduler's verdict on the oversized pod")
    assert scheduled.status == "False"
    assert scheduled.reason == "Unschedulable"
    assert f"Insufficient {GPU_RESOURCE}" in scheduled.message
    assert only_pod(core, namespace, "huge").status.phase == "Pending"


def test_pod_without_toleration_avoids_gpu_nodes(api: client.ApiClient, core: client.CoreV1Api,
                                                 namespace: str) -> None:
    client.AppsV1Api(api).create_namespaced_deployment(namespace, deployment("web"))
    pod = wait_for(lambda: (p := only_pod(core, namespace, "web")) and is_ready(p) and p,
                   timeout=60, what="the CPU pod to be Ready")
    node = core.read_node(pod.spec.node_name)
    assert GPU_RESOURCE not in (node.status.allocatable or {})

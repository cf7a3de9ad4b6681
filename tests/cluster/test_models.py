"""deploy-model against the real API server: InferenceService apply, tenant and quota refusals,
GPU placement of a KServe-shaped predictor on kwok GPU nodes, and the wait's explanation.

No KServe controller runs here: where a test needs the predictor's Deployment it creates one
shaped like KServe's Standard-mode output (labels, node selector, tolerations, resources taken
from the InferenceService), acting as the controller.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

from inferbox import PROJECT_ROOT
from inferbox.errors import InferboxError
from inferbox.hints import invoke
from inferbox.k8s import Kube, ObjectRef
from inferbox.models.catalog import Catalog, default_catalog_path, load_catalog
from inferbox.models.deploy import (
    ModelNotReady,
    ModelRefused,
    ModelTenant,
    deploy_model,
    isvc_ref,
    undeploy_model,
    wait_ready,
)
from inferbox.models.render import ISVC_LABEL, RenderOptions
from inferbox.render import Renderer
from inferbox.testenv import GPU_RESOURCE
from inferbox.testenv.waiting import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.crds]


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(default_catalog_path(PROJECT_ROOT))


@pytest.fixture
def kube(api: client.ApiClient, crds_installed: object) -> Kube:
    return Kube(api)


@pytest.fixture
def renderer() -> Renderer:
    return Renderer(PROJECT_ROOT / "manifests")


def tenant_in(namespace: str, *models: str) -> ModelTenant:
    return ModelTenant(name="tenant-x", namespace=namespace, models=models)


def predictor_deployment(isvc: dict[str, Any], *, gpus: int | None = None) -> dict[str, Any]:
    """The Deployment KServe's Standard mode makes of an InferenceService (the fields that matter here)."""
    name = isvc["metadata"]["name"]
    predictor = isvc["spec"]["predictor"]
    resources = dict(predictor["model"]["resources"])
    if gpus is not None:
        resources = {"requests": {"cpu": "100m"}, "limits": {GPU_RESOURCE: str(gpus)}}
    labels = {ISVC_LABEL: name, "component": "predictor"}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": f"{name}-predictor", "namespace": isvc["metadata"]["namespace"], "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "nodeSelector": predictor.get("nodeSelector"),
                    "tolerations": predictor.get("tolerations"),
                    "containers": [{"name": "kserve-container", "image": "example.invalid/huggingfaceserver:1",
                                    "resources": resources}],
                },
            },
        },
    }


def predictor_pod(core: client.CoreV1Api, namespace: str, name: str) -> client.V1Pod | None:
    pods = core.list_namespaced_pod(namespace, label_selector=f"{ISVC_LABEL}={name}").items
    return pods[0] if len(pods) == 1 else None


def test_deploy_applies_an_inferenceservice_idempotently(kube: Kube, catalog: Catalog, renderer: Renderer,
                                                         namespace: str) -> None:
    tenant = tenant_in(namespace, "sklearn-iris")
    first = deploy_model(kube, catalog, "sklearn-iris", tenant, renderer)
    assert first.created
    live = kube.get(isvc_ref("sklearn-iris", namespace))
    assert live is not None
    assert live["spec"]["predictor"]["model"]["runtime"] == "kserve-sklearnserver"
    assert live["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
    managers = {entry["manager"] for entry in live["metadata"]["managedFields"]}
    assert managers == {"inferbox"}

    second = deploy_model(kube, catalog, "sklearn-iris", tenant, renderer)
    assert not second.created
    after = kube.get(isvc_ref("sklearn-iris", namespace))
    assert after is not None
    # Server-side apply of an unchanged spec writes nothing.
    assert after["metadata"]["resourceVersion"] == live["metadata"]["resourceVersion"]
    assert after["metadata"]["generation"] == live["metadata"]["generation"]

    assert undeploy_model(kube, "sklearn-iris", tenant)
    assert not undeploy_model(kube, "sklearn-iris", tenant)


def test_a_model_the_tenant_does_not_list_is_refused(kube: Kube, catalog: Catalog, renderer: Renderer,
                                                     namespace: str) -> None:
    with pytest.raises(ModelRefused, match="may not deploy 'qwen-small'"):
        deploy_model(kube, catalog, "qwen-small", tenant_in(namespace, "sklearn-iris"), renderer)
    assert kube.get(isvc_ref("qwen-small", namespace)) is None


def test_quota_without_gpus_refuses_a_gpu_model(kube: Kube, core: client.CoreV1Api, catalog: Catalog,
                                                renderer: Renderer, namespace: str) -> None:
    hard = {"requests.cpu": "4", "limits.cpu": "4", "requests.memory": "8Gi", "limits.memory": "8Gi",
            "requests.nvidia.com/gpu": "0", "pods": "10"}
    core.create_namespaced_resource_quota(namespace, client.V1ResourceQuota(
        metadata=client.V1ObjectMeta(name="tenant-quota"), spec=client.V1ResourceQuotaSpec(hard=hard)))
    # The quota controller fills status.hard/used; the check reads the live status.
    wait_for(lambda: core.read_namespaced_resource_quota("tenant-quota", namespace).status.hard,
             timeout=30, what="the quota controller to fill tenant-quota's status")

    with pytest.raises(ModelRefused) as refused:
        deploy_model(kube, catalog, "qwen-small", tenant_in(namespace, "qwen-small"), renderer)
    assert "requests.nvidia.com/gpu needs 1 but only 0 of 0 is free" in str(refused.value)
    assert "nothing was applied" in str(refused.value)
    assert kube.get(isvc_ref("qwen-small", namespace)) is None

    # The CPU fallback fits (cpu 4 / memory 8Gi limits, with the storage initializer).
    deploy_model(kube, catalog, "qwen-small", tenant_in(namespace, "qwen-small"), renderer,
                 options=RenderOptions(cpu_fallback=True))
    assert kube.get(isvc_ref("qwen-small", namespace)) is not None


def test_gpu_predictor_lands_on_a_gpu_node(kube: Kube, core: client.CoreV1Api, catalog: Catalog,
                                           renderer: Renderer, namespace: str) -> None:
    result = deploy_model(kube, catalog, "qwen-small", tenant_in(namespace, "qwen-small"), renderer)
    kube.create(predictor_deployment(result.object))

    pod = wait_for(lambda: (p := predictor_pod(core, namespace, "qwen-small")) and p.spec.node_name and p,
                   timeout=60, what="the GPU predictor pod to be scheduled",
                   describe=lambda: str(predictor_pod(core, namespace, "qwen-small")))
    node = core.read_node(pod.spec.node_name)
    assert node.metadata.labels["nvidia.com/gpu.present"] == "true"
    assert int(node.status.allocatable[GPU_RESOURCE]) >= 1


def test_wait_explains_an_unschedulable_predictor(kube: Kube, core: client.CoreV1Api, catalog: Catalog,
                                                  renderer: Renderer, namespace: str) -> None:
    result = deploy_model(kube, catalog, "qwen-small", tenant_in(namespace, "qwen-small"), renderer)
    most = max(int((n.status.allocatable or {}).get(GPU_RESOURCE, "0")) for n in core.list_node().items)
    kube.create(predictor_deployment(result.object, gpus=most + 1))

    def unschedulable() -> bool:
        pod = predictor_pod(core, namespace, "qwen-small")
        conditions = (pod.status.conditions or []) if pod and pod.status else []
        return any(c.type == "PodScheduled" and c.status == "False" for c in conditions)

    wait_for(unschedulable, timeout=60, what="the scheduler's verdict on the oversized predictor")

    with pytest.raises(ModelNotReady) as caught:
        wait_ready(kube, isvc_ref("qwen-small", namespace), timeout_s=3)
    report = str(caught.value)
    assert "timed out after 3s waiting for" in report
    assert "why: not enough GPUs" in report
    assert f"Insufficient {GPU_RESOURCE}" in report
    assert "event: Warning FailedScheduling" in report


def test_undeploy_of_nothing_is_fine(kube: Kube, namespace: str) -> None:
    assert not undeploy_model(kube, "never-deployed", tenant_in(namespace))


def test_unknown_model_is_an_error(kube: Kube, catalog: Catalog, renderer: Renderer,
                                   make_namespace: Callable[[str], str]) -> None:
    with pytest.raises(InferboxError, match="no model 'nope'"):
        deploy_model(kube, catalog, "nope", tenant_in(make_namespace("m")), renderer)


def test_a_webhook_left_by_an_interrupted_kserve_install_is_named_with_its_repair(
        kube: Kube, catalog: Catalog, renderer: Renderer, namespace: str, webhook_config) -> None:
    """KServe's webhook configuration calling a service with no endpoints refuses every
    InferenceService; deploy-model says why and which command repairs it, not a bare 500."""
    name = f"inferenceservice-{namespace}"
    kube.create(webhook_config(name, service="kserve-webhook-server-service", namespace=namespace,
                               group="serving.kserve.io", version="v1beta1", resource="inferenceservices",
                               operations=("CREATE", "UPDATE"), only_this_namespace=True))
    try:
        def refused() -> str | None:
            try:
                deploy_model(kube, catalog, "sklearn-iris", tenant_in(namespace, "sklearn-iris"), renderer)
            except ModelRefused as exc:
                return str(exc)
            undeploy_model(kube, "sklearn-iris", tenant_in(namespace, "sklearn-iris"))  # not enforced yet
            return None

        message = wait_for(refused, timeout=30, what=f"the API server to call webhook {name}")
        assert "KServe's admission webhook did not answer, so nothing was applied" in message
        assert f"`{invoke('bootstrap')}`" in message and "failed calling webhook" in message
        assert kube.get(isvc_ref("sklearn-iris", namespace)) is None
    finally:
        kube.delete(ObjectRef("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration", name))

"""Quota fit: a predictor pod's effective usage (model + Istio proxy + storage initializer) against hard/used."""

from __future__ import annotations

from decimal import Decimal

from inferbox import PROJECT_ROOT
from inferbox.models import quota
from inferbox.models.catalog import default_catalog_path, load_catalog

CATALOG = load_catalog(default_catalog_path(PROJECT_ROOT))


def tenant_quota(used: dict[str, str] | None = None, gpus: str = "0") -> dict:
    hard = {"requests.cpu": "4", "limits.cpu": "4", "requests.memory": "8Gi", "limits.memory": "8Gi",
            "requests.nvidia.com/gpu": gpus, "pods": "20", "count/inferenceservices.serving.kserve.io": "3"}
    return {"metadata": {"name": "tenant-quota"}, "spec": {"hard": hard},
            "status": {"hard": hard, "used": used or {}}}


def test_pod_usage_counts_sidecar_and_init_container() -> None:
    pod = quota.predictor_pod(CATALOG.get("sklearn-iris").resources, mesh=True)
    amounts = quota.pod_amounts(pod)
    assert amounts["requests.cpu"] == Decimal("0.110")  # 100m model + 10m proxy (> 100m init)
    assert amounts["limits.cpu"] == Decimal(3)  # 1 model + 2 proxy
    assert amounts["limits.memory"] == Decimal(512 + 1024) * 2**20
    assert amounts["pods"] == 1
    bare = quota.pod_amounts(quota.predictor_pod(CATALOG.get("sklearn-iris").resources, mesh=False))
    assert bare["limits.memory"] == Decimal(1024) * 2**20  # the storage initializer's limit is the larger


def test_gpu_is_counted_by_request() -> None:
    amounts = quota.pod_amounts(quota.predictor_pod(CATALOG.get("qwen-small").resources, mesh=False))
    assert amounts["requests.nvidia.com/gpu"] == 1
    assert "limits.nvidia.com/gpu" not in amounts


def test_fits_an_empty_quota() -> None:
    needed = quota.demand(quota.predictor_pod(CATALOG.get("sklearn-iris").resources, mesh=True), 1, new_service=True)
    assert quota.shortfalls([tenant_quota()], needed, {}) == []


def test_gpu_model_does_not_fit_a_tenant_without_gpus() -> None:
    needed = quota.demand(quota.predictor_pod(CATALOG.get("qwen-small").resources, mesh=False), 1, new_service=True)
    (problem,) = quota.shortfalls([tenant_quota()], needed, {})
    assert "requests.nvidia.com/gpu needs 1 but only 0 of 0 is free" in problem


def test_used_capacity_and_released_pods() -> None:
    pod = quota.predictor_pod(CATALOG.get("sklearn-iris").resources, mesh=False)
    needed = quota.demand(pod, 1, new_service=False)
    full = tenant_quota(used={"limits.cpu": "3500m", "pods": "2"})
    (problem,) = quota.shortfalls([full], needed, {})
    assert problem.startswith("ResourceQuota tenant-quota: limits.cpu needs 1 but only 500m of 4 is free")
    # Redeploying: the service's current pod is replaced, so its usage is freed first.
    assert quota.shortfalls([full], needed, quota.pod_amounts(pod)) == []


def test_service_count() -> None:
    needed = quota.demand(quota.predictor_pod(CATALOG.get("sklearn-iris").resources, mesh=False), 1, new_service=True)
    (problem,) = quota.shortfalls([tenant_quota(used={"count/inferenceservices.serving.kserve.io": "3"})], needed, {})
    assert "count/inferenceservices.serving.kserve.io needs 1" in problem

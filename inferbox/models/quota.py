"""Will a model's predictor fit the tenant's ResourceQuota? Decided before anything is applied.

A predictor pod is more than the model container: KServe adds its storage-initializer init
container, and in a tenant namespace (``istio-injection: enabled``) Istio adds its proxy. A quota
counts a pod's *effective* request: the larger of the sum of its containers and its largest init
container - so those are counted here too, or a deploy the check passed would still be refused
when the ReplicaSet creates the pod.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from inferbox.models.catalog import GPU_RESOURCE, Resources
from inferbox.tenants.spec import parse_quantity

# KServe's storage-initializer defaults (inferenceservice-config, storageInitializer): what the
# init container asks for when the config does not override it.
STORAGE_INITIALIZER = {"requests": {"cpu": "100m", "memory": "100Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}
# The Istio proxy: requests from helm-values/istiod.yaml, limits the istiod chart's defaults.
ISTIO_PROXY = {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"cpu": "2", "memory": "1Gi"}}

Amounts = dict[str, Decimal]


def _container_amounts(resources: Mapping[str, Any] | None) -> Amounts:
    resources = resources or {}
    limits = resources.get("limits") or {}
    # The API server defaults a missing request to the limit.
    requests = {**limits, **(resources.get("requests") or {})}
    out: Amounts = {}
    for name, value in requests.items():
        key = "requests.nvidia.com/gpu" if name == GPU_RESOURCE else f"requests.{name}"
        out[key] = parse_quantity(str(value))
    for name, value in limits.items():
        if name != GPU_RESOURCE:  # extended resources are quota'd by request only
            out[f"limits.{name}"] = parse_quantity(str(value))
    return out


def add(a: Amounts, b: Amounts) -> Amounts:
    return {key: a.get(key, Decimal(0)) + b.get(key, Decimal(0)) for key in a.keys() | b.keys()}


def pod_amounts(pod_spec: Mapping[str, Any]) -> Amounts:
    """Effective quota usage of one pod: max(sum of containers, each init container), plus 1 pod."""
    total: Amounts = {}
    for container in pod_spec.get("containers") or []:
        total = add(total, _container_amounts(container.get("resources")))
    for init in pod_spec.get("initContainers") or []:
        for key, value in _container_amounts(init.get("resources")).items():
            total[key] = max(total.get(key, Decimal(0)), value)
    total["pods"] = Decimal(1)
    return total


def predictor_pod(resources: Resources, *, mesh: bool) -> dict[str, Any]:
    """The pod KServe will create for the model, as far as resources go."""
    containers = [{"name": "kserve-container", "resources": resources.manifest()}]
    if mesh:
        containers.append({"name": "istio-proxy", "resources": ISTIO_PROXY})
    return {"containers": containers, "initContainers": [{"name": "storage-initializer",
                                                          "resources": STORAGE_INITIALIZER}]}


def demand(pod: Mapping[str, Any], replicas: int, *, new_service: bool) -> Amounts:
    per_pod = pod_amounts(pod)
    out = {key: value * replicas for key, value in per_pod.items()}
    out["count/inferenceservices.serving.kserve.io"] = Decimal(1 if new_service else 0)
    return out


def _normalise(key: str) -> str:
    # "cpu" and "memory" in a quota mean requests.
    return f"requests.{key}" if key in ("cpu", "memory", "ephemeral-storage") else key


def shortfalls(quotas: Iterable[Mapping[str, Any]], needed: Amounts, released: Amounts) -> list[str]:
    """Why the quota cannot take ``needed`` (after ``released``, what the replaced pods free)."""
    problems: list[str] = []
    for quota in quotas:
        status = quota.get("status") or {}
        hard = status.get("hard") or (quota.get("spec") or {}).get("hard") or {}
        used = status.get("used") or {}
        name = (quota.get("metadata") or {}).get("name", "?")
        for key, limit in sorted(hard.items()):
            want = needed.get(_normalise(key), Decimal(0))
            if want <= 0:
                continue
            in_use = parse_quantity(str(used.get(key, "0"))) - released.get(_normalise(key), Decimal(0))
            free = parse_quantity(str(limit)) - max(in_use, Decimal(0))
            if want > free:
                problems.append(f"ResourceQuota {name}: {key} needs {_fmt(key, want)} but only "
                                f"{_fmt(key, free)} of {limit} is free ({used.get(key, '0')} used)")
    return problems


def _fmt(key: str, value: Decimal) -> str:
    if "memory" in key or "storage" in key:
        return f"{value / 2**20:.0f}Mi"
    if "cpu" in key and value != value.to_integral_value():
        return f"{value * 1000:.0f}m"
    return f"{value.normalize():f}"

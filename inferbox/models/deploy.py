"""Deploy catalog models to a cluster as KServe InferenceServices, for a tenant.

Plan, check, act, verify: render the InferenceService; refuse - before anything is applied - a
model the tenant's spec does not list or its live ResourceQuota cannot fit; server-side apply
(field manager ``inferbox``; applying the same spec again changes nothing); then, with ``wait``,
follow the Ready condition and, when it does not come, explain why from the predictor's
Deployment, ReplicaSets, pods and their events.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from inferbox.errors import InferboxError, KubeError, WaitTimeout
from inferbox.hints import invoke
from inferbox.k8s import Kube, ObjectRef
from inferbox.models import quota
from inferbox.models.catalog import Catalog, ModelSpec
from inferbox.models.hosts import IngressNaming
from inferbox.models.render import (
    API_VERSION,
    ISVC_LABEL,
    KIND,
    RenderOptions,
    promoted,
    render_inferenceservice,
    rolled_back,
)
from inferbox.render import Renderer
from inferbox.tenants.spec import Tenant
from inferbox.wait import Deadline, Waiter, condition_true, describe_pod, pod_ready, ready_condition

FIELD_MANAGER = "inferbox"
DEFAULT_WAIT_S = 600.0


class ModelRefused(InferboxError):
    """The tenant may not deploy the model, or its quota cannot fit it; nothing was applied."""


class ModelNotReady(InferboxError):
    """The InferenceService did not become Ready; the message says what was seen and why."""


@dataclass(frozen=True)
class ModelTenant:
    """What deploying needs of a tenant: where its models go and which it may run."""

    name: str
    namespace: str
    models: tuple[str, ...]

    @classmethod
    def from_tenant(cls, tenant: Tenant) -> ModelTenant:
        return cls(name=tenant.name, namespace=tenant.namespace, models=tuple(tenant.models))


@dataclass(frozen=True)
class DeployResult:
    ref: ObjectRef
    created: bool
    ready: bool
    object: dict[str, Any]

    def message(self) -> str:
        verb = "created" if self.created else "applied (unchanged spec is a no-op)"
        return f"{self.ref} {verb}" + (", Ready" if self.ready else "")


def isvc_ref(name: str, namespace: str) -> ObjectRef:
    return ObjectRef(API_VERSION, KIND, name, namespace)


def check_allowed(model: ModelSpec, tenant: ModelTenant) -> None:
    if model.name not in tenant.models:
        allowed = ", ".join(tenant.models) or "none"
        raise ModelRefused(f"tenant {tenant.name!r} may not deploy {model.name!r}: its spec (tenants/{tenant.name}.yaml"
                           f", models) allows {allowed}")


def quota_problems(kube: Kube, model: ModelSpec, tenant: ModelTenant, options: RenderOptions,
                   existing: dict[str, Any] | None) -> list[str]:
    """Shortfalls of the tenant's live quotas for this deploy (empty: it fits)."""
    quotas = kube.list("v1", "ResourceQuota", tenant.namespace)
    if not quotas:
        return []
    namespace = kube.get(ObjectRef("v1", "Namespace", tenant.namespace)) or {}
    mesh = ((namespace.get("metadata") or {}).get("labels") or {}).get("istio-injection") == "enabled"
    resources, _ = model.resolved(cpu_fallback=options.cpu_fallback)
    # Even a scale-to-zero model needs one pod to answer its first request.
    replicas = max(model.replicas.min, 1)
    needed = quota.demand(quota.predictor_pod(resources, mesh=mesh), replicas, new_service=existing is None)
    # Redeploying replaces this service's own pods: what they use now is freed.
    released: dict[str, Decimal] = {}
    for pod in kube.list("v1", "Pod", tenant.namespace, label_selector=f"{ISVC_LABEL}={model.name}"):
        if (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
            released = quota.add(released, quota.pod_amounts(pod.get("spec") or {}))
    return quota.shortfalls(quotas, needed, released)


def deploy_model(kube: Kube, catalog: Catalog, name: str, tenant: ModelTenant, renderer: Renderer, *,
                 options: RenderOptions | None = None, wait: bool = False, timeout_s: float = DEFAULT_WAIT_S,
                 context: str | None = None, naming: IngressNaming | None = None) -> DeployResult:
    """Apply the model's InferenceService in the tenant's namespace; with ``wait``, until Ready.

    Refused before anything is applied (ModelRefused): a model the tenant may not use, one
    whose hosts KServe would refuse (inferbox.models.hosts, ``naming`` from the platform's
    KServe values), one that does not fit the tenant's quota."""
    options = options or RenderOptions()
    model = catalog.get(name)
    check_allowed(model, tenant)
    if problems := (naming or IngressNaming()).host_problems(model.name, tenant.namespace):
        raise ModelRefused(f"{model.name} cannot be served in namespace {tenant.namespace} (nothing was applied):\n  "
                           + "\n  ".join(problems))
    isvc = render_inferenceservice(model, namespace=tenant.namespace, tenant=tenant.name, renderer=renderer,
                                   options=options)
    ref = isvc_ref(model.name, tenant.namespace)
    existing = kube.get(ref)
    if problems := quota_problems(kube, model, tenant, options, existing):
        raise ModelRefused(f"{model.name} does not fit tenant {tenant.name!r}'s quota (nothing was applied):\n  "
                           + "\n  ".join(problems))
    try:
        applied = kube.apply(isvc, field_manager=FIELD_MANAGER)
    except KubeError as exc:
        if "failed calling webhook" not in str(exc):
            raise
        # A KServe install interrupted before its controller came up leaves its webhook
        # configurations calling a service with no endpoints: every InferenceService is refused.
        raise ModelRefused(
            f"{model.name}: KServe's admission webhook did not answer, so nothing was applied. Its service "
            "(kserve/kserve-webhook-server-service) has no ready endpoints, as an interrupted install leaves it. "
            f"Repair: `{invoke('bootstrap')}` (the kserve phase removes orphaned webhook configurations and waits "
            f"for the webhook); `{invoke('status')}` shows the kserve phase.\n  API server: {exc}") from exc
    ready = False
    if wait:
        applied = wait_ready(kube, ref, timeout_s=timeout_s, context=context)
        ready = True
    return DeployResult(ref=ref, created=existing is None, ready=ready, object=applied)


def wait_ready(kube: Kube, ref: ObjectRef, *, timeout_s: float, context: str | None = None) -> dict[str, Any]:
    """Follow the InferenceService's Ready condition; on timeout explain why it is not Ready."""
    waiter = Waiter(kube, context=context)
    try:
        return waiter.until(ref, ready_condition, Deadline(timeout_s), what=f"{ref} to be Ready")
    except WaitTimeout as exc:
        lines = explain_not_ready(kube, ref.name, ref.namespace or "")
        raise ModelNotReady(f"{exc}\n" + "\n".join(lines)) from exc


def undeploy_model(kube: Kube, name: str, tenant: ModelTenant) -> bool:
    """Delete the model's InferenceService; False when it was not there (that is fine)."""
    return kube.delete(isvc_ref(name, tenant.namespace))


def promote(kube: Kube, name: str, tenant: ModelTenant) -> dict[str, Any]:
    return _apply_live(kube, name, tenant, promoted)


def rollback(kube: Kube, name: str, tenant: ModelTenant) -> dict[str, Any]:
    return _apply_live(kube, name, tenant, rolled_back)


def _apply_live(kube: Kube, name: str, tenant: ModelTenant, change: Any) -> dict[str, Any]:
    live = kube.get(isvc_ref(name, tenant.namespace))
    if live is None:
        raise InferboxError(f"{name} is not deployed in {tenant.namespace}")
    return kube.apply(change(live), field_manager=FIELD_MANAGER)


# -- why is it not Ready? -------------------------------------------------------------------------

# (what the report says, why that matters): the first lines of the report name every cause found.
_CAUSES: Sequence[tuple[str, str]] = (
    ("Insufficient nvidia.com/gpu", "not enough GPUs: no schedulable node has a free nvidia.com/gpu (GPU nodes "
                                    "busy or missing, or the device plugin not running: invoke status)"),
    ("exceeded quota", "the tenant's ResourceQuota refused the predictor pod (see the ReplicaSet event)"),
    ("container storage-initializer: terminated", "the storage initializer could not fetch the model from "
                                                  "storageUri (wrong URI, missing credentials or PVC): see its log"),
    ("container storage-initializer: waiting CrashLoopBackOff", "the storage initializer could not fetch the "
                                                                "model from storageUri (wrong URI, missing "
                                                                "credentials or PVC): see its log"),
    ("container kserve-container: waiting CrashLoopBackOff", "the model server keeps crashing: kubectl logs "
                                                             "its kserve-container"),
    ("container kserve-container: terminated", "the model server exited: kubectl logs its kserve-container"),
    ("ImagePullBackOff", "the runtime image cannot be pulled"),
    ("ErrImagePull", "the runtime image cannot be pulled"),
    ("unschedulable:", "the predictor pod cannot be scheduled (see the scheduler's message)"),
)


def explain_not_ready(kube: Kube, name: str, namespace: str) -> list[str]:
    """Lines describing the predictor's state, newest evidence first, and a ``why:`` summary."""
    selector = f"{ISVC_LABEL}={name}"
    lines: list[str] = []
    for kind in ("Deployment", "ReplicaSet"):
        for obj in kube.list("apps/v1", kind, namespace, label_selector=selector):
            lines.extend(_owner_lines(kube, kind, obj, namespace))
    pods = kube.list("v1", "Pod", namespace, label_selector=selector)
    if not pods:
        lines.append(f"  no predictor pods exist (label {selector})")
    for pod in [p for p in pods if not pod_ready(p)][:5]:
        lines.extend(f"  {line}" for line in describe_pod(pod))
        lines.extend(_event_lines(kube, namespace, pod["metadata"]["name"]))
    text = "\n".join(lines)
    causes = list(dict.fromkeys(why for marker, why in _CAUSES if marker in text))
    summary = [f"  why: {cause}" for cause in causes] or ["  why: unknown: see the states and events above"]
    return summary + lines


def _owner_lines(kube: Kube, kind: str, obj: dict[str, Any], namespace: str) -> list[str]:
    name = obj["metadata"]["name"]
    status = obj.get("status") or {}
    out = []
    for cond in status.get("conditions") or []:
        healthy = cond.get("type") in ("Available", "Progressing")
        if (cond.get("status") == "True") != healthy or cond.get("type") == "ReplicaFailure":
            out.append(f"  {kind.lower()} {name}: {cond.get('type')}={cond.get('status')} "
                       f"({cond.get('reason')}: {cond.get('message')})")
    if kind == "ReplicaSet" or (kind == "Deployment" and not condition_true(obj, "Available")):
        out.extend(_event_lines(kube, namespace, name, warnings_only=True))
    return out


def _event_lines(kube: Kube, namespace: str, name: str, *, warnings_only: bool = False) -> list[str]:
    events = kube.events_for(namespace, name, limit=5)
    return [f"    event: {e.get('type')} {e.get('reason')}: {(e.get('message') or '').strip()}"
            for e in events if not warnings_only or e.get("type") == "Warning"]

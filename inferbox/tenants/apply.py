"""Make the cluster match the tenant files: plan, apply (server-side), prune, report.

* ``plan(desired, observed)`` is pure: create what is missing, apply what exists, prune what is
  labelled for the tenant but no longer rendered.
* ``apply_all`` carries plans out concurrently across tenants (one thread per tenant; objects of
  one tenant in apply order), server-side apply with the one field manager ``inferbox``. Each
  object is reported created / configured / unchanged / pruned: "unchanged" means the object
  after the apply equals the object before it, status and bookkeeping metadata aside — so a
  second run with the same files says so.
* ``dry_run=True`` asks the API server for a dry-run apply instead and compares the same way,
  changing nothing.
* ``delete_tenant`` removes only what carries the tenant's ownership labels, and keeps the
  namespace when something inferbox does not own still lives in it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from inferbox.errors import ClusterError, InferboxError, KubeError, NotFound
from inferbox.k8s import Kube, ObjectRef
from inferbox.render import sort_objects
from inferbox.tenants.render import COMPONENT_LABEL, MANAGED_BY, MANAGED_BY_LABEL, TENANT_LABEL, tenant_selector

log = logging.getLogger("inferbox.tenants")

FIELD_MANAGER = "inferbox"
SHARED = "(shared)"  # the pseudo-tenant of the objects all tenants share
SHARED_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY},{COMPONENT_LABEL}=tenants"


@dataclass(frozen=True)
class ManagedKind:
    api_version: str
    kind: str
    namespaced: bool = True

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]


# Every kind a tenant renders, so every one can be found again by label and pruned.
# tests/unit/test_tenants_render.py fails when a template renders a kind missing here.
TENANT_KINDS = (
    ManagedKind("v1", "Namespace", namespaced=False),
    ManagedKind("v1", "ServiceAccount"),
    ManagedKind("v1", "ConfigMap"),
    ManagedKind("rbac.authorization.k8s.io/v1", "Role"),
    ManagedKind("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ManagedKind("v1", "ResourceQuota"),
    ManagedKind("v1", "LimitRange"),
    ManagedKind("networking.k8s.io/v1", "NetworkPolicy"),
    ManagedKind("security.istio.io/v1", "PeerAuthentication"),
    ManagedKind("security.istio.io/v1", "RequestAuthentication"),
    ManagedKind("security.istio.io/v1", "AuthorizationPolicy"),
    ManagedKind("networking.istio.io/v1alpha3", "EnvoyFilter"),
)
SHARED_KINDS = (
    ManagedKind("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy", namespaced=False),
    ManagedKind("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicyBinding", namespaced=False),
)
# Objects users create by hand in a namespace: while one of them (not ours, not owned by another
# object) is there, tenant-delete keeps the namespace instead of deleting it with its contents.
FOREIGN_ROOT_KINDS = (
    ManagedKind("v1", "ConfigMap"), ManagedKind("v1", "Secret"), ManagedKind("v1", "Pod"),
    ManagedKind("v1", "Service"), ManagedKind("v1", "PersistentVolumeClaim"),
    ManagedKind("apps/v1", "Deployment"), ManagedKind("apps/v1", "StatefulSet"),
    ManagedKind("serving.kserve.io/v1beta1", "InferenceService"),
)
# Created in every namespace by Kubernetes and istiod, owned by no object.
SYSTEM_OBJECTS = frozenset({("ConfigMap", "kube-root-ca.crt"), ("ConfigMap", "istio-ca-root-cert")})


class Action(StrEnum):
    CREATE = "create"
    APPLY = "apply"
    PRUNE = "prune"


class Outcome(StrEnum):
    CREATED = "created"
    CONFIGURED = "configured"
    UNCHANGED = "unchanged"
    PRUNED = "pruned"
    WOULD_CREATE = "would create"
    WOULD_CONFIGURE = "would configure"
    WOULD_PRUNE = "would prune"
    KEPT = "kept"

    @property
    def changes(self) -> bool:
        return self not in (Outcome.UNCHANGED, Outcome.KEPT)


@dataclass(frozen=True)
class Step:
    action: Action
    ref: ObjectRef
    desired: dict[str, Any] | None = None
    live: dict[str, Any] | None = None


@dataclass(frozen=True)
class ObjectResult:
    tenant: str
    ref: ObjectRef
    outcome: Outcome
    detail: str = ""


@dataclass
class ApplyReport:
    results: list[ObjectResult] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)  # tenant -> what failed
    orphans: list[str] = field(default_factory=list)  # tenant namespaces no file declares
    dry_run: bool = False

    @property
    def changed(self) -> list[ObjectResult]:
        return [r for r in self.results if r.outcome.changes]

    def counts(self) -> dict[Outcome, int]:
        counts: dict[Outcome, int] = {}
        for result in self.results:
            counts[result.outcome] = counts.get(result.outcome, 0) + 1
        return counts

    def summary(self) -> str:
        if self.errors:
            failed = ", ".join(sorted(self.errors))
            head = f"failed for {failed}"
        elif not self.changed:
            head = f"nothing changed: all {len(self.results)} objects unchanged"
        else:
            head = ("dry run: " if self.dry_run else "") + ", ".join(
                f"{n} {outcome.value}" for outcome, n in sorted(self.counts().items(), key=lambda kv: kv[0].value))
        return head


# -- identity of objects ------------------------------------------------------------------------


def ref_of(obj: dict[str, Any]) -> ObjectRef:
    meta = obj.get("metadata") or {}
    return ObjectRef(obj["apiVersion"], obj["kind"], meta.get("name", ""), meta.get("namespace"))


def _key(ref: ObjectRef) -> tuple[str, str, str, str]:
    # The group, not the version: the same object read through another version is still the same.
    return ref.api_version.rpartition("/")[0], ref.kind, ref.namespace or "", ref.name


_VOLATILE_METADATA = ("resourceVersion", "managedFields", "generation", "uid", "creationTimestamp", "selfLink")


def comparable(obj: dict[str, Any]) -> dict[str, Any]:
    """The object without status and the metadata the server maintains: what an apply may change."""
    out = {k: v for k, v in obj.items() if k != "status"}
    out["metadata"] = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in _VOLATILE_METADATA}
    return out


# -- the plan (pure) ----------------------------------------------------------------------------


def plan(desired: Sequence[dict[str, Any]], observed: Iterable[dict[str, Any]]) -> list[Step]:
    """Steps that make ``observed`` (what the labels find) into ``desired``: creates and applies in
    apply order, then prunes in reverse apply order (contents before their namespace)."""
    live = {_key(ref_of(obj)): obj for obj in observed}
    wanted = {_key(ref_of(obj)) for obj in desired}
    steps = [Step(Action.APPLY if _key(ref_of(obj)) in live else Action.CREATE, ref_of(obj), obj,
                  live.get(_key(ref_of(obj))))
             for obj in sort_objects(desired)]
    stale = [obj for key, obj in live.items() if key not in wanted]
    steps += [Step(Action.PRUNE, ref_of(obj), None, obj) for obj in sort_objects(stale, reverse=True)]
    return steps


# -- talking to the cluster ---------------------------------------------------------------------


def served_kinds(kube: Kube, kinds: Iterable[ManagedKind]) -> set[tuple[str, str]]:
    """Resolve every kind once, up front (discovery is not something to race from threads)."""
    served: set[tuple[str, str]] = set()
    for kind in kinds:
        try:
            kube.resource(kind.api_version, kind.kind)
        except NotFound:
            continue
        served.add((kind.api_version, kind.kind))
    return served


def observe(kube: Kube, kinds: Iterable[ManagedKind], selector: str, namespace: str | None,
            served: set[tuple[str, str]]) -> list[dict[str, Any]]:
    """Every object of ``kinds`` matching ``selector`` (namespaced ones only in ``namespace``)."""
    found: list[dict[str, Any]] = []
    for kind in kinds:
        if (kind.api_version, kind.kind) not in served:
            continue  # e.g. Istio not installed yet: there can be none of them to prune
        if kind.namespaced and namespace is None:
            continue
        items = kube.list(kind.api_version, kind.kind, namespace if kind.namespaced else None,
                          label_selector=selector)
        for item in items:
            # Lists carry no apiVersion/kind per item in every client version: set them.
            item.setdefault("apiVersion", kind.api_version)
            item.setdefault("kind", kind.kind)
            found.append(item)
    return found


def execute(kube: Kube, tenant: str, steps: Sequence[Step], *, dry_run: bool = False) -> list[ObjectResult]:
    results: list[ObjectResult] = []
    new_namespaces = {s.ref.name for s in steps if s.ref.kind == "Namespace" and s.action is Action.CREATE}
    for step in steps:
        if step.action is Action.PRUNE:
            if not dry_run:
                kube.delete(step.ref)
            results.append(ObjectResult(tenant, step.ref, Outcome.WOULD_PRUNE if dry_run else Outcome.PRUNED))
            continue
        assert step.desired is not None
        if dry_run:
            results.append(ObjectResult(tenant, step.ref, _dry_run_outcome(kube, step, new_namespaces)))
            continue
        after = kube.apply(step.desired, field_manager=FIELD_MANAGER)
        if step.live is None:
            outcome = Outcome.CREATED
        else:
            outcome = Outcome.UNCHANGED if comparable(after) == comparable(step.live) else Outcome.CONFIGURED
        results.append(ObjectResult(tenant, step.ref, outcome))
    return results


def _dry_run_outcome(kube: Kube, step: Step, new_namespaces: set[str]) -> Outcome:
    assert step.desired is not None
    if step.ref.namespace in new_namespaces:
        return Outcome.WOULD_CREATE  # its namespace does not exist yet: the server cannot dry-run it
    after = kube.apply(step.desired, field_manager=FIELD_MANAGER, dry_run=True)
    if step.live is None:
        return Outcome.WOULD_CREATE
    return Outcome.UNCHANGED if comparable(after) == comparable(step.live) else Outcome.WOULD_CONFIGURE


@dataclass(frozen=True)
class Desired:
    """One unit of work: a tenant's rendered objects (or the shared ones)."""

    tenant: str
    objects: list[dict[str, Any]]

    @property
    def shared(self) -> bool:
        return self.tenant == SHARED


def _unserved(objects: Iterable[dict[str, Any]], served: set[tuple[str, str]]) -> list[str]:
    return sorted({f"{o['kind']} ({o['apiVersion']})" for o in objects if (o["apiVersion"], o["kind"]) not in served})


def converge(kube: Kube, unit: Desired, served: set[tuple[str, str]], *, dry_run: bool) -> list[ObjectResult]:
    missing = _unserved(unit.objects, served)
    if missing:
        raise InferboxError(f"the API server does not serve {', '.join(missing)}: install the platform first "
                            "(invoke bootstrap: Istio provides the security.istio.io kinds)")
    if unit.shared:
        observed = observe(kube, SHARED_KINDS, SHARED_SELECTOR, None, served)
    else:
        observed = observe(kube, TENANT_KINDS, tenant_selector(unit.tenant), unit.tenant, served)
    return execute(kube, unit.tenant, plan(unit.objects, observed), dry_run=dry_run)


def apply_all(kube: Kube, units: Sequence[Desired], *, dry_run: bool = False, max_workers: int = 8,
              declared: Iterable[str] | None = None) -> ApplyReport:
    """Converge the shared objects first, then every tenant concurrently; collect every failure."""
    report = ApplyReport(dry_run=dry_run)
    served = served_kinds(kube, (*TENANT_KINDS, *SHARED_KINDS))
    shared = [u for u in units if u.shared]
    tenants = [u for u in units if not u.shared]
    for unit in shared:  # the admission policy first: tenants' namespaces must be covered at once
        _run(report, unit.tenant, lambda u=unit: converge(kube, u, served, dry_run=dry_run))
    if tenants:
        with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(tenants))),
                                thread_name_prefix="tenant") as pool:
            futures = {u.tenant: pool.submit(converge, kube, u, served, dry_run=dry_run) for u in tenants}
        for name, future in futures.items():
            _run(report, name, future.result)
    report.results.sort(key=lambda r: (r.tenant != SHARED, r.tenant))  # stable: apply order within a tenant
    if declared is not None and ("v1", "Namespace") in served:
        report.orphans = orphaned_tenants(kube, set(declared))
    return report


def _run(report: ApplyReport, tenant: str, work: Callable[[], list[ObjectResult]]) -> None:
    try:
        report.results.extend(work())
    except (InferboxError, ClusterError, KubeError) as exc:
        report.errors[tenant] = str(exc)
        log.warning("tenant %s: %s", tenant, exc)


def orphaned_tenants(kube: Kube, declared: set[str]) -> list[str]:
    """Tenant namespaces inferbox made whose tenant file is gone (tenant-delete removes them)."""
    namespaces = kube.list("v1", "Namespace", label_selector=f"{MANAGED_BY_LABEL}={MANAGED_BY},{TENANT_LABEL}")
    return sorted(n["metadata"]["labels"][TENANT_LABEL] for n in namespaces
                  if n["metadata"]["labels"][TENANT_LABEL] not in declared)


# -- deleting a tenant --------------------------------------------------------------------------


def foreign_objects(kube: Kube, namespace: str, served: set[tuple[str, str]]) -> list[str]:
    """Objects in ``namespace`` that inferbox does not own and no other object owns."""
    found = []
    for kind in FOREIGN_ROOT_KINDS:
        if (kind.api_version, kind.kind) not in served:
            continue
        for obj in kube.list(kind.api_version, kind.kind, namespace):
            meta = obj.get("metadata") or {}
            if (meta.get("labels") or {}).get(MANAGED_BY_LABEL) == MANAGED_BY or meta.get("ownerReferences"):
                continue
            if (kind.kind, meta.get("name")) in SYSTEM_OBJECTS:
                continue
            found.append(f"{kind.kind.lower()}/{meta.get('name')}")
    return found


def delete_tenant(kube: Kube, name: str, *, confirmed: bool) -> ApplyReport:
    """Delete what inferbox made for tenant ``name`` (found by its labels), nothing else.

    The namespace goes last and only when nothing foreign is left in it; otherwise it is kept
    and the report says what holds it.
    """
    if not confirmed:
        raise InferboxError(f"not deleting tenant {name!r} without confirmation")
    served = served_kinds(kube, (*TENANT_KINDS, *FOREIGN_ROOT_KINDS))
    owned = observe(kube, TENANT_KINDS, tenant_selector(name), name, served)
    report = ApplyReport()
    if not owned:
        return report
    steps = plan([], owned)
    contents = [s for s in steps if s.ref.kind != "Namespace"]
    report.results.extend(execute(kube, name, contents))
    for step in steps:
        if step.ref.kind != "Namespace":
            continue
        foreign = foreign_objects(kube, step.ref.name, served)
        if foreign:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            report.results.append(ObjectResult(name, step.ref, Outcome.KEPT, f"still holds {shown}"))
        else:
            report.results.extend(execute(kube, name, [step]))
    return report

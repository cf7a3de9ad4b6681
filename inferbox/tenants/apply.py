"""Make the cluster match the tenant files: plan, apply (server-side), prune, report.

* ``plan(desired, observed)`` is pure: create what is missing, apply what exists, skip what is
  unchanged, prune what is labelled for the tenant but no longer rendered.
* ``apply_all`` observes every tenant's objects with one LIST per kind, then carries the plans
  out concurrently across tenants (objects of one tenant in apply order, isolation first),
  server-side apply with the one field manager ``inferbox``. Each object is reported created /
  configured / unchanged / pruned.
* Unchanged objects cost no request: every applied object carries the digest of what was
  applied (``inferbox.dev/applied-digest``); an object whose digest matches and whose live
  fields still hold every applied value is left alone. Anything else is applied, and called
  "unchanged" when the object after the apply equals the one before, status and bookkeeping aside.
* A tenant is all-or-nothing: the first object the API server refuses stops that tenant, and
  what this run created is deleted again (a namespace it created, with everything in it). An
  existing tenant whose objects were already changed is reported object by object, with the
  command that finishes it. Other tenants are not affected.
* ``dry_run=True`` asks the API server for a dry-run apply of every changed object instead,
  changing nothing; objects of a namespace that does not exist yet are validated in ``default``
  (the server refuses a dry run into a missing namespace), so every object is checked.
* ``delete_tenant`` removes only what carries the tenant's ownership labels, and keeps the
  namespace when something inferbox does not own still lives in it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from inferbox.errors import ClusterError, InferboxError, KubeError, NotFound
from inferbox.hints import invoke
from inferbox.k8s import Kube, ObjectRef
from inferbox.render import sort_objects
from inferbox.tenants.render import (
    COMPONENT_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    TENANT_LABEL,
    sort_tenant_objects,
    tenant_selector,
)
from inferbox.tenants.spec import parse_quantity

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
    ManagedKind("networking.k8s.io/v1", "NetworkPolicy"),
    ManagedKind("security.istio.io/v1", "PeerAuthentication"),
    ManagedKind("security.istio.io/v1", "RequestAuthentication"),
    ManagedKind("security.istio.io/v1", "AuthorizationPolicy"),
    ManagedKind("v1", "ResourceQuota"),
    ManagedKind("v1", "LimitRange"),
    ManagedKind("v1", "ServiceAccount"),
    ManagedKind("v1", "ConfigMap"),
    ManagedKind("rbac.authorization.k8s.io/v1", "Role"),
    ManagedKind("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ManagedKind("networking.istio.io/v1alpha3", "EnvoyFilter"),
    # The tenant's OpenAI endpoint on the AI gateway (manifests/tenant/aigateway.yaml.j2).
    ManagedKind("gateway.envoyproxy.io/v1alpha1", "SecurityPolicy"),
    ManagedKind("gateway.envoyproxy.io/v1alpha1", "BackendTrafficPolicy"),
    ManagedKind("gateway.envoyproxy.io/v1alpha1", "Backend"),
    ManagedKind("aigateway.envoyproxy.io/v1beta1", "AIServiceBackend"),
    ManagedKind("aigateway.envoyproxy.io/v1beta1", "AIGatewayRoute"),
    ManagedKind("monitoring.coreos.com/v1", "PrometheusRule"),
)
DIGEST_ANNOTATION = "inferbox.dev/applied-digest"
# The isolation: their spec must be exactly what is rendered. A field someone added (a selector
# on the ALLOW policy, a port-level mTLS exception) can open the namespace, and server-side apply
# leaves fields it does not own alone: such drift is replaced, not merged.
EXACT_SPEC_KINDS = frozenset({"NetworkPolicy", "PeerAuthentication", "RequestAuthentication", "AuthorizationPolicy"})
# Quantities the API server writes back in its canonical form ("1.5" -> "1500m").
QUANTITY_KINDS = frozenset({"ResourceQuota", "LimitRange"})
# Which part of a tenant file each rendered kind comes from, for errors the API server reports.
SOURCE_FIELDS = {"Namespace": "name, displayName, labels", "ResourceQuota": "quotas", "LimitRange": "limitRange",
                 "AuthorizationPolicy": "callers", "EnvoyFilter": "rateLimit", "ConfigMap": "models"}
# Where a dry run validates objects whose namespace does not exist yet: every cluster has it.
DRY_RUN_NAMESPACE = "default"
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
    ROLLED_BACK = "rolled back"  # created by this run, deleted again when the tenant failed
    NOT_APPLIED = "not applied"  # the tenant failed before this object's turn

    @property
    def changes(self) -> bool:
        return self not in (Outcome.UNCHANGED, Outcome.KEPT, Outcome.ROLLED_BACK, Outcome.NOT_APPLIED)


@dataclass(frozen=True)
class Step:
    action: Action
    ref: ObjectRef
    desired: dict[str, Any] | None = None
    live: dict[str, Any] | None = None
    unchanged: bool = False  # the live object already holds ``desired`` (see ``in_effect``)


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


def _key(ref: ObjectRef) -> tuple[str, str, str, str]:
    # The group, not the version: the same object read through another version is still the same.
    return ref.api_version.rpartition("/")[0], ref.kind, ref.namespace or "", ref.name


_VOLATILE_METADATA = ("resourceVersion", "managedFields", "generation", "uid", "creationTimestamp", "selfLink")


def comparable(obj: dict[str, Any]) -> dict[str, Any]:
    """The object without status, the metadata the server maintains and the applied digest: what
    an apply may change."""
    out = {k: v for k, v in obj.items() if k != "status"}
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in _VOLATILE_METADATA}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != DIGEST_ANNOTATION}
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    out["metadata"] = meta
    return out


def with_digest(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` with the digest of its content as an annotation (a copy; ``obj`` is unchanged)."""
    digest = hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    meta = dict(obj.get("metadata") or {})
    meta["annotations"] = {**(meta.get("annotations") or {}), DIGEST_ANNOTATION: digest}
    return {**obj, "metadata": meta}


def _holds(live: Any, desired: Any, *, quantities: bool = False) -> bool:
    """Every value of ``desired`` is in ``live`` (which may hold more: server defaults);
    ``quantities``: strings that are equal Kubernetes quantities count as equal."""
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(k in live and _holds(live[k], v, quantities=quantities)
                                              for k, v in desired.items())
    if isinstance(desired, list):
        return isinstance(live, list) and len(live) == len(desired) and all(
            _holds(a, b, quantities=quantities) for a, b in zip(live, desired, strict=True))
    if quantities and isinstance(live, str) and isinstance(desired, str) and live != desired:
        try:
            return parse_quantity(live) == parse_quantity(desired)
        except ValueError:
            return False
    return bool(live == desired)


def exact_spec_drift(desired: dict[str, Any], live: dict[str, Any] | None) -> bool:
    """An isolation object whose live spec is not exactly the rendered one."""
    return live is not None and desired["kind"] in EXACT_SPEC_KINDS and live.get("spec") != desired.get("spec")


def in_effect(desired: dict[str, Any], live: dict[str, Any] | None) -> bool:
    """Would applying ``desired`` (made by ``with_digest``) leave ``live`` as it is? Yes when the
    live object carries the same digest (so no field was dropped from the file since) and still
    holds every applied value (so nobody changed one since)."""
    if live is None:
        return False
    digest = (desired["metadata"].get("annotations") or {}).get(DIGEST_ANNOTATION)
    live_digest = ((live.get("metadata") or {}).get("annotations") or {}).get(DIGEST_ANNOTATION)
    return (digest is not None and digest == live_digest and not exact_spec_drift(desired, live)
            and _holds(live, desired, quantities=desired["kind"] in QUANTITY_KINDS))


# -- the plan (pure) ----------------------------------------------------------------------------


def plan(desired: Sequence[dict[str, Any]], observed: Iterable[dict[str, Any]], *,
         order: Callable[..., list[dict[str, Any]]] = sort_objects) -> list[Step]:
    """Steps that make ``observed`` (what the labels find) into ``desired``: creates and applies in
    ``order``, then prunes in reverse order (contents before their namespace)."""
    live = {_key(ObjectRef.of(obj)): obj for obj in observed}
    wanted = {_key(ObjectRef.of(obj)) for obj in desired}
    steps = []
    for obj in order([with_digest(o) for o in desired]):
        current = live.get(_key(ObjectRef.of(obj)))
        steps.append(Step(Action.APPLY if current is not None else Action.CREATE, ObjectRef.of(obj), obj, current,
                          unchanged=in_effect(obj, current)))
    stale = [obj for key, obj in live.items() if key not in wanted]
    steps += [Step(Action.PRUNE, ObjectRef.of(obj), None, obj) for obj in order(stale, reverse=True)]
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
    """Every object of ``kinds`` matching ``selector``: namespaced ones in ``namespace``, or in
    every namespace when ``namespace`` is None (one LIST per kind for all tenants)."""
    found: list[dict[str, Any]] = []
    for kind in kinds:
        if (kind.api_version, kind.kind) not in served:
            continue  # e.g. Istio not installed yet: there can be none of them to prune
        items = kube.list(kind.api_version, kind.kind, namespace if kind.namespaced else None,
                          label_selector=selector)
        for item in items:
            # List items carry no apiVersion/kind: set them.
            item.setdefault("apiVersion", kind.api_version)
            item.setdefault("kind", kind.kind)
            found.append(item)
    return found


class TenantFailed(InferboxError):
    """The API server refused one of a tenant's objects; ``results`` says where each object stands."""

    def __init__(self, message: str, results: list[ObjectResult]) -> None:
        super().__init__(message)
        self.results = results


def execute(kube: Kube, tenant: str, steps: Sequence[Step], *, dry_run: bool = False) -> list[ObjectResult]:
    """Carry ``steps`` out in order. The first refusal stops the run: what it created is deleted
    again, and ``TenantFailed`` reports every object (done, rolled back, not applied)."""
    results: list[ObjectResult] = []
    new_namespaces = {s.ref.name for s in steps if s.ref.kind == "Namespace" and s.action is Action.CREATE}
    if dry_run:  # one without our labels may exist already: then the dry run can use it
        new_namespaces = {n for n in new_namespaces if kube.get(ObjectRef("v1", "Namespace", n)) is None}
    for index, step in enumerate(steps):
        try:
            results.append(_execute_step(kube, tenant, step, new_namespaces, dry_run=dry_run))
        except (KubeError, ClusterError) as exc:
            if dry_run:
                raise TenantFailed(f"{_source(tenant, step.ref)}: {step.ref} would be refused: {exc}; "
                                   "nothing was changed", results) from exc
            raise _roll_back(kube, tenant, steps, index, results, exc=exc) from exc
    return results


def _execute_step(kube: Kube, tenant: str, step: Step, new_namespaces: set[str], *, dry_run: bool) -> ObjectResult:
    if step.action is Action.PRUNE:
        kube.delete(step.ref, dry_run=dry_run)
        return ObjectResult(tenant, step.ref, Outcome.WOULD_PRUNE if dry_run else Outcome.PRUNED)
    assert step.desired is not None
    if step.unchanged:
        return ObjectResult(tenant, step.ref, Outcome.UNCHANGED)  # no request: see in_effect
    if dry_run:
        return ObjectResult(tenant, step.ref, _dry_run_outcome(kube, step, new_namespaces))
    after = kube.apply(step.desired, field_manager=FIELD_MANAGER)
    if exact_spec_drift(step.desired, after):
        # Fields another manager added survive an apply: put the rendered spec back whole.
        after = kube.replace({**after, "spec": step.desired["spec"]}, field_manager=FIELD_MANAGER)
        return ObjectResult(tenant, step.ref, Outcome.CONFIGURED, "fields added by hand removed from spec")
    if step.live is None:
        if _made_by_us(after):
            return ObjectResult(tenant, step.ref, Outcome.CREATED)
        # It was there already, without our labels (made by hand, or by another tool): adopted,
        # and so never deleted by a rollback.
        return ObjectResult(tenant, step.ref, Outcome.CONFIGURED, "existed without inferbox's labels; adopted")
    same = comparable(after) == comparable(step.live)
    return ObjectResult(tenant, step.ref, Outcome.UNCHANGED if same else Outcome.CONFIGURED)


def _made_by_us(obj: dict[str, Any]) -> bool:
    """Did our apply create ``obj``? Then its field managers are ours alone (an object that was
    there before carries its creator's entry, e.g. kubectl-create or kubectl-client-side-apply)."""
    managers = {entry.get("manager") for entry in (obj.get("metadata") or {}).get("managedFields") or []}
    return managers <= {FIELD_MANAGER}


def _dry_run_outcome(kube: Kube, step: Step, new_namespaces: set[str]) -> Outcome:
    assert step.desired is not None
    desired = step.desired
    if step.ref.namespace in new_namespaces:
        # Its namespace does not exist yet, and the server refuses a dry run into a missing
        # namespace: validate the same object in one that exists (nothing is stored either way).
        desired = {**desired, "metadata": {**desired["metadata"], "namespace": DRY_RUN_NAMESPACE}}
    after = kube.apply(desired, field_manager=FIELD_MANAGER, dry_run=True)
    if step.live is None:
        return Outcome.WOULD_CREATE
    return Outcome.UNCHANGED if comparable(after) == comparable(step.live) else Outcome.WOULD_CONFIGURE


def _source(tenant: str, ref: ObjectRef) -> str:
    """Where to look in the tenant's file: ``tenants/<name>.yaml (quotas)``."""
    if tenant == SHARED:
        return "the objects all tenants share (manifests/tenant/shared.yaml.j2)"
    field = SOURCE_FIELDS.get(ref.kind)
    return f"tenants/{tenant}.yaml" + (f" ({field})" if field else "")


def _roll_back(kube: Kube, tenant: str, steps: Sequence[Step], failed: int, results: list[ObjectResult], *,
               exc: Exception) -> TenantFailed:
    """Undo what this run created; say exactly where every object of the tenant stands."""
    step = steps[failed]
    pending = [ObjectResult(tenant, step.ref, Outcome.NOT_APPLIED, f"refused: {exc}")]
    pending += [ObjectResult(tenant, s.ref, Outcome.NOT_APPLIED) for s in steps[failed + 1:]]
    created = [r for r in results if r.outcome is Outcome.CREATED]
    namespace = next((r for r in created if r.ref.kind == "Namespace"), None)
    undo = [namespace] if namespace is not None else created[::-1]  # a new namespace takes its contents
    undone: set[ObjectRef] = set()
    for result in undo:
        try:
            kube.delete(result.ref)
            undone.add(result.ref)
        except (KubeError, ClusterError) as delete_exc:
            log.warning("tenant %s: could not roll back %s: %s", tenant, result.ref, delete_exc)
    if namespace is not None and namespace.ref in undone:
        undone |= {r.ref for r in created}
    final = [ObjectResult(tenant, r.ref, Outcome.ROLLED_BACK, "created by this run, deleted again")
             if r.ref in undone else r for r in results] + pending
    changed = [r for r in final if r.outcome in (Outcome.CREATED, Outcome.CONFIGURED)]
    head = f"{_source(tenant, step.ref)}: {step.ref} was refused: {exc}"
    if not changed:
        where = "what this run created was deleted again" if undone else "nothing was changed"
        message = f"{head}; {where}, the tenant is as it was"
    else:
        shown = ", ".join(f"{r.ref} ({r.outcome.value})" for r in changed)
        finish = (f"run `{invoke('tenants-apply')}` once the cause is fixed" if tenant == SHARED else
                  f"fix tenants/{tenant}.yaml and run `{invoke(f'tenants-apply --tenant {tenant}')}`")
        message = f"{head}; these objects already hold the new spec: {shown}; {len(pending)} not applied: {finish}"
    return TenantFailed(message, final)


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


def plan_unit(unit: Desired, served: set[tuple[str, str]], observed: list[dict[str, Any]]) -> list[Step]:
    """The steps that make one unit so, given what the labels found of it."""
    missing = _unserved(unit.objects, served)
    if missing:
        raise InferboxError(f"the API server does not serve {', '.join(missing)}: install the platform first "
                            "(invoke bootstrap: Istio provides the security.istio.io kinds)")
    return plan(unit.objects, observed, order=sort_objects if unit.shared else sort_tenant_objects)


def _belongs(obj: dict[str, Any], tenant: str) -> bool:
    """A tenant owns objects in its namespace, and the Namespace named after it: never another
    namespace that merely carries a copy of its labels (pruning would delete that namespace).
    A Namespace has no metadata.namespace, so its own name stands in (list items carry no kind)."""
    meta = obj.get("metadata") or {}
    return (meta.get("namespace") or meta.get("name")) == tenant


def observe_tenants(kube: Kube, names: Iterable[str], served: set[tuple[str, str]]) -> dict[str, list[dict[str, Any]]]:
    """Each tenant's live objects, found by their labels: one LIST per kind for all of them."""
    found: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    if len(found) == 1:  # one tenant: its namespace and label only
        (name,) = found
        listed = observe(kube, TENANT_KINDS, tenant_selector(name), name, served)
    else:
        listed = observe(kube, TENANT_KINDS, f"{MANAGED_BY_LABEL}={MANAGED_BY},{TENANT_LABEL}", None, served)
    for obj in listed:
        owner = ((obj.get("metadata") or {}).get("labels") or {}).get(TENANT_LABEL)
        if owner in found and _belongs(obj, owner):
            found[owner].append(obj)
    return found


Check = Callable[[list[dict[str, Any]]], None]


def apply_all(kube: Kube, units: Sequence[Desired], *, dry_run: bool = False, max_workers: int = 8,
              declared: Iterable[str] | None = None, check: Check | None = None) -> ApplyReport:
    """Plan every unit, ``check`` every object that is to be sent (raising stops everything
    before any change), then converge the shared objects, then every tenant concurrently.

    A failed tenant is rolled back (see ``execute``) and named in ``report.errors``; the others
    go on. When the shared objects fail, no tenant is applied. Objects already in effect are
    neither checked nor sent: the API server validated them when they were applied.
    """
    report = ApplyReport(dry_run=dry_run)
    served = served_kinds(kube, (*TENANT_KINDS, *SHARED_KINDS))
    tenants = [u for u in units if not u.shared]
    live = observe_tenants(kube, (u.tenant for u in tenants), served) if tenants else {}
    if any(u.shared for u in units):
        live[SHARED] = observe(kube, SHARED_KINDS, SHARED_SELECTOR, None, served)
    plans: dict[str, list[Step]] = {}
    for unit in units:
        try:
            plans[unit.tenant] = plan_unit(unit, served, live[unit.tenant])
        except InferboxError as exc:
            report.errors[unit.tenant] = str(exc)
    if report.errors:
        return report
    if check is not None:
        check([s.desired for steps in plans.values() for s in steps if s.desired is not None and not s.unchanged])
    if SHARED in plans:  # the admission policy first: tenants' namespaces must be covered at once
        _run(report, SHARED, lambda: execute(kube, SHARED, plans[SHARED], dry_run=dry_run))
        if report.errors:
            return report
    if tenants:
        with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(tenants))),
                                thread_name_prefix="tenant") as pool:
            futures = {u.tenant: pool.submit(execute, kube, u.tenant, plans[u.tenant], dry_run=dry_run)
                       for u in tenants}
        for name, future in futures.items():
            _run(report, name, future.result)
    report.results.sort(key=lambda r: (r.tenant != SHARED, r.tenant))  # stable: apply order within a tenant
    if declared is not None and ("v1", "Namespace") in served:
        report.orphans = orphaned_tenants(kube, set(declared))
    return report


def _run(report: ApplyReport, tenant: str, work: Callable[[], list[ObjectResult]]) -> None:
    try:
        report.results.extend(work())
    except TenantFailed as exc:
        report.results.extend(exc.results)
        report.errors[tenant] = str(exc)
        log.warning("tenant %s: %s", tenant, exc)
    except (InferboxError, ClusterError, KubeError) as exc:
        report.errors[tenant] = str(exc)
        log.warning("tenant %s: %s", tenant, exc)


def orphaned_tenants(kube: Kube, declared: set[str]) -> list[str]:
    """Tenant namespaces inferbox made whose tenant file is gone (tenant-delete removes them)."""
    namespaces = kube.list("v1", "Namespace", label_selector=f"{MANAGED_BY_LABEL}={MANAGED_BY},{TENANT_LABEL}")
    return sorted(n["metadata"]["name"] for n in namespaces
                  if _belongs(n, n["metadata"]["labels"][TENANT_LABEL]) and n["metadata"]["name"] not in declared)


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
    owned = observe_tenants(kube, [name], served)[name]
    report = ApplyReport()
    if not owned:
        return report
    steps = plan([], owned, order=sort_tenant_objects)
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

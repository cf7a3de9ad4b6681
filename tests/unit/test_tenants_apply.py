"""The pure part of tenants-apply: plan(desired, observed), change detection, the report."""

from __future__ import annotations

from typing import Any

from inferbox.k8s import ObjectRef
from inferbox.tenants.apply import Action, ApplyReport, ObjectResult, Outcome, comparable, plan


def obj(kind: str, name: str, namespace: str | None = "t", api_version: str = "v1", **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": api_version, "kind": kind, "metadata": meta, **extra}


def live(desired: dict[str, Any], **server: Any) -> dict[str, Any]:
    """What the server returns for an object: its own bookkeeping added."""
    meta = {**desired["metadata"], "resourceVersion": "7", "uid": "u", "generation": 1,
            "creationTimestamp": "2026-01-01T00:00:00Z", "managedFields": [{"manager": "inferbox"}]}
    return {**desired, "metadata": meta, "status": {"x": 1}, **server}


NAMESPACE = obj("Namespace", "t", None)
QUOTA = obj("ResourceQuota", "q", spec={"hard": {"pods": "1"}})
POLICY = obj("AuthorizationPolicy", "allow", api_version="security.istio.io/v1", spec={"action": "ALLOW"})
FILTER = obj("EnvoyFilter", "rl", api_version="networking.istio.io/v1alpha3", spec={})
ROLE = obj("Role", "r", api_version="rbac.authorization.k8s.io/v1", rules=[])


def summary(steps: list[Any]) -> list[tuple[str, str]]:
    return [(s.action.value, f"{s.ref.kind}/{s.ref.name}") for s in steps]


def test_first_run_creates_everything_in_apply_order() -> None:
    steps = plan([POLICY, QUOTA, ROLE, NAMESPACE], [])
    assert summary(steps) == [("create", "Namespace/t"), ("create", "Role/r"), ("create", "AuthorizationPolicy/allow"),
                              ("create", "ResourceQuota/q")]


def test_existing_objects_are_applied_and_undeclared_ones_pruned_last() -> None:
    observed = [live(NAMESPACE), live(QUOTA), live(FILTER), live(ROLE)]
    steps = plan([NAMESPACE, QUOTA, POLICY], observed)
    # Within a kind rank the rendered order is kept; prunes come last, in reverse apply order.
    assert summary(steps) == [("apply", "Namespace/t"), ("apply", "ResourceQuota/q"),
                              ("create", "AuthorizationPolicy/allow"), ("prune", "EnvoyFilter/rl"), ("prune", "Role/r")]
    assert steps[0].live == observed[0] and steps[2].live is None
    assert steps[-1].desired is None


def test_identity_ignores_the_served_version() -> None:
    """An object read back through another version of its group is the same object, not a prune."""
    observed = [live(obj("EnvoyFilter", "rl", api_version="networking.istio.io/v1beta1"))]
    assert summary(plan([FILTER], observed)) == [("apply", "EnvoyFilter/rl")]


def test_same_name_other_namespace_is_another_object() -> None:
    steps = plan([QUOTA], [live(obj("ResourceQuota", "q", namespace="other"))])
    assert summary(steps) == [("create", "ResourceQuota/q"), ("prune", "ResourceQuota/q")]


def test_comparable_ignores_status_and_server_bookkeeping() -> None:
    before = live(QUOTA)
    after = live(QUOTA, status={"used": {"pods": "1"}})
    after["metadata"]["resourceVersion"] = "8"
    assert comparable(before) == comparable(after)
    changed = live({**QUOTA, "spec": {"hard": {"pods": "2"}}})
    assert comparable(before) != comparable(changed)
    relabelled = live(QUOTA)
    relabelled["metadata"]["labels"] = {"a": "b"}
    assert comparable(before) != comparable(relabelled)


def ref(name: str) -> ObjectRef:
    return ObjectRef("v1", "ConfigMap", name, "t")


def test_report_says_when_nothing_changed() -> None:
    report = ApplyReport(results=[ObjectResult("t", ref("a"), Outcome.UNCHANGED),
                                  ObjectResult("t", ref("b"), Outcome.UNCHANGED)])
    assert report.changed == [] and report.summary() == "nothing changed: all 2 objects unchanged"
    report.results.append(ObjectResult("t", ref("c"), Outcome.PRUNED))
    assert report.summary() == "1 pruned, 2 unchanged"
    report.errors["u"] = "boom"
    assert report.summary() == "failed for u"


def test_dry_run_summary() -> None:
    report = ApplyReport(results=[ObjectResult("t", ref("a"), Outcome.WOULD_CREATE)], dry_run=True)
    assert report.summary() == "dry run: 1 would create"
    assert Action.PRUNE.value == "prune"

"""The monitoring objects against a real API server with the prometheus-operator CRDs: they are
admitted, survive structural pruning unchanged (every field is one the CRD knows), re-apply without
a change, and the server rejects what the CRD schema forbids."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from inferbox.config import Settings
from inferbox.errors import Invalid, KubeError
from inferbox.k8s import Kube, ObjectRef
from inferbox.observability.manifests import render_monitoring
from inferbox.testenv import ControlPlane

pytestmark = [pytest.mark.cluster, pytest.mark.crds]

FIELD_MANAGER = "inferbox-test"


@pytest.fixture(scope="module")
def kube(control_plane: ControlPlane, crds_installed: object) -> Kube:
    return Kube.connect(kubeconfig=control_plane.kubeconfig)


@pytest.fixture
def objects(make_settings: Callable[..., Settings], make_namespace: Callable[[str], str]) -> list[dict[str, Any]]:
    # A fresh namespace stands in for "monitoring" (other tests share the control plane).
    return render_monitoring(make_settings(), namespace=make_namespace("obs"))


def missing(stored: Any, rendered: Any, path: str = "") -> list[str]:
    """Where ``rendered`` is not found in ``stored`` (the server may add defaults, never drop fields)."""
    if isinstance(rendered, dict):
        if not isinstance(stored, dict):
            return [path or "<top>"]
        return [p for key, value in rendered.items()
                for p in (missing(stored[key], value, f"{path}.{key}") if key in stored else [f"{path}.{key}"])]
    if isinstance(rendered, list):
        if not isinstance(stored, list) or len(stored) != len(rendered):
            return [path]
        return [p for i, (s, r) in enumerate(zip(stored, rendered, strict=True)) for p in missing(s, r, f"{path}[{i}]")]
    return [] if stored == rendered else [f"{path}: {stored!r} != {rendered!r}"]


def ref(obj: dict[str, Any]) -> ObjectRef:
    return ObjectRef(obj["apiVersion"], obj["kind"], obj["metadata"]["name"], obj["metadata"]["namespace"])


def test_monitoring_objects_apply_unpruned_and_idempotently(kube: Kube, objects: list[dict[str, Any]]) -> None:
    first = {}
    for obj in objects:
        applied = kube.apply(obj, field_manager=FIELD_MANAGER)
        first[ref(obj)] = applied["metadata"]["resourceVersion"]
        stored = kube.get(ref(obj))
        assert stored is not None
        body = "data" if obj["kind"] == "ConfigMap" else "spec"
        # The API server silently drops fields its schema does not know (and adds defaults, such as
        # relabelings' action: replace): every rendered field still being there proves none was unknown.
        assert missing(stored[body], obj[body]) == [], f"{obj['kind']} {obj['metadata']['name']} pruned"
        for key, value in obj["metadata"]["labels"].items():
            assert stored["metadata"]["labels"][key] == value
    kinds = sorted(r.kind for r in first)
    assert kinds == ["ConfigMap"] * 4 + ["PodMonitor"] * 3 + ["PrometheusRule"]
    # Applying the same objects again changes nothing.
    for obj in objects:
        again = kube.apply(obj, field_manager=FIELD_MANAGER)
        assert again["metadata"]["resourceVersion"] == first[ref(obj)]


@pytest.mark.parametrize(("kind", "change", "message"), [
    ("PodMonitor", lambda o: o["spec"]["podMetricsEndpoints"][0]["relabelings"][0].update(action="explode"),
     "action"),
    ("PodMonitor", lambda o: o["spec"]["podMetricsEndpoints"][0].update(interval="every 30 seconds"), "interval"),
    ("PrometheusRule", lambda o: o["spec"]["groups"][1]["rules"][0].update({"for": "ten minutes"}), "for"),
], ids=["relabel-action", "interval", "rule-for"])
def test_server_rejects_what_the_crd_forbids(kube: Kube, objects: list[dict[str, Any]], kind: str,
                                             change: Callable[[dict[str, Any]], None], message: str) -> None:
    broken = copy.deepcopy(next(o for o in objects if o["kind"] == kind))
    change(broken)
    with pytest.raises(Invalid, match=message):
        kube.apply(broken, field_manager=FIELD_MANAGER)



def test_a_field_the_crd_does_not_know_is_refused(kube: Kube, objects: list[dict[str, Any]]) -> None:
    """Server-side apply builds a typed patch from the CRD schema: an undeclared field fails the apply."""
    monitor = copy.deepcopy(next(o for o in objects if o["kind"] == "PodMonitor"))
    monitor["spec"]["podMetricsEndpoints"][0]["scrapeEvery"] = "30s"
    with pytest.raises(KubeError, match=r"\.spec\.podMetricsEndpoints\[0\]\.scrapeEvery: field not declared in schema"):
        kube.apply(monitor, field_manager=FIELD_MANAGER)

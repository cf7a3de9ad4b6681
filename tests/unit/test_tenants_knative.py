"""Knative mode's flows into a tenant: the activator and autoscaler (namespace knative-serving) are
admitted exactly on queue-proxy's probe and metrics paths, and nothing else is opened. Each flow is
judged against the rendered NetworkPolicies and AuthorizationPolicy (tests/unit/meshmodel.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from inferbox import PROJECT_ROOT
from inferbox.render import Renderer
from inferbox.tenants.keys import ISSUER, KeyStore, issue_token
from inferbox.tenants.render import render_tenant
from inferbox.tenants.spec import Tenant
from inferbox.validate import SchemaValidator
from tests.unit.meshmodel import network_allows, sidecar_status
from tests.unit.test_tenants_spec import VALID

NOW = 1_800_000_000
PREDICTOR = {"component": "predictor"}


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    keys = KeyStore(tmp_path / "keys")
    keys.ensure()
    return keys


def render(store: KeyStore, *, knative: bool) -> list[dict[str, Any]]:
    doc = {**VALID, "name": "tenant-a", "callers": {"subjects": ["iris-web"]}}
    return render_tenant(Tenant.model_validate(doc), ISSUER, store.jwks_json(), knative=knative)


# (who, source namespace, port, method, path, token?) -> admitted with --knative, admitted without
FLOWS = [
    ("activator probe", "knative-serving", 8012, "GET", "/healthz", False, True, False),
    ("autoscaler scrape", "knative-serving", 9090, "GET", "/metrics", False, True, False),
    ("activator proxying a caller", "knative-serving", 8012, "POST", "/v1/models/m:predict", True, True, False),
    ("activator without a token", "knative-serving", 8012, "POST", "/v1/models/m:predict", False, False, False),
    ("knative-serving to the model port", "knative-serving", 8080, "GET", "/healthz", False, False, False),
    ("knative-serving, metrics on the probe port", "knative-serving", 8012, "GET", "/metrics", False, True, False),
    ("knative-serving, other path on 9090", "knative-serving", 9090, "GET", "/debug/pprof", False, False, False),
    ("another namespace probing", "default", 8012, "GET", "/healthz", False, False, False),
    ("gateway with a caller's token", "istio-ingress", 8080, "POST", "/v1/models/m:predict", True, True, True),
    ("gateway without a token", "istio-ingress", 8080, "POST", "/v1/models/m:predict", False, False, False),
]


@pytest.mark.parametrize(("who", "namespace", "port", "method", "path", "with_token", "on", "off"), FLOWS,
                         ids=[f[0] for f in FLOWS])
def test_flow(store: KeyStore, who: str, namespace: str, port: int, method: str, path: str, with_token: bool,
              on: bool, off: bool) -> None:
    token = issue_token(store, tenant="tenant-a", subject="iris-web", ttl_s=300, now=NOW).token if with_token else None
    for knative, expected in ((True, on), (False, off)):
        objects = render(store, knative=knative)
        admitted = network_allows(objects, source_namespace=namespace, pod_labels=PREDICTOR, port=port) and \
            sidecar_status(objects, token, now=NOW, method=method, path=path, source_namespace=namespace,
                           port=port) == 200
        assert admitted is expected, (who, "knative" if knative else "standard")


def test_knative_adds_exactly_two_objects_worth_of_rules(store: KeyStore) -> None:
    on, off = render(store, knative=True), render(store, knative=False)
    names = {(o["kind"], o["metadata"]["name"]) for o in on} - {(o["kind"], o["metadata"]["name"]) for o in off}
    assert names == {("NetworkPolicy", "allow-knative-system")}
    (policy_on,) = [o for o in on if o["kind"] == "AuthorizationPolicy"]
    (policy_off,) = [o for o in off if o["kind"] == "AuthorizationPolicy"]
    added = [r for r in policy_on["spec"]["rules"] if r not in policy_off["spec"]["rules"]]
    assert added == [{"from": [{"source": {"namespaces": ["knative-serving"]}}],
                      "to": [{"operation": {"ports": ["8012", "9090"], "paths": ["/healthz", "/metrics"]}}]}]


def test_knative_serving_admits_gpu_models(upstream_crds_dir: Path) -> None:
    """A GPU InferenceService carries a nodeSelector and tolerations; Knative 1.23 refuses both
    unless its features enable them. The rendered KnativeServing enables exactly those; the
    knative-serving namespace is meshed. (The KnativeServing's CRD comes with the knative-operator
    chart, not ../shared/crds: the render check validates it, `invoke charts-verify`.)"""
    from inferbox.config import load_versions

    versions = load_versions(PROJECT_ROOT / "versions.toml")
    objects = Renderer(PROJECT_ROOT / "manifests").objects(
        "knative-serving.yaml.j2", serving_version=versions.knative.serving_version, gateway_namespace="istio-ingress")
    namespace, serving = objects
    assert namespace["metadata"]["labels"]["istio-injection"] == "enabled"
    features = serving["spec"]["config"]["features"]
    assert features == {"kubernetes.podspec-nodeselector": "enabled", "kubernetes.podspec-tolerations": "enabled"}
    # What a GPU model's pod spec uses in Knative mode is exactly what the features enable.
    predictor = _gpu_model_in_knative_mode()["spec"]["predictor"]
    assert "nodeSelector" in predictor and "tolerations" in predictor
    assert not {"affinity", "runtimeClassName"} & set(predictor)
    istio = serving["spec"]["config"]["istio"]
    assert istio["local-gateway.knative-serving.knative-local-gateway"] == \
        "knative-local-gateway.istio-ingress.svc.cluster.local"
    report = SchemaValidator(versions.kubernetes.version, [upstream_crds_dir]).validate(objects)
    assert "Namespace knative-serving" in report.checked
    # The Knative Service a GPU model becomes validates against Knative Serving's own CRD.
    service = {"apiVersion": "serving.knative.dev/v1", "kind": "Service",
               "metadata": {"name": "gpu-model", "namespace": "tenant-c"},
               "spec": {"template": {"spec": {k: v for k, v in _gpu_model_in_knative_mode()["spec"]["predictor"].items()
                                              if k in ("nodeSelector", "tolerations")}
                                     | {"containers": [{"image": "example.invalid/model:1"}]}}}}
    SchemaValidator(versions.kubernetes.version, [upstream_crds_dir]).validate([service], require_all=True)


def _gpu_model_in_knative_mode() -> dict[str, Any]:
    from inferbox.models.catalog import default_catalog_path, load_catalog
    from inferbox.models.render import DeploymentMode, RenderOptions, render_inferenceservice

    catalog = load_catalog(default_catalog_path(PROJECT_ROOT))
    gpu = next(m for m in catalog.models.values() if m.resolved(cpu_fallback=False)[0].gpus)
    return render_inferenceservice(gpu, namespace="tenant-c", tenant="tenant-c",
                                   renderer=Renderer(PROJECT_ROOT / "manifests"),
                                   options=RenderOptions(mode=DeploymentMode.KNATIVE))

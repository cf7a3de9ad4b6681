"""Rendered tenant objects: goldens, ownership labels, policy content, and schema validity."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from inferbox import PROJECT_ROOT
from inferbox.config import load_versions
from inferbox.tenants.apply import SHARED_KINDS, TENANT_KINDS
from inferbox.tenants.keys import AUDIENCE, ISSUER
from inferbox.tenants.render import (
    MANAGED_BY_LABEL,
    TENANT_LABEL,
    pss_version,
    render_shared,
    render_tenant,
    to_yaml,
)
from inferbox.tenants.spec import Tenant, load_tenants
from inferbox.validate import SchemaValidator

# A fixed public key, so the goldens do not change with every key generated.
JWKS = json.dumps({"keys": [{
    "alg": "ES256", "crv": "P-256", "kid": "Nfa7lpA6pGUjTzVp0axBR3HrXqljEldiaAF8F8UeE7g", "kty": "EC",
    "use": "sig", "x": "tDTAmXsTXn8MXFmYvqfjX99aNM73QsC5VatNRtOl-wo",
    "y": "A2w369t5hcrauBOH8YWB-9iLVXVP0rKXUZrfmJjwl0k"}]}, sort_keys=True, separators=(",", ":"))
KUBERNETES_VERSION = load_versions(PROJECT_ROOT / "versions.toml").kubernetes.version
TENANTS = {t.name: t for t in load_tenants(PROJECT_ROOT / "tenants")}


def render(tenant: Tenant) -> list[dict[str, Any]]:
    return render_tenant(tenant, ISSUER, JWKS, pod_security_version=pss_version(KUBERNETES_VERSION))


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in by_kind(objects, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


@pytest.mark.parametrize("name", sorted(TENANTS))
def test_golden(name: str, golden: Callable[[str, str], None]) -> None:
    golden(f"tenants/{name}.yaml", to_yaml(render(TENANTS[name])))


def test_shared_golden(golden: Callable[[str, str], None]) -> None:
    golden("tenants/_shared.yaml", to_yaml(render_shared()))


@pytest.mark.parametrize("name", sorted(TENANTS))
def test_ownership_labels_and_namespace(name: str) -> None:
    objects = render(TENANTS[name])
    managed = {(k.api_version, k.kind) for k in TENANT_KINDS}
    for obj in objects:
        labels = obj["metadata"]["labels"]
        assert labels[MANAGED_BY_LABEL] == "inferbox" and labels[TENANT_LABEL] == name, obj["metadata"]
        # Every kind can be found again by label, or a removed object could never be pruned.
        assert (obj["apiVersion"], obj["kind"]) in managed, f"{obj['kind']} is missing from TENANT_KINDS"
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == name
    assert objects[0]["kind"] == "Namespace"  # apply order: the namespace first
    assert render(TENANTS[name]) == objects  # pure: the same input, the same output


def test_shared_objects_are_labelled_and_pruneable() -> None:
    shared = {(k.api_version, k.kind) for k in SHARED_KINDS}
    for obj in render_shared():
        assert obj["metadata"]["labels"][MANAGED_BY_LABEL] == "inferbox"
        assert TENANT_LABEL not in obj["metadata"]["labels"]
        assert (obj["apiVersion"], obj["kind"]) in shared


def test_namespace_pod_security_and_injection() -> None:
    labels = one(render(TENANTS["tenant-a"]), "Namespace")["metadata"]["labels"]
    minor = pss_version(KUBERNETES_VERSION)
    assert labels["istio-injection"] == "enabled"
    assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
    assert labels["pod-security.kubernetes.io/warn"] == labels["pod-security.kubernetes.io/audit"] == "restricted"
    assert labels["pod-security.kubernetes.io/enforce-version"] == minor
    assert labels["team"] == "iris"


def test_quota_and_limits() -> None:
    hard_a = one(render(TENANTS["tenant-a"]), "ResourceQuota")["spec"]["hard"]
    assert hard_a == {"requests.cpu": "4", "limits.cpu": "4", "requests.memory": "8Gi", "limits.memory": "8Gi",
                      "requests.nvidia.com/gpu": "0", "pods": "20",
                      "count/inferenceservices.serving.kserve.io": "3"}
    assert one(render(TENANTS["tenant-c"]), "ResourceQuota")["spec"]["hard"]["requests.nvidia.com/gpu"] == "1"
    limits = one(render(TENANTS["tenant-a"]), "LimitRange")["spec"]["limits"][0]
    assert limits["default"] == {"cpu": "500m", "memory": "512Mi"}


def test_network_policies() -> None:
    policies = {p["metadata"]["name"]: p["spec"] for p in by_kind(render(TENANTS["tenant-a"]), "NetworkPolicy")}
    assert policies["default-deny"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    dns = policies["allow-dns"]["egress"][0]
    assert sorted(p["protocol"] for p in dns["ports"]) == ["TCP", "UDP"] and {p["port"] for p in dns["ports"]} == {53}
    assert dns["to"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "kube-system"}
    assert {p["port"] for p in policies["allow-istiod"]["egress"][0]["ports"]} == {15012, 15017}
    gateway = policies["allow-ingress-gateway"]
    assert gateway["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "istio-ingress"}
    assert gateway["podSelector"] == {"matchLabels": {"component": "predictor"}}
    assert {p["port"] for p in policies["allow-monitoring"]["ingress"][0]["ports"]} == {15020, 8080, 8082}
    assert policies["allow-model-storage"]["egress"] == [{"ports": [{"protocol": "TCP", "port": 443}]}]


def test_request_authentication() -> None:
    objects = render(TENANTS["tenant-a"])
    assert one(objects, "PeerAuthentication")["spec"] == {"mtls": {"mode": "STRICT"}}
    (rule,) = one(objects, "RequestAuthentication")["spec"]["jwtRules"]
    assert rule["issuer"] == f"{ISSUER}/tenants/tenant-a" and rule["audiences"] == [AUDIENCE]  # its own issuer
    assert json.loads(rule["jwks"]) == json.loads(JWKS)
    assert rule["fromHeaders"] == [{"name": "Authorization", "prefix": "Bearer "}]
    assert set(rule) == {"issuer", "audiences", "jwks", "fromHeaders"}  # headers only: no query params/cookies


def test_authorization_policy_for_subjects_and_groups() -> None:
    spec = one(render(TENANTS["tenant-a"]), "AuthorizationPolicy")["spec"]
    assert spec["action"] == "ALLOW"
    subjects, groups, health = spec["rules"]
    own = f"{ISSUER}/tenants/tenant-a"
    assert subjects["from"][0]["source"]["requestPrincipals"] == [f"{own}/iris-web", f"{own}/iris-ci"]
    tenant_claim = {"key": "request.auth.claims[tenant]", "values": ["tenant-a"]}
    assert subjects["when"] == [tenant_claim]
    assert groups["from"][0]["source"]["requestPrincipals"] == [f"{own}/*"]
    assert groups["when"] == [tenant_claim, {"key": "request.auth.claims[groups]", "values": ["tenant-a-apps"]}]
    assert health == {"to": [{"operation": {"methods": ["GET"], "paths": ["/", "/v2/health/live",
                                                                          "/v2/health/ready"]}}]}


def test_reserved_tenant_allows_no_caller_and_no_model() -> None:
    objects = render(TENANTS["tenant-b"])
    rules = one(objects, "AuthorizationPolicy")["spec"]["rules"]
    assert len(rules) == 1 and "from" not in rules[0]  # only the health endpoints
    assert one(objects, "ConfigMap", "inferbox-tenant")["data"] == {"models": ""}
    assert not by_kind(objects, "EnvoyFilter")  # no rateLimit, no filter


def test_rate_limit_filter() -> None:
    envoy = one(render(TENANTS["tenant-a"]), "EnvoyFilter")["spec"]
    bucket = envoy["configPatches"][0]["patch"]["value"]["typed_config"]["value"]["token_bucket"]
    assert bucket == {"max_tokens": 100, "tokens_per_fill": 50, "fill_interval": "1s"}
    c_bucket = one(render(TENANTS["tenant-c"]), "EnvoyFilter")["spec"]["configPatches"][0]["patch"]["value"]
    assert c_bucket["typed_config"]["value"]["token_bucket"]["max_tokens"] == 10  # burst defaults to the rate


def test_operator_rbac_is_namespaced() -> None:
    objects = render(TENANTS["tenant-a"])
    assert not [o for o in objects if o["kind"].startswith("Cluster")]
    role = one(objects, "Role")
    isvc_rule = role["rules"][0]
    assert isvc_rule["apiGroups"] == ["serving.kserve.io"] and "create" in isvc_rule["verbs"]
    for rule in role["rules"][1:]:
        assert set(rule["verbs"]) <= {"get", "list", "watch"}
    binding = one(objects, "RoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "tenant-operator", "namespace": "tenant-a"}]


def test_models_configmap_lists_models() -> None:
    assert one(render(TENANTS["tenant-c"]), "ConfigMap")["data"] == {"models": "pytorch-resnet"}


# -- schema validation ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(TENANTS))
def test_core_objects_match_kubernetes_schemas(name: str) -> None:
    report = SchemaValidator(KUBERNETES_VERSION).check([*render(TENANTS[name]), *render_shared()])
    assert report.problems == []
    core = [n for n, source in report.checked.items() if source.startswith("Kubernetes")]
    assert len(core) >= 12
    assert all(n.split()[0] in {"PeerAuthentication", "RequestAuthentication", "AuthorizationPolicy",
                                "EnvoyFilter"} for n in report.unchecked)


@pytest.fixture(scope="module")
def crd_validator(upstream_crds_dir: Path) -> SchemaValidator:
    return SchemaValidator(KUBERNETES_VERSION, [upstream_crds_dir])


@pytest.mark.crds
@pytest.mark.parametrize("name", sorted(TENANTS))
def test_every_object_matches_kubernetes_and_upstream_crd_schemas(name: str, crd_validator: SchemaValidator) -> None:
    report = crd_validator.validate([*render(TENANTS[name]), *render_shared()], require_all=True)
    istio = {n: s for n, s in report.checked.items() if s.startswith("CRD")}
    assert {n.split()[0] for n in istio} >= {"PeerAuthentication", "RequestAuthentication", "AuthorizationPolicy"}

"""The AI gateway's objects against a real API server with the upstream CRDs (Envoy Gateway 1.9.0,
Envoy AI Gateway 1.1.0, Gateway API, Istio, prometheus-operator): the ai-gateway phase's own
objects and a tenant's OpenAI route, JWT policy and budgets apply (CEL rules included), and a key
rotation reaches the JWKS endpoint without changing any tenant object."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from inferbox import PROJECT_ROOT
from inferbox.aigateway import JWKS_CONFIGMAP, JWKS_CONFIGMAP_KEY, JWKS_URL
from inferbox.bootstrap.app import manifest_context
from inferbox.bootstrap.install import FIELD_MANAGER
from inferbox.bootstrap.phases import ENVOY_GATEWAY_NAMESPACE, build_plan
from inferbox.config import Settings
from inferbox.errors import KubeError
from inferbox.k8s import Kube, ObjectRef
from inferbox.render import Renderer
from inferbox.tenants import app
from inferbox.tenants.apply import Outcome
from inferbox.testenv import ControlPlane
from tests.cluster.conftest import Tenants
from tests.cluster.test_tenants import outcomes

pytestmark = [pytest.mark.cluster, pytest.mark.crds]


@pytest.fixture(scope="module")
def kube(control_plane: ControlPlane, crds_installed: object) -> Kube:
    return Kube.connect(kubeconfig=control_plane.kubeconfig)


@pytest.fixture
def settings(make_settings: Any) -> Settings:
    settings = make_settings()
    app.keystore(settings).ensure()
    return settings


def phase_objects(settings: Settings) -> list[dict[str, Any]]:
    """What the envoy-gateway and ai-gateway phases apply after their charts."""
    plan = build_plan(settings, gpu=False)
    renderer = Renderer(PROJECT_ROOT / "manifests")
    context = manifest_context(settings)
    return [obj for name in ("envoy-gateway", "ai-gateway") for template in plan.phase(name).manifests
            for obj in renderer.objects(template, **context)]


@pytest.fixture
def platform(settings: Settings, kube: Kube, core: client.CoreV1Api) -> Iterator[list[dict[str, Any]]]:
    """The gateway's objects, applied; removed again, so other tests see a cluster without it."""
    for namespace in (ENVOY_GATEWAY_NAMESPACE, "istio-system"):
        try:
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
        except ApiException as exc:
            if exc.status != 409:
                raise
    objects = phase_objects(settings)
    for obj in objects:
        kube.apply(obj, field_manager=FIELD_MANAGER)
    yield objects
    for obj in reversed(objects):
        kube.delete(ObjectRef.of(obj))


def test_the_phase_objects_are_admitted(platform: list[dict[str, Any]], kube: Kube) -> None:
    kinds = {o["kind"] for o in platform}
    assert kinds >= {"Deployment", "Service", "EnvoyProxy", "GatewayClass", "Gateway", "ClientTrafficPolicy",
                     "ConfigMap", "HTTPRouteFilter", "HTTPRoute", "DestinationRule"}
    for obj in platform:
        assert kube.get(ObjectRef.of(obj)) is not None


def test_a_tenant_gets_its_route_and_a_rotation_needs_no_tenant_change(platform: list[dict[str, Any]],
                                                                        tenants: Tenants, kube: Kube,
                                                                        api: client.ApiClient) -> None:
    a = tenants.add("tenant-a")
    first = tenants.apply()
    assert not first.errors
    created = outcomes(first, a)
    ai = {"AIGatewayRoute/inferbox-openai", "SecurityPolicy/inferbox-openai", "BackendTrafficPolicy/inferbox-openai",
          "Backend/smollm2-local", "AIServiceBackend/smollm2-local", "PrometheusRule/inferbox-token-budgets",
          "NetworkPolicy/allow-ai-gateway"}
    assert ai <= set(created) and {created[k] for k in ai} == {Outcome.CREATED}
    route = client.CustomObjectsApi(api).get_namespaced_custom_object(
        "aigateway.envoyproxy.io", "v1beta1", a, "aigatewayroutes", "inferbox-openai")
    assert route["spec"]["hostnames"] == [f"{a}.ai.example.com"]
    jwt_rule = client.CustomObjectsApi(api).get_namespaced_custom_object(
        "security.istio.io", "v1", a, "requestauthentications", "inferbox-jwt")["spec"]["jwtRules"][0]
    assert jwt_rule["jwksUri"] == JWKS_URL and "jwks" not in jwt_rule

    store = app.keystore(tenants.settings)
    jwks_ref = ObjectRef("v1", "ConfigMap", JWKS_CONFIGMAP, ENVOY_GATEWAY_NAMESPACE)

    def served() -> dict[str, Any]:
        configmap = kube.get(jwks_ref)
        assert configmap is not None
        return json.loads(configmap["data"][JWKS_CONFIGMAP_KEY])

    assert served() == store.jwks()
    store.rotate()
    second = tenants.apply()
    assert second.changed == [] and not second.errors  # no tenant object changes
    assert served() == store.jwks() and len(served()["keys"]) == 2


def test_the_server_refuses_what_the_crds_forbid(platform: list[dict[str, Any]], kube: Kube) -> None:
    policy = next(o for o in platform if o["kind"] == "ClientTrafficPolicy")
    bad = json.loads(json.dumps(policy))
    bad["metadata"]["name"] = "inferbox-bad"
    bad["spec"]["headers"]["earlyRequestHeaders"]["remove"] = [f"h{i}" for i in range(65)]  # at most 64
    with pytest.raises(KubeError):
        kube.apply(bad, field_manager=FIELD_MANAGER)

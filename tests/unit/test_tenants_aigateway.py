"""Two tenants on the AI gateway: what their rendered routes and policies let through.

The objects are judged by a small model of the gateway (``answer`` below), written from the
upstream semantics each step cites: Gateway API route selection by host, Envoy Gateway's
early header removal (ClientTrafficPolicy), JWT check and claim-to-header copy (SecurityPolicy:
the header is appended, so a client copy would survive without the early removal), its
authorization rules, the AI gateway's model match and 404, and the budget descriptors (the
header value the rate-limit rule counts by). The model reads only the rendered objects, so a
template change that opens a path shows up here.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from inferbox import PROJECT_ROOT
from inferbox.aigateway import (
    COST_NAMESPACE,
    JWKS_CONFIGMAP_KEY,
    JWKS_MAX_BYTES,
    JWKS_PATH,
    JWKS_URL,
    MODEL_HEADER,
    TENANT_HEADER,
    TENANT_ROUTE,
    TenantGateway,
    gateway_context,
    openai_models,
    tenant_host,
)
from inferbox.bootstrap.phases import AI_GATEWAY_NAME, ENVOY_GATEWAY_NAMESPACE
from inferbox.config import Settings, build_settings, load_versions
from inferbox.errors import ConfigError, InferboxError
from inferbox.models.catalog import default_catalog_path, load_catalog
from inferbox.render import Renderer
from inferbox.tenants import app
from inferbox.tenants.keys import ISSUER, KeyStore, issue_token, sign, tenant_issuer, token_claims
from inferbox.tenants.render import TENANT_LABEL, render_tenant, to_yaml
from inferbox.tenants.spec import Tenant, parse_tenant
from inferbox.validate import SchemaValidator
from tests.unit.test_tenants_render import JWKS  # a fixed key: goldens that do not change

KUBERNETES_VERSION = load_versions(PROJECT_ROOT / "versions.toml").kubernetes.version
CATALOG = load_catalog(default_catalog_path(PROJECT_ROOT))
DOMAIN = "example.com"
BASE = {
    "quotas": {"cpu": "8", "memory": "16Gi", "pods": 10, "inferenceServices": 3},
    "limitRange": {"default": {"cpu": "1", "memory": "1Gi"}, "defaultRequest": {"cpu": "100m", "memory": "256Mi"}},
}
# alpha: an LLM and a predictive model; beta: another LLM. Both have budgets.
ALPHA = {**BASE, "name": "alpha", "displayName": "Alpha", "models": ["sklearn-iris", "smollm2-local"],
         "callers": {"subjects": ["chat-web"], "groups": ["alpha-apps"]},
         "tokenBudgets": [{"tokens": 1000, "per": "minute"}, {"tokens": 5000, "per": "hour", "count": "output"}]}
BETA = {**BASE, "name": "beta", "displayName": "Beta", "models": ["qwen-small"],
        "callers": {"subjects": ["beta-bot"]}, "tokenBudgets": [{"tokens": 200, "per": "minute", "count": "input"}]}


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    keys = KeyStore(tmp_path / "keys")
    keys.ensure()
    return keys


def gateway(**changes: Any) -> TenantGateway:
    return TenantGateway(openai_models=openai_models(CATALOG), domain=DOMAIN, **changes)


def render(doc: dict[str, Any], store: KeyStore, **changes: Any) -> list[dict[str, Any]]:
    return render_tenant(Tenant.model_validate(doc), ISSUER, store.jwks_json(), gateway=gateway(**changes))


def platform_objects(settings: Settings, jwks: str) -> list[dict[str, Any]]:
    """The ai-gateway phase's own objects (its manifests), as bootstrap applies them."""
    renderer = Renderer(PROJECT_ROOT / "manifests")
    context = gateway_context(settings, jwks)
    return [o for t in ("aigateway/jwks.yaml.j2", "aigateway/gateway.yaml.j2") for o in renderer.objects(t, **context)]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return build_settings(PROJECT_ROOT, state_dir=tmp_path / "state", bin_dir=tmp_path / "bin")


def only(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


# -- a model of the gateway ------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    backend: str | None = None
    # The values of the tenant header the budget rules read (in order), and the budgets charged.
    tenant_header: list[str] = field(default_factory=list)
    budgets: list[tuple[str, int, str]] = field(default_factory=list)


def _claim_matches(claims: dict[str, Any], rule: dict[str, Any]) -> bool:
    # Envoy Gateway's JWT claim principal (api/v1alpha1/authorization_types.go@v1.9.0): String
    # matches a string claim equal to one of the values; StringArray a list claim with one of them.
    value = claims.get(rule["name"])
    if rule.get("valueType", "String") == "String":
        return isinstance(value, str) and value in rule["values"]
    return isinstance(value, list) and any(v in rule["values"] for v in value)


def answer(objects: list[dict[str, Any]], platform: list[dict[str, Any]], jwks: str, *, host: str,
           model: str, token: str | None, headers: dict[str, str] | None = None) -> Answer:
    """What the gateway answers a chat request for ``model`` on ``host`` with ``token``."""
    gw = only(platform, "Gateway", AI_GATEWAY_NAME)
    listener = next(item for item in gw["spec"]["listeners"] if item["name"] == "tenants")
    # 1. Route selection (Gateway API): a route attached to the listener, from a namespace it
    #    admits, whose hostnames include the request's host; none: 404.
    routes = [o for o in objects if o["kind"] == "AIGatewayRoute" and host in o["spec"].get("hostnames", [])
              and any(p["name"] == gw["metadata"]["name"] and p.get("namespace") == gw["metadata"]["namespace"]
                      and p.get("sectionName") == "tenants" for p in o["spec"]["parentRefs"])]
    namespaces = {o["metadata"]["name"]: o["metadata"].get("labels", {}) for o in objects if o["kind"] == "Namespace"}
    required = [e["key"] for e in listener["allowedRoutes"]["namespaces"]["selector"]["matchExpressions"]]
    routes = [r for r in routes if all(k in namespaces.get(r["metadata"]["namespace"], {}) for k in required)]
    if not routes:
        return Answer(404)
    [route] = routes
    ns, name = route["metadata"]["namespace"], route["metadata"]["name"]
    # 2. Early header mutation (ClientTrafficPolicy on the Gateway): before any filter.
    request = {k.lower(): [v] for k, v in (headers or {}).items()}
    ctp = only(platform, "ClientTrafficPolicy")
    for header in ctp["spec"]["headers"]["earlyRequestHeaders"].get("remove", []):
        request.pop(header.lower(), None)
    # 3. JWT (SecurityPolicy targeting the generated HTTPRoute of the same name): no token or one
    #    no provider verifies is 401; claimToHeaders appends (Envoy jwt_authn addCopy).
    policy = next(o for o in objects if o["kind"] == "SecurityPolicy" and o["metadata"]["namespace"] == ns
                  and any(t["kind"] == "HTTPRoute" and t["name"] == name for t in o["spec"]["targetRefs"]))
    if token is None:
        return Answer(401)
    claims, provider = None, None
    for candidate in policy["spec"]["jwt"]["providers"]:
        if "remoteJWKS" in candidate:
            assert candidate["remoteJWKS"]["uri"] == JWKS_URL
            keys = jwks  # what the endpoint serves
        else:
            keys = candidate["localJWKS"]["inline"]
        try:
            decoded = jwt.decode(token, KeySet.import_key_set(json.loads(keys)), algorithms=["ES256"])
        except (JoseError, ValueError):
            continue
        c = decoded.claims
        now = time.time()
        if c.get("iss") == candidate["issuer"] and c.get("aud") in candidate["audiences"] \
                and c.get("nbf", 0) <= now < c.get("exp", 0):
            claims, provider = c, candidate
            break
    if claims is None or provider is None:
        return Answer(401)
    for copy_rule in provider.get("claimToHeaders", []):
        if isinstance(claims.get(copy_rule["claim"]), str):  # primitive claims only
            request.setdefault(copy_rule["header"].lower(), []).append(claims[copy_rule["claim"]])
    # 4. Authorization: an Allow rule whose JWT principal matches, else the default (Deny: 403).
    authz = policy["spec"]["authorization"]
    allowed = any(rule["action"] == "Allow" and rule["principal"]["jwt"]["provider"] == provider["name"]
                  and all(_claim_matches(claims, c) for c in rule["principal"]["jwt"]["claims"])
                  for rule in authz["rules"])
    if not allowed and authz["defaultAction"] == "Deny":
        return Answer(403)
    # 5. The model: a rule matching the model header the AI gateway sets; else route-not-found 404.
    backend = next((ref["name"] for rule in route["spec"]["rules"] for m in rule.get("matches", [])
                    for h in m.get("headers", []) if h["name"] == MODEL_HEADER and h["value"] == model
                    for ref in rule["backendRefs"]), None)
    tenant_values = request.get(TENANT_HEADER, [])
    if backend is None:
        return Answer(404, tenant_header=tenant_values)
    # 6. Budgets (BackendTrafficPolicy on the same route): a rule applies when its header matches
    #    the first value of the header (Envoy's rate-limit header actions read one value).
    btp = [o for o in objects if o["kind"] == "BackendTrafficPolicy" and o["metadata"]["namespace"] == ns]
    charged = []
    for policy_obj in btp:
        for rule in policy_obj["spec"]["rateLimit"]["global"]["rules"]:
            matches = [h for s in rule["clientSelectors"] for h in s["headers"]]
            if all(request.get(h["name"].lower(), [None])[0] == h["value"] for h in matches):
                charged.append((rule["limit"]["unit"], rule["limit"]["requests"],
                                rule["cost"]["response"]["metadata"]["key"]))
    return Answer(200, backend=backend, tenant_header=tenant_values, budgets=charged)


@pytest.fixture
def two(store: KeyStore, settings: Settings) -> Callable[..., Answer]:
    objects = [*render(ALPHA, store), *render(BETA, store)]
    platform = platform_objects(settings, store.jwks_json())

    def ask(host_tenant: str, model: str, token: str | None, **kw: Any) -> Answer:
        return answer(objects, platform, store.jwks_json(), host=tenant_host(host_tenant, DOMAIN), model=model,
                      token=token, **kw)
    return ask


def token(store: KeyStore, owner: str, subject: str, **changes: Any) -> str:
    """A token of ``owner``'s issuer for ``subject``, with ``changes`` to its claims."""
    claims = {**token_claims(tenant=owner, subject=subject, ttl_s=300), **changes}
    key, kid = store.signing_key()
    return sign(claims, key, kid)


def test_each_tenant_reaches_its_own_models_with_its_own_token(store: KeyStore, two: Callable[..., Answer]) -> None:
    assert two("alpha", "smollm2-local", token(store, "alpha", "chat-web")).backend == "smollm2-local"
    assert two("beta", "qwen-small", token(store, "beta", "beta-bot")).backend == "qwen-small"
    group_token = issue_token(store, tenant="alpha", subject="someone", ttl_s=300, groups=["alpha-apps"]).token
    assert two("alpha", "smollm2-local", group_token).status == 200


def test_another_tenants_token_is_refused(store: KeyStore, two: Callable[..., Answer]) -> None:
    # tenant alpha's model named with beta's token, on alpha's endpoint: beta's issuer is not alpha's.
    assert two("alpha", "smollm2-local", token(store, "beta", "beta-bot")).status == 401
    # beta's token naming alpha's model on beta's own endpoint: no route to it.
    assert two("beta", "smollm2-local", token(store, "beta", "beta-bot")).status == 404
    # a beta-issued token claiming to be alpha's, or alpha's issuer with a tenant list.
    forged = token(store, "beta", "beta-bot", tenant="alpha")
    assert two("alpha", "smollm2-local", forged).status == 401
    listed = token(store, "alpha", "chat-web", tenant=["alpha", "beta"])
    assert two("alpha", "smollm2-local", listed).status == 403


def test_no_token_and_unknown_callers_are_refused(store: KeyStore, two: Callable[..., Answer]) -> None:
    assert two("alpha", "smollm2-local", None).status == 401
    assert two("alpha", "smollm2-local", token(store, "alpha", "not-a-caller")).status == 403
    assert two("alpha", "smollm2-local", token(store, "alpha", "chat-web", aud="elsewhere")).status == 401
    assert two("gamma", "smollm2-local", token(store, "alpha", "chat-web")).status == 404  # no such tenant


def test_a_model_outside_the_tenants_list_is_refused(store: KeyStore, two: Callable[..., Answer]) -> None:
    alpha = token(store, "alpha", "chat-web")
    assert two("alpha", "qwen-small", alpha).status == 404  # an LLM, but beta's
    assert two("alpha", "phi-2", alpha).status == 404  # in the catalog, in nobody's list
    assert two("alpha", "sklearn-iris", alpha).status == 404  # alpha's, but not an OpenAI model


def test_budgets_are_keyed_on_the_verified_claim_not_a_client_header(store: KeyStore,
                                                                     two: Callable[..., Answer]) -> None:
    alpha = token(store, "alpha", "chat-web")
    plain = two("alpha", "smollm2-local", alpha)
    assert plain.tenant_header == ["alpha"]
    assert sorted(plain.budgets) == [("Hour", 5000, "llm_output_token"), ("Minute", 1000, "llm_total_token")]
    # A client naming another tenant (or a tenant with no budget) in the header changes nothing.
    for spoof in ("beta", "nobody", ""):
        spoofed = two("alpha", "smollm2-local", alpha, headers={TENANT_HEADER: spoof})
        assert spoofed.tenant_header == ["alpha"] and spoofed.budgets == plain.budgets
    assert two("beta", "qwen-small", token(store, "beta", "beta-bot"),
               headers={TENANT_HEADER: "alpha"}).budgets == [("Minute", 200, "llm_input_token")]


def test_without_the_early_removal_a_client_header_would_pick_the_bucket(store: KeyStore,
                                                                         settings: Settings) -> None:
    # The check above is not vacuous: drop the Gateway's header removal and the spoof works.
    objects = render(ALPHA, store)
    platform = platform_objects(settings, store.jwks_json())
    ctp = only(platform, "ClientTrafficPolicy")
    ctp["spec"]["headers"]["earlyRequestHeaders"]["remove"] = []
    spoofed = answer(objects, platform, store.jwks_json(), host=tenant_host("alpha", DOMAIN), model="smollm2-local",
                     token=token(store, "alpha", "chat-web"), headers={TENANT_HEADER: "nobody"})
    assert spoofed.tenant_header == ["nobody", "alpha"] and spoofed.budgets == []


def test_budget_rules_count_the_gateways_token_metadata(store: KeyStore) -> None:
    objects = render(ALPHA, store)
    route = only(objects, "AIGatewayRoute")
    recorded = {c["metadataKey"] for c in route["spec"]["llmRequestCosts"]}
    for rule in only(objects, "BackendTrafficPolicy")["spec"]["rateLimit"]["global"]["rules"]:
        assert rule["cost"]["request"] == {"from": "Number", "number": 0}
        assert rule["cost"]["response"]["metadata"]["namespace"] == COST_NAMESPACE
        assert rule["cost"]["response"]["metadata"]["key"] in recorded
        assert [h["name"] for s in rule["clientSelectors"] for h in s["headers"]] == [TENANT_HEADER]
    rules = only(objects, "PrometheusRule")["spec"]["groups"][0]["rules"]
    assert [(r["labels"]["token_type"], r["labels"]["window"], r["expr"]) for r in rules] == [
        ("total", "minute", f"vector({round(1000 / 60, 6)})"), ("output", "hour", f"vector({round(5000 / 3600, 6)})")]


def test_no_budget_no_rate_limit_and_no_monitoring_no_rule(store: KeyStore) -> None:
    objects = render({**ALPHA, "tokenBudgets": []}, store)
    assert not [o for o in objects if o["kind"] in ("BackendTrafficPolicy", "PrometheusRule")]
    objects = render(ALPHA, store, monitoring=False)
    assert [o["kind"] for o in objects if o["kind"] in ("BackendTrafficPolicy", "PrometheusRule")] == [
        "BackendTrafficPolicy"]


def test_ai_objects_only_for_tenants_with_an_openai_model(store: KeyStore) -> None:
    iris_only = render({**ALPHA, "models": ["sklearn-iris"]}, store)
    assert not [o for o in iris_only if o["apiVersion"].startswith(("aigateway.", "gateway.envoyproxy."))]
    assert not [o for o in iris_only if o["metadata"]["name"] == "allow-ai-gateway"]
    # The sidecars still fetch the keys from the endpoint: a rotation reaches every tenant.
    assert only(iris_only, "RequestAuthentication")["spec"]["jwtRules"][0]["jwksUri"] == JWKS_URL
    without = render_tenant(Tenant.model_validate(ALPHA), ISSUER, store.jwks_json())
    assert not [o for o in without if o["apiVersion"].startswith(("aigateway.", "gateway.envoyproxy."))]
    assert only(without, "RequestAuthentication")["spec"]["jwtRules"][0]["jwks"] == store.jwks_json()


def test_inline_jwks_puts_the_keys_in_every_policy(store: KeyStore, two: Callable[..., Answer]) -> None:
    objects = render(ALPHA, store, jwks_uri=None)
    provider = only(objects, "SecurityPolicy")["spec"]["jwt"]["providers"][0]
    assert provider["localJWKS"] == {"type": "Inline", "inline": store.jwks_json()} and "remoteJWKS" not in provider
    rule = only(objects, "RequestAuthentication")["spec"]["jwtRules"][0]
    assert rule["jwks"] == store.jwks_json() and "jwksUri" not in rule


def test_the_route_attaches_to_the_gateway_listener_for_tenant_hosts(store: KeyStore, settings: Settings) -> None:
    route = only(render(ALPHA, store), "AIGatewayRoute")
    gw = only(platform_objects(settings, store.jwks_json()), "Gateway")
    listener = next(item for item in gw["spec"]["listeners"] if item["name"] == route["spec"]["parentRefs"][0]
                    ["sectionName"])
    suffix = listener["hostname"].removeprefix("*")
    assert route["spec"]["hostnames"] == [tenant_host("alpha", DOMAIN)] and route["spec"]["hostnames"][0].endswith(
        suffix)
    assert listener["allowedRoutes"]["namespaces"]["selector"]["matchExpressions"] == [
        {"key": TENANT_LABEL, "operator": "Exists"}]
    assert route["metadata"]["name"] == TENANT_ROUTE


def test_only_the_gateways_proxies_reach_the_predictors(store: KeyStore) -> None:
    policy = only(render(ALPHA, store), "NetworkPolicy", "allow-ai-gateway")
    assert policy["spec"]["podSelector"] == {"matchLabels": {"component": "predictor"}}
    [rule] = policy["spec"]["ingress"]
    [peer] = rule["from"]
    assert peer["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": ENVOY_GATEWAY_NAMESPACE}}
    # The labels Envoy Gateway puts on a Gateway's proxy pods
    # (gateway internal/infrastructure/kubernetes/proxy/resource.go@v1.9.0).
    assert peer["podSelector"] == {"matchLabels": {"gateway.envoyproxy.io/owning-gateway-name": AI_GATEWAY_NAME,
                                                   "gateway.envoyproxy.io/owning-gateway-namespace":
                                                       ENVOY_GATEWAY_NAMESPACE}}
    assert sorted(p["port"] for p in rule["ports"]) == [8012, 8080]


def test_the_jwks_endpoint_serves_the_public_keys_at_the_url_the_verifiers_fetch(store: KeyStore,
                                                                                  settings: Settings) -> None:
    platform = platform_objects(settings, store.jwks_json())
    configmap = only(platform, "ConfigMap")
    served = json.loads(configmap["data"][JWKS_CONFIGMAP_KEY])
    assert served == store.jwks() and all(set(k) <= {"kty", "crv", "x", "y", "kid", "use", "alg"}
                                          for k in served["keys"])  # no "d": no private key
    route = only(platform, "HTTPRoute")
    [rule] = route["spec"]["rules"]
    assert f"http://{route['spec']['hostnames'][0]}{rule['matches'][0]['path']['value']}" == JWKS_URL
    assert rule["matches"][0]["path"] == {"type": "Exact", "value": JWKS_PATH}
    filt = only(platform, "HTTPRouteFilter")
    assert rule["filters"][0]["extensionRef"]["name"] == filt["metadata"]["name"]
    assert filt["spec"]["directResponse"]["body"]["valueRef"]["name"] == configmap["metadata"]["name"]


def test_publish_refuses_a_key_set_a_configmap_cannot_hold(store: KeyStore, settings: Settings) -> None:
    # 40 keys fit (Envoy Gateway lifts Envoy's 4 KiB direct-response limit to the body's size).
    for _ in range(40):
        store.rotate()
    applied: list[dict[str, Any]] = []

    class Recorder:
        def apply(self, obj: dict[str, Any], **kwargs: Any) -> None:
            applied.append(obj)

    assert app.publish_jwks(settings, Recorder(), store, dry_run=False) == 41  # type: ignore[arg-type]
    assert json.loads(applied[0]["data"][JWKS_CONFIGMAP_KEY]) == store.jwks()

    class Huge(KeyStore):
        def jwks_json(self) -> str:
            return json.dumps({"keys": [{"kid": "k" * JWKS_MAX_BYTES}]})

    with pytest.raises(InferboxError, match="retire old keys"):
        app.publish_jwks(settings, Recorder(), Huge(store.directory), dry_run=False)  # type: ignore[arg-type]
    assert len(applied) == 1  # nothing more was applied


def test_jwks_mode_choice(settings: Settings) -> None:
    assert app.tenant_gateway(settings, installed=True, monitoring=True, jwks=None).jwks_uri == JWKS_URL
    assert app.tenant_gateway(settings, installed=True, monitoring=True, jwks="inline").jwks_uri is None
    assert app.tenant_gateway(settings, installed=False, monitoring=True, jwks=None) is None
    with pytest.raises(ConfigError, match="remote needs the JWKS endpoint"):
        app.tenant_gateway(settings, installed=False, monitoring=True, jwks="remote")
    with pytest.raises(ConfigError, match="'sometimes' is not one of remote, inline"):
        app.tenant_gateway(settings, installed=True, monitoring=True, jwks="sometimes")


@pytest.mark.parametrize(("budgets", "field_path", "message"), [
    ([{"tokens": 10, "per": "minute"}, {"tokens": 20, "per": "minute", "count": "total"}], "tokenBudgets",
     "'total tokens per minute' is listed twice"),
    ([{"tokens": 10, "per": "day"}], "tokenBudgets.0.per", "'minute' or 'hour'"),
    ([{"tokens": 2 ** 32, "per": "hour"}], "tokenBudgets.0.tokens", "less than or equal to 4294967295"),
    ([{"tokens": 0, "per": "hour"}], "tokenBudgets.0.tokens", "greater than"),
    ([{"tokens": 10, "per": "hour", "count": "cached"}], "tokenBudgets.0.count", "'input', 'output' or 'total'"),
])
def test_bad_budgets_name_the_file_and_field(tmp_path: Path, budgets: list[dict[str, Any]], field_path: str,
                                             message: str) -> None:
    path = tmp_path / "alpha.yaml"
    with pytest.raises(ConfigError) as info:
        parse_tenant({**copy.deepcopy(ALPHA), "tokenBudgets": budgets}, path)
    assert str(path) in str(info.value)
    assert any(where == field_path and message in why for where, why in info.value.problems), info.value.problems


def test_golden(settings: Settings, golden: Callable[[str, str], None]) -> None:
    objects = render_tenant(Tenant.model_validate(ALPHA), ISSUER, JWKS, gateway=gateway())
    golden("tenants/ai/alpha.yaml", to_yaml(objects))
    golden("tenants/ai/_gateway.yaml", to_yaml(platform_objects(settings, JWKS)))


@pytest.mark.crds
def test_every_object_matches_the_upstream_crds(store: KeyStore, settings: Settings, upstream_crds_dir: Path) -> None:
    objects = [*render(ALPHA, store), *render(BETA, store), *render(ALPHA, store, jwks_uri=None),
               *platform_objects(settings, store.jwks_json())]
    report = SchemaValidator(KUBERNETES_VERSION, [upstream_crds_dir]).validate(objects, require_all=True)
    checked = {name.split()[0] for name, source in report.checked.items() if source.startswith("CRD")}
    assert checked >= {"AIGatewayRoute", "AIServiceBackend", "Backend", "SecurityPolicy", "BackendTrafficPolicy",
                       "PrometheusRule", "Gateway", "GatewayClass", "EnvoyProxy", "ClientTrafficPolicy",
                       "HTTPRoute", "HTTPRouteFilter", "DestinationRule"}


def test_issuer_binding_matches_the_mesh(store: KeyStore) -> None:
    objects = render(ALPHA, store)
    [provider] = only(objects, "SecurityPolicy")["spec"]["jwt"]["providers"]
    [rule] = only(objects, "RequestAuthentication")["spec"]["jwtRules"]
    assert provider["issuer"] == rule["issuer"] == tenant_issuer("alpha")
    assert provider["audiences"] == rule["audiences"]


def test_the_proxies_meet_the_mesh_outbound_only(store: KeyStore, settings: Settings) -> None:
    proxy = only(platform_objects(settings, store.jwks_json()), "EnvoyProxy")
    pod = proxy["spec"]["provider"]["kubernetes"]["envoyDeployment"]["pod"]
    # An Istio sidecar for the mTLS hop to the predictors (STRICT), inbound left to Envoy itself.
    assert pod["labels"] == {"sidecar.istio.io/inject": "true"}
    assert pod["annotations"]["traffic.sidecar.istio.io/includeInboundPorts"] == ""
    # Envoy Gateway's own TLS connections (xDS, rate-limit service) must not pass the sidecar.
    assert set(pod["annotations"]["traffic.sidecar.istio.io/excludeOutboundPorts"].split(",")) == {"18000", "8081"}
    assert proxy["spec"]["routingType"] == "Service"
    assert proxy["spec"]["provider"]["kubernetes"]["envoyService"] == {"name": AI_GATEWAY_NAME, "type": "ClusterIP"}
    # Meshed clients reach the proxies' plain ports without mTLS.
    rule = only(platform_objects(settings, store.jwks_json()), "DestinationRule")
    assert rule["spec"] == {"host": JWKS_URL.split("/")[2], "trafficPolicy": {"tls": {"mode": "DISABLE"}}}


def test_budgets_need_a_model_the_gateway_counts(tmp_path: Path) -> None:
    from inferbox.tenants.spec import TenantRules

    rules = TenantRules(models=frozenset(CATALOG.models), openai_models=openai_models(CATALOG))
    path = tmp_path / "alpha.yaml"
    with pytest.raises(ConfigError) as info:
        parse_tenant({**ALPHA, "models": ["sklearn-iris"]}, path, rules=rules)
    [(where, why)] = info.value.problems
    assert where == "tokenBudgets" and "lists no model that speaks OpenAI" in why and "smollm2-local" in why
    assert parse_tenant(ALPHA, path, rules=rules).token_budgets  # with an OpenAI model it is fine


def test_callers_fit_one_gateway_claim_rule(tmp_path: Path) -> None:
    many = {**ALPHA, "callers": {"subjects": [f"app-{i}" for i in range(129)]}}
    with pytest.raises(ConfigError) as info:
        parse_tenant(many, tmp_path / "alpha.yaml")
    assert [where for where, _ in info.value.problems] == ["callers.subjects"]
    assert "at most 128" in info.value.problems[0][1]


@pytest.mark.parametrize(("percent", "fraction"), [(1.0, 10_000), (0.5, 5000), (2.5, 25_000), (99.99, 999_900),
                                                   (100, 1_000_000), (0, 0), (0.004, 40)])
def test_the_gateway_samples_the_same_percentage_as_the_mesh(tmp_path: Path, percent: float, fraction: int) -> None:
    settings = build_settings(PROJECT_ROOT, state_dir=tmp_path, trace_sampling_percent=percent)
    context = gateway_context(settings, JWKS)
    proxy = only(platform_objects(settings, JWKS), "EnvoyProxy")
    assert proxy["spec"]["telemetry"]["tracing"]["samplingFraction"] == {"numerator": fraction,
                                                                         "denominator": 1_000_000}
    assert context["tracing"]["sampling_percent"] == percent  # what the mesh's Telemetry gets


def test_the_models_admit_inference_only_from_the_gateway(store: KeyStore, settings: Settings) -> None:
    objects = render(ALPHA, store)
    proxy = only(platform_objects(settings, store.jwks_json()), "EnvoyProxy")
    account = proxy["spec"]["provider"]["kubernetes"]["envoyServiceAccount"]["name"]
    identity = f"cluster.local/ns/{proxy['metadata']['namespace']}/sa/{account}"  # Istio's principal form
    deny = only(objects, "AuthorizationPolicy", "smollm2-local-ai-gateway-only")
    assert deny["spec"]["action"] == "DENY"
    assert deny["spec"]["selector"] == {"matchLabels": {"serving.kserve.io/inferenceservice": "smollm2-local"}}
    [rule] = deny["spec"]["rules"]
    assert rule["from"] == [{"source": {"notPrincipals": [identity]}}]
    # Health checks stay open, as the ALLOW policy opens them (GET, no token).
    allow = only(objects, "AuthorizationPolicy", "allow-callers")
    health = next(r["to"][0]["operation"]["paths"] for r in allow["spec"]["rules"] if "from" not in r)
    assert rule["to"] == [{"operation": {"notPaths": health}}]
    # Not for the predictive model (it keeps the ingress path), nor in Knative mode (the activator calls).
    assert not [o for o in objects if o["metadata"]["name"] == "sklearn-iris-ai-gateway-only"]
    knative = render_tenant(Tenant.model_validate(ALPHA), ISSUER, store.jwks_json(), gateway=gateway(), knative=True)
    assert not [o for o in knative if o["metadata"]["name"].endswith("-ai-gateway-only")]


def test_no_model_of_any_name_serves_openai_past_the_gateway(store: KeyStore) -> None:
    # A tenant may deploy an LLM under a name it lists for something else: the OpenAI paths of the
    # whole namespace admit the gateway alone, with or without an OpenAI model in its list.
    for doc in (ALPHA, {**ALPHA, "models": ["sklearn-iris"], "tokenBudgets": []}):
        deny = only(render(doc, store), "AuthorizationPolicy", "openai-via-ai-gateway")
        assert "selector" not in deny["spec"] and deny["spec"]["action"] == "DENY"
        assert deny["spec"]["rules"] == [{"from": [{"source": {"notPrincipals": [
            f"cluster.local/ns/{ENVOY_GATEWAY_NAMESPACE}/sa/{AI_GATEWAY_NAME}"]}}],
            "to": [{"operation": {"paths": ["/openai/*"]}}]}]
    without = render_tenant(Tenant.model_validate(ALPHA), ISSUER, store.jwks_json())
    knative = render_tenant(Tenant.model_validate(ALPHA), ISSUER, store.jwks_json(), gateway=gateway(), knative=True)
    for objects in (without, knative):
        assert not [o for o in objects if o["metadata"]["name"] == "openai-via-ai-gateway"]


def test_usage_on_every_stream_only_where_vllm_serves(store: KeyStore) -> None:
    from inferbox.models.render import FORCE_INCLUDE_USAGE, openai_server_flags

    llm, iris = CATALOG.get("qwen-small"), CATALOG.get("sklearn-iris")
    gpu_args = llm.resolved(cpu_fallback=False)[1]
    cpu_args = llm.resolved(cpu_fallback=True)[1]
    assert openai_server_flags(llm, gpu_args) == [FORCE_INCLUDE_USAGE]
    # KServe's Hugging Face backend (qwen's CPU fallback) would drop the flag: not given.
    assert cpu_args.backend == "huggingface" and openai_server_flags(llm, cpu_args) == []
    assert openai_server_flags(iris) == []

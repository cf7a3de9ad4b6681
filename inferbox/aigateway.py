"""The AI gateway's names and contracts, decided in this one place: the Gateway inferbox renders,
each tenant's OpenAI host, the JWKS endpoint, the header the verified tenant claim travels in,
and the token-cost metadata the budgets count.

Request path (README, "Architecture"): client -> Envoy proxy of Gateway ``inferbox-ai``
(Envoy Gateway) with the AI gateway's external processor -> JWT checked against the JWKS
endpoint -> the tenant's AIGatewayRoute picks the InferenceService by the OpenAI ``model``
field -> the token budget (global rate limit, Redis) -> the predictor over Istio mTLS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from inferbox.bootstrap.phases import (
    AI_GATEWAY_NAME,
    AI_GATEWAY_REDIS,
    ENVOY_GATEWAY_NAMESPACE,
    JAEGER_DEPLOYMENT,
    JAEGER_OTLP_GRPC_PORT,
    JWKS_REFRESH,
    TRACING_NAMESPACE,
    TRACING_PROVIDER,
)
from inferbox.config import Settings
from inferbox.k8s import Kube, ObjectRef
from inferbox.models.hosts import ingress_naming

if TYPE_CHECKING:
    from inferbox.models.catalog import Catalog, ModelSpec
    from inferbox.tenants.spec import Tenant

# The Service Envoy Gateway makes for the Gateway's proxies, named by the EnvoyProxy
# (manifests/aigateway/gateway.yaml.j2: spec.provider.kubernetes.envoyService.name).
GATEWAY_SERVICE = AI_GATEWAY_NAME
GATEWAY_FQDN = f"{GATEWAY_SERVICE}.{ENVOY_GATEWAY_NAMESPACE}.svc.cluster.local"
# In-cluster clients (the in-cluster load tests) reach the tenants' OpenAI endpoints here, on the
# Gateway's tenants listener (manifests/aigateway/gateway.yaml.j2).
IN_CLUSTER_URL = f"http://{GATEWAY_FQDN}"
GATEWAY_PORT = 80
# The AI gateway serves the OpenAI API at the root (ai-gateway-helm endpointConfig.rootPrefix "/",
# openai "": /v1/chat/completions), where KServe's own server mounts it under /openai.
OPENAI_PREFIX = ""
AI_GATEWAY_REF = ObjectRef("gateway.networking.k8s.io/v1", "Gateway", AI_GATEWAY_NAME, ENVOY_GATEWAY_NAMESPACE)
# The labels Envoy Gateway puts on the Gateway's proxy pods (gateway
# internal/infrastructure/kubernetes/proxy/resource.go@v1.9.0, the owning-gateway labels).
PROXY_POD_LABELS = {"gateway.envoyproxy.io/owning-gateway-name": AI_GATEWAY_NAME,
                    "gateway.envoyproxy.io/owning-gateway-namespace": ENVOY_GATEWAY_NAMESPACE}
# The proxies' mesh identity: their ServiceAccount, named by the EnvoyProxy (envoyServiceAccount.name),
# in Istio's principal form (trust domain cluster.local, the mesh default).
GATEWAY_PRINCIPAL = f"cluster.local/ns/{ENVOY_GATEWAY_NAMESPACE}/sa/{AI_GATEWAY_NAME}"
# The service name of the AI gateway's spans (EnvoyProxy telemetry.tracing.provider.serviceName).
TRACE_SERVICE = f"{AI_GATEWAY_NAME}.{ENVOY_GATEWAY_NAMESPACE}"
# The JWKS endpoint, the "JWT server" of the seed: the gateway answers it from a ConfigMap
# (HTTPRouteFilter directResponse, gateway api/v1alpha1/httproutefilter_types.go@v1.9.0), so it
# needs no server of its own. Both verifiers fetch it: istiod for the sidecars' RequestAuthentication
# (jwksUri) and the gateway's own Envoy (SecurityPolicy remoteJWKS).
JWKS_PATH = "/.well-known/jwks.json"
JWKS_URL = f"http://{GATEWAY_FQDN}{JWKS_PATH}"
JWKS_CONFIGMAP = "inferbox-jwks"
# The ConfigMap key Envoy Gateway reads the body from (api/v1alpha1/shared_types.go@v1.9.0,
# CustomResponseBody.ValueRef: "response.body", else the first key).
JWKS_CONFIGMAP_KEY = "response.body"
# What the endpoint can serve: a ConfigMap holds at most 1 MiB (Kubernetes' object size limit);
# Envoy Gateway raises Envoy's direct-response limit (4 KiB by default) to fit the body
# (internal/xds/translator/translator.go@v1.9.0, maxDirectResponseBodySize, DefaultCRDMaxSize).
JWKS_MAX_BYTES = 1024 * 1024 - 1024  # room for the ConfigMap's own metadata
# How long each verifier caches the key set: Envoy's remoteJWKS cacheDuration and istiod's
# PILOT_JWT_PUB_KEY_REFRESH_INTERVAL (set by the istiod phase) are both this.
JWKS_CACHE = JWKS_REFRESH
# The verified `tenant` claim, copied by the gateway's JWT filter (SecurityPolicy claimToHeaders).
# Envoy appends claim headers rather than replacing them, so the Gateway's ClientTrafficPolicy
# removes any client-sent copy before any filter runs (earlyRequestHeaders).
TENANT_HEADER = "x-inferbox-tenant"
# Where the AI gateway puts the model it read from the request body (ai-gateway
# api/v1beta1/ai_gateway_route.go@v1.1.0: "x-ai-eg-model").
MODEL_HEADER = "x-ai-eg-model"
# The dynamic metadata the AI gateway writes token counts to (llmRequestCosts; namespace
# io.envoy.ai_gateway, ai-gateway site/versioned_docs/version-1.1/capabilities/traffic/
# usage-based-ratelimiting.md@v1.1.0) and the cost type per budget kind.
COST_NAMESPACE = "io.envoy.ai_gateway"
COST_TYPES = {"input": "InputToken", "output": "OutputToken", "total": "TotalToken"}
EMPTY_JWKS = '{"keys": []}'
# Envoy Gateway's xDS server and its rate-limit service's gRPC port (TLS both), which the proxies dial.
XDS_PORT = 18000
RATELIMIT_PORT = 8081
# The AIGatewayRoute (and the HTTPRoute the AI gateway generates from it, same name) of a tenant.
TENANT_ROUTE = "inferbox-openai"
# The recording rule each tenant's budgets become (tokens per second each allows).
BUDGET_RECORD = "inferbox:tenant_token_budget:per_second"


def sampling_fraction(percent: float) -> dict[str, int]:
    """``percent`` as Envoy Gateway's samplingFraction (gateway api/v1alpha1/shared_types.go@v1.9.0,
    Tracing.SamplingFraction: numerator over denominator), to a ten-thousandth of a percent."""
    return {"numerator": round(percent * 10_000), "denominator": 1_000_000}


def cost_key(tokens: str) -> str:
    """The metadata key a budget counting ``tokens`` (input, output, total) reads."""
    return f"llm_{tokens}_token"


def tenant_host(tenant: str, domain: str) -> str:
    """The tenant's OpenAI endpoint host: ``<tenant>.ai.<domain>`` (base URL http://<host>/v1)."""
    return f"{tenant}.ai.{domain}"


def gateway_context(settings: Settings, jwks: str | None = None) -> dict[str, Any]:
    """The context of manifests/aigateway/ and manifests/tracing/ (keys ``ai``, ``tracing``,
    ``jwks``). ``jwks`` is the public key set as JSON; by default the local key store's, or an
    empty set before any key exists (tenants-apply publishes it then)."""
    # Imported here: the tenants package renders with this module's names.
    from inferbox.load.tracing import RUN_HEADER, RUN_TAG
    from inferbox.tenants.keys import KeyStore
    from inferbox.tenants.render import TENANT_LABEL

    if jwks is None:
        store = KeyStore.for_state_dir(settings.state_dir)
        jwks = store.jwks_json() if store.exists() else EMPTY_JWKS
    return {
        "ai": {
            "namespace": ENVOY_GATEWAY_NAMESPACE, "gateway": AI_GATEWAY_NAME, "fqdn": GATEWAY_FQDN,
            "redis": AI_GATEWAY_REDIS, "redis_image": settings.versions.aigateway.redis_image,
            "tenant_domain": f"ai.{ingress_naming(settings).domain}", "tenant_label": TENANT_LABEL,
            "tenant_header": TENANT_HEADER, "jwks_configmap": JWKS_CONFIGMAP, "jwks_key": JWKS_CONFIGMAP_KEY,
            "jwks_path": JWKS_PATH, "tracing": settings.monitoring,
            # A fraction, not samplingRate (whole percent): 0.5% must stay 0.5%, as Istio takes it.
            "sampling_fraction": sampling_fraction(settings.trace_sampling_percent),
            "jaeger_service": JAEGER_DEPLOYMENT, "jaeger_namespace": TRACING_NAMESPACE,
            "jaeger_port": JAEGER_OTLP_GRPC_PORT, "trace_service": TRACE_SERVICE,
            "control_ports": [XDS_PORT, RATELIMIT_PORT],
        },
        "tracing": {"provider": TRACING_PROVIDER, "sampling_percent": settings.trace_sampling_percent,
                    "run_tag": RUN_TAG, "run_header": RUN_HEADER},
        "jwks": jwks,
    }


@dataclass(frozen=True)
class TenantGateway:
    """How tenants meet the AI gateway, when it is installed.

    ``openai_models``: the catalog models that speak the OpenAI API (a tenant gets a route for
    those of its models only); ``domain``: KServe's ingress domain, under which each tenant's
    host is ``<tenant>.ai.<domain>``; ``jwks_uri``: where the verifiers fetch the keys (None:
    the JWKS inline in every policy, the fallback); ``monitoring``: render the budgets as
    Prometheus series (needs the prometheus-operator CRDs).
    """

    openai_models: frozenset[str]
    domain: str
    jwks_uri: str | None = JWKS_URL
    monitoring: bool = True

    def tenant_context(self, tenant: Tenant) -> dict[str, Any] | None:
        """The ``ai`` context of manifests/tenant/aigateway.yaml.j2; None when the tenant may
        use no OpenAI model (it gets no route)."""
        models = [m for m in tenant.models if m in self.openai_models]
        if not models:
            return None
        return {
            "models": models, "host": tenant_host(tenant.name, self.domain), "route": TENANT_ROUTE,
            "gateway": AI_GATEWAY_NAME, "gateway_namespace": ENVOY_GATEWAY_NAMESPACE,
            "model_header": MODEL_HEADER, "tenant_header": TENANT_HEADER, "jwks_uri": self.jwks_uri,
            "jwks_cache": JWKS_CACHE, "cost_namespace": COST_NAMESPACE, "cost_types": COST_TYPES,
            "cost_keys": {tokens: cost_key(tokens) for tokens in COST_TYPES}, "monitoring": self.monitoring,
            "budget_record": BUDGET_RECORD, "principal": GATEWAY_PRINCIPAL,
        }


def openai_models(catalog: Catalog) -> frozenset[str]:
    """The catalog's models that serve the OpenAI API."""
    return frozenset(name for name, model in catalog.models.items() if "openai" in model.protocols)


def jwks_configmap(settings: Settings, jwks: str) -> dict[str, Any]:
    """The JWKS endpoint's ConfigMap holding ``jwks`` (manifests/aigateway/jwks.yaml.j2)."""
    from inferbox.render import Renderer

    [configmap] = Renderer(settings.root / "manifests").objects("aigateway/jwks.yaml.j2",
                                                                **gateway_context(settings, jwks))
    return configmap



def installed(kube: Kube) -> bool:
    """Does the cluster run the AI gateway (its Gateway exists)?"""
    return kube.exists(AI_GATEWAY_REF)


def serves_openai_only(model: ModelSpec) -> bool:
    """A model the AI gateway serves: it speaks OpenAI and nothing else (an LLM of the catalog)."""
    return set(model.protocols) == {"openai"}

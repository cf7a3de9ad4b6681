"""Render a tenant's Kubernetes and Istio objects from the templates in manifests/tenant/.

Pure: the same tenant, issuer and JWKS always give the same objects, in apply order.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from inferbox import PROJECT_ROOT
from inferbox.render import Renderer, sort_objects
from inferbox.tenants.keys import AUDIENCE, tenant_issuer
from inferbox.tenants.spec import Tenant

if TYPE_CHECKING:
    from inferbox.aigateway import TenantGateway

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "inferbox"
TENANT_LABEL = "inferbox.dev/tenant"
COMPONENT_LABEL = "inferbox.dev/component"
# The token claim Istio compares with the namespace (request.auth.claims[tenant]).
TENANT_CLAIM = "tenant"

# A tenant's apply order: its isolation (default-deny NetworkPolicies, mTLS, JWT rules and the
# ALLOW policy) right after the Namespace, before anything that grants or runs something in it,
# so that no apply, not even one cut short, leaves the namespace open.
# On the AI gateway the JWT and budget policies come before the route that makes the tenant
# reachable there, and the backends before the route that sends traffic to them.
TENANT_KIND_ORDER = ("Namespace", "NetworkPolicy", "PeerAuthentication", "RequestAuthentication",
                     "AuthorizationPolicy", "ResourceQuota", "LimitRange", "ServiceAccount", "ConfigMap", "Role",
                     "RoleBinding", "EnvoyFilter", "SecurityPolicy", "BackendTrafficPolicy", "Backend",
                     "AIServiceBackend", "AIGatewayRoute", "PrometheusRule")

TEMPLATES = ("namespace.yaml.j2", "quota.yaml.j2", "networkpolicies.yaml.j2", "mesh-security.yaml.j2",
             "models.yaml.j2", "rbac.yaml.j2")
RATE_LIMIT_TEMPLATE = "ratelimit.yaml.j2"
AI_GATEWAY_TEMPLATE = "aigateway.yaml.j2"
SHARED_TEMPLATE = "shared.yaml.j2"


@functools.cache
def _renderer(manifests: Path | None) -> Renderer:
    # One Jinja environment per folder: it caches compiled templates, and a thousand tenants
    # would otherwise compile every template a thousand times.
    return Renderer(manifests or PROJECT_ROOT / "manifests")


def tenant_labels(name: str) -> dict[str, str]:
    """The labels on every object of a tenant: how prune and tenant-delete find what is ours."""
    return {MANAGED_BY_LABEL: MANAGED_BY, TENANT_LABEL: name}


def tenant_selector(name: str) -> str:
    return f"{MANAGED_BY_LABEL}={MANAGED_BY},{TENANT_LABEL}={name}"


def _label(objects: Iterable[dict[str, Any]], labels: dict[str, str]) -> list[dict[str, Any]]:
    # Added here rather than in each template, so no template can forget them.
    for obj in objects:
        meta = obj.setdefault("metadata", {})
        meta["labels"] = {**(meta.get("labels") or {}), **labels}
    return list(objects)


def pss_version(kubernetes_version: str) -> str:
    """Pod Security Standards version label for a Kubernetes version: ``1.2.3`` -> ``v1.2``."""
    major, minor, *_ = kubernetes_version.removeprefix("v").split(".")
    return f"v{major}.{minor}"


def render_tenant(tenant: Tenant, issuer: str, jwks: str, *, audience: str = AUDIENCE,
                  pod_security_version: str = "latest", manifests: Path | None = None,
                  knative: bool = False, gateway: TenantGateway | None = None) -> list[dict[str, Any]]:
    """Every object the tenant needs, labelled for ownership and sorted into apply order.

    ``issuer`` is the issuers' base: the tenant trusts only its own, ``<issuer>/tenants/<name>``
    (``inferbox.tenants.keys.tenant_issuer``), which is what keeps one token from opening two
    tenants. ``jwks`` is the public JSON Web Key Set as a JSON string (see inferbox.tenants.keys);
    ``pod_security_version`` pins the Pod Security Standards version (``pss_version``);
    ``knative`` admits Knative's activator and autoscaler (Knative mode, scale to zero);
    ``gateway``: the AI gateway is installed (inferbox.aigateway): the tenant's OpenAI route,
    JWT policy and token budgets, and its sidecars fetch the keys from the JWKS endpoint
    (``gateway.jwks_uri``) instead of carrying them inline.
    """
    # Imported here: inferbox.aigateway needs the plan's names, and the plan the catalog, which
    # reads this package's quantities.
    from inferbox.aigateway import GATEWAY_PRINCIPAL, PROXY_POD_LABELS
    from inferbox.bootstrap.phases import ENVOY_GATEWAY_NAMESPACE

    renderer = _renderer(manifests)
    ai = gateway.tenant_context(tenant) if gateway is not None else None
    context = {"tenant": tenant, "issuer": tenant_issuer(tenant.name, issuer), "audience": audience, "jwks": jwks,
               "knative": knative, "ai": ai, "jwks_uri": gateway.jwks_uri if gateway is not None else None,
               "gateway_principal": GATEWAY_PRINCIPAL if gateway is not None else None,
               "gateway_pods": {"namespace": ENVOY_GATEWAY_NAMESPACE, "labels": PROXY_POD_LABELS},
               "pss_version": pod_security_version}
    templates = [f"tenant/{name}" for name in TEMPLATES]
    if tenant.rate_limit is not None:
        templates.append(f"tenant/{RATE_LIMIT_TEMPLATE}")
    if ai is not None:
        templates.append(f"tenant/{AI_GATEWAY_TEMPLATE}")
    objects = [obj for template in templates for obj in renderer.objects(template, **context)]
    return sort_tenant_objects(_label(objects, tenant_labels(tenant.name)))


def sort_tenant_objects(objects: Iterable[dict[str, Any]], *, reverse: bool = False) -> list[dict[str, Any]]:
    """``TENANT_KIND_ORDER`` (stable: template order within a kind); ``reverse`` for deletion."""
    def rank(obj: dict[str, Any]) -> int:
        kind = obj.get("kind", "")
        return TENANT_KIND_ORDER.index(kind) if kind in TENANT_KIND_ORDER else len(TENANT_KIND_ORDER)

    ordered = sorted(objects, key=rank)
    return ordered[::-1] if reverse else ordered


def render_shared(*, manifests: Path | None = None) -> list[dict[str, Any]]:
    """The cluster-scoped objects all tenants share (the model admission policy)."""
    objects = _renderer(manifests).objects(f"tenant/{SHARED_TEMPLATE}")
    return sort_objects(_label(objects, {MANAGED_BY_LABEL: MANAGED_BY, COMPONENT_LABEL: "tenants"}))


def to_yaml(objects: Iterable[dict[str, Any]]) -> str:
    """Objects as one multi-document YAML text (goldens, dry-run output)."""
    return yaml.safe_dump_all(list(objects), sort_keys=False, default_flow_style=False, width=120)

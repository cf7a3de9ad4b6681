"""`invoke predict --target cluster`: a request to a tenant's model through the Istio ingress
gateway, with a short-lived token for the tenant, exactly as a client outside the cluster calls it.

The Host header is the InferenceService's own URL (``status.url``: KServe's domain template decides
it), the token comes from the tenant's keyring. On kind the gateway is on the host already (the
kind config maps 127.0.0.1:8080 to its node port); elsewhere the request goes through a
port-forward to a gateway pod that this module opens and closes. Where the AI gateway runs, an
LLM is called through it instead (a port-forward to its proxies), at the tenant's OpenAI host:
the model admits inference from the AI gateway alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from inferbox import aigateway
from inferbox.bootstrap.phases import ENVOY_GATEWAY_NAMESPACE
from inferbox.bootstrap.providers import GATEWAY_HTTP_PORT
from inferbox.config import Provider, Settings
from inferbox.errors import InferboxError
from inferbox.hints import invoke
from inferbox.k8s import Kube, ObjectRef
from inferbox.load.target import KSERVE_OPENAI_PREFIX
from inferbox.local import client
from inferbox.models.catalog import ModelSpec

GATEWAY_NAMESPACE = "istio-ingress"
GATEWAY_SERVICE = "istio-ingressgateway"
GATEWAY_PORT = 80
CHAT_PROMPT = "In one sentence: what does an inference gateway do?"


@dataclass(frozen=True)
class GatewayCall:
    protocol: str
    path: str
    answer: client.Answer


def model_host(kube: Kube, name: str, namespace: str) -> str:
    """The InferenceService's host name, from its status (set once KServe has routed it)."""
    isvc = kube.get(ObjectRef("serving.kserve.io/v1beta1", "InferenceService", name, namespace))
    if isvc is None:
        raise InferboxError(f"no InferenceService {namespace}/{name}: run "
                            f"`{invoke(f'deploy-model {name} --target cluster --tenant {namespace}')}` first")
    url = (isvc.get("status") or {}).get("url")
    if not url:
        raise InferboxError(f"InferenceService {namespace}/{name} has no URL yet (not Ready): "
                            f"`{invoke(f'deploy-model {name} --target cluster --tenant {namespace} --wait')}` "
                            "explains why")
    host = urlsplit(url).hostname
    assert host, url
    return host


def requests_for(spec: ModelSpec, instances: list[Any] | None, *,
                 openai_prefix: str = KSERVE_OPENAI_PREFIX) -> list[tuple[str, str, dict[str, Any]]]:
    """(protocol, path, body) for each protocol the model's runtime offers; the OpenAI path under
    ``openai_prefix`` (KServe's /openai, or the AI gateway's root)."""
    calls: list[tuple[str, str, dict[str, Any]]] = []
    protocols = set(spec.protocols)
    if protocols & {"v1", "v2"}:
        if instances is None:
            if spec.example is None:
                raise InferboxError(f"model {spec.name!r} has no example input in the catalog: pass --data")
            instances = list(spec.example.instances)
        if "v1" in protocols:
            calls.append(("v1", client.v1_path(spec.name), client.v1_request(instances)))
        if "v2" in protocols:
            calls.append(("v2", client.v2_path(spec.name), client.v2_request(instances)))
    if "openai" in protocols:
        calls.append(("openai", f"{openai_prefix}/v1/chat/completions",
                      {"model": spec.name, "max_tokens": 64,
                       "messages": [{"role": "user", "content": CHAT_PROMPT}]}))
    return calls


@contextmanager
def gateway_port(settings: Settings, kube: Kube) -> Iterator[int]:
    """A local port that reaches the gateway: kind's host mapping, else a port-forward to a gateway pod."""
    if settings.provider is Provider.KIND:
        yield GATEWAY_HTTP_PORT
        return
    with forwarded(kube, GATEWAY_NAMESPACE, GATEWAY_SERVICE, GATEWAY_PORT) as port:
        yield port


@contextmanager
def ai_gateway_port(kube: Kube) -> Iterator[int]:
    """A local port that reaches the AI gateway (a ClusterIP Service: a port-forward to a proxy pod)."""
    with forwarded(kube, ENVOY_GATEWAY_NAMESPACE, aigateway.GATEWAY_SERVICE, aigateway.GATEWAY_PORT) as port:
        yield port


@contextmanager
def forwarded(kube: Kube, namespace: str, service: str, service_port: int) -> Iterator[int]:
    """A local port forwarded, through the API server, to a ready pod behind ``service``."""
    from inferbox.k8s.portforward import LocalForward, pod_connector
    from inferbox.observability.dashboards import service_backend

    pod, port = service_backend(kube, namespace, service, service_port)
    forward = LocalForward(pod_connector(kube.api_client, namespace, pod, port), local_port=0,
                           name=f"{service} {namespace}/{pod}:{port}")
    local = forward.start()
    try:
        yield local
    finally:
        forward.close()


def call(port: int, host: str, token: str, calls: list[tuple[str, str, dict[str, Any]]], *,
         timeout_s: float = 60.0) -> list[GatewayCall]:
    """Send each request to 127.0.0.1:port as ``host`` with the bearer token; fail on a non-2xx answer."""
    headers = {"Host": host, "Authorization": f"Bearer {token}"}
    done: list[GatewayCall] = []
    for protocol, path, body in calls:
        try:
            answer = client.request(port, "POST", path, body, timeout_s=timeout_s, headers=headers)
        except OSError as exc:
            raise client.PredictError(f"{protocol} {host}{path} via 127.0.0.1:{port}: {exc}") from exc
        if not answer.ok:
            hint = {401: f" (token rejected: run `{invoke('tenants-apply')}` after `{invoke('keys')}`)",
                    403: " (the tenant's AuthorizationPolicy refused this caller)"}.get(answer.status, "")
            raise client.PredictError(f"{protocol} {host}{path}: HTTP {answer.status}{hint}: {answer.body}")
        done.append(GatewayCall(protocol, path, answer))
    return done

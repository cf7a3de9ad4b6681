"""Where load may go, and the tenant's token to send there.

Load traffic goes to exactly one of:

* a local predictor, found in the LocalTarget state (``.inferbox/local/predictors.json``), on loopback;
* the platform's gateway (``--target cluster``): kind maps the Istio ingress gateway to
  http://127.0.0.1:8080 on the host, and the gateway routes by the InferenceService's host
  (:mod:`inferbox.models.hosts`);
* a base URL the user names with ``--host``: loopback is accepted as it is; any other address only
  with ``--i-own-this-host``, the user's statement that they own it and may load it.

Names are resolved and every address they resolve to must be loopback, so ``localhost`` pointed
elsewhere in /etc/hosts is not taken on trust.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

from inferbox.errors import ConfigError, InferboxError
from inferbox.load.tracing import ENTRY_SERVICE

# kind's host port for the Istio ingress gateway (manifests/kind-config.yaml.j2 -> node port 30080).
GATEWAY_URL = "http://127.0.0.1:8080"
# The gateway as pods inside the cluster reach it (release istio-ingressgateway, namespace istio-ingress).
IN_CLUSTER_GATEWAY_URL = "http://istio-ingressgateway.istio-ingress.svc.cluster.local"
# Where an OpenAI route lives: KServe's model server mounts them under /openai (KSERVE_OPENAI_ROUTE_PREFIX,
# kserve/kserve python/kserve/kserve/protocol/rest/openai/endpoints.py@v0.20.0); vLLM's own server, which
# the local target runs, at the root.
KSERVE_OPENAI_PREFIX = "/openai"
VLLM_OPENAI_PREFIX = ""


def openai_prefix(local_server: str | None) -> str:
    """The OpenAI routes' prefix of a local predictor's server (None: not a local one, so KServe's)."""
    return VLLM_OPENAI_PREFIX if local_server == "vllm" else KSERVE_OPENAI_PREFIX


class Target(StrEnum):
    LOCAL = "local"
    CLUSTER = "cluster"


class LoadTargetRefused(InferboxError):
    """The load would go somewhere it may not: nothing was sent."""


def parse_target(value: str) -> Target:
    try:
        return Target(value)
    except ValueError:
        raise ConfigError("command line", [("target", f"{value!r} is not one of local, cluster")]) from None


@dataclass(frozen=True)
class Endpoint:
    """The base URL Locust sends to, and the Host header the gateway routes by (if any)."""

    base_url: str
    host_header: str | None
    description: str
    openai_prefix: str = KSERVE_OPENAI_PREFIX
    # Whose spans a traced run's Jaeger search looks at: the first proxy the requests meet.
    trace_service: str = ENTRY_SERVICE

    @property
    def hostname(self) -> str:
        return urlsplit(self.base_url).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.base_url)
        return parts.port or (443 if parts.scheme == "https" else 80)


def is_loopback_address(text: str) -> bool:
    try:
        return ipaddress.ip_address(text.strip("[]")).is_loopback
    except ValueError:
        return False


def resolves_to_loopback(hostname: str) -> bool:
    """An IP literal that is loopback, or a name whose every address is loopback."""
    if is_loopback_address(hostname):
        return True
    try:
        infos = socket.getaddrinfo(hostname, None)
    except (OSError, UnicodeError):
        return False
    addresses = {str(info[4][0]) for info in infos}
    return bool(addresses) and all(is_loopback_address(address) for address in addresses)


def check_host(url: str, *, i_own_this_host: bool = False) -> str:
    """A user-named base URL, normalised; non-loopback ones only with ``i_own_this_host``."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("command line", [("host", f"{url!r} is not a base URL like http://127.0.0.1:8080")])
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError("command line", [("host", f"{url!r}: a base URL without path or query (the "
                                                    "protocol's paths are added per request)")])
    if parts.username or parts.password:
        raise ConfigError("command line", [("host", "no credentials in the URL (tokens go in --tenant)")])
    normalised = f"{parts.scheme}://{parts.netloc}"
    if resolves_to_loopback(parts.hostname):
        return normalised
    if not i_own_this_host:
        raise LoadTargetRefused(
            f"refusing to send load to {normalised}: {parts.hostname} is not a loopback address. Load goes to a "
            "local predictor, the platform's gateway, or a host you own: if you own it and may load it, say so "
            "with --i-own-this-host")
    return normalised



def probe(endpoint: Endpoint, *, timeout_s: float = 3.0) -> None:
    """Something must accept a connection at the endpoint before any load is started."""
    try:
        with socket.create_connection((endpoint.hostname, endpoint.port), timeout=timeout_s):
            return
    except OSError as exc:
        raise InferboxError(f"nothing accepts connections at {endpoint.base_url} ({endpoint.description}): "
                            f"{exc.strerror or exc}") from None

"""Where KServe serves an InferenceService: its host names, decided in this one place.

KServe renders ``ingress.domainTemplate`` with ``.Name``, ``.Namespace`` and ``.IngressDomain``
(kserve/kserve pkg/controller/v1beta1/inferenceservice/reconcilers/ingress/domain.go@v0.20.0,
GenerateDomainName) once for the InferenceService's own name and once per component with
Name ``<isvc>-predictor`` (kube_ingress_reconciler.go@v0.20.0), and refuses a host that is
not a DNS-1123 fully qualified name (each label at most 63 characters). The defaults are the
chart's (charts/kserve-resources/values.yaml@v0.20.0, ``kserve.controller.gateway``);
helm-values/kserve.yaml may override them, and the render check compares the result with the
``inferenceservice-config`` ConfigMap the pinned chart renders.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from inferbox.config import Settings
from inferbox.errors import ConfigError

DEFAULT_DOMAIN = "example.com"
DEFAULT_DOMAIN_TEMPLATE = "{{ .Name }}-{{ .Namespace }}.{{ .IngressDomain }}"
MAX_LABEL = 63  # RFC 1123 label, as k8s.io/apimachinery validation.IsDNS1123Label
MAX_HOST = 253
_FIELD = re.compile(r"{{-?\s*\.(Name|Namespace|IngressDomain)\s*-?}}")
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
VALUES_PATH = ("kserve", "controller", "gateway")


@dataclass(frozen=True)
class IngressNaming:
    """KServe's ingress domain and domain template, as the platform configures them."""

    domain: str = DEFAULT_DOMAIN
    domain_template: str = DEFAULT_DOMAIN_TEMPLATE

    @classmethod
    def from_values(cls, path: Path) -> IngressNaming:
        """Read ``kserve.controller.gateway.{domain,domainTemplate}`` from the kserve values file,
        the chart defaults where it sets neither. Raises ConfigError on a template this module
        cannot evaluate (anything beyond .Name, .Namespace and .IngressDomain)."""
        gateway: Any = {}
        if path.is_file():
            gateway = yaml.safe_load(path.read_text()) or {}
            for key in VALUES_PATH:
                gateway = gateway.get(key) if isinstance(gateway, dict) else None
        gateway = gateway if isinstance(gateway, dict) else {}
        naming = cls(domain=str(gateway.get("domain", DEFAULT_DOMAIN)),
                     domain_template=str(gateway.get("domainTemplate", DEFAULT_DOMAIN_TEMPLATE)))
        leftover = _FIELD.sub("", naming.domain_template)
        if "{{" in leftover:
            raise ConfigError(str(path), [(".".join((*VALUES_PATH, "domainTemplate")),
                                           f"{naming.domain_template!r}: inferbox computes hosts from .Name, "
                                           ".Namespace and .IngressDomain only")])
        return naming

    def host(self, name: str, namespace: str) -> str:
        """The host KServe generates for ``name`` (an InferenceService or a component) in ``namespace``."""
        values = {"Name": name, "Namespace": namespace, "IngressDomain": self.domain}
        return _FIELD.sub(lambda m: values[m.group(1)], self.domain_template)

    def isvc_host(self, isvc: str, namespace: str) -> str:
        """The InferenceService's own host: what ``status.url`` names and the gateway routes."""
        return self.host(isvc, namespace)

    def predictor_host(self, isvc: str, namespace: str) -> str:
        return self.host(f"{isvc}-predictor", namespace)

    def host_problems(self, isvc: str, namespace: str) -> list[str]:
        """Why KServe would refuse the hosts of this InferenceService; empty when it would not."""
        problems = []
        for host in (self.isvc_host(isvc, namespace), self.predictor_host(isvc, namespace)):
            if len(host) > MAX_HOST:
                problems.append(f"host {host} is {len(host)} characters; at most {MAX_HOST}")
            for label in host.split("."):
                if len(label) > MAX_LABEL:
                    problems.append(f"host label {label!r} is {len(label)} characters; KServe refuses labels over "
                                    f"{MAX_LABEL} (DNS-1123): shorten the model or tenant name "
                                    f"(together at most {MAX_LABEL - len(label) + len(isvc) + len(namespace)})")
                elif not _LABEL.fullmatch(label):
                    problems.append(f"host label {label!r} is not a DNS-1123 label")
        return problems


def ingress_naming(settings: Settings) -> IngressNaming:
    """The platform's KServe naming, from helm-values/kserve.yaml over the chart defaults."""
    return IngressNaming.from_values(settings.root / "helm-values" / "kserve.yaml")

"""Install upstream CRD manifests into a running control plane.

Every document is applied with server-side apply: several upstream CRDs
(KServe, prometheus-operator) are larger than the 256 KiB that client-side
``kubectl apply`` would store in its last-applied annotation. Documents that
are not CRDs (gateway-api ships a ValidatingAdmissionPolicy and its binding
beside its CRDs) are applied too, after the CRDs are Established, as the
objects they are.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.dynamic import DynamicClient

from inferbox.render import SAFE_LOADER  # the upstream CRDs are megabytes of YAML

__all__ = ["CrdInstallError", "InstalledManifests", "install_manifests", "load_manifests", "wait_established"]

FIELD_MANAGER = "inferbox-testenv"
CRD_KIND = "CustomResourceDefinition"


class CrdInstallError(RuntimeError):
    """A manifest could not be applied or a CRD did not become Established."""


@dataclass(frozen=True)
class InstalledManifests:
    crds: list[str]
    """Names of the CRDs applied and Established."""
    others: list[str]
    """``Kind/name`` of the other objects applied."""


def load_manifests(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """All YAML documents in ``paths`` (files, or folders searched recursively), in path order."""
    files: list[Path] = []
    for p in paths:
        files += sorted(f for f in p.rglob("*") if f.suffix in {".yaml", ".yml"}) if p.is_dir() else [p]
    docs: list[dict[str, Any]] = []
    for f in files:
        docs += [d for d in yaml.load_all(f.read_text(), Loader=SAFE_LOADER) if isinstance(d, dict) and d.get("kind")]
    return docs


def install_manifests(api: client.ApiClient, paths: Iterable[Path], *, timeout: float = 120.0) -> InstalledManifests:
    """Apply every manifest under ``paths``: CRDs first, wait for them, then the rest."""
    docs = load_manifests(paths)
    crds = [d for d in docs if d["kind"] == CRD_KIND]
    others = [d for d in docs if d["kind"] != CRD_KIND]
    dyn = DynamicClient(api)
    for doc in crds:
        _apply(dyn, doc)
    names = [d["metadata"]["name"] for d in crds]
    wait_established(api, names, timeout=timeout)
    for doc in others:
        _apply(dyn, doc)
    return InstalledManifests(crds=names, others=[f"{d['kind']}/{d['metadata']['name']}" for d in others])


def _apply(dyn: DynamicClient, doc: dict[str, Any]) -> None:
    try:
        resource = dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
        dyn.server_side_apply(resource, body=doc, namespace=doc["metadata"].get("namespace"),
                              field_manager=FIELD_MANAGER, force_conflicts=True)
    except Exception as exc:
        raise CrdInstallError(f"applying {doc['kind']}/{doc['metadata'].get('name')} failed: {exc}") from exc


def _condition(crd: client.V1CustomResourceDefinition, type_: str) -> bool:
    return any(c.type == type_ and c.status == "True" for c in (crd.status.conditions or []))


def wait_established(api: client.ApiClient, names: list[str], *, timeout: float = 120.0) -> None:
    """Poll until every named CRD is Established and its names accepted."""
    ext = client.ApiextensionsV1Api(api)
    deadline = time.monotonic() + timeout
    pending = set(names)
    delay = 0.1
    while pending:
        items = ext.list_custom_resource_definition().items
        ready = {c.metadata.name for c in items if _condition(c, "Established") and _condition(c, "NamesAccepted")}
        pending -= ready
        if not pending:
            return
        if time.monotonic() > deadline:
            raise CrdInstallError(f"CRDs not Established after {timeout:.0f} s: {', '.join(sorted(pending))}")
        time.sleep(delay)
        delay = min(delay * 2, 1.0)


class CrdInstaller:
    """``install_crds`` for anything with an ``api_client()``: the embedded plane or an existing cluster."""

    def api_client(self) -> client.ApiClient:
        raise NotImplementedError

    def install_crds(self, *paths: Path, timeout: float = 120.0) -> InstalledManifests:
        """Apply the CRD manifests under ``paths`` and wait until Established."""
        api = self.api_client()
        try:
            return install_manifests(api, paths, timeout=timeout)
        finally:
            api.close()

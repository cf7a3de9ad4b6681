"""Hermetic Kubernetes control plane for tests (envtest + kwok, built from registry sources).

Typical use::

    from inferbox.testenv import ControlPlane, ensure_binaries, load_pins

    binaries = ensure_binaries(load_pins(Path("versions.toml")))  # builds once, then cached
    with ControlPlane(binaries) as cp:                # etcd, apiserver, KCM, scheduler, kwok
        cp.kubectl("get", "nodes")
        cp.install_crds(Path("../shared/crds"))

``python -m inferbox.testenv build`` builds the binaries; ``... up`` runs a
control plane until Ctrl-C.
"""

from inferbox.testenv.build import BinarySet, BuildError, default_cache_dir, ensure_binaries, find_binaries
from inferbox.testenv.controlplane import ControlPlane, ControlPlaneError, StartTimeouts
from inferbox.testenv.crds import CrdInstallError, InstalledManifests, install_manifests
from inferbox.testenv.nodes import DEFAULT_NODES, GPU_RESOURCE, GPU_TAINT, FakeNode
from inferbox.testenv.pins import TestenvPins, load_pins
from inferbox.testenv.stages import FAIL_ANNOTATION, FailureMode

__all__ = [
    "DEFAULT_NODES",
    "FAIL_ANNOTATION",
    "GPU_RESOURCE",
    "GPU_TAINT",
    "BinarySet",
    "BuildError",
    "ControlPlane",
    "ControlPlaneError",
    "CrdInstallError",
    "FailureMode",
    "FakeNode",
    "InstalledManifests",
    "StartTimeouts",
    "TestenvPins",
    "default_cache_dir",
    "ensure_binaries",
    "find_binaries",
    "install_manifests",
    "load_pins",
]

"""inferbox: an inference platform in a box (kind/minikube + Istio + KServe + monitoring)."""

from pathlib import Path

__all__ = ["PROJECT_ROOT"]

# The repository root: versions.toml, manifests/ and helm-values/ live beside the package.
PROJECT_ROOT = Path(__file__).resolve().parent.parent

"""The one layer through which the project reaches the Kubernetes API."""

from inferbox.k8s.client import Kube, ObjectRef

__all__ = ["Kube", "ObjectRef"]

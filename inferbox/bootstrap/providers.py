"""Where the cluster comes from: kind (default), minikube, or an existing kubeconfig context."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from inferbox.config import Provider, Settings
from inferbox.errors import ClusterError
from inferbox.k8s import Kube
from inferbox.render import Renderer
from inferbox.tools import Toolbox

# Host ports that reach the Istio ingress gateway on kind (see manifests/kind-config.yaml.j2).
GATEWAY_HTTP_PORT = 8080
GATEWAY_HTTPS_PORT = 8443
# Namespaces a provider's cluster comes with, besides Kubernetes' own: kind's node image runs
# the local-path provisioner in local-path-storage (kubernetes-sigs/kind
# pkg/build/nodeimage/const_storage.go@v0.32.0, unchanged on main); minikube's default addons
# (storage-provisioner, nvidia-device-plugin) live in kube-system.
PROVIDER_NAMESPACES = {Provider.KIND: ("local-path-storage",), Provider.MINIKUBE: (), Provider.EXISTING: ()}


class ClusterProvider(Protocol):
    name: str
    needs_docker: bool

    def exists(self) -> bool: ...

    def create(self) -> bool:
        """Create the cluster when missing; True when it was created now."""
        ...

    def delete(self) -> bool:
        """Delete the cluster this project created; True when something was deleted."""
        ...


@dataclass
class KindProvider:
    """kind: a cluster of Docker containers; its node image also runs a storage provisioner."""

    settings: Settings
    tools: Toolbox
    renderer: Renderer
    gpu: bool
    workers: int = 1
    name: str = "kind"
    needs_docker: bool = True

    def config_path(self) -> Path:
        return self.settings.state_dir / "kind-config.yaml"

    def render_config(self) -> str:
        return self.renderer.text("kind-config.yaml.j2", cluster_name=self.settings.cluster_name,
                                  http_port=GATEWAY_HTTP_PORT, https_port=GATEWAY_HTTPS_PORT,
                                  workers=self.workers, gpu=self.gpu)

    def exists(self) -> bool:
        return self.settings.cluster_name in self.tools.kind.clusters()

    def create(self) -> bool:
        if self.exists():
            return False
        path = self.config_path()
        if not self.settings.dry_run:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(self.render_config())
        image = self.settings.versions.kubernetes.kind_node_image
        self.tools.kind.create_cluster(self.settings.cluster_name, path, image)
        return True

    def delete(self) -> bool:
        if not self.exists():
            return False
        self.tools.kind.delete_cluster(self.settings.cluster_name)
        return True


@dataclass
class MinikubeProvider:
    settings: Settings
    tools: Toolbox
    gpu: bool
    cpus: int = 4
    memory_mb: int = 8192
    name: str = "minikube"
    needs_docker: bool = True

    def exists(self) -> bool:
        return self.settings.cluster_name in self.tools.minikube.profiles()

    def create(self) -> bool:
        if self.exists():
            return False
        self.tools.minikube.start(self.settings.cluster_name, self.settings.versions.kubernetes.version,
                                  gpus=self.gpu, cpus=self.cpus, memory_mb=self.memory_mb)
        return True

    def delete(self) -> bool:
        if not self.exists():
            return False
        self.tools.minikube.delete(self.settings.cluster_name)
        return True


@dataclass
class ExistingProvider:
    """A cluster someone else owns: checked for reachability, never created or deleted."""

    settings: Settings
    name: str = "existing"
    needs_docker: bool = False

    def exists(self) -> bool:
        if self.settings.dry_run:
            return True
        Kube.connect(context=self.settings.kube_context).server_version()
        return True

    def create(self) -> bool:
        if not self.settings.context:
            raise ClusterError("--provider existing needs --context <kubeconfig context>")
        self.exists()
        return False

    def delete(self) -> bool:
        return False


def make_provider(settings: Settings, tools: Toolbox, renderer: Renderer, *, gpu: bool) -> ClusterProvider:
    if settings.provider is Provider.KIND:
        return KindProvider(settings, tools, renderer, gpu)
    if settings.provider is Provider.MINIKUBE:
        return MinikubeProvider(settings, tools, gpu)
    return ExistingProvider(settings)

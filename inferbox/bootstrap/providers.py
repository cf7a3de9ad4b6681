"""Where the cluster comes from: kind (default), minikube, or an existing kubeconfig context."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from inferbox.config import Provider, Settings
from inferbox.errors import ClusterError
from inferbox.hints import invoke
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
# NVIDIA's recipe for GPUs in kind nodes: NVIDIA/nvkind pkg/nvkind/node.go (main@24c190e,
# InstallContainerToolkit, ConfigureContainerRuntime, PatchProcDriverNvidia), run in each GPU
# node after `kind create cluster`. Two deliberate differences: the toolkit version is pinned
# (versions.toml [gpu], installed the way NVIDIA's install guide pins it), and nvidia is made
# containerd's default runtime, as the GPU Operator's toolkit does by default
# (CONTAINERD_SET_AS_DEFAULT), where nvkind registers a RuntimeClass: so the device plugin, the
# DCGM exporter, predictors and gpu-check need no runtimeClassName (nvidia-container-runtime
# passes non-GPU containers straight to runc).
# Each script checks first, so a bootstrap of an existing cluster runs them again safely.
_TOOLKIT_PINNED = "nvidia-ctk --version 2>/dev/null | grep -q 'version {v}$'"
TOOLKIT_INSTALL = (
    f"set -euo pipefail; if {_TOOLKIT_PINNED}; then exit 0; fi; export DEBIAN_FRONTEND=noninteractive; "
    "apt-get update; apt-get install -y gpg curl; "
    "curl -fsSL https://nvidia.github.io/libnvidia-container/gpgkey "
    "| gpg --dearmor --yes -o /usr/share/keyrings/nvidia-container-toolkit-keyring.gpg; "
    "curl -fsSL https://nvidia.github.io/libnvidia-container/stable/deb/nvidia-container-toolkit.list "
    "| sed 's#deb https://#deb [signed-by=/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg] https://#g' "
    "> /etc/apt/sources.list.d/nvidia-container-toolkit.list; apt-get update; "
    "apt-get install -y --allow-downgrades nvidia-container-toolkit={v}-1 nvidia-container-toolkit-base={v}-1 "
    "libnvidia-container-tools={v}-1 libnvidia-container1={v}-1"
)
# Since toolkit 1.18 `nvidia-ctk runtime configure` writes a drop-in (conf.d/99-nvidia.toml) that
# config.toml imports (NVIDIA/nvidia-container-toolkit cmd/nvidia-ctk/runtime/configure): look in both.
_NVIDIA_DEFAULT = ("grep -rqsF 'default_runtime_name = \"nvidia\"' /etc/containerd/config.toml "
                   "/etc/containerd/conf.d")
RUNTIME_CONFIGURE = (f"set -euo pipefail; if {_NVIDIA_DEFAULT}; then exit 0; fi; "
                     "nvidia-ctk runtime configure --runtime=containerd --config-source=file --set-as-default; "
                     "systemctl restart containerd")
# Hide the host's device nodes from the driver's ModifyDeviceFiles, unless the toolkit's CDI hook
# already did (toolkit >= 1.19 sets ModifyDeviceFiles: 0): nvkind's PatchProcDriverNvidia.
_DEVICE_FILES_KEPT = "grep -q '^ModifyDeviceFiles: 0$' /proc/driver/nvidia/params"
PROC_DRIVER_PATCH = (
    f"set -euo pipefail; if {_DEVICE_FILES_KEPT}; then exit 0; fi; "
    "umount -R /proc/driver/nvidia; cp /proc/driver/nvidia/params /root/gpu-params; "
    "sed -i 's/^ModifyDeviceFiles: 1$/ModifyDeviceFiles: 0/' /root/gpu-params; "
    "mount --bind /root/gpu-params /proc/driver/nvidia/params"
)
# The host side, which no command inside the node can fix: the node was made without its GPUs.
HOST_GPU_FIX = ("on the host: `nvidia-ctk runtime configure --runtime=docker --set-as-default`, "
                "`nvidia-ctk config --set accept-nvidia-visible-devices-as-volume-mounts=true --in-place`, restart "
                "docker; then recreate the cluster (`{teardown}`, `{bootstrap}`)")
# What the doctor runs in each GPU node once the cluster exists: (check, probe, fix script or None
# for HOST_GPU_FIX). The toolkit probe wants the pinned version ({v}), as the install does.
NODE_CHECKS = (
    ("NVIDIA container toolkit {v} in the node", _TOOLKIT_PINNED, TOOLKIT_INSTALL),
    ("containerd's default runtime is nvidia", _NVIDIA_DEFAULT, RUNTIME_CONFIGURE),
    ("a GPU is visible in the node", "nvidia-smi -L", None),
    ("the driver leaves the node's device files alone", _DEVICE_FILES_KEPT, PROC_DRIVER_PATCH),
)

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

    def gpu_nodes(self) -> list[str]:
        """The GPU worker's node name: kind names workers <cluster>-worker, -worker2, ... in
        config order (kubernetes-sigs/kind pkg/cluster/internal/providers/common/namer.go@v0.32.0),
        and the GPU worker comes after the CPU workers (manifests/kind-config.yaml.j2)."""
        if not self.gpu:
            return []
        index = self.workers + 1
        return [f"{self.settings.cluster_name}-worker{index if index > 1 else ''}"]

    def prepare_gpu_nodes(self, *, existing: bool = False) -> None:
        """Put the NVIDIA container toolkit and runtime into each GPU node (see TOOLKIT_INSTALL);
        ``existing``: the cluster was there already, and may have been made without a GPU worker."""
        version = self.settings.versions.gpu.container_toolkit
        nodes = self.gpu_nodes()
        if existing and nodes and not self.settings.dry_run:
            missing = sorted(set(nodes) - set(self.tools.kind.nodes(self.settings.cluster_name)))
            if missing:
                raise ClusterError(f"kind cluster {self.settings.cluster_name!r} has no GPU worker "
                                   f"({', '.join(missing)}): it was made without GPUs. Recreate it: "
                                   f"`{invoke('teardown')}`, then `{invoke('bootstrap --gpu on')}`")
        for node in nodes:
            for script in (TOOLKIT_INSTALL.format(v=version), RUNTIME_CONFIGURE, PROC_DRIVER_PATCH):
                self.tools.docker.exec_script(node, script)

    def render_config(self) -> str:
        return self.renderer.text("kind-config.yaml.j2", cluster_name=self.settings.cluster_name,
                                  http_port=GATEWAY_HTTP_PORT, https_port=GATEWAY_HTTPS_PORT,
                                  workers=self.workers, gpu=self.gpu)

    def exists(self) -> bool:
        return self.settings.cluster_name in self.tools.kind.clusters()

    def create(self) -> bool:
        if self.exists():
            self.prepare_gpu_nodes(existing=True)  # finishes a preparation an earlier run did not
            return False
        path = self.config_path()
        if not self.settings.dry_run:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(self.render_config())
        image = self.settings.versions.kubernetes.kind_node_image
        self.tools.kind.create_cluster(self.settings.cluster_name, path, image)
        self.prepare_gpu_nodes()
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
        """minikube's GPU path for the docker driver (kubernetes/minikube
        site/content/en/docs/tutorials/nvidia.md@v1.38.1): ``--gpus all`` with the docker runtime,
        which makes nvidia dockerd's default runtime in the node and enables the
        nvidia-device-plugin addon (pkg/minikube/cruntime/docker.go). The addon is disabled again:
        the plan's gpu-device-plugin phase installs the pinned chart, with its GPU wait and DCGM
        exporter, and one device plugin per node is the most there may be. The node gets the
        label GPU feature discovery would give it, which the chart and the predictors select on."""
        profile = self.settings.cluster_name
        if self.exists():
            if self.gpu:  # a profile made before the label was given: give it now (idempotent)
                self.tools.kubectl.label_node(profile, {"nvidia.com/gpu.present": "true"})
            return False
        self.tools.minikube.start(profile, self.settings.versions.kubernetes.version,
                                  gpus=self.gpu, cpus=self.cpus, memory_mb=self.memory_mb)
        if self.gpu:
            self.tools.minikube.disable_addon(profile, "nvidia-device-plugin")
            self.tools.kubectl.label_node(profile, {"nvidia.com/gpu.present": "true"})
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

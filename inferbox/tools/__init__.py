"""External tools, each wrapped exactly once, all on one :class:`~inferbox.runner.Runner`."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from inferbox.config import Settings
from inferbox.runner import Runner
from inferbox.tools.docker import Docker
from inferbox.tools.helm import Helm
from inferbox.tools.kind import Kind
from inferbox.tools.kubectl import Kubectl
from inferbox.tools.minikube import Minikube

TOOL_NAMES = ("kind", "minikube", "helm", "kubectl")


def resolve_binary(name: str, bin_dir: Path) -> str:
    """The project-local binary when ``invoke tools`` installed one, else the name (PATH)."""
    local = bin_dir / name
    return str(local) if local.is_file() else name


@dataclass(frozen=True)
class Toolbox:
    helm: Helm
    kind: Kind
    minikube: Minikube
    kubectl: Kubectl
    docker: Docker

    @classmethod
    def from_settings(cls, settings: Settings, runner: Runner, *, kubeconfig: Path | None = None) -> Toolbox:
        def binary(name: str) -> str:
            # In a dry run the printed commands use plain names, the same on every machine.
            return name if settings.dry_run else resolve_binary(name, settings.bin_dir)

        return cls(
            helm=Helm(runner, binary("helm"), kube_context=settings.kube_context, kubeconfig=kubeconfig),
            kind=Kind(runner, binary("kind")),
            minikube=Minikube(runner, binary("minikube")),
            kubectl=Kubectl(runner, binary("kubectl"), context=settings.kube_context),
            docker=Docker(runner, "docker"),
        )


def on_path(name: str) -> str | None:
    return shutil.which(name)

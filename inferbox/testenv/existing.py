"""An existing cluster (kind, or any kubeconfig context) behind the ControlPlane interface the
cluster tests use, so the same tests run against it (envtest's USE_EXISTING_CLUSTER)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from inferbox.hints import invoke
from inferbox.testenv.crds import CrdInstaller


class ExistingClusterError(RuntimeError):
    pass


class ExistingCluster(CrdInstaller):
    """kubectl/helm from PATH against one context of a kubeconfig; nothing is started or stopped."""

    def __init__(self, kubeconfig: Path, context: str | None, workdir: Path) -> None:
        self.workdir = workdir
        kubectl, helm = shutil.which("kubectl"), shutil.which("helm")
        if kubectl is None or helm is None:
            raise ExistingClusterError("kubectl and helm must be on PATH to test an existing cluster "
                                       f"(`{invoke('tools')}` installs them into .inferbox/bin)")
        self.kubectl_path, self.helm_path = Path(kubectl), Path(helm)
        # One flattened, single-context kubeconfig: every tool and client then needs no --context.
        argv = [kubectl, "config", "view", "--minify", "--flatten", *([f"--context={context}"] if context else [])]
        view = subprocess.run(argv, env={**os.environ, "KUBECONFIG": str(kubeconfig)}, capture_output=True,
                              text=True, check=False)
        if view.returncode != 0:
            raise ExistingClusterError(f"cannot read context {context or '(current)'} of {kubeconfig}: "
                                       f"{view.stderr.strip()}")
        self.kubeconfig = workdir / "kubeconfig"
        self.kubeconfig.write_text(view.stdout)
        self.kubeconfig.chmod(0o600)

    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.kubectl_path), *args], env=self.env(), input=input,
                              capture_output=True, text=True, check=check)

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.helm_path), *args], env=self.env(), capture_output=True, text=True,
                              check=check)

    def api_client(self) -> Any:
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))

"""The kind CLI, wrapped once."""

from __future__ import annotations

import re
from pathlib import Path

from inferbox.runner import Command, Runner


class Kind:
    def __init__(self, runner: Runner, binary: str = "kind") -> None:
        self.runner = runner
        self.binary = binary

    def version(self) -> str:
        out = self.runner.run(Command((self.binary, "version"), timeout=30, mutating=False)).stdout
        match = re.search(r"v\d+\.\d+\.\d+\S*", out)
        return match.group(0) if match else out.strip()

    def clusters(self) -> list[str]:
        out = self.runner.run(Command((self.binary, "get", "clusters"), timeout=60, mutating=False)).stdout
        return [line.strip() for line in out.splitlines() if line.strip() and "no kind clusters" not in line]

    def nodes(self, name: str) -> list[str]:
        """``kind get nodes --name <cluster>``: the node (container) names."""
        result = self.runner.run(Command((self.binary, "get", "nodes", "--name", name), timeout=30, mutating=False))
        return [line.strip() for line in result.stdout.splitlines() if line.strip()]

    def create_cluster(self, name: str, config: Path, image: str, *, wait_s: int = 300) -> None:
        argv = (self.binary, "create", "cluster", "--name", name, "--config", str(config),
                "--image", image, "--wait", f"{wait_s}s")
        # Cluster creation is not retried: a half-made cluster must be deleted first.
        self.runner.run(Command(argv, timeout=wait_s + 300, retry_transient=False))

    def delete_cluster(self, name: str) -> None:
        self.runner.run(Command((self.binary, "delete", "cluster", "--name", name), timeout=300))


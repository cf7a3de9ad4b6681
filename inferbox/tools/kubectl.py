"""The kubectl CLI, wrapped once. The platform itself talks to the API through inferbox.k8s;
kubectl is pinned for users and diagnostics, and runs the odd command the API client does poorly
(``exec`` of a long-running command in a pod)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from inferbox.runner import Command, Result, Runner


class Kubectl:
    def __init__(self, runner: Runner, binary: str = "kubectl", *, context: str | None = None) -> None:
        self.runner = runner
        self.binary = binary
        self.context = context

    def exec(self, namespace: str, target: str, container: str, command: Sequence[str], *,
             timeout_s: float, mutating: bool = True) -> Result:
        """Run ``command`` in ``target`` (``pod/x``, ``job/y``) and return its output."""
        argv = [self.binary, *(["--context", self.context] if self.context else []), "-n", namespace, "exec",
                target, "-c", container, "--", *command]
        return self.runner.run(Command(tuple(argv), timeout=timeout_s, mutating=mutating, retry_transient=False))

    def label_node(self, node: str, labels: dict[str, str]) -> None:
        """``kubectl label node <node> k=v ... --overwrite``."""
        argv = [self.binary, *(["--context", self.context] if self.context else []), "label", "node", node,
                *(f"{k}={v}" for k, v in sorted(labels.items())), "--overwrite"]
        self.runner.run(Command(tuple(argv), timeout=60))

    def version(self) -> str:
        cmd = Command((self.binary, "version", "--client", "--output", "json"), timeout=30, mutating=False)
        data = json.loads(self.runner.run(cmd).stdout or "{}")
        return str(data.get("clientVersion", {}).get("gitVersion", ""))

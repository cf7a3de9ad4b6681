"""The kubectl CLI, wrapped once. The platform itself talks to the API through inferbox.k8s;
kubectl is pinned for users and diagnostics, so only its version is needed here."""

from __future__ import annotations

import json

from inferbox.runner import Command, Runner


class Kubectl:
    def __init__(self, runner: Runner, binary: str = "kubectl") -> None:
        self.runner = runner
        self.binary = binary

    def version(self) -> str:
        cmd = Command((self.binary, "version", "--client", "--output", "json"), timeout=30, mutating=False)
        data = json.loads(self.runner.run(cmd).stdout or "{}")
        return str(data.get("clientVersion", {}).get("gitVersion", ""))

"""The minikube CLI, wrapped once."""

from __future__ import annotations

import json

from inferbox.runner import Command, Runner


class Minikube:
    def __init__(self, runner: Runner, binary: str = "minikube") -> None:
        self.runner = runner
        self.binary = binary

    def version(self) -> str:
        cmd = Command((self.binary, "version", "--short"), timeout=30, mutating=False)
        return self.runner.run(cmd).stdout.strip()

    def profiles(self) -> list[str]:
        cmd = Command((self.binary, "profile", "list", "--output", "json"), timeout=60, mutating=False)
        result = self.runner.run(cmd, check=False)
        data = json.loads(result.stdout.strip() or "{}") if result.ok else {}
        return [p["Name"] for p in data.get("valid", []) + data.get("invalid", []) if "Name" in p]

    def start(self, profile: str, kubernetes_version: str, *, gpus: bool, cpus: int, memory_mb: int) -> None:
        argv = [self.binary, "start", "--profile", profile, "--driver", "docker",
                "--container-runtime", "docker", "--kubernetes-version", f"v{kubernetes_version.removeprefix('v')}",
                "--cpus", str(cpus), "--memory", f"{memory_mb}mb"]
        if gpus:
            # minikube passes the GPUs through with the docker driver and docker runtime only.
            argv += ["--gpus", "all"]
        self.runner.run(Command(tuple(argv), timeout=900, retry_transient=False))

    def disable_addon(self, profile: str, addon: str) -> None:
        self.runner.run(Command((self.binary, "addons", "disable", addon, "--profile", profile), timeout=300))

    def delete(self, profile: str) -> None:
        self.runner.run(Command((self.binary, "delete", "--profile", profile), timeout=300))

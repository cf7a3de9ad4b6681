"""The docker CLI, wrapped once: kind and minikube need a reachable engine."""

from __future__ import annotations

import json
from dataclasses import dataclass

from inferbox.runner import Command, Result, Runner


@dataclass(frozen=True)
class EngineInfo:
    reachable: bool
    server_version: str = ""
    runtimes: tuple[str, ...] = ()
    error: str = ""


class Docker:
    def __init__(self, runner: Runner, binary: str = "docker") -> None:
        self.runner = runner
        self.binary = binary

    def engine(self) -> EngineInfo:
        cmd = Command((self.binary, "info", "--format", "{{json .}}"), timeout=20, mutating=False,
                      retry_transient=False)
        try:
            result = self.runner.run(cmd, check=False)
        except Exception as exc:  # noqa: BLE001 - a missing docker binary is a doctor finding
            return EngineInfo(reachable=False, error=str(exc))
        if not result.ok:
            return EngineInfo(reachable=False, error=(result.stderr.strip().splitlines() or ["unreachable"])[-1])
        try:
            data = json.loads(result.stdout or "{}")
        except ValueError:
            return EngineInfo(reachable=False, error=f"unreadable docker info output: {result.stdout[:200]!r}")
        if data.get("ServerErrors") or not data.get("ServerVersion"):
            errors = data.get("ServerErrors") or ["no server version"]
            return EngineInfo(reachable=False, error="; ".join(errors))
        return EngineInfo(reachable=True, server_version=data.get("ServerVersion", ""),
                          runtimes=tuple(sorted((data.get("Runtimes") or {}).keys())))

    def probe_script(self, container: str, script: str, *, timeout: int = 60) -> Result:
        """``docker exec <container> bash -c <script>`` that only looks (run in dry runs too); the
        result whatever its exit status."""
        return self.runner.run(Command((self.binary, "exec", container, "bash", "-c", script), timeout=timeout,
                                       mutating=False, retry_transient=False), check=False)

    def exec_script(self, container: str, script: str, *, timeout: int = 600) -> str:
        """``docker exec <container> bash -c <script>``: its stdout; raises when it fails."""
        result = self.runner.run(Command((self.binary, "exec", container, "bash", "-c", script), timeout=timeout,
                                         retry_transient=False))
        return result.stdout

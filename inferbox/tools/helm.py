"""The Helm CLI, wrapped once. Every helm invocation in the project goes through :class:`Helm`."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inferbox.runner import Command, Runner

# Release states in which Helm refuses another upgrade until the release is repaired.
PENDING_STATES = frozenset({"pending-install", "pending-upgrade", "pending-rollback"})


@dataclass(frozen=True)
class ChartSource:
    """Where a chart comes from: a repository URL + name, an ``oci://`` ref, or a local folder."""

    chart: str
    version: str | None
    repo: str | None = None

    def args(self) -> list[str]:
        args = [self.chart]
        if self.repo:
            args += ["--repo", self.repo]
        if self.version:
            args += ["--version", self.version]
        return args


@dataclass(frozen=True)
class Release:
    name: str
    namespace: str
    revision: int
    status: str
    chart: str
    app_version: str

    @property
    def pending(self) -> bool:
        return self.status in PENDING_STATES

    def chart_version(self, chart_name: str) -> str:
        """The version part of ``chart`` (helm reports "<name>-<version>")."""
        return self.chart.removeprefix(f"{chart_name}-")


class Helm:
    def __init__(self, runner: Runner, binary: str = "helm", *, kube_context: str | None = None,
                 kubeconfig: Path | None = None) -> None:
        self.runner = runner
        self.binary = binary
        self.kube_context = kube_context
        self.kubeconfig = kubeconfig

    def _command(self, args: Sequence[str], *, timeout: float = 120, mutating: bool = False) -> Command:
        argv = [self.binary, *args]
        if self.kube_context:
            argv += ["--kube-context", self.kube_context]
        if self.kubeconfig:
            argv += ["--kubeconfig", str(self.kubeconfig)]
        return Command(tuple(argv), timeout=timeout, mutating=mutating)

    def version(self) -> str:
        cmd = Command((self.binary, "version", "--template", "{{.Version}}"), timeout=30, mutating=False)
        return self.runner.run(cmd).stdout.strip()

    def release(self, name: str, namespace: str) -> Release | None:
        """The release in any state, or None (Helm 4 lists pending and failed releases by default)."""
        args = ["list", "--namespace", namespace, "--filter", f"^{name}$", "--output", "json"]
        out = self.runner.run(self._command(args)).stdout.strip()
        for item in json.loads(out or "[]"):
            if item.get("name") == name:
                return Release(name=name, namespace=item.get("namespace", namespace),
                               revision=int(item.get("revision", 0)), status=item.get("status", ""),
                               chart=item.get("chart", ""), app_version=item.get("app_version", ""))
        return None

    def user_values(self, name: str, namespace: str) -> dict[str, Any]:
        """The values the release was installed with (``-f``/``--set``), not the chart defaults."""
        out = self.runner.run(self._command(["get", "values", name, "--namespace", namespace, "--output", "json"]))
        values = json.loads(out.stdout.strip() or "null")
        return values if isinstance(values, dict) else {}

    def history(self, name: str, namespace: str) -> list[dict[str, Any]]:
        out = self.runner.run(self._command(["history", name, "--namespace", namespace, "--output", "json"]))
        history = json.loads(out.stdout.strip() or "[]")
        return history if isinstance(history, list) else []

    def upgrade_install(self, name: str, source: ChartSource, namespace: str, *,
                        values_files: Sequence[Path] = (), set_values: Mapping[str, str] | None = None,
                        timeout_s: int = 600) -> None:
        args = ["upgrade", "--install", name, *source.args(), "--namespace", namespace, "--create-namespace"]
        for path in values_files:
            args += ["--values", str(path)]
        args += _set_args(set_values)
        # Health is checked by our own waits; helm only bounds its hooks.
        args += ["--timeout", f"{timeout_s}s"]
        self.runner.run(self._command(args, timeout=timeout_s + 60, mutating=True))

    def pull(self, source: ChartSource, destination: Path, *, timeout_s: int = 300) -> None:
        """Download a chart archive (``<name>-<version>.tgz``) into ``destination``."""
        argv = (self.binary, "pull", *source.args(), "--destination", str(destination))
        self.runner.run(Command(argv, timeout=timeout_s, mutating=True))

    def template(self, release: str, source: ChartSource, namespace: str, *, values_files: Sequence[Path] = (),
                 set_values: Mapping[str, str] | None = None, kube_version: str | None = None,
                 api_versions: Sequence[str] = (), timeout_s: int = 120) -> str:
        """``helm template`` with the CRDs of ``crds/`` folders included: the manifests, one document
        per object, each after a ``# Source: <chart>/<path>`` line. Reads no cluster."""
        args = ["template", release, *source.args(), "--namespace", namespace, "--include-crds"]
        for path in values_files:
            args += ["--values", str(path)]
        args += _set_args(set_values)
        if kube_version:
            args += ["--kube-version", kube_version]
        for api_version in api_versions:
            args += ["--api-versions", api_version]
        cmd = Command((self.binary, *args), timeout=timeout_s, mutating=False)
        return self.runner.run(cmd).stdout

    def uninstall(self, name: str, namespace: str, *, missing_ok: bool = True, timeout_s: int = 300) -> None:
        args = ["uninstall", name, "--namespace", namespace, "--timeout", f"{timeout_s}s"]
        if missing_ok:
            args.append("--ignore-not-found")
        self.runner.run(self._command(args, timeout=timeout_s + 60, mutating=True))

    def rollback(self, name: str, namespace: str, revision: int, *, timeout_s: int = 300) -> None:
        args = ["rollback", name, str(revision), "--namespace", namespace, "--timeout", f"{timeout_s}s"]
        self.runner.run(self._command(args, timeout=timeout_s + 60, mutating=True))

    def last_deployed_revision(self, name: str, namespace: str) -> int | None:
        deployed = [int(h["revision"]) for h in self.history(name, namespace)
                    if h.get("status") in ("deployed", "superseded")]
        return max(deployed) if deployed else None


def _set_args(set_values: Mapping[str, str] | None) -> list[str]:
    """``--set key=value``; a list or map value (JSON) goes in ``--set-json``, which --set's
    comma and brace syntax would split."""
    args: list[str] = []
    for key, value in sorted((set_values or {}).items()):
        flag = "--set-json" if value.startswith(("[", "{")) else "--set"
        args += [flag, f"{key}={value}"]
    return args

"""What the tasks do. Each function takes validated settings and returns or raises; tasks.py
only parses arguments and calls these."""

from __future__ import annotations

import shutil
import threading
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from inferbox.bootstrap import doctor
from inferbox.bootstrap.install import DryRunWaiter, HealthWaiter, Outcome, PhaseInstaller, execute
from inferbox.bootstrap.phases import build_plan
from inferbox.bootstrap.plan import Plan
from inferbox.bootstrap.providers import make_provider
from inferbox.config import GpuMode, Provider, Settings
from inferbox.errors import ClusterError, InferboxError, KubeError
from inferbox.events import EventLog
from inferbox.k8s import Kube
from inferbox.observability.manifests import manifest_context as observability_context
from inferbox.render import Renderer
from inferbox.runner import RecordingRunner, Runner, ShellRunner
from inferbox.tools import Toolbox
from inferbox.ui import ProgressView, plan_json, plan_table
from inferbox.wait import Waiter, is_ready_now


class BootstrapBlocked(InferboxError):
    """Preflight found a blocking problem; ``table`` shows every check with its fix."""

    def __init__(self, message: str, table: Table) -> None:
        self.table = table
        super().__init__(message)


def make_runner(settings: Settings) -> Runner:
    return RecordingRunner() if settings.dry_run else ShellRunner()


def gpu_for_plan(settings: Settings) -> bool:
    """--gpu on/off as given; auto means: this host has an NVIDIA driver (nvidia-smi)."""
    if settings.gpu is GpuMode.AUTO:
        return shutil.which("nvidia-smi") is not None
    return settings.gpu is GpuMode.ON


def show_plan(settings: Settings, console: Console, *, as_json: bool = False) -> Plan:
    plan = build_plan(settings, gpu=gpu_for_plan(settings))
    if as_json:
        console.print_json(plan_json(plan, settings.root))
    else:
        console.print(plan_table(plan))
    return plan


def run_doctor(settings: Settings, runner: Runner) -> tuple[list[doctor.Check], bool]:
    """Run the preflight; returns the checks and the resolved GPU mode."""
    toolbox = Toolbox.from_settings(settings, runner)
    facts = doctor.probe_host(settings, runner, toolbox)
    gpu = doctor.resolve_gpu(settings.gpu, facts, settings.provider)
    return doctor.run_checks(facts, settings, doctor.profile_for(gpu)), gpu


@dataclass
class BootstrapResult:
    plan: Plan
    outcomes: dict[str, Outcome]
    cluster_created: bool
    transcript: list[str]


def bootstrap(settings: Settings, console: Console, *, runner: Runner | None = None,
              skip_doctor: bool = False) -> BootstrapResult:
    runner = runner or make_runner(settings)
    gpu = gpu_for_plan(settings)
    if not settings.dry_run and not skip_doctor:
        checks, gpu = run_doctor(settings, runner)
        if doctor.blocking_failures(checks):
            raise BootstrapBlocked(doctor.no_cluster_message(checks), doctor.checks_table(checks))
        console.print(doctor.checks_table(checks))
    plan = build_plan(settings, gpu=gpu)
    tools = Toolbox.from_settings(settings, runner)
    renderer = Renderer(settings.root / "manifests")
    provider = make_provider(settings, tools, renderer, gpu=gpu)
    events = EventLog(settings.event_log)
    try:
        events.emit("run-started", None, f"bootstrap {plan.cluster.provider}/{plan.cluster.name}",
                    phases=[p.name for p in plan.phases], dry_run=settings.dry_run)
        created = provider.create()
        if created:
            events.emit("step", None, f"created {provider.name} cluster {settings.cluster_name}")
        stop = threading.Event()
        kube: Kube | None = None
        waiter: HealthWaiter
        note = None
        if isinstance(runner, RecordingRunner):
            waiter, note = DryRunWaiter(runner), runner.note
        else:
            kube = Kube.connect(context=settings.kube_context)
            waiter = Waiter(kube, context=settings.kube_context, stop=stop)
        installer = PhaseInstaller(helm=tools.helm, waiter=waiter, renderer=renderer, events=events, kube=kube,
                                   manifest_context={"serving_version": settings.versions.knative.serving_version,
                                                     **observability_context(settings)},
                                   note=note)
        with ProgressView(console, plan) as view:
            events.listeners.append(view)
            try:
                outcomes = execute(plan, installer.install, events, parallel=not settings.dry_run,
                                   on_failure=stop.set)
            except InferboxError as exc:
                events.emit("run-failed", None, str(exc))
                raise
        events.emit("run-done", None, "platform ready" if not settings.dry_run else "dry run complete")
    finally:
        events.close()
    transcript = runner.lines() if isinstance(runner, RecordingRunner) else []
    return BootstrapResult(plan=plan, outcomes=outcomes, cluster_created=created, transcript=transcript)


def status(settings: Settings, console: Console, *, runner: Runner | None = None) -> Table:
    """Installed phases, live chart versions against the pins (drift in red), readiness."""
    runner = runner or make_runner(settings)
    plan = build_plan(settings, gpu=gpu_for_plan(settings))
    helm = Toolbox.from_settings(settings, runner).helm
    try:
        kube: Kube | None = Kube.connect(context=settings.kube_context)
        console.print(f"cluster context {settings.kube_context}: Kubernetes {kube.server_version()} "
                      f"(pinned {settings.versions.kubernetes.version})")
    except (ClusterError, KubeError) as exc:
        kube = None
        console.print(f"[red]cluster context {settings.kube_context} unreachable:[/] {exc}")
    table = Table(title="platform status")
    for column in ("phase", "release", "status", "chart version", "pinned", "ready"):
        table.add_column(column)
    for phase in plan.order():
        release = helm.release(phase.release, phase.namespace) if kube else None
        live = release.chart_version(phase.chart_name) if release else "-"
        drift = release is not None and live != phase.chart_version
        ready = "-"
        if kube is not None and release is not None:
            failing = [c.describe() for c in phase.checks if not is_ready_now(kube, c)]
            ready = "[green]yes[/]" if not failing else "[red]no[/]: " + "; ".join(failing)
        table.add_row(phase.name, phase.release, release.status if release else "not installed",
                      f"[red]{live}[/]" if drift else live, phase.chart_version, ready)
    console.print(table)
    return table


def teardown(settings: Settings, console: Console, *, keep_cluster: bool = False,
             runner: Runner | None = None) -> list[str]:
    """Uninstall in reverse plan order (or delete the cluster the project created).

    A kind/minikube cluster is deleted whole unless ``keep_cluster``; an existing cluster is
    never deleted, only the releases the plan installs are removed. What is already gone is fine.
    """
    runner = runner or make_runner(settings)
    plan = build_plan(settings, gpu=True)  # uninstall GPU phases too, whatever this host has
    tools = Toolbox.from_settings(settings, runner)
    provider = make_provider(settings, tools, Renderer(settings.root / "manifests"), gpu=False)
    done: list[str] = []
    owns_cluster = settings.provider is not Provider.EXISTING
    if owns_cluster and not provider.exists():
        console.print(f"{provider.name} cluster {settings.cluster_name!r} does not exist: nothing to tear down")
        return done
    if owns_cluster and not keep_cluster:
        provider.delete()
        done.append(f"deleted {provider.name} cluster {settings.cluster_name}")
    else:
        for phase in reversed(plan.order()):
            tools.helm.uninstall(phase.release, phase.namespace, missing_ok=True)
            done.append(f"uninstalled {phase.release} ({phase.namespace})")
    for line in done:
        console.print(line)
    return done

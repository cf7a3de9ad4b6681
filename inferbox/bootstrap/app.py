"""What the tasks do. Each function takes validated settings and returns or raises; tasks.py
only parses arguments and calls these."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.text import Text

from inferbox.bootstrap import contract, doctor, gpucheck
from inferbox.bootstrap.charts import ChartStore
from inferbox.bootstrap.install import DryRunWaiter, HealthWaiter, Outcome, PhaseInstaller, execute
from inferbox.bootstrap.phases import GATEWAY_NAMESPACE, GPU_NAMESPACE, build_plan, catalog_runtimes
from inferbox.bootstrap.plan import Phase, Plan
from inferbox.bootstrap.providers import KindProvider, make_provider
from inferbox.config import GpuMode, Provider, Settings
from inferbox.errors import ClusterError, InferboxError, KubeError
from inferbox.events import EventLog
from inferbox.hints import invoke
from inferbox.k8s import Kube
from inferbox.models.hosts import ingress_naming
from inferbox.observability.manifests import manifest_context as observability_context
from inferbox.render import Renderer
from inferbox.runner import RecordingRunner, Runner, ShellRunner
from inferbox.tools import Toolbox, resolve_binary
from inferbox.tools.helm import ChartSource, Helm
from inferbox.ui import FitTable, ProgressView, plan_json, plan_table, styled, warning
from inferbox.wait import Waiter, is_ready_now


class BootstrapBlocked(InferboxError):
    """Preflight found a blocking problem; ``table`` shows every check with its fix."""

    def __init__(self, message: str, table: FitTable) -> None:
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
        console.print(plan_table(plan), soft_wrap=True)
    return plan


def run_doctor(settings: Settings, runner: Runner) -> tuple[list[doctor.Check], bool]:
    """Run the preflight; returns the checks and the resolved GPU mode."""
    toolbox = Toolbox.from_settings(settings, runner)
    facts = doctor.probe_host(settings, runner, toolbox)
    gpu = doctor.resolve_gpu(settings.gpu, facts, settings.provider)
    checks = doctor.run_checks(facts, settings, doctor.profile_for(gpu))
    if gpu and settings.provider is Provider.KIND and facts.docker.reachable:
        # Once the cluster exists, the GPU nodes' insides too.
        nodes = KindProvider(settings, toolbox, Renderer(settings.root / "manifests"), gpu=True).gpu_nodes()
        checks += doctor.node_checks(settings, toolbox, nodes)
    return checks, gpu


def recheck_command(settings: Settings) -> str:
    """The task (and flags) that runs the render check again on the same charts."""
    return "charts-verify" + (f" --bundle {settings.bundle}" if settings.bundle else "")


def full_plan_settings(settings: Settings) -> Settings:
    """Every optional phase on: what `charts-verify` and `bundle` cover."""
    return replace(settings, knative=True, monitoring=True)


def manifest_context(settings: Settings) -> dict[str, Any]:
    """The context the phases' own templates (manifests/) are rendered with."""
    from inferbox.aigateway import gateway_context

    return {"serving_version": settings.versions.knative.serving_version, "gateway_namespace": GATEWAY_NAMESPACE,
            **observability_context(settings), **gateway_context(settings)}


def _render_helm(settings: Settings) -> Helm:
    """helm for `helm template` and `helm pull`: run for real even in a dry run (they change no cluster)."""
    return Helm(ShellRunner(), resolve_binary("helm", settings.bin_dir))


def open_store(settings: Settings, plan: Plan, *, pull: bool) -> tuple[ChartStore, list[str]]:
    """The chart store the plan installs from, verified against the pins, and the chart keys
    still missing from it.

    With ``--bundle`` the bundle (every chart must be there); else the cache in
    ``.inferbox/charts``, pulling what is missing when ``pull``. Without ``pull`` (a dry run)
    the missing keys are returned unpulled and the store is not verified.
    """
    keys = sorted({p.chart_key for p in plan.phases})
    store = ChartStore.open(settings.charts_dir, bundle=settings.bundle is not None)
    charts = settings.versions.charts
    if not store.bundle and (missing := store.missing(charts, keys)):
        if not pull:
            return store, missing
        store.pull(_render_helm(settings), charts, keys)
        store.record(charts, keys)
    store.verify(charts, keys)
    return store, []


def render_check(settings: Settings, plan: Plan, cache: contract.RenderCache | None = None) -> contract.ContractReport:
    """Render the plan's (local) charts and check every assumption; see inferbox.bootstrap.contract."""
    renderer = Renderer(settings.root / "manifests")
    context = manifest_context(settings)

    def manifests(phase: Phase) -> list[dict[str, Any]]:
        return [obj for template in phase.manifests for obj in renderer.objects(template, **context)]

    return contract.verify(plan, _render_helm(settings), kube_version=settings.versions.kubernetes.version,
                           runtimes=catalog_runtimes(settings.root), manifests=manifests,
                           naming=ingress_naming(settings), cache=cache)


def full_check(settings: Settings) -> contract.ContractReport:
    """The render check of every phase in both KServe modes: the full plan (GPU, Knative,
    monitoring; KServe in Knative mode) and the same without Knative (Standard mode, the default,
    whose Ingresses need an IngressClass). Renders both share are done once."""
    cache: contract.RenderCache = {}
    full = render_check(settings, build_plan(settings, gpu=True), cache)
    standard = render_check(replace(settings, knative=False), build_plan(replace(settings, knative=False), gpu=True),
                            cache)
    seen = set(full.problems)
    full.problems += [p for p in standard.problems if p not in seen]
    full.seconds += standard.seconds
    return full


def checked_plan(settings: Settings, *, gpu: bool, pull: bool, note: Callable[[str], Any] | None = None,
                 recorder: Helm | None = None) -> tuple[Settings, Plan, contract.ContractReport | None]:
    """The plan installing from verified local charts, after a passing render check.

    Raises ContractError (naming phase and object or key) before anything is installed. In a
    dry run (``pull`` false) with charts not cached, their ``helm pull`` goes to ``recorder``
    (the transcript), the plan installs from where they would land, and ``note`` says that the
    render check would run on them then.
    """
    plan = build_plan(settings, gpu=gpu)
    store, missing = open_store(settings, plan, pull=pull)
    if missing:
        charts = settings.versions.charts
        for key in missing:
            pin = charts.by_key(key)
            if recorder is not None:
                recorder.pull(ChartSource(chart=pin.chart, version=pin.version, repo=pin.repo), store.root)
        if note is not None:
            note(f"render check skipped: {', '.join(missing)} not cached here; a real run pulls them (above), runs "
                 "the render check on every chart and applies each chart's crds/ CRDs server-side before its "
                 f"helm upgrade (`{invoke('charts-verify')}` pulls and checks them now)")
        settings = replace(settings, chart_store=store.root)
        return settings, build_plan(settings, gpu=gpu), None
    settings = replace(settings, chart_store=store.root)
    plan = build_plan(settings, gpu=gpu)
    report = render_check(settings, plan)
    report.raise_for_problems(recheck_command(settings))
    if note is not None:
        note(f"render check passed: {len(report.renders)} phases rendered from {store.root}")
    return settings, plan, report


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
        console.print(doctor.checks_table(checks), soft_wrap=True)
    def printed(line: str) -> None:
        console.print(line, markup=False, highlight=False, soft_wrap=True)  # names a path: never markup

    note = runner.note if isinstance(runner, RecordingRunner) else printed
    settings, plan, report = checked_plan(settings, gpu=gpu, pull=not settings.dry_run, note=note,
                                          recorder=Toolbox.from_settings(settings, runner).helm)
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
        dry_note = None
        if isinstance(runner, RecordingRunner):
            waiter, dry_note = DryRunWaiter(runner), runner.note
        else:
            kube = Kube.connect(context=settings.kube_context)
            waiter = Waiter(kube, context=settings.kube_context, stop=stop)
        installer = PhaseInstaller(helm=tools.helm, waiter=waiter, renderer=renderer, events=events, kube=kube,
                                   manifest_context=manifest_context(settings), note=dry_note,
                                   chart_crds={name: r.crds_folder() for name, r in report.renders.items()}
                                   if report else {})
        # A dry run's output is its transcript alone: no progress lines claiming phases were installed.
        with nullcontext() if settings.dry_run else ProgressView(console, plan) as view:
            if view is not None:
                events.listeners.append(view)
            try:
                outcomes = execute(plan, installer.install, events, parallel=not settings.dry_run,
                                   on_failure=stop.set)
            except InferboxError as exc:
                events.emit("run-failed", None, str(exc))
                raise
        if gpu:  # the end-to-end proof that a pod asking for a GPU gets one
            if dry_note is not None:
                dry_note(f"gpu-check: pod {GPU_NAMESPACE}/{gpucheck.POD_NAME} requests 1 nvidia.com/gpu and runs "
                         f"nvidia-smi ({settings.versions.gpu.check_image})")
            else:
                assert kube is not None
                result = gpucheck.run(kube, settings, renderer)
                events.emit("step", None, f"gpu-check on {result.node}: " +
                            ", ".join(f"{g.name} ({g.memory})" for g in result.gpus))
        events.emit("run-done", None, "platform ready" if not settings.dry_run else "dry run complete")
    finally:
        events.close()
    transcript = runner.lines() if isinstance(runner, RecordingRunner) else []
    return BootstrapResult(plan=plan, outcomes=outcomes, cluster_created=created, transcript=transcript)


def gpu_check(settings: Settings, console: Console, *, timeout_s: float = 300) -> gpucheck.GpuCheckResult:
    """Run the gpu-check pod on the platform's cluster and print the GPU it got."""
    result = gpucheck.run(Kube.connect(context=settings.kube_context), settings,
                          Renderer(settings.root / "manifests"), timeout_s=timeout_s)
    table = FitTable(f"gpu-check on node {result.node}")
    for column in ("GPU", "memory"):
        table.add_column(column)
    for gpu in result.gpus:
        table.add_row(gpu.name, gpu.memory)
    console.print(table)
    return result


def status(settings: Settings, console: Console, *, runner: Runner | None = None) -> FitTable:
    """Installed phases, live chart versions against the pins (drift in red), readiness.

    Raises ClusterError (after the table, whose states then read "unknown") when the cluster
    cannot be reached: nothing can be said to be installed or not."""
    runner = runner or make_runner(settings)
    plan = build_plan(settings, gpu=gpu_for_plan(settings))
    helm = Toolbox.from_settings(settings, runner).helm
    unreachable: Exception | None = None
    try:
        kube: Kube | None = Kube.connect(context=settings.kube_context)
        console.print(f"cluster context {settings.kube_context}: Kubernetes {kube.server_version()} "
                      f"(pinned {settings.versions.kubernetes.version})", markup=False)
    except (ClusterError, KubeError) as exc:
        kube, unreachable = None, exc
    table = FitTable("platform status")
    for column in ("phase", "release", "status", "chart version", "pinned", "ready"):
        table.add_column(column)
    for phase in plan.order():
        release = helm.release(phase.release, phase.namespace) if kube else None
        live = release.chart_version(phase.chart_name) if release else "-"
        drift = release is not None and live != phase.chart_version
        ready: str | Text = "-"
        if kube is not None and release is not None:
            failing = [c.describe() for c in phase.checks if not is_ready_now(kube, c)]
            ready = styled("yes", "green") if not failing else Text.assemble(("no", "red"), ": ", "; ".join(failing))
        state = release.status if release else ("not installed" if kube else "unknown")
        table.add_row(phase.name, phase.release, state, styled(live, "red") if drift else live, phase.chart_version,
                      ready)
    console.print(table)
    if unreachable is not None:
        raise ClusterError(f"cluster context {settings.kube_context} unreachable ({unreachable}): "
                           f"`{invoke('bootstrap')}` creates the platform's cluster; with your own, pass "
                           "--provider existing --context CTX")
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
        console.print(f"{provider.name} cluster {settings.cluster_name!r} does not exist: nothing to tear down",
                      markup=False)
        return done
    if owns_cluster and not keep_cluster:
        provider.delete()
        done.append(f"deleted {provider.name} cluster {settings.cluster_name}")
    else:
        for phase in reversed(plan.order()):
            tools.helm.uninstall(phase.release, phase.namespace, missing_ok=True)
            done.append(f"uninstalled {phase.release} ({phase.namespace})")
    for line in done:
        console.print(line, markup=False)
    return done


def charts_verify(settings: Settings, console: Console) -> contract.ContractReport:
    """Pull (or take from --bundle) every pinned chart and run the render check on the full plan
    (GPU, Knative and monitoring phases on). Raises ContractError listing every problem."""
    settings = full_plan_settings(settings)
    plan = build_plan(settings, gpu=True)
    store, _ = open_store(settings, plan, pull=True)
    settings = replace(settings, chart_store=store.root)
    report = full_check(settings)
    console.print(render_table(report), soft_wrap=True)
    report.raise_for_problems(recheck_command(settings))
    console.print(f"render check passed: {len(report.renders)} phases from {store.root} in {report.seconds:.2f}s",
                  markup=False, highlight=False, soft_wrap=True)
    return report


def bundle(settings: Settings, console: Console, out: Path) -> contract.ContractReport:
    """An air-gapped bundle in ``out``: every pinned chart pulled once (kept if already there),
    its sha256 recorded, and the images each phase renders listed in bundle.json and images.txt.
    ``invoke bootstrap --bundle OUT`` then installs with no chart download."""
    settings = full_plan_settings(replace(settings, bundle=None))
    store = ChartStore.open(out)
    charts = settings.versions.charts
    store.pull(_render_helm(settings), charts)
    store.record(charts)
    store.verify(charts, charts.keys())
    settings = replace(settings, chart_store=store.root)
    report = full_check(settings)
    by_phase = report.images()
    by_phase["gpu-check"] = [settings.versions.gpu.check_image]  # the project's own pod (invoke gpu-check)
    store.manifest["images"] = by_phase
    store.write()
    images = sorted({image for phase_images in by_phase.values() for image in phase_images})
    (out / "images.txt").write_text("".join(f"{image}\n" for image in images))
    crds = write_crds(report, out / "crds")
    console.print(render_table(report), soft_wrap=True)
    report.raise_for_problems(f"charts-verify --bundle {out}")
    console.print(f"bundle {out}: {len(store.manifest['charts'])} charts with sha256 in {out / 'bundle.json'}, "
                  f"{len(images)} images in {out / 'images.txt'}, {crds} CRDs in {out / 'crds'}", markup=False,
                  highlight=False, soft_wrap=True)
    if mutable := [image for image in images if contract.mutable_image(image)]:
        console.print(warning(f"{len(mutable)} image references name no fixed version (mirror them by digest): "
                              f"{', '.join(mutable)}"), soft_wrap=True)
    console.print(f"install with: {invoke(f'bootstrap --bundle {out}')}", markup=False, highlight=False,
                  soft_wrap=True)
    return report


def write_crds(report: contract.ContractReport, out: Path) -> int:
    """Every CRD the charts render, one file each under ``out/<phase>/`` (replacing what was
    there): the upstream CRDs for tests and schema checks, from the pinned charts themselves."""
    if out.exists():
        shutil.rmtree(out)
    count = 0
    for name, render in report.renders.items():
        for item in render.objects:
            if item.kind == "CustomResourceDefinition":
                (out / name).mkdir(parents=True, exist_ok=True)
                (out / name / f"{item.name}.yaml").write_text(yaml.safe_dump(item.full(), sort_keys=False))
                count += 1
    return count


def render_table(report: contract.ContractReport) -> FitTable:
    """One row per phase: its chart, what it renders, and how many problems it has."""
    table = FitTable("render check", ("phase", "chart", "objects", "images", "crds/", "problems"))
    for name, render in report.renders.items():
        problems = sum(p.phase == name for p in report.problems)
        # Counted, not parsed: crds_folder() reads each CRD whole (megabytes), which a count needs not.
        table.add_row(name, f"{render.phase.chart_name} {render.phase.chart_version}", str(len(render.objects)),
                      str(len(render.images())), str(sum(r.from_crds_folder for r in render.objects)),
                      Text(str(problems), style="red" if problems else "green"))
    return table

"""Carrying out the install plan: one phase at a time (:class:`PhaseInstaller`), and the whole
plan with independent phases in parallel (:func:`execute`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from inferbox.bootstrap.plan import HealthCheck, Phase, Plan, PreStep, values_digest
from inferbox.errors import InferboxError, PhaseFailed
from inferbox.events import EventLog
from inferbox.k8s import Kube
from inferbox.render import Renderer
from inferbox.runner import RecordingRunner
from inferbox.tools.helm import Helm, Release
from inferbox.wait import Deadline

FIELD_MANAGER = "inferbox"


class Outcome(StrEnum):
    INSTALLED = "installed"
    UPGRADED = "upgraded"
    UNCHANGED = "unchanged"


class HealthWaiter(Protocol):
    def check(self, check: HealthCheck, deadline: Deadline, *, phase: str | None = None) -> None: ...


class DryRunWaiter:
    """Stands in for :class:`Waiter` in a dry run: the wait goes into the transcript."""

    def __init__(self, runner: RecordingRunner) -> None:
        self.runner = runner

    def check(self, check: HealthCheck, deadline: Deadline, *, phase: str | None = None) -> None:
        self.runner.note(f"wait: {check.describe()} (timeout {deadline.seconds:.0f}s)")



@dataclass
class PhaseInstaller:
    helm: Helm
    waiter: HealthWaiter
    renderer: Renderer
    events: EventLog
    kube: Kube | None = None  # None in a dry run
    manifest_context: dict[str, Any] | None = None
    # Where a dry run records the API steps it skips (RecordingRunner.note).
    note: Callable[[str], None] | None = None
    # Per phase, the CRDs of its chart's crds/ folders (ContractReport renders): Helm installs
    # those once and never upgrades them, so they are applied server-side before every helm run.
    chart_crds: Mapping[str, Sequence[dict[str, Any]]] = field(default_factory=dict)

    def install(self, phase: Phase) -> Outcome:
        release = self.helm.release(phase.release, phase.namespace)
        if release is not None and release.pending:
            release = self._recover(phase, release)
        deadline = Deadline(phase.timeout_s)
        if release is not None and self._unchanged(phase, release):
            outcome = Outcome.UNCHANGED
            self.events.emit("step", phase.name, f"release {phase.release} already at {phase.chart_version} "
                                                 "with the same values: helm skipped")
        else:
            self._pre_steps(phase, release)
            self._apply_chart_crds(phase)
            self.events.emit("step", phase.name, f"helm upgrade --install {phase.release} {phase.chart_version}")
            self.helm.upgrade_install(phase.release, phase.chart, phase.namespace,
                                      values_files=[phase.values_file] if phase.values_file else [],
                                      set_values=phase.set_values, timeout_s=phase.timeout_s)
            outcome = Outcome.INSTALLED if release is None else Outcome.UPGRADED
        # The phase's own objects go in once the chart's are healthy (their CRDs Established,
        # the webhooks that admit them answering: a KnativeServing needs the operator's); the
        # checks on those objects come after them.
        objects = self._manifest_objects(phase)
        ours = {(obj["kind"], obj["metadata"]["name"]) for obj in objects}
        later = [c for c in phase.checks if (c.resource_kind, c.name) in ours or c.after_manifests]
        for check in [c for c in phase.checks if c not in later]:
            self._wait(phase, check, deadline)
        self._apply_manifests(phase, objects)
        for check in later:
            self._wait(phase, check, deadline)
        return outcome

    def _wait(self, phase: Phase, check: HealthCheck, deadline: Deadline) -> None:
        self.events.emit("step", phase.name, f"wait: {check.describe()}")
        self.waiter.check(check, deadline, phase=phase.name)

    def _unchanged(self, phase: Phase, release: Release) -> bool:
        if release.status != "deployed" or release.chart != f"{phase.chart_name}-{phase.chart_version}":
            return False
        return values_digest(self.helm.user_values(phase.release, phase.namespace)) == phase.values_digest()

    def _recover(self, phase: Phase, release: Release) -> Release | None:
        """A release stuck pending (an interrupted helm run) blocks every later upgrade."""
        revision = self.helm.last_deployed_revision(phase.release, phase.namespace)
        if release.status == "pending-install" or revision is None:
            self.events.emit("step", phase.name, f"release {phase.release} stuck in {release.status}: uninstalling")
            self.helm.uninstall(phase.release, phase.namespace)
            return None
        self.events.emit("step", phase.name,
                         f"release {phase.release} stuck in {release.status}: rolling back to revision {revision}")
        self.helm.rollback(phase.release, phase.namespace, revision)
        return self.helm.release(phase.release, phase.namespace)

    def _pre_steps(self, phase: Phase, release: Release | None) -> None:
        for step in phase.pre_steps:
            if step is PreStep.CLEANUP_ORPHANED_WEBHOOKS:
                self._cleanup_orphaned_webhooks(phase, release)

    def _cleanup_orphaned_webhooks(self, phase: Phase, release: Release | None) -> None:
        service = phase.webhook_service
        assert service, f"phase {phase.name} has the webhook clean-up step but no webhook_service"
        if self.kube is None:
            if self.note is not None:
                self.note(f"clean-up: delete webhook configurations calling {phase.namespace}/{service} "
                          "if it has no ready endpoints")
            return
        if release is not None and release.status == "deployed":
            return
        if self.kube.ready_endpoints(phase.namespace, service) > 0:
            return
        for ref in self.kube.webhook_configurations_for_service(phase.namespace, service):
            self.kube.delete(ref)
            self.events.emit("step", phase.name, f"deleted orphaned {ref} (its service has no endpoints)")

    def _apply_chart_crds(self, phase: Phase) -> None:
        for crd in self.chart_crds.get(phase.name, ()):
            what = f"CustomResourceDefinition {crd['metadata']['name']}"
            if self.kube is None:
                if self.note is not None:
                    self.note(f"apply (server-side, field manager {FIELD_MANAGER}): {what} "
                              "(chart crds/ folder: helm never upgrades it)")
                continue
            self.kube.apply(crd, field_manager=FIELD_MANAGER)
            self.events.emit("step", phase.name, f"applied {what} from the chart's crds/ folder")

    def _manifest_objects(self, phase: Phase) -> list[dict[str, Any]]:
        return [obj for template in phase.manifests
                for obj in self.renderer.objects(template, **(self.manifest_context or {}))]

    def _apply_manifests(self, phase: Phase, objects: Sequence[dict[str, Any]]) -> None:
        for obj in objects:
            meta = obj["metadata"]
            what = f"{obj['kind']} {meta.get('namespace', '')}/{meta['name']}".replace(" /", " ")
            if self.kube is None:
                if self.note is not None:
                    self.note(f"apply (server-side, field manager {FIELD_MANAGER}): {what}")
                continue
            self.kube.apply(obj, field_manager=FIELD_MANAGER)
            self.events.emit("step", phase.name, f"applied {what}")


def execute(plan: Plan, install: Callable[[Phase], Outcome], events: EventLog, *,
            parallel: bool = True, on_failure: Callable[[], None] | None = None) -> dict[str, Outcome]:
    """Run every phase once its dependencies succeeded; independent phases run in parallel.

    On a failure no new phase starts, running ones are told to stop (``on_failure``) and
    finish, and :class:`PhaseFailed` names the first failed phase. Nothing already installed
    is rolled back: a rerun continues from there.
    """
    outcomes: dict[str, Outcome] = {}
    failures: list[PhaseFailed] = []

    def run(phase: Phase) -> Outcome:
        started = time.monotonic()
        events.emit("phase-started", phase.name, f"{phase.chart_name} {phase.chart_version} -> {phase.namespace}")
        try:
            outcome = install(phase)
        except Exception as exc:
            events.emit("phase-failed", phase.name, str(exc), duration_s=round(time.monotonic() - started, 3))
            raise
        kind = "phase-skipped" if outcome is Outcome.UNCHANGED else "phase-done"
        events.emit(kind, phase.name, outcome.value, duration_s=round(time.monotonic() - started, 3))
        return outcome

    if not parallel:
        for phase in plan.order():
            try:
                outcomes[phase.name] = run(phase)
            except InferboxError as exc:
                raise PhaseFailed(phase.name, exc) from exc
        return outcomes

    pending = list(plan.order())
    running: dict[Future[Outcome], Phase] = {}
    with ThreadPoolExecutor(max_workers=max(1, len(plan.phases)), thread_name_prefix="phase") as pool:
        while pending or running:
            if not failures:
                for phase in [p for p in pending if set(p.depends_on) <= outcomes.keys()]:
                    pending.remove(phase)
                    running[pool.submit(run, phase)] = phase
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                phase = running.pop(future)
                try:
                    outcomes[phase.name] = future.result()
                except Exception as exc:  # noqa: BLE001 - every failure is reported with its phase
                    failures.append(PhaseFailed(phase.name, exc))
                    if on_failure is not None:
                        on_failure()
    if failures:
        first = failures[0]
        not_run = [p.name for p in pending]
        if not_run:
            events.emit("step", None, f"not started because {first.phase} failed: {', '.join(not_run)}")
        raise first from first.cause
    return outcomes

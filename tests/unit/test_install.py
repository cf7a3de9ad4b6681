"""Phase installation decisions (skip, upgrade, recover) and the parallel executor."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from inferbox.bootstrap.install import Outcome, PhaseInstaller, execute
from inferbox.bootstrap.plan import CheckKind, ClusterStep, HealthCheck, Phase, Plan
from inferbox.errors import InferboxError, PhaseFailed
from inferbox.events import EventLog
from inferbox.render import Renderer
from inferbox.runner import RecordingRunner, Reply
from inferbox.tools.helm import ChartSource, Helm
from inferbox.wait import Deadline


class RecordingWaiter:
    """Records the checks it is asked for (a recording fake, no cluster)."""

    def __init__(self) -> None:
        self.checked: list[str] = []

    def check(self, check: HealthCheck, deadline: Deadline, *, phase: str | None = None) -> None:
        self.checked.append(check.name)


@pytest.fixture
def phase(tmp_path: Path) -> Phase:
    values = tmp_path / "demo.yaml"
    values.write_text("replicas: 2\nimage: {tag: a}\n")
    return Phase(name="demo", release="demo", namespace="demo-ns", chart_key="demo",
                 chart=ChartSource("demo", "1.2.0", repo="https://charts.example.test"), chart_name="demo",
                 chart_version="1.2.0", values_file=values, set_values={"image.tag": "b"},
                 checks=(HealthCheck(CheckKind.DEPLOYMENT_AVAILABLE, "demo", "demo-ns"),))


def release_json(status: str = "deployed", chart: str = "demo-1.2.0", revision: int = 3) -> Reply:
    return Reply(json.dumps([{"name": "demo", "namespace": "demo-ns", "revision": str(revision),
                              "status": status, "chart": chart, "app_version": "1"}]))


def installer(runner: RecordingRunner, tmp_path: Path) -> tuple[PhaseInstaller, RecordingWaiter]:
    waiter = RecordingWaiter()
    return PhaseInstaller(helm=Helm(runner), waiter=waiter, renderer=Renderer(tmp_path), events=EventLog()), waiter


def verbs(runner: RecordingRunner) -> list[str]:
    return [" ".join(c.argv[1:3]) for c in runner.commands]


def test_fresh_install(phase: Phase, tmp_path: Path) -> None:
    runner = RecordingRunner({("helm", "list"): Reply("[]"), ("helm", "upgrade"): Reply()}, strict=True)
    inst, waiter = installer(runner, tmp_path)
    assert inst.install(phase) is Outcome.INSTALLED
    upgrade = runner.commands[-1].argv
    assert upgrade[:4] == ("helm", "upgrade", "--install", "demo")
    assert upgrade[upgrade.index("--version"):upgrade.index("--version") + 2] == ("--version", "1.2.0")
    assert "image.tag=b" in upgrade and str(phase.values_file) in upgrade
    assert waiter.checked == ["demo"]


def test_unchanged_release_skips_helm_but_still_checks_health(phase: Phase, tmp_path: Path) -> None:
    same_values = json.dumps({"replicas": 2, "image": {"tag": "b"}})
    runner = RecordingRunner({("helm", "list"): release_json(), ("helm", "get", "values"): Reply(same_values)},
                             strict=True)
    inst, waiter = installer(runner, tmp_path)
    assert inst.install(phase) is Outcome.UNCHANGED
    assert verbs(runner) == ["list --namespace", "get values"]
    assert waiter.checked == ["demo"]


@pytest.mark.parametrize(("chart", "values"), [
    ("demo-1.1.0", {"replicas": 2, "image": {"tag": "b"}}),  # version drift
    ("demo-1.2.0", {"replicas": 3, "image": {"tag": "b"}}),  # values changed
])
def test_changed_release_is_upgraded(phase: Phase, tmp_path: Path, chart: str, values: dict) -> None:
    runner = RecordingRunner({("helm", "list"): release_json(chart=chart),
                              ("helm", "get", "values"): Reply(json.dumps(values)), ("helm", "upgrade"): Reply()},
                             strict=True)
    inst, _ = installer(runner, tmp_path)
    assert inst.install(phase) is Outcome.UPGRADED
    assert verbs(runner)[-1] == "upgrade --install"


def test_pending_install_is_uninstalled_then_installed(phase: Phase, tmp_path: Path) -> None:
    runner = RecordingRunner({("helm", "list"): release_json("pending-install", revision=1),
                              ("helm", "history"): Reply(json.dumps([{"revision": 1, "status": "pending-install"}])),
                              ("helm", "uninstall"): Reply(), ("helm", "upgrade"): Reply()}, strict=True)
    inst, _ = installer(runner, tmp_path)
    assert inst.install(phase) is Outcome.INSTALLED
    assert verbs(runner) == ["list --namespace", "history demo", "uninstall demo", "upgrade --install"]


def test_pending_upgrade_rolls_back_to_last_deployed(phase: Phase, tmp_path: Path) -> None:
    history = [{"revision": 1, "status": "superseded"}, {"revision": 2, "status": "deployed"},
               {"revision": 3, "status": "pending-upgrade"}]
    runner = RecordingRunner({("helm", "list"): [release_json("pending-upgrade"), release_json("deployed",
                                                                                                 "demo-1.1.0", 4)],
                              ("helm", "history"): Reply(json.dumps(history)), ("helm", "rollback"): Reply(),
                              ("helm", "get", "values"): Reply("{}"), ("helm", "upgrade"): Reply()}, strict=True)
    inst, _ = installer(runner, tmp_path)
    assert inst.install(phase) is Outcome.UPGRADED
    rollback = next(c.argv for c in runner.commands if c.argv[1] == "rollback")
    assert rollback[:4] == ("helm", "rollback", "demo", "2")


def _phase(name: str, *deps: str) -> Phase:
    return Phase(name=name, release=name, namespace="ns", chart_key=name, chart=ChartSource(name, "1.0.0"),
                 chart_name=name, chart_version="1.0.0", values_file=None, depends_on=deps)


CLUSTER = ClusterStep("kind", "x", "kind-x", "img", gpu=False)


def test_executor_runs_independent_phases_in_parallel_after_their_dependencies() -> None:
    plan = Plan(CLUSTER, (_phase("a"), _phase("b"), _phase("c", "a", "b"), _phase("d", "a")))
    spans: dict[str, tuple[float, float]] = {}
    both_running = threading.Barrier(2, timeout=5)

    def install(phase: Phase) -> Outcome:
        start = time.monotonic()
        if phase.name in ("a", "b"):
            both_running.wait()  # deadlocks (and fails) unless a and b really run at the same time
        spans[phase.name] = (start, time.monotonic())
        return Outcome.INSTALLED

    events = EventLog()
    assert execute(plan, install, events) == dict.fromkeys("abcd", Outcome.INSTALLED)
    assert spans["c"][0] >= max(spans["a"][1], spans["b"][1])
    assert spans["d"][0] >= spans["a"][1]
    kinds = [(e.kind, e.phase) for e in events.events]
    assert ("phase-done", "c") in kinds and all(e.duration_s is not None for e in events.events
                                                if e.kind == "phase-done")


def test_executor_stops_on_failure_and_names_the_phase() -> None:
    plan = Plan(CLUSTER, (_phase("a"), _phase("b", "a"), _phase("slow")))
    stopped = threading.Event()
    started: list[str] = []

    def install(phase: Phase) -> Outcome:
        started.append(phase.name)
        if phase.name == "a":
            raise InferboxError("chart exploded")
        # A long-running sibling is told to stop instead of being abandoned.
        assert stopped.wait(5)
        return Outcome.INSTALLED

    events = EventLog()
    with pytest.raises(PhaseFailed, match="phase 'a' failed: chart exploded"):
        execute(plan, install, events, on_failure=stopped.set)
    assert "b" not in started
    assert any("not started because a failed: b" in e.message for e in events.events)


def test_phase_objects_are_applied_once_the_charts_checks_pass(phase: Phase, tmp_path: Path) -> None:
    """A phase's own objects need the chart's CRDs and webhooks first (a KnativeServing needs the
    operator's); the checks on those objects come after they are applied."""
    (tmp_path / "own.yaml.j2").write_text("apiVersion: operator.knative.dev/v1beta1\nkind: KnativeServing\n"
                                          "metadata: {name: ks, namespace: demo-ns}\n")
    own = HealthCheck(CheckKind.CONDITION_READY, "ks", "demo-ns", api_version="operator.knative.dev/v1beta1",
                      resource_kind="KnativeServing")
    crd = HealthCheck(CheckKind.CRD_ESTABLISHED, "knativeservings.operator.knative.dev")
    order: list[str] = []
    runner = RecordingRunner({("helm", "list"): Reply("[]"), ("helm", "upgrade"): Reply()}, strict=True)
    inst, waiter = installer(runner, tmp_path)
    inst.note = order.append
    waiter.check = lambda check, deadline, phase=None: order.append(f"wait {check.name}")  # type: ignore[method-assign]
    with_objects = Phase(**{**phase.__dict__, "manifests": ("own.yaml.j2",), "checks": (own, crd, *phase.checks)})
    inst.install(with_objects)
    assert order == ["wait knativeservings.operator.knative.dev", "wait demo",
                     "apply (server-side, field manager inferbox): KnativeServing demo-ns/ks", "wait ks"]

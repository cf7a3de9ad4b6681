"""The bootstrap machinery for real: helm phases, skip/upgrade/recovery and health waits against
the hermetic control plane, with the fixture charts in tests/fixtures/charts (the upstream charts
cannot be downloaded on the project's machines)."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from inferbox.bootstrap import contract
from inferbox.bootstrap.install import Outcome, PhaseInstaller, execute
from inferbox.bootstrap.plan import CheckKind, ClusterStep, HealthCheck, Phase, Plan, PreStep
from inferbox.errors import PhaseFailed, WaitTimeout
from inferbox.events import EventLog
from inferbox.k8s import Kube, ObjectRef
from inferbox.models.hosts import IngressNaming
from inferbox.render import Renderer
from inferbox.runner import ShellRunner
from inferbox.testenv import ControlPlane
from inferbox.tools.helm import ChartSource, Helm
from inferbox.wait import Deadline, Waiter, is_ready_now

pytestmark = pytest.mark.cluster

CHARTS = Path(__file__).resolve().parent.parent / "fixtures" / "charts"
CLUSTER = ClusterStep("existing", "testenv", "testenv", "-", gpu=True)


def chart_phase(chart: str, namespace: str, *, release: str | None = None, values: dict | None = None,
                tmp_path: Path, depends_on: tuple[str, ...] = (), checks: tuple[HealthCheck, ...] = (),
                timeout_s: int = 60, **kwargs: object) -> Phase:
    meta = yaml.safe_load((CHARTS / chart / "Chart.yaml").read_text())
    values_file = tmp_path / f"{release or chart}-values.yaml"
    values_file.write_text(yaml.safe_dump(values or {}))
    return Phase(name=release or chart, release=release or chart, namespace=namespace, chart_key=chart,
                 chart=ChartSource(str(CHARTS / chart), None), chart_name=meta["name"],
                 chart_version=meta["version"], values_file=values_file, depends_on=depends_on, checks=checks,
                 timeout_s=timeout_s, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def kube(control_plane: ControlPlane) -> Kube:
    return Kube.connect(kubeconfig=control_plane.kubeconfig)


@pytest.fixture
def helm(control_plane: ControlPlane, helm_binary: Path) -> Helm:
    return Helm(ShellRunner(), str(helm_binary), kubeconfig=control_plane.kubeconfig)


@pytest.fixture
def installer(helm: Helm, kube: Kube) -> Callable[[], tuple[PhaseInstaller, EventLog]]:
    def make() -> tuple[PhaseInstaller, EventLog]:
        events = EventLog()
        return PhaseInstaller(helm=helm, waiter=Waiter(kube), renderer=Renderer(CHARTS), events=events,
                              kube=kube), events
    return make


def crd_phase(namespace: str, tmp_path: Path) -> Phase:
    """The fixture CRD chart under a per-test release name (its CRD's group carries the name)."""
    release = f"crds-{namespace}"
    return chart_phase("demo-crds", namespace, release=release, tmp_path=tmp_path, checks=(
        HealthCheck(CheckKind.CRD_ESTABLISHED, f"widgets.{release}.demo.inferbox.test"),))


def app_checks(namespace: str, release: str = "demo-app") -> tuple[HealthCheck, ...]:
    return (HealthCheck(CheckKind.DEPLOYMENT_AVAILABLE, release, namespace),)


def test_phases_install_then_skip_then_upgrade(installer, namespace: str, tmp_path: Path, kube: Kube) -> None:
    def plan(replicas: int) -> Plan:
        crds = crd_phase(namespace, tmp_path)
        app = chart_phase("demo-app", namespace, tmp_path=tmp_path, values={"replicas": replicas},
                          depends_on=(crds.name,), checks=app_checks(namespace))
        return Plan(CLUSTER, (crds, app))

    inst, events = installer()
    crds = f"crds-{namespace}"
    assert execute(plan(1), inst.install, events) == {crds: Outcome.INSTALLED, "demo-app": Outcome.INSTALLED}

    inst, events = installer()
    started = time.monotonic()
    assert execute(plan(1), inst.install, events) == {crds: Outcome.UNCHANGED, "demo-app": Outcome.UNCHANGED}
    unchanged_s = time.monotonic() - started
    assert [e.kind for e in events.events if e.phase == "demo-app"][-1] == "phase-skipped"
    assert unchanged_s < 10, f"an unchanged rerun should be quick, took {unchanged_s:.1f}s"

    inst, events = installer()
    assert execute(plan(2), inst.install, events)["demo-app"] is Outcome.UPGRADED
    deployment = kube.get(ObjectRef("apps/v1", "Deployment", "demo-app", namespace))
    assert deployment is not None and deployment["status"]["availableReplicas"] == 2


@pytest.mark.embedded
def test_pending_install_is_recovered(installer, helm: Helm, kube: Kube, namespace: str, tmp_path: Path,
                                      control_plane: ControlPlane, helm_binary: Path) -> None:
    # An interrupted first install: helm is killed while it waits on pods that never get ready.
    stuck = subprocess.Popen(
        [str(helm_binary), "upgrade", "--install", "demo-app", str(CHARTS / "demo-app"),
         "--namespace", namespace, "--set", "fail=never-ready", "--wait", "--timeout", "300s",
         "--kubeconfig", str(control_plane.kubeconfig)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        # Helm records the release (a Secret labelled with its status) before it starts waiting.
        secret = ObjectRef("v1", "Secret", "sh.helm.release.v1.demo-app.v1", namespace)
        Waiter(kube).until(secret, lambda s: s["metadata"]["labels"].get("status") == "pending-install",
                           Deadline(60), what="helm release secret in pending-install")
    finally:
        stuck.send_signal(signal.SIGKILL)
        stuck.wait()
    assert helm.release("demo-app", namespace).status == "pending-install"

    inst, events = installer()
    phase = chart_phase("demo-app", namespace, tmp_path=tmp_path, checks=app_checks(namespace))
    assert inst.install(phase) is Outcome.INSTALLED
    assert any("stuck in pending-install: uninstalling" in e.message for e in events.events)
    assert helm.release("demo-app", namespace).status == "deployed"


@pytest.mark.embedded
@pytest.mark.parametrize(("values", "expected"), [
    ({"fail": "crash-loop"}, "CrashLoopBackOff"),
    ({"fail": "image-pull"}, "ImagePullBackOff"),
    ({"gpus": 64}, "Insufficient nvidia.com/gpu"),
])
def test_wait_timeout_names_the_phase_pod_and_reason(installer, namespace: str, tmp_path: Path,
                                                     values: dict, expected: str) -> None:
    phase = chart_phase("demo-app", namespace, tmp_path=tmp_path, values=values, checks=app_checks(namespace),
                        timeout_s=15)
    inst, events = installer()
    with pytest.raises(PhaseFailed) as info:
        execute(Plan(CLUSTER, (phase,)), inst.install, events)
    cause = info.value.cause
    assert isinstance(cause, WaitTimeout)
    report = str(cause)
    assert "phase 'demo-app'" in report and f"deployment {namespace}/demo-app" in report
    assert "pod demo-app-" in report, report
    assert expected in report, report
    assert f"next: kubectl -n {namespace} describe deployment demo-app" in report
    if "gpus" in values:
        assert "unschedulable" in report


def test_orphaned_webhook_configurations_are_removed_before_install(installer, kube: Kube, namespace: str,
                                                                    tmp_path: Path, webhook_config) -> None:
    inst, _ = installer()
    inst.install(crd_phase(namespace, tmp_path))
    group = f"crds-{namespace}.demo.inferbox.test"
    # What an interrupted install leaves: a webhook that fails closed, calling a service with no endpoints.
    name = f"widgets-{namespace}"
    kube.create(webhook_config(name, service="demo-app", namespace=namespace, group=group, version="v1",
                               resource="widgets"))
    widget = {"apiVersion": f"{group}/v1", "kind": "Widget",
              "metadata": {"name": "w", "namespace": namespace}, "spec": {"size": 1}}
    with pytest.raises(Exception, match="failed calling webhook"):
        kube.create(widget)

    app = chart_phase("demo-app", namespace, tmp_path=tmp_path, checks=app_checks(namespace),
                      pre_steps=(PreStep.CLEANUP_ORPHANED_WEBHOOKS,), webhook_service="demo-app")
    inst, events = installer()
    inst.install(app)
    assert kube.get(ObjectRef("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration", name)) is None
    assert any("deleted orphaned" in e.message for e in events.events)
    kube.create(widget)


def test_status_readiness_checks(installer, kube: Kube, namespace: str, tmp_path: Path) -> None:
    healthy = chart_phase("demo-app", namespace, tmp_path=tmp_path, checks=app_checks(namespace))
    inst, _ = installer()
    inst.install(healthy)
    assert is_ready_now(kube, HealthCheck(CheckKind.DEPLOYMENT_AVAILABLE, "demo-app", namespace))
    assert not is_ready_now(kube, HealthCheck(CheckKind.DEPLOYMENT_AVAILABLE, "absent", namespace))
    assert is_ready_now(kube, HealthCheck(CheckKind.WEBHOOK_READY, "demo-app", namespace))


GADGETS = ObjectRef("apiextensions.k8s.io/v1", "CustomResourceDefinition", "gadgets.crdfolder.inferbox.test")


def gadget_fields(kube: Kube) -> set[str]:
    crd = kube.get(GADGETS)
    assert crd is not None
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return set(schema["properties"]["spec"]["properties"])


def test_crds_folder_crds_are_upgraded_server_side_before_helm(helm: Helm, kube: Kube, namespace: str,
                                                               tmp_path: Path) -> None:
    """Helm installs a chart's crds/ CRDs once and never upgrades them; the installer applies
    them server-side (from the phase's render) before every helm run."""
    contract_charts = CHARTS / "contract"

    def phase(version: int) -> Phase:
        return chart_phase(f"contract/crd-folder-v{version}", namespace, release="gadgets", tmp_path=tmp_path,
                           checks=(HealthCheck(CheckKind.CRD_ESTABLISHED, GADGETS.name),))

    def crds_of(phase: Phase) -> dict[str, list[dict]]:
        report = contract.verify(Plan(CLUSTER, (phase,)), helm, kube_version="1.36.0", runtimes={},
                                 manifests=lambda p: [], naming=IngressNaming())
        report.raise_for_problems()
        return {phase.name: report.renders[phase.name].crds_folder()}

    def installer(chart_crds: dict[str, list[dict]]) -> PhaseInstaller:
        return PhaseInstaller(helm=helm, waiter=Waiter(kube), renderer=Renderer(contract_charts), events=EventLog(),
                              kube=kube, chart_crds=chart_crds)

    try:
        assert installer({}).install(phase(1)) is Outcome.INSTALLED
        assert gadget_fields(kube) == {"colour"}
        # Helm alone: the release moves to the v2 chart, the CRD stays at v1 (the defect).
        assert installer({}).install(phase(2)) is Outcome.UPGRADED
        assert gadget_fields(kube) == {"colour"}
        # With the chart's crds/ CRDs applied first, the live CRD is the chart's.
        v2 = phase(2)
        events = EventLog()
        with_crds = installer(crds_of(v2))
        with_crds.events = events
        helm.uninstall("gadgets", namespace)  # a fresh upgrade path: v1 installed, then v2
        assert installer({}).install(phase(1)) is Outcome.INSTALLED
        assert with_crds.install(v2) is Outcome.UPGRADED
        assert gadget_fields(kube) == {"colour", "size"}
        assert any("applied CustomResourceDefinition gadgets.crdfolder.inferbox.test from the chart's crds/ folder"
                   in e.message for e in events.events)
    finally:
        kube.delete(GADGETS)

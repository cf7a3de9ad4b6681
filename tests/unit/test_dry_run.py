"""`invoke bootstrap --dry-run`: every command and wait, in order, with pinned versions (golden)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from inferbox.bootstrap import app


def transcript(settings, root: Path) -> str:
    result = app.bootstrap(settings, Console(file=io.StringIO(), width=200))
    text = "\n".join(result.transcript) + "\n"
    return text.replace(str(settings.state_dir), "<state>").replace(str(root), "<root>")


@pytest.mark.parametrize(("case", "flags"), [
    ("default", {"gpu": "off"}),
    ("gpu-knative", {"gpu": "on", "knative": True}),
    ("minikube-no-monitoring", {"gpu": "on", "provider": "minikube", "monitoring": False}),
])
def test_bootstrap_dry_run_golden(make_settings, root: Path, golden, case: str, flags: dict) -> None:
    settings = make_settings(dry_run=True, **flags)
    text = transcript(settings, root)
    golden(f"bootstrap-dry-run-{case}.txt", text)
    # Nothing was written or created by a dry run.
    assert not settings.state_dir.exists()


def test_dry_run_uses_pins_and_orders_phases(make_settings, root: Path) -> None:
    settings = make_settings(dry_run=True, gpu="off")
    lines = transcript(settings, root).splitlines()
    installs = [line for line in lines if " upgrade --install " in line]
    releases = [line.split()[3] for line in installs]
    assert releases.index("cert-manager") < releases.index("istio-base") < releases.index("kserve")
    cert = installs[releases.index("cert-manager")]
    # Installed from the chart store, where the pinned chart is pulled first (nothing cached here).
    pin = settings.versions.charts.cert_manager
    assert f" <state>/charts/cert-manager-{pin.version}.tgz " in cert
    pulls = [line for line in lines if line.startswith("helm pull ")]
    assert f"helm pull {pin.chart} --version {pin.version} --destination <state>/charts" in pulls
    assert lines.index(pulls[-1]) < lines.index("kind get clusters")
    start = len(pulls)
    assert lines[start].startswith("# render check skipped: ai-gateway, ai-gateway-crds, cert-manager, ")
    assert lines[start + 1] == "kind get clusters"
    assert lines[start + 2].startswith("kind create cluster --name inferbox --config <state>/kind-config.yaml --image "
                               f"{settings.versions.kubernetes.kind_node_image}")
    waits = [line for line in lines if line.startswith("# wait: ")]
    assert "# wait: deployment kserve/kserve-controller-manager Available (timeout 420s)" in waits


def test_existing_provider_creates_nothing(make_settings, root: Path) -> None:
    settings = make_settings(dry_run=True, gpu="off", provider="existing", context="my-ctx")
    lines = transcript(settings, root).splitlines()
    assert not any(line.startswith(("kind ", "minikube ")) for line in lines)
    assert all("--kube-context my-ctx" in line for line in lines
               if line.startswith("helm ") and not line.startswith("helm pull "))


def test_a_dry_run_prints_its_transcript_alone(make_settings) -> None:
    """No progress lines in a dry run: nothing was installed, so nothing may say so."""
    out = io.StringIO()
    result = app.bootstrap(make_settings(dry_run=True, gpu="on", knative=True), Console(file=out, width=80))
    assert out.getvalue() == ""
    assert not any("installed" in line or line.startswith("phase-") for line in result.transcript)

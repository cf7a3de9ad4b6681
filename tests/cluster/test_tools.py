"""kubectl and helm (from the npm-packaged builds) work against the test control plane's kubeconfig."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inferbox.testenv import DEFAULT_NODES, ControlPlane

pytestmark = pytest.mark.cluster


@pytest.mark.embedded
def test_kubectl_sees_server_version_and_nodes(control_plane: ControlPlane) -> None:
    version = json.loads(control_plane.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == control_plane.binaries.stamp["pins"]["kubernetes_module"]

    nodes = json.loads(control_plane.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    assert {n["metadata"]["name"] for n in nodes} >= {n.name for n in DEFAULT_NODES}

    auth = control_plane.kubectl("auth", "can-i", "create", "deployments", "--all-namespaces")
    assert auth.stdout.strip() == "yes"


def test_helm_installs_lists_and_uninstalls(control_plane: ControlPlane, namespace: str, tmp_chart: Path) -> None:
    assert control_plane.helm("version", "--short").stdout.startswith("v")

    control_plane.helm("install", "demo", str(tmp_chart), "--namespace", namespace)
    releases = json.loads(control_plane.helm("list", "--namespace", namespace, "-o", "json").stdout)
    assert [(r["name"], r["status"]) for r in releases] == [("demo", "deployed")]
    cm = json.loads(control_plane.kubectl("get", "configmap", "demo-cm", "-n", namespace, "-o", "json").stdout)
    assert cm["data"] == {"hello": "world"}

    control_plane.helm("uninstall", "demo", "--namespace", namespace)
    assert json.loads(control_plane.helm("list", "--namespace", namespace, "-o", "json").stdout) == []

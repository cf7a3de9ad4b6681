"""The tests that run the embedded control plane send no packet off loopback: they run in a
network namespace whose only interface is lo (inferbox/testenv/netns.py, ./quickstart test),
so the API server's dial of a Service's ClusterIP for a webhook finds no route and fails at once."""

from __future__ import annotations

import ipaddress
import re
import time

import pytest

from inferbox.errors import KubeError
from inferbox.k8s import Kube, ObjectRef
from inferbox.testenv import ControlPlane, netns
from inferbox.testenv.existing import ExistingCluster
from inferbox.testenv.waiting import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.embedded]


@pytest.fixture
def kube(control_plane: ControlPlane) -> Kube:
    if isinstance(control_plane, ExistingCluster):
        pytest.skip("an existing cluster has a real network")
    return Kube.connect(kubeconfig=control_plane.kubeconfig)


def test_the_control_plane_runs_where_loopback_is_the_only_interface(kube: Kube) -> None:
    assert netns.interfaces() == ["lo"]


def test_a_webhook_call_to_a_service_address_fails_fast_and_stays_inside(kube: Kube, namespace: str,
                                                                         webhook_config) -> None:
    service = kube.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "hook", "namespace": namespace},
                           "spec": {"selector": {"app": "none"}, "ports": [{"port": 443, "targetPort": 8443}]}})
    address = ipaddress.ip_address(service["spec"]["clusterIP"])
    assert not address.is_loopback  # what the API server will dial
    name = f"hook-{namespace}"
    kube.create(webhook_config(name, service="hook", namespace=namespace, group="", version="v1",
                               resource="configmaps", only_this_namespace=True, timeout_s=10))
    probe = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": namespace}}

    def refused() -> str | None:
        """The API server's refusal once it enforces the new webhook (its informer syncs first)."""
        try:
            kube.create(probe, dry_run=True)
        except KubeError as exc:
            return str(exc)
        return None

    try:
        wait_for(refused, timeout=30, what=f"the API server to call webhook {name}")
        started = time.monotonic()
        message = refused()
        elapsed = time.monotonic() - started
        assert message is not None and re.search(
            rf"failed calling webhook.*{re.escape(str(address))}:443.*network is unreachable", message), message
        # No route at all: refused at once, long before the webhook's 10 s timeout.
        assert elapsed < 3
    finally:
        kube.delete(ObjectRef("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration", name))

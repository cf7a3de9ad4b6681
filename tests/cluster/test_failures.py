"""Failure injection: kwok stages make annotated pods fail the way a kubelet reports it."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from kubernetes import client

from inferbox.testenv import FailureMode
from inferbox.testenv.waiting import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.embedded]


def failing_pod(name: str, mode: FailureMode) -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, annotations=mode.annotation()),
        spec=client.V1PodSpec(containers=[client.V1Container(name="server", image="example.invalid/broken:1")]),
    )


def waiting_reason(pod: client.V1Pod) -> str | None:
    statuses = pod.status.container_statuses or []
    waiting = statuses[0].state.waiting if statuses else None
    return waiting.reason if waiting else None


def ready(pod: client.V1Pod) -> str | None:
    return next((c.status for c in pod.status.conditions or [] if c.type == "Ready"), None)


def watch_pod(core: client.CoreV1Api, namespace: str, name: str, predicate: Callable[[client.V1Pod], bool],
              what: str) -> client.V1Pod:
    def check() -> client.V1Pod | None:
        pod = core.read_namespaced_pod(name, namespace)
        return pod if predicate(pod) else None

    return wait_for(check, timeout=60, what=what,
                    describe=lambda: str(core.read_namespaced_pod(name, namespace).status))


def test_image_pull_failure(core: client.CoreV1Api, namespace: str) -> None:
    core.create_namespaced_pod(namespace, failing_pod("pull", FailureMode.IMAGE_PULL))
    watch_pod(core, namespace, "pull", lambda p: waiting_reason(p) == "ErrImagePull", "ErrImagePull")
    pod = watch_pod(core, namespace, "pull", lambda p: waiting_reason(p) == "ImagePullBackOff", "ImagePullBackOff")
    assert pod.status.phase == "Pending"
    assert ready(pod) == "False"
    assert "example.invalid/broken:1" in pod.status.container_statuses[0].state.waiting.message


def test_crash_loop(core: client.CoreV1Api, namespace: str) -> None:
    core.create_namespaced_pod(namespace, failing_pod("crash", FailureMode.CRASH_LOOP))
    pod = watch_pod(core, namespace, "crash", lambda p: waiting_reason(p) == "CrashLoopBackOff", "CrashLoopBackOff")
    status = pod.status.container_statuses[0]
    assert pod.status.phase == "Running"
    assert ready(pod) == "False"
    assert status.restart_count > 0
    assert status.last_state.terminated.exit_code == 1
    assert status.last_state.terminated.reason == "Error"


def test_never_ready(core: client.CoreV1Api, namespace: str) -> None:
    core.create_namespaced_pod(namespace, failing_pod("stuck", FailureMode.NEVER_READY))
    pod = watch_pod(core, namespace, "stuck", lambda p: p.status.phase == "Running", "phase Running")
    status = pod.status.container_statuses[0]
    assert status.state.running is not None
    assert status.ready is False
    assert ready(pod) == "False"


def test_unannotated_pod_becomes_ready(core: client.CoreV1Api, namespace: str) -> None:
    core.create_namespaced_pod(namespace, client.V1Pod(
        metadata=client.V1ObjectMeta(name="fine"),
        spec=client.V1PodSpec(containers=[client.V1Container(name="server", image="example.invalid/ok:1")])))
    watch_pod(core, namespace, "fine", lambda p: ready(p) == "True", "Ready=True")

"""The pieces of a wait's timeout report, on objects shaped as the API returns them."""

from __future__ import annotations

from typing import Any

from inferbox.wait import container_state, daemonset_ready, deployment_available, describe_pod, summarize_status


def deployment(generation: int, observed: int, available: str, ready: int) -> dict:
    return {"metadata": {"name": "d", "generation": generation}, "spec": {"replicas": 1},
            "status": {"observedGeneration": observed, "updatedReplicas": 1, "availableReplicas": ready,
                       "conditions": [{"type": "Available", "status": available,
                                       "reason": "MinimumReplicasUnavailable", "message": "no"}]}}


def test_deployment_needs_observed_generation_and_available() -> None:
    assert deployment_available(deployment(2, 2, "True", 1))
    assert not deployment_available(deployment(2, 1, "True", 1)), "stale status must not count"
    assert not deployment_available(deployment(2, 2, "False", 0))


def test_daemonset_with_no_eligible_nodes_is_ready() -> None:
    ds = {"metadata": {"generation": 1}, "status": {"observedGeneration": 1, "desiredNumberScheduled": 0}}
    assert daemonset_ready(ds)


def test_pod_description_names_reasons() -> None:
    pod = {"metadata": {"name": "p-1"}, "status": {
        "phase": "Pending",
        "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                        "message": "0/4 nodes are available: 4 Insufficient nvidia.com/gpu."}],
        "containerStatuses": [
            {"name": "app", "ready": False, "restartCount": 5,
             "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m0s"}}},
            {"name": "ok", "ready": True, "state": {"running": {}}}]}}
    lines = describe_pod(pod)
    assert lines[0] == ("pod p-1: Pending, unschedulable: Unschedulable: 0/4 nodes are available: "
                        "4 Insufficient nvidia.com/gpu.")
    assert lines[1:] == ["  container app: waiting CrashLoopBackOff: back-off 5m0s (restarts 5)"]


def test_container_states() -> None:
    assert container_state({"state": {"terminated": {"reason": "Error", "exitCode": 2}}}) == "terminated Error exit 2"
    assert container_state({"state": {"running": {}}}).startswith("running, not ready")


def test_status_summary_shows_failing_conditions_only_with_reasons() -> None:
    text = summarize_status(deployment(3, 3, "False", 0))
    assert "availableReplicas=0" in text and "generation=3" in text
    assert "Available=False (MinimumReplicasUnavailable: no)" in text


def test_a_gateway_is_programmed_only_for_its_current_generation() -> None:
    from inferbox.wait import condition_check

    programmed = condition_check("Programmed")

    def gateway(status: str, seen: int | None, generation: int = 2) -> dict[str, Any]:
        condition = {"type": "Programmed", "status": status}
        if seen is not None:
            condition["observedGeneration"] = seen  # Gateway API: per condition, no status.observedGeneration
        return {"metadata": {"generation": generation}, "status": {"conditions": [
            {"type": "Accepted", "status": "True", "observedGeneration": generation}, condition]}}

    assert programmed(gateway("True", 2))
    assert not programmed(gateway("True", 1))  # stale: the controller has not seen the new spec
    assert not programmed(gateway("False", 2))
    assert programmed(gateway("True", None))
    assert not programmed({"metadata": {"generation": 1}, "status": {}})
    assert condition_check("Ready")({"metadata": {"generation": 1}, "status": {
        "observedGeneration": 1, "conditions": [{"type": "Ready", "status": "True"}]}})

"""Health waits: watch real conditions through the API until they hold or a deadline passes.

Two steps for every object (it exists, then it is ready), the controller's observedGeneration
checked so a stale status never counts, and on timeout a report built from what was last seen:
the object's status, its pods' container states and their latest events.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from inferbox.bootstrap.plan import CheckKind, HealthCheck
from inferbox.errors import ClusterError, InferboxError, KubeError, WaitTimeout
from inferbox.hints import invoke
from inferbox.k8s import Kube, ObjectRef

log = logging.getLogger("inferbox.wait")

Predicate = Callable[[dict[str, Any]], bool]

# How long one watch request stays open before we re-check the deadline and re-watch.
_WATCH_CHUNK_S = 30
# How long the GPU wait gives a cluster with no GPU node at all before it says so.
_NO_GPU_NODE_GRACE_S = 30


def condition(obj: dict[str, Any], cond_type: str) -> dict[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == cond_type:
            return dict(cond)
    return None


def condition_true(obj: dict[str, Any], cond_type: str) -> bool:
    cond = condition(obj, cond_type)
    return cond is not None and cond.get("status") == "True"


def _observed(obj: dict[str, Any]) -> bool:
    """The controller has seen the latest spec (``status.observedGeneration`` caught up)."""
    generation = (obj.get("metadata") or {}).get("generation")
    observed = (obj.get("status") or {}).get("observedGeneration")
    return generation is None or (observed is not None and observed >= generation)


def deployment_available(obj: dict[str, Any]) -> bool:
    status = obj.get("status") or {}
    replicas = (obj.get("spec") or {}).get("replicas", 1)
    return (_observed(obj) and condition_true(obj, "Available")
            and status.get("updatedReplicas", 0) >= replicas
            and status.get("availableReplicas", 0) >= replicas)


def daemonset_ready(obj: dict[str, Any]) -> bool:
    status = obj.get("status") or {}
    desired = status.get("desiredNumberScheduled", 0)
    return (_observed(obj) and status.get("numberReady", 0) >= desired
            and status.get("updatedNumberScheduled", 0) >= desired)


def statefulset_ready(obj: dict[str, Any]) -> bool:
    status = obj.get("status") or {}
    replicas = (obj.get("spec") or {}).get("replicas", 1)
    return (_observed(obj) and status.get("readyReplicas", 0) >= replicas
            and status.get("updatedReplicas", 0) >= replicas)


def job_complete(obj: dict[str, Any]) -> bool:
    if condition_true(obj, "Failed"):
        cond = condition(obj, "Failed") or {}
        raise InferboxError(f"job {obj['metadata']['name']} failed: {cond.get('reason')}: {cond.get('message')}")
    return condition_true(obj, "Complete")


def crd_established(obj: dict[str, Any]) -> bool:
    return condition_true(obj, "Established")


def _exists(obj: dict[str, Any]) -> bool:
    return True


def ready_condition(obj: dict[str, Any]) -> bool:
    return _observed(obj) and condition_true(obj, "Ready")


def condition_check(name: str) -> Predicate:
    """``name`` True on an object the controller has caught up with: ``ready_condition`` for
    "Ready"; Gateway API objects carry observedGeneration on each condition instead."""
    if name == "Ready":
        return ready_condition

    def check(obj: dict[str, Any]) -> bool:
        generation = (obj.get("metadata") or {}).get("generation")
        for cond in (obj.get("status") or {}).get("conditions") or []:
            if cond.get("type") == name:
                seen = cond.get("observedGeneration")
                return cond.get("status") == "True" and (generation is None or seen is None or seen >= generation)
        return False

    return check


@dataclass(frozen=True)
class _Target:
    ref: ObjectRef
    ready: Predicate
    has_pods: bool = False


_TARGETS: dict[CheckKind, tuple[str, str, Predicate, bool]] = {
    CheckKind.CRD_ESTABLISHED: ("apiextensions.k8s.io/v1", "CustomResourceDefinition", crd_established, False),
    CheckKind.DEPLOYMENT_AVAILABLE: ("apps/v1", "Deployment", deployment_available, True),
    CheckKind.DAEMONSET_READY: ("apps/v1", "DaemonSet", daemonset_ready, True),
    CheckKind.STATEFULSET_READY: ("apps/v1", "StatefulSet", statefulset_ready, True),
    CheckKind.JOB_COMPLETE: ("batch/v1", "Job", job_complete, True),
}


class Deadline:
    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.seconds = seconds
        self.at = clock() + seconds

    def remaining(self) -> float:
        return max(0.0, self.at - self._clock())

    def expired(self) -> bool:
        return self.remaining() <= 0


class Waiter:
    """Runs health checks against one cluster."""

    def __init__(self, kube: Kube, *, context: str | None = None, stop: threading.Event | None = None) -> None:
        self.kube = kube
        self.context = context
        # Set by the executor when another phase failed: waits give up early.
        self.stop = stop or threading.Event()

    def check(self, check: HealthCheck, deadline: Deadline, *, phase: str | None = None) -> None:
        if check.kind is CheckKind.WEBHOOK_READY:
            self._webhook(check, deadline, phase)
            return
        if check.kind is CheckKind.GPU_ALLOCATABLE:
            self.gpu_nodes(check, deadline, phase=phase)
            return
        if check.kind in (CheckKind.CONDITION_READY, CheckKind.RESOURCE_EXISTS):
            assert check.api_version and check.resource_kind, f"{check.kind} needs api_version and resource_kind"
            predicate = condition_check(check.condition) if check.kind is CheckKind.CONDITION_READY else _exists
            target = _Target(ObjectRef(check.api_version, check.resource_kind, check.name, check.namespace),
                             predicate)
        else:
            api_version, kind, predicate, has_pods = _TARGETS[check.kind]
            target = _Target(ObjectRef(api_version, kind, check.name, check.namespace), predicate, has_pods)
        self.until(target.ref, target.ready, deadline, phase=phase, what=check.describe(), pods=target.has_pods)

    def until(self, ref: ObjectRef, ready: Predicate, deadline: Deadline, *, phase: str | None = None,
              what: str = "", pods: bool = False) -> dict[str, Any]:
        """Watch ``ref`` until ``ready(obj)``; raise :class:`WaitTimeout` with a report at the deadline."""
        last: dict[str, Any] | None = None
        selector = f"metadata.name={ref.name}"
        while not deadline.expired() and not self.stop.is_set():
            items, version = self.kube.list_with_version(ref.api_version, ref.kind, ref.namespace,
                                                         field_selector=selector)
            last = items[0] if items else last
            if items and ready(items[0]):
                return items[0]
            for event_type, obj in self._events(ref.api_version, ref.kind, ref.namespace, version, deadline,
                                                field_selector=selector):
                if event_type == "DELETED":
                    last = None
                    continue
                last = obj
                if ready(obj):
                    return obj
                if deadline.expired() or self.stop.is_set():
                    break
        if self.stop.is_set():
            raise InferboxError(f"stopped waiting for {what or ref}: another phase failed")
        raise WaitTimeout(self.report(ref, last, deadline.seconds, phase=phase, what=what, pods=pods),
                          resource=str(ref), phase=phase)

    def _events(self, api_version: str, kind: str, namespace: str | None, version: str, deadline: Deadline,
                *, chunk_s: int = _WATCH_CHUNK_S, **selectors: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """One watch chunk from ``version`` (at most ``chunk_s``, never past the deadline); a 410
        Gone (the version is too old) just ends it, and the caller lists again."""
        try:
            yield from self.kube.watch(api_version, kind, namespace, resource_version=version,
                                       timeout_s=int(min(chunk_s, deadline.remaining())) or 1, **selectors)
        except KubeError as exc:
            if exc.status != 410:
                raise

    def gone(self, ref: ObjectRef, deadline: Deadline) -> None:
        """Watch until ``ref`` no longer exists; WaitTimeout at the deadline."""
        selector = f"metadata.name={ref.name}"
        while not deadline.expired() and not self.stop.is_set():
            items, version = self.kube.list_with_version(ref.api_version, ref.kind, ref.namespace,
                                                         field_selector=selector)
            if not items:
                return
            for event_type, _ in self._events(ref.api_version, ref.kind, ref.namespace, version, deadline,
                                              field_selector=selector):
                if event_type == "DELETED":
                    return
        raise WaitTimeout(f"timed out after {deadline.seconds:.0f}s waiting for {ref} to be deleted",
                          resource=str(ref))

    def _webhook(self, check: HealthCheck, deadline: Deadline, phase: str | None) -> None:
        """Endpoints first (the webhook has a backend), then the webhook really answers."""
        assert check.namespace and check.probe is not None, "webhook checks need a namespace and a probe"
        slice_ref = ObjectRef("discovery.k8s.io/v1", "EndpointSlice", check.name, check.namespace)
        last_error = ""
        while not deadline.expired() and not self.stop.is_set():
            if self.kube.ready_endpoints(check.namespace, check.name) == 0:
                last_error = "no ready endpoints"
                self._watch_endpoints(check, deadline)
                continue
            try:
                self.kube.create(dict(check.probe), dry_run=True)
                return
            except (KubeError, ClusterError) as exc:
                # Only "the webhook did not answer" is worth waiting out; a real rejection
                # would also prove the webhook answers, so 4xx other than 500s count as ready.
                if isinstance(exc, KubeError) and exc.status is not None and exc.status < 500:
                    return
                last_error = str(exc)
                self._watch_endpoints(check, deadline, chunk_s=2)
        report = (f"timed out after {deadline.seconds:.0f}s waiting for {check.describe()}"
                  f"{self._phase_suffix(phase)}\n  last error: {last_error}\n"
                  f"  next: {self._kubectl()} -n {check.namespace} get endpointslices "
                  f"-l kubernetes.io/service-name={check.name}")
        if self.stop.is_set():
            raise InferboxError(f"stopped waiting for {check.describe()}: another phase failed")
        raise WaitTimeout(report, resource=str(slice_ref), phase=phase)

    def _watch_endpoints(self, check: HealthCheck, deadline: Deadline, chunk_s: int = _WATCH_CHUNK_S) -> None:
        """Block until an EndpointSlice of the service changes (or a short chunk passes)."""
        assert check.namespace
        selector = f"kubernetes.io/service-name={check.name}"
        _, version = self.kube.list_with_version("discovery.k8s.io/v1", "EndpointSlice", check.namespace,
                                                 label_selector=selector)
        for _ in self._events("discovery.k8s.io/v1", "EndpointSlice", check.namespace, version, deadline,
                              chunk_s=chunk_s, label_selector=selector):
            return

    def gpu_nodes(self, check: HealthCheck, deadline: Deadline, *, phase: str | None = None) -> list[str]:
        """Wait until every GPU node advertises allocatable ``check.name`` (nvidia.com/gpu) > 0:
        a ready device plugin DaemonSet is not enough, its plugin may have found no GPU (no NVIDIA
        runtime in the node, NVML not loaded). Returns the GPU nodes; on timeout the report names
        each node short of GPUs, the plugin pod on it and the pod's last log lines."""
        nodes: list[dict[str, Any]] = []
        # No GPU node at all is not something waiting fixes (the nodes exist before any phase):
        # say so after a short grace instead of at the phase's timeout.
        unlabelled = Deadline(min(_NO_GPU_NODE_GRACE_S, deadline.seconds))
        while not deadline.expired() and not self.stop.is_set():
            nodes, version = self.kube.list_with_version("v1", "Node", None, label_selector=GPU_NODE_SELECTOR)
            if nodes and not [n for n in nodes if gpu_allocatable(n, check.name) <= 0]:
                return [n["metadata"]["name"] for n in nodes]
            if not nodes and unlabelled.expired():
                break
            for _ in self._events("v1", "Node", None, version, deadline, label_selector=GPU_NODE_SELECTOR):
                break  # a GPU node changed: look at all of them again
        if self.stop.is_set():
            raise InferboxError(f"stopped waiting for {check.describe()}: another phase failed")
        raise WaitTimeout(self._gpu_report(check, nodes, deadline.seconds, phase), resource="nodes", phase=phase)

    def _gpu_report(self, check: HealthCheck, nodes: list[dict[str, Any]], timeout_s: float,
                    phase: str | None) -> str:
        lines = [f"timed out after {timeout_s:.0f}s waiting for {check.describe()}{self._phase_suffix(phase)}"]
        if not nodes:
            lines.append(f"  no node carries the label {GPU_NODE_SELECTOR}: the cluster has no GPU node "
                         f"(see `{invoke('doctor')}`)")
        for node in nodes:
            name = node["metadata"]["name"]
            count = gpu_allocatable(node, check.name)
            if count > 0:
                continue
            lines.append(f"  node {name}: allocatable {check.name} = {count}")
            lines.extend(f"    {line}" for line in self._plugin_lines(check, name))
        lines.append(f"  next: {invoke('doctor')} (checks the NVIDIA runtime inside each GPU node)")
        return "\n".join(lines)

    def _plugin_lines(self, check: HealthCheck, node: str) -> list[str]:
        assert check.namespace and check.selector, "a GPU check names the device plugin's namespace and selector"
        try:
            pods = self.kube.list("v1", "Pod", check.namespace, label_selector=check.selector,
                                  field_selector=f"spec.nodeName={node}")
        except (KubeError, ClusterError) as exc:
            return [f"(could not list the device plugin pods: {exc})"]
        if not pods:
            return [f"no device plugin pod ({check.selector}) runs on it in {check.namespace}: is the node "
                    "tainted or not selected by the DaemonSet?"]
        lines = []
        for pod in pods:
            pod_name = pod["metadata"]["name"]
            lines.extend(describe_pod(pod))
            try:
                logs = self.kube.pod_log(check.namespace, pod_name, tail_lines=10)
            except (KubeError, ClusterError) as exc:
                lines.append(f"  logs: unavailable ({exc})")
                continue
            lines.append("  last log lines:" if logs else "  logs: empty")
            lines.extend(f"    {line}" for line in logs)
            lines.append(f"  next: {self._kubectl()} -n {check.namespace} logs {pod_name}")
        return lines

    # -- the timeout report ------------------------------------------------------------------
    def _kubectl(self) -> str:
        return f"kubectl --context {self.context}" if self.context else "kubectl"

    @staticmethod
    def _phase_suffix(phase: str | None) -> str:
        return f" (phase {phase!r})" if phase else ""

    def report(self, ref: ObjectRef, last: dict[str, Any] | None, timeout_s: float, *, phase: str | None,
               what: str, pods: bool) -> str:
        lines = [f"timed out after {timeout_s:.0f}s waiting for {what or ref}{self._phase_suffix(phase)}"]
        if last is None:
            lines.append(f"  {ref} does not exist")
        else:
            lines.append(f"  last seen: {summarize_status(last)}")
            if pods:
                lines.extend(self._pod_lines(last))
        ns = f" -n {ref.namespace}" if ref.namespace else ""
        lines.append(f"  next: {self._kubectl()}{ns} describe {ref.kind.lower()} {ref.name}; {invoke('status')}")
        return "\n".join(lines)

    def _pod_lines(self, owner: dict[str, Any]) -> list[str]:
        namespace = owner["metadata"].get("namespace")
        labels = (((owner.get("spec") or {}).get("selector") or {}).get("matchLabels") or {})
        if not namespace or not labels:
            return []
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        try:
            pods = self.kube.list("v1", "Pod", namespace, label_selector=selector)
        except (KubeError, ClusterError) as exc:
            return [f"  (could not list pods: {exc})"]
        failing = [p for p in pods if not pod_ready(p)]
        if not pods:
            return ["  no pods exist for it (check the ReplicaSet/controller events)"]
        lines = [f"  pods not ready: {len(failing)} of {len(pods)}"]
        for pod in failing[:5]:
            lines.extend(f"    {line}" for line in describe_pod(pod))
            for event in self.kube.events_for(namespace, pod["metadata"]["name"], limit=3):
                lines.append(f"      event: {event.get('type')} {event.get('reason')}: "
                             f"{(event.get('message') or '').strip()}")
        return lines


# GPU feature discovery's label, which the kind GPU worker and the test nodes carry too.
GPU_NODE_SELECTOR = "nvidia.com/gpu.present=true"


def gpu_allocatable(node: dict[str, Any], resource: str) -> int:
    """The node's allocatable count of an extended resource (0 when absent or not a count)."""
    value = ((node.get("status") or {}).get("allocatable") or {}).get(resource, "0")
    try:
        return int(str(value))
    except ValueError:
        return 0


def pod_ready(pod: dict[str, Any]) -> bool:
    return condition_true(pod, "Ready")


def describe_pod(pod: dict[str, Any]) -> list[str]:
    """One line for the pod, one per container that is not ready, with the reason."""
    status = pod.get("status") or {}
    lines = [f"pod {pod['metadata']['name']}: {status.get('phase', 'Unknown')}"]
    scheduled = condition(pod, "PodScheduled")
    if scheduled and scheduled.get("status") == "False":
        lines[0] += f", unschedulable: {scheduled.get('reason')}: {scheduled.get('message')}"
    for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        if cs.get("ready"):
            continue
        lines.append(f"  container {cs.get('name')}: {container_state(cs)}")
    return lines


def container_state(cs: dict[str, Any]) -> str:
    state = cs.get("state") or {}
    restarts = cs.get("restartCount", 0)
    suffix = f" (restarts {restarts})" if restarts else ""
    # A present-but-empty state ({"running": {}}) is valid: test for None, not truthiness.
    if state.get("waiting") is not None:
        w = state["waiting"]
        return f"waiting {w.get('reason', '')}: {w.get('message') or ''}".rstrip(": ") + suffix
    if state.get("terminated") is not None:
        t = state["terminated"]
        return f"terminated {t.get('reason', '')} exit {t.get('exitCode')}".strip() + suffix
    if state.get("running") is not None:
        return "running, not ready (readiness probe failing)" + suffix
    return "unknown state" + suffix


def summarize_status(obj: dict[str, Any]) -> str:
    status = obj.get("status") or {}
    parts = []
    for key in ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas",
                "desiredNumberScheduled", "numberReady", "observedGeneration"):
        if key in status and status[key] is not None:
            parts.append(f"{key}={status[key]}")
    generation = (obj.get("metadata") or {}).get("generation")
    if generation is not None:
        parts.append(f"generation={generation}")
    for cond in status.get("conditions") or []:
        text = f"{cond.get('type')}={cond.get('status')}"
        if cond.get("status") != "True" and (cond.get("reason") or cond.get("message")):
            text += f" ({cond.get('reason')}: {cond.get('message')})"
        parts.append(text)
    return ", ".join(parts) or "no status yet"


def is_ready_now(kube: Kube, check: HealthCheck) -> bool:
    """One look, no waiting: does the check hold right now? (for ``invoke status``)"""
    if check.kind is CheckKind.GPU_ALLOCATABLE:
        nodes = kube.list("v1", "Node", label_selector=GPU_NODE_SELECTOR)
        return bool(nodes) and all(gpu_allocatable(n, check.name) > 0 for n in nodes)
    if check.kind is CheckKind.WEBHOOK_READY:
        assert check.namespace
        return kube.ready_endpoints(check.namespace, check.name) > 0
    if check.kind in (CheckKind.CONDITION_READY, CheckKind.RESOURCE_EXISTS):
        assert check.api_version and check.resource_kind
        obj = kube.get(ObjectRef(check.api_version, check.resource_kind, check.name, check.namespace))
        return obj is not None and (check.kind is CheckKind.RESOURCE_EXISTS or condition_check(check.condition)(obj))
    api_version, kind, predicate, _ = _TARGETS[check.kind]
    obj = kube.get(ObjectRef(api_version, kind, check.name, check.namespace))
    try:
        return obj is not None and predicate(obj)
    except InferboxError:
        return False

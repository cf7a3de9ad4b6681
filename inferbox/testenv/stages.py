"""kwok Stage configuration: stock lifecycle plus opt-in failure injection.

kwok plays the kubelet for the fake nodes by applying *Stages*: a selector
(jq expressions over the object) and a status patch rendered from a Go
template. We run kwok's stock "fast" stages (copied out of its module by the
build) so that nodes turn Ready and pods Running+Ready, and add our own stages
that make a pod fail the way a real kubelet reports it when the pod carries
the annotation ``inferbox.test/fail``:

``image-pull``
    container waiting with reason ``ErrImagePull``, then ``ImagePullBackOff``;
    phase stays Pending.
``crash-loop``
    phase Running, container waiting with ``CrashLoopBackOff``, lastState
    terminated (exit code 1, reason Error) and restartCount going up every
    ``CRASH_LOOP_RESTART_MS``.
``never-ready``
    phase Running, containers running but ``Ready=False`` (a readiness probe
    that never passes).

The stock pod-ready and pod-complete stages are narrowed so they do not
touch pods asking for one of these failures (kwok would otherwise pick one of
the matching stages at random).
"""

from __future__ import annotations

import copy
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "CRASH_LOOP_RESTART_MS",
    "FAIL_ANNOTATION",
    "FailureMode",
    "failure_stages",
    "kwok_config_documents",
    "load_default_stages",
]

FAIL_ANNOTATION = "inferbox.test/fail"
CRASH_LOOP_RESTART_MS = 10_000
_KWOK_API = "kwok.x-k8s.io/v1alpha1"
# Stock stages that would turn a failure-injected pod Ready or Succeeded.
_NARROWED_STOCK_STAGES = ("pod-ready", "pod-complete")


class FailureMode(StrEnum):
    """Values of the ``inferbox.test/fail`` pod annotation."""

    IMAGE_PULL = "image-pull"
    CRASH_LOOP = "crash-loop"
    NEVER_READY = "never-ready"

    def annotation(self) -> dict[str, str]:
        """The pod annotation that selects this failure."""
        return {FAIL_ANNOTATION: self.value}


def _expr(key: str, op: str, values: list[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"key": key, "operator": op}
    if values is not None:
        out["values"] = values
    return out


def _fail_is(mode: FailureMode) -> dict[str, Any]:
    return _expr(f'.metadata.annotations["{FAIL_ANNOTATION}"]', "In", [mode.value])


_NOT_DELETING = _expr(".metadata.deletionTimestamp", "DoesNotExist")


def _phase(*phases: str) -> dict[str, Any]:
    return _expr(".status.phase", "In", list(phases))


_WAITING_REASONS = ".status.containerStatuses.[].state.waiting.reason"

# Start time, host and pod IPs, as kwok's stock pod-ready stage sets them.
# Only the first stage of each chain may set them: each rendering allocates a
# pod IP anew, and a strategic merge would append it to the list.
_STARTED_TEMPLATE = """
startTime: {{ Now | Quote }}
{{ $hostIPs := NodeIPsWith .spec.nodeName }}
{{ with $hostIPs }}
hostIP: {{ index . 0 | Quote }}
hostIPs:
{{ range . }}
- ip: {{ . | Quote }}
{{ end }}
{{ end }}
{{ $hostNetwork := or .spec.hostNetwork false }}
{{ $uid := or .metadata.uid "" }}
{{ $podIPs := PodIPsWith .spec.nodeName $hostNetwork $uid ( or .metadata.name "" ) ( or .metadata.namespace "" ) }}
{{ with $podIPs }}
podIP: {{ index . 0 | Quote }}
podIPs:
{{ range . }}
- ip: {{ . | Quote }}
{{ end }}
{{ end }}
"""


def _conditions(reason: str) -> str:
    """Conditions of a started pod whose containers are not ready."""
    return """
{{ $now := Now }}
conditions:
- lastTransitionTime: {{ $now | Quote }}
  status: "True"
  type: PodReadyToStartContainers
- lastTransitionTime: {{ $now | Quote }}
  status: "True"
  type: Initialized
- lastTransitionTime: {{ $now | Quote }}
  status: "False"
  reason: REASON
  message: "containers with unready status: [{{ range $i, $c := .spec.containers }}{{ if $i }} {{ end }}\
{{- $c.name }}{{ end }}]"
  type: Ready
- lastTransitionTime: {{ $now | Quote }}
  status: "False"
  reason: REASON
  type: ContainersReady
""".replace("REASON", reason)


def _stage(name: str, selector: list[dict[str, Any]], template: str, *,
           event: tuple[str, str, str] | None = None, delay_ms: int = 0) -> dict[str, Any]:
    next_: dict[str, Any] = {"patches": [{"subresource": "status", "root": "status", "template": template}]}
    if event:
        type_, reason, message = event
        next_["event"] = {"type": type_, "reason": reason, "message": message}
    spec: dict[str, Any] = {
        "resourceRef": {"apiGroup": "v1", "kind": "Pod"},
        "selector": {"matchExpressions": selector},
        # Outweighs any stock stage that still matches the pod.
        "weight": 10000,
        "next": next_,
    }
    if delay_ms:
        spec["delay"] = {"durationMilliseconds": delay_ms}
    return {"apiVersion": _KWOK_API, "kind": "Stage", "metadata": {"name": name}, "spec": spec}


def _image_pull_stages() -> list[dict[str, Any]]:
    def waiting(reason: str, message: str, started: str = "") -> str:
        return _conditions("ContainersNotReady") + f"""
containerStatuses:
{{{{ range .spec.containers }}}}
- image: {{{{ .image | Quote }}}}
  imageID: ""
  name: {{{{ .name | Quote }}}}
  ready: false
  restartCount: 0
  started: false
  state:
    running: null
    terminated: null
    waiting:
      reason: {reason}
      message: {{{{ printf "{message}" .image | Quote }}}}
{{{{ end }}}}
phase: Pending
""" + started

    mode = FailureMode.IMAGE_PULL
    return [
        _stage("inferbox-fail-image-pull",
               [_fail_is(mode), _NOT_DELETING, _phase("Pending"),
                _expr(_WAITING_REASONS, "NotIn", ["ErrImagePull", "ImagePullBackOff"])],
               waiting("ErrImagePull", 'failed to pull and unpack image \\"%s\\": injected by inferbox testenv',
                       _STARTED_TEMPLATE),
               event=("Warning", "Failed", "Failed to pull image: ErrImagePull (injected by inferbox testenv)")),
        _stage("inferbox-fail-image-pull-backoff",
               [_fail_is(mode), _NOT_DELETING, _phase("Pending"), _expr(_WAITING_REASONS, "In", ["ErrImagePull"])],
               waiting("ImagePullBackOff", 'Back-off pulling image \\"%s\\"'),
               event=("Normal", "BackOff", "Back-off pulling image (injected by inferbox testenv)"),
               delay_ms=1000),
    ]


def _crash_loop_template(restart_count: str) -> str:
    """Status of a crash-looping pod; ``restart_count`` is a template expression."""
    return _conditions("ContainersNotReady") + f"""
{{{{ $statuses := or .status.containerStatuses list }}}}
{{{{ $pod := printf "%s_%s(%s)" .metadata.name .metadata.namespace .metadata.uid }}}}
containerStatuses:
{{{{ range .spec.containers }}}}
{{{{ $name := .name }}}}
{{{{ $restarts := 0 }}}}
{{{{ range $statuses }}}}{{{{ if eq .name $name }}}}{{{{ $restarts = .restartCount }}}}{{{{ end }}}}{{{{ end }}}}
- image: {{{{ .image | Quote }}}}
  name: {{{{ .name | Quote }}}}
  ready: false
  restartCount: {restart_count}
  started: false
  lastState:
    terminated:
      exitCode: 1
      reason: Error
      startedAt: {{{{ Now | Quote }}}}
      finishedAt: {{{{ Now | Quote }}}}
  state:
    running: null
    terminated: null
    waiting:
      reason: CrashLoopBackOff
      message: {{{{ printf "back-off 10s restarting failed container=%s pod=%s" .name $pod | Quote }}}}
{{{{ end }}}}
phase: Running
"""


def _crash_loop_stages() -> list[dict[str, Any]]:
    mode = FailureMode.CRASH_LOOP
    event = ("Warning", "BackOff", "Back-off restarting failed container (injected by inferbox testenv)")
    return [
        _stage("inferbox-fail-crash-loop",
               [_fail_is(mode), _NOT_DELETING, _phase("Pending")],
               _crash_loop_template("1") + _STARTED_TEMPLATE, event=event),
        # Matches again after each patch, so the pod keeps "restarting".
        _stage("inferbox-fail-crash-loop-restart",
               [_fail_is(mode), _NOT_DELETING, _phase("Running")],
               _crash_loop_template("{{ add1 $restarts }}"), event=event, delay_ms=CRASH_LOOP_RESTART_MS),
    ]


def _never_ready_stages() -> list[dict[str, Any]]:
    template = _conditions("ContainersNotReady") + """
containerStatuses:
{{ range .spec.containers }}
- image: {{ .image | Quote }}
  name: {{ .name | Quote }}
  ready: false
  restartCount: 0
  started: true
  state:
    waiting: null
    terminated: null
    running:
      startedAt: {{ Now | Quote }}
{{ end }}
phase: Running
""" + _STARTED_TEMPLATE
    return [_stage("inferbox-fail-never-ready",
                   [_fail_is(FailureMode.NEVER_READY), _NOT_DELETING, _phase("Pending")], template,
                   event=("Warning", "Unhealthy", "Readiness probe failed (injected by inferbox testenv)"))]


def failure_stages() -> list[dict[str, Any]]:
    """kwok Stages implementing every :class:`FailureMode`."""
    return [*_image_pull_stages(), *_crash_loop_stages(), *_never_ready_stages()]


def load_default_stages(stages_dir: Path) -> list[dict[str, Any]]:
    """kwok's stock stages from ``stages_dir``, narrowed around failure injection."""
    stages: list[dict[str, Any]] = []
    for path in sorted(stages_dir.glob("*.yaml")):
        stages += [d for d in yaml.safe_load_all(path.read_text()) if d]
    for stage in stages:
        if stage["metadata"]["name"] in _NARROWED_STOCK_STAGES:
            exprs = stage["spec"].setdefault("selector", {}).setdefault("matchExpressions", [])
            exprs.append(_expr(f'.metadata.annotations["{FAIL_ANNOTATION}"]', "NotIn",
                               [m.value for m in FailureMode]))
    return stages


def kwok_config_documents(stages_dir: Path, extra: list[dict[str, Any]] | None = None) -> str:
    """The multi-document YAML given to ``kwok --config``."""
    docs = [*load_default_stages(stages_dir), *failure_stages(), *copy.deepcopy(extra or [])]
    return yaml.safe_dump_all(docs, sort_keys=False)

"""Render a catalog model as a KServe InferenceService (manifests/model/inferenceservice.yaml.j2).

Pure: a model, a tenant and the options in, a dict out. Canary traffic splitting exists only in
KServe's Knative mode (it routes between Knative revisions); in Standard mode it is refused with
a clear message rather than emulated (see :func:`check_options`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from inferbox.errors import InferboxError
from inferbox.models.catalog import ModelSpec, RuntimeArgs, check_storage_uri
from inferbox.render import Renderer

API_VERSION = "serving.kserve.io/v1beta1"
KIND = "InferenceService"
TEMPLATE = "model/inferenceservice.yaml.j2"
MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
# Labels KServe puts on the Deployment and pods of an InferenceService's predictor.
ISVC_LABEL = "serving.kserve.io/inferenceservice"


class DeploymentMode(StrEnum):
    STANDARD = "Standard"  # raw Kubernetes Deployment (KServe's RawDeployment before 0.16)
    KNATIVE = "Knative"  # serverless: scale to zero, revisions, canary traffic


class RenderRefused(InferboxError):
    """The options ask for something the deployment mode cannot do."""


@dataclass(frozen=True)
class RenderOptions:
    mode: DeploymentMode = DeploymentMode.STANDARD
    cpu_fallback: bool = False
    canary_percent: int | None = None
    storage_uri: str | None = None  # another version of the model (what a canary rolls out)


def check_options(model: ModelSpec, options: RenderOptions) -> None:
    if options.canary_percent is not None:
        if options.mode is not DeploymentMode.KNATIVE:
            raise RenderRefused(
                f"canary rollout of {model.name!r} needs --mode knative: KServe splits canary traffic between "
                "Knative revisions, and its Standard (raw Deployment) mode has no revisions to split between. "
                "Install the platform with --knative, or deploy the new version outright.")
        if not 0 <= options.canary_percent <= 100:
            raise RenderRefused(f"canary percent must be within 0-100 (got {options.canary_percent})")
    if options.storage_uri is not None:
        try:
            check_storage_uri(options.storage_uri)
        except ValueError as exc:
            raise RenderRefused(f"--storage-uri {exc}") from None


# vLLM reports token usage on every response, streamed ones included, even when the client does
# not ask (stream_options.include_usage): the AI gateway charges token budgets from that usage, and
# it asks for it itself only on chat completions (ai-gateway internal/endpointspec/endpointspec.go@v1.1.0),
# so a streamed /v1/completions would otherwise cost nothing. KServe's Hugging Face server passes
# it to vLLM (kserve python/huggingfaceserver/huggingfaceserver/vllm/vllm_model.py@v0.20.0,
# enable_force_include_usage); vLLM 0.24.0's FrontendArgs.enable_force_include_usage.
FORCE_INCLUDE_USAGE = "--enable-force-include-usage"


def openai_server_flags(model: ModelSpec, args: RuntimeArgs | None = None) -> list[str]:
    """Flags an OpenAI-serving model's server gets beside its catalog arguments ``args``: only
    where vLLM runs. KServe's Hugging Face backend parses its own flags, drops the rest
    (huggingfaceserver/__main__.py@v0.20.0, parse_known_args) and reports no usage on streams."""
    if "openai" not in model.protocols or (args is not None and args.backend == "huggingface"):
        return []
    return [FORCE_INCLUDE_USAGE]


def render_context(model: ModelSpec, *, namespace: str, tenant: str, options: RenderOptions) -> dict[str, Any]:
    check_options(model, options)
    resources, args = model.resolved(cpu_fallback=options.cpu_fallback)
    knative = options.mode is DeploymentMode.KNATIVE
    return {
        "name": model.name,
        "namespace": namespace,
        "tenant": tenant,
        "model": model,
        "mode": options.mode.value,
        # Knative scales an idle model to zero; a raw Deployment keeps its replicas.
        "min_replicas": 0 if knative else max(model.replicas.min, 1),
        "max_replicas": max(model.replicas.max, 1),
        "canary_percent": options.canary_percent,
        "gpus": resources.gpus,
        "storage_uri": options.storage_uri or model.storage_uri,
        "args": args.argv() + openai_server_flags(model, args),
        "resources": resources.manifest(),
    }


def render_inferenceservice(model: ModelSpec, *, namespace: str, tenant: str, renderer: Renderer,
                            options: RenderOptions | None = None) -> dict[str, Any]:
    context = render_context(model, namespace=namespace, tenant=tenant, options=options or RenderOptions())
    (isvc,) = renderer.objects(TEMPLATE, **context)
    return isvc


# -- canary promotion and rollback (Knative mode) ---------------------------------------------

def applyable(live: dict[str, Any]) -> dict[str, Any]:
    """What inferbox applies back of a live InferenceService: identity, its labels, and the spec."""
    meta = live.get("metadata") or {}
    return {
        "apiVersion": live["apiVersion"],
        "kind": live["kind"],
        "metadata": {key: copy.deepcopy(meta[key]) for key in ("name", "namespace", "labels", "annotations")
                     if meta.get(key)},
        "spec": copy.deepcopy(live.get("spec") or {}),
    }


def canary_percent(live: dict[str, Any]) -> int | None:
    value = ((live.get("spec") or {}).get("predictor") or {}).get("canaryTrafficPercent")
    return None if value is None else int(value)


def promoted(live: dict[str, Any]) -> dict[str, Any]:
    """The canary takes all traffic: canaryTrafficPercent goes away (KServe's promotion)."""
    _require_canary(live, "promote")
    obj = applyable(live)
    obj["spec"]["predictor"].pop("canaryTrafficPercent", None)
    return obj


def rolled_back(live: dict[str, Any]) -> dict[str, Any]:
    """All traffic back to the previous revision: canaryTrafficPercent 0 (KServe's rollback)."""
    _require_canary(live, "roll back")
    obj = applyable(live)
    obj["spec"]["predictor"]["canaryTrafficPercent"] = 0
    return obj


def _require_canary(live: dict[str, Any], verb: str) -> None:
    name = (live.get("metadata") or {}).get("name")
    mode = ((live.get("metadata") or {}).get("annotations") or {}).get(MODE_ANNOTATION, DeploymentMode.STANDARD)
    if mode != DeploymentMode.KNATIVE:
        raise RenderRefused(f"cannot {verb} {name}: it runs in {mode} mode, which has no canary (see deploy-model "
                            "--canary)")
    if canary_percent(live) is None:
        raise RenderRefused(f"cannot {verb} {name}: no canary is in progress (no canaryTrafficPercent)")

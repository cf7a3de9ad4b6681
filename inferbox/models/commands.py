"""What the model tasks do (deploy-model, predict, down, undeploy-model, promote, rollback, models).

Each function takes validated settings (``down`` only the state folder: stopping reads no
configuration) and returns what to print or raises an InferboxError; the tasks only parse flags.
``--target local`` runs KServe's model server as a local process (inferbox.local); ``--target
cluster`` applies an InferenceService for a tenant.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any

from inferbox import aigateway
from inferbox.config import Settings
from inferbox.errors import ConfigError, InferboxError
from inferbox.k8s import Kube
from inferbox.local.predictors import LocalTarget, Prediction, local_dir, local_target, stop_predictors
from inferbox.models import deploy as cluster
from inferbox.models.catalog import Catalog, default_catalog_path, load_catalog
from inferbox.models.gateway import CHAT_PROMPT
from inferbox.models.hosts import ingress_naming
from inferbox.models.render import DeploymentMode, RenderOptions
from inferbox.render import Renderer
from inferbox.runner import Runner, ShellRunner
from inferbox.tenants import app as tenant_app
from inferbox.tenants.spec import select
from inferbox.ui import FitTable


class Target(StrEnum):
    LOCAL = "local"
    CLUSTER = "cluster"


def parse_target(value: str) -> Target:
    try:
        return Target(value)
    except ValueError:
        raise ConfigError("command line", [("target", f"{value!r} is not one of local, cluster")]) from None


def parse_mode(value: str) -> DeploymentMode:
    for mode in DeploymentMode:
        if value.lower() in (mode.value.lower(), {"Standard": "raw", "Knative": "serverless"}[mode.value]):
            return mode
    raise ConfigError("command line", [("mode", f"{value!r} is not one of standard, knative")])


def parse_percent(value: str | int | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ConfigError("command line", [("canary", f"{value!r} is not a whole percent (0-100)")]) from None


def load_models(settings: Settings) -> Catalog:
    return load_catalog(default_catalog_path(settings.root))


def model_tenant(settings: Settings, name: str | None) -> cluster.ModelTenant:
    if not name:
        raise ConfigError("command line", [("tenant", "required with --target cluster (a tenants/<name>.yaml)")])
    (tenant,) = select(tenant_app.load(settings), name)  # the same checks as tenants-apply
    return cluster.ModelTenant.from_tenant(tenant)


def _local(settings: Settings, runner: Runner | None = None) -> LocalTarget:
    return local_target(settings, load_models(settings), runner or ShellRunner())


def _kube(settings: Settings) -> Kube:
    return Kube.connect(context=settings.kube_context)


def deploy(settings: Settings, name: str, *, target: Target, tenant: str | None = None,
           mode: DeploymentMode = DeploymentMode.STANDARD, cpu_fallback: bool = False, canary: int | None = None,
           storage_uri: str | None = None, wait: bool = False, timeout_s: float = cluster.DEFAULT_WAIT_S,
           kube: Kube | None = None) -> str:
    if target is Target.LOCAL:
        if tenant or canary is not None or storage_uri or cpu_fallback or mode is not DeploymentMode.STANDARD:
            raise ConfigError("command line", [("target", "--tenant, --mode, --canary, --storage-uri and "
                                                          "--cpu-fallback apply to --target cluster only")])
        return _local(settings).deploy(name).message()
    options = RenderOptions(mode=mode, cpu_fallback=cpu_fallback, canary_percent=canary, storage_uri=storage_uri)
    # The configuration first (the catalog and the model in it, the tenant file, KServe's values),
    # the cluster after: a bad file is reported naming the file and the field, not as a failed
    # connection (or not at all, when there is no cluster yet).
    catalog = load_models(settings)
    catalog.get(name)
    owner = model_tenant(settings, tenant)
    naming = ingress_naming(settings)
    result = cluster.deploy_model(kube or _kube(settings), catalog, name, owner, Renderer(settings.root / "manifests"),
                                  options=options, wait=wait, timeout_s=timeout_s, context=settings.kube_context,
                                  naming=naming)
    return result.message()


def predict_local(settings: Settings, name: str, *, data: str | None = None) -> Prediction:
    """Send the model's local predictor the same instances over V1 and V2."""
    return _local(settings).predict(name, parse_instances(data))


DEFAULT_MAX_TOKENS = 128


def is_llm(settings: Settings, name: str, *, data: str | None = None, prompt: str | None = None,
           max_tokens: int = DEFAULT_MAX_TOKENS) -> bool:
    """An OpenAI-only model: `predict` streams a chat from it instead of sending instances. The
    options must fit the kind of model: --data for instances, --prompt and --max-tokens for a chat."""
    llm = set(load_models(settings).get(name).protocols) == {"openai"}
    if llm and data is not None:
        raise ConfigError("command line", [("data", f"{name} is an LLM: pass --prompt instead of instances")])
    if not llm and (prompt is not None or max_tokens != DEFAULT_MAX_TOKENS):
        raise ConfigError("command line", [("prompt", f"{name} takes instances (--data), not a prompt")])
    if prompt is not None and not prompt.strip():
        raise ConfigError("command line", [("prompt", "empty")])
    if not 1 <= max_tokens <= 100_000:
        raise ConfigError("command line", [("max-tokens", f"{max_tokens}: between 1 and 100000")])
    return llm


def chat_local(settings: Settings, name: str, *, prompt: str | None, max_tokens: int,
               on_text: Callable[[str], None]) -> str:
    """Stream a chat answer from the model's local LLM server through ``on_text``; returns the
    summary line: device, tokens (the server's count), time to first token and the decode rate."""
    local = _local(settings)
    chat = local.chat(name, prompt or CHAT_PROMPT, max_tokens=max_tokens, on_text=on_text)
    rate = f"{chat.tokens_per_s:.1f} tokens/s" if chat.tokens_per_s is not None else "rate n/a"
    ttft = f"{chat.first_token_s * 1000:.0f} ms" if chat.first_token_s is not None else "n/a"
    tokens = chat.completion_tokens
    return (f"{name} ({local.device(name) or 'device unknown'}): {tokens} token{'' if tokens == 1 else 's'} "
            f"(finish: {chat.finish_reason}), time to first token {ttft}, {rate}")


def predict_cluster(settings: Settings, name: str, *, tenant: str | None, data: str | None = None,
                    kube: Kube | None = None, prompt: str | None = None,
                    max_tokens: int = DEFAULT_MAX_TOKENS) -> list[str]:
    """Call a tenant's model through the Istio ingress gateway (an LLM through the AI gateway, where
    it runs) with a fresh token; one line per protocol."""
    from inferbox.models import gateway

    if prompt is not None or max_tokens != DEFAULT_MAX_TOKENS:
        raise ConfigError("command line", [("prompt", "--prompt and --max-tokens are for the local target's "
                                                      "streamed chat")])
    from inferbox.tenants.app import token_for

    owner = model_tenant(settings, tenant)
    spec = load_models(settings).get(name)
    kube = kube or _kube(settings)
    host = gateway.model_host(kube, name, owner.namespace)
    issued, warning = token_for(settings, tenant=owner.name, ttl="5m")
    instances = parse_instances(data)
    lines = [f"warning: {warning}"] if warning else []
    via_ai = aigateway.installed(kube) and aigateway.serves_openai_only(spec)
    if via_ai:
        # The model admits inference from the AI gateway alone (its ai-gateway-only policy).
        ai_host = aigateway.tenant_host(owner.name, ingress_naming(settings).domain)
        with gateway.ai_gateway_port(kube) as port:
            calls = gateway.call(port, ai_host, issued.token,
                                 gateway.requests_for(spec, instances, openai_prefix=aigateway.OPENAI_PREFIX))
        return lines + [f"{c.protocol} POST {ai_host}{c.path} (AI gateway) -> {json.dumps(c.answer.body)}"
                        for c in calls]
    with gateway.gateway_port(settings, kube) as port:
        calls = gateway.call(port, host, issued.token, gateway.requests_for(spec, instances))
    return lines + [f"{c.protocol} POST {host}{c.path} -> {json.dumps(c.answer.body)}" for c in calls]


def parse_instances(data: str | None) -> list[Any] | None:
    """--data: a JSON list of instances (or {"instances": [...]}); None means the catalog's example."""
    instances: list[Any] | None = None
    if data is not None:
        try:
            parsed = json.loads(data)
        except ValueError as exc:
            raise ConfigError("command line", [("data", f"not JSON: {exc}")]) from None
        instances = parsed["instances"] if isinstance(parsed, dict) and "instances" in parsed else parsed
        if not isinstance(instances, list) or not instances:
            raise ConfigError("command line", [("data", "a non-empty JSON list of instances (or {instances: [...]})")])
    return instances


def prediction_lines(prediction: Prediction) -> list[str]:
    return [f"v1 POST /v1/models/{prediction.model}:predict -> {json.dumps(prediction.v1.body)}",
            f"v2 POST /v2/models/{prediction.model}/infer -> {json.dumps(prediction.v2.body)}",
            f"{prediction.model}: v1 predictions {prediction.v1_predictions}, v2 outputs {prediction.v2_outputs}"]


def down(state_dir: Path, *, target: Target, model: str | None = None) -> list[str]:
    """Stop local predictors from the local state in ``state_dir`` alone: no catalog, no
    versions.toml, so a broken configuration never keeps a predictor running."""
    if target is not Target.LOCAL:
        raise InferboxError("down stops local predictors (--target local); on a cluster use undeploy-model")
    return stop_predictors(local_dir(state_dir), model)


def undeploy(settings: Settings, name: str, *, tenant: str | None, kube: Kube | None = None) -> str:
    owner = model_tenant(settings, tenant)
    gone = cluster.undeploy_model(kube or _kube(settings), name, owner)
    if gone:
        return f"deleted inferenceservice {owner.namespace}/{name}"
    return f"{name} was not deployed in {owner.namespace}: nothing to delete"


def promote(settings: Settings, name: str, *, tenant: str | None, kube: Kube | None = None) -> str:
    owner = model_tenant(settings, tenant)  # the tenant file before the cluster
    cluster.promote(kube or _kube(settings), name, owner)
    return f"{name}: canary promoted (it now takes all traffic)"


def rollback(settings: Settings, name: str, *, tenant: str | None, kube: Kube | None = None) -> str:
    owner = model_tenant(settings, tenant)  # the tenant file before the cluster
    cluster.rollback(kube or _kube(settings), name, owner)
    return f"{name}: rolled back (canaryTrafficPercent 0: all traffic on the previous revision)"


def catalog_table(catalog: Catalog) -> FitTable:
    table = FitTable("model catalog (models/catalog.yaml)")
    for column in ("model", "runtime", "storage", "protocols", "GPUs", "CPU fallback", "local"):
        table.add_column(column)
    for model in catalog.models.values():
        local = f"yes ({model.local.server})" if model.local.supported else "no"
        table.add_row(model.name, model.runtime, model.storage_uri, ", ".join(model.protocols), str(model.gpus or "-"),
                      "yes" if model.cpu_fallback else "-", local)
    return table

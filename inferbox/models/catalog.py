"""The model catalog (``models/catalog.yaml``): typed, validated once, then passed around frozen.

What a runtime can do (model format, protocols, GPUs, typed arguments) is data here, in
:data:`RUNTIMES`, so a catalog entry that asks a runtime for something it cannot do (a GPU for the
sklearn server, ``maxModelLen`` for TorchServe) is refused when the catalog loads, naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PositiveInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from inferbox.config import validation_problems
from inferbox.errors import ConfigError, InferboxError
from inferbox.tenants.spec import DNS1035_LABEL, parse_quantity

GPU_RESOURCE = "nvidia.com/gpu"
STORAGE_SCHEMES = ("gs", "s3", "hf", "pvc", "https")
Protocol = Literal["v1", "v2", "openai"]
LocalServer = Literal["sklearn", "torch-mlp", "vllm"]


@dataclass(frozen=True)
class RuntimeTraits:
    """What one KServe ClusterServingRuntime (as installed by kserve-runtime-configs) supports."""

    model_format: str
    protocols: frozenset[str]
    gpu: bool
    args: frozenset[str]
    local_servers: frozenset[str]


RUNTIMES: dict[str, RuntimeTraits] = {
    # sklearn has no GPU code path: a GPU would be reserved and sit idle.
    "kserve-sklearnserver": RuntimeTraits("sklearn", frozenset({"v1", "v2"}), gpu=False, args=frozenset(),
                                          local_servers=frozenset({"sklearn"})),
    "kserve-torchserve": RuntimeTraits("pytorch", frozenset({"v1", "v2"}), gpu=True, args=frozenset(),
                                       local_servers=frozenset({"torch-mlp"})),
    # The Hugging Face server speaks OpenAI (completions, chat, embeddings) besides v1/v2.
    # Locally, vLLM's own OpenAI server: the engine the Hugging Face server runs (models/local-predictor/llm-*.txt).
    "kserve-huggingfaceserver": RuntimeTraits("huggingface", frozenset({"v1", "v2", "openai"}), gpu=True,
                                              args=frozenset({"max_model_len", "dtype", "task", "backend"}),
                                              local_servers=frozenset({"vllm"})),
}


def _quantity_text(value: Any) -> Any:
    # YAML reads `cpu: 2` as an int; the API wants quantity strings.
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


def _valid_quantity(value: Any) -> Any:
    value = _quantity_text(value)
    if isinstance(value, str):
        try:
            if parse_quantity(value) <= 0:
                raise ValueError(f"must be greater than zero (got {value!r})")
        except ValueError as exc:
            raise ValueError(str(exc)) from None
    return value


Quantity = Annotated[str, BeforeValidator(_valid_quantity)]
ResourceName = Literal["cpu", "memory", "ephemeral-storage", "nvidia.com/gpu"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, str_strip_whitespace=True)


class Resources(_Strict):
    requests: dict[ResourceName, Quantity] = Field(default_factory=dict)
    limits: dict[ResourceName, Quantity] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> Resources:
        for name, limit in self.limits.items():
            request = self.requests.get(name)
            if request is not None and parse_quantity(request) > parse_quantity(limit):
                raise ValueError(f"requests.{name} ({request}) exceeds limits.{name} ({limit})")
        for where in (self.requests, self.limits):
            gpus = where.get(GPU_RESOURCE)
            if gpus is not None and parse_quantity(gpus) != int(parse_quantity(gpus)):
                raise ValueError(f"{GPU_RESOURCE} counts whole GPUs (got {gpus})")
        # Kubernetes cannot overcommit extended resources: a GPU request must equal its limit.
        if GPU_RESOURCE in self.requests and self.requests[GPU_RESOURCE] != self.limits.get(GPU_RESOURCE):
            raise ValueError(f"requests.{GPU_RESOURCE} must equal limits.{GPU_RESOURCE} (or be left out)")
        return self

    @property
    def gpus(self) -> int:
        value = self.limits.get(GPU_RESOURCE) or self.requests.get(GPU_RESOURCE)
        return int(parse_quantity(value)) if value else 0

    def effective_requests(self) -> dict[str, str]:
        """Requests as the API server defaults them: a resource with only a limit requests the limit."""
        return {**self.limits, **self.requests}

    def manifest(self) -> dict[str, dict[str, str]]:
        return {key: dict(value) for key, value in (("requests", self.requests), ("limits", self.limits)) if value}


class RuntimeArgs(_Strict):
    """Typed runtime arguments, rendered as ``--name=value`` (the Hugging Face server's flags)."""

    max_model_len: PositiveInt | None = Field(default=None, alias="maxModelLen")
    dtype: Literal["auto", "float16", "bfloat16", "float32"] | None = None
    task: Literal["text_generation", "text2text_generation", "text_embedding", "fill_mask",
                  "sequence_classification", "token_classification"] | None = None
    backend: Literal["vllm", "huggingface"] | None = None

    def set_names(self) -> set[str]:
        return {name for name in type(self).model_fields if getattr(self, name) is not None}

    def merged(self, override: RuntimeArgs) -> RuntimeArgs:
        return RuntimeArgs.model_validate({**self.model_dump(exclude_none=True),
                                           **override.model_dump(exclude_none=True)})

    def argv(self) -> list[str]:
        values = ((name, getattr(self, name)) for name in type(self).model_fields)
        return [f"--{name}={value}" for name, value in values if value is not None]


class CpuFallback(_Strict):
    """How to run the model without a GPU: other resources and argument overrides."""

    resources: Resources
    args: RuntimeArgs = Field(default_factory=RuntimeArgs)

    @field_validator("resources")
    @classmethod
    def _no_gpu(cls, value: Resources) -> Resources:
        if value.gpus:
            raise ValueError(f"a CPU fallback cannot ask for {GPU_RESOURCE}")
        return value


class LocalTarget(_Strict):
    supported: bool
    server: LocalServer | None = Field(default=None, description="the local model class that serves it")
    reason: str | None = Field(default=None, description="why it cannot run locally")
    weights: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*/[^/]+\.gguf$",
                                description="vllm: PACKAGE/FILE.gguf, a GGUF file inside a package of the "
                                            "predictor environment (models/local-predictor/llm-*.txt installs it)")

    @model_validator(mode="after")
    def _server_or_reason(self) -> LocalTarget:
        if self.supported and self.server is None:
            raise ValueError("server: required when supported is true (sklearn, torch-mlp or vllm)")
        if not self.supported and (self.server is not None or not self.reason):
            raise ValueError("reason: required (and no server) when supported is false")
        if (self.server == "vllm") != (self.weights is not None):
            raise ValueError("weights: required for the vllm server, and only for it")
        return self


class Example(_Strict):
    instances: list[Any] = Field(min_length=1)


class Replicas(_Strict):
    min: int = Field(default=1, ge=0)
    max: PositiveInt = 1

    @model_validator(mode="after")
    def _ordered(self) -> Replicas:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) exceeds max ({self.max})")
        return self


def check_storage_uri(value: str) -> str:
    scheme, sep, rest = value.partition("://")
    if not sep or scheme not in STORAGE_SCHEMES:
        raise ValueError(f"{value!r}: the scheme must be one of {', '.join(s + '://' for s in STORAGE_SCHEMES)}")
    if not rest.strip("/"):
        raise ValueError(f"{value!r}: names no bucket, repository or claim")
    return value


class ModelSpec(_Strict):
    """One catalog entry. ``runtime`` comes first so the later fields' validators can consult it."""

    name: str = Field(default="", description="filled in from the catalog key")
    description: str = Field(min_length=1)
    runtime: str
    storage_uri: str = Field(alias="storageUri")
    protocols: list[Protocol] = Field(min_length=1)
    resources: Resources
    args: RuntimeArgs = Field(default_factory=RuntimeArgs)
    cpu_fallback: CpuFallback | None = Field(default=None, alias="cpuFallback")
    replicas: Replicas = Field(default_factory=Replicas)
    local: LocalTarget
    example: Example | None = None

    @field_validator("runtime")
    @classmethod
    def _known_runtime(cls, value: str) -> str:
        if value not in RUNTIMES:
            raise ValueError(f"unknown runtime {value!r} (known: {', '.join(sorted(RUNTIMES))})")
        return value

    @field_validator("storage_uri")
    @classmethod
    def _storage(cls, value: str, info: ValidationInfo) -> str:
        check_storage_uri(value)
        runtime = info.data.get("runtime")
        if value.startswith("hf://") and runtime and runtime != "kserve-huggingfaceserver":
            raise ValueError(f"hf:// models are served by kserve-huggingfaceserver, not {runtime}")
        return value

    @field_validator("protocols")
    @classmethod
    def _protocols(cls, value: list[str], info: ValidationInfo) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("a protocol is listed twice")
        traits = RUNTIMES.get(info.data.get("runtime", ""))
        if traits and (unsupported := sorted(set(value) - traits.protocols)):
            raise ValueError(f"{info.data['runtime']} does not serve {', '.join(unsupported)}")
        return value

    @field_validator("resources")
    @classmethod
    def _gpu_capable(cls, value: Resources, info: ValidationInfo) -> Resources:
        runtime = info.data.get("runtime", "")
        if value.gpus and runtime in RUNTIMES and not RUNTIMES[runtime].gpu:
            raise ValueError(f"{runtime} cannot use a GPU: remove {GPU_RESOURCE}")
        return value

    @field_validator("args")
    @classmethod
    def _args_accepted(cls, value: RuntimeArgs, info: ValidationInfo) -> RuntimeArgs:
        _check_args(value, info.data.get("runtime", ""))
        return value

    @field_validator("cpu_fallback")
    @classmethod
    def _fallback(cls, value: CpuFallback | None, info: ValidationInfo) -> CpuFallback | None:
        if value is None:
            return value
        resources = info.data.get("resources")
        if resources is not None and not resources.gpus:
            raise ValueError("only a model that asks for a GPU has a CPU fallback")
        _check_args(value.args, info.data.get("runtime", ""))
        return value

    @field_validator("local")
    @classmethod
    def _local_server(cls, value: LocalTarget, info: ValidationInfo) -> LocalTarget:
        runtime = info.data.get("runtime", "")
        if value.server and runtime in RUNTIMES and value.server not in RUNTIMES[runtime].local_servers:
            raise ValueError(f"server {value.server!r} does not serve {RUNTIMES[runtime].model_format} models")
        if value.server == "vllm" and info.data.get("protocols") not in (None, ["openai"]):
            raise ValueError("server 'vllm' serves the OpenAI API only: protocols must be [openai]")
        return value

    @property
    def traits(self) -> RuntimeTraits:
        return RUNTIMES[self.runtime]

    @property
    def gpus(self) -> int:
        return self.resources.gpus

    @property
    def protocol_version(self) -> str | None:
        """KServe's ``protocolVersion``: v2 when offered, else v1; None for OpenAI-only models."""
        for protocol in ("v2", "v1"):
            if protocol in self.protocols:
                return protocol
        return None

    def resolved(self, *, cpu_fallback: bool) -> tuple[Resources, RuntimeArgs]:
        """Resources and arguments to deploy with (the CPU fallback's when asked)."""
        if not cpu_fallback:
            return self.resources, self.args
        if self.cpu_fallback is None:
            why = "it asks for no GPU" if not self.gpus else f"{self.runtime} has no CPU fallback declared for it"
            raise InferboxError(f"model {self.name!r} has no CPU fallback: {why}")
        return self.cpu_fallback.resources, self.args.merged(self.cpu_fallback.args)


def _check_args(args: RuntimeArgs, runtime: str) -> None:
    if runtime not in RUNTIMES:
        return
    if extra := sorted(args.set_names() - RUNTIMES[runtime].args):
        raise ValueError(f"{runtime} takes no {', '.join(extra)} argument")


ModelName = Annotated[str, Field(pattern=DNS1035_LABEL, max_length=45)]


class Catalog(_Strict):
    schema_version: Literal[1] = Field(alias="schema")
    models: dict[ModelName, ModelSpec] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _names(cls, data: Any) -> Any:
        # The key is the name; copy it in so a ModelSpec travels with its name.
        if isinstance(data, dict) and isinstance(data.get("models"), dict):
            data = {**data, "models": {key: {**value, "name": key} if isinstance(value, dict) else value
                                       for key, value in data["models"].items()}}
        return data

    def get(self, name: str) -> ModelSpec:
        try:
            return self.models[name]
        except KeyError:
            raise InferboxError(f"no model {name!r} in the catalog (known: {', '.join(sorted(self.models))})") from None

    def local_models(self) -> list[ModelSpec]:
        return [m for m in self.models.values() if m.local.supported]


def parse_catalog(data: Any, shown: str) -> Catalog:
    if not isinstance(data, dict):
        raise ConfigError(shown, [("<top level>", "the catalog is a mapping with schema and models")])
    try:
        return Catalog.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(shown, validation_problems(exc, Catalog)) from exc


def load_catalog(path: Path) -> Catalog:
    """Load and validate the catalog; every problem names the file and the field."""
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(str(path), [("<file>", "not found")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), [("<syntax>", " ".join(str(exc).split()))]) from exc
    return parse_catalog(data, str(path))


def default_catalog_path(root: Path) -> Path:
    return root / "models" / "catalog.yaml"

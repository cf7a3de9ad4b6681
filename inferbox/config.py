"""Typed, validated configuration: ``versions.toml`` and the run settings.

Validation happens here, once, at the edge. Everything else receives these frozen objects.
"""

from __future__ import annotations

import platform
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from inferbox.errors import ConfigError

VERSION_PATTERN = r"^v?\d+\.\d+\.\d+(?:-[0-9A-Za-z.]+)?$"
SHA256_PATTERN = r"^[0-9a-f]{64}$"
# Platforms the tools are pinned for, as "<os>-<arch>" in Go's naming.
PLATFORMS = ("linux-amd64", "linux-arm64", "darwin-amd64", "darwin-arm64")

Version = Annotated[str, Field(pattern=VERSION_PATTERN)]
Sha256 = Annotated[str, Field(pattern=SHA256_PATTERN)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ToolPin(_Strict):
    """A CLI tool downloaded from its release site and verified by sha256."""

    version: Version
    url: str = Field(description="download URL template with {version}, {os}, {arch}")
    archive_member: str | None = Field(
        default=None, description="path of the binary inside a .tar.gz download, templated like url"
    )
    sha256: dict[str, Sha256]

    @field_validator("url")
    @classmethod
    def _url_is_template(cls, value: str) -> str:
        if not value.startswith("https://"):
            raise ValueError("must be an https:// URL")
        for placeholder in ("{os}", "{arch}"):
            if placeholder not in value:
                raise ValueError(f"must contain {placeholder}")
        return value

    @field_validator("sha256")
    @classmethod
    def _known_platforms(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(PLATFORMS))
        if unknown:
            raise ValueError(f"unknown platform(s) {unknown}; known: {list(PLATFORMS)}")
        if not value:
            raise ValueError("needs at least one platform checksum")
        return value

    def download_url(self, os_name: str, arch: str) -> str:
        return self.url.format(version=self.version.removeprefix("v"), os=os_name, arch=arch)

    def member(self, os_name: str, arch: str) -> str | None:
        if self.archive_member is None:
            return None
        return self.archive_member.format(version=self.version.removeprefix("v"), os=os_name, arch=arch)


class ChartPin(_Strict):
    """A Helm chart: a classic repository URL plus chart name, or an ``oci://`` reference."""

    repo: str | None = None
    chart: str
    version: Version

    @model_validator(mode="after")
    def _repo_or_oci(self) -> ChartPin:
        if self.chart.startswith("oci://"):
            if self.repo is not None:
                raise ValueError("an oci:// chart takes no repo")
        elif self.repo is None or not self.repo.startswith("https://"):
            raise ValueError("repo must be an https:// chart repository (or chart an oci:// reference)")
        return self


class KubernetesPin(_Strict):
    version: Version
    kind_node_image: str = Field(description="kindest/node image, by digest")

    @model_validator(mode="after")
    def _image_matches_version(self) -> KubernetesPin:
        match = re.fullmatch(r"kindest/node:(v[^@]+)@sha256:[0-9a-f]{64}", self.kind_node_image)
        if match is None:
            raise ValueError("kind_node_image must be kindest/node:vX.Y.Z@sha256:<64 hex>")
        if match.group(1).removeprefix("v") != self.version.removeprefix("v"):
            raise ValueError(f"kind_node_image tag {match.group(1)} differs from version {self.version}")
        return self


class Tools(_Strict):
    kind: ToolPin
    minikube: ToolPin
    helm: ToolPin
    kubectl: ToolPin


class Charts(_Strict):
    cert_manager: ChartPin = Field(alias="cert-manager")
    istio_base: ChartPin = Field(alias="istio-base")
    istio_cni: ChartPin = Field(alias="istio-cni")
    istiod: ChartPin
    istio_gateway: ChartPin = Field(alias="istio-gateway")
    kserve_crd: ChartPin = Field(alias="kserve-crd")
    kserve: ChartPin
    kserve_runtime_configs: ChartPin = Field(alias="kserve-runtime-configs")
    knative_operator: ChartPin = Field(alias="knative-operator")
    kube_prometheus_stack: ChartPin = Field(alias="kube-prometheus-stack")
    nvidia_device_plugin: ChartPin = Field(alias="nvidia-device-plugin")
    dcgm_exporter: ChartPin = Field(alias="dcgm-exporter")
    envoy_gateway: ChartPin = Field(alias="envoy-gateway")
    ai_gateway_crds: ChartPin = Field(alias="ai-gateway-crds")
    ai_gateway: ChartPin = Field(alias="ai-gateway")
    jaeger: ChartPin
    kiali_server: ChartPin = Field(alias="kiali-server")

    def by_key(self, key: str) -> ChartPin:
        """The pin for a versions.toml key such as ``"cert-manager"``."""
        for name, info in type(self).model_fields.items():
            if (info.alias or name) == key:
                pin: ChartPin = getattr(self, name)
                return pin
        raise KeyError(key)

    def keys(self) -> list[str]:
        return [info.alias or name for name, info in type(self).model_fields.items()]


class KnativePin(_Strict):
    serving_version: Version


class AiGatewayPin(_Strict):
    """What the AI gateway phases run besides their charts: the Redis its global rate limit counts in."""

    redis_image: str = Field(pattern=r"^[a-z0-9.-]+(:[0-9]+)?/[a-z0-9._/-]+:[A-Za-z0-9._-]+$")


class GpuPin(_Strict):
    """What the GPU steps run: the gpu-check pod's image (nvidia-smi itself comes from the
    node's driver, mounted by the NVIDIA runtime) and the container toolkit put into kind nodes."""

    check_image: str = Field(pattern=r"^[a-z0-9.-]+(:[0-9]+)?/[a-z0-9._/-]+:[A-Za-z0-9._-]+$")
    container_toolkit: Version


class TestenvPin(_Strict):
    """Sources of the hermetic test control plane (see inferbox.testenv)."""

    kubernetes_module: Version = Field(description="k8s.io/kubernetes Go module version")
    staging_modules: Version = Field(description="k8s.io/<staging> release matching kubernetes_module")
    etcd_module: str
    etcd_version: Version
    kwok_module: str
    kwok_version: Version
    kubectl_layer_npm: str
    kubectl_layer_version: Version


class LintPin(_Strict):
    actionlint_module: str
    actionlint_version: Version


class ObservabilityPin(_Strict):
    """What the observability checks are built from (tools/promql-check)."""

    prometheus_module_version: Version = Field(
        description="github.com/prometheus/prometheus Go module version (v0.3XX.Y is Prometheus v3.XX.Y)")

    @property
    def prometheus_release(self) -> str:
        """The Prometheus release the module version stands for: v0.309.1 -> v3.9.1."""
        _, minor, patch = self.prometheus_module_version.removeprefix("v").split("-")[0].split(".")
        return f"v{int(minor) // 100}.{int(minor) % 100}.{patch}"


class Versions(_Strict):
    schema_version: Literal[1] = Field(alias="schema")
    kubernetes: KubernetesPin
    tools: Tools
    charts: Charts
    knative: KnativePin
    aigateway: AiGatewayPin
    gpu: GpuPin
    testenv: TestenvPin
    lint: LintPin
    observability: ObservabilityPin


def _field_path(loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in loc if not str(p).startswith("function-")]
    return ".".join(parts) or "<top level>"


def _message(error: Mapping[str, Any], model: type[BaseModel]) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key (typo, or a component this version of inferbox does not know)"
    if error["type"] == "missing":
        return "required field is missing"
    if error["type"] == "string_pattern_mismatch" and "version" in str(error["loc"][-1]):
        return f"malformed version {error['input']!r} (expected like 1.2.3 or v1.2.3)"
    return str(error["msg"]).removeprefix("Value error, ")


def validation_problems(exc: ValidationError, model: type[BaseModel]) -> list[tuple[str, str]]:
    """Turn a pydantic error into (field path, message) pairs; shared by every config loader."""
    return [(_field_path(err["loc"]), _message(err, model)) for err in exc.errors()]


def load_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(str(path), [("<file>", "not found")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), [("<syntax>", str(exc))]) from exc


def load_versions(path: Path) -> Versions:
    """Load and validate versions.toml; every problem is reported with its key."""
    data = load_toml(path)
    try:
        return Versions.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(str(path), validation_problems(exc, Versions)) from exc


class Provider(StrEnum):
    KIND = "kind"
    MINIKUBE = "minikube"
    EXISTING = "existing"


class GpuMode(StrEnum):
    AUTO = "auto"
    ON = "on"
    OFF = "off"


def host_platform() -> tuple[str, str]:
    """(os, arch) in Go's naming, as release URLs use."""
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)
    return platform.system().lower(), arch


@dataclass(frozen=True)
class Settings:
    """Everything one run needs, built once by the task layer and passed explicitly."""

    root: Path
    versions: Versions
    provider: Provider = Provider.KIND
    cluster_name: str = "inferbox"
    context: str | None = None
    gpu: GpuMode = GpuMode.AUTO
    knative: bool = False
    monitoring: bool = True
    # Envoy Gateway + Envoy AI Gateway (the OpenAI endpoint, token budgets) and its Redis.
    ai_gateway: bool = True
    # The one place trace sampling is set: Istio's Telemetry and the AI gateway's Envoy both
    # sample this percentage of requests (a traced load test forces sampling on its own).
    trace_sampling_percent: float = 1.0
    dry_run: bool = False
    bin_dir: Path = field(default=Path())
    state_dir: Path = field(default=Path())
    event_log: Path | None = None
    chart_overrides: Mapping[str, Path] = field(default_factory=dict)
    # A folder of pulled charts (inferbox.bootstrap.charts.ChartStore) the phases install from.
    chart_store: Path | None = None
    # --bundle: a user's air-gapped bundle; nothing is downloaded, every chart must be in it.
    bundle: Path | None = None

    @property
    def charts_dir(self) -> Path:
        """Where the pinned charts are pulled to (the cache), unless a bundle is given."""
        return self.bundle or self.state_dir / "charts"

    @property
    def kube_context(self) -> str:
        """The kubeconfig context the platform is installed into."""
        if self.context:
            return self.context
        if self.provider is Provider.KIND:
            return f"kind-{self.cluster_name}"
        return self.cluster_name


def default_state_dir(root: Path) -> Path:
    """Where inferbox keeps its state (.inferbox): known without reading any configuration."""
    return root / ".inferbox"


def build_settings(root: Path, **overrides: Any) -> Settings:
    """Settings from versions.toml under ``root`` plus explicit overrides (the explicit value wins)."""
    versions = load_versions(root / "versions.toml")
    defaults: dict[str, Any] = {
        "bin_dir": default_state_dir(root) / "bin",
        "state_dir": default_state_dir(root),
    }
    defaults.update({k: v for k, v in overrides.items() if v is not None})
    for key, enum in (("provider", Provider), ("gpu", GpuMode)):
        if key in defaults:
            try:
                defaults[key] = enum(defaults[key])
            except ValueError:
                choices = ", ".join(m.value for m in enum)
                raise ConfigError("command line", [(key, f"{defaults[key]!r} is not one of {choices}")]) from None
    if (sampling := defaults.get("trace_sampling_percent")) is not None:
        try:
            defaults["trace_sampling_percent"] = percent = float(sampling)
        except ValueError:
            percent = -1.0
        if not 0 <= percent <= 100:  # also NaN
            raise ConfigError("command line", [("trace-sampling", f"{sampling!r} is not a percentage from 0 to 100")])
    if defaults.get("provider") is Provider.EXISTING and not defaults.get("context"):
        # Refused here, at the edge, before any task runs (bootstrap, plan, status, teardown alike).
        raise ConfigError("command line", [("context", "--provider existing needs --context <kubeconfig context>: "
                                                       "the cluster to install into")])
    return Settings(root=root, versions=versions, **defaults)

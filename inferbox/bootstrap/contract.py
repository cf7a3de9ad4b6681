"""The render check: every assumption the plan makes about the pinned charts, checked against
what those charts render (``helm template``) before anything is installed.

For each phase the chart is rendered with the phase's values file and ``--set`` values, for the
pinned Kubernetes version and the API versions the earlier phases' CRDs add. Then:

* every health-check target is in the render (or in the phase's own manifests);
* every ClusterServingRuntime that ``models/catalog.yaml`` uses is rendered;
* every values key means something to the chart or a subchart (Helm ignores unknown keys);
* every rendered object of a Kubernetes kind matches the pinned minor's strict schema;
* every IngressClass a route needs is rendered, by Istio's controller name;
* KServe's rendered ingress config names the hosts :mod:`inferbox.models.hosts` computes.

Problems name the phase and the object or key. The renders also give the images each phase
runs (for bundles) and the CRDs of ``crds/`` folders (applied server-side before upgrades,
since Helm never upgrades those).
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from inferbox.bootstrap.charts import YamlLoader, load_chart, unknown_values
from inferbox.bootstrap.plan import CheckKind, HealthCheck, Phase, Plan
from inferbox.errors import CommandError, InferboxError
from inferbox.hints import invoke
from inferbox.models.hosts import IngressNaming
from inferbox.tools.helm import Helm
from inferbox.validate import SchemaValidator

# Kinds without a namespace: a check of one of these matches by name alone.
CLUSTER_SCOPED = frozenset({
    "Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding", "PriorityClass",
    "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration", "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding", "IngressClass", "StorageClass", "PersistentVolume", "APIService",
    "RuntimeClass", "CSIDriver", "GatewayClass", "ClusterIssuer", "ClusterServingRuntime",
    "ClusterStorageContainer", "ClusterLocalModel", "LocalModelNodeGroup",
})
WORKLOAD_KIND = {CheckKind.DEPLOYMENT_AVAILABLE: "Deployment", CheckKind.DAEMONSET_READY: "DaemonSet",
                 CheckKind.STATEFULSET_READY: "StatefulSet", CheckKind.JOB_COMPLETE: "Job"}
# Istio serves an Ingress whose IngressClass names this controller
# (istio/istio pilot/pkg/config/kube/ingress/virtualservices.go@1.30.3, shouldProcessIngressWithClass).
ISTIO_INGRESS_CONTROLLER = "istio.io/ingress-controller"
# KServe's controller configuration (kserve/kserve charts/kserve-resources files/common/configmap.yaml@v0.20.0).
KSERVE_CONFIGMAP = "inferenceservice-config"
_SOURCE = re.compile(r"^# Source: (.+)$", re.M)
_CRDS_FOLDER = re.compile(r"^[^/]+(?:/charts/[^/]+)*/crds/")


@dataclass(frozen=True)
class Problem:
    phase: str
    subject: str  # the object ("Deployment istio-system/istiod") or key ("values key pilot.foo")
    message: str

    def __str__(self) -> str:
        return f"{self.phase}: {self.subject}: {self.message}"


class ContractError(InferboxError):
    """The pinned charts do not render what the plan needs; ``problems`` says each thing."""

    def __init__(self, problems: Sequence[Problem], recheck: str = "charts-verify") -> None:
        self.problems = list(problems)
        super().__init__("render check failed: the pinned charts do not match what the plan needs\n  "
                         + "\n  ".join(str(p) for p in self.problems)
                         + "\nfix the values (helm-values/) or the plan (inferbox/bootstrap/phases.py), "
                         + f"then `{invoke(recheck)}`")


@dataclass(frozen=True)
class Rendered:
    """One object a chart (or a phase manifest) renders; ``source`` is helm's ``# Source:`` path.

    A CRD's ``obj`` lacks its schemas (``openAPIV3Schema``: megabytes that no check reads);
    ``raw`` keeps its text, and :meth:`full` parses it whole when it is to be applied."""

    obj: dict[str, Any]
    source: str
    raw: str | None = None

    def full(self) -> dict[str, Any]:
        if self.raw is None:
            return self.obj
        return next(d for d in yaml.load_all(self.raw, Loader=YamlLoader) if isinstance(d, dict))

    @property
    def kind(self) -> str:
        return str(self.obj.get("kind", ""))

    @property
    def name(self) -> str:
        return str((self.obj.get("metadata") or {}).get("name", ""))

    def namespace(self, default: str) -> str | None:
        if self.kind in CLUSTER_SCOPED:
            return None
        return str((self.obj.get("metadata") or {}).get("namespace") or default)

    @property
    def from_crds_folder(self) -> bool:
        """A CRD from a chart's ``crds/`` folder: Helm installs it once and never upgrades it."""
        return self.kind == "CustomResourceDefinition" and bool(_CRDS_FOLDER.match(self.source))


@dataclass
class PhaseRender:
    phase: Phase
    objects: list[Rendered]
    seconds: float

    def find(self, kind: str, name: str, namespace: str | None = None) -> Rendered | None:
        for item in self.objects:
            if item.kind == kind and item.name == name and (
                    namespace is None or item.namespace(self.phase.namespace) in (None, namespace)):
                return item
        return None

    def crds_folder(self) -> list[dict[str, Any]]:
        return [r.full() for r in self.objects if r.from_crds_folder]

    def images(self) -> list[str]:
        return sorted({image for r in self.objects for image in _images(r.obj)})


@dataclass
class ContractReport:
    renders: dict[str, PhaseRender] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    seconds: float = 0.0

    def images(self) -> dict[str, list[str]]:
        return {name: render.images() for name, render in self.renders.items()}

    def raise_for_problems(self, recheck: str = "charts-verify") -> None:
        """Raise ContractError listing every problem; ``recheck`` is the task (and flags) it names."""
        if self.problems:
            raise ContractError(self.problems, recheck)


def parse_manifests(text: str, where: str = "") -> list[Rendered]:
    """Split ``helm template`` output into objects, each with its ``# Source:`` path.

    A ``crds/`` file may hold its own ``---`` after the Source line: the path carries on until
    the next Source line."""
    out = []
    source = ""
    for chunk in re.split(r"^---\s*$", text, flags=re.M):
        if match := _SOURCE.search(chunk):
            source = match.group(1)
        crd = _CRD_KIND.search(chunk) is not None
        try:
            docs = list(yaml.load_all(_without_schemas(chunk) if crd else chunk, Loader=YamlLoader))
        except yaml.YAMLError as exc:
            raise InferboxError(f"{where}: rendered YAML from {source or '?'} does not parse: {exc}") from exc
        docs = [doc for doc in docs if isinstance(doc, dict) and doc.get("kind")]
        out += [Rendered(doc, source, chunk if crd and len(docs) == 1 else None) for doc in docs]
    return out


_CRD_KIND = re.compile(r"^kind:\s*CustomResourceDefinition\s*$", re.M)
_SCHEMA_KEY = re.compile(r"^( *)openAPIV3Schema:\s*$")


def _without_schemas(text: str) -> str:
    """Block-style YAML with every ``openAPIV3Schema:`` block dropped (its more-indented lines)."""
    kept: list[str] = []
    deeper_than: int | None = None
    for line in text.splitlines():
        if deeper_than is not None:
            if not line.strip() or len(line) - len(line.lstrip(" ")) > deeper_than:
                continue
            deeper_than = None
        if match := _SCHEMA_KEY.match(line):
            deeper_than = len(match.group(1))
            kept.append(f"{match.group(1)}openAPIV3Schema: {{}}")
            continue
        kept.append(line)
    return "\n".join(kept)


RenderCache = dict[tuple[Any, ...], tuple["PhaseRender | None", "Problem | None"]]


def verify(plan: Plan, helm: Helm, *, kube_version: str, runtimes: Mapping[str, str],
           manifests: Callable[[Phase], list[dict[str, Any]]], naming: IngressNaming,
           cache: RenderCache | None = None) -> ContractReport:
    """Render every phase (all in parallel) and check the plan against the renders.

    A chart that asks ``.Capabilities.APIVersions`` is rendered again with the API versions its
    dependencies' CRDs serve, as it would see them on the cluster when its phase runs.

    ``runtimes`` maps each ClusterServingRuntime the catalog uses to where it is used
    ("models/catalog.yaml: models.sklearn-iris.runtime"); ``manifests`` renders a phase's own
    templates. Charts must be local (a chart store); a chart that fails to render is a problem
    of its phase. ``cache`` shares renders between plans that differ in a few phases.
    Returns the report; :meth:`ContractReport.raise_for_problems` refuses.
    """
    cache = {} if cache is None else cache

    def cached_render(phase: Phase, served: tuple[str, ...]) -> tuple[PhaseRender | None, Problem | None]:
        key = (phase.name, phase.release, phase.namespace, phase.chart, phase.values_digest(),
               tuple(phase.manifests), served)
        if key not in cache:
            cache[key] = _render(phase, helm, kube_version, served, manifests)
        return cache[key]

    started = time.monotonic()
    report = ContractReport()
    phases = plan.order()
    with ThreadPoolExecutor(max_workers=max(1, len(phases))) as pool:
        # Every phase at once, seeing only the cluster's built-in APIs...
        results = dict(zip([p.name for p in phases], pool.map(lambda p: cached_render(p, ()), phases), strict=True))
        # ...then again, with the APIs its dependencies' CRDs add, each phase whose chart asks
        # (.Capabilities.APIVersions) and whose dependencies add any.
        again = {p.name: served for p in phases
                 if Path(p.chart.chart).exists() and load_chart(Path(p.chart.chart)).uses_api_versions
                 if (served := _served_before(plan, p, results))}
        for name, result in zip(again, pool.map(lambda n: cached_render(plan.phase(n), again[n]), again),
                                strict=True):
            results[name] = result
    for phase in phases:
        render, problem = results[phase.name]
        if problem is not None:
            report.problems.append(problem)
            continue
        assert render is not None
        report.renders[phase.name] = render
        report.problems += _check_values(phase)
        report.problems += _check_targets(render)
    report.problems += _check_schemas(report, kube_version)
    report.problems += _check_runtimes(plan, report, runtimes)
    kserve = _kserve_config(report)
    report.problems += _check_ingress_classes(report, kserve)
    report.problems += _check_hosts(kserve, naming)
    report.seconds = time.monotonic() - started
    return report


def _render(phase: Phase, helm: Helm, kube_version: str, api_versions: tuple[str, ...],
            manifests: Callable[[Phase], list[dict[str, Any]]]) -> tuple[PhaseRender | None, Problem | None]:
    started = time.monotonic()
    subject = f"chart {phase.chart_name} {phase.chart_version}"
    if not Path(phase.chart.chart).exists():
        return None, Problem(phase.name, subject, f"{phase.chart.chart} is not a local chart: pull the pinned "
                                                  f"charts first (`{invoke('charts-verify')}`)")
    try:
        text = helm.template(phase.release, phase.chart, phase.namespace,
                             values_files=[phase.values_file] if phase.values_file else [],
                             set_values=phase.set_values, kube_version=kube_version, api_versions=api_versions)
    except CommandError as exc:
        return None, Problem(phase.name, subject, f"does not render with the phase's values: {exc.stderr.strip()}")
    objects = parse_manifests(text, phase.name)
    objects += [Rendered(obj, f"manifests/{phase.name}") for obj in manifests(phase)]
    return PhaseRender(phase, objects, time.monotonic() - started), None


def _served_before(plan: Plan, phase: Phase,
                   results: Mapping[str, tuple[PhaseRender | None, Problem | None]]) -> tuple[str, ...]:
    """The API versions the CRDs of ``phase``'s (transitive) dependencies serve."""
    seen: set[str] = set()
    todo = list(phase.depends_on)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += plan.phase(name).depends_on
    served = {v for name in seen if (render := results[name][0]) is not None for v in _served_api_versions(render)}
    return tuple(sorted(served))


def _served_api_versions(render: PhaseRender) -> Iterator[str]:
    """What the cluster serves once this phase's CRDs are in: ``group/version`` and ``…/Kind``."""
    for item in render.objects:
        if item.kind != "CustomResourceDefinition":
            continue
        spec = item.obj.get("spec") or {}
        group, kind = spec.get("group"), (spec.get("names") or {}).get("kind")
        for version in spec.get("versions") or []:
            yield f"{group}/{version.get('name')}"
            yield f"{group}/{version.get('name')}/{kind}"


def _check_values(phase: Phase) -> list[Problem]:
    chart = load_chart(Path(phase.chart.chart))
    return [Problem(phase.name, f"values key {key} ({_values_origin(phase, key)})",
                    f"chart {chart.name} {chart.version} and its subcharts neither define nor declare it in their "
                    "schema: Helm would ignore it silently")
            for key in unknown_values(phase.values(), chart)]


def _values_origin(phase: Phase, key: str) -> str:
    if key in phase.set_values or any(key.startswith(f"{k}.") for k in phase.set_values):
        return "--set by the plan"
    # helm-values/<phase>.yaml, as the user finds it in the repository.
    return f"{phase.values_file.parent.name}/{phase.values_file.name}" if phase.values_file else "values"


def _check_targets(render: PhaseRender) -> list[Problem]:
    return [Problem(render.phase.name, check.describe(), message)
            for check in render.phase.checks if (message := _missing_target(render, check))]


def _missing_target(render: PhaseRender, check: HealthCheck) -> str | None:
    """Why a health check's target is not in the render, or None when it is."""
    ns = check.namespace
    if check.kind is CheckKind.CRD_ESTABLISHED:
        found = render.find("CustomResourceDefinition", check.name)
        return None if found else "no CustomResourceDefinition of that name is rendered"
    if check.kind in WORKLOAD_KIND:
        kind = WORKLOAD_KIND[check.kind]
        if render.find(kind, check.name, ns) or _operator_made(render, kind, check.name, ns):
            return None
        return f"no {kind} {ns}/{check.name} is rendered{_near_names(render, kind)}"
    if check.kind is CheckKind.GPU_ALLOCATABLE:
        # The wait finds the device plugin's pod on a node by these labels: a DaemonSet of the
        # render must put them on its pods.
        wanted = dict(pair.split("=", 1) for pair in (check.selector or "").split(",") if pair)
        for item in render.objects:
            labels = (((item.obj.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}
            if item.kind == "DaemonSet" and item.namespace(render.phase.namespace) == ns \
                    and wanted.items() <= labels.items():
                return None
        return f"no DaemonSet in {ns} labels its pods {check.selector}: the GPU wait could not name the plugin pod"
    if check.kind is CheckKind.WEBHOOK_READY:
        if render.find("Service", check.name, ns) is None:
            return f"no Service {ns}/{check.name} is rendered{_near_names(render, 'Service')}"
        for item in render.objects:
            if item.kind.endswith("WebhookConfiguration") and any(
                    (w.get("clientConfig") or {}).get("service", {}).get("name") == check.name
                    for w in item.obj.get("webhooks") or []):
                return None
        return "no webhook configuration calls that Service"
    kind = check.resource_kind or ""
    if render.find(kind, check.name, ns) is None:
        return f"no {kind} {check.name} is rendered{_near_names(render, kind)}"
    return None


def _operator_made(render: PhaseRender, kind: str, name: str, namespace: str | None) -> bool:
    """Workloads an operator creates from a rendered custom resource.

    prometheus-operator names a Prometheus' StatefulSet ``prometheus-<name>``
    (prometheus-operator/prometheus-operator pkg/prometheus/common.go@v0.93.0, PrefixedName).
    """
    if kind == "StatefulSet" and name.startswith("prometheus-"):
        return render.find("Prometheus", name.removeprefix("prometheus-"), namespace) is not None
    if kind == "Deployment" and name == "envoy-ratelimit":
        # Envoy Gateway runs its rate-limit service when its configuration (the rendered ConfigMap
        # envoy-gateway-config) sets rateLimit (gateway internal/infrastructure/runner/runner.go@v1.9.0).
        config = render.find("ConfigMap", "envoy-gateway-config", namespace)
        text = str(((config.obj if config else {}).get("data") or {}).get("envoy-gateway.yaml", ""))
        return bool((yaml.load(text, Loader=YamlLoader) or {}).get("rateLimit")) if text else False
    return False


def _near_names(render: PhaseRender, kind: str) -> str:
    names = sorted({f"{r.namespace(render.phase.namespace) or ''}/{r.name}".lstrip("/")
                    for r in render.objects if r.kind == kind})
    return f" (rendered {kind}s: {', '.join(names[:6])}{', …' if len(names) > 6 else ''})" if names else \
        f" (the chart renders no {kind} with these values)"


def _check_schemas(report: ContractReport, kube_version: str) -> list[Problem]:
    """Every rendered object of a Kubernetes kind against the pinned minor's strict schema: a
    typo in a subtree a template copies whole (``toYaml .Values.service.ports``) lands here as an
    unknown field, and a kind the pinned Kubernetes no longer serves is named. Custom resources
    are left to the API server (their CRDs come with the charts)."""
    validator = SchemaValidator(kube_version)
    problems = []
    for name, render in report.renders.items():
        checked = validator.check(r.obj for r in render.objects)
        problems += [Problem(name, p.object, f"{p.path}: {p.message}") for p in checked.problems]
    return problems


def _check_runtimes(plan: Plan, report: ContractReport, runtimes: Mapping[str, str]) -> list[Problem]:
    rendered = {r.name for render in report.renders.values() for r in render.objects
                if r.kind == "ClusterServingRuntime"}
    owner = next((p.name for p in plan.phases for c in p.checks if c.resource_kind == "ClusterServingRuntime"),
                 "plan")
    if owner != "plan" and owner not in report.renders:
        return []  # its chart did not render: already a problem
    return [Problem(owner, f"ClusterServingRuntime {name}",
                    f"{used} needs it, but no phase renders it"
                    + (f" (rendered: {', '.join(sorted(rendered))})" if rendered else
                       " (no ClusterServingRuntime is rendered at all: are the chart's runtimes switched on?)"))
            for name, used in sorted(runtimes.items()) if name not in rendered]


def _kserve_config(report: ContractReport) -> tuple[str, dict[str, Any]] | None:
    """(phase, KServe's parsed ConfigMap data) where a phase renders it."""
    for name, render in report.renders.items():
        for item in render.objects:
            if item.kind == "ConfigMap" and item.name == KSERVE_CONFIGMAP:
                data: dict[str, Any] = {}
                for key, raw in (item.obj.get("data") or {}).items():
                    try:
                        data[key] = json.loads(raw)
                    except (TypeError, json.JSONDecodeError):
                        data[key] = raw
                return name, data
    return None


def _check_ingress_classes(report: ContractReport, kserve: tuple[str, dict[str, Any]] | None) -> list[Problem]:
    classes = {r.name: r for render in report.renders.values() for r in render.objects if r.kind == "IngressClass"}
    needed: list[tuple[str, str, str]] = []  # (phase, subject, class)
    for name, render in report.renders.items():
        for item in render.objects:
            if item.kind == "Ingress" and (cls := (item.obj.get("spec") or {}).get("ingressClassName")):
                needed.append((name, f"Ingress {item.namespace(render.phase.namespace)}/{item.name}", cls))
    if kserve is not None:
        phase, data = kserve
        ingress, deploy = data.get("ingress") or {}, data.get("deploy") or {}
        mode = str(deploy.get("defaultDeploymentMode", "")) if isinstance(deploy, dict) else ""
        # Standard (RawDeployment) mode creates a networking.k8s.io/v1 Ingress of this class per
        # InferenceService (kserve pkg/controller/v1beta1/inferenceservice/reconcilers/ingress/
        # kube_ingress_reconciler.go@v0.20.0).
        if (isinstance(ingress, dict) and mode in ("Standard", "RawDeployment")
                and not ingress.get("disableIngressCreation") and ingress.get("ingressClassName")):
            needed.append((phase, f"ConfigMap {KSERVE_CONFIGMAP} ingress.ingressClassName "
                                  f"(deployment mode {mode})", str(ingress["ingressClassName"])))
    problems = []
    for phase, subject, cls in needed:
        found = classes.get(cls)
        if found is None:
            problems.append(Problem(phase, subject, f"routes need IngressClass {cls!r}, which no phase renders: "
                                                    "Istio serves no route for it"))
        elif (found.obj.get("spec") or {}).get("controller") != ISTIO_INGRESS_CONTROLLER:
            problems.append(Problem(phase, subject, f"IngressClass {cls!r} names controller "
                                                    f"{(found.obj.get('spec') or {}).get('controller')!r}, "
                                                    f"not Istio's {ISTIO_INGRESS_CONTROLLER!r}"))
    return problems


def _check_hosts(kserve: tuple[str, dict[str, Any]] | None, naming: IngressNaming) -> list[Problem]:
    """The hosts inferbox computes must be the hosts KServe will generate."""
    if kserve is None:
        return []
    phase, data = kserve
    ingress = data.get("ingress") if isinstance(data.get("ingress"), dict) else {}
    problems = []
    for key, ours in (("domainTemplate", naming.domain_template), ("ingressDomain", naming.domain)):
        theirs = ingress.get(key)
        if theirs != ours:
            problems.append(Problem(phase, f"ConfigMap {KSERVE_CONFIGMAP} ingress.{key}",
                                    f"KServe will use {theirs!r}, inferbox computes hosts with {ours!r} "
                                    "(inferbox.models.hosts reads helm-values/kserve.yaml)"))
    return problems


def mutable_image(image: str) -> bool:
    """A reference that can change under the same name: ``:latest``, or no tag and no digest."""
    if "@sha256:" in image:
        return False
    tag = image.rsplit("/", 1)[-1].partition(":")[2]
    return tag in ("", "latest")


# An image handed to a container as an argument, e.g. prometheus-operator's
# --prometheus-config-reloader=quay.io/prometheus-operator/prometheus-config-reloader:v0.93.0.
# Case-insensitive: the AI gateway's controller takes `--extProcImage=` (ai-gateway
# manifests/charts/ai-gateway-helm/templates/deployment.yaml@v1.1.0).
_ARG_IMAGE = re.compile(r"^--[\w-]*image[\w-]*=|^--prometheus-config-reloader=", re.I)


def _images(obj: Any) -> Iterator[str]:
    """Image references anywhere in an object, including JSON held in ConfigMap data and images
    passed to a container as ``--...image...=REF`` arguments."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key == "image" and isinstance(value, str) and _looks_like_image(value):
                yield value
            elif key == "args" and isinstance(value, list):
                for arg in value:
                    if isinstance(arg, str) and _ARG_IMAGE.match(arg) and _looks_like_image(arg.split("=", 1)[1]):
                        yield arg.split("=", 1)[1]
            elif isinstance(value, str) and value.lstrip().startswith("{"):
                with contextlib.suppress(json.JSONDecodeError):
                    yield from list(_images(json.loads(value)))
            elif isinstance(value, str) and "\n" in value and "image:" in value:
                # YAML held in ConfigMap data: Envoy Gateway's own configuration names the
                # rate-limit service's image (gateway-helm templates/_helpers.tpl@v1.9.0).
                with contextlib.suppress(yaml.YAMLError):
                    yield from list(_images(yaml.load(value, Loader=YamlLoader)))
            else:
                yield from _images(value)
    elif isinstance(obj, list):
        for item in obj:
            yield from _images(item)


def _looks_like_image(value: str) -> bool:
    return bool(re.fullmatch(r"[a-z0-9][\w.\-/]*(?::[\w.\-]+)?(?:@sha256:[0-9a-f]{64})?", value)) and (
        "/" in value or ":" in value)

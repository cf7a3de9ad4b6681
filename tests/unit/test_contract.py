"""The render check (inferbox.bootstrap.contract) against fixture charts the tests own, one per
defect class the pinned upstream charts showed: templates gated off by default, a renamed
workload, an unknown values key, an Ingress whose class nothing creates, KServe's ingress
config out of step with our hosts, a CRD in a chart's crds/ folder. Each time the check must
fail naming the phase and the object or key, and pass once the cause is fixed.

These render with a real helm (`helm template`); the upstream charts themselves are checked
by `invoke charts-verify` (see the README), never copied into the tests.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from inferbox.bootstrap import contract
from inferbox.bootstrap.charts import load_chart, unknown_values
from inferbox.bootstrap.plan import CheckKind, ClusterStep, HealthCheck, Phase, Plan
from inferbox.hints import invoke
from inferbox.models.hosts import IngressNaming
from inferbox.runner import ShellRunner
from inferbox.tools.helm import ChartSource, Helm

CHARTS = Path(__file__).resolve().parent.parent / "fixtures" / "charts"
CONTRACT = CHARTS / "contract"
CLUSTER = ClusterStep("existing", "t", "t", "-", gpu=False)
KUBE_VERSION = "1.36.0"
ISTIO_CLASS = {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": {"name": "istio"},
               "spec": {"controller": "istio.io/ingress-controller"}}


@pytest.fixture
def helm(helm_cli: Path) -> Helm:
    return Helm(ShellRunner(), str(helm_cli))


def phase(chart: Path, tmp_path: Path, *, name: str | None = None, values: dict[str, Any] | None = None,
          checks: tuple[HealthCheck, ...] = (), set_values: dict[str, str] | None = None,
          manifests: tuple[str, ...] = (), depends_on: tuple[str, ...] = ()) -> Phase:
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    name = name or meta["name"]
    values_file = tmp_path / f"{name}.yaml"
    values_file.write_text(yaml.safe_dump(values or {}))
    return Phase(name=name, release=name, namespace="ns-" + name, chart_key=name, chart=ChartSource(str(chart), None),
                 chart_name=meta["name"], chart_version=meta["version"], values_file=values_file, checks=checks,
                 set_values=set_values or {}, manifests=manifests, depends_on=depends_on)


def check(helm: Helm, *phases: Phase, runtimes: dict[str, str] | None = None,
          extra: dict[str, list[dict[str, Any]]] | None = None,
          naming: IngressNaming | None = None) -> contract.ContractReport:
    return contract.verify(Plan(CLUSTER, phases), helm, kube_version=KUBE_VERSION, runtimes=runtimes or {},
                           manifests=lambda p: list((extra or {}).get(p.name, [])), naming=naming or IngressNaming())


def lines(report: contract.ContractReport) -> list[str]:
    return [str(p) for p in report.problems]


# -- templates gated off by default --------------------------------------------------------------
RUNTIME_CHECK = HealthCheck(CheckKind.RESOURCE_EXISTS, "fixture-runtime", api_version="serving.kserve.io/v1alpha1",
                            resource_kind="ClusterServingRuntime")


def test_a_gated_off_template_fails_the_health_target_and_the_catalog_runtime(helm: Helm, tmp_path: Path) -> None:
    runtimes = {"fixture-runtime": "models/catalog.yaml: models.iris.runtime"}
    report = check(helm, phase(CONTRACT / "gated", tmp_path, name="runtimes", checks=(RUNTIME_CHECK,)),
                   runtimes=runtimes)
    assert lines(report) == [
        "runtimes: clusterservingruntime fixture-runtime exists: no ClusterServingRuntime fixture-runtime is "
        "rendered (the chart renders no ClusterServingRuntime with these values)",
        "runtimes: ClusterServingRuntime fixture-runtime: models/catalog.yaml: models.iris.runtime needs it, but no "
        "phase renders it (no ClusterServingRuntime is rendered at all: are the chart's runtimes switched on?)",
    ]
    with pytest.raises(contract.ContractError, match="runtimes: clusterservingruntime fixture-runtime exists"):
        report.raise_for_problems()

    fixed = check(helm, phase(CONTRACT / "gated", tmp_path, name="runtimes", checks=(RUNTIME_CHECK,),
                              values={"servingruntime": {"enabled": True}}), runtimes=runtimes)
    assert fixed.problems == []
    assert fixed.images() == {"runtimes": ["example.invalid/fixture-server:1"]}


# -- a renamed workload ----------------------------------------------------------------------------
def test_a_renamed_deployment_is_named_with_what_is_rendered(helm: Helm, tmp_path: Path) -> None:
    app = phase(CHARTS / "demo-app", tmp_path, name="app", checks=(
        HealthCheck(CheckKind.DEPLOYMENT_AVAILABLE, "app-controller", "ns-app"),
        HealthCheck(CheckKind.DEPLOYMENT_AVAILABLE, "app", "ns-app"),
        HealthCheck(CheckKind.DEPLOYMENT_AVAILABLE, "app", "elsewhere"),
    ))
    assert lines(check(helm, app)) == [
        "app: deployment ns-app/app-controller Available: no Deployment ns-app/app-controller is rendered "
        "(rendered Deployments: ns-app/app)",
        "app: deployment elsewhere/app Available: no Deployment elsewhere/app is rendered "
        "(rendered Deployments: ns-app/app)",
    ]


def test_a_webhook_target_needs_its_service_and_a_configuration_calling_it(helm: Helm, tmp_path: Path) -> None:
    webhook = HealthCheck(CheckKind.WEBHOOK_READY, "app", "ns-app", probe={"kind": "ConfigMap"})
    assert lines(check(helm, phase(CHARTS / "demo-app", tmp_path, name="app", checks=(webhook,)))) == [
        "app: webhook service ns-app/app has ready endpoints and answers a dry-run ConfigMap: "
        "no webhook configuration calls that Service"]
    configuration = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
                     "metadata": {"name": "app"},
                     "webhooks": [{"name": "app.inferbox.test", "admissionReviewVersions": ["v1"],
                                   "sideEffects": "None",
                                   "clientConfig": {"service": {"name": "app", "namespace": "ns-app"}}}]}
    assert check(helm, phase(CHARTS / "demo-app", tmp_path, name="app", checks=(webhook,)),
                 extra={"app": [configuration]}).problems == []


def test_a_statefulset_made_by_prometheus_operator_counts_when_its_prometheus_is_rendered(
        helm: Helm, tmp_path: Path) -> None:
    sts = HealthCheck(CheckKind.STATEFULSET_READY, "prometheus-main", "ns-app")
    prometheus = {"apiVersion": "monitoring.coreos.com/v1", "kind": "Prometheus", "metadata": {"name": "main"}}
    assert len(check(helm, phase(CHARTS / "demo-app", tmp_path, name="app", checks=(sts,))).problems) == 1
    assert check(helm, phase(CHARTS / "demo-app", tmp_path, name="app", checks=(sts,)),
                 extra={"app": [prometheus]}).problems == []


# -- unknown values keys ---------------------------------------------------------------------------
def test_unknown_values_keys_are_named_with_their_file(helm: Helm, tmp_path: Path) -> None:
    values = {"replcias": 2, "nested": {"known": 2, "unkown": 1, "deeper": {"leaf": False, "leef": True}},
              "child": {"port": 9090, "prot": 1}, "declared": {"only": "x", "other": "y"}}
    report = check(helm, phase(CONTRACT / "values-chart", tmp_path, name="vals", values=values,
                               set_values={"nested.typo": "1"}))
    file = f"{tmp_path.name}/vals.yaml"  # as helm-values/<phase>.yaml is named
    assert sorted(lines(report)) == sorted(
        f"vals: values key {key} ({origin}): chart values-chart 0.1.0 and its subcharts neither define nor "
        "declare it in their schema: Helm would ignore it silently"
        for key, origin in [("replcias", file), ("nested.unkown", file), ("nested.deeper.leef", file),
                            ("nested.typo", "--set by the plan"), ("child.prot", file), ("declared.other", file)])


def test_a_charts_own_defaults_are_all_known() -> None:
    """The check's own consistency: every key a chart ships in its values.yaml means something."""
    for chart in (CONTRACT / "values-chart", CONTRACT / "ingress-app", CONTRACT / "gated", CHARTS / "demo-app"):
        info = load_chart(chart)
        assert unknown_values(info.defaults, info) == [], chart.name


def test_keys_known_by_parent_defaults_schema_refs_templates_and_globals(helm: Helm, tmp_path: Path) -> None:
    values = {
        "child": {"enabled": False, "extra": True},  # the parent's defaults under the subchart's name
        "image": {"registry": "r.example", "tag": "1"},  # declared through a schema $ref
        "profile": "demo", "pdb": {"maxUnavailable": 2}, "topology": {"zone": "a"},  # read by templates only
        "global": {"hub": "h.example", "registry": "read-by-the-subchart"},
        "ports": [{"name": "http", "port": 8080}],
    }
    assert check(helm, phase(CONTRACT / "values-chart", tmp_path, name="vals", values=values)).problems == []
    typos = {"child": {"enabeld": False}, "image": {"registy": "r"}, "pdb": {"maxUnavaliable": 1},
             "topology": {"zoen": "a"}, "global": {"hubb": "h"}}
    report = check(helm, phase(CONTRACT / "values-chart", tmp_path, name="vals", values=typos))
    assert sorted(p.subject.split(" (")[0] for p in report.problems) == [
        "values key child.enabeld", "values key global.hubb", "values key image.registy",
        "values key pdb.maxUnavaliable", "values key topology.zoen"]


def test_a_typo_inside_a_subtree_a_template_copies_is_caught_by_the_object_schema(helm: Helm,
                                                                                 tmp_path: Path) -> None:
    values = {"ports": [{"name": "http", "port": 80, "nodeprot": 30080}]}
    report = check(helm, phase(CONTRACT / "values-chart", tmp_path, name="vals", values=values))
    # `ports` is handed whole to toYaml, so no values rule can see inside it; the strict
    # Kubernetes schema of the rendered Service does.
    assert lines(report) == ["vals: Service vals: spec.ports[0]: Additional properties are not allowed "
                             "('nodeprot' was unexpected)"]


def test_keys_the_chart_takes_are_not_reported(helm: Helm, tmp_path: Path) -> None:
    values = {
        "replicas": 3, "nested": {"deeper": {"leaf": False}},
        "nodeSelector": {"nvidia.com/gpu.present": "true"},  # free-form: an empty map by default
        "mesh": {"accessLogFile": "/dev/stdout"},  # handed whole to toYaml
        "legacy": {"replicas": 2},  # an alias of the root (mustMergeOverwrite $.Values (index $.Values "legacy"))
        "declared": {"only": "x"}, "labels": {"team": "a"},  # declared in values.schema.json
        "child": {"resources": {"requests": {"cpu": "1"}}, "port": 1},  # the subchart's own keys
        "global": {"hub": "h.example"},  # a global some chart defines
    }
    report = check(helm, phase(CONTRACT / "values-chart", tmp_path, name="vals", values=values))
    assert report.problems == []
    assert report.renders["vals"].find("ConfigMap", "vals-values") is not None


# -- Ingress classes -------------------------------------------------------------------------------
def test_an_ingress_whose_class_nothing_creates_fails(helm: Helm, tmp_path: Path) -> None:
    app = phase(CONTRACT / "ingress-app", tmp_path, name="routes")
    assert lines(check(helm, app)) == [
        "routes: Ingress ns-routes/routes: routes need IngressClass 'istio', which no phase renders: "
        "Istio serves no route for it"]
    gateway = phase(CHARTS / "demo-app", tmp_path, name="gateway")
    assert check(helm, app, gateway, extra={"gateway": [ISTIO_CLASS]}).problems == []
    foreign = {**ISTIO_CLASS, "spec": {"controller": "k8s.io/ingress-nginx"}}
    assert lines(check(helm, app, gateway, extra={"gateway": [foreign]})) == [
        "routes: Ingress ns-routes/routes: IngressClass 'istio' names controller 'k8s.io/ingress-nginx', "
        "not Istio's 'istio.io/ingress-controller'"]


def test_kserve_standard_mode_needs_the_class_of_its_ingress_config(helm: Helm, tmp_path: Path) -> None:
    # Only the ConfigMap is looked at: its Ingress template renders an Ingress too, so give that
    # a class that exists and watch the KServe rule alone.
    values = {"className": "kserve-class", "kserveConfig": {"enabled": True}}
    kserve = phase(CONTRACT / "ingress-app", tmp_path, name="kserve", values=values)
    problems = lines(check(helm, kserve))
    assert ("kserve: ConfigMap inferenceservice-config ingress.ingressClassName (deployment mode Standard): "
            "routes need IngressClass 'kserve-class', which no phase renders: Istio serves no route for it") in problems
    knative = phase(CONTRACT / "ingress-app", tmp_path, name="kserve",
                    values={"className": "istio", "kserveConfig": {"enabled": True, "deploymentMode": "Knative"}})
    # Knative mode routes through Knative's own gateway: the class rule is the Ingress' alone.
    assert lines(check(helm, knative)) == [
        "kserve: Ingress ns-kserve/kserve: routes need IngressClass 'istio', which no phase renders: "
        "Istio serves no route for it"]


def test_kserve_hosts_must_be_the_hosts_inferbox_computes(helm: Helm, tmp_path: Path) -> None:
    values = {"kserveConfig": {"enabled": True, "domainTemplate": "{{ .Name }}.{{ .Namespace }}.{{ .IngressDomain }}",
                               "domain": "models.internal"}}
    kserve = phase(CONTRACT / "ingress-app", tmp_path, name="kserve", values=values)
    problems = lines(check(helm, kserve, extra={"kserve": [ISTIO_CLASS]}))
    assert problems == [
        "kserve: ConfigMap inferenceservice-config ingress.domainTemplate: KServe will use "
        "'{{ .Name }}.{{ .Namespace }}.{{ .IngressDomain }}', inferbox computes hosts with "
        "'{{ .Name }}-{{ .Namespace }}.{{ .IngressDomain }}' (inferbox.models.hosts reads helm-values/kserve.yaml)",
        "kserve: ConfigMap inferenceservice-config ingress.ingressDomain: KServe will use 'models.internal', "
        "inferbox computes hosts with 'example.com' (inferbox.models.hosts reads helm-values/kserve.yaml)"]
    agreeing = IngressNaming(domain="models.internal",
                             domain_template="{{ .Name }}.{{ .Namespace }}.{{ .IngressDomain }}")
    assert check(helm, kserve, extra={"kserve": [ISTIO_CLASS]}, naming=agreeing).problems == []


# -- crds/ folders ---------------------------------------------------------------------------------
def test_crds_folder_crds_are_found_whole_and_templated_ones_are_not(helm: Helm, tmp_path: Path) -> None:
    report = check(helm, phase(CONTRACT / "crd-folder-v2", tmp_path, name="gadgets", checks=(
        HealthCheck(CheckKind.CRD_ESTABLISHED, "gadgets.crdfolder.inferbox.test"),)))
    assert report.problems == []
    (crd,) = report.renders["gadgets"].crds_folder()
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert schema["properties"]["spec"]["properties"]["size"] == {"type": "integer"}
    # The templated CRDs of a chart are upgraded by helm itself: not in crds_folder().
    templated = check(helm, phase(CHARTS / "demo-crds", tmp_path, name="widgets"))
    assert [r.kind for r in templated.renders["widgets"].objects] == ["CustomResourceDefinition"]
    assert templated.renders["widgets"].crds_folder() == []


def test_a_later_phase_sees_the_apis_its_dependencies_crds_serve(tmp_path: Path, helm: Helm) -> None:
    chart = tmp_path / "asks"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: asks\nversion: 0.1.0\n")
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: asks}\n"
        "data: {gadgets: {{ .Capabilities.APIVersions.Has \"crdfolder.inferbox.test/v1/Gadget\" | quote }}}\n")
    crds = phase(CONTRACT / "crd-folder-v1", tmp_path, name="crds")
    report = check(helm, crds, phase(chart, tmp_path, name="asks", depends_on=("crds",)))
    assert report.renders["asks"].find("ConfigMap", "asks").obj["data"] == {"gadgets": "true"}
    alone = check(helm, phase(chart, tmp_path, name="asks"))
    assert alone.renders["asks"].find("ConfigMap", "asks").obj["data"] == {"gadgets": "false"}


def test_a_chart_that_fails_to_render_or_is_not_local_is_its_phases_problem(helm: Helm, tmp_path: Path) -> None:
    chart = tmp_path / "refuses"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: refuses\nversion: 0.1.0\n")
    (chart / "templates" / "x.yaml").write_text('{{ fail "set allowDefaultNamespace=true" }}\n')
    (problem,) = check(helm, phase(chart, tmp_path, name="picky")).problems
    assert (problem.phase, problem.subject) == ("picky", "chart refuses 0.1.0")
    assert "does not render with the phase's values" in problem.message
    assert "set allowDefaultNamespace=true" in problem.message
    remote = Phase(name="remote", release="remote", namespace="ns", chart_key="remote",
                   chart=ChartSource("oci://example.invalid/charts/remote", "1.0.0"), chart_name="remote",
                   chart_version="1.0.0", values_file=None)
    assert lines(check(helm, remote)) == [
        "remote: chart remote 1.0.0: oci://example.invalid/charts/remote is not a local chart: pull the pinned "
        f"charts first (`{invoke('charts-verify')}`)"]


def test_parse_manifests_keeps_sources_and_reads_a_bare_equals_sign() -> None:
    text = ("---\n# Source: top/charts/crds/crds/a.yaml\n# a header comment\n---\n"
            "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: as.x.io}\n"
            "spec:\n  group: x.io\n  versions:\n    - name: v1\n      schema:\n        openAPIV3Schema:\n"
            "          type: object\n          enum:\n            - =\n"
            "---\n# Source: top/templates/cm.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\n")
    crd, cm = contract.parse_manifests(text)
    assert (crd.source, crd.from_crds_folder, cm.source, cm.from_crds_folder) == (
        "top/charts/crds/crds/a.yaml", True, "top/templates/cm.yaml", False)
    assert crd.obj["spec"]["versions"][0]["schema"] == {"openAPIV3Schema": {}}  # not read for the checks
    assert crd.full()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["enum"] == ["="]


def test_images_come_from_pod_specs_arguments_and_json_config() -> None:
    obj = {"kind": "Deployment", "spec": {"template": {"spec": {"containers": [{
        "image": "quay.io/prometheus-operator/prometheus-operator:v0.93.0",
        "args": ["--prometheus-config-reloader=quay.io/prometheus-operator/prometheus-config-reloader:v0.93.0",
                 "--log-level=info"]}]}}}}
    config = {"kind": "ConfigMap", "data": {"storageInitializer": '{"image": "kserve/storage-initializer:v1"}'}}
    images = contract.PhaseRender(None, [contract.Rendered(obj, ""), contract.Rendered(config, "")],  # type: ignore[arg-type]
                                  0.0).images()
    assert images == ["kserve/storage-initializer:v1", "quay.io/prometheus-operator/prometheus-config-reloader:v0.93.0",
                      "quay.io/prometheus-operator/prometheus-operator:v0.93.0"]
    assert [contract.mutable_image(i) for i in ("vllm/vllm-openai:latest", "kserve/art-explainer",
                                                "registry:5000/a/b", "a/b:1", "a/b@sha256:" + "0" * 64)] == [
        True, True, True, False, False]


def test_the_refusal_names_the_command_that_checks_the_same_charts_again() -> None:
    problem = contract.Problem("istiod", "values key pilot.x (helm-values/istiod.yaml)", "unknown")
    with pytest.raises(contract.ContractError, match=rf"then `{re.escape(invoke('charts-verify --bundle /b'))}`$"):
        contract.ContractReport(problems=[problem]).raise_for_problems("charts-verify --bundle /b")


def _chart(folder: Path, templates: dict[str, str], values: str) -> Path:
    folder.mkdir()
    (folder / "Chart.yaml").write_text(f"apiVersion: v2\nname: {folder.name}\nversion: 1.0.0\n")
    (folder / "values.yaml").write_text(values)
    (folder / "templates").mkdir()
    for name, text in templates.items():
        (folder / "templates" / name).write_text(text)
    return folder


def test_a_subtree_handed_on_through_a_variable_takes_any_key(tmp_path: Path) -> None:
    # Envoy Gateway merges its whole user configuration from a variable (gateway-helm
    # templates/envoy-gateway-config.yaml@v1.9.0); kiali-server hands on all of .Values minus one key.
    merged = _chart(tmp_path / "merged", {"cm.yaml": (
        "data:\n  c: |\n    {{- $user := .Values.config.gw }}\n    {{- $all := merge $user (dict) }}\n"
        "    {{- toYaml $all | nindent 4 }}\n    {{ .Values.other.x }}\n")},
        "config:\n  gw:\n    a: 1\nother: {x: 1}\n")
    info = load_chart(merged)
    assert unknown_values({"config": {"gw": {"extensionManager": {"x": 1}}}}, info) == []
    assert unknown_values({"other": {"typo": 1}}, info) == ["other.typo"]  # elsewhere still checked
    whole = _chart(tmp_path / "whole", {"cm.yaml": '{{- $cm := omit .Values "route" }}\n{{ toYaml $cm }}\n'},
                   "auth: {strategy: token}\n")
    assert unknown_values({"external_services": {"tracing": {"use_grpc": True}}}, load_chart(whole)) == []
    # A variable read, not handed on whole, does not open its subtree.
    read = _chart(tmp_path / "read", {"cm.yaml": "{{- $c := .Values.config }}\n{{ $c.a }}\n"}, "config: {a: 1}\n")
    assert unknown_values({"config": {"typo": 1}}, load_chart(read)) == ["config.typo"]


def test_images_in_yaml_config_and_camel_case_arguments_are_found() -> None:
    controller = {"kind": "Deployment", "spec": {"template": {"spec": {"containers": [{
        "image": "docker.io/envoyproxy/ai-gateway-controller:v1.1.0",
        "args": ["--extProcImage=docker.io/envoyproxy/ai-gateway-extproc:v1.1.0", "--port=1063"]}]}}}}
    config = {"kind": "ConfigMap", "data": {"envoy-gateway.yaml": (
        "provider:\n  kubernetes:\n    rateLimitDeployment:\n      container:\n"
        "        image: docker.io/envoyproxy/ratelimit:17b1956c\n")}}
    images = contract.PhaseRender(None, [contract.Rendered(controller, ""), contract.Rendered(config, "")],  # type: ignore[arg-type]
                                  0.0).images()
    assert images == ["docker.io/envoyproxy/ai-gateway-controller:v1.1.0",
                      "docker.io/envoyproxy/ai-gateway-extproc:v1.1.0", "docker.io/envoyproxy/ratelimit:17b1956c"]


def test_gateway_api_kinds_are_custom_resources_not_unknown_kubernetes_kinds() -> None:
    from inferbox.validate import SchemaValidator

    gateway = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway", "metadata": {"name": "g"},
               "spec": {"gatewayClassName": "c", "listeners": []}}
    unknown = {"apiVersion": "apps/v1", "kind": "Deploymnet", "metadata": {"name": "d"}}
    report = SchemaValidator(KUBE_VERSION).check([gateway, unknown])
    assert report.unchecked == ["Gateway g"]
    assert [p.object for p in report.problems] == ["Deploymnet d"]


def test_envoy_gateways_rate_limit_deployment_counts_as_rendered_when_configured() -> None:
    def render(config: str) -> contract.PhaseRender:
        cm = {"kind": "ConfigMap", "metadata": {"name": "envoy-gateway-config", "namespace": "eg"},
              "data": {"envoy-gateway.yaml": config}}
        eg = phase_of("eg", checks=(HealthCheck(CheckKind.DEPLOYMENT_AVAILABLE, "envoy-ratelimit", "eg"),))
        return contract.PhaseRender(eg, [contract.Rendered(cm, "")], 0.0)

    assert contract._check_targets(render("rateLimit:\n  backend: {type: Redis}\n")) == []
    [problem] = contract._check_targets(render("provider: {type: Kubernetes}\n"))
    assert "no Deployment eg/envoy-ratelimit is rendered" in problem.message


def phase_of(name: str, checks: tuple[HealthCheck, ...]) -> Phase:
    return Phase(name=name, release=name, namespace=name, chart_key=name, chart=ChartSource(name, None),
                 chart_name=name, chart_version="1", values_file=None, checks=checks)

"""In-cluster Locust manifests: golden files, Kubernetes schema validation, bounds and security.

Applying them needs a cluster with the platform's gateway; here they are rendered and checked
(the goldens in tests/golden/load/ show every change; ``pytest --update-goldens`` rewrites them).
The locustfiles inside the ConfigMap are replaced by a marker in the goldens (their own diffs are
reviewed as code) and checked here to be the files of load/ verbatim.
"""

from __future__ import annotations

import copy
import io
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console

from inferbox.config import Settings, load_versions
from inferbox.errors import ConfigError
from inferbox.load import incluster
from inferbox.load.app import run_loadtest
from inferbox.load.profiles import default_profiles_path, load_profiles
from inferbox.models.hosts import IngressNaming
from inferbox.validate import SchemaProblem, SchemaValidationError

IMAGE = "locustio/locust:TEST"  # the real tag is the installed Locust's version


def kubernetes(root: Path) -> str:
    return load_versions(root / "versions.toml").kubernetes.version


def plan(root: Path, profile: str, *, workers: int, token: str | None, model: str = "sklearn-iris",
         tenant: str | None = "tenant-a") -> incluster.ClusterPlan:
    profiles = load_profiles(default_profiles_path(root)).profiles
    naming = IngressNaming.from_values(root / "helm-values" / "kserve.yaml")
    return incluster.ClusterPlan(run_id=f"20260101t000000-{profile}", profile=profiles[profile], model=model,
                                 tenant=tenant, workers=workers, image=IMAGE, pss_version="v1.36", token=token,
                                 host_header=naming.isvc_host(model, tenant) if tenant else None)


def rendered(root: Path, the_plan: incluster.ClusterPlan) -> list[dict[str, Any]]:
    return incluster.render(the_plan, manifests=root / "manifests", load_dir=root / "load")


def normalised(objects: list[dict[str, Any]]) -> str:
    out = copy.deepcopy(objects)
    for obj in out:
        if obj["kind"] == "ConfigMap":
            obj["data"] = {name: (f"<contents of load/{name}>" if name.endswith(".py") else text)
                           for name, text in obj["data"].items()}
    return incluster.to_yaml(out)


CASES = {
    "smoke-1-worker.yaml": ("smoke", 1, None, "sklearn-iris", "tenant-a"),
    "spike-3-workers-token.yaml": ("spike", 3, "header.payload.signature", "sklearn-iris", "tenant-a"),
    "chat-steady-4-workers-token.yaml": ("chat-steady", 4, "header.payload.signature", "qwen-small", "team-llm"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_manifests_match_goldens_and_validate(root: Path, golden: Callable[[str, str], None], case: str) -> None:
    profile, workers, token, model, tenant = CASES[case]
    objects = rendered(root, plan(root, profile, workers=workers, token=token, model=model, tenant=tenant))
    golden(f"load/{case}", normalised(objects))
    incluster.validate(objects, kubernetes(root))  # raises on any schema problem


def test_objects_are_ordered_bounded_and_request_resources(root: Path) -> None:
    objects = rendered(root, plan(root, "spike", workers=3, token="t0ken"))
    assert [o["kind"] for o in objects] == ["Namespace", "Secret", "ConfigMap", "Service", "Job", "Job"]
    assert all(o["metadata"].get("namespace", "loadtest") == "loadtest" for o in objects)
    jobs = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Job"}
    master, workers = jobs["locust-master-20260101t000000-spike"], jobs["locust-worker-20260101t000000-spike"]
    assert workers["spec"]["parallelism"] == workers["spec"]["completions"] == 3
    for job in (master, workers):
        spec = job["spec"]
        assert spec["activeDeadlineSeconds"] > 0 and spec["ttlSecondsAfterFinished"] > 0
        pod = spec["template"]["spec"]
        assert pod["restartPolicy"] == "Never" and pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"]:
            assert container["resources"]["requests"] and container["resources"]["limits"]
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert container["image"] == IMAGE
    script = master["spec"]["template"]["spec"]["containers"][0]["args"][0]
    assert "--master --headless --expect-workers 3" in script
    assert "/load/v1_predict.py,/load/step_shape.py" in script
    assert "--users" not in script, "a step shape sets the users itself"
    namespace = objects[0]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_the_token_lives_only_in_the_secret(root: Path) -> None:
    objects = rendered(root, plan(root, "smoke", workers=2, token="s3cret-jwt"))
    holders = [o["kind"] for o in objects if "s3cret-jwt" in yaml.safe_dump(o)]
    assert holders == ["Secret"]
    without = rendered(root, plan(root, "smoke", workers=2, token=None))
    assert "Secret" not in [o["kind"] for o in without]
    env = [e["name"] for o in without if o["kind"] == "Job"
           for e in o["spec"]["template"]["spec"]["containers"][0]["env"]]
    assert "INFERBOX_LOAD_TOKEN" not in env


def test_the_configmap_carries_the_locustfiles_and_the_bounds(root: Path) -> None:
    objects = rendered(root, plan(root, "chat-steady", workers=2, token=None, model="qwen-small", tenant="team-llm"))
    data = next(o for o in objects if o["kind"] == "ConfigMap")["data"]
    assert set(data) == {"loadkit.py", "openai_chat.py", "config.json"}
    for name in ("loadkit.py", "openai_chat.py"):
        assert data[name] == (root / "load" / name).read_text()
    config = yaml.safe_load(data["config.json"])
    assert config["max_requests"] == 20000 and config["max_duration_s"] == 600 and config["workers"] == 2
    # KServe's default domainTemplate, {{ .Name }}-{{ .Namespace }}.{{ .IngressDomain }}.
    assert config["host_header"] == "qwen-small-team-llm.example.com"
    assert config["output_dir"] == "/results"


def test_a_schema_problem_is_reported_with_object_and_field(root: Path) -> None:
    objects = rendered(root, plan(root, "smoke", workers=1, token=None))
    broken = copy.deepcopy(objects)
    job = next(o for o in broken if o["kind"] == "Job")
    job["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = {"cores": 1}
    job["spec"]["parallelism"] = "two"
    with pytest.raises(SchemaValidationError) as caught:
        incluster.validate(broken, kubernetes(root))
    problems: list[SchemaProblem] = caught.value.problems
    assert {p.path for p in problems} >= {"spec.parallelism"}
    assert all(p.object.startswith("Job loadtest/locust-") for p in problems)


def test_dry_run_prints_validated_manifests(make_settings: Callable[..., Settings]) -> None:
    out = io.StringIO()
    result = run_loadtest(make_settings(), None, None, "smoke", workers=2, in_cluster=True, dry_run=True,
                          console=Console(file=out, width=200))
    assert result is None
    objects = list(yaml.safe_load_all(out.getvalue()))
    assert [o["kind"] for o in objects] == ["Namespace", "ConfigMap", "Service", "Job", "Job"]
    assert objects[-1]["spec"]["parallelism"] == 2
    assert objects[-1]["spec"]["template"]["spec"]["containers"][0]["image"].startswith("locustio/locust:")


def test_in_cluster_needs_a_tenant_serving_the_model(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ConfigError, match=re.escape("profiles.chat-smoke.tenants: names no tenant: pass --tenant")):
        run_loadtest(make_settings(), None, None, "chat-smoke", in_cluster=True, dry_run=True,
                     console=Console(file=io.StringIO()))
    # tenant-a serves smollm2-local (the profile's first model) but not qwen-small.
    not_served = "tenants/tenant-a.yaml: models: qwen-small is not one of tenant-a's"
    with pytest.raises(ConfigError, match=re.escape(not_served)):
        run_loadtest(make_settings(), "qwen-small", "tenant-a", "chat-smoke", in_cluster=True, dry_run=True,
                     console=Console(file=io.StringIO()))


def test_the_in_cluster_path_does_not_import_the_task_layer(root: Path) -> None:
    """incluster and app shared their run helpers by importing each other; both now use load/runs.py."""
    import ast

    tree = ast.parse((root / "inferbox" / "load" / "incluster.py").read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert "inferbox.load.app" not in imported and "inferbox.load.runs" in imported


def test_an_llm_is_loaded_through_the_ai_gateway_where_it_runs(make_settings: Callable[..., Settings]) -> None:
    from inferbox import aigateway
    from inferbox.load.runs import Selection
    from inferbox.load.target import IN_CLUSTER_GATEWAY_URL, KSERVE_OPENAI_PREFIX
    from inferbox.models.catalog import default_catalog_path, load_catalog

    settings = make_settings()
    catalog = load_catalog(default_catalog_path(settings.root))
    profiles = load_profiles(default_profiles_path(settings.root)).profiles

    def planned(model: str, profile: str, *, ai_gateway: bool) -> incluster.ClusterPlan:
        selection = Selection(profile=profiles[profile], model=catalog.get(model), tenant="tenant-a")
        return incluster.plan_for(settings, selection, workers=1, token=None, ai_gateway=ai_gateway)

    llm = planned("smollm2-local", "chat-smoke", ai_gateway=True)
    # The model admits inference from the AI gateway alone: its Service, the tenant's OpenAI host, its root.
    assert (llm.base_url, llm.host_header, llm.openai_prefix) == (
        aigateway.IN_CLUSTER_URL, "tenant-a.ai.example.com", "")
    assert llm.spec(Path("/load")).openai_prefix == ""
    without = planned("smollm2-local", "chat-smoke", ai_gateway=False)
    assert (without.base_url, without.host_header, without.openai_prefix) == (
        IN_CLUSTER_GATEWAY_URL, "smollm2-local-tenant-a.example.com", KSERVE_OPENAI_PREFIX)
    iris = planned("sklearn-iris", "smoke", ai_gateway=True)  # predictive models keep the ingress path
    assert (iris.base_url, iris.host_header) == (IN_CLUSTER_GATEWAY_URL, "sklearn-iris-tenant-a.example.com")


def test_dry_run_is_for_the_in_cluster_manifests_only(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ConfigError, match="with --in-cluster"):
        run_loadtest(make_settings(), None, None, "smoke", dry_run=True, console=Console(file=io.StringIO()))


def test_a_dry_run_for_an_llm_says_it_would_spend_the_budgets(make_settings: Callable[..., Settings]) -> None:
    out = io.StringIO()
    run_loadtest(make_settings(), "smollm2-local", "tenant-a", "chat-smoke", in_cluster=True, dry_run=True,
                 console=Console(file=out, width=400))
    text = out.getvalue()
    assert "this load spends tenant-a's token budgets (20000 total tokens per minute" in text
    assert "http://inferbox-ai.envoy-gateway-system.svc.cluster.local" in text and "tenant-a.ai.example.com" in text

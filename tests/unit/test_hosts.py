"""One function decides a model's host (inferbox.models.hosts), with KServe's rules: the domain
template, and DNS-1123 label lengths. deploy-model and tenants-apply refuse a name KServe would
reject, before anything is applied, naming the file and field."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.console import Console

from inferbox.config import Settings
from inferbox.errors import ConfigError
from inferbox.models.catalog import default_catalog_path, load_catalog
from inferbox.models.deploy import ModelRefused, ModelTenant, deploy_model
from inferbox.models.hosts import IngressNaming, ingress_naming
from inferbox.render import Renderer
from inferbox.tenants.app import tenants_apply

LONG_TENANT = "analytics-platform-customer-churn-staging-eu1"  # 45 characters, a valid tenant name


class NoCluster:
    """Any use of the cluster fails the test: the refusal must come before it."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"the cluster was used ({name}) although the request should be refused first")


def test_hosts_follow_kserves_default_domain_template(make_settings: Callable[..., Settings]) -> None:
    naming = ingress_naming(make_settings())
    assert naming == IngressNaming("example.com", "{{ .Name }}-{{ .Namespace }}.{{ .IngressDomain }}")
    assert naming.isvc_host("sklearn-iris", "tenant-a") == "sklearn-iris-tenant-a.example.com"
    assert naming.predictor_host("sklearn-iris", "tenant-a") == "sklearn-iris-predictor-tenant-a.example.com"
    assert naming.host_problems("sklearn-iris", "tenant-a") == []


def test_a_label_over_63_characters_is_refused_with_its_length() -> None:
    problems = IngressNaming().host_problems("sklearn-iris", LONG_TENANT)
    assert problems == [
        "host label 'sklearn-iris-predictor-analytics-platform-customer-churn-staging-eu1' is 68 characters; "
        "KServe refuses labels over 63 (DNS-1123): shorten the model or tenant name (together at most 52)"]
    assert IngressNaming().host_problems("a" * 26, "b" * 26) == []  # 26 + 26 + len("-predictor-") = 63


def test_values_overrides_and_templates_inferbox_cannot_evaluate(tmp_path: Path) -> None:
    values = tmp_path / "kserve.yaml"
    values.write_text("kserve:\n  controller:\n    gateway:\n      domain: models.internal\n"
                      "      domainTemplate: '{{ .Name }}.{{ .Namespace }}.{{ .IngressDomain }}'\n")
    assert IngressNaming.from_values(values).isvc_host("m", "t") == "m.t.models.internal"
    values.write_text("kserve:\n  controller:\n    gateway:\n"
                      "      domainTemplate: '{{ index .Annotations \"x\" }}.{{ .IngressDomain }}'\n")
    with pytest.raises(ConfigError) as caught:
        IngressNaming.from_values(values)
    assert caught.value.path == str(values)
    assert caught.value.problems[0][0] == "kserve.controller.gateway.domainTemplate"


def test_tenants_apply_refuses_a_model_whose_host_kserve_rejects(make_settings: Callable[..., Settings],
                                                                 root: Path, tmp_path: Path) -> None:
    text = (root / "tenants" / "tenant-a.yaml").read_text().replace("name: tenant-a", f"name: {LONG_TENANT}")
    (tmp_path / f"{LONG_TENANT}.yaml").write_text(text)
    with pytest.raises(ConfigError) as caught:
        tenants_apply(make_settings(), Console(file=io.StringIO()), directory=tmp_path, kube=NoCluster())  # type: ignore[arg-type]
    assert caught.value.path == f"tenants/{LONG_TENANT}.yaml"
    # Every listed model whose hosts KServe would refuse, each at its own field.
    assert [field for field, _ in caught.value.problems] == ["models[0]", "models[1]"]
    assert caught.value.problems[0][1].startswith("sklearn-iris: host label 'sklearn-iris-predictor-analytics")
    assert caught.value.problems[1][1].startswith("smollm2-local: host label")


def test_deploy_model_refuses_before_applying(make_settings: Callable[..., Settings], root: Path) -> None:
    catalog = load_catalog(default_catalog_path(root))
    tenant = ModelTenant(name=LONG_TENANT, namespace=LONG_TENANT, models=("sklearn-iris",))
    with pytest.raises(ModelRefused, match=r"sklearn-iris cannot be served in namespace analytics-platform-customer-"
                                           r"churn-staging-eu1 \(nothing was applied\):\n  host label .* is 68"):
        deploy_model(NoCluster(), catalog, "sklearn-iris", tenant, Renderer(root / "manifests"),  # type: ignore[arg-type]
                     naming=ingress_naming(make_settings()))

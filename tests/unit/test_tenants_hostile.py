"""Hostile and careless tenant files (issue 12, items 3-6): each is refused before anything is
applied, naming the file and the field, and nothing reaches the cluster."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from inferbox.config import Settings
from inferbox.errors import ConfigError
from inferbox.tenants import app
from inferbox.tenants.spec import INT64_MAX, TenantConfigError, parse_quantity
from tests.unit.test_tenants_spec import VALID, with_change


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


def problems(settings: Settings, folder: Path, doc: Any, name: str = "team-x") -> list[tuple[str, str, str]]:
    """Load ``doc`` as tenants/<name>.yaml the way every task does; the problems found."""
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    with pytest.raises(TenantConfigError) as err:
        app.load(settings, folder)
    return [(Path(e.path).name, field, message) for e in err.value.errors for field, message in e.problems]


# -- item 4: Kubernetes' quantity grammar, exactly ---------------------------------------------------

@pytest.mark.parametrize("text", [
    "\u0664",        # ARABIC-INDIC DIGIT FOUR: Python's Decimal reads it as 4
    "\u0968Gi",      # DEVANAGARI DIGIT TWO
    "\uff11",        # FULLWIDTH DIGIT ONE
    "1\u00a0Gi",     # a no-break space inside
    "1.5.2", "Gi", "1gi", "1KI", "0x10", "1_000", "", "+", "1e", "inf", "NaN",
])
def test_outside_the_grammar(text: str) -> None:
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        parse_quantity(text)


@pytest.mark.parametrize(("text", "value"), [
    ("4", Decimal(4)), ("500m", Decimal("0.5")), ("1.5", Decimal("1.5")), (".5", Decimal("0.5")),
    ("5.", Decimal(5)), ("8Gi", Decimal(8 * 2**30)), ("1e3", Decimal(1000)), ("1E-3", Decimal("0.001")),
    ("+2k", Decimal(2000)), ("100u", Decimal("0.0001")), ("3n", Decimal("3e-9")), ("2Ei", Decimal(2 * 2**60)),
])
def test_inside_the_grammar(text: str, value: Decimal) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize(("field", "value", "fragment"), [
    ("quotas.cpu", "\u0664", "ASCII digits only"),
    ("quotas.cpu", "1e30", "larger than Kubernetes handles"),
    ("quotas.cpu", "0.0001", "finer than 1m"),
    ("quotas.memory", "0.5", "finer than one byte"),
    ("quotas.memory", "100Ei", "larger than Kubernetes handles"),
    ("quotas.pods", 10**22, "less than or equal to 9223372036854775807"),
    ("quotas.pods", "20", "valid integer"),             # a string: int("\u0662\u0660") is 20 to Python
    ("quotas.pods", "\u0662\u0660", "valid integer"),
    ("quotas.pods", True, "valid integer"),
    (("quotas", "nvidia.com/gpu"), 10**30, "less than or equal to 9223372036854775807"),
    ("limitRange.default.cpu", "\u0661", "ASCII digits only"),
])
def test_quantities_and_counts(settings: Settings, tmp_path: Path, field: Any, value: Any, fragment: str) -> None:
    found = problems(settings, tmp_path, with_change(field, value))
    shown = field if isinstance(field, str) else ".".join(field)
    assert any(f == shown and fragment in m for _, f, m in found), found
    assert all(name == "team-x.yaml" for name, _, _ in found)


@pytest.mark.parametrize(("field", "value", "shown"), [
    ("quotas.cpu", "1025", "quotas.cpu"),
    ("quotas.memory", "17Ti", "quotas.memory"),
    (("quotas", "nvidia.com/gpu"), 65, "quotas.nvidia.com/gpu"),
    ("quotas.pods", 10_001, "quotas.pods"),
    ("quotas.inferenceServices", 1_001, "quotas.inferenceServices"),
])
def test_default_bounds(settings: Settings, tmp_path: Path, field: Any, value: Any, shown: str) -> None:
    doc = with_change(field, value)
    found = problems(settings, tmp_path, doc)
    assert [(f, "above the bound" in m and "bounds.toml" in m) for _, f, m in found] == [(shown, True)], found


def test_bounds_are_configurable(settings: Settings, tmp_path: Path) -> None:
    doc = with_change("quotas.pods", 20_000)
    assert problems(settings, tmp_path, doc)[0][1] == "quotas.pods"
    (tmp_path / "bounds.toml").write_text('[quotas]\npods = 50000\n')
    (tenant,) = app.load(settings, tmp_path)
    assert tenant.quotas.pods == 20_000
    (tmp_path / "bounds.toml").write_text('[quotas]\npods = 4\n')  # below VALID's 5
    assert problems(settings, tmp_path, VALID)[0][1:] == ("quotas.pods", "5 is above the bound 4 (" +
                                                          str(tmp_path / "bounds.toml") + ")")


@pytest.mark.parametrize(("text", "field", "fragment"), [
    ('[quotas]\ncpu = "\u0664"\n', "quotas.cpu", "ASCII digits only"),
    ("[quotas]\npods = 0\n", "quotas.pods", "greater than 0"),
    ("[quotas]\ngpus = 3\n", "quotas.gpus", "unknown key"),
    ("[limits]\npods = 3\n", "limits", "unknown key"),
    ("[quotas\n", "<syntax>", ""),
])
def test_bad_bounds_file(settings: Settings, tmp_path: Path, text: str, field: str, fragment: str) -> None:
    (tmp_path / "bounds.toml").write_text(text)
    (tmp_path / "team-x.yaml").write_text(yaml.safe_dump(VALID))
    with pytest.raises(ConfigError) as err:
        app.load(settings, tmp_path)
    found = err.value.problems
    assert err.value.path.endswith("bounds.toml")
    assert any(f == field and fragment in m for f, m in found), found


def test_shipped_bounds_are_the_defaults(settings: Settings) -> None:
    from inferbox.tenants.spec import Bounds, load_bounds
    assert load_bounds(app.tenants_dir(settings) / "bounds.toml") == Bounds()
    assert Bounds().pods < INT64_MAX


# -- item 5: models must be in the catalog -----------------------------------------------------------

def test_model_not_in_catalog(settings: Settings, tmp_path: Path) -> None:
    found = problems(settings, tmp_path, with_change("models", ["sklearn-iris", "gpt-17"]))
    assert [(n, f) for n, f, _ in found] == [("team-x.yaml", "models[1]")]
    assert "'gpt-17' is not in models/catalog.yaml" in found[0][2] and "sklearn-iris" in found[0][2]


# -- item 6: the platform's namespaces, derived from the plan and the code ---------------------------

def test_platform_namespaces_come_from_the_plan(settings: Settings) -> None:
    from dataclasses import replace

    from inferbox.bootstrap.phases import GPU_NAMESPACE, build_plan
    from inferbox.load.incluster import NAMESPACE

    reserved = app.platform_namespaces(settings)
    full = build_plan(replace(settings, knative=True, monitoring=True), gpu=True)
    assert {p.namespace for p in full.phases} <= reserved
    assert {GPU_NAMESPACE, NAMESPACE, "local-path-storage", "knative-serving"} <= reserved
    # The flags of this run do not matter: a tenant named like a phase turned off today would
    # collide with it tomorrow.
    assert app.platform_namespaces(replace(settings, knative=False, monitoring=False)) == reserved


@pytest.mark.parametrize("name", ["nvidia-gpu", "loadtest", "local-path-storage", "knative-serving", "monitoring",
                                  "istio-system", "cert-manager", "default", "kube-anything"])
def test_platform_namespace_is_not_a_tenant(settings: Settings, tmp_path: Path, name: str) -> None:
    found = problems(settings, tmp_path, with_change("name", name), name)
    assert [(n, f) for n, f, _ in found] == [(f"{name}.yaml", "name")], found
    assert "namespace the platform uses" in found[0][2]


# -- found by trying to break it ----------------------------------------------------------------------

@pytest.mark.parametrize(("field", "text", "read_as"), [
    ("quotas.cpu", "010", "8"), ("quotas.pods", "1:00", "60"), ("quotas.pods", "0b11", "3"),
    ("quotas.pods", "0x10", "16"), ("quotas.pods", "1_000", "1000"), ("quotas.cpu", "1_0.5", "10.5"),
])
def test_yaml_11_number_forms_are_refused(settings: Settings, tmp_path: Path, field: str, text: str,
                                          read_as: str) -> None:
    """YAML 1.1 would read them as other numbers than the file shows; quoted, they are strings."""
    body = yaml.safe_dump(with_change(field, "PLACEHOLDER"), sort_keys=False).replace("PLACEHOLDER", text)
    (tmp_path / "team-x.yaml").write_text(body)
    with pytest.raises(TenantConfigError) as err:
        app.load(settings, tmp_path)
    ((field_name, message),) = err.value.errors[0].problems
    assert field_name == "<syntax>" and f"{text!r} is a YAML 1.1 number form read as {read_as}" in message


@pytest.mark.parametrize(("field", "value", "fragment"), [
    ("callers.subjects", [123], "a caller is a string"),
    ("callers.groups", [True], "a caller is a string"),
    ("rateLimit", {"requestsPerSecond": 2**32}, "less than or equal to 4294967295"),
    ("rateLimit", {"requestsPerSecond": 5, "burst": 2**63 - 1}, "less than or equal to 4294967295"),
    ("labels", {"/x": "y"}, "prefix must be a DNS subdomain"),
    ("quotas.cpu", "1024.0000000000000000000000001", "finer than 1m"),  # beyond Decimal's default 28 digits
    ("quotas.cpu", "1024.001", "above the bound"),
    ("quotas.cpu", "1.0000000000000000000000000001", "finer than 1m"),
])
def test_more_hostile_values(settings: Settings, tmp_path: Path, field: str, value: Any, fragment: str) -> None:
    found = problems(settings, tmp_path, with_change(field, value))
    assert any(fragment in m for _, _, m in found), found


def test_cpu_bound_is_checked_in_millicores(settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "bounds.toml").write_text('[quotas]\ncpu = "9E"\n')  # 9e18 cores: 9e21 millicores
    with pytest.raises(ConfigError) as err:
        app.load(settings, tmp_path)
    assert err.value.problems[0][0] == "quotas.cpu" and "millicores" in err.value.problems[0][1]


def test_tenant_create_with_a_small_quota_fits_its_defaults(settings: Settings, tmp_path: Path) -> None:
    """The container defaults follow a small quota down instead of refusing it."""
    import io

    from rich.console import Console

    path = app.create_tenant(settings, Console(file=io.StringIO()),
                             app.NewTenant(name="team-q", cpu="250m", memory="128Mi"), apply=False, directory=tmp_path)
    (tenant,) = app.load(settings, tmp_path)
    assert path.exists() and tenant.limit_range.default.cpu == "250m" and tenant.limit_range.default.memory == "128Mi"
    assert tenant.limit_range.default_request.memory == "128Mi" and tenant.limit_range.default_request.cpu == "100m"
    with pytest.raises(ConfigError, match="tenants-apply --tenant team-q"):
        app.create_tenant(settings, Console(file=io.StringIO()), app.NewTenant(name="team-q"), apply=False,
                          directory=tmp_path)

"""The tenant file format: every shipped tenant validates; every mistake names its file and field."""

from __future__ import annotations

import io
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console

from inferbox.config import Settings
from inferbox.errors import ConfigError
from inferbox.tenants import app
from inferbox.tenants.keys import KeyStore
from inferbox.tenants.spec import TenantConfigError, load_tenants, parse_quantity

DELETE = object()
VALID: dict[str, Any] = {
    "name": "team-x",
    "displayName": "Team X",
    "quotas": {"cpu": "2", "memory": "4Gi", "pods": 5, "inferenceServices": 1},
    "limitRange": {"default": {"cpu": "500m", "memory": "512Mi"},
                   "defaultRequest": {"cpu": "100m", "memory": "128Mi"}},
    "models": ["sklearn-iris"],
    "callers": {"subjects": ["app"], "groups": ["team-x"]},
}


def write(folder: Path, name: str, data: Any) -> Path:
    path = folder / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def with_change(path: str | tuple[str, ...], value: Any, data: dict[str, Any] | None = None) -> dict[str, Any]:
    """A copy of VALID with ``a.b.c`` (or a tuple of keys) set to ``value`` (DELETE removes it)."""
    doc = yaml.safe_load(yaml.safe_dump(data or VALID))
    *parents, last = path.split(".") if isinstance(path, str) else path
    node = doc
    for part in parents:
        node = node[part]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return doc


def problems_of(tmp_path: Path, doc: Any, filename: str = "team-x.yaml") -> list[tuple[str, str, str]]:
    write(tmp_path, filename, doc)
    with pytest.raises(TenantConfigError) as err:
        load_tenants(tmp_path)
    return [(e.path, field, message) for e in err.value.errors for field, message in e.problems]


# -- the shipped tenants ---------------------------------------------------------------------------


def test_every_shipped_tenant_validates(root: Path) -> None:
    tenants = {t.name: t for t in load_tenants(root / "tenants", root=root)}
    assert set(tenants) == {"tenant-a", "tenant-b", "tenant-c"}
    assert tenants["tenant-a"].models == ["sklearn-iris", "smollm2-local"]
    assert [(b.tokens, b.per, b.count) for b in tenants["tenant-a"].token_budgets] == [
        (20000, "minute", "total"), (300000, "hour", "output")]
    assert tenants["tenant-a"].quotas.gpu is None
    assert tenants["tenant-b"].models == [] and not tenants["tenant-b"].callers.subjects
    assert tenants["tenant-c"].quotas.gpu == 1 and tenants["tenant-c"].models


def test_valid_document_loads(tmp_path: Path) -> None:
    write(tmp_path, "team-x.yaml", VALID)
    (tenant,) = load_tenants(tmp_path)
    assert tenant.quotas.inference_services == 1
    assert tenant.rate_limit is None


def test_numbers_are_read_as_quantities(tmp_path: Path) -> None:
    write(tmp_path, "team-x.yaml", with_change("quotas.cpu", 2))
    assert load_tenants(tmp_path)[0].quotas.cpu == "2"


# -- mistakes, each named by file and field ----------------------------------------------------------


@pytest.mark.parametrize(("doc", "field", "fragment"), [
    (with_change("quota", {"cpu": "1"}), "quota", "unknown key"),
    (with_change("quotas.gpu", 1), "quotas.gpu", "unknown key"),
    (with_change("callers.users", ["x"]), "callers.users", "unknown key"),
    (with_change("quotas", DELETE), "quotas", "required field is missing"),
    (with_change("quotas.cpu", "0"), "quotas.cpu", "greater than zero"),
    (with_change("quotas.memory", "-1Gi"), "quotas.memory", "greater than zero"),
    (with_change("quotas.cpu", "lots"), "quotas.cpu", "not a Kubernetes quantity"),
    (with_change("quotas.pods", 0), "quotas.pods", "greater than 0"),
    (with_change("quotas.inferenceServices", -1), "quotas.inferenceServices", "greater than 0"),
    (with_change(("quotas", "nvidia.com/gpu"), 0), "quotas.nvidia.com/gpu",
     "greater than 0"),
    (with_change("limitRange.defaultRequest.cpu", "1"), "limitRange.defaultRequest.cpu", "exceeds"),
    (with_change("limitRange.default.memory", "8Gi"), "limitRange.default.memory", "exceeds quotas.memory"),
    (with_change("rateLimit", {"requestsPerSecond": 10, "burst": 5}), "rateLimit.burst", "less than"),
    (with_change("rateLimit", {"requestsPerSecond": 0}), "rateLimit.requestsPerSecond", "greater than 0"),
    (with_change("models", ["Sklearn_Iris"]), "models.0", "should match pattern"),
    (with_change("models", ["iris", "iris"]), "models", "listed twice"),
    (with_change("callers.subjects", ["*"]), "callers.subjects.0", "without spaces, '*' or '/'"),
    (with_change("callers.subjects", ["ci/bot"]), "callers.subjects.0", "without spaces, '*' or '/'"),
    (with_change("callers.groups", ["a b"]), "callers.groups.0", "without spaces"),
    (with_change("labels", {"app.kubernetes.io/managed-by": "me"}), "labels", "reserved"),
    (with_change("labels", {"team": "not valid!"}), "labels", "value must be"),
    (with_change("displayName", ""), "displayName", "at least 1 character"),
    (with_change("name", "team-y"), "name", "must equal the file name"),
], ids=lambda v: v if isinstance(v, str) and "." not in v and " " not in v else None)
def test_bad_input_names_file_and_field(tmp_path: Path, doc: dict[str, Any], field: str, fragment: str) -> None:
    found = problems_of(tmp_path, doc)
    assert any(path.endswith("team-x.yaml") and f == field and fragment in message
               for path, f, message in found), found


@pytest.mark.parametrize(("filename", "name", "fragment"), [
    ("Team_X.yaml", "Team_X", "should match pattern"),
    ("kube-system.yaml", "kube-system", "namespace the platform uses"),
    ("kube-flannel.yaml", "kube-flannel", "namespace the platform uses"),
])
def test_bad_names(tmp_path: Path, filename: str, name: str, fragment: str) -> None:
    found = problems_of(tmp_path, with_change("name", name), filename)
    assert [(f, fragment in m) for _, f, m in found] == [("name", True)], found


def test_yaml_syntax_duplicate_key_and_shape(tmp_path: Path) -> None:
    found = problems_of(tmp_path, "name: team-x\nname: team-y\n")
    assert found[0][1] == "<syntax>" and "duplicate key 'name'" in found[0][2]
    (tmp_path / "team-x.yaml").unlink()
    found = problems_of(tmp_path, "- a list\n")
    assert found[0][1:] == ("<top level>", "a tenant file is a YAML mapping (name, displayName, quotas, ...)")


def test_duplicate_tenant(tmp_path: Path) -> None:
    write(tmp_path, "team-x.yaml", VALID)
    write(tmp_path, "team-x.yml", VALID)
    with pytest.raises(TenantConfigError) as err:
        load_tenants(tmp_path)
    (only,) = err.value.errors
    assert only.path.endswith("team-x.yml")
    assert only.problems[0][0] == "name" and "duplicate tenant 'team-x'" in only.problems[0][1]
    assert "team-x.yaml" in only.problems[0][1]


def test_every_invalid_file_is_reported_at_once(tmp_path: Path) -> None:
    write(tmp_path, "team-x.yaml", with_change("quotas.cpu", "0"))
    write(tmp_path, "team-y.yaml", with_change("name", "team-y", with_change("quotas.pods", -2)))
    write(tmp_path, "team-z.yaml", with_change("name", "team-z"))
    with pytest.raises(TenantConfigError) as err:
        load_tenants(tmp_path)
    assert sorted(Path(e.path).name for e in err.value.errors) == ["team-x.yaml", "team-y.yaml"]
    text = str(err.value)
    assert "team-x.yaml: quotas.cpu:" in text and "team-y.yaml: quotas.pods:" in text
    assert "nothing was applied" in text


class NoCluster:
    """A Kube stand-in that fails the test on any use: proves nothing reached the cluster."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        self.calls.append(name)
        raise AssertionError(f"the cluster was used ({name}) although a tenant file is invalid")


def test_nothing_is_applied_when_one_file_is_invalid(tmp_path: Path, make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    KeyStore.for_state_dir(settings.state_dir).ensure()
    folder = tmp_path / "tenants"
    folder.mkdir()
    write(folder, "team-x.yaml", VALID)
    write(folder, "team-y.yaml", with_change("name", "team-y", with_change("quotas.memory", "0")))
    kube = NoCluster()
    for only in (None, "team-x"):  # even applying just the valid one is refused
        with pytest.raises(ConfigError, match=r"team-y\.yaml: quotas\.memory"):
            app.tenants_apply(settings, Console(file=io.StringIO()), tenant=only, kube=kube,  # type: ignore[arg-type]
                              directory=folder)
    assert kube.calls == []


def test_tenant_create_validates_before_writing(tmp_path: Path, make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    folder = tmp_path / "tenants"
    console = Console(file=io.StringIO())
    with pytest.raises(ConfigError, match=r"quotas\.cpu"):
        app.create_tenant(settings, console, app.NewTenant(name="team-q", cpu="0"), apply=False, directory=folder)
    assert not (folder / "team-q.yaml").exists()
    path = app.create_tenant(settings, console, app.NewTenant(name="team-q", models=["sklearn-iris"], subjects=["web"]),
                             apply=False, directory=folder)
    assert [t.name for t in load_tenants(folder)] == ["team-q"]
    with pytest.raises(ConfigError, match="already exists"):
        app.create_tenant(settings, console, app.NewTenant(name="team-q"), apply=False, directory=folder)
    assert path.read_text().startswith("# Tenant team-q")


@pytest.mark.parametrize(("text", "value"), [
    ("500m", Decimal("0.5")), ("2", Decimal(2)), ("1.5", Decimal("1.5")), ("8Gi", Decimal(8 * 1024**3)),
    ("1k", Decimal(1000)), ("1e3", Decimal(1000)), ("100Mi", Decimal(100 * 1024**2)), ("-1", Decimal(-1)),
])
def test_parse_quantity(text: str, value: Decimal) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "Gi", "1GB", "1..2", "one"])
def test_parse_quantity_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="quantity"):
        parse_quantity(text)

"""inferbox.validate: core kinds against kubernetes-validate's schemas, custom resources against CRDs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from inferbox import PROJECT_ROOT
from inferbox.config import load_versions
from inferbox.validate import SchemaValidationError, SchemaValidator, field_path, schema_dir_for

KUBERNETES_VERSION = load_versions(PROJECT_ROOT / "versions.toml").kubernetes.version

WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.dev"},
    "spec": {
        "group": "example.dev",
        "names": {"kind": "Widget", "plural": "widgets"},
        "scope": "Namespaced",
        "versions": [{
            "name": "v1", "served": True, "storage": True,
            "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                "spec": {"type": "object", "required": ["size"], "properties": {
                    "size": {"type": "integer", "minimum": 1},
                    "port": {"x-kubernetes-int-or-string": True},
                    "note": {"type": "string", "nullable": True},
                    "mode": {"type": "string", "enum": ["A", "B"]},
                    "items": {"type": "array", "items": {"type": "object", "properties": {
                        "name": {"type": "string"}}}},
                    "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                    "tags": {"type": "object", "additionalProperties": {"type": "string"}},
                }},
                "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            }}},
        }],
    },
}


@pytest.fixture
def crd_dir(tmp_path: Path) -> Path:
    (tmp_path / "crds").mkdir()
    (tmp_path / "crds" / "widgets.yaml").write_text(yaml.safe_dump(WIDGET_CRD))
    (tmp_path / "crds" / "notes.txt").write_text("not yaml: ignored")
    return tmp_path / "crds"


def widget(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "example.dev/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": "ns"},
            "spec": {"size": 1, **spec}}


def configmap(**extra: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "namespace": "ns"},
            "data": {"k": "v"}, **extra}


def test_schema_folder_follows_the_pinned_minor() -> None:
    minor = ".".join(KUBERNETES_VERSION.split(".")[:2])
    assert schema_dir_for(KUBERNETES_VERSION) == f"v{minor}.0-local-strict"
    assert schema_dir_for("99.0.0").endswith("-local-strict")  # newer than any bundled: the newest
    with pytest.raises(Exception, match="no schemas"):
        schema_dir_for("1.0.0")


def test_valid_core_object_passes() -> None:
    report = SchemaValidator(KUBERNETES_VERSION).check([configmap()])
    assert report.ok and report.checked == {"ConfigMap ns/cm": f"Kubernetes {schema_dir_for(KUBERNETES_VERSION)}"}


def test_core_typo_names_object_and_field() -> None:
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q", "namespace": "ns"},
             "spec": {"hrad": {"pods": "1"}}}
    policy = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
              "metadata": {"name": "np", "namespace": "ns"},
              "spec": {"podSelector": {}, "ingress": [{"ports": [{"port": 80, "protocl": "TCP"}]}]}}
    problems = SchemaValidator(KUBERNETES_VERSION).check([quota, policy, configmap(dataa={})]).problems
    shown = [str(p) for p in problems]
    assert any(s.startswith("ResourceQuota ns/q: spec: ") and "'hrad'" in s for s in shown), shown
    assert any(s.startswith("NetworkPolicy ns/np: spec.ingress[0].ports[0]: ") and "'protocl'" in s
               for s in shown), shown
    assert any(s.startswith("ConfigMap ns/cm: <object>: ") and "'dataa'" in s for s in shown), shown


def test_unknown_core_kind_is_a_problem_unknown_custom_kind_is_unchecked() -> None:
    report = SchemaValidator(KUBERNETES_VERSION).check([
        {"apiVersion": "apps/v1", "kind": "Deploymnet", "metadata": {"name": "d"}},
        widget(),
    ])
    assert [str(p) for p in report.problems] == [
        f"Deploymnet d: apiVersion: Kubernetes {schema_dir_for(KUBERNETES_VERSION)} has no Deploymnet in apps/v1"]
    assert report.unchecked == ["Widget ns/w"]
    with pytest.raises(SchemaValidationError, match="no CRD loaded"):
        SchemaValidator(KUBERNETES_VERSION).validate([widget()], require_all=True)


def test_custom_resource_valid(crd_dir: Path) -> None:
    ok = widget(port=8080, note=None, mode="A", items=[{"name": "x"}], free={"any": {"thing": 1}}, tags={"a": "b"})
    ok2 = widget(port="http")
    report = SchemaValidator(KUBERNETES_VERSION, [crd_dir]).validate([ok, ok2], require_all=True)
    assert report.checked["Widget ns/w"] == "CRD example.dev/v1 Widget"


@pytest.mark.parametrize(("obj", "path", "fragment"), [
    (widget(sise=2), "spec", "'sise' was unexpected"),
    (widget(size=0), "spec.size", "less than the minimum"),
    (widget(mode="C"), "spec.mode", "is not one of"),
    (widget(port=1.5), "spec.port", "not of type"),
    (widget(items=[{"nmae": "x"}]), "spec.items[0]", "'nmae' was unexpected"),
    (widget(tags={"a": 1}), "spec.tags.a", "not of type 'string'"),
    ({**widget(), "spex": {}}, "<object>", "'spex' was unexpected"),
    ({**widget(), "kind": "Widget", "apiVersion": "example.dev/v1", "metadata": {"name": "w", "lables": {}}},
     "metadata", "'lables' was unexpected"),
])
def test_custom_resource_problems(crd_dir: Path, obj: dict[str, Any], path: str, fragment: str) -> None:
    problems = SchemaValidator(KUBERNETES_VERSION, [crd_dir]).check([obj]).problems
    assert any(p.object.startswith("Widget") and p.path == path and fragment in p.message for p in problems), \
        [str(p) for p in problems]


def test_validate_raises_with_every_problem(crd_dir: Path) -> None:
    with pytest.raises(SchemaValidationError) as err:
        SchemaValidator(KUBERNETES_VERSION, [crd_dir]).validate([widget(sise=1), configmap(dataa={})])
    assert len(err.value.problems) == 2
    assert "Widget ns/w: spec:" in str(err.value) and "ConfigMap ns/cm: <object>:" in str(err.value)


def test_bad_crd_yaml_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text("kind: [unclosed\ngroup: example.com\n")
    validator = SchemaValidator(KUBERNETES_VERSION, [tmp_path])  # CRDs are read when a kind needs them
    with pytest.raises(Exception, match=r"broken\.yaml: not valid YAML"):
        validator.check([{"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}])


def test_field_path() -> None:
    assert field_path(["spec", "rules", 0, "from", 1, "source"]) == "spec.rules[0].from[1].source"
    assert field_path([]) == "<object>"


def test_crd_schemas_are_cached_until_the_file_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from inferbox.validate import _file_crds

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    crd = tmp_path / "crd.yaml"

    def write(prop: str) -> None:
        crd.write_text(yaml.safe_dump({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "names": {"kind": "Widget", "plural": "widgets"}, "scope": "Namespaced",
                     "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                         "type": "object", "properties": {prop: {"type": "string"}}}}}]}}))

    write("size")
    ((group, version, kind, schema),) = _file_crds(crd, "example.com")
    assert (group, version, kind) == ("example.com", "v1", "Widget") and "size" in schema["properties"]
    assert len(list((tmp_path / "cache" / "inferbox" / "crd-schemas").glob("*.json"))) == 1
    assert _file_crds(crd, "example.com") == [(group, version, kind, schema)]  # from the cache
    write("colour")  # another size: another key
    assert "colour" in _file_crds(crd, "example.com")[0][3]["properties"]
    assert _file_crds(crd, "other.org") == []

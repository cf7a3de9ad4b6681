"""versions.toml: the real file validates; bad inputs fail naming the file and the key."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import tomli_w

from inferbox.config import load_versions
from inferbox.errors import ConfigError


@pytest.fixture
def raw(root: Path) -> dict:
    return tomllib.loads((root / "versions.toml").read_text())


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "versions.toml"
    path.write_bytes(tomli_w.dumps(data).encode())
    return path


def problems(path: Path) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        load_versions(path)
    assert str(path) in str(info.value)
    return info.value.problems


def test_shipped_versions_file_is_valid(root: Path) -> None:
    versions = load_versions(root / "versions.toml")
    assert versions.kubernetes.kind_node_image.startswith(f"kindest/node:v{versions.kubernetes.version}@sha256:")
    assert versions.charts.by_key("kserve-crd").version == versions.charts.kserve.version


def test_unknown_component_is_named(tmp_path: Path, raw: dict) -> None:
    raw["charts"]["kserv"] = dict(raw["charts"]["kserve"])
    found = problems(write(tmp_path, raw))
    assert ("charts.kserv", "unknown key (typo, or a component this version of inferbox does not know)") in found


def test_missing_field_is_named(tmp_path: Path, raw: dict) -> None:
    del raw["tools"]["helm"]["version"]
    assert ("tools.helm.version", "required field is missing") in problems(write(tmp_path, raw))


def test_missing_component_is_named(tmp_path: Path, raw: dict) -> None:
    del raw["charts"]["istiod"]
    assert ("charts.istiod", "required field is missing") in problems(write(tmp_path, raw))


def test_malformed_version_is_named(tmp_path: Path, raw: dict) -> None:
    raw["charts"]["cert-manager"]["version"] = "1.21"
    found = dict(problems(write(tmp_path, raw)))
    assert "malformed version '1.21'" in found["charts.cert-manager.version"]


def test_bad_checksum_and_platform(tmp_path: Path, raw: dict) -> None:
    raw["tools"]["kind"]["sha256"]["linux-amd64"] = "abc"
    raw["tools"]["kubectl"]["sha256"]["windows-amd64"] = "0" * 64
    found = dict(problems(write(tmp_path, raw)))
    assert "tools.kind.sha256.linux-amd64" in found
    assert "unknown platform" in found["tools.kubectl.sha256"]


def test_node_image_must_match_kubernetes_version(tmp_path: Path, raw: dict) -> None:
    raw["kubernetes"]["version"] = "1.35.0"
    found = dict(problems(write(tmp_path, raw)))
    assert "differs from version 1.35.0" in found["kubernetes"]


def test_chart_needs_repo_unless_oci(tmp_path: Path, raw: dict) -> None:
    del raw["charts"]["istiod"]["repo"]
    found = dict(problems(write(tmp_path, raw)))
    assert "repo must be an https:// chart repository" in found["charts.istiod"]


def test_syntax_error_names_file(tmp_path: Path) -> None:
    path = tmp_path / "versions.toml"
    path.write_text("schema = 1\n[kubernetes\n")
    assert problems(path)[0][0] == "<syntax>"


# Files where a pinned version may legitimately appear: the pin file, docs and the changelog
# of decisions, the tests that check pins, and the Go wrapper module (go.mod must name it; a
# test below checks it agrees with versions.toml).
_ALLOWED = {"versions.toml", "README.md"}


def _pinned_versions(raw: dict) -> set[str]:
    found: set[str] = set()

    def walk(node: object, key: str = "") -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, k)
        elif isinstance(node, str) and "version" in key and re.fullmatch(r"v?\d+\.\d+\.\d+", node):
            found.add(node.removeprefix("v"))

    walk(raw)
    return found


def test_no_version_literal_outside_versions_toml(root: Path, raw: dict) -> None:
    """A citation of the upstream source read (``repo path@tag``) names a tag, not a pin: it
    says what the code was checked against, and `invoke charts-verify` re-checks it."""
    versions = _pinned_versions(raw)
    offenders = []
    for folder in ("inferbox", "manifests", "helm-values", "load", "tenants", ".ci", ".github"):
        for path in (root / folder).rglob("*"):
            if not path.is_file() or path.suffix not in {".py", ".yaml", ".yml", ".j2", ".toml", ""}:
                continue
            text = path.read_text(errors="replace")
            for version in versions:
                if re.search(rf"(?<![\d.])(?<!@)(?<!@v){re.escape(version)}(?![\d.])", text):
                    offenders.append(f"{path.relative_to(root)}: {version}")
    text = (root / "tasks.py").read_text()
    offenders += [f"tasks.py: {v}" for v in versions if v in text]
    assert not offenders, f"pinned versions outside versions.toml: {offenders}"

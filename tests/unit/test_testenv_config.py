"""inferbox.testenv's pins, go.mod guard and kwok stage config (no binaries or cluster needed)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from inferbox import PROJECT_ROOT
from inferbox.errors import ConfigError
from inferbox.testenv import BuildError, FailureMode, TestenvPins, load_pins
from inferbox.testenv.build import KUBE_MODULE_DIR, KWOK_DEFAULT_STAGES, check_module_matches_pins
from inferbox.testenv.stages import FAIL_ANNOTATION, failure_stages, kwok_config_documents

PINS = load_pins(PROJECT_ROOT / "versions.toml")


def test_wrapper_go_mod_matches_the_pins() -> None:
    check_module_matches_pins(PINS, KUBE_MODULE_DIR)


def test_pin_bumped_without_go_mod_is_refused() -> None:
    bumped = TestenvPins(**{**PINS.as_dict(), "staging_modules": "v0.99.0"})
    expected = rf"replace k8s\.io/api => {re.escape(PINS.staging_modules)}, pins say v0\.99\.0"
    with pytest.raises(BuildError, match=expected):
        check_module_matches_pins(bumped, KUBE_MODULE_DIR)


def test_digest_follows_pins() -> None:
    other = TestenvPins(**{**PINS.as_dict(), "kwok_version": "v0.9.0"})
    assert PINS.digest() != other.digest()
    assert PINS.digest() == TestenvPins(**PINS.as_dict()).digest()


def test_load_pins_from_versions_table(tmp_path: Path) -> None:
    text = (PROJECT_ROOT / "versions.toml").read_text()
    versions = tmp_path / "versions.toml"
    versions.write_text(text.replace(f'kwok_version = "{PINS.kwok_version}"', 'kwok_version = "0.9.0"'))
    assert load_pins(versions) == TestenvPins(**{**PINS.as_dict(), "kwok_version": "v0.9.0"})
    versions.write_text(text.replace("kwok_version =", "kwok ="))
    with pytest.raises(ConfigError) as info:
        load_pins(versions)
    assert ("testenv.kwok_version", "required field is missing") in info.value.problems
    assert ("testenv.kwok", "unknown key (typo, or a component this version of inferbox does not know)") in (
        info.value.problems)


def test_kwok_config_narrows_stock_stages_and_adds_failures(tmp_path: Path) -> None:
    # Minimal stand-ins for the stock stages the build copies out of kwok's module.
    for rel in KWOK_DEFAULT_STAGES:
        name = Path(rel).stem
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump({
            "apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Stage", "metadata": {"name": name},
            "spec": {"resourceRef": {"apiGroup": "v1", "kind": "Pod"}, "selector": {"matchExpressions": []}}}))
    docs = {d["metadata"]["name"]: d for d in yaml.safe_load_all(kwok_config_documents(tmp_path))}
    guard = docs["pod-ready"]["spec"]["selector"]["matchExpressions"][-1]
    assert guard["key"] == f'.metadata.annotations["{FAIL_ANNOTATION}"]'
    assert guard["operator"] == "NotIn"
    assert set(guard["values"]) == {m.value for m in FailureMode}
    assert docs["pod-delete"]["spec"]["selector"]["matchExpressions"] == []  # failing pods still delete
    assert {s["metadata"]["name"] for s in failure_stages()} <= set(docs)

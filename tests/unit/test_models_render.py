"""InferenceService rendering: goldens for CPU, GPU, serverless and canary, each valid against KServe's CRD."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from inferbox import PROJECT_ROOT
from inferbox.config import load_versions
from inferbox.models.catalog import Catalog, default_catalog_path, load_catalog
from inferbox.models.render import (
    DeploymentMode,
    RenderOptions,
    RenderRefused,
    promoted,
    render_inferenceservice,
    rolled_back,
)
from inferbox.render import Renderer
from inferbox.validate import SchemaValidationError, SchemaValidator

CASES = {
    "cpu": ("sklearn-iris", RenderOptions()),
    "gpu": ("qwen-small", RenderOptions()),
    "gpu-cpu-fallback": ("qwen-small", RenderOptions(cpu_fallback=True)),
    "serverless": ("sklearn-iris", RenderOptions(mode=DeploymentMode.KNATIVE)),
    "canary": ("sklearn-iris", RenderOptions(mode=DeploymentMode.KNATIVE, canary_percent=10,
                                             storage_uri="gs://kfserving-examples/models/sklearn/1.0/model-2")),
}


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(default_catalog_path(PROJECT_ROOT))


def render(catalog: Catalog, model: str, options: RenderOptions) -> dict[str, Any]:
    return render_inferenceservice(catalog.get(model), namespace="tenant-a", tenant="tenant-a",
                                   renderer=Renderer(PROJECT_ROOT / "manifests"), options=options)


@functools.cache
def schema_validator(crds: Path) -> SchemaValidator:
    kubernetes = load_versions(PROJECT_ROOT / "versions.toml").kubernetes.version
    return SchemaValidator(kubernetes, [crds])


@pytest.fixture
def validate_isvc(upstream_crds_dir: Path) -> Callable[[dict[str, Any]], None]:
    """The shared strict validator (inferbox.validate): unknown fields are errors, as the API server
    would otherwise silently prune a misplaced one."""

    def check(obj: dict[str, Any]) -> None:
        try:
            schema_validator(upstream_crds_dir).validate([obj], require_all=True)
        except SchemaValidationError as exc:
            raise AssertionError(str(exc)) from exc

    return check


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_and_valid_against_the_crd(catalog: Catalog, case: str, golden: Callable[[str, str], None],
                                          validate_isvc: Callable[[dict[str, Any]], None]) -> None:
    model, options = CASES[case]
    isvc = render(catalog, model, options)
    validate_isvc(isvc)
    golden(f"models/{case}.yaml", yaml.safe_dump(isvc, sort_keys=False))


def test_the_schema_check_catches_a_misplaced_field(validate_isvc: Callable[[dict[str, Any]], None],
                                                    catalog: Catalog) -> None:
    isvc = render(catalog, "sklearn-iris", RenderOptions())
    isvc["spec"]["predictor"]["model"]["gpus"] = 1
    with pytest.raises(AssertionError, match="gpus"):
        validate_isvc(isvc)


@pytest.mark.parametrize("model", ["sklearn-iris", "iris-mlp", "pytorch-resnet", "qwen-small", "qwen-medium", "phi-2"])
def test_every_catalog_model_renders_valid(catalog: Catalog, model: str,
                                           validate_isvc: Callable[[dict[str, Any]], None]) -> None:
    for mode in DeploymentMode:
        validate_isvc(render(catalog, model, RenderOptions(mode=mode)))


def test_gpu_models_select_and_tolerate_gpu_nodes(catalog: Catalog) -> None:
    predictor = render(catalog, "qwen-small", RenderOptions())["spec"]["predictor"]
    assert predictor["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert predictor["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert predictor["model"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    fallback = render(catalog, "qwen-small", RenderOptions(cpu_fallback=True))["spec"]["predictor"]
    assert "nodeSelector" not in fallback and "tolerations" not in fallback
    cpu = render(catalog, "sklearn-iris", RenderOptions())["spec"]["predictor"]
    assert "nodeSelector" not in cpu


def test_modes(catalog: Catalog) -> None:
    standard = render(catalog, "sklearn-iris", RenderOptions())
    assert standard["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
    assert standard["spec"]["predictor"]["minReplicas"] == 1
    knative = render(catalog, "sklearn-iris", RenderOptions(mode=DeploymentMode.KNATIVE))
    assert knative["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Knative"
    assert knative["spec"]["predictor"]["minReplicas"] == 0


def test_standard_mode_refuses_a_canary(catalog: Catalog) -> None:
    with pytest.raises(RenderRefused, match="needs --mode knative"):
        render(catalog, "sklearn-iris", RenderOptions(canary_percent=10))
    with pytest.raises(RenderRefused, match="0-100"):
        render(catalog, "sklearn-iris", RenderOptions(mode=DeploymentMode.KNATIVE, canary_percent=120))
    with pytest.raises(RenderRefused, match="scheme"):
        render(catalog, "sklearn-iris", RenderOptions(storage_uri="file:///tmp/model"))


def _live(obj: dict[str, Any]) -> dict[str, Any]:
    # What the API server returns: status and server-set metadata besides the spec.
    return {**obj, "metadata": {**obj["metadata"], "uid": "u", "resourceVersion": "7", "managedFields": []},
            "status": {"conditions": []}}


def test_promote_and_rollback(catalog: Catalog, validate_isvc: Callable[[dict[str, Any]], None]) -> None:
    live = _live(render(catalog, *CASES["canary"]))
    up = promoted(live)
    assert "canaryTrafficPercent" not in up["spec"]["predictor"]
    assert set(up["metadata"]) == {"name", "namespace", "labels", "annotations"} and "status" not in up
    back = rolled_back(live)
    assert back["spec"]["predictor"]["canaryTrafficPercent"] == 0
    for obj in (up, back):
        validate_isvc(obj)
    assert live["spec"]["predictor"]["canaryTrafficPercent"] == 10  # the input is not changed
    with pytest.raises(RenderRefused, match="no canary"):
        promoted(_live(render(catalog, "sklearn-iris", RenderOptions(mode=DeploymentMode.KNATIVE))))
    with pytest.raises(RenderRefused, match="Standard mode"):
        rolled_back(_live(render(catalog, "sklearn-iris", RenderOptions())))


def test_golden_dir_holds_only_known_cases() -> None:
    folder = Path(__file__).resolve().parents[1] / "golden" / "models"
    assert {p.stem for p in folder.glob("*.yaml")} <= set(CASES)

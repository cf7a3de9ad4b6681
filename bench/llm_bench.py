"""Local LLM benchmark: smollm2-local served by vLLM (`invoke deploy-model smollm2-local --target local`)
against the same engine used directly, in one run.

* cold start: from `deploy` (process spawn; environment and converted weights already exist, vLLM's
  compile cache warm; with --cold-cache one start with an empty one) to the first streamed token,
  median of --runs;
* serving: --requests streamed chat completions at 1 and at 4 concurrent streams, every answer
  exactly --max-tokens long (vLLM's ``ignore_eos``), temperature 0: time to first token p50/p95,
  each stream's decode rate (tokens after the first / time after the first token), and the
  aggregate rate (all completion tokens / wall time);
* the engine directly: ``vllm.LLM(...).chat()`` in the predictor environment with the same model
  folder, dtype, max model length and sampling, one prompt at a time, after the server is stopped
  (two processes would share the same cores). The serving-overhead ratio is the server's
  end-to-end tokens/s at one stream (completion tokens / request time) over the engine's
  (generated tokens / generate time). Streams are read with http.client (``--sdk``: with the
  OpenAI SDK, as `invoke predict` reads them, to see what the client costs).

    .venv/bin/python bench/llm_bench.py [--requests 12] [--max-tokens 128] [--runs 2] [--cold-cache] [--sdk]

Loopback only; it stops the server it started. Ends with the table the README shows.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from machine import measured  # bench/machine.py: the script's folder is on sys.path

from inferbox import PROJECT_ROOT
from inferbox.config import load_versions
from inferbox.local import client, llm
from inferbox.local.predictors import LocalPaths, LocalTarget
from inferbox.models.catalog import default_catalog_path, load_catalog
from inferbox.runner import ShellRunner

MODEL = "smollm2-local"
SHARED = PROJECT_ROOT / ".inferbox" / "local"
PROMPTS = ("Explain what a Kubernetes readiness probe is.", "Write a short story about a lighthouse keeper.",
           "List ten facts about the Moon.", "Describe how a bicycle works, step by step.")
ENGINE = r"""
import json, sys, time
from vllm import LLM, SamplingParams
args = json.loads(sys.argv[1])
engine = LLM(model=args["model_dir"], dtype=args["dtype"], max_model_len=args["max_model_len"])
params = SamplingParams(max_tokens=args["max_tokens"], temperature=0, ignore_eos=True)
engine.chat([{"role": "user", "content": "warm up"}], params)
rates = []
for prompt in args["prompts"]:
    started = time.perf_counter()
    out = engine.chat([{"role": "user", "content": prompt}], params, use_tqdm=False)
    rates.append(len(out[0].outputs[0].token_ids) / (time.perf_counter() - started))
print("RESULT " + json.dumps(rates))
"""


Reader = Callable[[LocalTarget, str, int], llm.StreamedChat]


def make_target(directory: Path, *, cold_cache: bool) -> LocalTarget:
    """State of its own; the environment and converted weights shared; the compile cache shared, or
    new and empty (--cold-cache: the first start then compiles)."""
    (directory / "models").symlink_to(SHARED / "models")
    if not cold_cache:
        (SHARED / "cache").mkdir(parents=True, exist_ok=True)
        (directory / "cache").symlink_to(SHARED / "cache")
    paths = LocalPaths(directory=directory, venv=SHARED / "venv",
                       requirements=PROJECT_ROOT / "models" / "local-predictor", root=PROJECT_ROOT)
    kserve = load_versions(PROJECT_ROOT / "versions.toml").charts.kserve.version
    return LocalTarget(paths, load_catalog(default_catalog_path(PROJECT_ROOT)), ShellRunner(), kserve_version=kserve)


def chat_sdk(target: LocalTarget, prompt: str, max_tokens: int) -> llm.StreamedChat:
    record = target.running(MODEL)
    return llm.stream_chat(record.base_url, MODEL, prompt, max_tokens=max_tokens, extra_body={"ignore_eos": True})


def chat(target: LocalTarget, prompt: str, max_tokens: int) -> llm.StreamedChat:
    """One streamed chat read with http.client, one ``json.loads`` per event: on 2 cores the client
    shares a core with vLLM's API server, and the OpenAI SDK's per-chunk models cost it about a
    fifth of the server's rate (`invoke predict` uses the SDK; this measures the server)."""
    record = target.running(MODEL)
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
                       "temperature": 0, "stream": True, "stream_options": {"include_usage": True},
                       "ignore_eos": True})
    result = llm.StreamedChat(MODEL)
    conn = http.client.HTTPConnection(client.LOOPBACK, record.http_port, timeout=120)
    started = time.perf_counter()
    try:
        conn.request("POST", llm.CHAT_PATH, body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {response.read()[:300]!r}")
        while line := response.readline():
            now = time.perf_counter() - started
            if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
                continue
            event = json.loads(line[6:])
            if event.get("usage"):
                result.completion_tokens = event["usage"]["completion_tokens"]
            for choice in event.get("choices") or []:
                if (choice.get("delta") or {}).get("content"):
                    result.first_token_s = result.first_token_s if result.first_token_s is not None else now
                    result.last_token_s = now
                    result.text += choice["delta"]["content"]
    finally:
        conn.close()
    return result


def cold_start(target: LocalTarget, max_tokens: int, read: Reader) -> tuple[float, float]:
    """(deploy to ready, deploy to first token) in seconds."""
    started = time.perf_counter()
    target.deploy(MODEL)
    ready = time.perf_counter() - started
    first = read(target, PROMPTS[0], max_tokens).first_token_s or 0.0  # the chat is sent once ready
    target.down(MODEL)
    return ready, ready + first


def serving(target: LocalTarget, streams: int, requests: int, max_tokens: int, read: Reader) -> dict[str, float]:
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(requests)]
    started = time.perf_counter()
    with ThreadPoolExecutor(streams) as pool:
        chats = list(pool.map(lambda p: (time.perf_counter(), read(target, p, max_tokens), time.perf_counter()),
                              prompts))
    wall = time.perf_counter() - started
    ttft = sorted((c.first_token_s or 0.0) * 1000 for _, c, _ in chats)
    tokens = sum(c.completion_tokens or 0 for _, c, _ in chats)
    assert all(c.completion_tokens == max_tokens for _, c, _ in chats), "ignore_eos: every answer is max_tokens long"
    p95 = ttft[math.ceil(0.95 * len(ttft)) - 1]  # nearest rank, as the load-test gate
    return {"ttft_p50_ms": statistics.median(ttft), "ttft_p95_ms": p95,
            "decode_tps": statistics.median(c.tokens_per_s or 0.0 for _, c, _ in chats),
            "end_to_end_tps": statistics.median((c.completion_tokens or 0) / (end - begin) for begin, c, end in chats),
            "aggregate_tps": tokens / wall}


def engine_direct(target: LocalTarget, device: llm.Device, prompts: list[str], max_tokens: int) -> list[float]:
    env = {**os.environ, **llm.server_env(target.paths.cache, device)}
    args = {"model_dir": str(target.paths.model_dir(MODEL).resolve()), "dtype": device.dtype,
            "max_model_len": device.max_model_len, "max_tokens": max_tokens, "prompts": prompts}
    done = subprocess.run([str(target.env.python), "-c", ENGINE, json.dumps(args)], env=env, capture_output=True,
                          text=True, check=False, timeout=1800)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if done.returncode != 0 or line is None:
        raise SystemExit(f"the engine run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(line.removeprefix("RESULT "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=12, help="streamed chats per concurrency level")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=2, help="cold starts to take the median of")
    parser.add_argument("--sdk", action="store_true", help="read the streams with the OpenAI SDK (as `invoke "
                                                           "predict` does) instead of http.client")
    parser.add_argument("--cold-cache", action="store_true", help="start with an empty vLLM compile cache")
    args = parser.parse_args()
    read = chat_sdk if args.sdk else chat
    with tempfile.TemporaryDirectory(prefix="inferbox-llm-bench-") as tmp:
        target = make_target(Path(tmp), cold_cache=args.cold_cache)
        if args.cold_cache:  # the first start of an empty compile cache is the one measured
            starts = [cold_start(target, args.max_tokens, read)]
        else:  # installs, converts and compiles once, untimed
            target.deploy(MODEL)
            target.down(MODEL)
            starts = [cold_start(target, args.max_tokens, read) for _ in range(args.runs)]
        device = target._device(target.catalog.get(MODEL))
        assert device is not None
        target.deploy(MODEL)
        try:
            read(target, "warm up", 8)
            levels = {streams: serving(target, streams, args.requests, args.max_tokens, read) for streams in (1, 4)}
        finally:
            target.down(MODEL)
        prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.requests)]
        engine = statistics.median(engine_direct(target, device, prompts, args.max_tokens))
    one = levels[1]
    print(f"cold starts{' (empty compile cache)' if args.cold_cache else ''} (deploy to ready, to first token): "
          + ", ".join(f"{r:.1f} s / {t:.1f} s" for r, t in starts))
    print()
    print(f"{measured()}; {MODEL} on the {device.describe()}; {args.requests} streamed chats per level, each "
          f"exactly {args.max_tokens} tokens, temperature 0, read with "
          f"{'the OpenAI SDK' if args.sdk else 'http.client'}:")
    print()
    print("| | cold start (to first token) | TTFT p50 | TTFT p95 | decode tokens/s per stream | end-to-end tokens/s "
          "per stream | aggregate tokens/s |")
    print("|---|---|---|---|---|---|---|")
    cold = statistics.median(t for _, t in starts)
    for streams, f in levels.items():
        label = f"vLLM server, {streams} stream{'s' if streams > 1 else ''}"
        print(f"| {label} | {cold:.1f} s | {f['ttft_p50_ms']:.0f} ms | {f['ttft_p95_ms']:.0f} ms | "
              f"{f['decode_tps']:.1f} | {f['end_to_end_tps']:.1f} | {f['aggregate_tps']:.1f} |")
    print(f"| vLLM engine directly, 1 stream | - | - | - | - | {engine:.1f} | {engine:.1f} |")
    print()
    print("serving overhead ratio (server end-to-end tokens/s at 1 stream / engine): "
          f"{one['end_to_end_tps'] / engine:.3f} (target >= 0.9); 4 streams / 1 stream aggregate: "
          f"{levels[4]['aggregate_tps'] / one['aggregate_tps']:.2f}x")


if __name__ == "__main__":
    main()

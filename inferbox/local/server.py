"""The local predictor process: KServe's own ModelServer serving one model on 127.0.0.1.

This module runs inside the predictor virtual environment (kserve, scikit-learn, torch), not the
project's .venv, so it imports nothing from inferbox except :mod:`inferbox.local.artifacts`
(standard library only at import time). The endpoints are KServe's: V1
``/v1/models/<name>:predict``, V2 ``/v2/models/<name>/infer``, health and metadata.

Run as ``python -m inferbox.local.server --model_name NAME --server sklearn --model-dir DIR
--http_port PORT`` (the underscore flags are KServe's own).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import kserve
from kserve import model_server
from kserve.logging import logger as log
from kserve.protocol.rest.server import RESTServer
from kserve.utils.utils import get_predict_input, get_predict_response

from inferbox.local.artifacts import MODEL_FILES

LOOPBACK = "127.0.0.1"


class LoopbackRESTServer(RESTServer):
    """KServe binds 0.0.0.0 (right in a pod, whose network is its own); here only loopback."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config.host = LOOPBACK


# ModelServer.start() builds its REST server from this module attribute.
model_server.RESTServer = LoopbackRESTServer  # type: ignore[misc]


class SklearnModel(kserve.Model):
    """What KServe's sklearnserver does (it is not published on PyPI): joblib model, predict()."""

    def __init__(self, name: str, model_dir: Path) -> None:
        super().__init__(name)
        self.model_dir = model_dir
        self._model: Any = None

    def load(self) -> bool:
        import joblib

        self._model = joblib.load(self.model_dir / MODEL_FILES["sklearn"])
        self.ready = True
        return self.ready

    def predict(self, payload: Any, headers: Any = None, response_headers: Any = None) -> Any:
        inputs = get_predict_input(payload)
        return get_predict_response(payload, self._model.predict(inputs), self.name)


class TorchMLPModel(kserve.Model):
    """The iris MLP; on the GPU when torch finds one (CUDA), else the CPU."""

    def __init__(self, name: str, model_dir: Path) -> None:
        super().__init__(name)
        self.model_dir = model_dir
        self._net: Any = None
        self._mean: Any = None
        self._std: Any = None
        self.device = "cpu"

    def load(self) -> bool:
        import torch

        from inferbox.local.artifacts import mlp

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        saved = torch.load(self.model_dir / MODEL_FILES["torch-mlp"], map_location=self.device, weights_only=True)
        self._net = mlp(torch).to(self.device)
        self._net.load_state_dict(saved["state_dict"])
        self._net.eval()
        self._mean, self._std = saved["mean"].to(self.device), saved["std"].to(self.device)
        name = torch.cuda.get_device_name(0) if self.device == "cuda" else "cpu"
        log.info("inferbox: model %s loaded on device=%s (%s)", self.name, self.device, name)
        self.ready = True
        return self.ready

    def predict(self, payload: Any, headers: Any = None, response_headers: Any = None) -> Any:
        import numpy as np
        import torch

        inputs = np.asarray(get_predict_input(payload), dtype=np.float32)
        with torch.inference_mode():
            x = (torch.from_numpy(inputs).to(self.device) - self._mean) / self._std
            classes = self._net(x).argmax(dim=1).cpu().numpy().astype(np.int64)
        return get_predict_response(payload, classes, self.name)


SERVERS: dict[str, type[kserve.Model]] = {"sklearn": SklearnModel, "torch-mlp": TorchMLPModel}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, allow_abbrev=False)
    parser.add_argument("--model_name", required=True)
    parser.add_argument("--server", required=True, choices=sorted(SERVERS))
    parser.add_argument("--model-dir", required=True, type=Path)
    parser.add_argument("--http_port", required=True, type=int)
    args, _ = parser.parse_known_args()
    # gRPC stays off: KServe's gRPC server listens on [::] with no way to narrow it to loopback.
    # The server first: constructing it configures KServe's logging, which load() logs through.
    server = kserve.ModelServer(http_port=args.http_port, enable_grpc=False, workers=1)
    model = SERVERS[args.server](args.model_name, args.model_dir)
    model.load()
    server.start([model])


if __name__ == "__main__":
    main()

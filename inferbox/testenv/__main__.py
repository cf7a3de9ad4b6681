"""``python -m inferbox.testenv build|prepare|up``: build the binaries; fetch and build everything
the test suite needs from the network (so it can then run in a namespace with only loopback);
or run a control plane until Ctrl-C."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from inferbox.testenv.build import BuildError, default_cache_dir, ensure_binaries
from inferbox.testenv.controlplane import ControlPlane, ControlPlaneError
from inferbox.testenv.pins import load_pins
from inferbox.testenv.procs import wait_for_stop_signal

_ROOT = Path(__file__).resolve().parents[2]


def _log(msg: str) -> None:
    print(f"[testenv] {msg}", file=sys.stderr, flush=True)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m inferbox.testenv", description=__doc__)
    p.add_argument("--cache-dir", type=Path, default=None, help=f"binary cache (default {default_cache_dir()})")
    p.add_argument("--versions", type=Path, default=_ROOT / "versions.toml",
                   help="versions.toml with the [testenv] table (default: the repository's)")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="build/fetch the binaries into the cache (no-op when cached)")
    sub.add_parser("prepare", help="build, then the PromQL checker and the local predictors' environment: "
                                   "all the tests fetch from the network (each a no-op when done)")
    up = sub.add_parser("up", help="start a control plane and keep it up until Ctrl-C")
    up.add_argument("--crds", type=Path, action="append", default=[],
                    help="folder or file of CRD manifests to install (repeatable)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    pins = load_pins(args.versions)
    try:
        binaries = ensure_binaries(pins, args.cache_dir, _log)
        if args.command == "build":
            print(binaries.bin_dir)
            return 0
        if args.command == "prepare":
            _prepare(args.versions)
            return 0
        with ControlPlane(binaries, log=_log) as cp:
            for path in args.crds:
                done = cp.install_crds(path)
                _log(f"installed {len(done.crds)} CRDs and {len(done.others)} other objects from {path}")
            print(cp.kubeconfig, flush=True)
            _log(f"export KUBECONFIG={cp.kubeconfig} PATH={binaries.bin_dir}:$PATH  # Ctrl-C stops it")
            wait_for_stop_signal()
            _log("stopping")
        return 0
    except (BuildError, ControlPlaneError) as exc:
        _log(f"error: {exc}")
        return 1


def _prepare(versions: Path) -> None:
    """What tests would otherwise fetch on first use: tools/promql-check (Go modules) and the
    local predictors' environment (.inferbox/local/venv, from PyPI)."""
    from inferbox.config import load_versions
    from inferbox.local.env import SERVER_REQUIREMENTS, PredictorEnv, kserve_requirement
    from inferbox.observability import promql
    from inferbox.runner import ShellRunner

    pins = load_versions(versions)
    if promql.find_go() is not None:
        _log(f"promql-check: {promql.ensure_built(pins.observability)}")
    root = versions.parent
    env = PredictorEnv(root / ".inferbox" / "local" / "venv", root / "models" / "local-predictor",
                       kserve_requirement(pins.charts.kserve.version))
    skip_torch = os.environ.get("INFERBOX_SKIP_TORCH") == "1"
    for server in SERVER_REQUIREMENTS:
        if skip_torch and "torch" in SERVER_REQUIREMENTS[server]:
            _log(f"local predictor environment for {server}: skipped (INFERBOX_SKIP_TORCH=1; PyTorch with CUDA is "
                 "about 5 GiB): the tests marked torch skip")
            continue
        installed = env.ensure(server, ShellRunner())
        _log(f"local predictor environment for {server}: " + (f"installed {installed}" if installed else "ready"))


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: `invoke tenants-apply` against `kubectl apply --server-side -f` of the same rendered
YAML, for N tenants on the embedded control plane (a real kube-apiserver + etcd): the first run,
then a rerun that changes nothing. Each run is its own process, timed whole (wall clock) with its
peak RSS; the tools alternate which goes first, round by round, on fresh tenant names.

Needs the testenv binaries, the upstream CRDs (Istio's kinds), GNU time (Debian's `time`) and a
network namespace with only loopback, as the tests do:

    unshare --net -- .venv/bin/python -m inferbox.testenv.netns \\
        .venv/bin/python bench/tenants_bench.py [--tenants 100 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machine import measured  # noqa: E402 - bench/machine.py

from inferbox.config import build_settings  # noqa: E402 - after the path set-up
from inferbox.tenants import app  # noqa: E402
from inferbox.testenv import ControlPlane, find_binaries, load_pins  # noqa: E402

CRDS = [Path(p) for p in (os.environ.get("INFERBOX_CRDS"), ROOT.parent / "shared" / "crds",
                          ROOT / ".inferbox" / "bundle" / "crds") if p and Path(p).is_dir()]


def write_tenants(folder: Path, prefix: str, count: int) -> None:
    """``count`` copies of the shipped tenant-a, named <prefix>-<i>."""
    folder.mkdir(parents=True)
    template = yaml.safe_load((ROOT / "tenants" / "tenant-a.yaml").read_text())
    for i in range(count):
        name = f"{prefix}-{i:04d}"
        (folder / f"{name}.yaml").write_text(yaml.safe_dump({**template, "name": name}, sort_keys=False))


def timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB) of one process; raises when it fails.

    The peak comes from GNU time, a small parent: a child forked from this Python process
    would report this process's peak RSS as its own (Linux keeps the high-water mark over exec).
    """
    with tempfile.TemporaryFile() as log, tempfile.NamedTemporaryFile("r") as rss:
        start = time.monotonic()
        process = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rss.name, *argv], stdout=log,
                                 stderr=subprocess.STDOUT, env=env, check=False)
        wall = time.monotonic() - start
        log.seek(0)
        output = log.read().decode(errors="replace")
        peak_kib = rss.read().strip().splitlines()[-1]
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])} ... failed:\n{output[-3000:]}")
    return wall, int(peak_kib) / 1024


def child_apply(folder: Path, state: Path, kubeconfig: Path) -> int:
    """The inferbox side, as `invoke tenants-apply` runs it (validation, render, schema, apply)."""
    from rich.console import Console

    from inferbox.k8s import Kube

    settings = build_settings(ROOT, state_dir=state)
    report = app.tenants_apply(settings, Console(file=io.StringIO(), width=200), kube=Kube.connect(kubeconfig),
                               directory=folder, crds=CRDS)
    print(report.summary())
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--rounds", type=int, default=3, help="rounds for counts up to 300; 1 above")
    parser.add_argument("--child-apply", nargs=3, metavar=("FOLDER", "STATE", "KUBECONFIG"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_apply:
        return child_apply(*(Path(p) for p in args.child_apply))

    binaries = find_binaries(load_pins(ROOT / "versions.toml"))
    if binaries is None or not CRDS:
        print("needs the testenv binaries (`.venv/bin/python -m inferbox.testenv prepare`) and the upstream CRDs "
              "(../shared/crds, $INFERBOX_CRDS or `.venv/bin/invoke bundle`)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="tenants-bench-"))
    state = work / "state"
    app.keystore(build_settings(ROOT, state_dir=state)).ensure()
    rows = []
    with ControlPlane(binaries) as cp:
        cp.install_crds(*CRDS)
        kubeconfig = str(cp.kubeconfig)
        env = {**os.environ, "KUBECONFIG": kubeconfig}
        for count in args.tenants:
            rounds = args.rounds if count <= 300 else 1
            figures: dict[str, list[float]] = {}
            for r in range(rounds):
                order = ("inferbox", "kubectl") if r % 2 == 0 else ("kubectl", "inferbox")
                for tool in order:
                    folder = work / f"n{count}-r{r}-{tool}"
                    write_tenants(folder, f"b{count}r{r}{tool[0]}", count)
                    if tool == "inferbox":
                        argv = [sys.executable, __file__, "--child-apply", str(folder), str(state), kubeconfig]
                    else:
                        rendered = folder.with_suffix(".yaml")
                        settings = build_settings(ROOT, state_dir=state)
                        rendered.write_text(app.tenants_render(settings, directory=folder))
                        argv = [str(binaries.kubectl), "apply", "--server-side", "--force-conflicts",
                                "--field-manager=kubectl-bench",
                                "-f", str(rendered)]
                    first, first_rss = timed(argv, env)
                    again, again_rss = timed(argv, env)
                    for key, value in (("first", first), ("rerun", again), ("rss", max(first_rss, again_rss))):
                        figures.setdefault(f"{tool}.{key}", []).append(value)
                    print(f"  {count} tenants, round {r + 1}, {tool}: first {first:.2f} s, rerun {again:.2f} s, "
                          f"peak RSS {max(first_rss, again_rss):.0f} MiB", flush=True)
            objects = len([d for d in yaml.safe_load_all((work / f"n{count}-r0-kubectl.yaml").read_text()) if d])
            median = {k: statistics.median(v) for k, v in figures.items()}
            rows.append((count, objects, rounds, median))
    print()
    print(f"{measured()}; medians of the rounds (first run / no-op rerun, wall clock; objects/s on the first run):")
    for count, objects, rounds, m in rows:
        i_first, k_first = m["inferbox.first"], m["kubectl.first"]
        print(f"{count} tenants ({objects} objects, {rounds} round{'s' if rounds > 1 else ''}): "
              f"inferbox {i_first:.2f} s ({objects / i_first:.0f} objects/s), rerun {m['inferbox.rerun']:.2f} s, "
              f"peak {m['inferbox.rss']:.0f} MiB; kubectl {k_first:.2f} s ({objects / k_first:.0f} objects/s), "
              f"rerun {m['kubectl.rerun']:.2f} s, peak {m['kubectl.rss']:.0f} MiB; first run {k_first / i_first:.2f}x "
              f"kubectl's speed, rerun {m['inferbox.rerun'] / i_first:.2f} of inferbox's first run")
    return 0


if __name__ == "__main__":
    sys.exit(main())

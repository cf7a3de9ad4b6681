"""The render check of every phase, from cached charts, against plain `helm template` runs.

    .venv/bin/python bench/render_check_bench.py [--charts DIR] [--runs 5]

DIR is a chart store: .inferbox/charts after `invoke charts-verify`, or a bundle from
`invoke bundle --out DIR`. Both sides cover the full plan (GPU, Knative and monitoring phases
on) with the plan's values:

* A: inferbox's render check (inferbox.bootstrap.contract.verify): every phase rendered, parsed
  and checked (health targets, catalog runtimes, values keys, IngressClasses, KServe hosts);
* B: what a user would run instead: one `helm template` per phase, all at once, output thrown
  away (renders only: no check at all).

Printed: each side's minimum, median and maximum wall seconds over the runs, and A's median
per phase. Target: A under 3 s.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from machine import measured  # bench/machine.py: the script's folder is on sys.path

from inferbox import PROJECT_ROOT
from inferbox.bootstrap import app
from inferbox.bootstrap.phases import build_plan
from inferbox.bootstrap.plan import Phase
from inferbox.config import build_settings
from inferbox.errors import InferboxError
from inferbox.tools import resolve_binary


def helm_template_argv(helm: str, phase: Phase, kube_version: str) -> list[str]:
    argv = [helm, "template", phase.release, phase.chart.chart, "--namespace", phase.namespace, "--include-crds",
            "--kube-version", kube_version]
    if phase.values_file:
        argv += ["--values", str(phase.values_file)]
    for key, value in sorted(phase.set_values.items()):
        argv += ["--set", f"{key}={value}"]
    return argv


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--charts", type=Path, default=PROJECT_ROOT / ".inferbox" / "charts",
                        help="chart store or bundle (default .inferbox/charts)")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    settings = app.full_plan_settings(build_settings(PROJECT_ROOT, bundle=args.charts.resolve()))
    plan = build_plan(settings, gpu=True)
    try:
        store, _ = app.open_store(settings, plan, pull=False)
    except InferboxError as exc:
        print(f"no charts to render in {args.charts}: {str(exc).splitlines()[0]}\n"
              "`.venv/bin/invoke charts-verify` pulls them into .inferbox/charts (or pass --charts BUNDLE_DIR)",
              file=sys.stderr)
        return 2
    settings = replace(settings, chart_store=store.root)
    plan = build_plan(settings, gpu=True)
    helm = resolve_binary("helm", settings.bin_dir)
    kube = settings.versions.kubernetes.version

    def plain_helm() -> None:
        with ThreadPoolExecutor(len(plan.phases)) as pool:
            for result in pool.map(lambda p: subprocess.run(helm_template_argv(helm, p, kube), check=True,
                                                            capture_output=True), plan.phases):
                assert result.stdout

    check_s, helm_s, per_phase = [], [], {p.name: [] for p in plan.phases}
    for _ in range(args.runs):
        started = time.monotonic()
        report = app.render_check(settings, plan)  # a fresh render each run: no cache is shared
        check_s.append(time.monotonic() - started)
        for name, render in report.renders.items():
            per_phase[name].append(render.seconds)
        if report.problems:
            print("render check problems:", *report.problems, sep="\n  ", file=sys.stderr)
            return 1
        started = time.monotonic()
        plain_helm()
        helm_s.append(time.monotonic() - started)

    def row(label: str, values: list[float]) -> str:
        return f"{label:44} min {min(values):6.2f}s  median {statistics.median(values):6.2f}s  max {max(values):6.2f}s"

    print(f"{measured()}: {len(plan.phases)} phases from {store.root}, {args.runs} runs, helm {helm}")
    print(row("A inferbox render check (render+parse+check)", check_s))
    print(row("B helm template per phase, in parallel", helm_s))
    print(f"{'A/B median':44} x{statistics.median(check_s) / statistics.median(helm_s):.2f}")
    for name, values in sorted(per_phase.items(), key=lambda kv: -statistics.median(kv[1])):
        print(f"  {name:22} median {statistics.median(values):5.2f}s (render and parse, concurrent with the rest)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

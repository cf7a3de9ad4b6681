"""The install plan's critical path against the sum of its phases.

    .venv/bin/python bench/plan_bench.py [--events .inferbox/bootstrap-events.jsonl]

Without --events the durations are the phases' expected_s budgets (inferbox/bootstrap/phases.py: what a
phase typically needs on a laptop kind cluster with a warm image cache; estimates, not
measurements). With an event log from a real `invoke bootstrap` the measured phase durations
are used instead. The ratio is the speed-up parallel phases give over running them one by one.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from inferbox import PROJECT_ROOT
from inferbox.bootstrap.phases import build_plan
from inferbox.config import build_settings
from inferbox.events import read_durations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=Path, help="a bootstrap event log with measured durations")
    args = parser.parse_args()
    durations = read_durations(args.events) if args.events else None
    source = f"measured ({args.events})" if durations else "expected_s estimates"
    for label, flags, gpu in (("cpu, monitoring", {}, False), ("gpu, monitoring", {}, True),
                              ("gpu, monitoring, knative", {"knative": True}, True)):
        plan = build_plan(build_settings(PROJECT_ROOT, **flags), gpu=gpu)
        total, path = plan.critical_path(durations)
        serial = sum((durations or {}).get(p.name, p.expected_s) for p in plan.phases)
        print(f"{label:26} phases {len(plan.phases):2}  waves {len(plan.waves())}  "
              f"critical path {total:5.0f}s  sum {serial:5.0f}s  speed-up x{serial / total:.2f}  [{source}]")
        print(f"{'':26} path: {' -> '.join(path)}")


if __name__ == "__main__":
    main()

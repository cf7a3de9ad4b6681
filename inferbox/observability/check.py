"""Every check of the dashboards and alert rules in one pass (``invoke observability-check``, tests).

* the dashboards' structure (datasource variable on every panel and query, ...);
* every PromQL expression of the dashboards and of the rendered PrometheusRule parsed by
  Prometheus' own parser (tools/promql-check, the version pinned in versions.toml);
* every metric name those expressions select is exported by a known source
  (inferbox.observability.metrics) or recorded by one of our recording rules.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inferbox.config import Settings
from inferbox.observability import metrics
from inferbox.observability.dashboards import dashboard_expressions, dashboard_problems, load_dashboards
from inferbox.observability.manifests import recorded_names, render_monitoring, rule_expressions
from inferbox.observability.pins import load_pin
from inferbox.observability.promql import CheckResult, Expression, check, ensure_built
from inferbox.runner import Runner


@dataclass
class Report:
    expressions: list[Expression] = field(default_factory=list)
    results: list[CheckResult] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self, *, verbose: bool = False) -> Iterator[str]:
        if verbose:
            for result in self.results:
                yield f"{'ok ' if result.ok else 'BAD'} {result.id}: {', '.join(result.metrics) or '-'}"
        yield from self.problems
        yield f"{len(self.results)} expressions checked, {len(self.problems)} problems"


def all_expressions(settings: Settings, objects: list[dict[str, Any]] | None = None
                    ) -> tuple[list[Expression], list[str]]:
    """(expressions of the dashboards and rules, structural problems of the dashboards)."""
    objects = objects if objects is not None else render_monitoring(settings)
    expressions: list[Expression] = []
    problems: list[str] = []
    for name, dashboard in load_dashboards(settings.root).items():
        problems += dashboard_problems(dashboard, name)
        expressions += dashboard_expressions(dashboard, name)
    return expressions + rule_expressions(objects), problems


def metric_problems(results: list[CheckResult], recorded: set[str]) -> list[str]:
    problems = []
    for result in results:
        if result.errors:
            problems += [f"{result.id}: {error}" for error in result.errors]
        if result.unnamed_selectors:
            problems.append(f"{result.id}: a selector names no metric (cannot be checked)")
        for name in metrics.unknown(result.metrics, recorded=recorded):
            problems.append(f"{result.id}: metric {name!r} is exported by no known source "
                            "(inferbox/observability/metrics.py) nor recorded by our rules")
    return problems


def check_all(settings: Settings, *, runner: Runner | None = None, cache_dir: Path | None = None) -> Report:
    pin = load_pin(settings.root / "versions.toml")
    binary = ensure_built(pin, runner=runner, cache_dir=cache_dir)
    objects = render_monitoring(settings)
    expressions, problems = all_expressions(settings, objects)
    results = check(binary, expressions, runner=runner)
    return Report(expressions, results, problems + metric_problems(results, recorded_names(objects)))

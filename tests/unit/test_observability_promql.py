"""Every PromQL expression of the dashboards and alert rules, parsed by Prometheus' REAL parser
(tools/promql-check, built from the prometheus module pinned in versions.toml), and every metric
it selects exported by a known source or recorded by our own rules.

The checker is built once into ~/.cache/inferbox/tools (about half a minute cold). Without Go the
tests that need it skip, except in CI (INFERBOX_TESTENV_REQUIRED=1), where they fail.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from inferbox import PROJECT_ROOT
from inferbox.config import Settings
from inferbox.errors import ConfigError
from inferbox.observability import promql
from inferbox.observability.check import all_expressions, check_all, metric_problems
from inferbox.observability.dashboards import DashboardError, grafana_to_promql
from inferbox.observability.manifests import recorded_names, render_monitoring
from inferbox.observability.pins import ObservabilityPin, load_pin
from inferbox.observability.promql import CheckResult, Expression
from inferbox.runner import Command, Result, ShellRunner

VERSIONS = PROJECT_ROOT / "versions.toml"


class CountingRunner:
    """The real runner, remembering what it ran (to prove the cache is used)."""

    dry_run = False

    def __init__(self) -> None:
        self.inner = ShellRunner()
        self.commands: list[tuple[str, ...]] = []

    def run(self, command: Command, *, check: bool = True) -> Result:
        self.commands.append(command.argv)
        return self.inner.run(command, check=check)


@pytest.fixture(scope="module")
def pin() -> ObservabilityPin:
    # No fallback: until versions.toml has the [observability] table this fails with the table to add.
    return load_pin(VERSIONS)


@pytest.fixture(scope="module")
def binary(pin: ObservabilityPin) -> Path:
    if promql.find_go() is None:
        if os.environ.get("INFERBOX_TESTENV_REQUIRED") == "1":
            pytest.fail("Go is required in CI to build tools/promql-check (the PromQL checker)")
        pytest.skip("`go` not found: tools/promql-check (Prometheus' PromQL parser) cannot be built; install Go 1.25+")
    return promql.ensure_built(pin)


# -- the checker itself -------------------------------------------------------------------------------


def test_checker_reports_parse_errors_and_selected_metrics(binary: Path) -> None:
    results = promql.check(binary, [
        Expression("ok", 'sum by (le) (rate(istio_request_duration_milliseconds_bucket{reporter="destination"}[5m]))'),
        Expression("two", "kube_deployment_status_replicas_available < kube_deployment_spec_replicas"),
        Expression("name-matcher", '{__name__="up", job="x"} == 0'),
        Expression("regex-name", '{__name__=~"istio_.+"}'),
        Expression("broken", "rate(up[5m]"),
        Expression("bad-function", "rate_of(up[5m])"),
    ])
    by_id = {r.id: r for r in results}
    assert by_id["ok"].ok and by_id["ok"].metrics == ("istio_request_duration_milliseconds_bucket",)
    assert by_id["two"].metrics == ("kube_deployment_spec_replicas", "kube_deployment_status_replicas_available")
    assert by_id["name-matcher"].metrics == ("up",)
    assert by_id["regex-name"].unnamed_selectors == 1 and by_id["regex-name"].metrics == ()
    assert not by_id["broken"].ok and "parse error" in by_id["broken"].errors[0]
    assert not by_id["bad-function"].ok and "rate_of" in by_id["bad-function"].errors[0]


def test_checker_is_built_from_the_pinned_module_and_cached(pin: ObservabilityPin, binary: Path) -> None:
    assert binary.parent.name.startswith("promql-check-") and PROJECT_ROOT not in binary.parents
    runner = CountingRunner()
    assert runner.inner.run(Command((str(binary), "-version"), mutating=False)).stdout.strip() == \
        pin.prometheus_module_version
    started = time.monotonic()
    assert promql.ensure_built(pin, runner=runner) == binary
    assert [argv[1:] for argv in runner.commands] == [("env", "GOVERSION")]  # no build: the cache answered
    assert time.monotonic() - started < 10


def test_pin_matches_a_prometheus_3_release(pin: ObservabilityPin) -> None:
    assert pin.prometheus_release.startswith("v3.")
    assert promql.required_module_version() == pin.prometheus_module_version


def test_go_mod_disagreeing_with_the_pin_is_refused(tmp_path: Path, pin: ObservabilityPin) -> None:
    other = ObservabilityPin(prometheus_module_version="v0.300.0")
    with pytest.raises(promql.PromqlToolError, match=r"prometheus/prometheus v0\.3\d+\.\d+ but .* pins v0\.300"):
        promql.ensure_built(other, cache_dir=tmp_path)
    assert not list(tmp_path.iterdir())


def test_missing_go_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(promql, "find_go", lambda: None)
    with pytest.raises(promql.GoNotFound, match="needs the Go toolchain"):
        promql.ensure_built(ObservabilityPin(prometheus_module_version="v0.300.0"), cache_dir=tmp_path)


def test_missing_or_bad_observability_pin_is_a_clear_error(tmp_path: Path) -> None:
    text = (PROJECT_ROOT / "versions.toml").read_text()
    versions = tmp_path / "versions.toml"
    versions.write_text(text.split("[observability]")[0])
    with pytest.raises(ConfigError) as info:
        load_pin(versions)
    assert ("observability", "required field is missing") in info.value.problems
    versions.write_text(re.sub(r'prometheus_module_version = "[^"]*"', 'prometheus_module_version = "0.313"', text))
    with pytest.raises(ConfigError, match=r"observability\.prometheus_module_version: malformed version"):
        load_pin(versions)


# -- Grafana's query language on top of PromQL ----------------------------------------------------------


def test_grafana_macros_and_variables_become_plain_promql() -> None:
    expr = 'sum(rate(x{tenant=~"$tenant", model=~"${model}"}[$__rate_interval])) offset $__range'
    assert grafana_to_promql(expr, ["tenant", "model"]) == 'sum(rate(x{tenant=~".*", model=~".*"}[5m])) offset 5m'
    # An escaped quote does not end the string: the variable after it is still inside.
    assert grafana_to_promql('x{a="b\\"$tenant"}', ["tenant"]) == 'x{a="b\\".*"}'
    with pytest.raises(DashboardError, match="outside a string"):
        grafana_to_promql("rate(x[5m]) > $threshold", ["threshold"])
    with pytest.raises(DashboardError, match="unknown template variable"):
        grafana_to_promql('x{a="$nope"}', ["tenant"])


# -- the shipped dashboards and rules ------------------------------------------------------------------


def test_every_dashboard_and_rule_expression_parses_and_selects_exported_metrics(
        binary: Path, make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    objects = render_monitoring(settings)
    expressions, structural = all_expressions(settings, objects)
    assert structural == []
    results = promql.check(binary, expressions)
    assert metric_problems(results, recorded_names(objects)) == []
    # Every dashboard and every rule was seen, with its queries.
    ids = {r.id.split(" ")[0] for r in results}
    assert {"inference-overview.json", "gpu.json", "platform-health.json", "ai-gateway-usage.json",
            "PrometheusRule"} <= ids
    used = {m for r in results for m in r.metrics}
    assert {"istio_requests_total", "istio_request_duration_milliseconds_bucket", "request_predict_seconds_bucket",
            "DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE", "DCGM_FI_DEV_GPU_TEMP",
            "DCGM_FI_DEV_POWER_USAGE", "kube_deployment_status_replicas_available",
            "kube_pod_container_status_restarts_total", "up", "gen_ai_client_token_usage_sum",
            "gen_ai_server_request_duration_seconds_count", "inferbox:tenant_token_budget:per_second",
            "inferbox:tenant_tokens:rate5m"} <= used


def test_check_all_reports_nothing_for_the_shipped_files(binary: Path, make_settings: Callable[..., Settings]) -> None:
    report = check_all(make_settings())
    assert report.ok, "\n".join(report.problems)
    assert len(report.results) == len(report.expressions) > 40


def test_unknown_metrics_parse_errors_and_unnamed_selectors_are_problems() -> None:
    results = [CheckResult("typo", (), ("istio_request_total",)),
               CheckResult("recorded", (), ("inferbox:gpu_memory_used:ratio",)),
               CheckResult("broken", ("1:5: parse error: unexpected end of input",), ()),
               CheckResult("anything", (), (), unnamed_selectors=1)]
    problems = metric_problems(results, {"inferbox:gpu_memory_used:ratio"})
    assert problems == [
        "typo: metric 'istio_request_total' is exported by no known source (inferbox/observability/metrics.py) "
        "nor recorded by our rules",
        "broken: 1:5: parse error: unexpected end of input",
        "anything: a selector names no metric (cannot be checked)",
    ]



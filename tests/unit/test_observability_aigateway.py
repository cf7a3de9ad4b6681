"""Usage showback for the AI gateway: the PodMonitor that scrapes its external processor, the
token-usage recording rule and the budget-burn alert, the usage dashboard, and the gen_ai_* names
they use (all of them exported by the AI gateway, inferbox.observability.metrics.AI_GATEWAY)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from inferbox.aigateway import BUDGET_RECORD, TENANT_HEADER
from inferbox.bootstrap.phases import AI_GATEWAY_NAME, ENVOY_GATEWAY_NAMESPACE
from inferbox.config import Settings
from inferbox.observability import metrics, promql
from inferbox.observability.dashboards import dashboard_expressions, iter_panels, load_dashboards, variables
from inferbox.observability.manifests import (
    MONITORING_TEMPLATES,
    TOKENS_RECORD,
    AlertThresholds,
    recorded_names,
    render_monitoring,
    rule_expressions,
)
from inferbox.observability.pins import load_pin

DASHBOARD = "ai-gateway-usage.json"
# A gen_ai_* name in metric position: followed by a selector's braces or a range.
GEN_AI_METRIC = re.compile(r"\b(gen_ai_[a-z_]+)\s*[{\[]")


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def objects(settings: Settings) -> list[dict[str, Any]]:
    return render_monitoring(settings)


@pytest.fixture
def dashboard(settings: Settings) -> dict[str, Any]:
    return load_dashboards(settings.root)[DASHBOARD]


def rules(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    [rule] = [o for o in objects if o["kind"] == "PrometheusRule"]
    return {r.get("alert") or r["record"]: r for g in rule["spec"]["groups"] for r in g["rules"]}


def panel_exprs(dashboard: dict[str, Any]) -> dict[str, list[str]]:
    return {p["title"]: [t["expr"] for t in p["targets"]] for p in iter_panels(dashboard)}


# -- the names ----------------------------------------------------------------------------------------


def test_ai_gateway_list_is_the_four_documented_histograms() -> None:
    assert metrics.KNOWN_METRICS["ai-gateway"] is metrics.AI_GATEWAY
    documented = metrics.histogram(
        "gen_ai_client_token_usage", "gen_ai_server_request_duration_seconds",
        "gen_ai_server_time_to_first_token_seconds", "gen_ai_server_time_per_output_token_seconds")
    assert documented == metrics.AI_GATEWAY
    assert metrics.source_of("gen_ai_client_token_usage_sum") == "ai-gateway"
    # The OTel exporter adds no unit suffix for "token" (examples/monitoring/grafana-dashboard.json@v1.1.0).
    assert metrics.source_of("gen_ai_client_token_usage_tokens_sum") is None


def test_every_gen_ai_name_in_the_dashboard_and_rules_is_exported(objects: list[dict[str, Any]],
                                                                  dashboard: dict[str, Any]) -> None:
    exprs = [e.expr for e in dashboard_expressions(dashboard, DASHBOARD)] + [e.expr for e in rule_expressions(objects)]
    used = {name for expr in exprs for name in GEN_AI_METRIC.findall(expr)}
    assert used, "the dashboard and rules select no gen_ai_* metric"
    assert used <= metrics.AI_GATEWAY, used - metrics.AI_GATEWAY
    assert {"gen_ai_client_token_usage_sum", "gen_ai_server_request_duration_seconds_count",
            "gen_ai_server_request_duration_seconds_bucket", "gen_ai_server_time_to_first_token_seconds_bucket"} <= used


def test_gen_ai_names_parsed_by_prometheus_are_exported(objects: list[dict[str, Any]], dashboard: dict[str, Any],
                                                        settings: Settings) -> None:
    """The same with Prometheus' own parser: every metric the new expressions select is known."""
    if promql.find_go() is None:
        if os.environ.get("INFERBOX_TESTENV_REQUIRED") == "1":
            pytest.fail("Go is required in CI to build tools/promql-check (the PromQL checker)")
        pytest.skip("`go` not found: tools/promql-check cannot be built")
    binary = promql.ensure_built(load_pin(settings.root / "versions.toml"))
    expressions = dashboard_expressions(dashboard, DASHBOARD) + [
        e for e in rule_expressions(objects) if "inferbox.aigateway/" in e.id]
    results = promql.check(binary, expressions)
    assert all(r.ok for r in results), [r.errors for r in results if not r.ok]
    selected = {m for r in results for m in r.metrics}
    assert {m for m in selected if m.startswith("gen_ai_")} <= metrics.AI_GATEWAY
    assert metrics.unknown(selected, recorded=recorded_names(objects)) == []
    assert {TOKENS_RECORD, BUDGET_RECORD} <= selected


def test_tenant_label_comes_from_the_verified_tenant_header(settings: Settings) -> None:
    """The rules and dashboard group by `tenant`: the AI gateway's controller maps the header the
    gateway's JWT filter fills to that label."""
    values = yaml.safe_load((settings.root / "helm-values" / "ai-gateway.yaml").read_text())
    mapping = dict(pair.split(":") for pair in values["controller"]["metricsRequestHeaderAttributes"].split(","))
    assert mapping == {TENANT_HEADER: "tenant"}


# -- the PodMonitor --------------------------------------------------------------------------------------


def test_ai_gateway_monitor_scrapes_the_external_processor_of_the_gateway_pods(objects: list[dict[str, Any]]) -> None:
    monitors = {o["metadata"]["name"]: o for o in objects if o["kind"] == "PodMonitor"}
    spec = monitors["ai-gateway"]["spec"]
    assert spec["namespaceSelector"] == {"matchNames": [ENVOY_GATEWAY_NAMESPACE]} == \
        {"matchNames": ["envoy-gateway-system"]}
    assert spec["selector"] == {"matchLabels": {
        "gateway.envoyproxy.io/owning-gateway-name": AI_GATEWAY_NAME,
        "gateway.envoyproxy.io/owning-gateway-namespace": ENVOY_GATEWAY_NAMESPACE,
        "app.kubernetes.io/managed-by": "envoy-gateway"}}
    [endpoint] = spec["podMetricsEndpoints"]
    # ai-gateway internal/controller/extproc_builder.go@v1.1.0: port aigw-admin (1064) serves /metrics.
    assert (endpoint["port"], endpoint["path"]) == ("aigw-admin", "/metrics")
    # Scraped as served: no address rewrite to the Istio agent, unlike the predictors' monitor.
    assert "relabelings" not in endpoint


# -- the rules --------------------------------------------------------------------------------------------


def test_usage_record_counts_input_and_output_tokens_per_tenant(objects: list[dict[str, Any]]) -> None:
    record = rules(objects)[TOKENS_RECORD]
    expr = record["expr"]
    assert expr.count('gen_ai_client_token_usage_sum{tenant!="", gen_ai_token_type=~"input|output"}[5m]') == 2
    assert 'sum by (tenant, token_type)' in expr and '"token_type", "$1", "gen_ai_token_type"' in expr
    assert '"token_type", "total"' in expr
    assert TOKENS_RECORD in recorded_names(objects)


def test_budget_burn_alert_joins_usage_to_every_budget(objects: list[dict[str, Any]]) -> None:
    alert = rules(objects)["TenantTokenBudgetBurn"]
    defaults = AlertThresholds()
    assert alert["expr"].split() == [
        TOKENS_RECORD, "/", "on", "(tenant,", "token_type)", "group_right", BUDGET_RECORD, ">",
        str(defaults.budget_burn_ratio)]
    assert alert["for"] == defaults.budget_burn_for
    assert alert["labels"]["severity"] == "warning"
    assert set(alert["annotations"]) == {"summary", "description", "runbook"}
    assert "{{ $labels.window }}" in alert["annotations"]["summary"]
    # The budgets are recorded in the tenants' namespaces (manifests/tenant/aigateway.yaml.j2), not here.
    assert BUDGET_RECORD not in {r for r in rules(objects) if r != "TenantTokenBudgetBurn"}
    assert BUDGET_RECORD in recorded_names(objects) and BUDGET_RECORD in recorded_names([])


def test_budget_burn_threshold_and_duration_come_from_the_thresholds(settings: Settings) -> None:
    objects = render_monitoring(settings, templates=[MONITORING_TEMPLATES[1]],
                                thresholds=AlertThresholds(budget_burn_ratio=0.5, budget_burn_for="30m"))
    alert = rules(objects)["TenantTokenBudgetBurn"]
    assert alert["expr"].endswith("> 0.5") and alert["for"] == "30m"
    assert "above 50% of the rate" in alert["annotations"]["description"]


def test_budget_record_labels_are_the_join_labels(settings: Settings) -> None:
    """The tenants' budget rule labels its series tenant, token_type, window: the alert joins on the
    first two, and token_type takes the values the usage record writes."""
    template = (settings.root / "manifests" / "tenant" / "aigateway.yaml.j2").read_text()
    budget_rule = template.split("record: {{ ai.budget_record }}", 1)[1]
    labels = re.findall(r"^\s{12}([a-z_]+):", budget_rule, re.MULTILINE)
    assert labels == ["tenant", "token_type", "window"]


# -- the dashboard ----------------------------------------------------------------------------------------


def test_usage_dashboard_variables_and_panels(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "inferbox-ai-gateway" and dashboard["title"] == "inferbox / AI gateway usage"
    found = {v["name"]: v for v in variables(dashboard)}
    assert list(found) == ["datasource", "tenant", "model"]
    for var in ("tenant", "model"):
        assert found[var]["definition"].startswith("label_values(gen_ai_server_request_duration_seconds_count{")
        assert found[var]["query"]["query"] == found[var]["definition"]
        assert found[var]["multi"] and found[var]["includeAll"] and found[var]["allValue"] == ".*"
    exprs = panel_exprs(dashboard)
    per_model = "sum by (tenant, gen_ai_request_model"
    tokens = exprs["Tokens/s per tenant and model (input / output)"]
    assert [e for e in tokens if f"{per_model}, gen_ai_token_type) (rate(gen_ai_client_token_usage_sum" in e
            and 'gen_ai_token_type=~"input|output"' in e]
    assert [e for e in exprs["Requests/s per tenant and model"]
            if e.startswith(f"{per_model}) (rate(gen_ai_server_request_duration_seconds_count{{")]
    assert [e for e in exprs["Error ratio per tenant and model"] if 'error_type!=""' in e and per_model in e]
    p95 = "histogram_quantile(0.95, sum by (gen_ai_request_model, le) (rate("
    assert [e for e in exprs["Time to first token p95 per model"]
            if e.startswith(f"{p95}gen_ai_server_time_to_first_token_seconds_bucket")]
    assert [e for e in exprs["Request duration p95 per model"]
            if e.startswith(f"{p95}gen_ai_server_request_duration_seconds_bucket")]
    burn = exprs["Budget burn per tenant"]
    assert burn == [f'{TOKENS_RECORD}{{tenant=~"$tenant"}} / on (tenant, token_type) group_right '
                    f'{BUDGET_RECORD}{{tenant=~"$tenant"}}']
    # Every query is scoped to the selected tenants.
    assert all('tenant=~"$tenant"' in e for es in exprs.values() for e in es)


def test_usage_dashboard_is_shipped_as_a_configmap(objects: list[dict[str, Any]], settings: Settings) -> None:
    path: Path = settings.root / "dashboards" / DASHBOARD
    [cm] = [o for o in objects
            if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "inferbox-dashboard-ai-gateway-usage"]
    assert cm["data"] == {DASHBOARD: path.read_text()}

"""A run's verdict: summary.json from Locust's result, the SLO checks, the tables, and ``--compare``.

The SLOs are judged on the real requests only (custom metrics such as time to first token are
reported beside them, never counted as requests). A threshold that cannot be judged because the
run produced no data for it (no request completed, no LLM chunk arrived) counts as breached: a
gate must not pass a run that measured nothing.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.text import Text

from inferbox.errors import ConfigError, InferboxError
from inferbox.load.profiles import Profile, Slo
from inferbox.ui import FitTable, styled

SUMMARY_FILE = "summary.json"
SUMMARY_SCHEMA = 1
TTFT, ITL, TOKENS_PER_S, COMPLETION_TOKENS = ("openai:ttft_ms", "openai:itl_ms", "openai:tokens_per_s",
                                              "openai:completion_tokens")


@dataclass(frozen=True)
class Verdict:
    slo: str  # the profile's key, e.g. "p95Ms"
    description: str
    threshold: float
    observed: float | None
    unit: str
    ok: bool

    def line(self) -> str:
        seen = "no data" if self.observed is None else f"{_fmt(self.observed)} {self.unit}".strip()
        relation = "<=" if self.slo not in ("minRps", "minTokensPerS") else ">="
        return f"{self.slo}: {self.description} {seen} (must be {relation} {_fmt(self.threshold)} {self.unit})".strip()


class SloBreached(InferboxError):
    """At least one SLO was breached; the message names each one. The run's files are written."""

    def __init__(self, breached: list[Verdict], run_dir: Path) -> None:
        self.breached = breached
        self.run_dir = run_dir
        names = ", ".join(v.slo for v in breached)
        lines = "\n  ".join(v.line() for v in breached)
        super().__init__(f"SLO breached: {names}\n  {lines}\n  report: {run_dir / 'report.html'}")


def _fmt(value: float) -> str:
    if value == int(value) and abs(value) >= 1:
        return f"{int(value)}"
    return f"{value:.4g}"


def _percentile(block: dict[str, Any] | None, key: str) -> float | None:
    if not block or not block.get("count"):
        return None
    value = (block.get("percentiles") or {}).get(key)
    return None if value is None else float(value)


def _source(block: dict[str, Any] | None) -> str:
    """Which figure a percentile verdict used: exact (every sample) or Locust's rounded buckets."""
    return "exact" if (block or {}).get("percentiles_exact") else "Locust's rounded"


def judge(slo: Slo, summary: dict[str, Any]) -> list[Verdict]:
    """Each threshold the profile sets, against what the run measured. Percentiles are judged on
    the exact figures (every sample, load/loadkit.py) and each verdict says which figure it used."""
    requests = summary["requests"]
    metrics = summary.get("custom_metrics") or {}
    count = requests.get("count") or 0
    ttft, itl, rate = metrics.get(TTFT), metrics.get(ITL), metrics.get(TOKENS_PER_S)
    checks: list[tuple[str, str, float | None, float | None, str, bool]] = [
        ("p50Ms", f"median latency ({_source(requests)})", slo.p50_ms, _percentile(requests, "p50"), "ms", False),
        ("p95Ms", f"p95 latency ({_source(requests)})", slo.p95_ms, _percentile(requests, "p95"), "ms", False),
        ("p99Ms", f"p99 latency ({_source(requests)})", slo.p99_ms, _percentile(requests, "p99"), "ms", False),
        ("maxErrorRate", "error rate", slo.max_error_rate, requests.get("error_rate") if count else None, "", False),
        ("minRps", "throughput", slo.min_rps, requests.get("rps") if count else None, "req/s", True),
        ("ttftP95Ms", f"p95 time to first token ({_source(ttft)})", slo.ttft_p95_ms, _percentile(ttft, "p95"), "ms",
         False),
        ("itlP95Ms", f"p95 inter-token latency ({_source(itl)})", slo.itl_p95_ms, _percentile(itl, "p95"), "ms",
         False),
        ("minTokensPerS", f"median streaming rate ({_source(rate)})", slo.min_tokens_per_s,
         _percentile(rate, "p50"), "tokens/s", True),
    ]
    verdicts = []
    for key, description, threshold, observed, unit, at_least in checks:
        if threshold is None:
            continue
        # No data is a breach: a gate must not pass a run that measured nothing.
        ok = observed is not None and (observed >= threshold if at_least else observed <= threshold)
        verdicts.append(Verdict(key, description, threshold, observed, unit, ok))
    return verdicts


def build_summary(result: dict[str, Any], *, run: str, profile: Profile, model: str, target: str,
                  base_url: str, tenant: str | None, workers: int, versions: dict[str, str],
                  started: str, finished: str) -> dict[str, Any]:
    """summary.json: what ran, what it measured, and the verdicts."""
    requests = dict(result["requests"])
    count = requests.get("count") or 0
    requests["error_rate"] = (requests.get("failures") or 0) / count if count else None
    metrics = result.get("metrics") or {}
    summary: dict[str, Any] = {
        "schema": SUMMARY_SCHEMA,
        "run": run,
        "started": started,
        "finished": finished,
        "duration_s": result.get("duration_s"),
        "stop_reason": result.get("stop_reason"),
        "model": model,
        "target": target,
        "base_url": base_url,
        "tenant": tenant,
        "workers": workers,
        "profile": profile.model_dump(mode="json", by_alias=True, exclude_none=True),
        "requests": requests,
        "endpoints": result.get("endpoints") or {},
        "custom_metrics": metrics,
        "errors": result.get("errors") or [],
        "versions": versions,
    }
    tokens = metrics.get(COMPLETION_TOKENS)
    if tokens and tokens.get("count") and result.get("duration_s"):
        summary["output_tokens"] = {"total": tokens["sum"], "per_s": tokens["sum"] / result["duration_s"]}
    verdicts = judge(profile.slo, summary)
    summary["slo"] = [asdict(v) for v in verdicts]
    summary["passed"] = all(v.ok for v in verdicts)
    return summary


def verdicts_of(summary: dict[str, Any]) -> list[Verdict]:
    return [Verdict(**v) for v in summary.get("slo") or []]


def write_summary(run_dir: Path, summary: dict[str, Any]) -> Path:
    path = run_dir / SUMMARY_FILE
    path.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return path


def find_summary(reference: str, loadtests_dir: Path) -> Path:
    """``--compare``: a run folder, its summary.json, or a run's name under .inferbox/loadtests."""
    candidates = [Path(reference), loadtests_dir / reference]
    for candidate in candidates:
        path = candidate / SUMMARY_FILE if candidate.is_dir() else candidate
        if path.is_file():
            return path
    runs = sorted(p.name for p in loadtests_dir.glob("*") if (p / SUMMARY_FILE).is_file())[-5:]
    hint = f" (latest runs: {', '.join(runs)})" if runs else ""
    raise ConfigError("command line", [("compare", f"no run {reference!r}: pass a run folder or its "
                                                   f"summary.json{hint}")])


def load_summary(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(str(path), [("<file>", f"not a readable summary.json: {exc}")]) from None
    if data.get("schema") != SUMMARY_SCHEMA or "requests" not in data:
        raise ConfigError(str(path), [("schema", f"not an inferbox load-test summary (schema {SUMMARY_SCHEMA})")])
    return data


# -- comparison ----------------------------------------------------------------------------------
# (label, getter, lower is better)
def _get(*keys: str) -> Any:
    def getter(summary: dict[str, Any]) -> float | None:
        node: Any = summary
        for key in keys:
            if not isinstance(node, dict):
                return None
            node = node.get(key)
        return float(node) if isinstance(node, int | float) else None

    return getter


COMPARED = [
    ("requests", _get("requests", "count"), None),
    ("throughput (req/s)", _get("requests", "rps"), False),
    ("error rate", _get("requests", "error_rate"), True),
    ("p50 (ms)", _get("requests", "percentiles", "p50"), True),
    ("p95 (ms)", _get("requests", "percentiles", "p95"), True),
    ("p99 (ms)", _get("requests", "percentiles", "p99"), True),
    ("TTFT p95 (ms)", _get("custom_metrics", TTFT, "percentiles", "p95"), True),
    ("ITL p95 (ms)", _get("custom_metrics", ITL, "percentiles", "p95"), True),
    ("tokens/s p50", _get("custom_metrics", TOKENS_PER_S, "percentiles", "p50"), False),
]


def comparison(now: dict[str, Any], before: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per metric both runs have: before, now, change (absolute and relative), better or worse."""
    rows = []
    for label, getter, lower_is_better in COMPARED:
        a, b = getter(before), getter(now)
        if a is None or b is None:
            continue
        change = b - a
        relative = change / a if a else None
        if lower_is_better is None or change == 0:
            direction = "same" if change == 0 else "-"
        else:
            direction = "better" if (change < 0) == lower_is_better else "worse"
        rows.append({"metric": label, "before": a, "now": b, "change": change, "relative": relative,
                     "direction": direction})
    return rows


# -- tables --------------------------------------------------------------------------------------
def _cell(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def summary_table(summary: dict[str, Any]) -> FitTable:
    req = summary["requests"]
    pct = req.get("percentiles") or {}
    table = FitTable(f"load test {summary['run']}")
    for column in ("requests", "failed", "error rate", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms"):
        table.add_column(column, justify="right")
    error_rate = req.get("error_rate")
    table.add_row(_cell(req.get("count")), _cell(req.get("failures")),
                  "-" if error_rate is None else f"{error_rate:.2%}", _cell(req.get("rps")),
                  _cell(pct.get("p50")), _cell(pct.get("p95")), _cell(pct.get("p99")), _cell(req.get("max")))
    return table


def metrics_table(summary: dict[str, Any]) -> FitTable | None:
    metrics = summary.get("custom_metrics") or {}
    if not metrics:
        return None
    table = FitTable("custom metrics")
    for column in ("metric", "samples", "p50", "p95", "p99", "avg"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for name, block in sorted(metrics.items()):
        pct = block.get("percentiles") or {}
        table.add_row(name, _cell(block.get("count")), _cell(pct.get("p50")), _cell(pct.get("p95")),
                      _cell(pct.get("p99")), _cell(block.get("avg")))
    return table


def slo_table(summary: dict[str, Any]) -> FitTable:
    table = FitTable(f"SLOs (profile {summary['profile']['name']})")
    for column in ("SLO", "measures", "threshold", "observed", "verdict"):
        table.add_column(column)
    for v in verdicts_of(summary):
        relation = ">=" if v.slo in ("minRps", "minTokensPerS") else "<="
        table.add_row(v.slo, v.description, f"{relation} {_fmt(v.threshold)} {v.unit}".strip(),
                      "no data" if v.observed is None else f"{_cell(v.observed)} {v.unit}".strip(),
                      styled("ok", "green") if v.ok else styled("BREACHED", "bold red"))
    return table


def compare_table(rows: list[dict[str, Any]], before: str) -> FitTable:
    table = FitTable(f"compared with {before}")
    for column in ("metric", "before", "now", "change"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    style = {"better": "green", "worse": "red"}
    for row in rows:
        relative = "" if row["relative"] is None else f" ({row['relative']:+.1%})"
        change = f"{row['change']:+.4g}{relative}"
        cell: str | Text = change
        if row["direction"] in style:
            cell = styled(f"{change} {row['direction']}", style[row["direction"]])
        table.add_row(row["metric"], _cell(row["before"]), _cell(row["now"]), cell)
    return table

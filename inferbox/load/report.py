"""The report a person reads: plots from Locust's ``*_stats_history.csv`` and a ``report.html``.

* ``latency.png``: p50/p95/p99 over time (Locust's rolling 10-second window), the p95 SLO dashed;
* ``throughput.png``: requests/s and failures/s over time, with the user count;
* ``llm.png`` (streaming runs): time to first token, inter-token latency and tokens/s over time;
* ``gpu.png`` (a cluster run with ``--prometheus-url``): DCGM's GPU utilisation and framebuffer
  memory over the run window, from Prometheus's ``query_range``.

``report.html`` shows the verdicts, the tables and these images (referenced beside it, so the folder
can be copied anywhere, e.g. docs/sample-loadtest/). Plotting uses matplotlib's object API with the
Agg canvas: no pyplot state, no display needed.
"""

from __future__ import annotations

import csv
import html
import json
import math
import shutil
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from inferbox.load.summary import ITL, SUMMARY_FILE, TOKENS_PER_S, TTFT, verdicts_of

HISTORY_FILE = "locust_stats_history.csv"
REPORT_FILE = "report.html"
METRIC = "METRIC"
AGGREGATED = "Aggregated"
GPU_QUERIES = {
    "utilisation (%)": "DCGM_FI_DEV_GPU_UTIL",
    "framebuffer used (MiB)": "DCGM_FI_DEV_FB_USED",
}
# Files that make a report readable on their own (what copy_for_docs keeps).
SMALL_FILES = ("summary.json", "locust_stats.csv", "locust_failures.csv", HISTORY_FILE)


@dataclass
class Series:
    t: list[float] = field(default_factory=list)
    values: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))


@dataclass(frozen=True)
class GpuPanel:
    message: str | None = None  # shown instead of the plot
    series: dict[str, list[tuple[str, list[tuple[float, float]]]]] = field(default_factory=dict)


def _number(text: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return math.nan
    return value


def read_history(path: Path) -> dict[tuple[str, str], Series]:
    """(type, name) -> time series of the history CSV's columns (t in seconds from the first row).

    Percentiles are NaN where Locust has none to give (it writes 0 or N/A there).
    """
    out: dict[tuple[str, str], Series] = {}
    try:
        handle = path.open(newline="")
    except OSError:
        return out
    with handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return out
    start = min(_number(r["Timestamp"]) for r in rows)
    for row in rows:
        series = out.setdefault((row.get("Type") or "", row.get("Name") or ""), Series())
        series.t.append(_number(row["Timestamp"]) - start)
        seen = _number(row.get("Total Request Count", "")) > 0
        for column in ("User Count", "Requests/s", "Failures/s", "Total Request Count", "Total Failure Count"):
            series.values[column].append(_number(row.get(column, "")))
        for column in ("50%", "95%", "99%"):
            # Locust writes whole milliseconds and 0 while its rolling window holds no sample yet.
            value = _number(row.get(column, "")) if seen else math.nan
            series.values[column].append(math.nan if value == 0 else value)
    return out


def rates(series: Series, column: str) -> dict[float, float]:
    """Per-interval rate of a cumulative count: t -> (count(t) - count(t-1)) / dt."""
    out: dict[float, float] = {}
    counts = series.values[column]
    for i in range(1, len(series.t)):
        dt = series.t[i] - series.t[i - 1]
        if dt > 0 and not math.isnan(counts[i]) and not math.isnan(counts[i - 1]):
            out[series.t[i]] = max(0.0, counts[i] - counts[i - 1]) / dt
    return out


def _real(history: dict[tuple[str, str], Series]) -> list[tuple[str, Series]]:
    """What the request plots use: the aggregate when it holds only requests, else each endpoint."""
    has_metrics = any(kind == METRIC for kind, _ in history)
    endpoints = [(f"{kind} {name}", s) for (kind, name), s in history.items() if kind != METRIC and name != AGGREGATED]
    if not has_metrics and (("", AGGREGATED) in history) and len(endpoints) != 1:
        return [("all requests", history[("", AGGREGATED)])]
    return endpoints


def _figure(title: str) -> tuple[Figure, Any]:
    fig = Figure(figsize=(9, 3.6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_title(title, fontsize=11)
    ax.grid(True, alpha=0.3)
    ax.set_xlabel("seconds since start")
    return fig, ax


def _marks(points: int) -> dict[str, Any]:
    """Dots on short series (a 10 s run has 10 points), plain lines on long ones."""
    return {"marker": "o", "markersize": 3} if points < 40 else {}


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, format="png")
    return path


def plot_latency(history: dict[tuple[str, str], Series], out: Path, *, p95_slo: float | None = None) -> Path | None:
    real = _real(history)
    if not real:
        return None
    fig, ax = _figure("response time (rolling 10 s window)")
    peak = 0.0
    for label, series in real:
        wanted = (("50%", "p50"), ("95%", "p95"), ("99%", "p99")) if len(real) == 1 else (("95%", "p95"),)
        for column, name in wanted:
            values = series.values[column]
            peak = max([peak, *(v for v in values if not math.isnan(v))])
            ax.plot(series.t, values, label=name if len(real) == 1 else f"{label} {name}", linewidth=1.4,
                    **_marks(len(series.t)))
    if p95_slo is not None and (peak == 0 or p95_slo <= 3 * peak):
        ax.axhline(p95_slo, color="tab:red", linestyle="--", linewidth=1, label=f"p95 SLO {p95_slo:g} ms")
    ax.set_ylabel("ms")
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, out / "latency.png")


def plot_throughput(history: dict[tuple[str, str], Series], out: Path, *, min_rps: float | None = None) -> Path | None:
    real = _real(history)
    if not real:
        return None
    fig, ax = _figure("throughput (per second)")
    per_t: dict[float, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for _, series in real:
        for t_, rate in rates(series, "Total Request Count").items():
            per_t[t_][0] += rate
        for t_, rate in rates(series, "Total Failure Count").items():
            per_t[t_][1] += rate
    t = sorted(per_t)
    rps = [per_t[x][0] for x in t]
    failures = [per_t[x][1] for x in t]
    ax.plot(t, rps, label="requests/s", color="tab:blue", linewidth=1.4, **_marks(len(t)))
    ax.plot(t, failures, label="failures/s", color="tab:red", linewidth=1.2)
    if min_rps is not None and min_rps <= 3 * max([0.0, *(v for v in rps if not math.isnan(v))]):
        ax.axhline(min_rps, color="tab:blue", linestyle="--", linewidth=1, label=f"min rps SLO {min_rps:g}")
    ax.set_ylabel("per second")
    ax.set_ylim(bottom=0)
    users_source = history.get(("", AGGREGATED)) or real[0][1]
    twin = ax.twinx()
    twin.plot(users_source.t, users_source.values["User Count"], color="tab:gray", linestyle=":", label="users")
    twin.set_ylabel("users")
    twin.set_ylim(bottom=0)
    lines = ax.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="upper left", fontsize=8)
    return _save(fig, out / "throughput.png")


def plot_llm(history: dict[tuple[str, str], Series], out: Path) -> Path | None:
    ttft, itl, rate = (history.get((METRIC, name)) for name in (TTFT, ITL, TOKENS_PER_S))
    if ttft is None:
        return None
    fig = Figure(figsize=(9, 5.4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.set_title("LLM streaming (rolling 10 s window)", fontsize=11)
    top.plot(ttft.t, ttft.values["50%"], label="TTFT p50", **_marks(len(ttft.t)))
    top.plot(ttft.t, ttft.values["95%"], label="TTFT p95", **_marks(len(ttft.t)))
    if itl is not None:
        top.plot(itl.t, itl.values["95%"], label="inter-token p95", **_marks(len(itl.t)))
    top.set_ylabel("ms")
    top.legend(loc="upper left", fontsize=8)
    if rate is not None:
        bottom.plot(rate.t, rate.values["50%"], label="tokens/s p50 (per response)", color="tab:green",
                    **_marks(len(rate.t)))
        bottom.legend(loc="upper left", fontsize=8)
    bottom.set_ylabel("tokens/s")
    bottom.set_xlabel("seconds since start")
    for ax in (top, bottom):
        ax.grid(True, alpha=0.3)
        ax.set_ylim(bottom=0)
    return _save(fig, out / "llm.png")


# -- GPU metrics from Prometheus -----------------------------------------------------------------
def query_range(base_url: str, query: str, start: float, end: float, *, step_s: float,
                timeout_s: float = 10.0) -> list[tuple[str, list[tuple[float, float]]]]:
    """Prometheus's HTTP API ``/api/v1/query_range``: (series label, [(t, value)]) for a matrix result."""
    params = urllib.parse.urlencode({"query": query, "start": f"{start:.3f}", "end": f"{end:.3f}",
                                     "step": f"{step_s:g}"})
    url = f"{base_url.rstrip('/')}/api/v1/query_range?{params}"
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        body = json.loads(response.read())
    if body.get("status") != "success" or body.get("data", {}).get("resultType") != "matrix":
        raise ValueError(f"unexpected answer: {str(body)[:200]}")
    series = []
    for item in body["data"]["result"]:
        labels = item.get("metric") or {}
        name = " ".join(f"{k}={labels[k]}" for k in ("Hostname", "gpu", "modelName") if k in labels) or "gpu"
        series.append((name, [(float(t) - start, float(v)) for t, v in item.get("values") or []]))
    return series


def gpu_panel(prometheus_url: str | None, start: float, end: float, *, target: str) -> GpuPanel:
    if not prometheus_url:
        if target == "local":
            return GpuPanel("no GPU metrics (local target)")
        return GpuPanel("no GPU metrics (pass --prometheus-url, e.g. a port-forward of Prometheus)")
    step = max(1.0, round((end - start) / 300, 1))
    found: dict[str, list[tuple[str, list[tuple[float, float]]]]] = {}
    try:
        for label, query in GPU_QUERIES.items():
            found[label] = query_range(prometheus_url, query, start, end, step_s=step)
    except (OSError, ValueError, urllib.error.URLError) as exc:
        return GpuPanel(f"GPU metrics unavailable from {prometheus_url}: {exc}")
    if not any(found.values()):
        return GpuPanel(f"no DCGM series in {prometheus_url} for the run window (is dcgm-exporter installed?)")
    return GpuPanel(series=found)


def plot_gpu(panel: GpuPanel, out: Path) -> Path | None:
    if not panel.series:
        return None
    fig = Figure(figsize=(9, 5.0), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panel.series), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (label, series) in zip(axes, panel.series.items(), strict=True):
        for name, points in series:
            ax.plot([p[0] for p in points], [p[1] for p in points], label=name, linewidth=1.3)
        ax.set_ylabel(label, fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.set_ylim(bottom=0)
        if series:
            ax.legend(loc="upper left", fontsize=7)
    axes[0].set_title("GPU (DCGM via Prometheus)", fontsize=11)
    axes[-1].set_xlabel("seconds since start")
    return _save(fig, out / "gpu.png")


# -- report.html ---------------------------------------------------------------------------------
def make_plots(run_dir: Path, summary: dict[str, Any], gpu: GpuPanel) -> list[Path]:
    history = read_history(run_dir / HISTORY_FILE)
    slo = summary.get("profile", {}).get("slo", {})
    made = [plot_latency(history, run_dir, p95_slo=slo.get("p95Ms")),
            plot_throughput(history, run_dir, min_rps=slo.get("minRps")),
            plot_llm(history, run_dir), plot_gpu(gpu, run_dir)]
    return [p for p in made if p is not None]


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:980px;color:#222}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ddd;padding:.3rem .6rem;text-align:right}
th{background:#f5f5f5}td.l,th.l{text-align:left}.ok{color:#17803d;font-weight:600}
.bad{color:#c0262d;font-weight:700}.badge{padding:.2rem .6rem;border-radius:.3rem;color:#fff}
.pass{background:#17803d}.fail{background:#c0262d}img{max-width:100%;border:1px solid #eee;margin:.5rem 0}
.note{color:#666;font-style:italic}code{background:#f5f5f5;padding:0 .2rem}
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _n(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return _e(value)


def _table(headers: list[str], rows: list[list[str]], left: int = 1) -> str:
    head = "".join(f"<th class='l'>{_e(h)}</th>" if i < left else f"<th>{_e(h)}</th>" for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f"<td class='l'>{c}</td>" if i < left else f"<td>{c}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render_html(run_dir: Path, summary: dict[str, Any], images: list[Path], gpu: GpuPanel) -> str:
    req = summary["requests"]
    pct = req.get("percentiles") or {}
    profile = summary.get("profile", {})
    passed = summary.get("passed")
    workers = f", {summary['workers']} Locust workers" if summary.get("workers") else ""
    badge = "<span class='badge pass'>SLOs met</span>" if passed else "<span class='badge fail'>SLO breached</span>"
    # An empty inline icon: without one, every browser asks the folder's server for favicon.ico (a 404).
    parts = ["<!doctype html><html><head><meta charset='utf-8'><link rel='icon' href='data:,'>"
             f"<title>load test {_e(summary['run'])}</title>"
             f"<style>{_CSS}</style></head><body>",
             f"<h1>Load test {_e(summary['run'])} {badge}</h1>",
             f"<p>Profile <b>{_e(profile.get('name'))}</b> ({_e(profile.get('description', ''))}) against model "
             f"<b>{_e(summary['model'])}</b> on the {_e(summary['target'])} target <code>{_e(summary['base_url'])}"
             f"</code>{', tenant ' + _e(summary['tenant']) if summary.get('tenant') else ''}"
             f"{workers}. "
             f"{_e(summary['started'])} to {_e(summary['finished'])}; stopped: {_e(summary.get('stop_reason'))}.</p>",
             "<h2>Requests</h2>",
             _table(["requests", "failed", "error rate", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms"],
                    [[_n(req.get("count")), _n(req.get("failures")),
                      "-" if req.get("error_rate") is None else f"{req['error_rate']:.2%}", _n(req.get("rps")),
                      _n(pct.get("p50")), _n(pct.get("p95")), _n(pct.get("p99")), _n(req.get("max"))]], left=0),
             "<h2>SLOs</h2>"]
    verdicts = verdicts_of(summary)
    if verdicts:
        parts.append(_table(["SLO", "measures", "threshold", "observed", "verdict"], [
            [_e(v.slo), _e(v.description),
             f"{'&ge;' if v.slo in ('minRps', 'minTokensPerS') else '&le;'} {_n(v.threshold)} {_e(v.unit)}",
             "no data" if v.observed is None else f"{_n(v.observed)} {_e(v.unit)}",
             "<span class='ok'>ok</span>" if v.ok else "<span class='bad'>BREACHED</span>"] for v in verdicts], left=2))
    else:
        parts.append("<p class='note'>the profile sets no thresholds</p>")
    by_name = {p.name: p for p in images}
    parts.append("<h2>Over time</h2>")
    for name, alt in (("latency.png", "latency percentiles over time"), ("throughput.png", "throughput over time"),
                      ("llm.png", "LLM streaming metrics over time")):
        if name in by_name:
            parts.append(f"<img src='{name}' alt='{alt}'>")
    parts.append("<h2>GPU</h2>")
    parts.append("<img src='gpu.png' alt='GPU utilisation and memory'>" if "gpu.png" in by_name
                 else f"<p class='note'>{_e(gpu.message or 'no GPU metrics')}</p>")
    endpoints = summary.get("endpoints") or {}
    if endpoints:
        parts.append("<h2>Endpoints</h2>")
        parts.append(_table(["endpoint", "requests", "failed", "req/s", "p50 ms", "p95 ms", "p99 ms"], [
            [_e(name), _n(b.get("count")), _n(b.get("failures")), _n(b.get("rps")),
             _n((b.get("percentiles") or {}).get("p50")), _n((b.get("percentiles") or {}).get("p95")),
             _n((b.get("percentiles") or {}).get("p99"))] for name, b in sorted(endpoints.items())]))
    metrics = summary.get("custom_metrics") or {}
    if metrics:
        parts.append("<h2>Custom metrics</h2>")
        parts.append(_table(["metric", "samples", "p50", "p95", "p99", "avg"], [
            [_e(name), _n(b.get("count")), _n((b.get("percentiles") or {}).get("p50")),
             _n((b.get("percentiles") or {}).get("p95")), _n((b.get("percentiles") or {}).get("p99")),
             _n(b.get("avg"))] for name, b in sorted(metrics.items())]))
    errors = summary.get("errors") or []
    if errors:
        parts.append("<h2>Errors</h2>")
        parts.append(_table(["request", "error", "occurrences"], [
            [_e(f"{e['method']} {e['name']}"), _e(e["error"]), _n(e["occurrences"])] for e in errors], left=2))
    versions = summary.get("versions") or {}
    parts.append("<h2>Versions</h2>")
    parts.append(_table(["component", "version"], [[_e(k), _e(v)] for k, v in sorted(versions.items())], left=2))
    files = sorted(p.name for p in run_dir.iterdir() if p.is_file() and p.name != REPORT_FILE)
    parts.append("<h2>Files</h2><ul>" + "".join(f"<li><a href='{_e(f)}'>{_e(f)}</a></li>" for f in files) + "</ul>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_report(run_dir: Path, summary: dict[str, Any], gpu: GpuPanel) -> Path:
    images = make_plots(run_dir, summary, gpu)
    path = run_dir / REPORT_FILE
    path.write_text(render_html(run_dir, summary, images, gpu))
    return path


def copy_for_docs(run_dir: Path, dest: Path, *, gpu_message: str = "no GPU metrics (local target)") -> Path:
    """Copy a run's small files to ``dest`` and write its report there again (no Locust HTML, no log)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in SMALL_FILES:
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, dest / name)
    summary = json.loads((dest / SUMMARY_FILE).read_text())
    return write_report(dest, summary, GpuPanel(gpu_message))

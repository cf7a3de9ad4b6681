"""One load-test run, shared by the local and in-cluster paths (inferbox.load.app and
inferbox.load.incluster): what was chosen, where its folder is, the token it carries, and how
Locust's result becomes ``summary.json``, the report and the verdict."""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from rich.console import Console

from inferbox.config import Settings
from inferbox.errors import ConfigError
from inferbox.load import harness, tracing
from inferbox.load import summary as verdict
from inferbox.load.profiles import Profile
from inferbox.load.report import GpuPanel, gpu_panel, write_report
from inferbox.models.catalog import ModelSpec
from inferbox.ui import warning as ui_warning

TOKEN_MARGIN_S = 600  # a token outlives the run by this much (tokens live 24 h at most)


@dataclass(frozen=True)
class LoadTestOutcome:
    run_dir: Path
    summary: dict[str, Any]

    @property
    def passed(self) -> bool:
        return bool(self.summary.get("passed"))


@dataclass(frozen=True)
class Selection:
    """The validated choice of profile, model and tenant for one run."""

    profile: Profile
    model: ModelSpec
    tenant: str | None


def loadtests_dir(settings: Settings) -> Path:
    return settings.state_dir / "loadtests"


def issue_token(settings: Settings, tenant: str, duration_s: int, console: Console) -> str:
    """The tenant's JWT, valid for the run and a margin (24 h at most)."""
    from inferbox.tenants.app import token_for
    from inferbox.tenants.keys import MAX_TTL_S

    issued, warning = token_for(settings, tenant=tenant, ttl=f"{min(MAX_TTL_S, duration_s + TOKEN_MARGIN_S)}s")
    if warning:
        console.print(ui_warning(warning), soft_wrap=True)
    return issued.token


def new_run_dir(settings: Settings, model: str, profile: str, now: datetime | None = None) -> Path:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    base = loadtests_dir(settings)
    base.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, 100):
        name = f"{stamp}-{model}-{profile}" + (f"-{attempt}" if attempt > 1 else "")
        try:
            (base / name).mkdir()
        except FileExistsError:
            continue
        return base / name
    raise ConfigError(str(base), [("<folder>", "too many runs in the same second")])


def versions_used(settings: Settings, **extra: str) -> dict[str, str]:
    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "unknown"

    return {"inferbox": version("inferbox"), "locust": version("locust"), "matplotlib": version("matplotlib"),
            "python": platform.python_version(), "kserve (versions.toml)": settings.versions.charts.kserve.version,
            "kubernetes (versions.toml)": settings.versions.kubernetes.version, **extra}


def finish(settings: Settings, run_dir: Path, selection: Selection, console: Console, *, target: str, base_url: str,
           workers: int, started: datetime, finished: datetime, prometheus_url: str | None,
           previous: Path | None, trace_service: str = tracing.ENTRY_SERVICE) -> LoadTestOutcome:
    """From Locust's result to summary.json, report.html, the printed verdict (and the breach)."""
    result = json.loads((run_dir / harness.RESULT_FILE).read_text())
    summary = verdict.build_summary(
        result, run=run_dir.name, profile=selection.profile, model=selection.model.name, target=target,
        base_url=base_url, tenant=selection.tenant, workers=workers, versions=versions_used(settings),
        started=started.isoformat(timespec="seconds"), finished=finished.isoformat(timespec="seconds"))
    if (traces := tracing.summary_block(result, run_dir, service=trace_service)) is not None:
        summary["tracing"] = traces
    rows: list[dict[str, Any]] = []
    if previous is not None:
        before = verdict.load_summary(previous)
        rows = verdict.comparison(summary, before)
        summary["compared_with"] = {"run": before.get("run"), "rows": rows}
    verdict.write_summary(run_dir, summary)
    panel: GpuPanel = gpu_panel(prometheus_url, started.timestamp(), finished.timestamp(), target=target)
    report = write_report(run_dir, summary, panel)
    console.print(verdict.summary_table(summary))
    if (metrics := verdict.metrics_table(summary)) is not None:
        console.print(metrics)
    console.print(verdict.slo_table(summary))
    if previous is not None:
        console.print(verdict.compare_table(rows, str(summary["compared_with"]["run"])))
    console.print(f"report: {report}", markup=False, highlight=False, soft_wrap=True)
    for line in tracing.lines(summary, run_dir):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    breached = [v for v in verdict.verdicts_of(summary) if not v.ok]
    if breached:
        raise verdict.SloBreached(breached, run_dir)
    return LoadTestOutcome(run_dir, summary)


def warn_budgets(settings: Settings, name: str, console: Console) -> None:
    """Through the AI gateway the load spends the tenant's token budgets: say so before it does."""
    from inferbox.tenants.app import load as load_tenants
    from inferbox.tenants.spec import select as select_tenant

    (tenant,) = select_tenant(load_tenants(settings), name)
    if tenant.token_budgets:
        budgets = ", ".join(f"{b.tokens} {b.count} tokens per {b.per}" for b in tenant.token_budgets)
        console.print(f"this load spends {name}'s token budgets ({budgets}; tenants/{name}.yaml tokenBudgets): over "
                      "one, the gateway answers 429, counted as errors", style="yellow", markup=False,
                      highlight=False)

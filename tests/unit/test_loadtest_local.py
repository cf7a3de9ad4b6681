"""REAL load tests: Locust against a REAL local KServe predictor (sklearn-iris) on 127.0.0.1.

The predictor is started once for the module through the LocalTarget API (its environment is
built once into .inferbox/local/venv and shared with test_local_predictor.py) and stopped at the
end. Each run is short and bounded; together they take about half a minute.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console

from inferbox import PROJECT_ROOT
from inferbox.config import Settings, load_versions
from inferbox.load.app import LoadTestOutcome, run_loadtest
from inferbox.load.summary import SloBreached
from inferbox.local.predictors import LocalPaths, LocalTarget
from inferbox.models.catalog import default_catalog_path, load_catalog
from inferbox.runner import ShellRunner

SHARED_VENV = PROJECT_ROOT / ".inferbox" / "local" / "venv"
MODEL = "sklearn-iris"


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTarget]:
    paths = LocalPaths(directory=tmp_path_factory.mktemp("local"), venv=SHARED_VENV,
                       requirements=PROJECT_ROOT / "models" / "local-predictor", root=PROJECT_ROOT)
    versions = load_versions(PROJECT_ROOT / "versions.toml")
    local = LocalTarget(paths, load_catalog(default_catalog_path(PROJECT_ROOT)), ShellRunner(),
                        kserve_version=versions.charts.kserve.version, startup_timeout_s=180)
    local.deploy(MODEL)
    yield local
    local.down()


def profiles_file(tmp_path: Path, **profiles: dict[str, Any]) -> Path:
    """A profiles file of short variations of the shipped smoke profile."""
    shipped = yaml.safe_load((PROJECT_ROOT / "load" / "profiles.yaml").read_text())["profiles"]["smoke"]
    data = {"schema": 1, "profiles": {name: {**shipped, **changes} for name, changes in profiles.items()}}
    path = tmp_path / "profiles.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def run(settings: Settings, predictor: LocalTarget, profile: str, **kwargs: Any) -> tuple[LoadTestOutcome, str]:
    out = io.StringIO()
    outcome = run_loadtest(settings, MODEL, None, profile, console=Console(file=out, width=160), local=predictor,
                           **kwargs)
    assert outcome is not None
    return outcome, out.getvalue()


def test_smoke_run_against_a_real_predictor(make_settings: Callable[..., Settings], predictor: LocalTarget) -> None:
    settings = make_settings()
    outcome, printed = run(settings, predictor, "smoke")  # the shipped profile: 10 s, 4 users

    run_dir = outcome.run_dir
    assert run_dir.parent == settings.state_dir / "loadtests"
    assert run_dir.name.endswith(f"-{MODEL}-smoke")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary == outcome.summary and summary["passed"] is True
    requests = summary["requests"]
    assert requests["count"] > 0 and requests["failures"] == 0 and requests["error_rate"] == 0
    assert requests["rps"] > 5
    for key in ("p50", "p95", "p99"):
        assert requests["percentiles"][key] > 0
    assert requests["percentiles"]["p50"] <= requests["percentiles"]["p95"] <= requests["percentiles"]["p99"]
    assert list(summary["endpoints"]) == [f"POST /v1/models/{MODEL}:predict"]
    assert summary["custom_metrics"] == {}
    assert {v["slo"] for v in summary["slo"]} == {"p95Ms", "p99Ms", "maxErrorRate", "minRps"}
    assert all(v["ok"] for v in summary["slo"])
    assert summary["profile"]["name"] == "smoke" and summary["profile"]["maxRequests"] == 5000
    assert summary["versions"]["locust"] and summary["versions"]["kserve (versions.toml)"]
    assert summary["base_url"] == f"http://127.0.0.1:{predictor.running(MODEL).http_port}"

    for name in ("locust_stats.csv", "locust_stats_history.csv", "locust_failures.csv", "locust.html",
                 "locust.log", "latency.png", "throughput.png", "report.html"):
        assert (run_dir / name).stat().st_size > 0, name
    assert (run_dir / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (run_dir / "report.html").read_text()
    assert "<img src='latency.png'" in report and "<img src='throughput.png'" in report
    assert "no GPU metrics (local target)" in report
    assert "SLOs met" in report
    assert "p95Ms" in printed and "BREACHED" not in printed and "report:" in printed


def test_an_impossible_slo_fails_the_run_naming_it(make_settings: Callable[..., Settings], predictor: LocalTarget,
                                                   tmp_path: Path) -> None:
    path = profiles_file(tmp_path, impossible={"duration": "3s", "slo": {"p95Ms": 0.001, "maxErrorRate": 0}})
    settings = make_settings()
    with pytest.raises(SloBreached) as caught:
        run_loadtest(settings, MODEL, None, "impossible", profiles_path=path, local=predictor,
                     console=Console(file=io.StringIO()))
    message = str(caught.value)
    assert message.startswith("SLO breached: p95Ms\n  p95Ms: p95 latency ")
    assert "(must be <= 0.001 ms)" in message
    assert [v.slo for v in caught.value.breached] == ["p95Ms"]
    summary = json.loads((caught.value.run_dir / "summary.json").read_text())
    assert summary["passed"] is False
    assert [v["slo"] for v in summary["slo"] if not v["ok"]] == ["p95Ms"]
    assert (caught.value.run_dir / "report.html").is_file(), "a breached run keeps its report"


def test_max_requests_stops_the_run_by_itself(make_settings: Callable[..., Settings], predictor: LocalTarget,
                                              tmp_path: Path) -> None:
    path = profiles_file(tmp_path, capped={"duration": "60s", "maxRequests": 40, "waitTime": {"min": 0, "max": 0}})
    outcome, _ = run(make_settings(), predictor, "capped", profiles_path=path)
    summary = outcome.summary
    assert summary["requests"]["count"] == 40
    assert summary["stop_reason"] == "maxRequests (40) reached"
    assert summary["duration_s"] < 30, "stopped long before the 60 s run time"


def test_distributed_run_with_two_workers(make_settings: Callable[..., Settings], predictor: LocalTarget,
                                          tmp_path: Path) -> None:
    path = profiles_file(tmp_path, short={"duration": "5s", "protocols": {"v1": 1, "v2": 1}})
    outcome, printed = run(make_settings(), predictor, "short", workers=2, profiles_path=path)
    summary = outcome.summary
    assert summary["workers"] == 2
    assert summary["requests"]["count"] > 0 and summary["requests"]["failures"] == 0
    assert set(summary["endpoints"]) == {f"POST /v1/models/{MODEL}:predict", f"POST /v2/models/{MODEL}/infer"}
    # The workers' samples reached the master: exact percentiles over every request, and the
    # result counts the workers that reported, although they have disconnected by the end.
    assert summary["requests"]["percentiles_exact"] is True
    assert json.loads((outcome.run_dir / "locust-result.json").read_text())["workers"] == 2
    command = (outcome.run_dir / "locust-output.txt").read_text().splitlines()[0]
    assert "--processes 2 --expect-workers 2" in command and "--master-bind-host 127.0.0.1" in command
    assert summary["passed"] is True, printed


def test_compare_with_an_earlier_run(make_settings: Callable[..., Settings], predictor: LocalTarget,
                                     tmp_path: Path) -> None:
    path = profiles_file(tmp_path, brief={"duration": "2s"})
    settings = make_settings()
    first, _ = run(settings, predictor, "brief", profiles_path=path)
    second, printed = run(settings, predictor, "brief", profiles_path=path, compare=first.run_dir.name)
    assert second.summary["compared_with"]["run"] == first.run_dir.name
    metrics = {row["metric"] for row in second.summary["compared_with"]["rows"]}
    assert {"throughput (req/s)", "p95 (ms)", "error rate"} <= metrics
    assert f"compared with {first.run_dir.name}" in printed

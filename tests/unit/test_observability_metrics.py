"""The known-exported metric lists: well-formed, and the KServe list checked against a REAL KServe
model server's /metrics (the local target; marked `local`, its environment is built on first use)."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from inferbox import PROJECT_ROOT
from inferbox.config import load_versions
from inferbox.local.predictors import LocalPaths, LocalTarget
from inferbox.models.catalog import default_catalog_path, load_catalog
from inferbox.observability import metrics
from inferbox.runner import ShellRunner

METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
IRIS = [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]


def test_names_are_valid_and_each_belongs_to_one_source() -> None:
    seen: dict[str, str] = {}
    for source, names in metrics.KNOWN_METRICS.items():
        assert names, source
        for name in names:
            assert METRIC_NAME.match(name), name
            assert name not in seen, f"{name} listed by {seen.get(name)} and {source}"
            seen[name] = source
    assert metrics.source_of("istio_requests_total") == "istio"
    assert metrics.source_of("DCGM_FI_DEV_FB_USED") == "dcgm-exporter"
    assert metrics.source_of("request_predict_seconds_bucket") == "kserve"
    assert metrics.source_of("kube_deployment_status_replicas_available") == "kube-state-metrics"
    assert metrics.source_of("istio_request_total") is None


def test_histograms_expand_to_their_series() -> None:
    assert metrics.histogram("x") == {"x_bucket", "x_count", "x_sum"}
    assert {"istio_request_duration_milliseconds_bucket", "istio_request_duration_milliseconds_sum"} <= metrics.ISTIO
    assert metrics.unknown(["up", "inferbox:x", "nope"], recorded=["inferbox:x"]) == ["nope"]


@pytest.fixture
def local_target(tmp_path: Path) -> Iterator[LocalTarget]:
    paths = LocalPaths(directory=tmp_path / "local", venv=PROJECT_ROOT / ".inferbox" / "local" / "venv",
                       requirements=PROJECT_ROOT / "models" / "local-predictor", root=PROJECT_ROOT)
    versions = load_versions(PROJECT_ROOT / "versions.toml")
    target = LocalTarget(paths, load_catalog(default_catalog_path(PROJECT_ROOT)), ShellRunner(),
                         kserve_version=versions.charts.kserve.version, startup_timeout_s=180)
    yield target
    target.down()


@pytest.mark.local
def test_kserve_list_matches_a_real_model_server(local_target: LocalTarget) -> None:
    """The KServe model server of the cluster's KServe minor, after one prediction, serves exactly
    the request_* histograms the list names, labelled model_name."""
    record = local_target.deploy("sklearn-iris").record
    assert local_target.predict("sklearn-iris", IRIS).v1_predictions == [1, 1]
    with urllib.request.urlopen(f"http://127.0.0.1:{record.http_port}/metrics", timeout=30) as response:
        exposition = response.read().decode()
    declared = set(re.findall(r"^# TYPE (\S+) histogram$", exposition, re.MULTILINE))
    kserve_histograms = {name for name in declared if name.startswith("request_")}
    assert kserve_histograms == {"request_preprocess_seconds", "request_postprocess_seconds",
                                 "request_predict_seconds", "request_explain_seconds"}
    samples = set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", exposition, re.MULTILINE))
    served = {name for name in samples if name.startswith(("request_", "process_", "python_"))}
    assert served <= metrics.KSERVE, served - metrics.KSERVE
    # Observed by the prediction (explain was not called, so it has no samples).
    assert {"request_predict_seconds_bucket", "request_preprocess_seconds_bucket",
            "request_postprocess_seconds_bucket"} <= served
    assert 'request_predict_seconds_count{model_name="sklearn-iris"}' in exposition

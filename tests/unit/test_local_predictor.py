"""The local target with a REAL KServe model server: iris over V1 and V2, idempotence, clean stops.

The predictor environment (kserve, scikit-learn, torch) is built once into .inferbox/local/venv
and reused; everything else (state, logs, built models) lives in the test's tmp_path.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from inferbox import PROJECT_ROOT
from inferbox.config import load_versions
from inferbox.errors import InferboxError
from inferbox.local import procs
from inferbox.local.artifacts import BUILD_INFO, MODEL_FILES
from inferbox.local.predictors import LocalPaths, LocalStartError, LocalTarget
from inferbox.models.catalog import default_catalog_path, load_catalog
from inferbox.runner import ShellRunner

# The two standard KServe iris example instances: both are class 1 (versicolor).
IRIS = [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]
SHARED_VENV = PROJECT_ROOT / ".inferbox" / "local" / "venv"

# Real model-server processes in their own environment (.inferbox/local/venv, built on first use).
pytestmark = pytest.mark.local


@pytest.fixture
def target(tmp_path: Path) -> Iterator[LocalTarget]:
    paths = LocalPaths(directory=tmp_path / "local", venv=SHARED_VENV,
                       requirements=PROJECT_ROOT / "models" / "local-predictor", root=PROJECT_ROOT)
    versions = load_versions(PROJECT_ROOT / "versions.toml")
    local = LocalTarget(paths, load_catalog(default_catalog_path(PROJECT_ROOT)), ShellRunner(),
                        kserve_version=versions.charts.kserve.version, startup_timeout_s=180)
    yield local
    local.down()  # whatever a failing test left running


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a LISTEN socket on ``port`` (Linux /proc/net/tcp{,6})."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


def test_sklearn_iris_over_v1_and_v2(target: LocalTarget) -> None:
    outcome = target.deploy("sklearn-iris")
    assert outcome.started
    record = outcome.record
    assert procs.is_running(record.pid, record.pid_start)

    prediction = target.predict("sklearn-iris", IRIS)
    assert prediction.v1_predictions == [1, 1]
    assert prediction.v2_outputs == [1, 1]
    assert prediction.v2.body["model_name"] == "sklearn-iris"

    if Path("/proc/net/tcp").exists():
        assert listening_addresses(record.http_port) == {"0100007F"}  # 127.0.0.1 only

    state = json.loads((target.paths.directory / "predictors.json").read_text())
    saved = state["predictors"]["sklearn-iris"]
    assert saved["pid"] == record.pid and saved["http_port"] == record.http_port and saved["started_at"]
    assert (target.paths.directory / "sklearn-iris.log").is_file()

    again = target.deploy("sklearn-iris")
    assert not again.started
    assert again.record == record

    assert target.down() == [f"sklearn-iris: stopped pid {record.pid}"]
    assert not procs.is_running(record.pid, record.pid_start)
    assert not _alive(record.pid)
    assert json.loads((target.paths.directory / "predictors.json").read_text())["predictors"] == {}
    assert target.down() == ["no local predictors"]
    with pytest.raises(InferboxError, match="no local predictor runs"):
        target.predict("sklearn-iris")


def test_stale_pid_is_detected_and_replaced(target: LocalTarget) -> None:
    first = target.deploy("sklearn-iris").record
    os.killpg(first.pid, signal.SIGKILL)
    procs.wait_exit(first.pid, first.pid_start, 10)
    assert [rec.model for rec, running in target.status() if not running] == ["sklearn-iris"]

    second = target.deploy("sklearn-iris")
    assert second.started and second.record.pid != first.pid
    assert any("stale record removed" in note for note in second.notes)
    assert target.predict("sklearn-iris").v1_predictions == [1, 1]  # the catalog's example input


@pytest.mark.torch
def test_neural_model_predicts_on_this_machines_device(target: LocalTarget) -> None:
    outcome = target.deploy("iris-mlp")
    prediction = target.predict("iris-mlp", IRIS)
    assert prediction.v1_predictions == [1, 1]
    assert prediction.v2_outputs == [1, 1]
    has_gpu = Path("/dev/nvidia0").exists()
    assert outcome.device == ("cuda" if has_gpu else "cpu")
    target.down("iris-mlp")
    assert not _alive(outcome.record.pid)


def test_failed_start_is_explained_and_leaves_nothing(target: LocalTarget) -> None:
    model_dir = target.paths.model_dir("sklearn-iris")
    model_dir.mkdir(parents=True)
    (model_dir / BUILD_INFO).write_text(json.dumps({"server": "sklearn", "builder_version": 1}))
    (model_dir / MODEL_FILES["sklearn"]).write_text("not a joblib file")
    with pytest.raises(LocalStartError, match="exited during start-up") as caught:
        target.deploy("sklearn-iris")
    assert "last lines of" in str(caught.value) and "Traceback" in str(caught.value)
    assert target.status() == []


def test_models_without_local_support_are_refused(target: LocalTarget) -> None:
    with pytest.raises(InferboxError, match=r"cannot run locally: .*local models: sklearn-iris, iris-mlp"):
        target.deploy("qwen-small")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return procs.start_ticks(pid) is not None  # a zombie is not alive

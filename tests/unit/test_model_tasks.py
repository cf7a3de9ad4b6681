"""The model tasks as a user meets them, in a project whose files are broken: deploy-model names
the bad catalog file and field before it touches a cluster; down stops the running predictors
from the local state alone, whatever became of the configuration."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from invoke import Context
from rich.console import Console

import tasks
from inferbox import PROJECT_ROOT, cli
from inferbox.k8s import Kube
from inferbox.local import procs
from inferbox.local.state import PredictorRecord, StateFile

# A typo in the shipped catalog: the loader names the file and this field.
BAD_RUNTIME = ("runtime: kserve-sklearnserver", "runtime: kserve-sklearnservr")
BAD_FIELD = "models.sklearn-iris.runtime"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the project's configuration with a broken catalog; the tasks run against it."""
    root = tmp_path / "project"
    (root / "models").mkdir(parents=True)
    shutil.copy(PROJECT_ROOT / "versions.toml", root / "versions.toml")
    shutil.copytree(PROJECT_ROOT / "tenants", root / "tenants")
    catalog = (PROJECT_ROOT / "models" / "catalog.yaml").read_text()
    assert BAD_RUNTIME[0] in catalog
    (root / "models" / "catalog.yaml").write_text(catalog.replace(*BAD_RUNTIME, 1))
    monkeypatch.setattr(cli, "PROJECT_ROOT", root)
    monkeypatch.setattr(cli, "setup_logging", lambda *args, **kwargs: None)  # no global log handlers from tests
    return root


@pytest.fixture
def output(monkeypatch: pytest.MonkeyPatch) -> tuple[io.StringIO, io.StringIO]:
    """(stdout, stderr) as the tasks print them."""
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=out, width=400, soft_wrap=True))
    monkeypatch.setattr(cli, "err_console", Console(file=err, width=400, soft_wrap=True))
    return out, err


def test_deploy_to_a_cluster_names_the_broken_catalog_before_connecting(
        project: Path, output: tuple[io.StringIO, io.StringIO], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))
    connects: list[object] = []
    real_connect = Kube.connect

    def connect(*args: object, **kwargs: object) -> Kube:
        connects.append(kwargs)
        return real_connect(*args, **kwargs)

    monkeypatch.setattr(Kube, "connect", connect)
    with pytest.raises(cli.Exit) as exited:
        tasks.deploy_model(Context(), "sklearn-iris", target="cluster", tenant="tenant-a")
    assert exited.value.code == 1
    err = output[1].getvalue()
    assert f"{project / 'models' / 'catalog.yaml'}: {BAD_FIELD}: unknown runtime 'kserve-sklearnservr'" in err, err
    assert "kubeconfig" not in err
    assert connects == []


@contextlib.contextmanager
def sleeping_predictor(state_dir: Path, model: str) -> Iterator[PredictorRecord]:
    """A real process recorded as ``model``'s local predictor, the way deploy-model records one."""
    local = state_dir / "local"
    log = local / f"{model}.log"
    pid = procs.spawn_detached([sys.executable, "-c", "import time; time.sleep(60)"], log, dict(os.environ))
    record = PredictorRecord(model=model, server="sklearn", pid=pid, pid_start=procs.start_ticks(pid),
                             http_port=9, host="127.0.0.1", started_at="2025-01-01T00:00:00+00:00", log=str(log),
                             model_dir=str(local / "models" / model))
    try:
        assert procs.is_running(record.pid, record.pid_start)
        with StateFile(local).locked() as records:
            records[model] = record
        yield record
    finally:
        if procs.is_running(record.pid, record.pid_start):
            os.killpg(record.pid, signal.SIGKILL)
            procs.wait_exit(record.pid, record.pid_start, 10)


@pytest.mark.parametrize("also_broken", [(), ("versions.toml",)], ids=["catalog", "catalog-and-versions"])
def test_down_stops_a_running_predictor_whatever_the_configuration(
        project: Path, output: tuple[io.StringIO, io.StringIO], also_broken: tuple[str, ...]) -> None:
    for name in also_broken:
        (project / name).write_text("this is [not valid\n")
    state_dir = project / ".inferbox"
    with sleeping_predictor(state_dir, "sklearn-iris") as record:
        tasks.down(Context(), target="local")
        assert not procs.is_running(record.pid, record.pid_start)
    assert output[0].getvalue() == f"sklearn-iris: stopped pid {record.pid}\n"
    assert json.loads((state_dir / "local" / "predictors.json").read_text())["predictors"] == {}
    tasks.down(Context(), target="local")  # safe to repeat
    assert output[0].getvalue().endswith("no local predictors\n")


def test_down_of_one_model_leaves_the_others_running(project: Path, output: tuple[io.StringIO, io.StringIO]) -> None:
    state_dir = project / ".inferbox"
    with sleeping_predictor(state_dir, "sklearn-iris") as iris, sleeping_predictor(state_dir, "iris-mlp") as mlp:
        tasks.down(Context(), target="local", model="iris-mlp")
        assert not procs.is_running(mlp.pid, mlp.pid_start)
        assert procs.is_running(iris.pid, iris.pid_start)
        assert set(StateFile(state_dir / "local").read()) == {"sklearn-iris"}

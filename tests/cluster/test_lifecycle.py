"""ControlPlane start-up failures are explained, and stop() leaves no process behind."""

from __future__ import annotations

import dataclasses
import os
import socket
from pathlib import Path

import pytest

from inferbox.testenv import BinarySet, ControlPlane, ControlPlaneError

pytestmark = pytest.mark.cluster


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_missing_binary_is_named(testenv_binaries: BinarySet) -> None:
    broken = dataclasses.replace(testenv_binaries, etcd=Path("/nonexistent/etcd"))
    with pytest.raises(ControlPlaneError) as err, ControlPlane(broken):
        pass
    assert err.value.component == "etcd"
    assert "binary missing" in err.value.reason


def test_port_in_use_is_reported_with_log_tail(testenv_binaries: BinarySet) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        cp = ControlPlane(testenv_binaries, nodes=(), ports={"apiserver": port})
        with pytest.raises(ControlPlaneError) as err:
            cp.start()
    assert err.value.component == "kube-apiserver"
    assert "already in use" in err.value.reason
    assert str(port) in err.value.log_tail
    assert cp.processes == {}  # etcd, started before, was stopped again


def test_stop_ends_every_process_and_is_idempotent(testenv_binaries: BinarySet) -> None:
    cp = ControlPlane(testenv_binaries, nodes=()).start()
    pids = cp.processes
    workdir = cp.workdir
    assert set(pids) == {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"}
    assert cp.started_in is not None and cp.started_in < 60
    cp.stop()
    cp.stop()
    assert not [name for name, pid in pids.items() if alive(pid)]
    assert not workdir.exists()

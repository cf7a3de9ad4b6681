"""Preflight verdicts on constructed facts, plus one probe of the real machine."""

from __future__ import annotations

import io
import json
import shlex
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console

from inferbox import PROJECT_ROOT, hints
from inferbox.bootstrap.app import BootstrapBlocked
from inferbox.bootstrap.doctor import (
    DOCKER_CHECK,
    GIB,
    PROFILES,
    Check,
    HostFacts,
    Status,
    blocking_failures,
    checks_table,
    go_required,
    no_cluster_message,
    probe_host,
    profile_for,
    resolve_gpu,
    run_checks,
)
from inferbox.bootstrap.phases import build_plan
from inferbox.config import GpuMode, Provider, Settings, ToolPin, Tools, Versions
from inferbox.hints import invoke
from inferbox.observability.promql import find_go
from inferbox.runner import RecordingRunner, Reply, RetryPolicy, ShellRunner
from inferbox.tools import Toolbox
from inferbox.tools.docker import EngineInfo
from inferbox.tools.nvidia import Gpu, GpuReport, NvidiaSmi, parse_gpus
from inferbox.ui import plan_table

# Test fixtures only, not the versions pinned in versions.toml.
PINS = {"kind": "0.99.1", "minikube": "1.99.0", "helm": "9.8.7", "kubectl": "1.99.3"}
SYSCTL_FIX = "sudo sysctl fs.inotify.max_user_watches=524288 fs.inotify.max_user_instances=512"


def versions() -> Versions:
    tools = {name: ToolPin.model_construct(version=v, url="https://example.invalid/{os}/{arch}", archive_member=None,
                                           sha256={"linux-amd64": "0" * 64}) for name, v in PINS.items()}
    return Versions.model_construct(tools=Tools.model_construct(**tools))


def settings(tmp_path: Path, *, provider: Provider = Provider.KIND, gpu: GpuMode = GpuMode.AUTO,
             root: Path | None = None) -> Settings:
    return Settings(root=root or tmp_path, versions=versions(), provider=provider, gpu=gpu, bin_dir=tmp_path / "bin")


def healthy(**changes: object) -> HostFacts:
    """A host on which everything passes, GPU included; tests change one thing at a time."""
    facts = HostFacts(
        docker=EngineInfo(reachable=True, server_version="28.2.2", runtimes=("nvidia", "runc")),
        tools={name: f"v{v}" for name, v in PINS.items()},
        cpus=16,
        memory_total=64 * GIB,
        memory_available=60 * GIB,
        disk_free=500 * GIB,
        inotify_max_user_watches=1048576,
        inotify_max_user_instances=8192,
        nvidia=GpuReport(found=True, gpus=(Gpu("NVIDIA H100 80GB HBM3", 81559),)),
        nvidia_ctk="/usr/bin/nvidia-ctk",
        nvidia_volume_mounts=True,
        go="99.0.0",
        npm="11.0.0",
    )
    return replace(facts, **changes)


NO_DOCKER = EngineInfo(reachable=False, error="Cannot connect to the Docker daemon at unix:///var/run/docker.sock.")
NO_NVIDIA = GpuReport(found=False, error="'nvidia-smi' not found on PATH")


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


# --- healthy host ------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", list(Provider))
def test_healthy_host_passes_everything(tmp_path, provider) -> None:
    checks = run_checks(healthy(), settings(tmp_path, provider=provider))

    assert blocking_failures(checks) == []
    if provider is not Provider.EXISTING:
        assert all(c.status is Status.OK for c in checks), [c for c in checks if c.status is not Status.OK]


# --- docker ------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", [Provider.KIND, Provider.MINIKUBE])
def test_unreachable_docker_blocks_local_clusters(tmp_path, provider) -> None:
    checks = run_checks(healthy(docker=NO_DOCKER), settings(tmp_path, provider=provider))

    docker = by_name(checks)[DOCKER_CHECK]
    assert docker.status is Status.FAIL
    assert docker.blocking
    assert "Cannot connect to the Docker daemon" in docker.detail
    assert docker in blocking_failures(checks)


def test_unreachable_docker_does_not_block_an_existing_cluster(tmp_path) -> None:
    checks = run_checks(healthy(docker=NO_DOCKER), settings(tmp_path, provider=Provider.EXISTING))

    docker = by_name(checks)[DOCKER_CHECK]
    assert not docker.blocking
    assert docker.status is not Status.FAIL
    assert blocking_failures(checks) == []


def test_no_cluster_message_explains_and_offers_alternatives(tmp_path) -> None:
    message = no_cluster_message(run_checks(healthy(docker=NO_DOCKER), settings(tmp_path)))

    assert "kind and minikube" in message
    assert "need a Docker engine" in message
    assert "none is reachable here" in message
    assert "Cannot connect to the Docker daemon" in message
    for alternative in ("invoke bootstrap --provider existing --context <ctx>", "invoke plan",
                        "invoke bootstrap --dry-run", "invoke testenv"):
        assert alternative in message
    assert "no Docker needed" in message


def test_no_cluster_message_names_other_blockers_when_docker_is_fine(tmp_path) -> None:
    message = no_cluster_message(run_checks(healthy(memory_total=2 * GIB), settings(tmp_path)))

    assert "memory" in message
    assert "invoke testenv" in message


# --- tools -------------------------------------------------------------------------------------


def test_tool_version_drift_warns_and_points_at_invoke_tools(tmp_path) -> None:
    tools = {**healthy().tools, "kubectl": "v1.32.4-dispatcher"}
    check = by_name(run_checks(healthy(tools=tools), settings(tmp_path)))["tool kubectl"]

    assert check.status is Status.WARN
    assert not check.blocking
    assert "v1.32.4-dispatcher" in check.detail
    assert f"v{PINS['kubectl']}" in check.detail
    assert check.fix == invoke("tools")


def test_missing_required_tool_blocks_but_missing_kubectl_only_warns(tmp_path) -> None:
    tools = {**healthy().tools, "helm": None, "kubectl": None}
    checks = by_name(run_checks(healthy(tools=tools), settings(tmp_path)))

    assert checks["tool helm"].status is Status.FAIL
    assert checks["tool helm"].blocking
    assert checks["tool helm"].fix == invoke("tools")
    assert checks["tool kubectl"].status is Status.WARN
    assert not checks["tool kubectl"].blocking


def test_only_the_providers_tools_are_checked(tmp_path) -> None:
    tools = {**healthy().tools, "kind": None, "minikube": None}

    existing = by_name(run_checks(healthy(tools=tools), settings(tmp_path, provider=Provider.EXISTING)))
    minikube = by_name(run_checks(healthy(tools=tools), settings(tmp_path, provider=Provider.MINIKUBE)))

    assert "tool kind" not in existing
    assert "tool minikube" not in existing
    assert "tool kind" not in minikube
    assert minikube["tool minikube"].blocking


# --- resources ---------------------------------------------------------------------------------


def test_low_inotify_limits_give_the_sysctl_fix(tmp_path) -> None:
    facts = healthy(inotify_max_user_watches=8192, inotify_max_user_instances=128)
    check = by_name(run_checks(facts, settings(tmp_path)))["inotify"]

    assert check.status is Status.WARN
    assert check.fix.startswith(SYSCTL_FIX)
    assert "max_user_instances=128" in check.detail


def test_inotify_fix_only_raises_what_is_low(tmp_path) -> None:
    facts = healthy(inotify_max_user_watches=2_000_000, inotify_max_user_instances=128)
    check = by_name(run_checks(facts, settings(tmp_path)))["inotify"]

    assert "fs.inotify.max_user_instances=512" in check.fix
    assert "max_user_watches" not in check.fix, "must not lower a limit someone set higher"


def test_resource_shortfalls_block(tmp_path) -> None:
    facts = healthy(cpus=1, memory_total=6 * GIB, memory_available=5 * GIB, disk_free=10 * GIB)
    checks = by_name(run_checks(facts, settings(tmp_path, gpu=GpuMode.OFF)))

    for name in ("cpu", "memory", "disk"):
        assert checks[name].status is Status.FAIL, name
        assert checks[name].blocking, name
    assert "needs 4" in checks["cpu"].detail
    assert "8.0 GiB" in checks["memory"].detail


def test_fewer_cpus_than_the_profile_only_warns(tmp_path) -> None:
    check = by_name(run_checks(healthy(cpus=2), settings(tmp_path, gpu=GpuMode.OFF)))["cpu"]
    assert check.status is Status.WARN and not check.blocking
    assert "needs 4" in check.detail


def test_memory_held_by_other_programs_only_warns(tmp_path) -> None:
    check = by_name(run_checks(healthy(memory_available=3 * GIB), settings(tmp_path)))["memory"]

    assert check.status is Status.WARN
    assert not check.blocking


def test_gpu_profile_needs_more_than_cpu_profile(tmp_path) -> None:
    facts = healthy(memory_total=12 * GIB, memory_available=12 * GIB)

    assert by_name(run_checks(facts, settings(tmp_path), PROFILES["cpu"]))["memory"].status is Status.OK
    assert by_name(run_checks(facts, settings(tmp_path), PROFILES["gpu"]))["memory"].status is Status.FAIL


def test_host_resources_are_not_judged_for_an_existing_cluster(tmp_path) -> None:
    facts = healthy(cpus=1, memory_total=GIB, disk_free=GIB, inotify_max_user_instances=1)
    names = by_name(run_checks(facts, settings(tmp_path, provider=Provider.EXISTING)))

    assert not {"cpu", "memory", "disk", "inotify"} & set(names)


# --- GPU ---------------------------------------------------------------------------------------


def test_gpu_on_without_nvidia_smi_blocks(tmp_path) -> None:
    facts = healthy(nvidia=NO_NVIDIA)
    check = by_name(run_checks(facts, settings(tmp_path, gpu=GpuMode.ON)))["gpu"]

    assert check.status is Status.FAIL
    assert check.blocking
    assert "nvidia-smi not found" in check.detail
    assert "--gpu off" in check.fix


def test_gpu_auto_without_gpu_warns_and_resolves_to_cpu(tmp_path) -> None:
    facts = healthy(nvidia=NO_NVIDIA)
    checks = run_checks(facts, settings(tmp_path, gpu=GpuMode.AUTO))
    check = by_name(checks)["gpu"]

    assert check.status is Status.WARN
    assert not check.blocking
    assert "GPU phases will be skipped" in check.detail
    assert resolve_gpu(GpuMode.AUTO, facts) is False
    assert blocking_failures(checks) == []


def test_broken_driver_is_reported_as_such(tmp_path) -> None:
    report = GpuReport(found=True, error="NVIDIA-SMI has failed because it couldn't communicate with the driver")
    check = by_name(run_checks(healthy(nvidia=report), settings(tmp_path, gpu=GpuMode.ON)))["gpu"]

    assert "couldn't communicate" in check.detail


def test_gpu_without_container_runtime_is_skipped_in_auto_mode(tmp_path) -> None:
    facts = healthy(docker=EngineInfo(reachable=True, server_version="28.2.2", runtimes=("runc",)), nvidia_ctk=None)
    check = by_name(run_checks(facts, settings(tmp_path)))["nvidia container runtime"]

    assert resolve_gpu(GpuMode.AUTO, facts) is False
    assert check.status is Status.WARN
    assert "sudo nvidia-ctk runtime configure --runtime=docker --set-as-default" in check.fix
    assert "install the NVIDIA Container Toolkit" in check.fix, "nvidia-ctk itself is missing"


def test_kind_gpu_needs_volume_mount_devices(tmp_path) -> None:
    facts = healthy(nvidia_volume_mounts=False)
    checks = by_name(run_checks(facts, settings(tmp_path, gpu=GpuMode.ON)))
    check = checks["nvidia volume-mount devices"]

    assert check.status is Status.FAIL
    assert check.blocking
    assert "sudo nvidia-ctk config --set accept-nvidia-visible-devices-as-volume-mounts=true --in-place" in check.fix
    assert resolve_gpu(GpuMode.AUTO, facts) is False
    # minikube passes GPUs with --gpus, not volume mounts.
    assert resolve_gpu(GpuMode.AUTO, facts, Provider.MINIKUBE) is True
    minikube = by_name(run_checks(facts, settings(tmp_path, provider=Provider.MINIKUBE, gpu=GpuMode.ON)))
    assert "nvidia volume-mount devices" not in minikube


def test_gpu_modes_resolve(tmp_path) -> None:
    assert resolve_gpu(GpuMode.AUTO, healthy()) is True
    assert resolve_gpu(GpuMode.OFF, healthy()) is False
    assert resolve_gpu(GpuMode.ON, healthy(nvidia=NO_NVIDIA)) is True
    assert resolve_gpu(GpuMode.AUTO, healthy(), Provider.EXISTING) is False
    assert profile_for(True) is PROFILES["gpu"]
    assert by_name(run_checks(healthy(), settings(tmp_path, gpu=GpuMode.OFF)))["gpu"].status is Status.OK


# --- presentation ------------------------------------------------------------------------------


def render(renderable: object, width: int) -> str:
    """As the tasks print it: a plain console (a pipe, a CI log) of the given width."""
    console = Console(record=True, width=width, force_terminal=False, color_system=None, file=io.StringIO())
    console.print(renderable, soft_wrap=True)
    return console.export_text()


@pytest.fixture
def venv_hints(monkeypatch: pytest.MonkeyPatch) -> None:
    """Commands in messages as a user without an activated venv sees them (fixed for the goldens)."""
    monkeypatch.setattr(hints, "invoke_program", lambda: ".venv/bin/invoke")


@pytest.mark.parametrize("width", [80, 200])
def test_doctor_and_blocked_bootstrap_never_cut_a_fix(tmp_path, golden, venv_hints, width: int) -> None:
    checks = run_checks(healthy(docker=NO_DOCKER, inotify_max_user_watches=8192, tools={**healthy().tools,
                                                                                     "kind": None}),
                        settings(tmp_path, root=PROJECT_ROOT))
    text = render(checks_table(checks), width)
    golden(f"doctor/doctor-{width}.txt", text)
    blocked = BootstrapBlocked(no_cluster_message(checks), checks_table(checks))
    shown = render(blocked.table, width) + render(f"error: {blocked}", width)
    golden(f"doctor/bootstrap-blocked-{width}.txt", shown)
    for output in (text, shown):
        assert "…" not in output
        lines = output.splitlines()
        for check in checks:
            if check.fix:  # every fix whole, on one line, copyable
                assert any(check.fix in line for line in lines), check.fix
    assert ".venv/bin/invoke bootstrap --provider existing --context <ctx>" in shown


@pytest.mark.parametrize("width", [80, 200])
def test_plan_never_splits_a_word(make_settings, golden, width: int) -> None:
    plan = build_plan(make_settings(knative=True), gpu=True)
    text = render(plan_table(plan), width)
    golden(f"doctor/plan-{width}.txt", text.replace(str(PROJECT_ROOT), "<root>"))
    assert "…" not in text
    for phase in plan.phases:
        assert any(phase.chart.chart in line for line in text.splitlines()), phase.chart.chart
        for check in phase.checks:
            assert any(check.short() in line for line in text.splitlines()), check.short()


# --- probing -----------------------------------------------------------------------------------


def test_parse_gpus() -> None:
    out = "NVIDIA H100 80GB HBM3, 81559 MiB\nNVIDIA A10G, [N/A]\n\n"
    assert parse_gpus(out) == (Gpu("NVIDIA H100 80GB HBM3", 81559), Gpu("NVIDIA A10G", None))


def test_nvidia_smi_missing_is_not_found() -> None:
    report = NvidiaSmi(ShellRunner(), binary="nvidia-smi-that-does-not-exist").query()
    assert report == GpuReport(found=False, error=report.error)
    assert "not found" in report.error


def test_probe_host_wiring_with_recorded_commands(tmp_path) -> None:
    inotify = tmp_path / "inotify"
    inotify.mkdir()
    (inotify / "max_user_watches").write_text("8192\n")
    (inotify / "max_user_instances").write_text("128\n")
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16384000 kB\nMemFree: 1 kB\nMemAvailable:    8192000 kB\n")
    toolkit = tmp_path / "config.toml"
    toolkit.write_text("accept-nvidia-visible-devices-as-volume-mounts = true\n[nvidia-container-cli]\n")
    docker_info = {"ServerVersion": "28.2.2", "Runtimes": {"runc": {}, "nvidia": {}}}
    runner = RecordingRunner({
        ("docker", "info"): Reply(json.dumps(docker_info)),
        ("kind", "version"): Reply("kind v0.99.1 go1.25 linux/amd64"),
        ("minikube", "version"): Reply(exit_code=127, stderr="minikube: not found"),
        ("helm", "version"): Reply("v9.8.7"),
        ("kubectl", "version"): Reply(json.dumps({"clientVersion": {"gitVersion": "v1.99.3"}})),
        ("nvidia-smi",): Reply("NVIDIA L4, 23034 MiB\n"),
        (find_go() or "go", "version"): Reply("go version go1.26.8 linux/amd64\n"),
        ("npm", "--version"): Reply("11.19.1\n"),
    }, strict=True, dry_run=False)
    config = settings(tmp_path)

    facts = probe_host(config, runner, Toolbox.from_settings(config, runner), proc_inotify=inotify,
                       meminfo=meminfo, nvidia_config=toolkit)

    assert facts.docker == EngineInfo(reachable=True, server_version="28.2.2", runtimes=("nvidia", "runc"))
    assert facts.tools == {"kind": "v0.99.1", "minikube": None, "helm": "v9.8.7", "kubectl": "v1.99.3"}
    assert facts.memory_total == 16384000 * 1024
    assert facts.memory_available == 8192000 * 1024
    assert (facts.inotify_max_user_watches, facts.inotify_max_user_instances) == (8192, 128)
    assert facts.nvidia.gpus == (Gpu("NVIDIA L4", 23034),)
    assert facts.nvidia_volume_mounts is True
    assert facts.disk_free is not None and facts.disk_free > 0
    assert (facts.go, facts.npm) == ("1.26.8", "11.19.1")


@pytest.mark.skipif(shutil.which("docker") is None, reason="the docker client is not installed here")
def test_probe_host_on_this_machine(tmp_path) -> None:
    runner = ShellRunner(retry=RetryPolicy(attempts=1))
    config = settings(tmp_path)

    facts = probe_host(config, runner, Toolbox.from_settings(config, runner))

    if facts.docker.reachable:
        pytest.skip(f"a Docker engine ({facts.docker.server_version}) runs here; this test covers the no-engine case")
    assert facts.docker.error
    assert facts.cpus >= 1
    assert facts.disk_free and facts.disk_free > 0
    if Path("/proc/meminfo").exists():
        assert facts.memory_total and facts.memory_total > 0
    checks = run_checks(facts, config)
    assert by_name(checks)[DOCKER_CHECK] in blocking_failures(checks)
    assert "none is reachable here" in no_cluster_message(checks)


def test_go_and_npm_are_checked_against_what_the_test_builds_need(tmp_path) -> None:
    need = go_required(PROJECT_ROOT)
    assert need is not None
    mods = [(PROJECT_ROOT / "testenv" / "kube" / "go.mod").read_text(),
            (PROJECT_ROOT / "tools" / "promql-check" / "go.mod").read_text()]
    assert any(f"\ngo {need}\n" in mod for mod in mods)  # the newest go directive of the two modules
    checks = by_name(run_checks(healthy(go=None, npm=None), settings(tmp_path, root=PROJECT_ROOT)))
    assert checks["go"].status is Status.WARN and not checks["go"].blocking
    assert checks["go"].fix == f"install Go {need} or newer (https://go.dev/dl/), then check `go version`"
    assert checks["npm"].status is Status.WARN and "apt-get install npm" in checks["npm"].fix
    old = by_name(run_checks(healthy(go="1.20.1"), settings(tmp_path, root=PROJECT_ROOT)))["go"]
    assert old.status is Status.WARN and old.detail.startswith("found 1.20.1; Go ")
    assert by_name(run_checks(healthy(), settings(tmp_path, root=PROJECT_ROOT)))["go"].status is Status.OK


def test_gpu_node_checks_inside_an_existing_kind_cluster(make_settings) -> None:
    """The host can pass every GPU check while the kind node has no NVIDIA runtime: the doctor
    looks inside each GPU node, and every failure carries the fix."""
    from inferbox.bootstrap.doctor import node_checks
    from inferbox.bootstrap.providers import NODE_CHECKS, RUNTIME_CONFIGURE

    settings = make_settings(cluster_name="demo")
    version = settings.versions.gpu.container_toolkit
    (_, toolkit, _), (_, runtime, _), (_, smi, _), (_, device_files, _) = NODE_CHECKS
    node = ("docker", "exec", "demo-worker2", "bash", "-c")
    runner = RecordingRunner({
        ("kind", "get", "clusters"): Reply("demo\n"),
        ("kind", "get", "nodes"): Reply("demo-control-plane\ndemo-worker\ndemo-worker2\n"),
        (*node, toolkit.format(v=version)): Reply(""),
        (*node, runtime): Reply("", exit_code=1),
        (*node, smi): Reply("", stderr="bash: line 1: nvidia-smi: command not found\n", exit_code=127),
        (*node, device_files): Reply(""),
    }, strict=True, dry_run=False)
    checks = node_checks(settings, Toolbox.from_settings(settings, runner), ["demo-worker2"])
    assert [(c.name, c.status) for c in checks] == [
        (f"demo-worker2: NVIDIA container toolkit {version} in the node", Status.OK),
        ("demo-worker2: containerd's default runtime is nvidia", Status.FAIL),
        ("demo-worker2: a GPU is visible in the node", Status.FAIL),
        ("demo-worker2: the driver leaves the node's device files alone", Status.OK)]
    assert "command not found" in checks[2].detail
    assert shlex.split(checks[1].fix) == ["docker", "exec", "demo-worker2", "bash", "-c", RUNTIME_CONFIGURE]
    # No GPU visible is the host's doing: the fix is there, and a new cluster.
    assert "accept-nvidia-visible-devices-as-volume-mounts=true" in checks[2].fix and "teardown" in checks[2].fix

    # A cluster made without GPUs has no GPU worker to look into.
    cpu_only = RecordingRunner({("kind", "get", "clusters"): Reply("demo\n"),
                                ("kind", "get", "nodes"): Reply("demo-control-plane\ndemo-worker\n")},
                               strict=True, dry_run=False)
    (missing,) = node_checks(settings, Toolbox.from_settings(settings, cpu_only), ["demo-worker2"])
    assert missing.status is Status.FAIL and "made without GPUs" in missing.detail
    # No cluster yet, or no kind yet: nothing to look inside, and no crash.
    none = RecordingRunner({("kind", "get", "clusters"): Reply("No kind clusters found.\n")}, strict=True,
                           dry_run=False)
    assert node_checks(settings, Toolbox.from_settings(settings, none), ["demo-worker2"]) == []
    broken = RecordingRunner({("kind", "get", "clusters"): Reply("", stderr="kind: not found", exit_code=127)},
                             strict=True, dry_run=False)
    assert node_checks(settings, Toolbox.from_settings(settings, broken), ["demo-worker2"]) == []


def test_an_existing_cpu_only_kind_cluster_refuses_gpus_with_the_way_out(make_settings) -> None:
    from inferbox.bootstrap.providers import KindProvider
    from inferbox.errors import ClusterError
    from inferbox.render import Renderer

    settings = make_settings(cluster_name="demo")
    runner = RecordingRunner({("kind", "get", "clusters"): Reply("demo\n"),
                              ("kind", "get", "nodes"): Reply("demo-control-plane\ndemo-worker\n")},
                             strict=True, dry_run=False)
    provider = KindProvider(settings, Toolbox.from_settings(settings, runner), Renderer(PROJECT_ROOT / "manifests"),
                            gpu=True)
    with pytest.raises(ClusterError, match=r"no GPU worker \(demo-worker2\).*invoke teardown.*bootstrap --gpu on"):
        provider.create()

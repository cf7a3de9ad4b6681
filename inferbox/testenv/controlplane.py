"""A real Kubernetes control plane on 127.0.0.1, with kwok playing the nodes.

:class:`ControlPlane` starts etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok as child processes, each in its own process group,
on free loopback ports chosen at start. Every component must pass its real
health endpoint before the next one starts, within its own deadline; when
one does not, :class:`ControlPlaneError` names it, says why (exited, port in
use, not healthy in time) and carries the tail of its log. ``stop()`` ends
every process group and removes the working folder; it is idempotent and
also runs at interpreter exit, and the children die with the parent
process even when that is killed outright.
"""

from __future__ import annotations

import atexit
import base64
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from inferbox.testenv.build import BinarySet
from inferbox.testenv.certs import CertPair, Pki
from inferbox.testenv.crds import CrdInstaller
from inferbox.testenv.nodes import DEFAULT_NODES, KWOK_NODE_SELECTOR, FakeNode, node_manifest
from inferbox.testenv.procs import LOG_TAIL_LINES, Daemon, DaemonError
from inferbox.testenv.stages import kwok_config_documents

__all__ = ["PORT_NAMES", "ControlPlane", "ControlPlaneError", "StartTimeouts"]

Log = Callable[[str], None]

SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"  # first address: the "kubernetes" Service
POD_CIDR = "10.244.0.1/16"  # kwok hands out pod IPs from here
CONTEXT = "inferbox-testenv"
# Keys of ControlPlane.ports (and of its ``ports`` argument).
PORT_NAMES = ("etcd", "etcd-peer", "apiserver", "controller-manager", "scheduler", "kwok")
ADMISSION_PLUGINS = (
    "NamespaceLifecycle,LimitRanger,ServiceAccount,ResourceQuota,PodSecurity,DefaultStorageClass,"
    "DefaultTolerationSeconds,NodeRestriction,Priority,MutatingAdmissionWebhook,ValidatingAdmissionWebhook"
)


# Raised for any component that fails to start; .component, .reason, .log_tail.
ControlPlaneError = DaemonError


@dataclass(frozen=True)
class StartTimeouts:
    """Seconds each component may take to become healthy."""

    etcd: float = 20.0
    apiserver: float = 60.0
    controller_manager: float = 30.0
    scheduler: float = 30.0
    kwok: float = 20.0
    nodes: float = 30.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


class ControlPlane(CrdInstaller):
    """etcd + kube-apiserver + controller-manager + scheduler + kwok on loopback.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    ``ports`` pins some of the :data:`PORT_NAMES` ports (the rest are free
    ports picked at start); ``extra_stages`` adds kwok Stage documents;
    ``keep_workdir`` keeps certificates, kubeconfigs and logs after stop.
    """

    def __init__(self, binaries: BinarySet, *, nodes: Sequence[FakeNode] = DEFAULT_NODES,
                 extra_stages: Sequence[dict[str, Any]] = (), timeouts: StartTimeouts = StartTimeouts(),
                 workdir: Path | None = None, keep_workdir: bool = False, log: Log | None = None,
                 ports: Mapping[str, int] | None = None) -> None:
        self.binaries = binaries
        self.nodes = tuple(nodes)
        self.extra_stages = list(extra_stages)
        self.timeouts = timeouts
        self._workdir_arg = workdir
        self.keep_workdir = keep_workdir
        self._log = log or (lambda _msg: None)
        self.workdir = Path()
        self._fixed_ports = dict(ports or {})
        self.ports: dict[str, int] = {}
        self.started_in: float | None = None
        self._components: list[Daemon] = []
        self._running = False

    # --- public API -------------------------------------------------------------

    @property
    def kubeconfig(self) -> Path:
        """Admin kubeconfig (user in group system:masters) for kubectl, helm and the Python client."""
        return self.workdir / "kubeconfig"

    @property
    def processes(self) -> dict[str, int]:
        """PID (= process group id) of each running component."""
        return {c.name: c.proc.pid for c in self._components if c.proc is not None}

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['apiserver']}"

    def start(self) -> ControlPlane:
        if self._running:
            return self
        t0 = time.monotonic()
        self.workdir = self._workdir_arg or Path(tempfile.mkdtemp(prefix="inferbox-testenv-"))
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        self._running = True
        atexit.register(self.stop)
        try:
            self._start_all()
        except BaseException:
            self.stop()
            raise
        self.started_in = time.monotonic() - t0
        self._log(f"control plane up in {self.started_in:.1f} s; KUBECONFIG={self.kubeconfig}")
        return self

    def stop(self) -> None:
        """Stop every component (newest first) and remove the working folder. Idempotent."""
        if not self._running:
            return
        self._running = False
        atexit.unregister(self.stop)
        for comp in reversed(self._components):
            comp.stop()
        self._components.clear()
        if not self.keep_workdir and self._workdir_arg is None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def env(self) -> dict[str, str]:
        """Environment for kubectl and helm.

        KUBECONFIG set, the testenv binaries first on PATH, and helm's and
        kubectl's caches kept in the workdir rather than in $HOME.
        """
        env = dict(os.environ)
        env.update({
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": f"{self.binaries.bin_dir}{os.pathsep}{env.get('PATH', '')}",
            "KUBECACHEDIR": str(self.workdir / "kube-cache"),
            "HELM_CACHE_HOME": str(self.workdir / "helm" / "cache"),
            "HELM_CONFIG_HOME": str(self.workdir / "helm" / "config"),
            "HELM_DATA_HOME": str(self.workdir / "helm" / "data"),
        })
        return env

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.binaries.kubectl), *args], env=self.env(), input=input,
                              capture_output=True, text=True, check=check)

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.binaries.helm), *args], env=self.env(),
                              capture_output=True, text=True, check=check)

    def api_client(self) -> Any:
        """A ``kubernetes.client.ApiClient`` logged in as the admin user."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig), context=CONTEXT)

    def log_tail(self, component: str, lines: int = LOG_TAIL_LINES) -> str:
        """Last ``lines`` lines of a component's log (etcd, kube-apiserver, ..., kwok)."""
        return Daemon(component, [], self.workdir / "logs" / f"{component}.log").log_tail(lines)

    # --- start-up ---------------------------------------------------------------

    def _start_all(self) -> None:
        self.ports = {name: self._fixed_ports.get(name) or _free_port() for name in PORT_NAMES}
        pki = self._write_pki()
        t = self.timeouts
        self._launch("etcd", self._etcd_argv(), self._probe_etcd, t.etcd)
        self._launch("kube-apiserver", self._apiserver_argv(pki), self._probe_apiserver, t.apiserver)
        # The remaining three only need the apiserver: start them together, then wait for each.
        pending = [
            self._spawn("kube-controller-manager", self._controller_manager_argv(pki)),
            self._spawn("kube-scheduler", self._scheduler_argv(pki)),
            self._spawn("kwok", self._kwok_argv()),
        ]
        probes = {"kube-controller-manager": (self._probe_secure("controller-manager"), t.controller_manager),
                  "kube-scheduler": (self._probe_secure("scheduler"), t.scheduler),
                  "kwok": (self._probe_kwok, t.kwok)}
        for comp in pending:
            probe, timeout = probes[comp.name]
            self._wait_healthy(comp, probe, timeout)
        self._create_nodes_and_wait()

    def _write_pki(self) -> dict[str, CertPair]:
        pki = Pki(self.workdir / "pki")
        self._ca = pki.ca
        self._ca_pem = pki.ca_pem
        localhost = (["localhost"], ["127.0.0.1"])
        certs = {
            "apiserver": pki.serving("apiserver", [
                *localhost[0], "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local"], [*localhost[1], SERVICE_IP]),
            "controller-manager-serving": pki.serving("controller-manager-serving", *localhost),
            "scheduler-serving": pki.serving("scheduler-serving", *localhost),
            "admin": pki.client("admin", "inferbox-admin", ("system:masters",)),
            "controller-manager": pki.client("controller-manager", "system:kube-controller-manager"),
            "scheduler": pki.client("scheduler", "system:kube-scheduler"),
            # kwok updates status of nodes and pods and renews node leases.
            "kwok": pki.client("kwok", "kwok-controller", ("system:masters",)),
            "sa": pki.service_account_keys(),
        }
        # The aggregation layer's own CA, as kubeadm sets it up: the apiserver
        # proxies to extension apiservers with this client cert, and the
        # controller-manager and scheduler read the CA to trust such requests.
        front_proxy = Pki(self.workdir / "pki" / "front-proxy")
        certs["front-proxy-ca"] = front_proxy.ca
        certs["front-proxy-client"] = front_proxy.client("front-proxy-client", "front-proxy-client")
        for user in ("admin", "controller-manager", "scheduler", "kwok"):
            path = self.workdir / ("kubeconfig" if user == "admin" else f"{user}.kubeconfig")
            path.write_text(self._kubeconfig_yaml(certs[user]))
            path.chmod(0o600)
        return certs

    def _kubeconfig_yaml(self, cred: CertPair) -> str:
        # Certificates embedded, so the file stands alone (helm and the
        # Python client resolve relative paths differently).
        return yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": CONTEXT,
            "clusters": [{"name": CONTEXT, "cluster": {
                "server": self.server, "certificate-authority-data": _b64(self._ca.cert)}}],
            "users": [{"name": CONTEXT, "user": {
                "client-certificate-data": _b64(cred.cert), "client-key-data": _b64(cred.key)}}],
            "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": CONTEXT}}],
        }, sort_keys=False)

    def _spawn(self, name: str, argv: list[str]) -> Daemon:
        comp = Daemon(name, argv, self.workdir / "logs" / f"{name}.log")
        self._components.append(comp)
        self._log(f"starting {name}")
        comp.start()
        return comp

    def _launch(self, name: str, argv: list[str], probe: Callable[[], bool], timeout: float) -> None:
        self._wait_healthy(self._spawn(name, argv), probe, timeout)

    def _wait_healthy(self, comp: Daemon, probe: Callable[[], bool], timeout: float, what: str = "healthy") -> None:
        """Poll ``probe`` until it returns True; fail fast if the process exits."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        last_error = "no answer yet"
        delay = 0.05
        while True:
            if (code := comp.exited()) is not None:
                raise comp.failure(f"exited with code {code} (waiting for: {what})")
            try:
                if probe():
                    self._log(f"{comp.name}: {what} after {time.monotonic() - t0:.1f} s")
                    return
                last_error = "answered, but not yet"
            except Exception as exc:  # noqa: BLE001 - any probe failure means "not yet"
                last_error = f"{type(exc).__name__}: {exc}"
            if time.monotonic() > deadline:
                raise comp.failure(f"timed out after {timeout:.0f} s waiting for: {what} (last probe: {last_error})")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    # --- command lines ----------------------------------------------------------

    def _etcd_argv(self) -> list[str]:
        client = f"http://127.0.0.1:{self.ports['etcd']}"
        peer = f"http://127.0.0.1:{self.ports['etcd-peer']}"
        return [
            str(self.binaries.etcd), "--name=testenv", f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=testenv={peer}", "--initial-cluster-state=new",
            # A throw-away store: durability buys nothing and fsync costs seconds.
            "--unsafe-no-fsync=true", "--log-level=warn",
        ]

    def _apiserver_argv(self, pki: dict[str, CertPair]) -> list[str]:
        return [
            str(self.binaries.kube_apiserver),
            f"--etcd-servers=http://127.0.0.1:{self.ports['etcd']}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={self.ports['apiserver']}",
            # 1.37 refuses a loopback advertise address for the endpoints of the
            # "kubernetes" Service; nothing in this cluster runs a real pod that
            # would dial it, so that Service is left without endpoints.
            "--endpoint-reconciler-type=none",
            f"--cert-dir={self.workdir / 'apiserver'}",
            f"--tls-cert-file={pki['apiserver'].cert}", f"--tls-private-key-file={pki['apiserver'].key}",
            f"--client-ca-file={self._ca.cert}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki['sa'].cert}",
            f"--service-account-signing-key-file={pki['sa'].key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            f"--requestheader-client-ca-file={pki['front-proxy-ca'].cert}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User", "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki['front-proxy-client'].cert}",
            f"--proxy-client-key-file={pki['front-proxy-client'].key}",
            f"--enable-admission-plugins={ADMISSION_PLUGINS}",
            "--allow-privileged=true",
            "--profiling=false",
        ]

    def _component_common(self, name: str, pki: dict[str, CertPair], port_key: str) -> list[str]:
        kubeconfig = self.workdir / f"{name}.kubeconfig"
        serving = pki[f"{name}-serving"]
        return [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}", f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1", f"--secure-port={self.ports[port_key]}",
            f"--tls-cert-file={serving.cert}", f"--tls-private-key-file={serving.key}",
            "--leader-elect=false", "--profiling=false",
        ]

    def _controller_manager_argv(self, pki: dict[str, CertPair]) -> list[str]:
        return [
            str(self.binaries.kube_controller_manager),
            *self._component_common("controller-manager", pki, "controller-manager"),
            "--controllers=*",
            # Each controller acts as its own service account, as in kubeadm
            # clusters, so RBAC is exercised as it is in production.
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki['sa'].key}",
            f"--root-ca-file={self._ca.cert}",
            f"--cluster-signing-cert-file={self._ca.cert}", f"--cluster-signing-key-file={self._ca.key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
        ]

    def _scheduler_argv(self, pki: dict[str, CertPair]) -> list[str]:
        return [str(self.binaries.kube_scheduler), *self._component_common("scheduler", pki, "scheduler")]

    def _kwok_argv(self) -> list[str]:
        config = self.workdir / "kwok.yaml"
        config.write_text(kwok_config_documents(self.binaries.kwok_stages_dir, self.extra_stages))
        return [
            str(self.binaries.kwok), f"--config={config}",
            f"--kubeconfig={self.workdir / 'kwok.kubeconfig'}",
            "--manage-all-nodes=false", f"--manage-nodes-with-annotation-selector={KWOK_NODE_SELECTOR}",
            f"--cidr={POD_CIDR}", "--node-ip=10.240.0.1",
            f"--server-address=127.0.0.1:{self.ports['kwok']}",
        ]

    # --- health probes ----------------------------------------------------------

    def _tls(self, client_cert: bool) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cadata=self._ca_pem.decode())
        if client_cert:
            ctx.load_cert_chain(self.workdir / "pki" / "admin.crt", self.workdir / "pki" / "admin.key")
        return ctx

    @staticmethod
    def _get(url: str, ctx: ssl.SSLContext | None = None) -> tuple[int, str]:
        with urllib.request.urlopen(url, timeout=2, context=ctx) as resp:
            return resp.status, resp.read().decode(errors="replace")

    def _probe_etcd(self) -> bool:
        _, body = self._get(f"http://127.0.0.1:{self.ports['etcd']}/health")
        return json.loads(body).get("health") == "true"

    def _probe_apiserver(self) -> bool:
        status, body = self._get(f"{self.server}/readyz", self._tls(client_cert=True))
        return status == 200 and body.strip() == "ok"

    def _probe_secure(self, port_key: str) -> Callable[[], bool]:
        def probe() -> bool:
            status, body = self._get(f"https://127.0.0.1:{self.ports[port_key]}/healthz", self._tls(False))
            return status == 200 and body.strip() == "ok"
        return probe

    def _probe_kwok(self) -> bool:
        status, _ = self._get(f"http://127.0.0.1:{self.ports['kwok']}/healthz")
        return status == 200

    # --- nodes ------------------------------------------------------------------

    def _create_nodes_and_wait(self) -> None:
        """Create the fake nodes; wait until kwok reports them Ready and the controllers are at work."""
        from kubernetes import client

        api = self.api_client()
        try:
            core = client.CoreV1Api(api)
            for node in self.nodes:
                core.create_node(node_manifest(node))
            names = {n.name for n in self.nodes}

            def nodes_ready() -> bool:
                ready = {n.metadata.name for n in core.list_node().items
                         if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])}
                return names <= ready

            def default_service_account() -> bool:
                # Pods are only admitted once their namespace has this SA.
                return bool(core.list_namespaced_service_account(
                    "default", field_selector="metadata.name=default").items)

            self._wait_healthy(self._component("kwok"), nodes_ready, self.timeouts.nodes, "fake nodes Ready")
            self._wait_healthy(self._component("kube-controller-manager"), default_service_account,
                               self.timeouts.controller_manager, "ServiceAccount default/default created")
        finally:
            api.close()

    def _component(self, name: str) -> Daemon:
        return next(c for c in self._components if c.name == name)

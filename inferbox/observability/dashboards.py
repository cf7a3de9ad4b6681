"""Grafana dashboards as code (dashboards/*.json) and ``invoke dashboards``.

* ``load_dashboards`` / ``dashboard_problems``: the JSON files and their structural rules (every
  panel and query on the ``${datasource}`` variable of type prometheus, unique panel ids, ...).
* ``dashboard_expressions``: every PromQL expression of a dashboard (panel targets and variable
  queries) as Prometheus would receive it, Grafana's ``$__rate_interval`` and friends and the
  template variables substituted, ready for the PromQL checker.
* ``open_dashboards``: port-forwards Grafana and Prometheus to 127.0.0.1 and prints the URLs and
  the Grafana admin login read from the Secret the Grafana chart generated (never a default);
  Jaeger's query UI and Kiali too where they are installed, with a Kiali login token (Kiali uses
  token auth: a TokenRequest for its ServiceAccount, and the kubectl command that makes another).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console
from rich.markup import escape

from inferbox.bootstrap.phases import JAEGER_DEPLOYMENT, JAEGER_QUERY_PORT, KIALI_DEPLOYMENT, TRACING_NAMESPACE
from inferbox.config import Settings
from inferbox.errors import InferboxError
from inferbox.hints import invoke
from inferbox.k8s import Kube, ObjectRef
from inferbox.observability.manifests import MONITORING_PHASE, dashboard_files, full_plan
from inferbox.observability.promql import Expression
from inferbox.ui import FitTable

DATASOURCE_VAR = "datasource"
DATASOURCE_REF = "${datasource}"
# Grafana's interval macros, replaced by a duration for parsing (Grafana computes them per query).
_MACROS = ("__rate_interval", "__interval", "__range")
_MACRO_VALUE = "5m"
# What an "All" selection of a template variable becomes (the variables' allValue).
_ALL_VALUE = ".*"
_LABEL_VALUES = re.compile(
    r"^\s*label_values\(\s*(?P<selector>.+?)\s*,\s*(?P<label>[A-Za-z_][A-Za-z0-9_]*)\s*\)\s*$", re.DOTALL)
_QUERY_RESULT = re.compile(r"^\s*query_result\((?P<expr>.+)\)\s*$", re.DOTALL)
_VARIABLE = re.compile(r"\$(?:\{(?P<braced>[A-Za-z0-9_]+)(?::[A-Za-z]+)?\}|(?P<plain>[A-Za-z0-9_]+))")


class DashboardError(InferboxError):
    """A dashboard file is not what Grafana and the checks expect."""


# -- the files ---------------------------------------------------------------------------------


def load_dashboard(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DashboardError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise DashboardError(f"{path}: a dashboard must be a JSON object")
    return data


def load_dashboards(root: Path) -> dict[str, dict[str, Any]]:
    """file name -> dashboard, for every dashboards/*.json."""
    return {path.name: load_dashboard(path) for path in dashboard_files(root)}


def iter_panels(dashboard: dict[str, Any]) -> Iterable[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    for panel in dashboard.get("panels") or []:
        yield panel
        yield from panel.get("panels") or []


def variables(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return list((dashboard.get("templating") or {}).get("list") or [])


def _is_datasource_ref(ref: Any) -> bool:
    return isinstance(ref, dict) and ref.get("uid") == DATASOURCE_REF and ref.get("type") == "prometheus"


def dashboard_problems(dashboard: dict[str, Any], name: str) -> list[str]:
    """What is wrong with a dashboard (empty when nothing is)."""
    problems = []
    for key in ("uid", "title", "panels", "templating"):
        if not dashboard.get(key):
            problems.append(f"{name}: {key} is missing")
    vars_by_name = {v.get("name"): v for v in variables(dashboard)}
    ds = vars_by_name.get(DATASOURCE_VAR)
    if ds is None or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        problems.append(f"{name}: needs a template variable {DATASOURCE_VAR!r} of type datasource, query prometheus")
    for var in variables(dashboard):
        if var.get("type") == "query" and not _is_datasource_ref(var.get("datasource")):
            problems.append(f"{name}: variable {var.get('name')!r}: datasource must be {DATASOURCE_REF} (prometheus)")
    ids = [p.get("id") for p in iter_panels(dashboard)]
    if len(ids) != len(set(ids)):
        problems.append(f"{name}: panel ids are not unique")
    for panel in iter_panels(dashboard):
        where = f"{name}: panel {panel.get('id')} {panel.get('title')!r}"
        if not _is_datasource_ref(panel.get("datasource")):
            problems.append(f"{where}: datasource must be {DATASOURCE_REF} (prometheus), "
                            f"is {panel.get('datasource')!r}")
        if panel.get("type") == "row":
            continue
        if not panel.get("targets"):
            problems.append(f"{where}: has no query")
        for target in panel.get("targets") or []:
            if not _is_datasource_ref(target.get("datasource")):
                problems.append(f"{where} target {target.get('refId')}: datasource must be {DATASOURCE_REF}")
            if not str(target.get("expr") or "").strip():
                problems.append(f"{where} target {target.get('refId')}: empty expr")
    return problems


# -- PromQL out of a dashboard -------------------------------------------------------------------


def grafana_to_promql(expr: str, known_variables: Iterable[str] = ()) -> str:
    """The expression Prometheus receives: interval macros become a duration and template
    variables (inside label-matcher strings, where they belong) their "All" value.

    A ``$`` anywhere else, or a variable the dashboard does not define, is a DashboardError.
    """
    known = set(known_variables)
    out: list[str] = []
    i, quote = 0, ""
    while i < len(expr):
        char = expr[i]
        if quote:
            if char == "\\" and quote != "`":
                out.append(expr[i:i + 2])
                i += 2
                continue
            if char == quote:
                quote = ""
            elif char == "$":
                match = _VARIABLE.match(expr, i)
                name = match and (match.group("braced") or match.group("plain"))
                if not match or name not in known:
                    raise DashboardError(f"unknown template variable at {expr[i:i + 20]!r} in: {expr}")
                out.append(_ALL_VALUE)
                i = match.end()
                continue
            out.append(char)
            i += 1
            continue
        if char in "\"'`":
            quote = char
        elif char == "$":
            match = _VARIABLE.match(expr, i)
            name = match and (match.group("braced") or match.group("plain"))
            if not match or name not in _MACROS:
                raise DashboardError(f"template variable outside a string at {expr[i:i + 20]!r} (only "
                                     f"{', '.join('$' + m for m in _MACROS)} may stand there) in: {expr}")
            out.append(_MACRO_VALUE)
            i = match.end()
            continue
        out.append(char)
        i += 1
    return "".join(out)


def _variable_query(var: dict[str, Any]) -> str:
    query = var.get("query")
    if isinstance(query, dict):
        query = query.get("query")
    return str(query or var.get("definition") or "")


def dashboard_expressions(dashboard: dict[str, Any], name: str) -> list[Expression]:
    """Every PromQL expression in the dashboard, named ``<file> panel <id> "<title>" <refId>``."""
    known = [str(v.get("name")) for v in variables(dashboard)]
    found = []
    for var in variables(dashboard):
        if var.get("type") != "query":
            continue
        query = _variable_query(var)
        if match := _LABEL_VALUES.match(query):
            found.append(Expression(f"{name} variable {var.get('name')}", grafana_to_promql(match["selector"], known)))
        elif match := _QUERY_RESULT.match(query):
            found.append(Expression(f"{name} variable {var.get('name')}", grafana_to_promql(match["expr"], known)))
        elif not re.fullmatch(r"\s*label_values\(\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*|\s*label_names\(\)\s*", query):
            raise DashboardError(f"{name}: variable {var.get('name')!r}: cannot tell the PromQL in {query!r}")
    for panel in iter_panels(dashboard):
        for target in panel.get("targets") or []:
            where = f"{name} panel {panel.get('id')} {panel.get('title')!r} {target.get('refId')}"
            found.append(Expression(where, grafana_to_promql(str(target.get("expr") or ""), known)))
    return found


# -- invoke dashboards ------------------------------------------------------------------------------


@dataclass(frozen=True)
class GrafanaLogin:
    user: str
    password: str = field(repr=False)


class Forward(Protocol):
    """A running local port-forward (see inferbox.k8s.portforward.LocalForward)."""

    port: int | None

    def start(self) -> int: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class ForwardTarget:
    """Forward 127.0.0.1:``local_port`` (0: any free port) to ``namespace/pod:port``."""

    namespace: str
    pod: str
    port: int
    local_port: int
    name: str


# Makes a forward for a target, not yet started.
ForwardFactory = Callable[[Kube, ForwardTarget], Forward]


@dataclass(frozen=True)
class MonitoringNames:
    """Where kube-prometheus-stack put Grafana and Prometheus (from the monitoring phase)."""

    namespace: str
    grafana_service: str
    grafana_port: int
    grafana_secret: str
    prometheus_service: str
    prometheus_port: int

    @classmethod
    def for_settings(cls, settings: Settings) -> MonitoringNames:
        phase = next(p for p in full_plan(settings).phases if p.name == MONITORING_PHASE)
        # The chart's fullname is its release name; Grafana's chart generates the admin Secret
        # (keys admin-user, admin-password) under the Grafana fullname.
        return cls(namespace=phase.namespace, grafana_service=f"{phase.release}-grafana", grafana_port=80,
                   grafana_secret=f"{phase.release}-grafana", prometheus_service=f"{phase.release}-prometheus",
                   prometheus_port=9090)


def grafana_login(kube: Kube, namespace: str, secret: str) -> GrafanaLogin:
    """The admin login from the Secret the Grafana chart generated; an error when it is absent."""
    obj = kube.get(ObjectRef("v1", "Secret", secret, namespace))
    if obj is None:
        raise InferboxError(f"Grafana's admin Secret {namespace}/{secret} does not exist: is the monitoring "
                            f"phase installed? (`{invoke('status')}`, `{invoke('bootstrap')}`)")
    data = obj.get("data") or {}
    values = {}
    for key in ("admin-user", "admin-password"):
        if not data.get(key):
            raise InferboxError(f"Secret {namespace}/{secret} has no {key!r} key")
        try:
            values[key] = base64.b64decode(data[key], validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise InferboxError(f"Secret {namespace}/{secret}: {key!r} is not base64 text") from exc
    return GrafanaLogin(values["admin-user"], values["admin-password"])


def _pod_ready(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    return status.get("phase") == "Running" and any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def service_backend(kube: Kube, namespace: str, service: str, port: int) -> tuple[str, int]:
    """(ready pod, container port) behind ``service:port``, as ``kubectl port-forward svc/...`` picks."""
    svc = kube.get(ObjectRef("v1", "Service", service, namespace))
    if svc is None:
        raise InferboxError(f"service {namespace}/{service} does not exist: is the monitoring phase installed? "
                            f"(`{invoke('status')}`)")
    spec = svc.get("spec") or {}
    ports = spec.get("ports") or []
    chosen = next((p for p in ports if p.get("port") == port), ports[0] if len(ports) == 1 else None)
    if chosen is None:
        raise InferboxError(f"service {namespace}/{service} has no port {port}")
    target = chosen.get("targetPort") or chosen["port"]
    selector = ",".join(f"{k}={v}" for k, v in sorted((spec.get("selector") or {}).items()))
    if not selector:
        raise InferboxError(f"service {namespace}/{service} selects no pods")
    pods = sorted((p for p in kube.list("v1", "Pod", namespace, label_selector=selector) if _pod_ready(p)),
                  key=lambda p: str(p["metadata"]["name"]))
    if not pods:
        raise InferboxError(f"no ready pod behind service {namespace}/{service}: see `{invoke('status')}`")
    pod = pods[0]
    if isinstance(target, int) or str(target).isdigit():
        return str(pod["metadata"]["name"]), int(target)
    for container in (pod.get("spec") or {}).get("containers") or []:
        for cport in container.get("ports") or []:
            if cport.get("name") == target:
                return str(pod["metadata"]["name"]), int(cport["containerPort"])
    raise InferboxError(f"pod {namespace}/{pod['metadata']['name']} has no port named {target!r}")


def _default_forward(kube: Kube, target: ForwardTarget) -> Forward:
    from inferbox.k8s.portforward import LocalForward, pod_connector

    return LocalForward(pod_connector(kube.api_client, target.namespace, target.pod, target.port),
                        local_port=target.local_port, name=target.name)


# Kiali (kiali/helm-charts kiali-server@v2.26.0): its Service port 20001 (named http), its web
# root /kiali, and the ServiceAccount whose token logs in (auth strategy token).
KIALI_NAMESPACE = "istio-system"
KIALI_PORT = 20001
KIALI_WEB_ROOT = "/kiali"
KIALI_TOKEN_TTL_S = 3600


@dataclass(frozen=True)
class OptionalUi:
    """A UI forwarded only where its phase installed it (Jaeger, Kiali)."""

    label: str
    namespace: str
    service: str
    port: int
    phase: str


JAEGER = OptionalUi("jaeger", TRACING_NAMESPACE, JAEGER_DEPLOYMENT, JAEGER_QUERY_PORT, "tracing")
KIALI = OptionalUi("kiali", KIALI_NAMESPACE, KIALI_DEPLOYMENT, KIALI_PORT, "kiali")


def service_account_token(kube: Kube, namespace: str, name: str, *, expiration_s: int = KIALI_TOKEN_TTL_S) -> str:
    """A short-lived token of ServiceAccount ``namespace/name`` (the TokenRequest API, what
    ``kubectl create token`` calls); raises InferboxError when the API server refuses."""
    token_api = kube.resource("v1", "ServiceAccount").subresources["token"]
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"expirationSeconds": expiration_s}}
    answer = kube.call(f"create token for serviceaccount {namespace}/{name}", token_api.create, body=body, name=name,
                       namespace=namespace)
    answer = answer.to_dict() if hasattr(answer, "to_dict") else answer
    token = ((answer or {}).get("status") or {}).get("token")
    if not token:
        raise InferboxError(f"the TokenRequest for serviceaccount {namespace}/{name} returned no token")
    return str(token)


def kubectl_prefix(settings: Settings) -> str:
    return f"kubectl --context {settings.kube_context}" if settings.kube_context else "kubectl"


@dataclass
class DashboardsSession:
    """What ``open_dashboards`` started: URLs, the login, and the forwards to close."""

    grafana_url: str
    prometheus_url: str
    login: GrafanaLogin
    dashboard_urls: dict[str, str]
    forwards: list[Forward]
    jaeger_url: str | None = None  # None: not installed (or not ready; see ``missing``)
    kiali_url: str | None = None
    kiali_token: str | None = field(default=None, repr=False)
    missing: dict[str, str] = field(default_factory=dict)  # label -> why it is not forwarded

    def close(self) -> None:
        for forward in self.forwards:
            forward.close()


def _optional_backend(kube: Kube, ui: OptionalUi) -> tuple[str, int] | str:
    """(pod, port) behind an optional UI's Service, or why there is none."""
    if kube.get(ObjectRef("v1", "Service", ui.service, ui.namespace)) is None:
        return (f"not installed (no service {ui.namespace}/{ui.service}: phase {ui.phase}, "
                f"`{invoke('bootstrap')}` with monitoring)")
    try:
        return service_backend(kube, ui.namespace, ui.service, ui.port)
    except InferboxError as exc:
        return str(exc)


def _print_session(settings: Settings, console: Console, session: DashboardsSession, names: MonitoringNames,
                   token_problem: str) -> None:
    grafana_url, prometheus_url, login = session.grafana_url, session.prometheus_url, session.login
    kiali_url, missing = session.kiali_url, session.missing
    create_token = f"{kubectl_prefix(settings)} -n {KIALI.namespace} create token {KIALI.service}"
    table = FitTable(f"inferbox observability ({settings.kube_context})")
    table.add_column("what")
    table.add_column("where")
    table.add_row("Grafana", grafana_url)
    for title, url in session.dashboard_urls.items():
        table.add_row(f"  {title}", url)
    table.add_row("Prometheus", prometheus_url)
    table.add_row("  alerts", f"{prometheus_url}/alerts")
    table.add_row("  targets", f"{prometheus_url}/targets")
    jaeger_url = session.jaeger_url
    table.add_row("Jaeger", jaeger_url or missing["jaeger"])
    if jaeger_url:
        table.add_row("  search", f"{jaeger_url}/search")
        table.add_row("  a trace", f"{jaeger_url}/trace/<trace id>")
    table.add_row("Kiali", kiali_url or missing["kiali"])
    console.print(table)
    console.print(f"Grafana login: [bold]{escape(login.user)}[/] / [bold]{escape(login.password)}[/] "
                  f"(from Secret {names.namespace}/{names.grafana_secret})", highlight=False)
    if kiali_url is not None:
        if session.kiali_token:
            console.print(f"Kiali login (token): paste [bold]{escape(session.kiali_token)}[/] (ServiceAccount "
                          f"{KIALI.namespace}/{KIALI.service}, valid {KIALI_TOKEN_TTL_S // 60} min); a new one: "
                          f"{escape(create_token)}", highlight=False, soft_wrap=True)
        else:
            console.print(f"Kiali login (token): make one with {escape(create_token)} and paste it"
                          f"{f' (the TokenRequest failed: {escape(token_problem)})' if token_problem else ''}",
                          highlight=False, soft_wrap=True)


def _start(kube: Kube, forward: ForwardFactory, targets: list[ForwardTarget]) -> list[Forward]:
    """Start a forward per target, in order; none left running when one fails."""
    forwards: list[Forward] = []
    try:
        for target in targets:
            started = forward(kube, target)
            started.start()
            forwards.append(started)
    except BaseException:
        for started in forwards:
            started.close()
        raise
    return forwards


def open_dashboards(settings: Settings, console: Console, *, grafana_port: int = 3000, prometheus_port: int = 9090,
                    jaeger_port: int = JAEGER_QUERY_PORT, kiali_port: int = KIALI_PORT,
                    kube: Kube | None = None, forward: ForwardFactory | None = None, wait: bool = True,
                    stop: threading.Event | None = None) -> DashboardsSession:
    """Forward Grafana and Prometheus (and Jaeger and Kiali where installed) to 127.0.0.1, print
    where and how to log in; with ``wait``, keep forwarding until Ctrl-C (or ``stop``), then close."""
    names = MonitoringNames.for_settings(settings)
    kube = kube or Kube.connect(context=settings.kube_context)
    forward = forward or _default_forward
    login = grafana_login(kube, names.namespace, names.grafana_secret)
    grafana_pod, grafana_target = service_backend(kube, names.namespace, names.grafana_service, names.grafana_port)
    prom_pod, prom_target = service_backend(kube, names.namespace, names.prometheus_service, names.prometheus_port)
    targets = [ForwardTarget(names.namespace, grafana_pod, grafana_target, grafana_port, "grafana"),
               ForwardTarget(names.namespace, prom_pod, prom_target, prometheus_port, "prometheus")]
    missing: dict[str, str] = {}
    for ui, local in ((JAEGER, jaeger_port), (KIALI, kiali_port)):
        backend = _optional_backend(kube, ui)
        if isinstance(backend, str):
            missing[ui.label] = backend
        else:
            targets.append(ForwardTarget(ui.namespace, backend[0], backend[1], local, ui.label))
    forwards = _start(kube, forward, targets)
    urls = {target.name: f"http://127.0.0.1:{started.port}" for target, started in zip(targets, forwards, strict=True)}
    grafana_url, prometheus_url = urls["grafana"], urls["prometheus"]
    dashboards = {d.get("title", name): f"{grafana_url}/d/{d['uid']}"
                  for name, d in load_dashboards(settings.root).items()}
    kiali_url = f"{urls['kiali']}{KIALI_WEB_ROOT}" if "kiali" in urls else None
    session = DashboardsSession(grafana_url, prometheus_url, login, dashboards, forwards, jaeger_url=urls.get("jaeger"),
                                kiali_url=kiali_url, missing=missing)
    token_problem = ""
    if kiali_url is not None:
        try:
            session.kiali_token = service_account_token(kube, KIALI.namespace, KIALI.service)
        except (InferboxError, AttributeError, KeyError, TypeError) as exc:
            token_problem = str(exc)

    _print_session(settings, console, session, names, token_problem)
    if not wait:
        return session
    console.print("Forwarding through the API server; press Ctrl-C to stop.")
    stop = stop or threading.Event()
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        console.print("stopped")
    finally:
        session.close()
    return session

"""``invoke loadtest --in-cluster``: Locust's master and N workers as Jobs in the ``loadtest`` namespace.

Plan, act, verify:

* :func:`render` is pure: the Jinja2 templates in ``manifests/load/`` with the locustfiles and the
  run's configuration in a ConfigMap, the tenant's JWT in a Secret, the master Job + Service and
  the workers Job, all with resource requests and limits, bounded by ``activeDeadlineSeconds``.
  The objects are schema-validated (inferbox.validate) before anything is applied; ``--dry-run``
  prints them.
* :func:`apply` server-side-applies them through inferbox.k8s.
* :func:`collect` waits for the master's pod, then copies ``/results`` out of it with one
  ``kubectl exec`` that blocks until Locust has finished (a tar.gz, base64 on stdout), and marks
  the results collected so the master exits. The run folder then holds what a local run's does,
  and the summary, SLO verdicts and report follow the same path.

Running needs a cluster: only rendering and validation are tested here (tests/golden/load/).
"""

from __future__ import annotations

import base64
import io
import json
import re
import shlex
import tarfile
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.text import Text

from inferbox import aigateway
from inferbox.config import Settings
from inferbox.errors import InferboxError
from inferbox.load import harness, tracing
from inferbox.load.profiles import Profile
from inferbox.load.runs import LoadTestOutcome, Selection, finish, issue_token, new_run_dir, warn_budgets
from inferbox.load.target import IN_CLUSTER_GATEWAY_URL, KSERVE_OPENAI_PREFIX
from inferbox.models.hosts import ingress_naming
from inferbox.render import Renderer, sort_objects
from inferbox.runner import Runner
from inferbox.tools import Toolbox
from inferbox.validate import SchemaValidator

NAMESPACE = "loadtest"
MASTER_PORT = 5557
FIELD_MANAGER = "inferbox-loadtest"
TEMPLATES = ("load/namespace.yaml.j2", "load/configmap.yaml.j2", "load/secret.yaml.j2", "load/master.yaml.j2",
             "load/workers.yaml.j2")
WORKERS_WAIT_S = 300  # how long the master waits for its workers to connect
COLLECT_WINDOW_S = 900  # how long the master keeps its results for collection after the run
TTL_S = 600  # finished Jobs (and their pods) are garbage-collected after this
RESULTS = "/results"
MASTER_RESOURCES = {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}}
WORKER_RESOURCES = {"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}}
POD_SECURITY = {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000,
                "seccompProfile": {"type": "RuntimeDefault"}}
CONTAINER_SECURITY = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                      "capabilities": {"drop": ["ALL"]}}
_DNS_LABEL = re.compile(r"[^a-z0-9-]+")


class InClusterError(InferboxError):
    """The in-cluster run could not be started or its results collected."""


def locust_image() -> str:
    """The image of the Locust this project runs locally, so both ends behave the same."""
    return f"locustio/locust:{metadata.version('locust')}"


def run_id_for(profile: str, now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dt%H%M%S")
    return _DNS_LABEL.sub("-", f"{stamp}-{profile}".lower()).strip("-")[:40].rstrip("-")


@dataclass(frozen=True)
class ClusterPlan:
    run_id: str
    profile: Profile
    model: str
    tenant: str | None
    workers: int
    image: str
    pss_version: str
    token: str | None = None
    namespace: str = NAMESPACE
    host_header: str | None = None  # the model's gateway host (inferbox.models.hosts), with a tenant
    trace: bool = False  # every request carries a sampled traceparent and the run id (inferbox.load.tracing)
    # Where the load goes: the Istio ingress gateway, or for an LLM the AI gateway (its OpenAI root).
    via_ai_gateway: bool = False

    @property
    def base_url(self) -> str:
        return aigateway.IN_CLUSTER_URL if self.via_ai_gateway else IN_CLUSTER_GATEWAY_URL

    @property
    def openai_prefix(self) -> str:
        return aigateway.OPENAI_PREFIX if self.via_ai_gateway else KSERVE_OPENAI_PREFIX

    @property
    def trace_service(self) -> str:
        """The first proxy the requests meet, whose spans a traced run's Jaeger search looks at."""
        return aigateway.TRACE_SERVICE if self.via_ai_gateway else tracing.ENTRY_SERVICE

    @property
    def labels(self) -> dict[str, str]:
        return {"app.kubernetes.io/name": "locust", "app.kubernetes.io/managed-by": "inferbox",
                "inferbox.dev/loadtest": self.run_id}

    @property
    def master(self) -> str:
        return f"locust-master-{self.run_id}"

    def spec(self, load_dir: Path) -> harness.RunSpec:
        return harness.RunSpec(profile=self.profile, model=self.model, base_url=self.base_url,
                               host_header=self.host_header, openai_prefix=self.openai_prefix,
                               workers=self.workers, run_dir=Path(RESULTS), load_dir=Path("/load"),
                               trace_run_id=self.run_id if self.trace else None)


def master_script(plan: ClusterPlan) -> str:
    spec = plan.spec(Path("/load"))
    files = ",".join(f"/load/{name}" for name in harness.locustfiles(plan.profile))
    argv = ["locust", "-f", files, "--master", "--headless", "--expect-workers", str(plan.workers),
            "--expect-workers-max-wait", str(WORKERS_WAIT_S), "--master-bind-port", str(MASTER_PORT),
            "--host", spec.base_url, *harness.load_options(plan.profile, stop_timeout_s=spec.stop_timeout_s),
            "--csv", f"{RESULTS}/{harness.CSV_PREFIX}", "--csv-full-history",
            "--html", f"{RESULTS}/{harness.HTML_FILE}", "--only-summary",
            "--logfile", f"{RESULTS}/{harness.LOG_FILE}", "--loglevel", "INFO", "--exit-code-on-error", "0"]
    return "\n".join([
        shlex.join(argv) + f" > {RESULTS}/{harness.OUTPUT_FILE} 2>&1",
        f"echo $? > {RESULTS}/exit-code",
        "# keep the results until inferbox has copied them (or the window closes)",
        f"waited=0; while [ ! -f {RESULTS}/collected ] && [ $waited -lt {COLLECT_WINDOW_S} ]; do "
        "sleep 2; waited=$((waited + 2)); done",
    ])


def render(plan: ClusterPlan, *, manifests: Path, load_dir: Path) -> list[dict[str, Any]]:
    """Every object of the in-cluster run, in apply order. Pure: nothing is read but the templates
    and the locustfiles."""
    spec = plan.spec(load_dir)
    files = {name: (load_dir / name).read_text() for name in [harness.SHARED_FILE, *harness.locustfiles(plan.profile)]}
    files[harness.CONFIG_FILE] = json.dumps(harness.locust_config(spec, RESULTS), indent=2, sort_keys=True) + "\n"
    env: list[dict[str, Any]] = [
        {"name": harness.CONFIG_ENV, "value": f"/load/{harness.CONFIG_FILE}"},
        {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
        {"name": "HOME", "value": "/tmp"},
    ]
    if plan.token is not None:
        env.append({"name": harness.TOKEN_ENV, "valueFrom": {"secretKeyRef": {"name": f"locust-{plan.run_id}-token",
                                                                             "key": "token"}}})
    run_s = plan.profile.duration + spec.stop_timeout_s
    context = {
        "namespace": plan.namespace, "run_id": plan.run_id, "labels": plan.labels, "pss_version": plan.pss_version,
        "files": files, "token": plan.token, "image": plan.image, "workers": plan.workers,
        "master_port": MASTER_PORT, "master_script": master_script(plan), "env": env,
        "worker_args": ["-f", ",".join(f"/load/{n}" for n in harness.locustfiles(plan.profile)), "--worker",
                        "--master-host", plan.master, "--master-port", str(MASTER_PORT)],
        "master_resources": MASTER_RESOURCES, "worker_resources": WORKER_RESOURCES,
        "pod_security": POD_SECURITY, "container_security": CONTAINER_SECURITY,
        "master_deadline_s": WORKERS_WAIT_S + run_s + COLLECT_WINDOW_S + 60,
        "worker_deadline_s": WORKERS_WAIT_S + run_s + 60, "ttl_s": TTL_S,
    }
    renderer = Renderer(manifests)
    objects: list[dict[str, Any]] = []
    for template in TEMPLATES:
        if template.endswith("secret.yaml.j2") and plan.token is None:
            continue
        objects += renderer.objects(template, **context)
    return sort_objects(objects)


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (the locustfiles, the master's script) as literal blocks, as a person writes them."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str)


def to_yaml(objects: list[dict[str, Any]]) -> str:
    return yaml.dump_all(objects, Dumper=_BlockDumper, sort_keys=False, default_flow_style=False, width=120)


def validate(objects: list[dict[str, Any]], kubernetes_version: str) -> None:
    SchemaValidator(kubernetes_version).validate(objects, require_all=True)


def plan_for(settings: Settings, selection: Selection, *, workers: int, token: str | None,
             now: datetime | None = None, trace: bool = False, ai_gateway: bool = False) -> ClusterPlan:
    """``ai_gateway``: the cluster runs the AI gateway; an LLM's load then goes through it, to the
    tenant's OpenAI host (the model admits inference from it alone)."""
    from inferbox.tenants.render import pss_version

    via_ai = ai_gateway and selection.tenant is not None and aigateway.serves_openai_only(selection.model)
    if via_ai:
        assert selection.tenant is not None
        host: str | None = aigateway.tenant_host(selection.tenant, ingress_naming(settings).domain)
    else:
        host = ingress_naming(settings).isvc_host(selection.model.name, selection.tenant) if selection.tenant else None
    return ClusterPlan(run_id=run_id_for(selection.profile.name, now), profile=selection.profile,
                       model=selection.model.name, tenant=selection.tenant, workers=workers, image=locust_image(),
                       pss_version=pss_version(settings.versions.kubernetes.version), token=token,
                       host_header=host, trace=trace, via_ai_gateway=via_ai)


# -- act -------------------------------------------------------------------------------------------
def apply(kube: Any, objects: list[dict[str, Any]]) -> None:
    for obj in objects:
        kube.apply(obj, field_manager=FIELD_MANAGER)


def collect(settings: Settings, plan: ClusterPlan, kube: Any, runner: Runner, run_dir: Path) -> None:
    """Wait for the master's pod, copy /results once Locust has finished, mark them collected."""
    from inferbox.k8s import ObjectRef
    from inferbox.wait import Deadline, Waiter

    job = ObjectRef("batch/v1", "Job", plan.master, plan.namespace)
    Waiter(kube, context=settings.kube_context).until(
        job, lambda obj: int((obj.get("status") or {}).get("ready") or 0) >= 1, Deadline(WORKERS_WAIT_S),
        what=f"the Locust master ({plan.master}) to run", pods=True)
    kubectl = Toolbox.from_settings(settings, runner).kubectl
    pack = ("import base64,io,sys,tarfile; b=io.BytesIO(); t=tarfile.open(fileobj=b, mode='w:gz'); "
            f"t.add('{RESULTS}', arcname='.'); t.close(); sys.stdout.write(base64.b64encode(b.getvalue()).decode())")
    wait_then_pack = (f"while [ ! -f {RESULTS}/exit-code ]; do sleep 2; done; python -c {shlex.quote(pack)}")
    timeout = plan.profile.duration + WORKERS_WAIT_S + 300.0
    master = f"job/{plan.master}"
    result = kubectl.exec(plan.namespace, master, "master", ("sh", "-c", wait_then_pack), timeout_s=timeout,
                          mutating=False)
    unpack(result.stdout, run_dir)
    kubectl.exec(plan.namespace, master, "master", ("touch", f"{RESULTS}/collected"), timeout_s=60)


def unpack(encoded: str, run_dir: Path) -> None:
    try:
        data = base64.b64decode(encoded.strip(), validate=True)
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            archive.extractall(run_dir, filter="data")
    except (ValueError, tarfile.TarError) as exc:
        raise InClusterError(f"could not unpack the results copied from the master: {exc}") from exc


def cleanup(kube: Any, objects: list[dict[str, Any]]) -> None:
    """The token, the ConfigMap and the Service go now; the Jobs (and their pods) by their TTL."""
    from inferbox.k8s import ObjectRef

    for obj in sort_objects(objects, reverse=True):
        if obj["kind"] in ("Secret", "ConfigMap", "Service"):
            kube.delete(ObjectRef.of(obj))


def run(settings: Settings, selection: Selection, *, workers: int, console: Console, dry_run: bool, runner: Runner,
        prometheus_url: str | None, previous: Path | None, trace: bool = False) -> LoadTestOutcome | None:
    from inferbox.k8s import Kube

    token = None
    if selection.tenant and not dry_run:
        token = issue_token(settings, selection.tenant, selection.profile.duration, console)
    # A dry run reads no cluster: it assumes the AI gateway as bootstrap installs it by default.
    kube = None if dry_run else Kube.connect(context=settings.kube_context)
    ai_gateway = settings.ai_gateway if kube is None else aigateway.installed(kube)
    plan = plan_for(settings, selection, workers=workers, token=token if not dry_run else None, trace=trace,
                    ai_gateway=ai_gateway)
    objects = render(plan, manifests=settings.root / "manifests", load_dir=settings.root / "load")
    validate(objects, settings.versions.kubernetes.version)
    if plan.via_ai_gateway and plan.tenant is not None:
        warn_budgets(settings, plan.tenant, console)
    if kube is None:
        console.print(to_yaml(objects), markup=False, highlight=False, soft_wrap=True)
        return None
    run_dir = new_run_dir(settings, selection.model.name, selection.profile.name)
    (run_dir / "manifests.yaml").write_text(to_yaml([o for o in objects if o["kind"] != "Secret"]))
    started = datetime.now(UTC)
    apply(kube, objects)
    console.print(f"in-cluster load test {plan.run_id}: {workers} workers in namespace {plan.namespace} -> "
                  f"{plan.base_url} (Host {plan.host_header or '-'})", markup=False, highlight=False)
    try:
        with console.status(Text(f"{plan.run_id}: running {selection.profile.name} for "
                                 f"{selection.profile.duration}s in the cluster ...")):
            collect(settings, plan, kube, runner, run_dir)
    finally:
        cleanup(kube, objects)
    return finish(settings, run_dir, selection, console, target="cluster (in-cluster Locust)",
                  base_url=plan.base_url, workers=workers, started=started, finished=datetime.now(UTC),
                  prometheus_url=prometheus_url, previous=previous, trace_service=plan.trace_service)

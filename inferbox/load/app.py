"""What ``invoke loadtest`` does: pick the profile, the model, the target and the token, run Locust,
judge the SLOs, write the run folder and print the verdict.

The run folder ``.inferbox/loadtests/<timestamp>-<model>-<profile>/`` holds Locust's CSVs and HTML,
its log and output, ``summary.json`` (counts, rates, percentiles, custom metrics, SLO verdicts, the
profile and the versions used), the plots and ``report.html``. A breached SLO raises
:class:`~inferbox.load.summary.SloBreached` after everything is written, so a CI job fails with the
SLO named and the report kept.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from inferbox import aigateway
from inferbox.config import Settings
from inferbox.errors import ConfigError
from inferbox.k8s import Kube
from inferbox.load import harness, incluster
from inferbox.load import summary as verdict
from inferbox.load.profiles import Profile, ProfilesFile, default_profiles_path, display_path, load_profiles
from inferbox.load.runs import (
    LoadTestOutcome,
    Selection,
    finish,
    issue_token,
    loadtests_dir,
    new_run_dir,
    warn_budgets,
)
from inferbox.load.target import (
    GATEWAY_URL,
    Endpoint,
    Target,
    check_host,
    openai_prefix,
    parse_target,
    probe,
)
from inferbox.local.client import free_port
from inferbox.local.predictors import LocalTarget, local_target
from inferbox.models.catalog import Catalog, default_catalog_path, load_catalog
from inferbox.models.gateway import ai_gateway_port
from inferbox.models.hosts import ingress_naming
from inferbox.runner import Runner, ShellRunner
from inferbox.ui import FitTable


def profiles_of(settings: Settings, path: Path | None = None) -> tuple[ProfilesFile, str]:
    path = path or default_profiles_path(settings.root)
    return load_profiles(path, root=settings.root), display_path(path, settings.root)


def select(settings: Settings, catalog: Catalog, *, profile: str | Profile, model: str | None, tenant: str | None,
           target: Target, profiles_path: Path | None = None) -> Selection:
    """The profile by name (or as given), the model (explicit, else the profile's first), the tenant."""
    if isinstance(profile, Profile):
        chosen, shown = profile, "profile"
    else:
        profiles, shown = profiles_of(settings, profiles_path)
        chosen = profiles.get(profile, shown)
    spec = catalog.get(model or chosen.models[0])
    if missing := sorted(set(chosen.protocols) - set(spec.protocols)):
        raise ConfigError(shown, [(f"profiles.{chosen.name}.protocols",
                                   f"{spec.name} does not serve {', '.join(missing)} (it serves "
                                   f"{', '.join(spec.protocols)}: models/catalog.yaml)")])
    tenant_name = tenant or (chosen.tenants[0] if target is Target.CLUSTER and chosen.tenants else None)
    if tenant_name is not None:
        _check_tenant(settings, tenant_name, spec.name, cluster=target is Target.CLUSTER)
    elif target is Target.CLUSTER:
        raise ConfigError(shown, [(f"profiles.{chosen.name}.tenants", "names no tenant: pass --tenant (the gateway "
                                                                     "routes to <model>.<tenant> and checks its JWT)")])
    return Selection(chosen, spec, tenant_name)


def _check_tenant(settings: Settings, name: str, model: str, *, cluster: bool) -> None:
    from inferbox.tenants.app import load as load_tenants
    from inferbox.tenants.spec import select as select_tenant

    (tenant,) = select_tenant(load_tenants(settings), name)
    if cluster and model not in tenant.models:
        raise ConfigError(f"tenants/{name}.yaml", [("models", f"{model} is not one of {name}'s models "
                                                              f"({', '.join(tenant.models) or 'none'})")])


def endpoint_for(settings: Settings, selection: Selection, target: Target, *, host: str | None,
                 i_own_this_host: bool, local: LocalTarget | None, catalog: Catalog) -> Endpoint:
    """Where the load goes: checked against the safety rules before anything is sent."""
    model = selection.model.name
    routed = (ingress_naming(settings).isvc_host(model, selection.tenant)
              if target is Target.CLUSTER and selection.tenant else None)
    local = local or local_target(settings, catalog, ShellRunner())
    if host is not None:
        base = check_host(host, i_own_this_host=i_own_this_host)
        # A local vLLM server named by its URL serves OpenAI at the root, as it does without --host.
        servers = {record.base_url: record.server for record, _ in local.status()}
        return Endpoint(base, routed, f"--host {base}", openai_prefix=openai_prefix(servers.get(base)))
    if target is Target.LOCAL:
        record = local.running(model)
        base = check_host(record.base_url)  # a local predictor is on loopback; say so if it ever is not
        return Endpoint(base, None, f"local predictor {model} (pid {record.pid})",
                        openai_prefix=openai_prefix(record.server))
    return Endpoint(GATEWAY_URL, routed, f"the platform's gateway (routing {routed})")


def run_loadtest(settings: Settings, model: str | None, tenant: str | None, profile: str | Profile,  # noqa: PLR0917
                 target: str | Target = "local", workers: int = 0, host: str | None = None,
                 compare: str | None = None, console: Console | None = None, *, i_own_this_host: bool = False,
                 prometheus_url: str | None = None, in_cluster: bool = False, dry_run: bool = False,
                 profiles_path: Path | None = None, runner: Runner | None = None,
                 local: LocalTarget | None = None, trace: bool = False) -> LoadTestOutcome | None:
    """Run one load test and judge it; raises SloBreached (after writing the run folder) on a breach.

    ``--in-cluster`` renders (``dry_run``: only prints) the Locust master and workers for the
    cluster instead, applies them and collects their results; it returns None on a dry run.
    ``trace``: every request carries a sampled W3C traceparent and the run's id
    (inferbox.load.tracing); the trace ids go to the run folder's traces.txt.
    """
    console = console or Console()
    kind = parse_target(target) if isinstance(target, str) else target
    if not 0 <= workers <= harness.MAX_WORKERS:
        raise ConfigError("command line", [("workers", f"{workers}: between 0 (one process) and "
                                                       f"{harness.MAX_WORKERS}")])
    if dry_run and not in_cluster:
        raise ConfigError("command line", [("dry-run", "prints the in-cluster manifests: with --in-cluster (a "
                                                       "local run has nothing to print before it starts)")])
    catalog = load_catalog(default_catalog_path(settings.root))
    previous = verdict.find_summary(compare, loadtests_dir(settings)) if compare else None
    if in_cluster:

        if host is not None:
            raise ConfigError("command line", [("host", "not with --in-cluster: the pods load the platform's "
                                                        "gateway inside the cluster")])
        selection = select(settings, catalog, profile=profile, model=model, tenant=tenant, target=Target.CLUSTER,
                           profiles_path=profiles_path)
        return incluster.run(settings, selection, workers=max(1, workers), console=console, dry_run=dry_run,
                             runner=runner or ShellRunner(), prometheus_url=prometheus_url, previous=previous,
                             trace=trace)
    selection = select(settings, catalog, profile=profile, model=model, tenant=tenant, target=kind,
                       profiles_path=profiles_path)
    with contextlib.ExitStack() as stack:
        endpoint = None
        if kind is Target.CLUSTER and host is None and selection.tenant \
                and aigateway.serves_openai_only(selection.model):
            kube = Kube.connect(context=settings.kube_context)
            if aigateway.installed(kube):
                # An LLM on the AI gateway admits inference from the gateway alone: the load goes
                # through it (a port-forward to its proxies), to the tenant's OpenAI host.
                port = stack.enter_context(ai_gateway_port(kube))
                ai_host = aigateway.tenant_host(selection.tenant, ingress_naming(settings).domain)
                # The tunnel is in every latency figure: --in-cluster measures without it.
                endpoint = Endpoint(f"http://127.0.0.1:{port}", ai_host,
                                    f"the AI gateway (routing {ai_host}, through a port-forward)",
                                    openai_prefix=aigateway.OPENAI_PREFIX, trace_service=aigateway.TRACE_SERVICE)
                warn_budgets(settings, selection.tenant, console)
        if endpoint is None:
            endpoint = endpoint_for(settings, selection, kind, host=host, i_own_this_host=i_own_this_host,
                                    local=local, catalog=catalog)
        return _run(settings, selection, endpoint, kind, workers=workers, console=console, runner=runner,
                    prometheus_url=prometheus_url, previous=previous, trace=trace)


def _run(settings: Settings, selection: Selection, endpoint: Endpoint, kind: Target, *, workers: int,
         console: Console, runner: Runner | None, prometheus_url: str | None, previous: Path | None,
         trace: bool) -> LoadTestOutcome:
    """One Locust run against ``endpoint``, judged."""
    token = issue_token(settings, selection.tenant, selection.profile.duration, console) if selection.tenant else None
    probe(endpoint)
    run_dir = new_run_dir(settings, selection.model.name, selection.profile.name)
    spec = harness.RunSpec(profile=selection.profile, model=selection.model.name, base_url=endpoint.base_url,
                           host_header=endpoint.host_header, workers=workers, run_dir=run_dir,
                           load_dir=settings.root / "load", openai_prefix=endpoint.openai_prefix,
                           trace_run_id=run_dir.name if trace else None)
    console.print(f"load test {run_dir.name}: profile {selection.profile.name} -> {endpoint.description}"
                  f"{f' as {selection.tenant}' if selection.tenant else ''}"
                  f"{f', {workers} workers' if workers else ''}{', traced' if trace else ''}", markup=False,
                  highlight=False)
    started = datetime.now(UTC)
    harness.run_locust(spec, runner or ShellRunner(), console, token=token,
                       master_port=free_port() if workers else None)
    return finish(settings, run_dir, selection, console, target=kind.value, base_url=endpoint.base_url,
                  workers=workers, started=started, finished=datetime.now(UTC), prometheus_url=prometheus_url,
                  previous=previous, trace_service=endpoint.trace_service)


def profiles_table(settings: Settings, name: str | None = None) -> Any:
    """The profiles with their bounds, load, targets and SLOs (validating the file on the way)."""

    from inferbox.load.profiles import format_duration

    profiles, shown = profiles_of(settings)
    chosen = [profiles.get(name, shown)] if name else list(profiles.profiles.values())
    table = FitTable(shown)
    for column in ("profile", "load", "bounds", "protocols", "models", "SLOs"):
        table.add_column(column)
    for p in chosen:
        if p.steps:
            load = "steps " + " -> ".join(f"{s.users}u/{format_duration(s.duration)}" for s in p.steps)
        else:
            load = f"{p.users} users (+{p.spawn_rate:g}/s)"
        slo = ", ".join(f"{key} {value:g}" for key, value in
                        p.slo.model_dump(by_alias=True, exclude_none=True).items())
        table.add_row(p.name, load, f"{format_duration(p.duration)}, {p.max_requests} requests",
                      ", ".join(f"{k}:{v}" for k, v in p.protocols.items()), ", ".join(p.models), slo)
    return table

"""inferbox tasks. Each task parses its flags and calls one function of the inferbox package.

Run `invoke --list` for the tasks and `invoke --help <task>` for a task's flags.
"""

from __future__ import annotations

from pathlib import Path

from invoke import Collection, Context, task

from inferbox import cli

CLUSTER_HELP = {
    "provider": "kind (default), minikube, or existing (a kubeconfig context; nothing is created or deleted)",
    "cluster_name": "cluster (kind) or profile (minikube) name; default inferbox",
    "context": "kubeconfig context to use (required with --provider existing)",
    "gpu": "auto (default: GPU phases when the doctor finds a usable NVIDIA GPU stack), on, or off",
    "knative": "also install Knative Serving (KServe's Knative mode: scale to zero, canaries)",
    "monitoring": "install Prometheus/Grafana, Jaeger and Kiali (default on; --no-monitoring to skip)",
    "ai_gateway": "install Envoy Gateway and Envoy AI Gateway: the tenants' OpenAI endpoint, token budgets and "
                  "JWKS endpoint (default on; --no-ai-gateway to skip)",
    "trace_sampling": "percentage of requests traced by the mesh and the AI gateway, 0-100 (default 1)",
    "verbose": "log every command on stderr",
}


@task(help={"minikube": "also install minikube", "verbose": CLUSTER_HELP["verbose"]})
def tools(c: Context, minikube: bool = False, verbose: bool = False) -> None:
    """Install the pinned kind, helm and kubectl into .inferbox/bin (sha256-verified)."""
    from inferbox.bootstrap import toolinstall

    with cli.exit_on_error():
        settings = cli.settings()
        cli.setup_logging(settings.state_dir, verbose=verbose)
        cli.console.print(toolinstall.outcomes_table(toolinstall.install_tools(settings, minikube=minikube)))


@task(help={k: CLUSTER_HELP[k] for k in ("provider", "gpu", "verbose")})
def doctor(c: Context, provider: str | None = None, gpu: str | None = None, verbose: bool = False) -> None:
    """Preflight: Docker, tool versions, CPU/memory/disk, inotify limits, GPU; exits 1 on a blocker."""
    from inferbox.bootstrap import app
    from inferbox.bootstrap import doctor as preflight

    with cli.exit_on_error():
        settings = cli.settings(provider=provider, gpu=gpu)
        cli.setup_logging(settings.state_dir, verbose=verbose)
        checks, _ = app.run_doctor(settings, app.make_runner(settings))
        cli.console.print(preflight.checks_table(checks), soft_wrap=True)
        if preflight.blocking_failures(checks):
            raise cli.Exit("doctor: blocking problems found (see each failing check's fix)", code=1)


@task(help={**{k: CLUSTER_HELP[k] for k in ("provider", "cluster_name", "context", "gpu", "knative", "monitoring",
                                          "ai_gateway", "trace_sampling")},
            "json": "print the plan as JSON instead of a table"})
def plan(c: Context, provider: str | None = None, cluster_name: str | None = None, context: str | None = None,
         gpu: str | None = None, knative: bool = False, monitoring: bool = True, ai_gateway: bool = True,
         trace_sampling: float | None = None, json: bool = False) -> None:
    """Print the install plan: phases, parallel waves, pinned versions and health waits."""
    from inferbox.bootstrap import app

    with cli.exit_on_error():
        settings = cli.settings(provider=provider, cluster_name=cluster_name, context=context, gpu=gpu,
                             knative=knative, monitoring=monitoring, ai_gateway=ai_gateway,
                             trace_sampling_percent=trace_sampling)
        app.show_plan(settings, cli.console, as_json=json)


BUNDLE_HELP = ("install from this air-gapped bundle (made by `invoke bundle --out DIR`): no chart is "
               "downloaded; each chart must match its pin and recorded sha256")


@task(help={**CLUSTER_HELP, "bundle": BUNDLE_HELP,
            "dry_run": "print every command (and wait) in order instead of running anything",
            "events": "write the JSON-lines event log here (default .inferbox/bootstrap-events.jsonl)",
            "skip_doctor": "do not run the preflight checks first"})
def bootstrap(c: Context, provider: str | None = None, cluster_name: str | None = None, context: str | None = None,
              gpu: str | None = None, knative: bool = False, monitoring: bool = True, ai_gateway: bool = True,
              trace_sampling: float | None = None, dry_run: bool = False,
              events: str | None = None, skip_doctor: bool = False, bundle: str | None = None,
              verbose: bool = False) -> None:
    """Create the cluster and install the platform, phase by phase, with health waits.

    First the pinned charts are pulled into .inferbox/charts (or taken from --bundle) and the
    render check runs on them: nothing is installed when it fails."""
    from inferbox.bootstrap import app

    with cli.exit_on_error():
        settings = cli.settings(provider=provider, cluster_name=cluster_name, context=context, gpu=gpu,
                             knative=knative, monitoring=monitoring, ai_gateway=ai_gateway,
                             trace_sampling_percent=trace_sampling, dry_run=dry_run,
                             event_log=Path(events) if events else None,
                             bundle=Path(bundle).resolve() if bundle is not None else None)
        if settings.event_log is None and not dry_run:
            settings = cli.with_event_log(settings)
        cli.setup_logging(settings.state_dir, verbose=verbose)
        result = app.bootstrap(settings, cli.console, skip_doctor=skip_doctor)
        for line in result.transcript:
            print(line)


@task(help={"bundle": "check the charts of this bundle instead of pulling into .inferbox/charts",
            "verbose": CLUSTER_HELP["verbose"]})
def charts_verify(c: Context, bundle: str | None = None, verbose: bool = False) -> None:
    """Render every pinned chart with the plan's values and check the plan against it; exit 1 on a problem.

    Checks that each health-check target is rendered, every catalog runtime exists, no values key
    is unknown to its chart, every rendered Kubernetes object matches the pinned schema, every
    IngressClass a route needs is created, and KServe's domainTemplate/ingressDomain are the ones
    inferbox computes hosts with. Run it after moving a pin."""
    from inferbox.bootstrap import app

    with cli.exit_on_error():
        settings = cli.settings(bundle=Path(bundle).resolve() if bundle is not None else None)
        cli.setup_logging(settings.state_dir, verbose=verbose)
        app.charts_verify(settings, cli.console)


@task(help={"out": "the bundle folder (default .inferbox/bundle); charts already there are kept",
            "verbose": CLUSTER_HELP["verbose"]})
def bundle(c: Context, out: str | None = None, verbose: bool = False) -> None:
    """Make an air-gapped bundle: every pinned chart, its sha256, and the images each phase runs."""
    from inferbox.bootstrap import app

    with cli.exit_on_error():
        settings = cli.settings()
        cli.setup_logging(settings.state_dir, verbose=verbose)
        app.bundle(settings, cli.console, Path(out).resolve() if out else settings.state_dir / "bundle")


@task(help={k: CLUSTER_HELP[k] for k in ("provider", "cluster_name", "context", "gpu", "knative", "monitoring",
                                         "ai_gateway")})
def status(c: Context, provider: str | None = None, cluster_name: str | None = None, context: str | None = None,
           gpu: str | None = None, knative: bool = False, monitoring: bool = True, ai_gateway: bool = True) -> None:
    """Show installed phases, live chart versions against the pins (drift in red) and readiness."""
    from inferbox.bootstrap import app

    with cli.exit_on_error():
        settings = cli.settings(provider=provider, cluster_name=cluster_name, context=context, gpu=gpu,
                             knative=knative, monitoring=monitoring, ai_gateway=ai_gateway)
        app.status(settings, cli.console)


@task(help={**{k: CLUSTER_HELP[k] for k in ("provider", "cluster_name", "context")},
            "timeout": "seconds to wait for the pod to finish (default 300)"})
def gpu_check(c: Context, provider: str | None = None, cluster_name: str | None = None, context: str | None = None,
              timeout: int = 300) -> None:
    """Run a pod that requests one GPU and runs nvidia-smi; print the GPU name and memory it got."""
    from inferbox.bootstrap import app

    with cli.exit_on_error():
        settings = cli.settings(provider=provider, cluster_name=cluster_name, context=context)
        app.gpu_check(settings, cli.console, timeout_s=timeout)


@task(help={**{k: CLUSTER_HELP[k] for k in ("provider", "cluster_name", "context", "knative", "verbose")},
            "keep_cluster": "uninstall the releases but keep the kind/minikube cluster",
            "dry_run": "print the commands instead of running them"})
def teardown(c: Context, provider: str | None = None, cluster_name: str | None = None, context: str | None = None,
             knative: bool = False, keep_cluster: bool = False, dry_run: bool = False, verbose: bool = False) -> None:
    """Uninstall the platform in reverse order and delete the cluster inferbox created."""
    from inferbox.bootstrap import app

    with cli.exit_on_error():
        settings = cli.settings(provider=provider, cluster_name=cluster_name, context=context, knative=knative,
                             dry_run=dry_run)
        cli.setup_logging(settings.state_dir, verbose=verbose)
        runner = app.make_runner(settings)
        app.teardown(settings, cli.console, keep_cluster=keep_cluster, runner=runner)
        if dry_run:
            for line in runner.lines():  # type: ignore[attr-defined]
                print(line)


MODEL_HELP = {
    "name": "the model's name in models/catalog.yaml (invoke models lists them)",
    "target": "local (a KServe model server process on 127.0.0.1, no cluster) or cluster (an InferenceService)",
    "tenant": "the tenant (tenants/<name>.yaml) whose namespace and quota the model uses; cluster target only",
    "mode": "standard (raw Deployment, default) or knative (serverless, scale to zero, canaries); cluster only",
    "cpu_fallback": "run a GPU model on CPUs with the catalog's cpuFallback resources and arguments",
    "canary": "roll out as a canary taking this percent of traffic (needs --mode knative)",
    "storage_uri": "serve the model from this storage URI instead of the catalog's (a new version, for --canary)",
    "wait": "wait for the InferenceService to be Ready; on failure explain why (pods, events)",
    "timeout": "seconds to wait with --wait (default 600)",
    "context": "kubeconfig context (default: the platform's, kind-inferbox)",
    "verbose": "log every command on stderr",
}


@task(help={k: MODEL_HELP[k] for k in ("name", "target", "tenant", "mode", "cpu_fallback", "canary", "storage_uri",
                                       "wait", "timeout", "context", "verbose")})
def deploy_model(c: Context, name: str, target: str = "local", tenant: str | None = None, mode: str = "standard",
                 cpu_fallback: bool = False, canary: str | None = None, storage_uri: str | None = None,
                 wait: bool = False, timeout: int = 600, context: str | None = None, verbose: bool = False) -> None:
    """Deploy a catalog model: a local predictor, or an InferenceService for a tenant. Safe to repeat."""
    from inferbox.models import commands

    with cli.exit_on_error():
        settings = cli.settings(context=context)
        cli.setup_logging(settings.state_dir, verbose=verbose)
        cli.console.print(commands.deploy(settings, name, target=commands.parse_target(target), tenant=tenant,
                                          mode=commands.parse_mode(mode), cpu_fallback=cpu_fallback,
                                          canary=commands.parse_percent(canary),
                                          storage_uri=storage_uri, wait=wait, timeout_s=timeout),
                          markup=False, highlight=False)


@task(help={"name": MODEL_HELP["name"],
            "target": "local (the model's local predictor) or cluster (through the Istio gateway, with a token)",
            "tenant": "the tenant whose model is called (cluster target)",
            "context": MODEL_HELP["context"],
            "data": 'instances as JSON, e.g. \'[[6.8, 2.8, 4.8, 1.4]]\' (default: the catalog\'s example)',
            "prompt": "an LLM's chat prompt (local target: the answer is streamed as it is generated)",
            "max_tokens": "an LLM's answer length limit, in tokens (default 128)"})
def predict(c: Context, name: str, target: str = "local", tenant: str | None = None, context: str | None = None,
            data: str | None = None, prompt: str | None = None, max_tokens: int = 128) -> None:
    """Send the model a request over each protocol it offers (V1, V2, OpenAI chat) and print the answers;
    a local LLM streams its answer."""
    from inferbox.models import commands

    with cli.exit_on_error():
        settings = cli.settings(context=context)
        if commands.parse_target(target) is commands.Target.CLUSTER:
            lines = commands.predict_cluster(settings, name, tenant=tenant, data=data, prompt=prompt,
                                             max_tokens=max_tokens)
        elif commands.is_llm(settings, name, data=data, prompt=prompt, max_tokens=max_tokens):
            summary = commands.chat_local(settings, name, prompt=prompt, max_tokens=max_tokens,
                                          on_text=lambda piece: cli.console.out(piece, end="", highlight=False))
            lines = ["", summary]
        else:
            lines = commands.prediction_lines(commands.predict_local(settings, name, data=data))
        for line in lines:
            cli.console.print(line, markup=False, highlight=False, soft_wrap=True)


@task(help={"target": "local (stops local predictors)", "model": "stop only this model's predictor (default: all)"})
def down(c: Context, target: str = "local", model: str | None = None) -> None:
    """Stop local predictors (and forget stale ones). Safe to repeat; reads no configuration file."""
    from inferbox.models import commands

    with cli.exit_on_error():
        for line in commands.down(cli.state_dir(), target=commands.parse_target(target), model=model):
            cli.console.print(line, markup=False, highlight=False)


@task(help={k: MODEL_HELP[k] for k in ("name", "tenant", "context")})
def undeploy_model(c: Context, name: str, tenant: str | None = None, context: str | None = None) -> None:
    """Delete a model's InferenceService from a tenant's namespace (nothing to delete is fine)."""
    from inferbox.models import commands

    with cli.exit_on_error():
        cli.console.print(commands.undeploy(cli.settings(context=context), name, tenant=tenant), markup=False,
                          highlight=False)


@task(help={k: MODEL_HELP[k] for k in ("name", "tenant", "context")})
def promote(c: Context, name: str, tenant: str | None = None, context: str | None = None) -> None:
    """Give a canary all traffic (Knative mode)."""
    from inferbox.models import commands

    with cli.exit_on_error():
        cli.console.print(commands.promote(cli.settings(context=context), name, tenant=tenant), markup=False,
                          highlight=False)


@task(help={k: MODEL_HELP[k] for k in ("name", "tenant", "context")})
def rollback(c: Context, name: str, tenant: str | None = None, context: str | None = None) -> None:
    """Send all traffic back to the previous revision (Knative mode canary)."""
    from inferbox.models import commands

    with cli.exit_on_error():
        cli.console.print(commands.rollback(cli.settings(context=context), name, tenant=tenant), markup=False,
                          highlight=False)


@task
def models(c: Context) -> None:
    """List the model catalog: runtime, storage, protocols, GPUs, CPU fallback, local support."""
    from inferbox.models import commands

    with cli.exit_on_error():
        cli.console.print(commands.catalog_table(commands.load_models(cli.settings())))


KUBE_HELP = {k: CLUSTER_HELP[k] for k in ("provider", "cluster_name", "context")}
JWKS_HELP = ("remote (default with the AI gateway: sidecars and gateway fetch its JWKS endpoint, so a key "
             "rotation needs no re-apply) or inline (the keys in every policy; the only choice without it)")
TENANT_KNATIVE_HELP = ("admit Knative's activator and autoscaler (Knative mode); tenants-apply turns it on by itself "
                       "when the cluster runs KnativeServing")


@task(help={**KUBE_HELP,
            "tenant": "only this tenant (all tenant files are still validated first)",
            "dry_run": "ask the API server what would change (server-side dry-run apply); change nothing",
            "crds": "also validate custom resources against the CRD YAML under this folder before applying",
            "knative": TENANT_KNATIVE_HELP,
            "jwks": JWKS_HELP,
            "verbose": "log every API call failure on stderr"})
def tenants_apply(c: Context, tenant: str | None = None, dry_run: bool = False, crds: str | None = None,
                  provider: str | None = None, cluster_name: str | None = None, context: str | None = None,
                  knative: bool = False, jwks: str | None = None, verbose: bool = False) -> None:
    """Make the cluster match tenants/*.yaml: server-side apply, prune what a tenant dropped, report each object."""
    from inferbox.tenants import app

    with cli.exit_on_error():
        settings = cli.settings(provider=provider, cluster_name=cluster_name, context=context, knative=knative)
        cli.setup_logging(settings.state_dir, verbose=verbose)
        app.tenants_apply(settings, cli.console, tenant=tenant, dry_run=dry_run,
                          crds=[Path(crds)] if crds else (), jwks=jwks)


@task(help={"tenant": "only this tenant", "knative": TENANT_KNATIVE_HELP,
            "ai_gateway": "render for a cluster with the AI gateway (default on; --no-ai-gateway: without)",
            "monitoring": "render for a cluster with monitoring (default on; --no-monitoring: without)",
            "jwks": JWKS_HELP})
def tenants_render(c: Context, tenant: str | None = None, knative: bool = False, ai_gateway: bool = True,
                   monitoring: bool = True, jwks: str | None = None) -> None:
    """Print the YAML tenants-apply would apply (needs no cluster; uses the keyring's public keys)."""
    from inferbox.tenants import app

    with cli.exit_on_error():
        settings = cli.settings(knative=knative, ai_gateway=ai_gateway, monitoring=monitoring)
        print(app.tenants_render(settings, tenant=tenant, jwks_mode=jwks), end="")


@task(iterable=["model", "subject", "group"],
      help={**KUBE_HELP,
            "name": "tenant name: a DNS-1123 label, becomes the namespace and tenants/<name>.yaml",
            "display_name": "human-readable name (default: the name)",
            "model": "a model the tenant may deploy (repeatable)",
            "subject": "a JWT subject allowed to call its models (repeatable)",
            "group": "a JWT group whose members may call its models (repeatable)",
            "cpu": "CPU quota (requests and limits), e.g. 2 or 1500m; default 2",
            "memory": "memory quota (requests and limits), e.g. 4Gi; default 4Gi",
            "gpu": "nvidia.com/gpu quota; default none",
            "pods": "pod quota; default 10",
            "inference_services": "InferenceService quota; default 2",
            "apply": "apply the new tenant at once (default; --no-apply only writes the file)"})
def tenant_create(c: Context, name: str, display_name: str | None = None, model: list[str] | None = None,
                  subject: list[str] | None = None, group: list[str] | None = None, cpu: str = "2",
                  memory: str = "4Gi", gpu: int = 0, pods: int = 10, inference_services: int = 2,
                  apply: bool = True, provider: str | None = None, cluster_name: str | None = None,
                  context: str | None = None) -> None:
    """Write tenants/NAME.yaml (validated; never overwrites) and apply that tenant."""
    from inferbox.tenants import app

    with cli.exit_on_error():
        settings = cli.settings(provider=provider, cluster_name=cluster_name, context=context)
        new = app.NewTenant(name=name, display_name=display_name, models=model or [], subjects=subject or [],
                            groups=group or [], cpu=cpu, memory=memory, gpu=gpu or None, pods=pods,
                            inference_services=inference_services)
        app.create_tenant(settings, cli.console, new, apply=apply)


@task(help={**KUBE_HELP, "name": "the tenant to delete", "yes": "do not ask for confirmation"})
def tenant_delete(c: Context, name: str, yes: bool = False, provider: str | None = None,
                  cluster_name: str | None = None, context: str | None = None) -> None:
    """Delete what inferbox created for a tenant (found by its labels); asks first unless --yes."""
    from inferbox.tenants import app

    with cli.exit_on_error():
        settings = cli.settings(provider=provider, cluster_name=cluster_name, context=context)
        confirmed = yes or cli.confirm(f"delete tenant {name!r} (its namespace, quota, policies and RBAC)?")
        if not confirmed:
            raise cli.Exit("not confirmed: nothing deleted", code=1)
        app.tenant_delete(settings, cli.console, name, confirmed=True)


@task(help={"rotate": "make a new active signing key; the previous public key stays published until retired",
            "retire": "stop publishing the previous key with this kid (tokens it signed stop working)",
            "jwks": "also print the public JWKS"})
def keys(c: Context, rotate: bool = False, retire: str | None = None, jwks: bool = False) -> None:
    """Create (once), rotate or retire the ES256 token-signing key in .inferbox/keys; never prints private keys."""
    from inferbox.tenants import app

    with cli.exit_on_error():
        app.manage_keys(cli.settings(), cli.console, rotate=rotate, retire=retire, show_jwks=jwks)


@task(iterable=["group"],
      help={"tenant": "the tenant whose models the token may call",
            "subject": "the caller (JWT sub); default the tenant's first allowed subject",
            "ttl": "lifetime, e.g. 90s, 15m, 2h (at most 24h); default 15m",
            "group": "a group claim to include (repeatable)"})
def token(c: Context, tenant: str, subject: str | None = None, ttl: str = "15m",
          group: list[str] | None = None) -> None:
    """Print a short-lived JWT for calling a tenant's models (stdout: the token only)."""
    from inferbox.tenants import app

    with cli.exit_on_error():
        issued, warning = app.token_for(cli.settings(), tenant=tenant, subject=subject, ttl=ttl, groups=group or [])
        if warning:
            cli.warn(warning)
        print(issued.token)


@task(help={"base_url": "the Istio ingress gateway, e.g. http://localhost:8080 on kind",
            "tenant": "the tenant whose model is called; default tenant-a",
            "other_tenant": "the tenant whose token must be refused; default tenant-b",
            "model": "the model to call; default the tenant's first model",
            "host": "Host header; default the InferenceService's host as KServe names it "
                    "(<model>-<tenant>.example.com with the shipped helm-values/kserve.yaml)",
            "timeout": "seconds per request; default 10",
            "ai": "also check the tenant's OpenAI endpoint on the AI gateway (default on; --no-ai: only the mesh "
                  "path, e.g. after bootstrap --no-ai-gateway)",
            "ai_base_url": "the AI gateway (Service inferbox-ai in envoy-gateway-system, port 80) as forwarded to "
                           "this machine; default http://127.0.0.1:8081, e.g. after `kubectl -n envoy-gateway-system "
                           "port-forward svc/inferbox-ai 8081:80`",
            "ai_host": "Host header on the AI gateway; default the tenant's OpenAI host, <tenant>.ai.<domain> "
                       "(tenant-a.ai.example.com)",
            "ai_model": "the OpenAI model the allowed requests name; default the tenant's first OpenAI model (a "
                        "model it may not use is taken from the catalog)",
            "ai_budget": "end with chat requests until the tenant's smallest token budget answers 429 (default "
                         "on; it spends the budget for the rest of its window; --no-ai-budget skips it)",
            "ai_budget_timeout": "seconds the over-budget case may take before it fails; default 120"},
      auto_shortflags=False)
def verify_isolation(c: Context, base_url: str = "http://localhost:8080", tenant: str = "tenant-a",
                     other_tenant: str = "tenant-b", model: str | None = None, host: str | None = None,
                     timeout: float = 10.0, ai: bool = True, ai_base_url: str = "http://127.0.0.1:8081",
                     ai_host: str | None = None, ai_model: str | None = None, ai_budget: bool = True,
                     ai_budget_timeout: float = 120.0) -> None:
    """Call a tenant's model with good and bad tokens through the gateway and the AI gateway; expected vs observed."""
    from inferbox.tenants import app

    with cli.exit_on_error():
        app.verify_isolation(cli.settings(), cli.console, base_url=base_url, tenant=tenant,
                             other_tenant=other_tenant, model=model, host=host, timeout_s=timeout, ai=ai,
                             ai_base_url=ai_base_url, ai_host=ai_host, ai_model=ai_model, ai_budget=ai_budget,
                             ai_budget_timeout_s=ai_budget_timeout)


@task(help={**KUBE_HELP,
            "grafana_port": "local port for Grafana on 127.0.0.1 (default 3000; 0 picks a free one)",
            "prometheus_port": "local port for Prometheus on 127.0.0.1 (default 9090; 0 picks a free one)",
            "jaeger_port": "local port for Jaeger's query UI on 127.0.0.1, where it is installed (default 16686, "
                           "where invoke loadtest --trace links; 0 picks a free one)",
            "kiali_port": "local port for Kiali on 127.0.0.1, where it is installed (default 20001; 0 picks a free "
                          "one); it is served under /kiali",
            "verbose": "log every API call failure on stderr"})
def dashboards(c: Context, grafana_port: int = 3000, prometheus_port: int = 9090, jaeger_port: int = 16686,
               kiali_port: int = 20001, provider: str | None = None, cluster_name: str | None = None,
               context: str | None = None, verbose: bool = False) -> None:
    """Port-forward Grafana, Prometheus, Jaeger and Kiali; print their URLs and logins; Ctrl-C stops."""
    from inferbox.observability.dashboards import open_dashboards

    with cli.exit_on_error():
        settings = cli.settings(provider=provider, cluster_name=cluster_name, context=context)
        cli.setup_logging(settings.state_dir, verbose=verbose)
        open_dashboards(settings, cli.console, grafana_port=grafana_port, prometheus_port=prometheus_port,
                        jaeger_port=jaeger_port, kiali_port=kiali_port)


@task(help={"namespace": "render into this namespace instead of the monitoring phase's"})
def observability_render(c: Context, namespace: str | None = None) -> None:
    """Print the monitoring objects the monitoring phase applies (monitors, rules, dashboard ConfigMaps)."""
    import yaml

    from inferbox.observability.manifests import render_monitoring

    with cli.exit_on_error():
        objects = render_monitoring(cli.settings(), namespace=namespace)
        print(yaml.safe_dump_all(objects, sort_keys=False), end="")


@task(help={"verbose": "list every expression checked, not only the problems"})
def observability_check(c: Context, verbose: bool = False) -> None:
    """Parse every dashboard and alert PromQL expression with Prometheus' parser (builds tools/promql-check once)."""
    from inferbox.observability.check import check_all

    with cli.exit_on_error():
        report = check_all(cli.settings())
        for line in report.lines(verbose=verbose):
            cli.console.print(line, markup=False, highlight=False, soft_wrap=True)
        if not report.ok:
            raise cli.Exit("observability: problems found (see above)", code=1)


LOAD_HELP = {
    "profile": "a profile of load/profiles.yaml: smoke (default), steady, spike, soak, chat-smoke, chat-steady",
    "model": "the catalog model to load (default: the profile's first model)",
    "tenant": "send this tenant's JWT (Authorization: Bearer); with --target cluster also routes to "
              "<model>.<tenant> (default there: the profile's first tenant)",
    "target": "local (the model's local predictor on 127.0.0.1, from invoke deploy-model NAME --target local) "
              "or cluster (the platform's gateway, http://127.0.0.1:8080 on kind)",
    "workers": "run Locust distributed: N worker processes and a master (default 0: one process); "
               "with --in-cluster the number of worker pods (default 1)",
    "host": "send to this base URL instead (e.g. http://127.0.0.1:9000); anything but loopback also needs "
            "--i-own-this-host",
    "i_own_this_host": "confirm that you own the non-loopback --host and may put load on it",
    "compare": "print the change against an earlier run: its folder, its summary.json, or its name under "
               ".inferbox/loadtests",
    "prometheus_url": "Prometheus to read GPU metrics (DCGM) from for the report, e.g. http://127.0.0.1:9090 "
                      "after kubectl port-forward; default none",
    "in_cluster": "run Locust inside the cluster (namespace loadtest: master and worker Jobs), then collect the "
                  "results into the run folder",
    "dry_run": "with --in-cluster: print the validated manifests instead of applying them",
    "trace": "send every request with a sampled W3C traceparent (a fresh trace id each) and "
             "x-inferbox-loadtest: <run>; the trace ids go to the run's traces.txt and the summary prints their "
             "Jaeger URLs (http://127.0.0.1:16686 after invoke dashboards)",
    "context": "kubeconfig context (default: the platform's, kind-inferbox)",
    "verbose": "log every command on stderr",
}


@task(help=LOAD_HELP, auto_shortflags=False)
def loadtest(c: Context, profile: str = "smoke", model: str | None = None, tenant: str | None = None,
             target: str = "local", workers: int = 0, host: str | None = None, i_own_this_host: bool = False,
             compare: str | None = None, prometheus_url: str | None = None, in_cluster: bool = False,
             dry_run: bool = False, trace: bool = False, context: str | None = None, verbose: bool = False) -> None:
    """Load-test a model with Locust: a profile's bounded load, SLO verdicts, a report with plots.

    Exits 1 naming the SLO when one is breached. Results: .inferbox/loadtests/<timestamp>-<model>-<profile>/.
    """
    from inferbox.load.app import run_loadtest

    with cli.exit_on_error():
        settings = cli.settings(context=context)
        cli.setup_logging(settings.state_dir, verbose=verbose)
        run_loadtest(settings, model, tenant, profile, target=target, workers=workers, host=host, compare=compare,
                     console=cli.console, i_own_this_host=i_own_this_host, prometheus_url=prometheus_url,
                     in_cluster=in_cluster, dry_run=dry_run, trace=trace)


@task(help={"profile": "show only this profile"}, auto_shortflags=False)
def load_profiles(c: Context, profile: str | None = None) -> None:
    """List the load profiles of load/profiles.yaml with their bounds and SLOs (validating the file)."""
    from inferbox.load.app import profiles_table

    with cli.exit_on_error():
        cli.console.print(profiles_table(cli.settings(), profile))


@task(help={"build_only": "build (or find cached) binaries and stop there",
            "once": "start, print the cluster summary, then stop (no waiting for Ctrl-C)",
            "crds": "folder of CRD manifests to install (default ../shared/crds when present)"})
def testenv(c: Context, build_only: bool = False, once: bool = False, crds: str | None = None) -> None:
    """The embedded local target: a real control plane with simulated CPU/GPU nodes, no Docker."""
    from inferbox import embedded

    with cli.exit_on_error():
        settings = cli.settings()
        embedded.run(settings, cli.console, build_only=build_only, once=once,
                     crds=[Path(crds)] if crds else None)


@task(help={"fix": "apply ruff's fixes and formatting instead of only checking"})
def check(c: Context, fix: bool = False) -> None:
    """Run ruff (lint) and the whole test suite; reports every failure."""
    results = []
    results.append(c.run(f"ruff check {'--fix ' if fix else ''}.", warn=True).ok)
    results.append(c.run("python -m pytest", warn=True, pty=False).ok)
    if not all(results):
        raise cli.Exit("check failed", code=1)


namespace = Collection(tools, doctor, plan, bootstrap, charts_verify, bundle, status, gpu_check, teardown, testenv,
                       tenants_apply, tenants_render, tenant_create, tenant_delete, keys, token, verify_isolation,
                       models, deploy_model, predict, down, undeploy_model, promote, rollback,
                       loadtest, load_profiles, dashboards, observability_render, observability_check, check)

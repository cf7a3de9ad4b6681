"""What the tenant tasks call: load and validate the files, render, apply, print.

Each function takes the run's Settings (and a Kube where tests bring their own cluster) and does
one task's work; tasks_tenants_proposal.py only parses flags and calls these.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from inferbox import aigateway
from inferbox.aigateway import JWKS_MAX_BYTES, JWKS_URL, TenantGateway, jwks_configmap, openai_models
from inferbox.bootstrap.phases import ENVOY_GATEWAY_NAMESPACE, JWKS_REFRESH
from inferbox.bootstrap.providers import PROVIDER_NAMESPACES
from inferbox.config import Settings
from inferbox.errors import ConfigError, InferboxError
from inferbox.hints import invoke
from inferbox.k8s import Kube, ObjectRef
from inferbox.models.catalog import default_catalog_path, load_catalog
from inferbox.models.hosts import ingress_naming
from inferbox.tenants import isolation
from inferbox.tenants.apply import FIELD_MANAGER, SHARED, ApplyReport, Desired, Outcome, apply_all, delete_tenant
from inferbox.tenants.keys import ISSUER, IssuedToken, KeyInfo, KeyStore, issue_token, parse_ttl
from inferbox.tenants.render import pss_version, render_shared, render_tenant, to_yaml
from inferbox.tenants.spec import (
    BOUNDS_FILE,
    KUBERNETES_NAMESPACES,
    Tenant,
    TenantRules,
    caller_name,
    display_path,
    load_bounds,
    load_tenants,
    parse_quantity,
    parse_tenant,
    select,
    tenant_files,
)
from inferbox.ui import FitTable, styled
from inferbox.validate import SchemaValidator

_OUTCOME_STYLE = {Outcome.CREATED: "green", Outcome.CONFIGURED: "yellow", Outcome.PRUNED: "red",
                  Outcome.UNCHANGED: "dim", Outcome.WOULD_CREATE: "green", Outcome.WOULD_CONFIGURE: "yellow",
                  Outcome.WOULD_PRUNE: "red", Outcome.KEPT: "magenta"}


class TenantsFailed(InferboxError):
    """Some tenants could not be converged; ``table`` shows what was done."""

    def __init__(self, message: str, table: Table | FitTable, report: ApplyReport | None = None) -> None:
        self.table = table
        self.report = report
        super().__init__(message)


def tenants_dir(settings: Settings) -> Path:
    return settings.root / "tenants"


def keystore(settings: Settings) -> KeyStore:
    return KeyStore.for_state_dir(settings.state_dir)


def platform_namespaces(settings: Settings) -> frozenset[str]:
    """Every namespace the platform may use, whatever the bootstrap flags: each phase's and each
    health check's (the full plan: GPU, Knative and monitoring on), the in-cluster load tests',
    the providers' add-ons' and Kubernetes' own. A tenant may take none of them."""
    from inferbox.bootstrap.phases import build_plan
    from inferbox.load.incluster import NAMESPACE as LOAD_NAMESPACE

    full = build_plan(replace(settings, knative=True, monitoring=True), gpu=True)
    names = {p.namespace for p in full.phases} | {c.namespace for p in full.phases for c in p.checks if c.namespace}
    names |= {n for provider in PROVIDER_NAMESPACES.values() for n in provider}
    return frozenset(names | {LOAD_NAMESPACE} | KUBERNETES_NAMESPACES)


def tenant_rules(settings: Settings, directory: Path | None = None) -> TenantRules:
    """What every tenant file is checked against: platform namespaces, the catalog, and the
    bounds in ``bounds.toml`` beside the tenant files."""
    catalog_path = default_catalog_path(settings.root)
    bounds_path = (directory or tenants_dir(settings)) / BOUNDS_FILE
    catalog = load_catalog(catalog_path)
    return TenantRules(reserved=platform_namespaces(settings),
                       models=frozenset(catalog.models), openai_models=openai_models(catalog),
                       bounds=load_bounds(bounds_path, shown=display_path(bounds_path, settings.root)),
                       catalog=display_path(catalog_path, settings.root),
                       bounds_file=display_path(bounds_path, settings.root))


def load(settings: Settings, directory: Path | None = None) -> list[Tenant]:
    """Every tenant file, all validated (one bad file stops everything)."""
    return load_tenants(directory or tenants_dir(settings), root=settings.root,
                        rules=tenant_rules(settings, directory))


def render_units(settings: Settings, tenants: Sequence[Tenant], store: KeyStore, *,
                 knative: bool = False, gateway: TenantGateway | None = None) -> list[Desired]:
    """The shared objects and each tenant's, rendered."""
    jwks = store.jwks_json()
    version = pss_version(settings.versions.kubernetes.version)
    units = [Desired(SHARED, render_shared())]
    units += [Desired(t.name, render_tenant(t, ISSUER, jwks, pod_security_version=version, knative=knative,
                                            gateway=gateway))
              for t in tenants]
    return units


class JwksMode(StrEnum):
    REMOTE = "remote"
    INLINE = "inline"


def tenant_gateway(settings: Settings, *, installed: bool, monitoring: bool, jwks: str | None) -> TenantGateway | None:
    """How tenants meet the AI gateway, or None where it is not installed.

    ``jwks``: ``remote`` (the default with the AI gateway: every verifier fetches the JWKS
    endpoint, so a key rotation reaches them all without re-applying tenants) or ``inline`` (the
    keys in every policy: no fetch at run time, but a rotation needs tenants-apply; the only
    choice without the AI gateway, whose proxies serve the endpoint). Raises ConfigError on
    another value, or ``remote`` without the AI gateway."""
    try:
        mode = JwksMode(jwks if jwks is not None else (JwksMode.REMOTE if installed else JwksMode.INLINE))
    except ValueError:
        raise ConfigError("command line", [("jwks", f"{jwks!r} is not one of remote, inline")]) from None
    if not installed:
        if mode is JwksMode.REMOTE:
            raise ConfigError("command line", [("jwks", "remote needs the JWKS endpoint, which the AI gateway "
                                                        "serves; it is not installed (bootstrap without "
                                                        "--no-ai-gateway), so use --jwks inline")])
        return None
    catalog = load_catalog(default_catalog_path(settings.root))
    return TenantGateway(openai_models=openai_models(catalog), domain=ingress_naming(settings).domain,
                         jwks_uri=JWKS_URL if mode is JwksMode.REMOTE else None, monitoring=monitoring)


PROMETHEUS_RULE_CRD = ObjectRef("apiextensions.k8s.io/v1", "CustomResourceDefinition",
                                "prometheusrules.monitoring.coreos.com")


def publish_jwks(settings: Settings, kube: Kube, store: KeyStore, *, dry_run: bool) -> int:
    """Put the key store's public keys into the JWKS endpoint's ConfigMap; the number of keys.
    Raises InferboxError when the set is over the endpoint's size limit."""
    jwks = store.jwks_json()
    if len(jwks.encode()) > JWKS_MAX_BYTES:
        raise InferboxError(f"the JWKS is {len(jwks.encode())} bytes, over the {JWKS_MAX_BYTES} the gateway's "
                            f"endpoint can serve: retire old keys (`{invoke('keys --retire KID')}`)")
    kube.apply(jwks_configmap(settings, jwks), field_manager=FIELD_MANAGER, dry_run=dry_run)
    return len(store.jwks()["keys"])


KNATIVE_SERVING = ObjectRef("operator.knative.dev/v1beta1", "KnativeServing", "knative-serving", "knative-serving")


def knative_installed(kube: Kube) -> bool:
    """Does the cluster run Knative Serving (the knative-serving phase's KnativeServing)?"""
    return kube.exists(KNATIVE_SERVING)


def schema_check(settings: Settings, crds: Sequence[Path] = ()) -> Callable[[list[dict[str, Any]]], None]:
    """Validate objects against Kubernetes' schemas (and the CRDs under ``crds``), all at once."""
    def check(objects: list[dict[str, Any]]) -> None:
        if objects:
            SchemaValidator(settings.versions.kubernetes.version, crds).validate(objects)
    return check


def check_model_hosts(settings: Settings, tenants: Sequence[Tenant]) -> None:
    """Every model a tenant lists must get hosts KServe accepts in its namespace (one rule:
    inferbox.models.hosts); refused before anything is applied, naming the file and field."""
    naming = ingress_naming(settings)
    for tenant in tenants:
        problems = [(f"models[{i}]", f"{model}: {problem}") for i, model in enumerate(tenant.models)
                    for problem in naming.host_problems(model, tenant.namespace)]
        if problems:
            raise ConfigError(f"tenants/{tenant.name}.yaml", problems)


def connect(settings: Settings) -> Kube:
    return Kube.connect(context=settings.kube_context)


# Outcomes shown object by object; the rest are counted, one row per tenant.
_ONE_ROW_EACH = frozenset(Outcome) - {Outcome.CREATED, Outcome.WOULD_CREATE, Outcome.UNCHANGED}


def report_table(report: ApplyReport, title: str = "tenants") -> FitTable:
    """Every object that changed other than by creation, or failed; a tenant's created objects in
    one row ("17 created"); tenants where nothing changed only in the summary line."""
    table = FitTable(title)
    for column in ("tenant", "object", "result", "detail"):
        table.add_column(column)
    for tenant, results in itertools.groupby(report.results, key=lambda r: r.tenant):
        rows = list(results)
        created = [r for r in rows if r.outcome in (Outcome.CREATED, Outcome.WOULD_CREATE)]
        if created:
            kinds = dict.fromkeys(r.ref.kind for r in created)  # each once, in apply order
            table.add_row(tenant, ", ".join(kinds), styled(f"{len(created)} {created[0].outcome.value}", "green"), "")
        for result in (r for r in rows if r.outcome in _ONE_ROW_EACH):
            style = _OUTCOME_STYLE.get(result.outcome, "")
            table.add_row(result.tenant, str(result.ref), styled(result.outcome.value, style), result.detail)
    for tenant, error in sorted(report.errors.items()):
        table.add_row(tenant, "", styled("failed", "bold red"), error)
    return table


def tenants_apply(settings: Settings, console: Console, *, tenant: str | None = None, dry_run: bool = False,
                  crds: Sequence[Path] = (), kube: Kube | None = None, directory: Path | None = None,
                  jwks: str | None = None) -> ApplyReport:
    """Make the cluster match the tenant files (all, or the one named); prune what they dropped.

    Where the AI gateway runs (its Gateway exists), the key store's public keys are published to
    its JWKS endpoint first and the tenants get their OpenAI routes; ``jwks`` as in
    :func:`tenant_gateway`."""
    tenants = load(settings, directory)  # all of them, even with --tenant: one bad file stops the run
    check_model_hosts(settings, tenants)
    kube = kube or connect(settings)
    store = keystore(settings)
    installed = aigateway.installed(kube)
    gateway = tenant_gateway(settings, installed=installed, monitoring=kube.exists(PROMETHEUS_RULE_CRD),
                             jwks=jwks)
    if not installed:
        for budgeted in (t for t in select(tenants, tenant) if t.token_budgets):
            console.print(styled(f"tenants/{budgeted.name}.yaml: tokenBudgets: not enforced: the AI gateway is not "
                                 "installed on this cluster (bootstrap without --no-ai-gateway)", "yellow"))
    if installed:
        # The keys first: a tenant that fetches them must find the current set.
        keys = publish_jwks(settings, kube, store, dry_run=dry_run)
        console.print(f"JWKS endpoint {JWKS_URL}: {keys} public key{'s' if keys != 1 else ''}"
                      f"{' (dry run)' if dry_run else ''}", markup=False, highlight=False)
    units = render_units(settings, select(tenants, tenant), store,
                         knative=settings.knative or knative_installed(kube), gateway=gateway)
    report = apply_all(kube, units, dry_run=dry_run, declared=[t.name for t in tenants],
                       check=schema_check(settings, crds))
    table = report_table(report, "tenants (dry run: nothing changed)" if dry_run else "tenants")
    if report.errors:
        details = "".join(f"\n  {name}: {error}" for name, error in sorted(report.errors.items()))
        raise TenantsFailed(report.summary() + details, table, report)
    if table.rows:
        console.print(table)
    console.print(report.summary(), markup=False, highlight=False)
    for orphan in report.orphans:
        console.print(styled(f"tenant {orphan!r} has a namespace but no tenant file: "
                             f"`{invoke(f'tenant-delete {orphan}')}` removes it", "yellow"))
    return report


def tenants_render(settings: Settings, *, tenant: str | None = None, directory: Path | None = None,
                   jwks: str | None = None, jwks_mode: str | None = None) -> str:
    """The YAML tenants-apply would apply to a cluster bootstrapped with these settings (the AI
    gateway and monitoring as ``settings`` say; no cluster needed; keys from the keyring unless
    given)."""
    tenants = select(load(settings, directory), tenant)
    if jwks is None:
        jwks = keystore(settings).jwks_json()
    gateway = tenant_gateway(settings, installed=settings.ai_gateway, monitoring=settings.monitoring, jwks=jwks_mode)
    version = pss_version(settings.versions.kubernetes.version)
    objects = render_shared() + [o for t in tenants for o in render_tenant(
        t, ISSUER, jwks, pod_security_version=version, knative=settings.knative, gateway=gateway)]
    return to_yaml(objects)


def tenant_delete(settings: Settings, console: Console, name: str, *, confirmed: bool,
                  kube: Kube | None = None, directory: Path | None = None) -> ApplyReport:
    """Delete what inferbox made for tenant ``name``; say so when its file would bring it back."""
    report = delete_tenant(kube or connect(settings), name, confirmed=confirmed)
    if not report.results:
        console.print(f"nothing to delete: no objects carry tenant {name!r}'s labels", markup=False)
    else:
        console.print(report_table(report, f"tenant-delete {name}"))
    for path in tenant_files(directory or tenants_dir(settings)):
        if path.stem == name:
            console.print(styled(f"{path.name} still declares {name!r}: remove it, or the next "
                                 f"`{invoke('tenants-apply')}` creates the tenant again", "yellow"))
    return report


def _at_most(default: str, quota: str) -> str:
    """``default``, or ``quota`` when that is smaller (an unparsable quota is left to validation)."""
    try:
        return quota if parse_quantity(quota) < parse_quantity(default) else default
    except ValueError:
        return default


@dataclass(frozen=True)
class NewTenant:
    """What `invoke tenant-create` asks for; everything else gets a sensible default."""

    name: str
    display_name: str | None = None
    models: Sequence[str] = ()
    subjects: Sequence[str] = ()
    groups: Sequence[str] = ()
    cpu: str = "2"
    memory: str = "4Gi"
    gpu: int | None = None
    pods: int = 10
    inference_services: int = 2

    def document(self) -> dict[str, Any]:
        quotas: dict[str, Any] = {"cpu": self.cpu, "memory": self.memory, "pods": self.pods,
                                  "inferenceServices": self.inference_services}
        if self.gpu:
            quotas["nvidia.com/gpu"] = self.gpu
        return {
            "name": self.name,
            "displayName": self.display_name or self.name,
            "quotas": quotas,
            # Container defaults, never above the quota (a small --cpu/--memory must still work).
            "limitRange": {"default": {"cpu": _at_most("500m", self.cpu), "memory": _at_most("1Gi", self.memory)},
                           "defaultRequest": {"cpu": _at_most("100m", self.cpu),
                                              "memory": _at_most("256Mi", self.memory)}},
            "models": list(self.models),
            "callers": {"subjects": list(self.subjects), "groups": list(self.groups)},
        }


def create_tenant(settings: Settings, console: Console, new: NewTenant, *, apply: bool = True,
                  kube: Kube | None = None, directory: Path | None = None) -> Path:
    """Write ``tenants/<name>.yaml`` (validated first; an existing file is never overwritten) and
    apply that tenant unless ``apply`` is off."""
    folder = directory or tenants_dir(settings)
    path = folder / f"{new.name}.yaml"
    document = new.document()
    parse_tenant(document, path, root=settings.root, rules=tenant_rules(settings, folder))  # invalid: no file
    if any(p.stem == new.name for p in tenant_files(folder)):
        raise ConfigError(str(path), [("name", f"tenant {new.name!r} already exists; edit its file instead, then "
                                               f"`{invoke(f'tenants-apply --tenant {new.name}')}`")])
    load(settings, folder)  # the other files must be valid too, or the apply below could not run
    folder.mkdir(parents=True, exist_ok=True)
    header = f"# Tenant {new.name}, created by `invoke tenant-create`. Format: README.md, section Tenants.\n"
    with path.open("x") as handle:  # "x": fail rather than overwrite if it appeared meanwhile
        handle.write(header + yaml.safe_dump(document, sort_keys=False))
    console.print(f"wrote {path}", markup=False)
    if apply:
        tenants_apply(settings, console, tenant=new.name, kube=kube, directory=folder)
    return path


def keys_table(keys: Sequence[KeyInfo]) -> FitTable:
    table = FitTable("signing keys (ES256)")
    for column in ("kid (RFC 7638 thumbprint)", "created", "status"):
        table.add_column(column)
    for key in keys:
        table.add_row(key.kid, key.created, key.status)
    return table


def manage_keys(settings: Settings, console: Console, *, rotate: bool = False, retire: str | None = None,
                show_jwks: bool = False) -> list[KeyInfo]:
    """Create the key pair if missing, or rotate / retire; print the keys (public facts only)."""
    store = keystore(settings)
    if rotate and retire:
        raise ConfigError("command line", [("rotate", "rotate and retire are separate steps: one at a time")])
    _, created = store.ensure()
    if created:
        console.print(f"created a signing key in {store.directory} (mode 0600; never commit it)", markup=False)
    if rotate and not created:
        new = store.rotate()
        console.print(f"new active key {new.kid}; the previous key still verifies until retired", markup=False)
    if retire:
        store.retire(retire)
        console.print(f"retired {retire}", markup=False)
    if rotate or retire or created:
        # With the AI gateway only its JWKS endpoint changes (the verifiers re-read it within
        # JWKS_REFRESH); without it the keys are inline in every tenant's policies.
        console.print(f"run `{invoke('tenants-apply')}` to publish the key set (to the JWKS endpoint where the "
                      f"AI gateway runs, which every verifier re-reads within {JWKS_REFRESH}; else into each "
                      "tenant's RequestAuthentication)", markup=False)
    keys = store.list_keys()
    console.print(keys_table(keys))
    if show_jwks:
        console.print_json(store.jwks_json())
    return keys


def token_for(settings: Settings, *, tenant: str, subject: str | None = None, ttl: str = "15m",
              groups: Sequence[str] = (), directory: Path | None = None) -> tuple[IssuedToken, str | None]:
    """A token for calling ``tenant``'s models, and a warning when its caller is not allowed."""
    declared = select(load(settings, directory), tenant)[0]
    if subject is None:
        if not declared.callers.subjects:
            raise ConfigError("command line", [("subject", f"tenants/{tenant}.yaml lists no callers.subjects to "
                                                           "default to: pass the caller, e.g. --subject my-app")])
        subject = declared.callers.subjects[0]
    try:
        caller_name(subject)  # the rules of callers.subjects
    except ValueError as exc:
        raise ConfigError("command line", [("subject", str(exc))]) from None
    warning = None
    if subject not in declared.callers.subjects and not set(groups) & set(declared.callers.groups):
        warning = (f"{subject!r} is not an allowed caller of {tenant} (callers in tenants/{tenant}.yaml): "
                   "the mesh will answer 403")
    issued = issue_token(keystore(settings), tenant=tenant, subject=subject, ttl_s=parse_ttl(ttl), groups=groups)
    return issued, warning


def isolation_table(probes: Sequence[isolation.Probe]) -> FitTable:
    table = FitTable("verify-isolation")
    for column in ("case", "path", "token", "expected", "observed", ""):
        table.add_column(column)
    for p in probes:
        observed = str(p.status) if p.status is not None else f"- ({p.error})"
        if p.skipped:
            observed = "-"
        elif p.detail:
            observed = f"{observed} ({p.detail})"
        verdict = styled("ok", "green") if p.ok else styled("MISMATCH", "bold red")
        if not p.ok and p.status == p.case.expected and p.case.expect_text:
            verdict = styled(f"MISMATCH (answer lacks {p.case.expect_text!r}: {p.error[:120]})", "bold red")
        elif not p.ok and p.case.budget is not None and p.error:
            verdict = styled(f"MISMATCH ({p.error})", "bold red")
        if p.ok and p.case.mesh_limit:  # admitted as expected, but only because Istio cannot refuse it
            verdict = styled(f"ok (mesh limit: {p.case.mesh_limit})", "yellow")
        if p.skipped:
            verdict = styled(f"skipped ({p.case.skip})", "yellow")
        table.add_row(p.case.name, p.case.path, p.case.description, str(p.case.expected), observed, verdict)
    return table


def _ai_gateway_cases(settings: Settings, declared: Tenant, other_tenant: str, *, model: str | None,
                      budget: bool) -> tuple[list[isolation.Case], str]:
    """verify-isolation's AI gateway cases for ``declared`` (none, with the reason, when the
    tenant may use no OpenAI model)."""
    offered = openai_models(load_catalog(default_catalog_path(settings.root)))
    allowed = [m for m in declared.models if m in offered]
    if model is None:
        if not allowed:
            return [], (f"{declared.name} may use no OpenAI model (tenants/{declared.name}.yaml models), so it has "
                        "no endpoint on the AI gateway")
        model = allowed[0]
    smallest = isolation.smallest_budget(declared.token_budgets)
    cases = isolation.ai_cases(keystore(settings), tenant=declared.name, other_tenant=other_tenant,
                               subject=declared.callers.subjects[0], model=model,
                               denied=isolation.denied_model(declared.models, offered), budget=smallest,
                               budget_skip="" if budget else "--no-ai-budget")
    return cases, ""


def _knative_cluster(settings: Settings) -> bool:
    """Does the cluster run Knative Serving, as tenants-apply decides it (False where the cluster
    cannot be read: verify-isolation itself only needs HTTP)."""
    try:
        return knative_installed(connect(settings))
    except InferboxError:
        return False


def verify_isolation(settings: Settings, console: Console, *, base_url: str, tenant: str = "tenant-a",
                     other_tenant: str = "tenant-b", model: str | None = None, host: str | None = None,
                     timeout_s: float = 10.0, directory: Path | None = None, ai: bool = True,
                     ai_base_url: str = isolation.AI_GATEWAY_URL, ai_host: str | None = None,
                     ai_model: str | None = None, ai_budget: bool = True,
                     ai_budget_timeout_s: float = isolation.BUDGET_TIMEOUT_S) -> list[isolation.Probe]:
    """Call ``tenant``'s model through the gateway at ``base_url`` with each crafted token; with
    ``ai``, also its OpenAI endpoint on the AI gateway at ``ai_base_url`` (Host: the tenant's
    AI host), ending with requests until its smallest token budget answers 429."""
    from inferbox.aigateway import GATEWAY_SERVICE, tenant_host

    tenants = load(settings, directory)
    declared = select(tenants, tenant)[0]
    select(tenants, other_tenant)
    if not declared.callers.subjects:
        raise ConfigError(f"tenants/{tenant}.yaml", [("callers.subjects", "verify-isolation needs an allowed "
                                                      "subject to send the valid token as")])
    model = model or (declared.models[0] if declared.models else None)
    if model is None:
        raise ConfigError(f"tenants/{tenant}.yaml", [("models", "no model to call: pass --model")])
    cases = isolation.craft_cases(keystore(settings), tenant=tenant, other_tenant=other_tenant,
                                  subject=declared.callers.subjects[0])
    url = f"{base_url.rstrip('/')}/v1/models/{model}:predict"
    routed = host or ingress_naming(settings).isvc_host(model, declared.namespace)
    probes = isolation.run(url, cases, host=routed, timeout_s=timeout_s)
    ai_cases, no_ai = _ai_gateway_cases(settings, declared, other_tenant, model=ai_model, budget=ai_budget) \
        if ai else ([], "")
    ai_routed = ai_host or tenant_host(tenant, ingress_naming(settings).domain)
    llm = next((c.model for c in ai_cases if c.model and c.expected == 200), None)
    if llm is not None and not (settings.knative or _knative_cluster(settings)):
        # The bypass: the LLM's own KServe host through the Istio ingress, with a valid token. Its
        # pods admit inference from the AI gateway alone (manifests/tenant/aigateway.yaml.j2).
        valid = next(c for c in cases if c.flaw == "none")
        bypass = replace(valid, name="OpenAI via the ingress", expected=403,
                         description=f"{llm}'s own host, past the AI gateway and its budget")
        probes += [isolation.probe(f"{base_url.rstrip('/')}/openai/v1/chat/completions", bypass,
                                   host=ingress_naming(settings).isvc_host(llm, declared.namespace),
                                   body=isolation.chat_request(llm), timeout_s=timeout_s)]
    ai_probes = isolation.run_ai(ai_base_url, ai_cases, host=ai_routed, timeout_s=timeout_s,
                                 budget_timeout_s=ai_budget_timeout_s)
    probes += ai_probes
    table = isolation_table(probes)
    failed = [f"{p.case.name} ({p.case.path})" for p in probes if not p.ok]
    if failed:
        message = f"isolation not as expected for: {', '.join(failed)}"
        if ai_probes and all(p.status is None for p in ai_probes if not p.skipped):
            message += (f"; nothing answers at {ai_base_url}: forward the AI gateway first (`kubectl --context "
                        f"{settings.kube_context} -n {ENVOY_GATEWAY_NAMESPACE} port-forward svc/{GATEWAY_SERVICE} "
                        f"{isolation.AI_GATEWAY_LOCAL_PORT}:80`), or pass --ai-base-url or --no-ai")
        raise TenantsFailed(message, table)
    console.print(table)
    sent = [p for p in probes if not p.skipped]
    console.print(f"all {len(sent)} cases answered as expected"
                  f"{f' ({len(probes) - len(sent)} skipped)' if len(sent) < len(probes) else ''}", highlight=False)
    if no_ai:
        console.print(f"AI gateway path not checked: {no_ai}", markup=False, highlight=False)
    if any(p.case.budget is not None and p.status == 429 for p in ai_probes):
        console.print(f"{tenant}'s token budget is spent: its OpenAI requests answer 429 until the window ends",
                      markup=False, highlight=False)
    return probes

"""The tenant spec: one ``tenants/<name>.yaml`` per tenant, typed and validated with pydantic.

Loading is all-or-nothing: every file is read and validated before anything is returned, so one
bad file stops the whole run and nothing is applied (``load_tenants``).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Context, Decimal, localcontext
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    field_validator,
)

from inferbox.config import validation_problems
from inferbox.errors import ConfigError
from inferbox.render import SAFE_LOADER

DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
# InferenceService names are DNS-1035 labels (they become Service names): a letter first.
DNS1035_LABEL = r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$"
TENANT_SUFFIXES = (".yaml", ".yml")

# Namespaces Kubernetes itself owns. The platform's own (phases, load tests, the provider's
# add-ons) come from the plan and the code: inferbox.tenants.app.platform_namespaces.
KUBERNETES_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})
BOUNDS_FILE = "bounds.toml"
# Label keys inferbox sets itself; a tenant's own labels may not override them.
RESERVED_LABEL_PREFIXES = ("app.kubernetes.io/", "inferbox.dev/", "istio", "pod-security.kubernetes.io/",
                           "kubernetes.io/", "k8s.io/")

# Kubernetes' quantity grammar (apimachinery pkg/api/resource/quantity.go, the comment above
# ParseQuantity): ASCII digits only. Python's \d and Decimal also take other scripts' digits
# ("\u0664" is 4 to them, and no quantity to the API server), hence [0-9] spelled out.
_QUANTITY = re.compile(r"(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
                       r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?")
_SUFFIX_FACTORS: dict[str, Decimal] = {
    "": Decimal(1), "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"),
    "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
    "P": Decimal("1e15"), "E": Decimal("1e18"),
    **{s: Decimal(1024) ** (i + 1) for i, s in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"))},
}
# The largest value the API server handles: above 2^63-1, quantity.go (apimachinery@v0.36.3)
# caps binary-SI values, keeps decimal ones that Value()/MilliValue() then overflow (a quota of
# "1e30" CPUs bounds nothing) and serializes some wrongly (10^30 GPUs is stored as "1",
# kubernetes#141249). Counts are int64 fields too.
INT64_MAX = 2**63 - 1
UINT32_MAX = 2**32 - 1
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def parse_quantity(text: str) -> Decimal:
    """A Kubernetes resource quantity ("500m", "8Gi", "1.5", "1e3") as a number of base units.

    Raises ValueError for anything outside Kubernetes' grammar (ASCII digits only, no spaces).
    """
    match = _QUANTITY.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a Kubernetes quantity (like 500m, 2, 8Gi; ASCII digits only)")
    suffix = match.group("suffix") or ""
    with localcontext(_EXACT):
        return _quantity_value(match.group("number"), suffix, text)


# Enough digits that no quantity is rounded: 2^63 (19 digits) in nano units (9 more) and a long
# fraction still compare exactly ("1024.0000000000000000000000001" is above 1024).
_EXACT = Context(prec=200)


def _quantity_value(digits: str, suffix: str, text: str) -> Decimal:
    number = Decimal(digits)
    if suffix not in _SUFFIX_FACTORS:  # e<n> / E<n>, not E or Ei
        exponent = int(suffix[1:])
        if abs(exponent) > 40:  # far past int64 either way; spares Decimal a huge power
            raise ValueError(f"{text!r}: exponent {exponent} is out of range")
        return number * (Decimal(10) ** exponent)
    return number * _SUFFIX_FACTORS[suffix]


def _quantity_text(value: Any) -> Any:
    # YAML reads `cpu: 2` as an int; quantities are strings in the API, so keep the user's spelling.
    if isinstance(value, bool):
        return value  # let the str check below reject it
    if isinstance(value, int | float):
        return str(value)
    return value


def _positive_quantity(value: str) -> str:
    amount = parse_quantity(value)
    if amount <= 0:
        raise ValueError(f"must be greater than zero (got {value!r})")
    if amount > INT64_MAX:
        raise ValueError(f"{value!r} is larger than Kubernetes handles (2^63-1): it would be capped, overflow "
                         "or be stored wrongly")
    return value


def _whole(unit: Decimal, what: str) -> Any:
    def check(value: str) -> str:
        if parse_quantity(value) % unit:
            raise ValueError(f"{value!r} is finer than {what}")
        return value
    return AfterValidator(check)


Quantity = Annotated[str, BeforeValidator(_quantity_text), AfterValidator(_positive_quantity)]
def _millicores_fit(value: str) -> str:
    # The API server counts CPU in millicores (MilliValue): those must fit an int64 too.
    if parse_quantity(value) * 1000 > INT64_MAX:
        raise ValueError(f"{value!r} is more millicores than Kubernetes handles (2^63-1)")
    return value


# A container asks for whole millicores and whole bytes; a finer quota is a typo.
CpuQuantity = Annotated[Quantity, _whole(Decimal("0.001"), "1m (a millicore), the finest CPU amount"),
                        AfterValidator(_millicores_fit)]
MemoryQuantity = Annotated[Quantity, _whole(Decimal(1), "one byte, the finest memory amount")]
# A count (pods, GPUs): a YAML integer, never a string (int("\u0664\u0664") is 44 to Python) nor a bool.
Count = Annotated[StrictInt, Field(gt=0, le=INT64_MAX)]


class _Strict(BaseModel):
    # Only the file's spelling (the aliases) is accepted: `gpu:` must not pass for `nvidia.com/gpu:`.
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=False, str_strip_whitespace=True)


class Quotas(_Strict):
    """The tenant's ceiling. ``cpu``/``memory`` bound both requests and limits (see the README)."""

    cpu: CpuQuantity
    memory: MemoryQuantity
    gpu: Count | None = Field(default=None, alias="nvidia.com/gpu",
                              description="GPUs; absent means the tenant may use none")
    pods: Count
    inference_services: Count = Field(alias="inferenceServices")


class CpuMemory(_Strict):
    cpu: CpuQuantity
    memory: MemoryQuantity


class LimitDefaults(_Strict):
    """Container defaults (a LimitRange): pods that name no resources still fit the quota."""

    default: CpuMemory
    default_request: CpuMemory = Field(alias="defaultRequest")


def caller_name(value: Any) -> str:
    """``value`` when it is a valid caller (a JWT ``sub`` or group); ValueError saying why not."""
    # Istio matches requestPrincipals with * as a wildcard: a caller named "*" would admit anyone.
    # It splits "<iss>/<sub>" at the last "/" (istio pilot/pkg/security/authz/model/generator.go
    # @1.30.3, requestPrincipalGenerator), so a subject with a "/" could never match.
    if not isinstance(value, str):
        raise ValueError(f"{value!r}: a caller is a string (quote it in YAML)")
    if not value or any(ch.isspace() for ch in value) or "*" in value or "/" in value:
        raise ValueError(f"{value!r}: a caller is a non-empty name without spaces, '*' or '/'")
    return value


Caller = Annotated[str, BeforeValidator(caller_name)]


def _unique(values: Sequence[str], what: str) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{what} {value!r} is listed twice")
        seen.add(value)


MAX_CALLERS = 128


class Callers(_Strict):
    """Who may call the tenant's models: JWT subjects (``sub``) and/or members of groups (``groups``)."""

    # At most 128 each: the AI gateway's authorization lists them as the values of one JWT claim
    # rule (gateway api/v1alpha1/authorization_types.go@v1.9.0, JWTClaim.Values MaxItems=128).
    subjects: list[Caller] = Field(default_factory=list, max_length=MAX_CALLERS)
    groups: list[Caller] = Field(default_factory=list, max_length=MAX_CALLERS)

    @field_validator("subjects", "groups")
    @classmethod
    def _no_duplicates(cls, values: list[str]) -> list[str]:
        _unique(values, "caller")
        return values


class RateLimit(_Strict):
    """Per predictor replica (Envoy's local rate limit counts in each sidecar)."""

    # Envoy's token bucket counts in uint32 (envoy/type/v3/token_bucket.proto: max_tokens,
    # tokens_per_fill): a larger value is config Envoy refuses.
    requests_per_second: Annotated[Count, Field(le=UINT32_MAX)] = Field(alias="requestsPerSecond")
    burst: Annotated[Count, Field(le=UINT32_MAX)] | None = Field(
        default=None, description="token bucket size; default requestsPerSecond")

    @property
    def bucket(self) -> int:
        return self.burst or self.requests_per_second


class TokenBudget(_Strict):
    """Tokens the tenant may spend through the AI gateway per minute or hour, counted over all
    its models: input (prompt), output (completion) or total tokens. Enforced by the gateway's
    global rate limit, which counts in uint32 (gateway api/v1alpha1/ratelimit_types.go@v1.9.0,
    RateLimitValue.Requests)."""

    tokens: Annotated[Count, Field(le=UINT32_MAX)]
    per: Literal["minute", "hour"]
    count: Literal["input", "output", "total"] = "total"

    @property
    def unit(self) -> str:
        """Envoy Gateway's RateLimitUnit."""
        return self.per.capitalize()

    @property
    def per_second(self) -> float:
        return round(self.tokens / (60 if self.per == "minute" else 3600), 6)


class Tenant(_Strict):
    name: str = Field(pattern=DNS1123_LABEL, description="DNS-1123 label; also the namespace; equals the file stem")
    display_name: str = Field(alias="displayName", min_length=1, max_length=200)
    quotas: Quotas
    limit_range: LimitDefaults = Field(alias="limitRange")
    models: list[Annotated[str, Field(pattern=DNS1035_LABEL)]] = Field(default_factory=list)
    callers: Callers = Field(default_factory=Callers)
    rate_limit: RateLimit | None = Field(default=None, alias="rateLimit")
    token_budgets: list[TokenBudget] = Field(default_factory=list, alias="tokenBudgets")
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("token_budgets")
    @classmethod
    def _one_budget_per_window(cls, budgets: list[TokenBudget]) -> list[TokenBudget]:
        # Two budgets for the same tokens and window would be two rate-limit rules where one is meant.
        _unique([f"{b.count} tokens per {b.per}" for b in budgets], "token budget")
        return budgets

    @field_validator("models")
    @classmethod
    def _models_unique(cls, values: list[str]) -> list[str]:
        _unique(values, "model")
        return values

    @field_validator("labels")
    @classmethod
    def _labels_valid(cls, labels: dict[str, str]) -> dict[str, str]:
        for key, value in labels.items():
            _check_label(key, value)
        return labels

    @property
    def namespace(self) -> str:
        return self.name


class Bounds(_Strict):
    """Upper bounds on any one tenant's quota (``tenants/bounds.toml``): a typo of a few digits
    must not become a quota that bounds nothing. Defaults fit one large node pool."""

    cpu: CpuQuantity = "1024"
    memory: MemoryQuantity = "16Ti"
    gpu: Count = Field(default=64, alias="nvidia.com/gpu")
    pods: Count = 10_000
    inference_services: Count = Field(default=1_000, alias="inferenceServices")


class _BoundsFile(_Strict):
    quotas: Bounds = Field(default_factory=Bounds)


@dataclass(frozen=True)
class TenantRules:
    """What a tenant is checked against beyond its own file: the names the platform uses, the
    models the catalog declares (None: not checked) and the quota bounds."""

    reserved: frozenset[str] = KUBERNETES_NAMESPACES
    models: frozenset[str] | None = None
    # The catalog's models that speak OpenAI, the only ones token budgets count (None: not checked).
    openai_models: frozenset[str] | None = None
    bounds: Bounds = field(default_factory=Bounds)
    catalog: str = "models/catalog.yaml"
    bounds_file: str = f"tenants/{BOUNDS_FILE}"


def load_bounds(path: Path, *, shown: str | None = None) -> Bounds:
    """``tenants/bounds.toml``; defaults when the file does not exist. Raises ConfigError naming the key."""
    shown = shown or str(path)
    if not path.is_file():
        return Bounds()
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(shown, [("<syntax>", str(exc))]) from exc
    try:
        return _BoundsFile.model_validate(data).quotas
    except ValidationError as exc:
        raise ConfigError(shown, validation_problems(exc, _BoundsFile)) from exc


def rule_problems(tenant: Tenant, rules: TenantRules) -> list[tuple[str, str]]:
    """The checks against ``rules``, each reported at the tenant's field."""
    problems: list[tuple[str, str]] = []
    if tenant.name in rules.reserved or tenant.name.startswith("kube-"):
        problems.append(("name", f"{tenant.name!r} is a namespace the platform uses, not available to a tenant"))
    bounds = rules.bounds
    for field_name, resource, limit in (("cpu", "cpu", bounds.cpu), ("memory", "memory", bounds.memory)):
        value = getattr(tenant.quotas, field_name)
        if parse_quantity(value) > parse_quantity(limit):
            problems.append((f"quotas.{resource}", f"{value} is above the bound {limit} ({rules.bounds_file})"))
    for field_name, key in (("gpu", "nvidia.com/gpu"), ("pods", "pods"), ("inference_services", "inferenceServices")):
        value, limit = getattr(tenant.quotas, field_name), getattr(bounds, field_name)
        if value is not None and value > limit:
            problems.append((f"quotas.{key}", f"{value} is above the bound {limit} ({rules.bounds_file})"))
    if rules.models is not None:
        known = ", ".join(sorted(rules.models))
        problems += [(f"models[{i}]", f"{model!r} is not in {rules.catalog} (known: {known})")
                     for i, model in enumerate(tenant.models) if model not in rules.models]
    if tenant.token_budgets and rules.openai_models is not None and not set(tenant.models) & rules.openai_models:
        problems.append(("tokenBudgets", "the tenant lists no model that speaks OpenAI "
                                         f"({', '.join(sorted(rules.openai_models))} in {rules.catalog}): budgets "
                                         "count the tokens of its OpenAI endpoint on the AI gateway only"))
    return problems


def cross_field_problems(tenant: Tenant) -> list[tuple[str, str]]:
    """Rules between fields, each reported at the field to change (pydantic would say "<top level>")."""
    problems: list[tuple[str, str]] = []
    limits = tenant.limit_range
    for resource in ("cpu", "memory"):
        request, limit = getattr(limits.default_request, resource), getattr(limits.default, resource)
        if parse_quantity(request) > parse_quantity(limit):
            problems.append((f"limitRange.defaultRequest.{resource}",
                             f"{request} exceeds limitRange.default.{resource} ({limit})"))
        # A default limit above the whole quota would make every pod without explicit resources fail.
        quota = getattr(tenant.quotas, resource)
        if parse_quantity(limit) > parse_quantity(quota):
            problems.append((f"limitRange.default.{resource}", f"{limit} exceeds quotas.{resource} ({quota})"))
    rate = tenant.rate_limit
    if rate is not None and rate.burst is not None and rate.burst < rate.requests_per_second:
        problems.append(("rateLimit.burst", f"{rate.burst} is less than requestsPerSecond "
                                            f"({rate.requests_per_second})"))
    return problems


def _check_label(key: str, value: str) -> None:
    prefix, slash, name = key.rpartition("/")
    if slash and (len(prefix) > 253 or not _DNS1123_SUBDOMAIN.match(prefix)):
        raise ValueError(f"label key {key!r}: prefix must be a DNS subdomain")
    if not name or len(name) > 63 or not _LABEL_NAME.match(name):
        raise ValueError(f"label key {key!r}: name must be 1-63 alphanumerics, '-', '_' or '.'")
    if len(value) > 63 or not _LABEL_VALUE.match(value):
        raise ValueError(f"label {key}={value!r}: value must be at most 63 alphanumerics, '-', '_' or '.'")
    if key.startswith(RESERVED_LABEL_PREFIXES):
        raise ValueError(f"label key {key!r} is reserved for inferbox and Kubernetes")


# -- loading ------------------------------------------------------------------------------------


class _UniqueKeyLoader(SAFE_LOADER):  # type: ignore[misc,valid-type]
    """PyYAML keeps the last of two equal keys silently; a tenant file with both is a mistake."""


def _mapping_without_duplicates(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)  # type: ignore[no-untyped-call]
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return dict(loader.construct_mapping(node))


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)

# YAML 1.1 reads 010 as 8, 0b11 as 3, 1:30 as 90 and 1_000 as 1000: a quota would silently differ
# from what the file shows. Only plain decimal numbers are numbers here; quote anything else.
_PLAIN_INT = re.compile(r"[-+]?(0|[1-9][0-9]*)")
_PLAIN_FLOAT = re.compile(r"[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)")


def _plain_number(pattern: re.Pattern[str], construct: Any) -> Any:
    def constructor(loader: _UniqueKeyLoader, node: yaml.ScalarNode) -> Any:
        if not pattern.fullmatch(node.value):
            raise yaml.constructor.ConstructorError(
                None, None, f"{node.value!r} is a YAML 1.1 number form read as {construct(loader, node)!r}: "
                "write a plain decimal number, or quote it", node.start_mark)
        return construct(loader, node)
    return constructor


_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:int", _plain_number(_PLAIN_INT, yaml.SafeLoader.construct_yaml_int))
_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:float",
                                 _plain_number(_PLAIN_FLOAT, yaml.SafeLoader.construct_yaml_float))


class TenantConfigError(ConfigError):
    """One or more tenant files are invalid; ``errors`` holds one ConfigError per file."""

    def __init__(self, errors: Sequence[ConfigError]) -> None:
        self.errors = list(errors)
        self.path = ", ".join(e.path for e in self.errors)
        self.problems = [(f"{e.path}: {f}", m) for e in self.errors for f, m in e.problems]
        lines = [f"{e.path}: {f}: {m}" for e in self.errors for f, m in e.problems]
        Exception.__init__(self, "invalid tenant configuration (nothing was applied)\n  " + "\n  ".join(lines))


def display_path(path: Path, root: Path | None) -> str:
    """``path`` relative to ``root`` when it is inside it (how errors name files), else whole."""
    if root is not None:
        try:
            return str(path.relative_to(root))
        except ValueError:
            pass
    return str(path)


def parse_tenant(data: Any, path: Path, *, root: Path | None = None, rules: TenantRules | None = None) -> Tenant:
    """Validate one tenant document; problems name the file and the field."""
    shown = display_path(path, root)
    if not isinstance(data, Mapping):
        raise ConfigError(shown, [("<top level>", "a tenant file is a YAML mapping (name, displayName, quotas, ...)")])
    try:
        tenant = Tenant.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(shown, validation_problems(exc, Tenant)) from exc
    problems = cross_field_problems(tenant) + rule_problems(tenant, rules or TenantRules())
    stem = path.name.removesuffix(path.suffix)
    if tenant.name != stem:
        problems.insert(0, ("name", f"{tenant.name!r} must equal the file name ({stem!r})"))
    if problems:
        raise ConfigError(shown, problems)
    return tenant


def load_tenant_file(path: Path, *, root: Path | None = None, rules: TenantRules | None = None) -> Tenant:
    shown = display_path(path, root)
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except FileNotFoundError:
        raise ConfigError(shown, [("<file>", "not found")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(shown, [("<syntax>", " ".join(str(exc).split()))]) from exc
    return parse_tenant(data, path, root=root, rules=rules)


def tenant_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix in TENANT_SUFFIXES)


def load_tenants(directory: Path, *, root: Path | None = None, rules: TenantRules | None = None) -> list[Tenant]:
    """Every tenant under ``directory``, sorted by name; raise once with every file's problems."""
    errors: list[ConfigError] = []
    tenants: dict[str, tuple[Tenant, str]] = {}
    for path in tenant_files(directory):
        try:
            tenant = load_tenant_file(path, root=root, rules=rules)
        except ConfigError as exc:
            errors.append(exc)
            continue
        shown = display_path(path, root)
        if tenant.name in tenants:
            errors.append(ConfigError(shown, [("name", f"duplicate tenant {tenant.name!r}: also declared in "
                                                       f"{tenants[tenant.name][1]}")]))
            continue
        tenants[tenant.name] = (tenant, shown)
    if errors:
        raise TenantConfigError(errors)
    return [tenants[name][0] for name in sorted(tenants)]


def select(tenants: Sequence[Tenant], name: str | None) -> list[Tenant]:
    """All tenants, or the one named (an unknown name is an error that lists the known ones)."""
    if name is None:
        return list(tenants)
    for tenant in tenants:
        if tenant.name == name:
            return [tenant]
    known = ", ".join(t.name for t in tenants) or "none"
    raise ConfigError("tenants/", [("name", f"no tenant {name!r} is declared (known: {known})")])

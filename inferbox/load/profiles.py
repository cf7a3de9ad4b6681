"""Load profiles and SLOs (``load/profiles.yaml``): typed, validated once at the edge, then frozen.

A profile is always bounded twice: by ``duration`` (at most 24 h) and by ``maxRequests``; one
without either is refused, as is anything a typo or a wrong unit would make mean something else
(unknown keys, negative rates, an error rate above 1, LLM thresholds on a profile that sends no
LLM traffic). Every problem names the file and the field, e.g.
``load/profiles.yaml: profiles.smoke.maxRequests: ...``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from inferbox.config import validation_problems
from inferbox.errors import ConfigError

MAX_DURATION_S = 24 * 3600
MAX_REQUESTS = 100_000_000
MAX_USERS = 10_000
Protocol = Literal["v1", "v2", "openai"]
PROFILE_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
BOUNDS = ("duration", "maxRequests")
LLM_SLOS = ("ttftP95Ms", "itlP95Ms", "minTokensPerS")
# Percentile thresholds of one distribution, lowest percentile first: each must be at least the
# ones before it (a p95 below the p50 can never be met as written: a typo or swapped values).
# TTFT and inter-token latency have one percentile each (ttftP95Ms, itlP95Ms); a second one of
# theirs belongs in a group here.
PERCENTILE_GROUPS = (("p50_ms", "p95_ms", "p99_ms"),)
_DURATION = re.compile(r"^(?:(?P<h>[0-9]+)h)?(?:(?P<m>[0-9]+)m)?(?:(?P<s>[0-9]+)s)?$")  # ASCII digits only


def parse_duration(value: Any) -> int:
    """``"90s"``, ``"10m"``, ``"1h30m"`` or a number of seconds -> whole seconds (1 s to 24 h)."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration like 90s, 10m, 1h30m")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value!r} is not a duration like 90s, 10m, 1h30m")
    if isinstance(value, int | float):
        seconds = int(value)
        if seconds != value:
            raise ValueError(f"{value!r}: whole seconds only")
    else:
        text = str(value).strip()
        match = _DURATION.match(text)
        if not text or match is None:
            raise ValueError(f"{value!r} is not a duration like 90s, 10m, 1h30m")
        seconds = sum(int(match.group(unit) or 0) * factor for unit, factor in (("h", 3600), ("m", 60), ("s", 1)))
    if not 0 < seconds <= MAX_DURATION_S:
        raise ValueError(f"{value!r}: a run lasts between 1 s and {MAX_DURATION_S // 3600} h")
    return seconds


def _number(value: float) -> str:
    return f"{value:g}"


def format_duration(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return "".join(f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (secs, "s")) if n) or "0s"


Duration = Annotated[int, BeforeValidator(parse_duration)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Range(_Strict):
    min: NonNegativeFloat
    max: NonNegativeFloat

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) exceeds max ({self.max})")
        return self


class IntRange(_Strict):
    min: PositiveInt
    max: PositiveInt

    @model_validator(mode="after")
    def _ordered(self) -> IntRange:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) exceeds max ({self.max})")
        return self


class Step(_Strict):
    """One step of a step load: hold ``users`` for ``duration`` (spawning/stopping at ``spawnRate``)."""

    users: Annotated[int, Field(ge=0, le=MAX_USERS)]
    spawn_rate: PositiveFloat = Field(alias="spawnRate")
    duration: Duration


class Slo(_Strict):
    """Thresholds; a missing one is not checked. Latencies in milliseconds."""

    p50_ms: PositiveFloat | None = Field(default=None, alias="p50Ms")
    p95_ms: PositiveFloat | None = Field(default=None, alias="p95Ms")
    p99_ms: PositiveFloat | None = Field(default=None, alias="p99Ms")
    max_error_rate: float = Field(default=0.0, ge=0.0, le=1.0, alias="maxErrorRate")
    min_rps: NonNegativeFloat | None = Field(default=None, alias="minRps")
    ttft_p95_ms: PositiveFloat | None = Field(default=None, alias="ttftP95Ms")
    itl_p95_ms: PositiveFloat | None = Field(default=None, alias="itlP95Ms")
    min_tokens_per_s: PositiveFloat | None = Field(default=None, alias="minTokensPerS")

    @field_validator(*(name for group in PERCENTILE_GROUPS for name in group[1:]))
    @classmethod
    def _percentiles_ordered(cls, value: float | None, info: ValidationInfo) -> float | None:
        """Reported at the higher percentile's field; ``info.data`` holds the fields above it."""
        if value is None or info.field_name is None:
            return value
        group = next(g for g in PERCENTILE_GROUPS if info.field_name in g)
        lower = group[:group.index(info.field_name)]
        above = [(cls.model_fields[name].alias, info.data[name]) for name in lower
                 if info.data.get(name) is not None and info.data[name] > value]
        if above:
            alias = cls.model_fields[info.field_name].alias
            order = " <= ".join(str(cls.model_fields[name].alias) for name in group)
            shown = ", ".join(f"{name} ({_number(limit)})" for name, limit in above)
            raise ValueError(f"{alias} ({_number(value)}) is below {shown}: a higher percentile cannot be lower "
                             f"({order})")
        return value

    def llm_set(self) -> list[str]:
        return [alias for alias in LLM_SLOS if self.value(alias) is not None]

    def value(self, alias: str) -> float | None:
        for name, info in type(self).model_fields.items():
            if info.alias == alias:
                result: float | None = getattr(self, name)
                return result
        raise KeyError(alias)


class Profile(_Strict):
    name: str = Field(default="", description="filled in from the key under profiles")
    description: str = Field(min_length=1)
    duration: Duration
    max_requests: Annotated[int, Field(gt=0, le=MAX_REQUESTS)] = Field(alias="maxRequests")
    users: Annotated[int, Field(gt=0, le=MAX_USERS)] | None = None
    spawn_rate: PositiveFloat | None = Field(default=None, alias="spawnRate")
    steps: list[Step] | None = Field(default=None, min_length=1)
    wait_time: Range = Field(default_factory=lambda: Range(min=0, max=0), alias="waitTime")
    models: list[str] = Field(min_length=1)
    tenants: list[str] = Field(default_factory=list)
    protocols: dict[Protocol, PositiveInt] = Field(min_length=1)
    rows_per_request: IntRange = Field(default_factory=lambda: IntRange(min=1, max=1), alias="rowsPerRequest")
    max_tokens: IntRange | None = Field(default=None, alias="maxTokens")
    slo: Slo

    @model_validator(mode="after")
    def _consistent(self) -> Profile:
        if self.steps is None:
            missing = [alias for alias, value in (("users", self.users), ("spawnRate", self.spawn_rate))
                       if value is None]
            if missing:
                raise ValueError(f"{' and '.join(missing)} required (or steps, for a step load)")
        else:
            given = [alias for alias, value in (("users", self.users), ("spawnRate", self.spawn_rate))
                     if value is not None]
            if given:
                raise ValueError(f"{' and '.join(given)}: not with steps (each step sets its own)")
            total = sum(step.duration for step in self.steps)
            if total != self.duration:
                raise ValueError(f"duration ({format_duration(self.duration)}) must equal the steps' total "
                                 f"({format_duration(total)})")
            if not any(step.users for step in self.steps):
                raise ValueError("steps: at least one step needs users")
        llm = "openai" in self.protocols
        if not llm and (set_llm := self.slo.llm_set()):
            raise ValueError(f"slo.{', slo.'.join(set_llm)}: LLM thresholds need the openai protocol")
        if not llm and self.max_tokens is not None:
            raise ValueError("maxTokens: only for the openai protocol")
        if len(set(self.models)) != len(self.models):
            raise ValueError("models: a model is listed twice")
        return self

    @property
    def peak_users(self) -> int:
        if self.steps is not None:
            return max(step.users for step in self.steps)
        assert self.users is not None
        return self.users

    @property
    def token_range(self) -> IntRange:
        return self.max_tokens or IntRange(min=64, max=64)


class ProfilesFile(_Strict):
    schema_version: Literal[1] = Field(alias="schema")
    profiles: dict[Annotated[str, Field(pattern=PROFILE_NAME, max_length=40)], Profile] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _names(cls, data: Any) -> Any:
        # The key is the name; copy it in so a Profile travels with its name.
        if isinstance(data, dict) and isinstance(data.get("profiles"), dict):
            data = {**data, "profiles": {key: {**value, "name": key} if isinstance(value, dict) else value
                                         for key, value in data["profiles"].items()}}
        return data

    def get(self, name: str, shown: str) -> Profile:
        try:
            return self.profiles[name]
        except KeyError:
            known = ", ".join(sorted(self.profiles))
            raise ConfigError(shown, [("profiles", f"no profile {name!r} (known: {known})")]) from None


def _bound_message(field: str, message: str) -> str:
    """A missing bound says why it matters, not just that it is missing."""
    if message == "required field is missing" and field.rsplit(".", 1)[-1] in BOUNDS:
        return "required: every profile is bounded in time (duration) and in requests (maxRequests)"
    return message


def parse_profiles(data: Any, shown: str) -> ProfilesFile:
    if not isinstance(data, dict):
        raise ConfigError(shown, [("<top level>", "a mapping with schema and profiles")])
    try:
        return ProfilesFile.model_validate(data)
    except ValidationError as exc:
        problems = [(field, _bound_message(field, message))
                    for field, message in validation_problems(exc, ProfilesFile)]
        raise ConfigError(shown, problems) from exc


def load_profiles(path: Path, *, root: Path | None = None) -> ProfilesFile:
    """Load and validate a profiles file; errors name the file (relative to ``root``) and the field."""
    shown = display_path(path, root)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(shown, [("<file>", "not found")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(shown, [("<syntax>", " ".join(str(exc).split()))]) from exc
    return parse_profiles(data, shown)


def display_path(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return str(path.resolve().relative_to(root.resolve()))
        except ValueError:
            pass
    return str(path)


def default_profiles_path(root: Path) -> Path:
    return root / "load" / "profiles.yaml"


def reference_problems(profiles: ProfilesFile, model_protocols: Mapping[str, Sequence[str]],
                       tenants: Sequence[str]) -> list[tuple[str, str]]:
    """Models and tenants a profile names must exist, and each model must serve its protocols.

    ``model_protocols`` maps catalog model names to the protocols they serve.
    """
    problems: list[tuple[str, str]] = []
    for name, profile in profiles.profiles.items():
        for index, model in enumerate(profile.models):
            where = f"profiles.{name}.models.{index}"
            if model not in model_protocols:
                problems.append((where, f"no model {model!r} in models/catalog.yaml"))
                continue
            if missing := sorted(set(profile.protocols) - set(model_protocols[model])):
                problems.append((where, f"{model} does not serve {', '.join(missing)} (profiles.{name}.protocols)"))
        problems += [(f"profiles.{name}.tenants.{index}", f"no tenant {tenant!r} (tenants/{tenant}.yaml)")
                     for index, tenant in enumerate(profile.tenants) if tenant not in tenants]
    return problems

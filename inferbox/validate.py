"""Schema validation of rendered objects, offline, before anything reaches a cluster.

* Core kinds (Namespace, NetworkPolicy, Role, ValidatingAdmissionPolicy, ...) against the
  strict OpenAPI schemas `kubernetes-validate` ships for the Kubernetes minor pinned in
  versions.toml (strict: an unknown field is an error, as a typo usually is).
* Custom resources (Istio, KServe, prometheus-operator, ...) against the ``openAPIV3Schema`` of
  their upstream CRD files, read from folders of CRD YAML. The schema is made strict the same way
  (unknown fields are errors unless the CRD preserves them) and ``metadata`` is checked as
  ObjectMeta. CEL rules (``x-kubernetes-validations``) are not evaluated here — the API server
  does that on apply.

Every problem names the object (kind namespace/name) and the field path.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry, Resource

from inferbox.errors import InferboxError
from inferbox.render import SAFE_LOADER  # the KServe CRDs alone are megabytes of YAML

_SCHEMA_DIR = re.compile(r"^v(\d+)\.(\d+)\.(\d+)-local-strict$")
_DEFINITIONS_ID = "https://kubernetes.io/api/_definitions.json"
_OBJECT_META = f"{_DEFINITIONS_ID}#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"


@dataclass(frozen=True)
class SchemaProblem:
    object: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.object}: {self.path}: {self.message}"


class SchemaValidationError(InferboxError):
    def __init__(self, problems: Sequence[SchemaProblem]) -> None:
        self.problems = list(problems)
        super().__init__("rendered objects do not match their schemas\n  " +
                         "\n  ".join(str(p) for p in self.problems))


@dataclass
class Report:
    """The outcome for a set of objects: problems, and what could not be checked at all."""

    problems: list[SchemaProblem] = field(default_factory=list)
    checked: dict[str, str] = field(default_factory=dict)  # object -> schema source
    unchecked: list[str] = field(default_factory=list)  # custom resources with no CRD loaded

    @property
    def ok(self) -> bool:
        return not self.problems


def describe(obj: dict[str, Any]) -> str:
    """``Kind namespace/name`` (or ``Kind name``), the way errors name an object."""
    meta = obj.get("metadata") or {}
    where = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{obj.get('kind', '<no kind>')} {where}{meta.get('name', '<no name>')}"


def field_path(parts: Iterable[Any]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "<object>"


def _group_version(api_version: str) -> tuple[str, str]:
    group, _, version = api_version.rpartition("/")
    return group, version


# -- kubernetes-validate's schema bundle ------------------------------------------------------------


def _schema_root() -> Any:
    return resources.files("kubernetes_validate") / "kubernetes-json-schema"


@cache
def schema_dir_for(kubernetes_version: str) -> str:
    """The strict schema folder for the newest minor not newer than ``kubernetes_version``."""
    major, minor, *_ = (int(p) for p in kubernetes_version.removeprefix("v").split(".")[:2])
    candidates = []
    for entry in _schema_root().iterdir():
        match = _SCHEMA_DIR.match(entry.name)
        if match and (int(match.group(1)), int(match.group(2))) <= (major, minor):
            candidates.append(((int(match.group(1)), int(match.group(2))), entry.name))
    if not candidates:
        raise InferboxError(f"kubernetes-validate has no schemas for Kubernetes {kubernetes_version} or older")
    return max(candidates)[1]


@cache
def _bundle_file(schema_dir: str, name: str) -> dict[str, Any] | None:
    path = _schema_root() / schema_dir / name
    if not path.is_file():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _core_schema_name(api_version: str, kind: str) -> str:
    # kubernetes-validate's file naming: rbac.authorization.k8s.io/v1 Role -> role-rbac-v1.json
    group, version = _group_version(api_version)
    prefix = f"{group.split('.')[0]}-{version}" if group else version
    return f"{kind.lower()}-{prefix}.json"


# -- CRDs ------------------------------------------------------------------------------------------




_DOCUMENT_START = re.compile(r"^---[ \t]*$", re.MULTILINE)


def load_crds(paths: Iterable[Path], group: str | None = None) -> dict[tuple[str, str, str], dict[str, Any]]:
    """(group, version, kind) -> openAPIV3Schema, from every CRD in the YAML files under ``paths``
    (of API group ``group`` only, when given: files that never name it are not parsed)."""
    return _load_crds(tuple(Path(p).resolve() for p in paths), group)


@cache
def _load_crds(paths: tuple[Path, ...], group: str | None) -> dict[tuple[str, str, str], dict[str, Any]]:
    # Cached per folder set: the schemas are only read, and later issues build several validators.
    schemas: dict[tuple[str, str, str], dict[str, Any]] = {}
    for base in paths:
        files = sorted(base.rglob("*")) if base.is_dir() else [base]
        for path in files:
            if path.suffix in (".yaml", ".yml") and path.is_file():
                schemas.update({(g, v, k): schema for g, v, k, schema in _file_crds(path, group)})
    return schemas


def _schema_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "inferbox" / "crd-schemas"


def _file_crds(path: Path, group: str | None) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(group, version, kind, schema) of the CRDs in one file. Parsing a big CRD file takes
    seconds (the Istio CRDs alone ~4 s); the result is kept as JSON, keyed by the file's path,
    size and mtime, so a later run reads it in milliseconds."""
    stat = path.stat()
    key = hashlib.sha256(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\0{group}".encode()).hexdigest()
    cached = _schema_cache_dir() / f"{key}.json"
    with contextlib.suppress(OSError, ValueError):
        return [tuple(entry) for entry in json.loads(cached.read_text())]  # type: ignore[misc]
    text = path.read_text()
    if group is not None:
        # The folder's YAML is megabytes: parse only the documents that can hold the group.
        text = "\n---\n".join(d for d in _DOCUMENT_START.split(text) if group in d)
    try:
        docs = [d for d in yaml.load_all(text, Loader=SAFE_LOADER) if d]
    except yaml.YAMLError as exc:
        raise InferboxError(f"{path}: not valid YAML: {exc}") from exc
    found = []
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
            spec = doc["spec"]
            if group is not None and spec["group"] != group:
                continue
            for version in spec.get("versions") or []:
                schema = (version.get("schema") or {}).get("openAPIV3Schema")
                if schema and version.get("served", True):
                    found.append((spec["group"], version["name"], spec["names"]["kind"], schema))
    with contextlib.suppress(OSError):  # a cache that cannot be written is only slower
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps(found))
        partial.replace(cached)
    return found


def strict_crd_schema(schema: dict[str, Any], api_version: str, kind: str) -> dict[str, Any]:
    """A CRD's structural OpenAPI schema as a strict JSON Schema (2020-12) for one object."""
    converted = _convert(copy.deepcopy(schema))
    props = converted.setdefault("properties", {})
    props["apiVersion"] = {"const": api_version}
    props["kind"] = {"const": kind}
    props["metadata"] = {"$ref": _OBJECT_META}
    converted["required"] = sorted({*converted.get("required", []), "apiVersion", "kind", "metadata"})
    converted["type"] = "object"
    return converted


def _convert(node: Any) -> Any:
    if isinstance(node, list):
        return [_convert(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {k: (_convert(v) if k not in ("enum", "default", "example", "required") else v) for k, v in node.items()}
    if node.pop("x-kubernetes-int-or-string", False):
        node.pop("type", None)
        node.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if node.pop("nullable", False) and isinstance(node.get("type"), str):
        node["type"] = [node["type"], "null"]
    preserve = node.get("x-kubernetes-preserve-unknown-fields") is True
    # The API server prunes unknown fields silently; reject them here, where they are typos.
    if node.get("type") == "object" and "properties" in node and "additionalProperties" not in node \
            and not preserve:
        node["additionalProperties"] = False
    return node


# -- the validator ---------------------------------------------------------------------------------


class SchemaValidator:
    """Validates objects for one Kubernetes version and a set of CRD folders."""

    def __init__(self, kubernetes_version: str, crd_paths: Sequence[Path] = ()) -> None:
        self.kubernetes_version = kubernetes_version
        self.schema_dir = schema_dir_for(kubernetes_version)
        self._crd_paths = tuple(crd_paths)
        self._crds: dict[str, dict[tuple[str, str, str], dict[str, Any]]] = {}
        definitions = _bundle_file(self.schema_dir, "_definitions.json")
        assert definitions is not None, f"{self.schema_dir} lacks _definitions.json"
        self._registry: Registry[Any] = Resource.from_contents(definitions) @ Registry()
        self._validators: dict[tuple[str, str], jsonschema.protocols.Validator | None] = {}

    def _crd(self, group: str, version: str, kind: str) -> dict[str, Any] | None:
        """A CRD's schema, the CRDs of each group read when first asked for."""
        if "." not in group or not self._crd_paths:  # core, apps, batch...: never a CRD
            return None
        if group not in self._crds:
            self._crds[group] = load_crds(self._crd_paths, group)
        return self._crds[group].get((group, version, kind))

    def _validator(self, api_version: str, kind: str) -> tuple[jsonschema.protocols.Validator | None, str]:
        key = (api_version, kind)
        group, version = _group_version(api_version)
        source = (f"CRD {group}/{version} {kind}" if self._crd(group, version, kind) is not None
                  else f"Kubernetes {self.schema_dir}")
        if key not in self._validators:
            self._validators[key] = self._build(api_version, kind)
        return self._validators[key], source

    def _build(self, api_version: str, kind: str) -> jsonschema.protocols.Validator | None:
        group, version = _group_version(api_version)
        crd = self._crd(group, version, kind)
        if crd is not None:
            schema = strict_crd_schema(crd, api_version, kind)
            return jsonschema.Draft202012Validator(schema, registry=self._registry)
        core = _bundle_file(self.schema_dir, _core_schema_name(api_version, kind))
        if core is None:
            return None
        registry = Resource.from_contents(core) @ self._registry
        return jsonschema.Draft202012Validator(core, registry=registry)

    def problems(self, obj: dict[str, Any]) -> list[SchemaProblem] | None:
        """The object's problems; None when no schema is known for its kind."""
        name = describe(obj)
        if "apiVersion" not in obj or "kind" not in obj:
            return [SchemaProblem(name, "<object>", "apiVersion and kind are required")]
        validator, _ = self._validator(obj["apiVersion"], obj["kind"])
        if validator is None:
            return None
        return [SchemaProblem(name, field_path(err.absolute_path), _message(err))
                for err in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))]

    def check(self, objects: Iterable[dict[str, Any]]) -> Report:
        report = Report()
        for obj in objects:
            found = self.problems(obj)
            name = describe(obj)
            if found is None:
                group, _ = _group_version(str(obj.get("apiVersion", "")))
                if _is_core_group(group):
                    report.problems.append(SchemaProblem(name, "apiVersion", f"Kubernetes {self.schema_dir} "
                                                         f"has no {obj.get('kind')} in {obj.get('apiVersion')}"))
                else:
                    report.unchecked.append(name)
                continue
            report.checked[name] = self._validator(obj["apiVersion"], obj["kind"])[1]
            report.problems.extend(found)
        return report

    def validate(self, objects: Iterable[dict[str, Any]], *, require_all: bool = False) -> Report:
        """Raise :class:`SchemaValidationError` on any problem (and, with ``require_all``, on
        custom resources whose CRD was not loaded)."""
        report = self.check(objects)
        problems = list(report.problems)
        if require_all:
            problems += [SchemaProblem(n, "apiVersion", "no CRD loaded for this kind") for n in report.unchecked]
        if problems:
            raise SchemaValidationError(problems)
        return report


# Groups under k8s.io that Kubernetes does not serve itself: their kinds come from CRDs
# (Gateway API: kubernetes-sigs/gateway-api config/crd; the Gateway API Inference Extension).
CRD_K8S_GROUPS = frozenset({"gateway.networking.k8s.io", "inference.networking.k8s.io",
                            "snapshot.storage.k8s.io"})


def _is_core_group(group: str) -> bool:
    # Kubernetes' own groups: "" (core), dotless ones (apps, batch, policy, ...) and *.k8s.io.
    return "." not in group or (group.endswith(".k8s.io") and group not in CRD_K8S_GROUPS)


def _message(err: ValidationError) -> str:
    # anyOf/oneOf failures say "is not valid under any of the given schemas"; the closest branch's
    # own error is the useful one.
    if err.context:
        inner = best_match(err.context)
        if inner is not None:
            where = field_path(inner.relative_path)
            return f"{inner.message}" + (f" (at {where})" if inner.relative_path else "")
    return _shorten(err.message)


def _shorten(message: str, limit: int = 300) -> str:
    return message if len(message) <= limit else message[: limit - 3] + "..."


def iter_problems(validator: SchemaValidator, objects: Iterable[dict[str, Any]]) -> Iterator[SchemaProblem]:
    yield from validator.check(objects).problems

"""The pinned charts on disk: a chart store (the bootstrap cache, or an air-gapped bundle) and a
reader for what a chart declares (default values, schema, subcharts, templates).

A store is a folder of ``<chart>-<version>.tgz`` files, exactly as ``helm pull`` writes them,
plus ``bundle.json``::

    {"schema": 1,
     "charts": {"<versions.toml key>": {"chart": "<ref>", "repo": "<url>|null", "version": "<pin>",
                                       "file": "<name>-<version>.tgz", "sha256": "<64 hex>"}},
     "images": {"<phase>": ["<image ref>", ...]}}

``invoke bundle`` writes it (pulling what is missing, recording each sha256 and the images each
phase renders); ``invoke bootstrap`` fills ``.inferbox/charts`` the same way and installs from
there; ``bootstrap --bundle DIR`` installs from DIR with no download, refusing a chart whose
version differs from its pin or whose bytes differ from the recorded sha256.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import re
import tarfile
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from inferbox.config import ChartPin, Charts
from inferbox.errors import ConfigError, InferboxError
from inferbox.tools.helm import ChartSource, Helm

MANIFEST = "bundle.json"


class ChartStoreError(InferboxError):
    """A chart store is missing a chart, or holds one that differs from its pin or checksum."""


def chart_name(pin: ChartPin) -> str:
    """The chart's own name: the last segment of an ``oci://`` ref, or the repository chart name."""
    return pin.chart.rstrip("/").rsplit("/", 1)[-1]


def archive_name(pin: ChartPin) -> str:
    """The file ``helm pull`` writes for this pin (``<name>-<version>.tgz``)."""
    return f"{chart_name(pin)}-{pin.version}.tgz"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class ChartStore:
    """A folder of pulled charts with their manifest. ``bundle=True`` means a user-supplied
    air-gapped bundle: nothing is ever pulled into it, every chart must be there and match."""

    root: Path
    bundle: bool = False
    manifest: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, root: Path, *, bundle: bool = False) -> ChartStore:
        path = root / MANIFEST
        manifest: dict[str, Any] = {"schema": 1, "charts": {}, "images": {}}
        if path.is_file():
            try:
                loaded = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise ConfigError(str(path), [("<file>", str(exc))]) from exc
            if not isinstance(loaded, dict) or not isinstance(loaded.get("charts"), dict):
                raise ConfigError(str(path), [("charts", "must be a mapping of versions.toml chart keys")])
            manifest.update(loaded)
        elif bundle:
            raise ChartStoreError(f"{root} is not a chart bundle ({MANIFEST} missing): "
                                  f"make one with `invoke bundle --out {root}`")
        return cls(root=root, bundle=bundle, manifest=manifest)

    def path_for(self, pin: ChartPin) -> Path:
        return self.root / archive_name(pin)

    def missing(self, charts: Charts, keys: Iterable[str] | None = None) -> list[str]:
        """Keys whose pinned archive is not in the store."""
        return [k for k in (keys or charts.keys()) if not self.path_for(charts.by_key(k)).is_file()]

    def pull(self, helm: Helm, charts: Charts, keys: Iterable[str] | None = None) -> list[str]:
        """``helm pull`` every pinned chart not yet here; returns the keys pulled."""
        if self.bundle:
            raise ChartStoreError(f"{self.root} is a bundle: charts are never pulled into it")
        pulled = []
        self.root.mkdir(parents=True, exist_ok=True)
        for key in self.missing(charts, keys):
            pin = charts.by_key(key)
            # Pull into an empty folder first, so a broken download never sits under the final name.
            with tempfile.TemporaryDirectory(dir=self.root, prefix=".pull-") as tmp:
                helm.pull(ChartSource(chart=pin.chart, version=pin.version, repo=pin.repo), Path(tmp))
                got = sorted(Path(tmp).glob("*.tgz"))
                if len(got) != 1:
                    raise ChartStoreError(f"helm pull {pin.chart} {pin.version} wrote {[p.name for p in got]}, "
                                          "expected one .tgz")
                got[0].replace(self.path_for(pin))
            pulled.append(key)
        return pulled

    def record(self, charts: Charts, keys: Iterable[str] | None = None) -> None:
        """Record each present chart's coordinates and sha256 in the manifest (and write it)."""
        for key in keys or charts.keys():
            pin = charts.by_key(key)
            path = self.path_for(pin)
            if path.is_file():
                self.manifest["charts"][key] = {"chart": pin.chart, "repo": pin.repo, "version": pin.version,
                                                "file": path.name, "sha256": sha256_file(path)}
        self.write()

    def write(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{MANIFEST}.tmp"
        tmp.write_text(json.dumps(self.manifest, indent=2, sort_keys=True) + "\n")
        tmp.replace(self.root / MANIFEST)

    def verify(self, charts: Charts, keys: Iterable[str]) -> None:
        """Every chart is here, at its pin, with the bytes the manifest recorded; else refuse."""
        problems = []
        for key in keys:
            pin = charts.by_key(key)
            path = self.path_for(pin)
            entry = self.manifest["charts"].get(key)
            if not path.is_file():
                problems.append(f"{key}: {path.name} missing")
            elif entry is None:
                problems.append(f"{key}: {path.name} has no recorded sha256 in {MANIFEST}")
            elif entry.get("version") != pin.version or entry.get("chart") != pin.chart:
                problems.append(f"{key}: bundled {entry.get('chart')} {entry.get('version')}, "
                                f"versions.toml pins {pin.chart} {pin.version}")
            elif sha256_file(path) != entry.get("sha256"):
                problems.append(f"{key}: {path.name} sha256 {sha256_file(path)[:12]}… differs from the recorded "
                                f"{str(entry.get('sha256'))[:12]}…")
            elif (meta := chart_meta(path)) != (chart_name(pin), pin.version):
                problems.append(f"{key}: {path.name} holds chart {meta[0]} {meta[1]}, not the pinned "
                                f"{chart_name(pin)} {pin.version}")
        if problems:
            fix = (f"make it again with `invoke bundle --out {self.root}`" if self.bundle
                   else f"delete {self.root} and run again to pull the pinned charts")
            raise ChartStoreError(f"chart store {self.root} does not match versions.toml:\n  "
                                  + "\n  ".join(problems) + f"\n{fix}")

    def source(self, pin: ChartPin) -> ChartSource:
        return ChartSource(chart=str(self.path_for(pin)), version=None)


# -- reading a chart ---------------------------------------------------------------------------

def chart_meta(path: Path) -> tuple[str, str]:
    """(name, version) from a chart archive's Chart.yaml."""
    try:
        with tarfile.open(path, mode="r:*") as tar:
            for member in tar:
                if member.isfile() and PurePosixPath(member.name).parts[1:] == ("Chart.yaml",):
                    handle = tar.extractfile(member)
                    meta = yaml.safe_load(handle.read()) if handle else {}
                    return str(meta.get("name")), str(meta.get("version"))
    except (OSError, tarfile.TarError, yaml.YAMLError) as exc:
        raise ChartStoreError(f"{path}: not a readable chart archive: {exc}") from exc
    raise ChartStoreError(f"{path}: no Chart.yaml in the archive")


# Template actions that pass a whole values subtree through: any key below it is the chart's to
# accept (e.g. istiod's `mergeOverwrite $originalMesh .Values.meshConfig`, configmap.yaml@1.30.3).
_PASSTHROUGH_FUNCS = r"(?:toYaml|toJson|toPrettyJson|toRawJson|mergeOverwrite|mustMergeOverwrite|merge|mustMerge|tpl)"
_ACTION = re.compile(r"{{-?(.*?)-?}}", re.S)
_VALUES_PATH = re.compile(r"\$?\.Values((?:\.[A-Za-z_][\w-]*)+)")
_WITH = re.compile(r"{{-?\s*(?:with|range)\s+(?:\$\w+\s*:=\s*)?\$?\.Values((?:\.[A-Za-z_][\w-]*)+)\s*-?}}")
# `mustMergeOverwrite $.Values (index $.Values "pilot")`: the named key is an alias of the root
# (istiod templates/zzy_descope_legacy.yaml@1.30.3 copies `.pilot` to `.`).
_ROOT_ALIAS = re.compile(r'[Mm]ergeOverwrite\s+\$?\.Values\s+\(\s*index\s+\$?\.Values\s+"([\w-]+)"\s*\)')
# Istio's charts keep their defaults under this key and merge them in (zzz_profile.yaml@1.30.3).
_ISTIO_DEFAULTS = "_internal_defaults_do_not_set"


@dataclass
class ChartInfo:
    """What a chart declares: enough to tell whether a values key means anything to it."""

    name: str
    version: str
    defaults: dict[str, Any]
    schema: dict[str, Any] | None
    subcharts: dict[str, ChartInfo]
    passthrough: set[str]  # dotted values paths handed whole to a template function
    root_aliases: set[str]
    uses_api_versions: bool  # a template asks .Capabilities.APIVersions (its render depends on CRDs)


def load_chart(path: Path) -> ChartInfo:
    """Read a chart folder or ``.tgz`` (subcharts in ``charts/`` as folders or archives).
    An archive is read once per process (keyed by path, size and mtime)."""
    if path.is_file():
        stat = path.stat()
        return _load_archive(str(path), stat.st_size, stat.st_mtime_ns)
    return _load_chart(path)


@functools.lru_cache(maxsize=64)
def _load_archive(path: str, size: int, mtime_ns: int) -> ChartInfo:
    return _load_chart(Path(path))


def _load_chart(path: Path) -> ChartInfo:
    try:
        if path.is_dir():
            files = {str(PurePosixPath(*p.relative_to(path).parts)): p.read_bytes()
                     for p in path.rglob("*") if p.is_file()}
        else:
            files = _tar_files(path.read_bytes())
    except (OSError, tarfile.TarError) as exc:
        raise ChartStoreError(f"{path}: not a readable chart: {exc}") from exc
    return _chart_from_files(files, str(path))


def _yaml(data: bytes) -> Any:
    return yaml.load(data, Loader=_FAST_LOADER)


_FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _tar_files(data: bytes) -> dict[str, bytes]:
    """Files of a chart archive, relative to its top folder."""
    out: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
        for member in tar.getmembers():
            if not member.isfile():
                continue
            parts = PurePosixPath(member.name).parts
            handle = tar.extractfile(member)
            if len(parts) > 1 and handle is not None:
                out[str(PurePosixPath(*parts[1:]))] = handle.read()
    return out


def _chart_from_files(files: Mapping[str, bytes], where: str) -> ChartInfo:
    if "Chart.yaml" not in files:
        raise ChartStoreError(f"{where}: no Chart.yaml")
    meta = _yaml(files["Chart.yaml"]) or {}
    defaults = _yaml(files.get("values.yaml", b"")) or {}
    if isinstance(defaults.get(_ISTIO_DEFAULTS), dict):
        defaults = {**defaults.pop(_ISTIO_DEFAULTS), **defaults}
    schema = json.loads(files["values.schema.json"]) if "values.schema.json" in files else None
    templates = "\n".join(body.decode(errors="replace") for name, body in files.items()
                          if name.startswith("templates/") or name.startswith("files/"))
    aliases = {d.get("name"): d.get("alias") or d.get("name") for d in meta.get("dependencies") or []}
    subcharts: dict[str, ChartInfo] = {}
    nested: dict[str, dict[str, bytes]] = {}
    for name, body in files.items():
        parts = PurePosixPath(name).parts
        if len(parts) == 2 and parts[0] == "charts" and name.endswith(".tgz"):
            sub = _chart_from_files(_tar_files(body), f"{where}:{name}")
            subcharts[aliases.get(sub.name, sub.name)] = sub
        elif len(parts) > 2 and parts[0] == "charts":
            nested.setdefault(parts[1], {})[str(PurePosixPath(*parts[2:]))] = body
    for folder, sub_files in nested.items():
        if "Chart.yaml" in sub_files:
            sub = _chart_from_files(sub_files, f"{where}:charts/{folder}")
            subcharts[aliases.get(sub.name, sub.name)] = sub
    return ChartInfo(name=str(meta.get("name")), version=str(meta.get("version")), defaults=defaults,
                     schema=schema, subcharts=subcharts, passthrough=_passthrough_paths(templates),
                     root_aliases=set(_ROOT_ALIAS.findall(templates)),
                     uses_api_versions=".Capabilities.APIVersions" in templates
                     or any(sub.uses_api_versions for sub in subcharts.values()))


def _passthrough_paths(templates: str) -> set[str]:
    paths: set[str] = set()
    for action in _ACTION.findall(templates):
        if re.search(rf"\b{_PASSTHROUGH_FUNCS}\b", action):
            paths.update(p.lstrip(".") for p in _VALUES_PATH.findall(action))
    for match in _WITH.finditer(templates):
        # `{{ with .Values.x }} ... toYaml . ...`: the block hands the whole subtree on.
        if re.search(r"\b(?:toYaml|toJson)\s+\.\s", templates[match.end():match.end() + 400]):
            paths.add(match.group(1).lstrip("."))
    return paths


def unknown_values(values: Mapping[str, Any], chart: ChartInfo) -> list[str]:
    """Dotted keys of ``values`` that ``chart`` (and its subcharts) neither define in their
    defaults nor declare in their schema, and that no template takes whole: Helm ignores them.

    A key under a default that is an empty map or null is free-form (``nodeSelector: {}``).
    """
    found: list[str] = []
    _walk(values, chart, chart.defaults, chart.schema, rel="", shown="", found=found)
    return found


def _schema_child(schema: Mapping[str, Any] | None, key: str) -> tuple[bool, dict[str, Any] | None]:
    """(declared, child schema) for ``key`` in an object schema."""
    if not isinstance(schema, Mapping):
        return False, None
    props = schema.get("properties")
    if isinstance(props, Mapping) and key in props:
        child = props[key]
        return True, child if isinstance(child, dict) else None
    extra = schema.get("additionalProperties")
    if isinstance(extra, Mapping) or schema.get("patternProperties"):
        return True, extra if isinstance(extra, dict) else None
    return False, None


def _walk(values: Mapping[str, Any], chart: ChartInfo, defaults: Any, schema: dict[str, Any] | None, *,
          rel: str, shown: str, found: list[str]) -> None:
    for raw_key, value in values.items():
        key = str(raw_key)
        path = f"{rel}.{key}" if rel else key
        label = f"{shown}.{key}" if shown else key
        if not rel and key in chart.subcharts and isinstance(value, Mapping):
            sub = chart.subcharts[key]
            _walk(value, sub, sub.defaults, sub.schema, rel="", shown=label, found=found)
            continue
        if not rel and key in chart.root_aliases and isinstance(value, Mapping):
            _walk(value, chart, chart.defaults, chart.schema, rel="", shown=label, found=found)
            continue
        if (not rel and key == "global") or path in chart.passthrough:
            continue  # globals are shared with every subchart; passthrough subtrees are the chart's
        in_defaults = isinstance(defaults, Mapping) and key in defaults
        declared, child_schema = _schema_child(schema, key)
        if not in_defaults and not declared:
            if isinstance(defaults, Mapping) and not defaults and schema is None and rel:
                continue  # free-form map: an empty default such as nodeSelector: {}
            found.append(label)
            continue
        child_default = defaults.get(key) if isinstance(defaults, Mapping) else None
        if isinstance(value, Mapping) and ((isinstance(child_default, Mapping) and child_default)
                                           or (isinstance(child_schema, Mapping) and child_schema.get("properties"))):
            _walk(value, chart, child_default if isinstance(child_default, Mapping) else {}, child_schema,
                  rel=path, shown=label, found=found)

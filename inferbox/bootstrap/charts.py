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
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from inferbox.config import ChartPin, Charts
from inferbox.errors import CommandError, ConfigError, InferboxError
from inferbox.hints import invoke
from inferbox.render import SAFE_LOADER
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
        if root.exists() and not root.is_dir():
            raise ChartStoreError(f"{root} is a file: a chart store or bundle is a folder (the one holding "
                                  f"{MANIFEST})")
        path = root / MANIFEST
        manifest: dict[str, Any] = {"schema": 1, "charts": {}, "images": {}}
        if path.is_file():
            try:
                loaded = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise ConfigError(str(path), [("<file>", str(exc))]) from exc
            if not isinstance(loaded, dict) or not isinstance(loaded.get("charts"), dict):
                raise ConfigError(str(path), [("charts", "must be a mapping of versions.toml chart keys")])
            bad = [(f"charts.{key}", "must be a mapping with chart, version, file and sha256 (strings)")
                   for key, entry in loaded["charts"].items()
                   if not isinstance(entry, dict)
                   or not all(isinstance(entry.get(k), str) for k in ("chart", "version", "file", "sha256"))]
            if bad:
                raise ConfigError(str(path), bad)
            manifest.update(loaded)
        elif bundle:
            raise ChartStoreError(f"{root} is not a chart bundle ({MANIFEST} missing): "
                                  f"make one with `{invoke(f'bundle --out {root}')}`")
        return cls(root=root, bundle=bundle, manifest=manifest)

    def path_for(self, pin: ChartPin) -> Path:
        return self.root / archive_name(pin)

    def missing(self, charts: Charts, keys: Iterable[str] | None = None) -> list[str]:
        """Keys whose pinned archive is not in the store."""
        return [k for k in (keys or charts.keys()) if not self.path_for(charts.by_key(k)).is_file()]

    def pull(self, helm: Helm, charts: Charts, keys: Iterable[str] | None = None) -> list[str]:
        """``helm pull`` every pinned chart not yet here; returns the keys pulled. A failed pull
        names the chart and what to do without the registries, and leaves no empty store."""
        if self.bundle:
            raise ChartStoreError(f"{self.root} is a bundle: charts are never pulled into it")
        pulled = []
        created = not self.root.exists()
        self.root.mkdir(parents=True, exist_ok=True)
        for key in self.missing(charts, keys):
            pin = charts.by_key(key)
            try:
                self._pull_one(helm, pin)
            except CommandError as exc:
                if created and not any(self.root.iterdir()):
                    self.root.rmdir()
                tail = exc.stderr.strip().splitlines()[-1] if exc.stderr.strip() else str(exc)
                raise ChartStoreError(
                    f"cannot pull {key} ({pin.chart} {pin.version}): {tail}\n"
                    "where the chart registries cannot be reached, make a bundle on a machine that reaches them "
                    f"(`{invoke('bundle --out DIR')}`), copy it here and pass --bundle DIR") from exc
            pulled.append(key)
        return pulled

    def _pull_one(self, helm: Helm, pin: ChartPin) -> None:
        # Pull into an empty folder first, so a broken download never sits under the final name.
        with tempfile.TemporaryDirectory(dir=self.root, prefix=".pull-") as tmp:
            helm.pull(ChartSource(chart=pin.chart, version=pin.version, repo=pin.repo), Path(tmp))
            got = sorted(Path(tmp).glob("*.tgz"))
            if len(got) != 1:
                raise ChartStoreError(f"helm pull {pin.chart} {pin.version} wrote {[p.name for p in got]}, "
                                      "expected one .tgz")
            got[0].replace(self.path_for(pin))

    def record(self, charts: Charts, keys: Iterable[str] | None = None) -> list[str]:
        """Record the coordinates and sha256 of each present chart not recorded yet (and write the
        manifest); returns the keys recorded now. A chart already recorded is never re-recorded:
        one whose bytes changed since is refused (ChartStoreError), as is an unreadable archive,
        and then nothing is written."""
        new: dict[str, dict[str, Any]] = {}
        for key in keys or charts.keys():
            pin = charts.by_key(key)
            path = self.path_for(pin)
            entry = self.manifest["charts"].get(key)
            if not path.is_file():
                continue
            digest = sha256_file(path)
            if entry is not None and entry.get("file") == path.name and entry.get("version") == pin.version:
                if entry.get("sha256") != digest:
                    raise ChartStoreError(f"{key}: {path} has sha256 {digest}, not the recorded "
                                          f"{entry.get('sha256')}: it changed since it was pulled; delete it to "
                                          "pull the pinned chart again")
            else:
                meta = _name_version(path)  # reads it whole: a truncated download is refused here
                if meta != (chart_name(pin), pin.version):
                    raise ChartStoreError(f"{key}: {path.name} holds chart {meta[0]} {meta[1]}, not the pinned "
                                          f"{chart_name(pin)} {pin.version}")
                new[key] = {"chart": pin.chart, "repo": pin.repo, "version": pin.version, "file": path.name,
                            "sha256": digest}
        if new:
            self.manifest["charts"].update(new)
            self.write()
        return sorted(new)

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
            elif (digest := sha256_file(path)) != entry.get("sha256"):
                problems.append(f"{key}: {path.name} has sha256 {digest}, the recorded one is {entry.get('sha256')}")
            elif (meta := _name_version(path)) != (chart_name(pin), pin.version):
                problems.append(f"{key}: {path.name} holds chart {meta[0]} {meta[1]}, not the pinned "
                                f"{chart_name(pin)} {pin.version}")
        if problems:
            fix = (f"make it again with `{invoke(f'bundle --out {self.root}')}`" if self.bundle
                   else f"delete {self.root} and run again to pull the pinned charts")
            raise ChartStoreError(f"chart store {self.root} does not match versions.toml:\n  "
                                  + "\n  ".join(problems) + f"\n{fix}")

# -- reading a chart ---------------------------------------------------------------------------

# Template actions that pass a whole values subtree through: any key below it is the chart's to
# accept (e.g. istiod's `mergeOverwrite $originalMesh .Values.meshConfig`, configmap.yaml@1.30.3).
_PASSTHROUGH_FUNCS = r"(?:toYaml|toJson|toPrettyJson|toRawJson|mergeOverwrite|mustMergeOverwrite|merge|mustMerge|tpl)"
_ACTION = re.compile(r"{{-?(.*?)-?}}", re.S)
_HELD_VALUES = re.compile(r"\$(\w+)\s*:=\s*(?:omit\s+|deepCopy\s+)?\$?\.Values((?:\.[A-Za-z_][\w-]*)*)")
_VALUES_PATH = re.compile(r"\$?\.Values((?:\.[A-Za-z_][\w-]*)+)")
# `(.Values).a.b` and `(.Values.a).b`: nil-safe reads, as istiod's templates make them.
_PAREN_VALUES = re.compile(r"\(\$?\.Values((?:\.[A-Za-z_][\w-]*)*)\)((?:\.[A-Za-z_][\w-]*)+)")
_INDEX_VALUES = re.compile(r'index\s+\$?\.Values((?:\s+"[\w-]+")+)')
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
    referenced: set[str]  # dotted values paths the templates read
    uses_api_versions: bool  # a template asks .Capabilities.APIVersions (its render depends on CRDs)


def _name_version(path: Path) -> tuple[str, str]:
    """(name, version) from a chart's Chart.yaml, the chart read whole (and cached) as the render
    check reads it."""
    info = load_chart(path)
    return info.name, info.version


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
        return _chart_from_files(files, str(path))
    except (OSError, EOFError, zlib.error, tarfile.TarError, yaml.YAMLError, json.JSONDecodeError) as exc:
        raise ChartStoreError(f"{path}: not a readable chart ({exc}): delete it to pull it again") from exc


class YamlLoader(SAFE_LOADER):  # type: ignore[misc,valid-type]
    """The safe loader (libyaml's where present) for chart files and rendered manifests. YAML
    1.1's ``=`` value tag has no constructor in PyYAML, yet ``- =`` is a plain string to
    Kubernetes (kube-prometheus-stack's CRDs hold one): it resolves as a string here."""


YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:value"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}


def _yaml(data: bytes) -> Any:
    return yaml.load(data, Loader=YamlLoader)


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
                     root_aliases=set(_ROOT_ALIAS.findall(templates)), referenced=_referenced_paths(templates),
                     uses_api_versions=".Capabilities.APIVersions" in templates
                     or any(sub.uses_api_versions for sub in subcharts.values()))


def _referenced_paths(templates: str) -> set[str]:
    """Every values path a template reads: ``.Values.a.b``, ``(.Values).a``, ``index .Values "a" "b"``."""
    paths = {p.lstrip(".") for p in _VALUES_PATH.findall(templates)}
    paths |= {(inner + outer).lstrip(".") for inner, outer in _PAREN_VALUES.findall(templates)}
    paths |= {".".join(re.findall(r'"([\w-]+)"', keys)) for keys in _INDEX_VALUES.findall(templates)}
    return paths


def _passthrough_paths(templates: str) -> set[str]:
    """Values subtrees a template hands on whole. ``global`` never counts: it is how values are
    shared between charts (Istio's profile machinery merges it into itself), not a subtree a
    template consumes."""
    paths: set[str] = set()
    # A subtree first held in a variable and handed on from there: `$user := .Values.config.x`
    # then `merge $user $base` (gateway-helm templates/envoy-gateway-config.yaml@v1.9.0), or
    # `$cm := omit .Values "k"` then `toYaml $cm` (the whole values: kiali-server
    # templates/configmap.yaml@v2.26.0).
    held = {name: path.lstrip(".") for name, path in _HELD_VALUES.findall(templates)}
    for action in _ACTION.findall(templates):
        if re.search(rf"\b{_PASSTHROUGH_FUNCS}\b", action):
            paths.update(p.lstrip(".") for p in _VALUES_PATH.findall(action))
            paths.update(path for name, path in held.items() if re.search(rf"\${name}\b(?!\s*:?=)", action))
    for match in _WITH.finditer(templates):
        # `{{ with .Values.x }} ... toYaml . ...`: the block hands the whole subtree on.
        if re.search(r"\b(?:toYaml|toJson)\s+\.\s", templates[match.end():match.end() + 400]):
            paths.add(match.group(1).lstrip("."))
    paths.discard("global")
    return paths


def unknown_values(values: Mapping[str, Any], chart: ChartInfo) -> list[str]:
    """Dotted keys of ``values`` that mean nothing to ``chart``: Helm would ignore them silently.

    A key means something when the chart or a subchart defines it in its defaults (a parent's
    defaults under a subchart's name count for that subchart), declares it in its
    ``values.schema.json`` (local ``$ref``s and ``allOf``/``anyOf``/``oneOf`` followed), or a
    template reads it (``.Values.a.b``, ``(.Values).a``, ``index .Values "a"``); ``global`` is
    the union of every chart's. Free-form: anything under a default that is an empty map
    (``nodeSelector: {}``) or under a subtree a template takes whole (``toYaml .Values.x``).
    List items are checked against the keys of the default list's items.
    """
    if "" in chart.passthrough:
        return []  # the whole values handed on (kiali-server's ConfigMap): nothing to check here
    found: list[str] = []
    refs = set(chart.referenced) | {r for sub in _all_subcharts(chart) for r in sub.referenced
                                    if r.startswith("global.")}
    defaults = {**chart.defaults, "global": _deep_merge(*(c.defaults.get("global") or {}
                                                         for c in (chart, *_all_subcharts(chart))))}
    _Walk(chart, refs, found).mapping(values, defaults, chart.schema, rel="", shown="", root=True)
    return found


def _all_subcharts(chart: ChartInfo) -> list[ChartInfo]:
    return [c for sub in chart.subcharts.values() for c in (sub, *_all_subcharts(sub))]


def _deep_merge(*layers: Any) -> dict[str, Any]:
    """Later layers win; mappings merge key by key (as Helm merges values)."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in (layer or {}).items() if isinstance(layer, Mapping) else ():
            out[key] = _deep_merge(out[key], value) if isinstance(out.get(key), Mapping) and isinstance(
                value, Mapping) else value
    return out


@dataclass
class _Walk:
    chart: ChartInfo
    refs: set[str]  # dotted paths, relative to the chart's root, that its templates read
    found: list[str]

    def schema(self, node: Any) -> dict[str, Any] | None:
        """An object schema with local $refs followed and allOf/anyOf/oneOf merged."""
        if not isinstance(node, Mapping):
            return None
        node = dict(node)
        root = self.chart.schema or {}
        for _ in range(32):  # a $ref chain, bounded
            ref = node.pop("$ref", None)
            if not isinstance(ref, str) or not ref.startswith("#/"):
                break
            target: Any = root
            for part in ref[2:].split("/"):
                target = target.get(part.replace("~1", "/").replace("~0", "~")) if isinstance(target, Mapping) \
                    else None
            node = {**(target if isinstance(target, Mapping) else {}), **node}
        props: dict[str, Any] = dict(node.get("properties") or {})
        extra = node.get("additionalProperties")
        patterns = bool(node.get("patternProperties"))
        for combinator in ("allOf", "anyOf", "oneOf"):
            for part in node.get(combinator) or []:
                resolved = self.schema(part) or {}
                props.update(resolved.get("properties") or {})
                extra = extra if extra is not None else resolved.get("additionalProperties")
                patterns = patterns or bool(resolved.get("patternProperties"))
        return {"properties": props, "additionalProperties": extra, "patternProperties": patterns}

    def declared(self, schema: dict[str, Any] | None, key: str) -> tuple[bool, dict[str, Any] | None]:
        if schema is None:
            return False, None
        if key in schema["properties"]:
            return True, self.schema(schema["properties"][key])
        extra = schema.get("additionalProperties")
        if isinstance(extra, Mapping) or extra is True or schema.get("patternProperties"):
            return True, self.schema(extra) if isinstance(extra, Mapping) else None
        return False, None

    def read_below(self, path: str) -> bool:
        return any(r.startswith(f"{path}.") for r in self.refs)

    def mapping(self, values: Mapping[str, Any], defaults: Any, schema: Any, *, rel: str, shown: str,
                root: bool = False) -> None:
        resolved = self.schema(schema)
        for raw_key, value in values.items():
            key = str(raw_key)
            path, label = f"{rel}.{key}" if rel else key, f"{shown}.{key}" if shown else key
            if root and key in self.chart.subcharts and isinstance(value, Mapping):
                sub = self.chart.subcharts[key]
                parent_refs = {r[len(key) + 1:] for r in self.refs if r.startswith(f"{key}.")}
                parent_declared = self.declared(resolved, key)[1]
                walk = _Walk(sub, sub.referenced | parent_refs | {r for r in self.refs if r.startswith("global.")},
                             self.found)
                merged = _deep_merge(sub.defaults, (defaults or {}).get(key))
                walk.mapping(value, merged, sub.schema or parent_declared, rel="", shown=label, root=True)
                continue
            if root and key in self.chart.root_aliases and isinstance(value, Mapping):
                self.mapping(value, defaults, schema, rel="", shown=label, root=True)
                continue
            if path in self.chart.passthrough:
                continue
            in_defaults = isinstance(defaults, Mapping) and key in defaults
            declared, child_schema = self.declared(resolved, key)
            if not (in_defaults or declared or path in self.refs or self.read_below(path)):
                self.found.append(label)
                continue
            child = defaults.get(key) if isinstance(defaults, Mapping) else None
            if in_defaults and isinstance(child, Mapping) and not child and not (child_schema or {}).get(
                    "properties"):
                continue  # an explicitly empty map: free-form (nodeSelector: {})
            if isinstance(value, Mapping) and (
                    (isinstance(child, Mapping) and child) or (child_schema or {}).get("properties")
                    or (not in_defaults and self.read_below(path))):
                self.mapping(value, child if isinstance(child, Mapping) else {}, child_schema, rel=path,
                             shown=label)
            elif isinstance(value, list) and isinstance(child, list):
                self.items(value, child, rel=path, shown=label)

    def items(self, values: list[Any], defaults: list[Any], *, rel: str, shown: str) -> None:
        """Items of a list whose default items are mappings: each key must be one of theirs."""
        examples = [item for item in defaults if isinstance(item, Mapping)]
        if not examples:
            return
        merged = _deep_merge(*examples)
        for index, item in enumerate(values):
            if isinstance(item, Mapping):
                self.mapping(item, merged, None, rel=f"{rel}[]", shown=f"{shown}[{index}]")

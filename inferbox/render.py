"""Pure, strict rendering of the Jinja2 templates in manifests/."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jinja2
import yaml

from inferbox.errors import InferboxError

# libyaml's safe loader where PyYAML was built with it: the same documents, several times
# faster. Every safe YAML read of the project's uses it (charts.YamlLoader builds on it too).
SAFE_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# Apply order: what others refer to comes first; teardown uses the reverse.
_KIND_ORDER = ["CustomResourceDefinition", "Namespace", "ServiceAccount", "Secret", "ConfigMap",
               "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"]


class Renderer:
    def __init__(self, templates: Path) -> None:
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(templates)),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
            autoescape=False,  # YAML, not HTML
        )
        self.env.filters["to_yaml"] = lambda value: yaml.safe_dump(value, default_flow_style=True).strip()

    def text(self, template: str, **context: Any) -> str:
        try:
            return self.env.get_template(template).render(**context)
        except jinja2.UndefinedError as exc:
            raise InferboxError(f"manifests/{template}: {exc.message}") from exc
        except jinja2.TemplateNotFound:
            raise InferboxError(f"manifests/{template}: template not found") from None

    def objects(self, template: str, **context: Any) -> list[dict[str, Any]]:
        docs = [d for d in yaml.load_all(self.text(template, **context), Loader=SAFE_LOADER) if d]
        for index, doc in enumerate(docs):
            if not isinstance(doc, dict) or "apiVersion" not in doc or "kind" not in doc:
                raise InferboxError(f"manifests/{template}: document {index} lacks apiVersion/kind")
        return sort_objects(docs)


def sort_objects(objects: Iterable[dict[str, Any]], *, reverse: bool = False) -> list[dict[str, Any]]:
    def rank(obj: dict[str, Any]) -> int:
        kind = obj.get("kind", "")
        return _KIND_ORDER.index(kind) if kind in _KIND_ORDER else len(_KIND_ORDER)

    ordered = sorted(objects, key=rank)  # stable: template order within a rank
    return list(reversed(ordered)) if reverse else ordered

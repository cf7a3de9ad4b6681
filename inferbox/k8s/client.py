"""A thin, typed-error layer over the ``kubernetes`` client (the only module that imports it).

Objects cross this boundary as plain dicts, the same shape as the YAML a user reads, so waits,
reports and tests work on one representation.
"""

from __future__ import annotations

import contextlib
import json
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ApiException as DynamicApiException
from kubernetes.dynamic.exceptions import ResourceNotFoundError

from inferbox.errors import ClusterError, Conflict, Forbidden, Invalid, KubeError, NotFound
from inferbox.hints import invoke

T = TypeVar("T")

_STATUS_ERRORS: dict[int, type[KubeError]] = {404: NotFound, 409: Conflict, 403: Forbidden, 422: Invalid}


@dataclass(frozen=True)
class ObjectRef:
    """Which object: enough to find it and to name it in a report."""

    api_version: str
    kind: str
    name: str
    namespace: str | None = None

    @classmethod
    def of(cls, obj: dict[str, Any]) -> ObjectRef:
        """The reference of an object (a manifest, or what the API server returned)."""
        meta = obj.get("metadata") or {}
        return cls(obj["apiVersion"], obj["kind"], meta.get("name", ""), meta.get("namespace"))

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind.lower()} {where}{self.name}"


def _api_error(exc: Exception, what: str) -> KubeError:
    status = getattr(exc, "status", None)
    reason = getattr(exc, "reason", "") or ""
    body = getattr(exc, "body", "") or ""
    message = body if isinstance(body, str) else body.decode(errors="replace")
    with contextlib.suppress(ValueError, AttributeError):  # not a Status object: keep the raw body
        message = json.loads(message).get("message", message)
    cls = _STATUS_ERRORS.get(status or 0, KubeError)
    return cls(f"{what}: {status} {reason}: {message}".strip(), status=status, reason=reason)


class Kube:
    """Kubernetes API access for one cluster context."""

    def __init__(self, api_client: k8s_client.ApiClient) -> None:
        self.api_client = api_client
        self._dynamic: DynamicClient | None = None
        self._lock = threading.Lock()

    @classmethod
    def connect(cls, kubeconfig: Path | None = None, context: str | None = None) -> Kube:
        try:
            api_client = k8s_config.new_client_from_config(
                config_file=str(kubeconfig) if kubeconfig else None, context=context
            )
        except (k8s_config.ConfigException, FileNotFoundError) as exc:
            where = f"context {context!r}" if context else "the current context"
            raise ClusterError(f"cannot load kubeconfig for {where}: {exc} (`{invoke('bootstrap')}` creates the "
                               "platform's cluster and its context; --context names another)") from exc
        return cls(api_client)

    # -- error mapping ---------------------------------------------------------------------
    def call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except (ApiException, DynamicApiException) as exc:
            raise _api_error(exc, what) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise ClusterError(f"{what}: cannot reach the API server: {exc}") from exc

    # -- dynamic, dict-shaped access ---------------------------------------------------------
    @property
    def dynamic(self) -> DynamicClient:
        with self._lock:
            if self._dynamic is None:
                self._dynamic = self.call("API discovery", DynamicClient, self.api_client)
            return self._dynamic

    def resource(self, api_version: str, kind: str) -> Any:
        """The dynamic resource for a kind; refreshes discovery once for CRDs added since."""
        try:
            return self.dynamic.resources.get(api_version=api_version, kind=kind)
        except ResourceNotFoundError:
            self.dynamic.resources.invalidate_cache()
            try:
                return self.dynamic.resources.get(api_version=api_version, kind=kind)
            except ResourceNotFoundError:
                # No HTTP status: nothing answered for this kind (its CRD is not installed).
                raise NotFound(f"the API server does not serve {kind} ({api_version})") from None

    def get(self, ref: ObjectRef) -> dict[str, Any] | None:
        res = self.resource(ref.api_version, ref.kind)
        try:
            obj = self.call(f"get {ref}", res.get, name=ref.name, namespace=ref.namespace)
        except NotFound:
            return None
        return dict(obj.to_dict())

    def exists(self, ref: ObjectRef) -> bool:
        """Is ``ref`` there? False too when its kind is not served (its CRD is not installed)."""
        try:
            return self.get(ref) is not None
        except NotFound:
            return False

    def list(self, api_version: str, kind: str, namespace: str | None = None, *,
             label_selector: str | None = None, field_selector: str | None = None) -> list[dict[str, Any]]:
        res = self.resource(api_version, kind)
        query = [(key, value) for key, value in (("labelSelector", label_selector),
                                                  ("fieldSelector", field_selector)) if value]
        result = self.call(f"list {kind}", self._request, "GET", res.path(namespace=namespace), query)
        return list(result.get("items") or [])

    def list_with_version(self, api_version: str, kind: str, namespace: str | None, **selectors: str
                          ) -> tuple[list[dict[str, Any]], str]:
        res = self.resource(api_version, kind)
        kwargs: dict[str, Any] = {"namespace": namespace} if namespace else {}
        kwargs.update({k: v for k, v in selectors.items() if v})
        result = self.call(f"list {kind}", res.get, **kwargs).to_dict()
        return list(result.get("items") or []), str(result.get("metadata", {}).get("resourceVersion", ""))

    def watch(self, api_version: str, kind: str, namespace: str | None, *, resource_version: str,
              timeout_s: int, **selectors: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """(event type, object) pairs until the server ends the watch after ``timeout_s``."""
        res = self.resource(api_version, kind)
        kwargs: dict[str, Any] = {k: v for k, v in selectors.items() if v}
        stream = self.call(f"watch {kind}", res.watch, namespace=namespace, resource_version=resource_version,
                           timeout=max(1, timeout_s), **kwargs)
        try:
            for event in stream:
                obj = event["object"]
                yield str(event["type"]), dict(obj.to_dict()) if hasattr(obj, "to_dict") else dict(obj)
        except (ApiException, DynamicApiException) as exc:
            raise _api_error(exc, f"watch {kind}") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise ClusterError(f"watch {kind}: connection lost: {exc}") from exc

    def create(self, obj: dict[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        ref = ObjectRef.of(obj)
        res = self.resource(ref.api_version, ref.kind)
        kwargs: dict[str, Any] = {"body": obj, "namespace": ref.namespace}
        if dry_run:
            kwargs["query_params"] = [("dryRun", "All")]
        verb = "dry-run create" if dry_run else "create"
        return dict(self.call(f"{verb} {ref}", res.create, **kwargs).to_dict())

    def apply(self, obj: dict[str, Any], *, field_manager: str, force: bool = True,
              dry_run: bool = False) -> dict[str, Any]:
        """Server-side apply with one field manager; ``dry_run`` returns what it would make, storing nothing."""
        ref = ObjectRef.of(obj)
        res = self.resource(ref.api_version, ref.kind)
        query = [("fieldManager", field_manager), ("force", "true" if force else "false")]
        if dry_run:
            query.append(("dryRun", "All"))
        verb = "dry-run apply" if dry_run else "apply"
        return self.call(f"{verb} {ref}", self._request, "PATCH", res.path(name=ref.name, namespace=ref.namespace),
                         query, body=obj, content_type="application/apply-patch+yaml")

    def replace(self, obj: dict[str, Any], *, field_manager: str) -> dict[str, Any]:
        """PUT the whole object (``metadata.resourceVersion`` guards against a concurrent change:
        409 Conflict). Unlike an apply, it removes fields other managers set."""
        ref = ObjectRef.of(obj)
        res = self.resource(ref.api_version, ref.kind)
        return self.call(f"replace {ref}", self._request, "PUT", res.path(name=ref.name, namespace=ref.namespace),
                         [("fieldManager", field_manager)], body=obj)

    def _request(self, method: str, path: str, query: list[tuple[str, str]], *, body: Any = None,
                 content_type: str = "application/json") -> dict[str, Any]:
        """One request through the client's connection pool and authentication, the JSON answer
        as a dict: without the client's model layer, which costs more client CPU than the request
        itself when thousands of objects are applied (bench/tenants_bench.py)."""
        headers = {"Accept": "application/json", "Content-Type": content_type}
        self.api_client.update_params_for_auth(headers, query, ["BearerToken"], path, method, body)
        url = self.api_client.configuration.host + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        response = self.api_client.rest_client.request(method, url, headers=headers, body=body)
        data = response.read()
        if not 200 <= response.status <= 299:
            raise ApiException.from_response(http_resp=response, body=data.decode(errors="replace"), data=None)
        return dict(json.loads(data))

    def delete(self, ref: ObjectRef, *, missing_ok: bool = True, dry_run: bool = False) -> bool:
        """Delete ``ref``; ``dry_run`` asks the API server whether it would (admission included)."""
        res = self.resource(ref.api_version, ref.kind)
        try:
            if dry_run:
                self.call(f"dry-run delete {ref}", self._request, "DELETE",
                          res.path(name=ref.name, namespace=ref.namespace), [("dryRun", "All")])
            else:
                self.call(f"delete {ref}", res.delete, name=ref.name, namespace=ref.namespace)
        except NotFound:
            if not missing_ok:
                raise
            return False
        return True

    # -- specific questions the platform asks ------------------------------------------------
    def server_version(self) -> str:
        info = self.call("server version", k8s_client.VersionApi(self.api_client).get_code)
        return str(info.git_version)

    def events_for(self, namespace: str, name: str, limit: int = 5) -> list[dict[str, Any]]:
        """The latest events about an object, newest last."""
        events = self.list("v1", "Event", namespace, field_selector=f"involvedObject.name={name}")

        def when(event: dict[str, Any]) -> str:
            return str(event.get("lastTimestamp") or event.get("eventTime") or
                       event.get("metadata", {}).get("creationTimestamp") or "")

        return sorted(events, key=when)[-limit:]

    def pod_log(self, namespace: str, name: str, *, tail_lines: int = 10) -> list[str]:
        """The last lines a pod's (first) container wrote; raises KubeError/ClusterError when the
        API server cannot get them (no kubelet answers, the container never started)."""
        core = k8s_client.CoreV1Api(self.api_client)
        text = self.call(f"logs of pod {namespace}/{name}", core.read_namespaced_pod_log, name, namespace,
                         tail_lines=tail_lines)
        return str(text).splitlines()

    def ready_endpoints(self, namespace: str, service: str) -> int:
        slices = self.list("discovery.k8s.io/v1", "EndpointSlice", namespace,
                           label_selector=f"kubernetes.io/service-name={service}")
        return sum(1 for s in slices for ep in s.get("endpoints") or []
                   if (ep.get("conditions") or {}).get("ready", False))

    def webhook_configurations_for_service(self, namespace: str, service: str) -> list[ObjectRef]:
        """Admission webhook configurations whose webhooks call ``namespace/service``."""
        found: list[ObjectRef] = []
        for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
            for cfg in self.list("admissionregistration.k8s.io/v1", kind):
                for hook in cfg.get("webhooks") or []:
                    svc = (hook.get("clientConfig") or {}).get("service") or {}
                    if svc.get("namespace") == namespace and svc.get("name") == service:
                        found.append(ObjectRef("admissionregistration.k8s.io/v1", kind, cfg["metadata"]["name"]))
                        break
        return found

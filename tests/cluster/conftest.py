"""Fixtures for tests against the hermetic control plane (inferbox.testenv).

The binaries take several minutes to build the first time, so a test run
does not build them unasked: without a cached build the cluster tests skip
and say how to get one (``python -m inferbox.testenv build``, or
INFERBOX_TESTENV_BUILD=1 to build here).
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException
from rich.console import Console

from inferbox import PROJECT_ROOT
from inferbox.config import Settings
from inferbox.k8s import Kube
from inferbox.tenants import app
from inferbox.testenv import BinarySet, ControlPlane, ensure_binaries, find_binaries, load_pins, netns
from inferbox.testenv.build import build_digest, default_cache_dir
from inferbox.testenv.existing import ExistingCluster
from inferbox.testenv.waiting import wait_for


def external_kubeconfig(config: pytest.Config) -> Path | None:
    return config.getoption("--kubeconfig")


@pytest.fixture(autouse=True)
def _embedded_only(request: pytest.FixtureRequest) -> None:
    """Tests of simulated behaviour (fake GPU nodes, injected failures) need the embedded plane."""
    if request.node.get_closest_marker("embedded") and external_kubeconfig(request.config):
        pytest.skip("needs the embedded control plane itself (kwok's simulated nodes, failure stages, its CRD set)")


@pytest.fixture(scope="session")
def testenv_binaries(request: pytest.FixtureRequest) -> BinarySet:
    if external_kubeconfig(request.config):
        pytest.skip("tests the embedded control plane's own binaries: not run against an existing cluster")
    pins = load_pins(PROJECT_ROOT / "versions.toml")
    if found := find_binaries(pins):
        return found
    # CI sets INFERBOX_TESTENV_REQUIRED=1: there a missing build is built, never skipped.
    if "1" not in (os.environ.get("INFERBOX_TESTENV_BUILD"), os.environ.get("INFERBOX_TESTENV_REQUIRED")):
        pytest.skip(
            f"testenv binaries not built (pins digest {build_digest(pins)}, cache {default_cache_dir()}): "
            "run `.venv/bin/python -m inferbox.testenv build` (several minutes, once) or set INFERBOX_TESTENV_BUILD=1"
        )
    return ensure_binaries(pins, log=lambda msg: print(f"[testenv] {msg}"))


@pytest.fixture(scope="session")
def control_plane(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """The embedded control plane, or with --kubeconfig an existing cluster behind the same interface."""
    if kubeconfig := external_kubeconfig(request.config):
        yield ExistingCluster(kubeconfig, request.config.getoption("--kube-context"),  # type: ignore[misc]
                              tmp_path_factory.mktemp("existing"))
        return
    if not netns.isolated():
        # The API server dials Services' ClusterIPs (webhooks): only loopback may be reachable.
        why = (f"the embedded control plane runs only in a network namespace with loopback alone (this one has "
               f"{netns.interfaces()}): run `./quickstart test`, or `unshare --net --map-root-user -- "
               ".venv/bin/python -m inferbox.testenv.netns .venv/bin/python -m pytest`")
        if os.environ.get("INFERBOX_TESTENV_REQUIRED") == "1":
            pytest.fail(why)
        pytest.skip(why)
    with ControlPlane(request.getfixturevalue("testenv_binaries")) as cp:
        yield cp


@pytest.fixture(scope="session")
def helm_binary(request: pytest.FixtureRequest, control_plane: ControlPlane) -> Path:
    if isinstance(control_plane, ExistingCluster):
        return control_plane.helm_path
    return request.getfixturevalue("testenv_binaries").helm


@pytest.fixture(scope="session")
def api(control_plane: ControlPlane) -> Iterator[client.ApiClient]:
    api_client = control_plane.api_client()
    yield api_client
    api_client.close()


@pytest.fixture(scope="session")
def core(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


@pytest.fixture(scope="session")
def crds_installed(request: pytest.FixtureRequest, control_plane: ControlPlane) -> object:
    """The upstream CRDs (../shared/crds, $INFERBOX_CRDS or a bundle's), installed once per session."""
    if isinstance(control_plane, ExistingCluster):
        # A bootstrapped cluster has the CRDs from the platform's charts: use those, change nothing.
        return control_plane.kubectl("get", "crds", "-o", "name").stdout.split()
    return control_plane.install_crds(request.getfixturevalue("upstream_crds_dir"))


def create_namespace(core: client.CoreV1Api, prefix: str = "t") -> str:
    """A fresh namespace whose default ServiceAccount exists (pods need it to be admitted)."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    wait_for(lambda: core.list_namespaced_service_account(name, field_selector="metadata.name=default").items,
             timeout=30, what=f"ServiceAccount {name}/default (KCM serviceaccount controller)")
    return name


@pytest.fixture
def make_namespace(core: client.CoreV1Api) -> Iterator[Callable[[str], str]]:
    """Factory of fresh namespaces, deleted after the test."""
    made: list[str] = []

    def make(prefix: str = "t") -> str:
        made.append(create_namespace(core, prefix))
        return made[-1]

    yield make
    for name in made:
        with contextlib.suppress(client.ApiException):
            core.delete_namespace(name)


@pytest.fixture
def namespace(make_namespace: Callable[[str], str]) -> str:
    return make_namespace("t")


@pytest.fixture
def tmp_chart(tmp_path: Path) -> Path:
    """A minimal Helm chart with one ConfigMap, for helm install/list tests."""
    chart = tmp_path / "demo"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: demo\nversion: 0.1.0\n")
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\ndata:\n  hello: world\n"
    )
    return chart


def fail_closed_webhook(name: str, *, service: str, namespace: str, group: str, version: str, resource: str,
                        operations: tuple[str, ...] = ("CREATE",), only_this_namespace: bool = False,
                        timeout_s: int | None = None) -> dict[str, Any]:
    """A ValidatingWebhookConfiguration that fails closed, calling ``namespace/service:443`` for
    ``resource`` (what an interrupted install leaves behind, or a probe of the API server's dial)."""
    webhook: dict[str, Any] = {
        "name": f"{name}.{namespace}.inferbox.test", "admissionReviewVersions": ["v1"], "sideEffects": "None",
        "failurePolicy": "Fail", "clientConfig": {"service": {"namespace": namespace, "name": service, "port": 443}},
        "rules": [{"apiGroups": [group], "apiVersions": [version], "operations": list(operations),
                   "resources": [resource]}]}
    if only_this_namespace:
        webhook["namespaceSelector"] = {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
    if timeout_s is not None:
        webhook["timeoutSeconds"] = timeout_s
    return {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": name}, "webhooks": [webhook]}


@pytest.fixture
def webhook_config() -> Callable[..., dict[str, Any]]:
    """The fail-closed webhook configuration factory (fail_closed_webhook), for the tests here."""
    return fail_closed_webhook


# -- tenants (tests/cluster/test_tenants.py, test_aigateway.py; each module brings its own `kube` and
# `settings` fixtures) ------------------------------------------------------------------------------


class Tenants:
    """A private tenants/ folder with uniquely named copies of the shipped tenants."""

    def __init__(self, folder: Path, settings: Settings, kube: Kube) -> None:
        self.folder = folder
        self.settings = settings
        self.kube = kube
        self.suffix = uuid.uuid4().hex[:6]
        self.docs: dict[str, dict[str, Any]] = {}

    def add(self, shipped: str) -> str:
        doc = yaml.safe_load((PROJECT_ROOT / "tenants" / f"{shipped}.yaml").read_text())
        doc["name"] = f"{shipped}-{self.suffix}"
        self.write(doc)
        return str(doc["name"])

    def write(self, doc: dict[str, Any]) -> None:
        self.docs[doc["name"]] = doc
        (self.folder / f"{doc['name']}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))

    def edit(self, name: str, change: Callable[[dict[str, Any]], None]) -> None:
        doc = copy.deepcopy(self.docs[name])
        change(doc)
        self.write(doc)

    def apply(self, **kwargs: Any) -> Any:
        return app.tenants_apply(self.settings, Console(file=io.StringIO(), width=200), kube=self.kube,
                                 directory=self.folder, **kwargs)

    def delete(self, name: str, *, confirmed: bool = True) -> Any:
        return app.tenant_delete(self.settings, Console(file=io.StringIO(), width=200), name, confirmed=confirmed,
                                 kube=self.kube, directory=self.folder)


@pytest.fixture
def tenants(tmp_path: Path, settings: Settings, kube: Kube, core: client.CoreV1Api) -> Iterator[Tenants]:
    folder = tmp_path / "tenants"
    folder.mkdir()
    made = Tenants(folder, settings, kube)
    yield made
    for name in made.docs:
        try:
            core.delete_namespace(name)
        except ApiException as exc:
            if exc.status != 404:
                raise

"""The chart store and air-gapped bundles (inferbox.bootstrap.charts): charts pulled for real by
helm from a chart repository served on 127.0.0.1, recorded with their sha256, and refused when
missing, altered, or not the pinned chart; the values reader behind the unknown-key check; and
the bootstrap refusing a bundle whose charts fail the render check before it installs anything."""

from __future__ import annotations

import functools
import http.server
import io
import json
import os
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rich.console import Console

from inferbox.bootstrap import app, contract
from inferbox.bootstrap.charts import (
    MANIFEST,
    ChartStore,
    ChartStoreError,
    archive_name,
    chart_name,
    load_chart,
    sha256_file,
    unknown_values,
)
from inferbox.config import ChartPin, Charts, Settings
from inferbox.hints import invoke
from inferbox.runner import RecordingRunner, ShellRunner
from inferbox.tools.helm import Helm

CHARTS = Path(__file__).resolve().parent.parent / "fixtures" / "charts"


@pytest.fixture
def helm(helm_cli: Path) -> Helm:
    return Helm(ShellRunner(), str(helm_cli))


@pytest.fixture
def chart_repo(tmp_path: Path, helm: Helm) -> Iterator[str]:
    """A classic chart repository with demo-app and crd-folder (two versions), on 127.0.0.1."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for chart in (CHARTS / "demo-app", CHARTS / "contract" / "crd-folder-v1", CHARTS / "contract" / "crd-folder-v2"):
        helm.runner.run(helm._command(["package", str(chart), "--destination", str(repo)]))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(repo))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    helm.runner.run(helm._command(["repo", "index", str(repo), "--url", url]))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield url
    server.shutdown()


def loopback_charts(url: str, **pins: tuple[str, str]) -> Charts:
    """Charts whose pins point at the loopback repository. ChartPin refuses http:// (a product
    rule); model_construct skips that rule here, where the repository is on 127.0.0.1."""
    return Charts.model_construct(**{field: ChartPin.model_construct(repo=url, chart=name, version=version)
                                     for field, (name, version) in pins.items()})


def test_pull_records_and_verifies_the_pinned_charts(tmp_path: Path, helm: Helm, chart_repo: str) -> None:
    charts = loopback_charts(chart_repo, cert_manager=("demo-app", "0.2.0"), istio_base=("crd-folder", "0.1.0"))
    store = ChartStore.open(tmp_path / "bundle")
    assert store.pull(helm, charts, ["cert-manager", "istio-base"]) == ["cert-manager", "istio-base"]
    store.record(charts, ["cert-manager", "istio-base"])
    store.verify(charts, ["cert-manager", "istio-base"])
    files = sorted(p.name for p in (tmp_path / "bundle").iterdir())
    assert files == [MANIFEST, "crd-folder-0.1.0.tgz", "demo-app-0.2.0.tgz"]  # nothing half-written beside them
    manifest = json.loads((tmp_path / "bundle" / MANIFEST).read_text())
    entry = manifest["charts"]["cert-manager"]
    assert entry == {"chart": "demo-app", "repo": chart_repo, "version": "0.2.0", "file": "demo-app-0.2.0.tgz",
                     "sha256": sha256_file(tmp_path / "bundle" / "demo-app-0.2.0.tgz")}
    # Pulled once: a second pull finds everything there.
    assert store.pull(helm, charts, ["cert-manager", "istio-base"]) == []


def test_a_bundle_refuses_altered_missing_and_unpinned_charts(tmp_path: Path, helm: Helm, chart_repo: str) -> None:
    charts = loopback_charts(chart_repo, cert_manager=("demo-app", "0.2.0"), istio_base=("crd-folder", "0.1.0"))
    writer = ChartStore.open(tmp_path / "b")
    writer.pull(helm, charts, ["cert-manager", "istio-base"])
    writer.record(charts, ["cert-manager", "istio-base"])
    bundle = ChartStore.open(tmp_path / "b", bundle=True)
    bundle.verify(charts, ["cert-manager", "istio-base"])
    with pytest.raises(ChartStoreError, match="charts are never pulled into it"):
        bundle.pull(helm, charts)

    # The file of one chart replaced by another chart's bytes: the sha256 differs.
    victim = tmp_path / "b" / "crd-folder-0.1.0.tgz"
    original = victim.read_bytes()
    victim.write_bytes((tmp_path / "b" / "demo-app-0.2.0.tgz").read_bytes())
    now, recorded = sha256_file(victim), sha256_file(tmp_path / "b" / "demo-app-0.2.0.tgz")
    again = re.escape(invoke("bundle --out"))
    with pytest.raises(ChartStoreError, match=rf"istio-base: crd-folder-0.1.0.tgz has sha256 {now}, the recorded "
                                              rf"one is [0-9a-f]{{64}}\nmake it again with `{again} "):
        bundle.verify(charts, ["cert-manager", "istio-base"])
    assert now == recorded
    # Making the bundle again (the printed fix) must not bless the changed file.
    manifest_before = (tmp_path / "b" / MANIFEST).read_text()
    with pytest.raises(ChartStoreError, match="it changed since it was pulled; delete it to pull the pinned chart"):
        ChartStore.open(tmp_path / "b").record(charts, ["cert-manager", "istio-base"])
    assert (tmp_path / "b" / MANIFEST).read_text() == manifest_before
    victim.write_bytes(original)

    # A pin moved since the bundle was made.
    moved = loopback_charts(chart_repo, cert_manager=("demo-app", "0.2.0"), istio_base=("crd-folder", "0.2.0"))
    with pytest.raises(ChartStoreError, match=re.escape("istio-base: crd-folder-0.2.0.tgz missing")):
        bundle.verify(moved, ["cert-manager", "istio-base"])

    # A file under the pinned name that holds another chart: refused by its Chart.yaml, when it is
    # recorded and when a manifest written elsewhere vouches for it.
    fake = loopback_charts(chart_repo, cert_manager=("demo-app", "0.1.0"))
    impostor = tmp_path / "b" / "demo-app-0.1.0.tgz"
    impostor.write_bytes((tmp_path / "b" / "demo-app-0.2.0.tgz").read_bytes())
    wrong = re.escape("holds chart demo-app 0.2.0, not the pinned demo-app 0.1.0")
    with pytest.raises(ChartStoreError, match=wrong):
        ChartStore.open(tmp_path / "b").record(fake, ["cert-manager"])
    vouching = ChartStore.open(tmp_path / "b")
    vouching.manifest["charts"]["cert-manager"] = {"chart": "demo-app", "repo": chart_repo, "version": "0.1.0",
                                                   "file": impostor.name, "sha256": sha256_file(impostor)}
    vouching.write()
    with pytest.raises(ChartStoreError, match=wrong):
        ChartStore.open(tmp_path / "b", bundle=True).verify(fake, ["cert-manager"])


def test_broken_archives_and_manifests_are_named_not_tracebacks(tmp_path: Path, helm: Helm,
                                                                  chart_repo: str) -> None:
    charts = loopback_charts(chart_repo, cert_manager=("demo-app", "0.2.0"))
    store = ChartStore.open(tmp_path / "s")
    store.pull(helm, charts, ["cert-manager"])
    archive = tmp_path / "s" / "demo-app-0.2.0.tgz"
    archive.write_bytes(archive.read_bytes()[:-40])  # a truncated download
    with pytest.raises(ChartStoreError, match=r"demo-app-0.2.0.tgz: not a readable chart .*delete it"):
        store.record(charts, ["cert-manager"])
    assert not (tmp_path / "s" / MANIFEST).exists()  # nothing recorded
    with pytest.raises(ChartStoreError, match=r"demo-app-0.2.0.tgz: not a readable chart"):
        load_chart(archive)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / MANIFEST).write_text('{"charts": {"istiod": "x"}}')
    with pytest.raises(Exception, match=r"bundle.json: charts.istiod: must be a mapping with chart, version"):
        ChartStore.open(tmp_path / "m", bundle=True)
    with pytest.raises(ChartStoreError, match=r"is a file: a chart store or bundle is a folder"):
        ChartStore.open(tmp_path / "m" / MANIFEST, bundle=True)


def test_a_folder_without_a_manifest_is_no_bundle(tmp_path: Path) -> None:
    with pytest.raises(ChartStoreError, match=r"is not a chart bundle \(bundle.json missing\): make one with "
                                              rf"`{re.escape(invoke('bundle --out'))} "):
        ChartStore.open(tmp_path, bundle=True)
    (tmp_path / MANIFEST).write_text("[1, 2]")
    with pytest.raises(Exception, match=r"bundle.json: charts: must be a mapping"):
        ChartStore.open(tmp_path, bundle=True)


def test_archives_and_folders_read_the_same(tmp_path: Path, helm: Helm) -> None:
    chart = CHARTS / "contract" / "values-chart"
    helm.runner.run(helm._command(["package", str(chart), "--destination", str(tmp_path)]))
    archive = tmp_path / "values-chart-0.1.0.tgz"
    folder, packed = load_chart(chart), load_chart(archive)
    assert (packed.name, packed.version, sorted(packed.subcharts)) == ("values-chart", "0.1.0", ["child"])
    assert packed.defaults == folder.defaults and packed.passthrough == folder.passthrough == {"mesh", "ports"}
    assert packed.root_aliases == {"legacy"}
    assert unknown_values({"child": {"nope": 1}, "nope": 2}, packed) == ["child.nope", "nope"]


def pinned_fixture_bundle(settings: Settings, helm: Helm, out: Path) -> None:
    """A bundle whose every chart has the pinned name and version but renders a bare ConfigMap:
    real archives, recorded as `invoke bundle` records them, that no phase's checks can pass."""
    charts = settings.versions.charts
    for key in charts.keys():  # noqa: SIM118 - Charts.keys() names the versions.toml keys
        pin = charts.by_key(key)
        src = out.parent / "src" / key
        (src / "templates").mkdir(parents=True)
        (src / "Chart.yaml").write_text(f"apiVersion: v2\nname: {chart_name(pin)}\nversion: {pin.version}\n")
        (src / "templates" / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: stand-in}\n")
        helm.runner.run(helm._command(["package", str(src), "--destination", str(out)]))
        assert (out / archive_name(pin)).is_file()
    ChartStore.open(out).record(charts)


def test_bootstrap_refuses_a_bundle_that_fails_the_render_check_before_anything_runs(
        make_settings: Callable[..., Settings], tmp_path: Path, helm: Helm, helm_cli: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", f"{helm_cli.parent}:{os.environ.get('PATH', '')}")
    bundle = tmp_path / "bundle"
    settings = make_settings(gpu="off", bundle=bundle)
    pinned_fixture_bundle(settings, helm, bundle)
    runner = RecordingRunner()
    with pytest.raises(contract.ContractError) as caught:
        app.bootstrap(settings, Console(file=io.StringIO()), runner=runner, skip_doctor=True)
    problems = [str(p) for p in caught.value.problems]
    assert ("cert-manager: CRD certificates.cert-manager.io Established: no CustomResourceDefinition of that name "
            "is rendered") in problems
    assert any(p.startswith("kserve-runtimes: ClusterServingRuntime kserve-sklearnserver: models/catalog.yaml: "
                            "models.sklearn-iris.runtime needs it") for p in problems)
    assert runner.commands == []  # no cluster created, no helm install: the check came first


def test_a_failed_pull_says_what_to_do_without_registries_and_leaves_no_empty_store(
        tmp_path: Path, helm: Helm, chart_repo: str) -> None:
    charts = loopback_charts(chart_repo, cert_manager=("no-such-chart", "1.0.0"))
    store = ChartStore.open(tmp_path / "new-store")
    with pytest.raises(ChartStoreError) as caught:
        store.pull(helm, charts, ["cert-manager"])
    message = str(caught.value)
    assert message.startswith("cannot pull cert-manager (no-such-chart 1.0.0): ")
    assert f"`{invoke('bundle --out DIR')}`), copy it here and pass --bundle DIR" in message
    assert not (tmp_path / "new-store").exists()

"""`invoke teardown`: what is removed for each provider, and what is already gone is fine."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from inferbox.bootstrap import app
from inferbox.errors import ClusterError
from inferbox.runner import RecordingRunner, Reply


def run(settings, replies, **kwargs) -> RecordingRunner:
    runner = RecordingRunner(replies, strict=True, dry_run=False)
    app.teardown(settings, Console(file=io.StringIO()), runner=runner, **kwargs)
    return runner


def test_kind_cluster_is_deleted_whole(make_settings) -> None:
    runner = run(make_settings(), {("kind", "get", "clusters"): Reply("inferbox\n"), ("kind", "delete"): Reply()})
    assert runner.commands[-1].argv == ("kind", "delete", "cluster", "--name", "inferbox")
    assert not any(c.argv[0] == "helm" for c in runner.commands)


def test_missing_cluster_is_not_an_error(make_settings) -> None:
    runner = run(make_settings(), {("kind", "get", "clusters"): Reply("No kind clusters found.\n")})
    assert [c.argv[:2] for c in runner.commands] == [("kind", "get")]


def test_keep_cluster_uninstalls_in_reverse_plan_order(make_settings) -> None:
    settings = make_settings()
    runner = run(settings, {("kind", "get", "clusters"): Reply("inferbox\n"), ("helm", "uninstall"): Reply()},
                 keep_cluster=True)
    released = [c.argv[2] for c in runner.commands if c.argv[:2] == ("helm", "uninstall")]
    assert released.index("kserve-runtime-configs") < released.index("kserve") < released.index("kserve-crd")
    assert released.index("istiod") < released.index("istio-base") < released.index("cert-manager")
    assert all("--ignore-not-found" in c.argv for c in runner.commands if c.argv[:2] == ("helm", "uninstall"))


def test_existing_cluster_is_never_deleted(make_settings) -> None:
    settings = make_settings(provider="existing", context="prod")
    runner = run(settings, {("helm", "uninstall"): Reply()})
    assert {c.argv[0] for c in runner.commands} == {"helm"}
    assert all(c.argv[c.argv.index("--kube-context") + 1] == "prod" for c in runner.commands)


def test_status_of_an_unreachable_cluster_claims_nothing_and_fails(make_settings, tmp_path, monkeypatch) -> None:
    """No cluster: every state is "unknown", not "not installed", and the task exits non-zero."""
    empty = tmp_path / "kubeconfig"
    empty.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n")
    monkeypatch.setenv("KUBECONFIG", str(empty))
    out = io.StringIO()
    with pytest.raises(ClusterError, match=r"cluster context kind-inferbox unreachable .*`\.venv/bin/invoke "
                                           r"bootstrap` creates the platform's cluster"):
        app.status(make_settings(gpu="off"), Console(file=out, width=200), runner=RecordingRunner())
    text = out.getvalue()
    assert "unknown" in text and "not installed" not in text

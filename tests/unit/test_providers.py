"""Cluster providers: the rendered kind config, and what each provider creates or deletes."""

from __future__ import annotations

import yaml

from inferbox.bootstrap.providers import ExistingProvider, KindProvider, MinikubeProvider
from inferbox.render import Renderer
from inferbox.runner import RecordingRunner, Reply
from inferbox.tools import Toolbox


def kind_provider(settings, runner, *, gpu: bool) -> KindProvider:
    return KindProvider(settings, Toolbox.from_settings(settings, runner), Renderer(settings.root / "manifests"), gpu)


def test_kind_config_cpu_and_gpu_variants(make_settings, golden) -> None:
    settings = make_settings(cluster_name="demo")
    cpu = kind_provider(settings, RecordingRunner(), gpu=False).render_config()
    gpu = kind_provider(settings, RecordingRunner(), gpu=True).render_config()
    golden("kind-config-cpu.yaml", cpu)
    golden("kind-config-gpu.yaml", gpu)
    cpu_doc, gpu_doc = yaml.safe_load(cpu), yaml.safe_load(gpu)
    assert cpu_doc["name"] == "demo" and [n["role"] for n in cpu_doc["nodes"]] == ["control-plane", "worker"]
    ports = {m["containerPort"]: m["hostPort"] for m in cpu_doc["nodes"][0]["extraPortMappings"]}
    assert ports == {30080: 8080, 30443: 8443}
    gpu_node = gpu_doc["nodes"][-1]
    assert gpu_node["labels"] == {"nvidia.com/gpu.present": "true"}
    assert gpu_node["extraMounts"] == [{"hostPath": "/dev/null",
                                        "containerPath": "/var/run/nvidia-container-devices/all"}]


def test_kind_create_is_idempotent(make_settings) -> None:
    settings = make_settings(cluster_name="demo")
    runner = RecordingRunner({("kind", "get", "clusters"): Reply("other\ndemo\n")}, strict=True, dry_run=False)
    assert kind_provider(settings, runner, gpu=False).create() is False
    assert [c.argv[:3] for c in runner.commands] == [("kind", "get", "clusters")]


def test_kind_create_writes_config_and_uses_pinned_image(make_settings) -> None:
    settings = make_settings(cluster_name="demo")
    runner = RecordingRunner({("kind", "get"): Reply("No kind clusters found.\n"), ("kind", "create"): Reply(),
                              ("docker", "exec"): Reply()}, strict=True, dry_run=False)
    assert kind_provider(settings, runner, gpu=True).create() is True
    create = next(c.argv for c in runner.commands if c.argv[:2] == ("kind", "create"))
    assert create[create.index("--image") + 1] == settings.versions.kubernetes.kind_node_image
    config = settings.state_dir / "kind-config.yaml"
    assert create[create.index("--config") + 1] == str(config)
    assert "nvidia-container-devices" in config.read_text()
    # NVIDIA's node preparation (nvkind), in the GPU worker, after the cluster exists.
    scripts = [c.argv for c in runner.commands if c.argv[:2] == ("docker", "exec")]
    assert [argv[2] for argv in scripts] == ["demo-worker2"] * 3
    assert f"nvidia-container-toolkit={settings.versions.gpu.container_toolkit}-1" in scripts[0][-1]
    assert "nvidia-ctk runtime configure --runtime=containerd" in scripts[1][-1]
    assert "ModifyDeviceFiles" in scripts[2][-1]
    assert runner.commands.index(next(c for c in runner.commands if c.argv[:2] == ("kind", "create"))) < \
        runner.commands.index(next(c for c in runner.commands if c.argv[:2] == ("docker", "exec")))


def test_minikube_gpus_flag_only_when_asked(make_settings) -> None:
    settings = make_settings(provider="minikube", cluster_name="demo")
    for gpu in (True, False):
        runner = RecordingRunner({("minikube", "profile"): Reply('{"valid": []}'), ("minikube", "start"): Reply(),
                                  ("minikube", "addons"): Reply(), ("kubectl", "--context"): Reply()},
                                 strict=True, dry_run=False)
        assert MinikubeProvider(settings, Toolbox.from_settings(settings, runner), gpu).create()
        start = next(c.argv for c in runner.commands if c.argv[:2] == ("minikube", "start"))
        assert ("--gpus" in start) is gpu
        # --gpus enables minikube's own device plugin addon: disabled again, the plan installs one.
        after = [c.argv for c in runner.commands[runner.commands.index(next(
            c for c in runner.commands if c.argv[:2] == ("minikube", "start"))) + 1:]]
        assert after == ([("minikube", "addons", "disable", "nvidia-device-plugin", "--profile", "demo"),
                          ("kubectl", "--context", "demo", "label", "node", "demo", "nvidia.com/gpu.present=true",
                           "--overwrite")] if gpu else [])
        assert start[start.index("--driver") + 1] == "docker"
        assert start[start.index("--kubernetes-version") + 1] == f"v{settings.versions.kubernetes.version}"


def test_existing_provider_never_deletes(make_settings) -> None:
    provider = ExistingProvider(make_settings(provider="existing", context="prod", dry_run=True))
    assert provider.create() is False
    assert provider.delete() is False

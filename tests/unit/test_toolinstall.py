"""invoke tools against a real HTTP server on loopback serving generated fake releases.

The fake "binaries" are tiny shell scripts that print a version the way the real tools do, so
the real ShellRunner and tool wrappers can verify what was installed.
"""

from __future__ import annotations

import hashlib
import io
import re
import socket
import stat
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from rich.console import Console

from inferbox.bootstrap.toolinstall import (
    DownloadPolicy,
    ToolOutcome,
    install_tool,
    install_tools,
    outcomes_table,
    version_matches,
)
from inferbox.config import Settings, ToolPin, Tools, Versions
from inferbox.errors import ToolInstallError
from inferbox.runner import RecordingRunner, RetryPolicy, ShellRunner
from inferbox.tools.helm import Helm
from inferbox.tools.kind import Kind
from inferbox.tools.kubectl import Kubectl

# Deliberately not the versions pinned in versions.toml: these are test fixtures only.
KIND_VERSION = "0.99.1"
HELM_VERSION = "9.8.7"
KUBECTL_VERSION = "1.99.3"
LINUX_AMD64 = ("linux", "amd64")
NO_PATH = ""  # search_path with no directories: no PATH binary can be found


def kind_script(version: str) -> bytes:
    return f'#!/bin/sh\necho "kind v{version} go1.25 linux/amd64"\n'.encode()


def helm_script(version: str) -> bytes:
    return f'#!/bin/sh\necho "v{version}"\n'.encode()


def kubectl_script(git_version: str) -> bytes:
    return f"#!/bin/sh\necho '{{\"clientVersion\": {{\"gitVersion\": \"{git_version}\"}}}}'\n".encode()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def targz(entries: dict[str, bytes], *, symlinks: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755
            tar.addfile(info, io.BytesIO(data))
        for name, target in (symlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return buffer.getvalue()


@dataclass
class FakeReleases:
    """Routes of the loopback server; each path answers a queue of (status, body), the last repeating."""

    base: str = ""
    routes: dict[str, list[tuple[int, bytes]]] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)

    def serve(self, path: str, *responses: tuple[int, bytes]) -> str:
        self.routes[path] = list(responses)
        return self.base + path

    def answer(self, path: str) -> tuple[int, bytes]:
        self.requests.append(path)
        queue = self.routes.get(path, [(404, b"not found")])
        return queue.pop(0) if len(queue) > 1 else queue[0]


@pytest.fixture
def releases() -> Iterator[FakeReleases]:
    state = FakeReleases()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = state.answer(self.path)
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:  # keep pytest output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join()


def pin(url: str, version: str, digest: str, *, member: str | None = None,
        platforms: tuple[str, ...] = ("linux-amd64",)) -> ToolPin:
    # model_construct skips validation: the real model insists on https://, and these tests
    # deliberately point at a plain-HTTP loopback server.
    return ToolPin.model_construct(version=version, url=url, archive_member=member,
                                   sha256=dict.fromkeys(platforms, digest))


@pytest.fixture
def runner() -> ShellRunner:
    return ShellRunner(retry=RetryPolicy(attempts=1))


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    return tmp_path / "bin"


def fast_policy(attempts: int = 3) -> DownloadPolicy:
    return DownloadPolicy(timeout_s=5, retry=RetryPolicy(attempts=attempts, first_delay_s=0.01, max_delay_s=0.01))


def install(name: str, tool_pin: ToolPin, bin_dir: Path, runner: ShellRunner, *, search_path: str = NO_PATH,
            pauses: list[float] | None = None, attempts: int = 3) -> ToolOutcome:
    record = pauses if pauses is not None else []
    return install_tool(name, tool_pin, bin_dir, runner, platform=LINUX_AMD64, search_path=search_path,
                        policy=fast_policy(attempts), pause=record.append)


def write_script(path: Path, body: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    path.chmod(0o755)
    return path


# --- downloads ---------------------------------------------------------------------------------


def test_download_is_verified_executable_and_reports_the_pinned_version(releases, runner, bin_dir) -> None:
    body = kind_script(KIND_VERSION)
    url = releases.serve("/kind-linux-amd64", (200, body))

    outcome = install("kind", pin(releases.base + "/kind-{os}-{arch}", KIND_VERSION, sha(body)), bin_dir, runner)

    target = bin_dir / "kind"
    assert outcome == ToolOutcome("kind", f"v{KIND_VERSION}", "downloaded", target, f"from {url}")
    assert target.read_bytes() == body
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    assert Kind(runner, str(target)).version() == f"v{KIND_VERSION}"
    assert releases.requests == ["/kind-linux-amd64"]
    assert sorted(p.name for p in bin_dir.iterdir()) == ["kind"], "no temporary file may be left behind"


def test_checksum_mismatch_raises_and_leaves_nothing_in_bin_dir(releases, runner, bin_dir) -> None:
    body = kind_script(KIND_VERSION)
    url = releases.serve("/kind-linux-amd64", (200, body))
    expected = sha(b"the bytes the pin promised")

    with pytest.raises(ToolInstallError) as caught:
        install("kind", pin(releases.base + "/kind-{os}-{arch}", KIND_VERSION, expected), bin_dir, runner)

    message = str(caught.value)
    for part in ("kind", url, expected, sha(body), "checksum mismatch"):
        assert part in message
    assert list(bin_dir.iterdir()) == []


def test_archive_member_is_extracted(releases, runner, bin_dir) -> None:
    archive = targz({"linux-amd64/LICENSE": b"license text", "linux-amd64/helm": helm_script(HELM_VERSION)})
    releases.serve(f"/helm-v{HELM_VERSION}-linux-amd64.tar.gz", (200, archive))
    helm_pin = pin(releases.base + "/helm-v{version}-{os}-{arch}.tar.gz", HELM_VERSION, sha(archive),
                   member="{os}-{arch}/helm")

    outcome = install("helm", helm_pin, bin_dir, runner)

    assert outcome.action == "downloaded"
    assert Helm(runner, str(bin_dir / "helm")).version() == f"v{HELM_VERSION}"
    assert sorted(p.name for p in bin_dir.iterdir()) == ["helm"]


def test_archive_entries_cannot_escape_bin_dir(releases, runner, tmp_path, bin_dir) -> None:
    archive = targz({"../escaped": b"x", "/tmp/inferbox-absolute-escape": b"x",
                     "./linux-amd64/helm": helm_script(HELM_VERSION)})
    releases.serve("/helm-linux-amd64.tar.gz", (200, archive))
    helm_pin = pin(releases.base + "/helm-{os}-{arch}.tar.gz", HELM_VERSION, sha(archive), member="{os}-{arch}/helm")

    install("helm", helm_pin, bin_dir, runner)

    assert not (tmp_path / "escaped").exists()
    assert not Path("/tmp/inferbox-absolute-escape").exists()
    assert sorted(p.name for p in bin_dir.iterdir()) == ["helm"]


@pytest.mark.parametrize(("archive", "error"), [
    (targz({"linux-amd64/README.md": b"no binary here"}), "not found in the downloaded archive"),
    (targz({}, symlinks={"linux-amd64/helm": "/bin/sh"}), "not a regular file"),
    (b"this is not gzip", "not a readable .tar.gz"),
])
def test_bad_archive_is_refused_and_leaves_nothing(releases, runner, bin_dir, archive, error) -> None:
    releases.serve("/helm-linux-amd64.tar.gz", (200, archive))
    helm_pin = pin(releases.base + "/helm-{os}-{arch}.tar.gz", HELM_VERSION, sha(archive), member="{os}-{arch}/helm")

    with pytest.raises(ToolInstallError, match=re.escape(error)):
        install("helm", helm_pin, bin_dir, runner)
    assert list(bin_dir.iterdir()) == []


def test_member_path_with_dotdot_is_refused(releases, runner, bin_dir) -> None:
    archive = targz({"helm": helm_script(HELM_VERSION)})
    releases.serve("/helm-linux-amd64.tar.gz", (200, archive))
    helm_pin = pin(releases.base + "/helm-{os}-{arch}.tar.gz", HELM_VERSION, sha(archive), member="../{os}/helm")

    with pytest.raises(ToolInstallError, match=re.escape("without '..'")):
        install("helm", helm_pin, bin_dir, runner)
    assert list(bin_dir.iterdir()) == []


def test_binary_reporting_another_version_is_not_installed(releases, runner, bin_dir) -> None:
    body = kind_script("0.1.0")  # checksum matches the pin, version does not: versions.toml is wrong
    releases.serve("/kind-linux-amd64", (200, body))

    with pytest.raises(ToolInstallError, match="inconsistent"):
        install("kind", pin(releases.base + "/kind-{os}-{arch}", KIND_VERSION, sha(body)), bin_dir, runner)
    assert list(bin_dir.iterdir()) == []


def test_platform_without_checksum_is_a_clear_error(releases, runner, bin_dir) -> None:
    body = kind_script(KIND_VERSION)
    kind_pin = pin(releases.base + "/kind-{os}-{arch}", KIND_VERSION, sha(body), platforms=("darwin-arm64",))

    with pytest.raises(ToolInstallError, match=r"no sha256 for platform linux-amd64 \(pinned for: darwin-arm64\)"):
        install("kind", kind_pin, bin_dir, runner)
    assert releases.requests == []


# --- HTTP failures -----------------------------------------------------------------------------


def test_http_404_fails_at_once_with_the_url(releases, runner, bin_dir) -> None:
    url = releases.base + "/kind-linux-amd64"  # no route: the server answers 404
    pauses: list[float] = []

    with pytest.raises(ToolInstallError) as caught:
        install("kind", pin(releases.base + "/kind-{os}-{arch}", KIND_VERSION, "0" * 64), bin_dir, runner,
                pauses=pauses)

    assert "HTTP 404" in str(caught.value)
    assert url in str(caught.value)
    assert releases.requests == ["/kind-linux-amd64"], "a 404 is not retried"
    assert pauses == []
    assert list(bin_dir.iterdir()) == []


def test_http_500_is_retried_a_bounded_number_of_times(releases, runner, bin_dir) -> None:
    releases.serve("/kind-linux-amd64", (500, b"boom"))
    pauses: list[float] = []

    with pytest.raises(ToolInstallError, match=r"failed after 3 attempts: HTTP 500"):
        install("kind", pin(releases.base + "/kind-{os}-{arch}", KIND_VERSION, "0" * 64), bin_dir, runner,
                pauses=pauses, attempts=3)

    assert len(releases.requests) == 3
    assert len(pauses) == 2
    assert list(bin_dir.iterdir()) == []


def test_transient_failure_then_success(releases, runner, bin_dir) -> None:
    body = kind_script(KIND_VERSION)
    releases.serve("/kind-linux-amd64", (503, b"busy"), (200, body))

    outcome = install("kind", pin(releases.base + "/kind-{os}-{arch}", KIND_VERSION, sha(body)), bin_dir, runner)

    assert outcome.action == "downloaded"
    assert len(releases.requests) == 2
    assert sorted(p.name for p in bin_dir.iterdir()) == ["kind"]


def test_connection_refused_is_retried_then_reported(runner, bin_dir) -> None:
    with socket.socket() as probe:  # a loopback port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    pauses: list[float] = []

    with pytest.raises(ToolInstallError, match=r"failed after 2 attempts.*(refused|Connection)"):
        install("kind", pin(f"http://127.0.0.1:{port}/kind-{{os}}-{{arch}}", KIND_VERSION, "0" * 64), bin_dir,
                runner, pauses=pauses, attempts=2)
    assert len(pauses) == 1
    assert list(bin_dir.iterdir()) == []


# --- existing binaries -------------------------------------------------------------------------


def test_already_installed_is_a_no_op(releases, runner, bin_dir) -> None:
    body = kind_script(KIND_VERSION)
    releases.serve("/kind-linux-amd64", (200, body))
    kind_pin = pin(releases.base + "/kind-{os}-{arch}", KIND_VERSION, sha(body))

    install("kind", kind_pin, bin_dir, runner)
    again = install("kind", kind_pin, bin_dir, runner)

    assert again == ToolOutcome("kind", f"v{KIND_VERSION}", "already-installed", bin_dir / "kind")
    assert releases.requests == ["/kind-linux-amd64"], "the second run must not download"


def test_stale_binary_in_bin_dir_is_replaced(releases, runner, bin_dir) -> None:
    write_script(bin_dir / "kind", kind_script("0.1.0"))
    body = kind_script(KIND_VERSION)
    releases.serve("/kind-linux-amd64", (200, body))

    outcome = install("kind", pin(releases.base + "/kind-{os}-{arch}", KIND_VERSION, sha(body)), bin_dir, runner)

    assert outcome.action == "downloaded"
    assert Kind(runner, str(bin_dir / "kind")).version() == f"v{KIND_VERSION}"


def test_path_binary_with_the_pinned_version_is_linked(releases, runner, tmp_path, bin_dir) -> None:
    on_path = write_script(tmp_path / "usr-bin" / "kubectl", kubectl_script(f"v{KUBECTL_VERSION}"))
    kubectl_pin = pin(releases.base + "/kubectl-{os}-{arch}", KUBECTL_VERSION, "0" * 64)

    outcome = install("kubectl", kubectl_pin, bin_dir, runner, search_path=str(on_path.parent))

    target = bin_dir / "kubectl"
    assert outcome == ToolOutcome("kubectl", f"v{KUBECTL_VERSION}", "linked-from-path", target,
                                  f"using PATH binary {on_path} v{KUBECTL_VERSION}")
    assert target.is_symlink()
    assert target.readlink() == on_path
    assert Kubectl(runner, str(target)).version() == f"v{KUBECTL_VERSION}"
    assert releases.requests == []


def test_path_binary_with_another_build_is_not_used(releases, runner, tmp_path, bin_dir) -> None:
    # Same semver core, vendor suffix: a different build, so the pinned release is downloaded.
    on_path = write_script(tmp_path / "usr-bin" / "kubectl", kubectl_script(f"v{KUBECTL_VERSION}-dispatcher"))
    body = kubectl_script(f"v{KUBECTL_VERSION}")
    releases.serve("/kubectl-linux-amd64", (200, body))
    kubectl_pin = pin(releases.base + "/kubectl-{os}-{arch}", KUBECTL_VERSION, sha(body))

    outcome = install("kubectl", kubectl_pin, bin_dir, runner, search_path=str(on_path.parent))

    assert outcome.action == "downloaded"
    assert f"PATH has v{KUBECTL_VERSION}-dispatcher" in outcome.detail
    assert f"pin is v{KUBECTL_VERSION}: downloading" in outcome.detail
    target = bin_dir / "kubectl"
    assert not target.is_symlink()
    assert target.read_bytes() == body
    assert releases.requests == ["/kubectl-linux-amd64"]


def test_bin_dir_on_path_is_not_mistaken_for_a_path_binary(releases, runner, bin_dir) -> None:
    write_script(bin_dir / "kind", kind_script("0.1.0"))
    body = kind_script(KIND_VERSION)
    releases.serve("/kind-linux-amd64", (200, body))

    outcome = install("kind", pin(releases.base + "/kind-{os}-{arch}", KIND_VERSION, sha(body)), bin_dir, runner,
                      search_path=str(bin_dir))

    assert outcome.action == "downloaded"
    assert "PATH has" not in outcome.detail


# --- the task entry point ----------------------------------------------------------------------


def test_install_tools_installs_kind_helm_kubectl_from_settings(releases, runner, tmp_path, bin_dir) -> None:
    kind_body, kubectl_body = kind_script(KIND_VERSION), kubectl_script(f"v{KUBECTL_VERSION}")
    helm_archive = targz({"linux-amd64/helm": helm_script(HELM_VERSION)})
    releases.serve("/kind-linux-amd64", (200, kind_body))
    releases.serve("/kubectl-linux-amd64", (200, kubectl_body))
    releases.serve("/helm-linux-amd64.tar.gz", (200, helm_archive))
    tools = Tools.model_construct(
        kind=pin(releases.base + "/kind-{os}-{arch}", KIND_VERSION, sha(kind_body)),
        helm=pin(releases.base + "/helm-{os}-{arch}.tar.gz", HELM_VERSION, sha(helm_archive),
                 member="{os}-{arch}/helm"),
        kubectl=pin(releases.base + "/kubectl-{os}-{arch}", KUBECTL_VERSION, sha(kubectl_body)),
        minikube=pin(releases.base + "/minikube-{os}-{arch}", "1.0.0", "0" * 64),
    )
    settings = Settings(root=tmp_path, versions=Versions.model_construct(tools=tools), bin_dir=bin_dir)

    outcomes = install_tools(settings, runner, platform=LINUX_AMD64, search_path=NO_PATH, policy=fast_policy())

    assert [(o.tool, o.action) for o in outcomes] == [("kind", "downloaded"), ("helm", "downloaded"),
                                                      ("kubectl", "downloaded")]
    assert "/minikube-linux-amd64" not in releases.requests, "minikube only when asked"
    console = Console(record=True, width=200)
    console.print(outcomes_table(outcomes))
    assert "downloaded" in console.export_text()


def test_install_tools_refuses_a_dry_run_runner(tmp_path) -> None:
    settings = Settings(root=tmp_path, versions=Versions.model_construct(), bin_dir=tmp_path / "bin")
    with pytest.raises(ToolInstallError, match="dry-run"):
        install_tools(settings, RecordingRunner())


# --- version comparison ------------------------------------------------------------------------


@pytest.mark.parametrize(("found", "pinned", "expected"), [
    ("v1.2.3", "1.2.3", True),
    ("1.2.3", "v1.2.3", True),
    (" v1.2.3\n", "1.2.3", True),
    ("v1.2.3-dispatcher", "1.2.3", False),
    ("v1.2.3-eks-1552ad0", "1.2.3", False),
    ("v1.2.4", "1.2.3", False),
    ("v1.2.3-rc.1", "1.2.3-rc.1", True),
    ("v1.2.3", "1.2.3-rc.1", False),
    ("", "1.2.3", False),
])
def test_version_matches(found: str, pinned: str, expected: bool) -> None:
    assert version_matches(found, pinned) is expected

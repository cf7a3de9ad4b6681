"""A local TCP port forwarded to a pod's port, through the API server's ``pods/portforward``.

What ``kubectl port-forward`` does, without a kubectl process: a listener on 127.0.0.1, and for
each connection accepted there a fresh port-forward stream to the pod (the kubernetes client's
``stream.portforward``), with bytes pumped both ways.
It takes the API client from ``inferbox.k8s.Kube.api_client``.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable
from typing import Any

from kubernetes import client as k8s_client
from kubernetes.client.exceptions import ApiException, ApiValueError
from kubernetes.stream import portforward as k8s_portforward

from inferbox.errors import ClusterError, InferboxError

log = logging.getLogger("inferbox.portforward")

# A connected stream to the remote port, and how to close it.
Tunnel = tuple[Any, Callable[[], None]]
Connect = Callable[[], Tunnel]

# kubernetes.stream swaps the ApiClient's transport while it opens a websocket: one at a time.
_STREAM_LOCK = threading.Lock()
_CHUNK = 64 * 1024


class PortInUse(InferboxError):
    """The local port is taken."""


def pod_connector(api_client: Any, namespace: str, pod: str, port: int) -> Connect:
    """Opens a new port-forward stream to ``namespace/pod:port`` per call."""
    core = k8s_client.CoreV1Api(api_client)

    def connect() -> Tunnel:
        try:
            with _STREAM_LOCK:
                forward = k8s_portforward(core.connect_get_namespaced_pod_portforward, pod, namespace,
                                          ports=str(port))
        except (ApiException, ApiValueError, OSError) as exc:
            raise ClusterError(f"port-forward to pod {namespace}/{pod}:{port} failed: "
                               f"{getattr(exc, 'reason', None) or exc}") from exc
        stream = forward.socket(port)
        stream.setblocking(True)
        return stream, forward.close

    return connect


class LocalForward:
    """Listens on ``host:local_port`` (0: any free port) and relays each connection through ``connect``."""

    def __init__(self, connect: Connect, *, local_port: int, host: str = "127.0.0.1", name: str = "") -> None:
        self.connect = connect
        self.host = host
        self.requested_port = local_port
        self.name = name or f"{host}:{local_port}"
        self.port: int | None = None
        self._server: socket.socket | None = None
        self._closed = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> int:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            server.bind((self.host, self.requested_port))
        except OSError as exc:
            server.close()
            raise PortInUse(f"cannot listen on {self.host}:{self.requested_port} for {self.name} ({exc.strerror}): "
                            "choose another local port") from exc
        server.listen(16)
        server.settimeout(0.2)  # the accept loop notices close() within this
        self._server = server
        self.port = int(server.getsockname()[1])
        self._spawn(self._accept_loop, f"forward {self.name}: accept")
        return self.port

    @property
    def url(self) -> str:
        assert self.port is not None, "not started"
        return f"http://{self.host}:{self.port}"

    def close(self) -> None:
        self._closed.set()
        if self._server is not None:
            self._server.close()
        for thread in list(self._threads):
            if thread is not threading.current_thread():
                thread.join(timeout=2)

    def __enter__(self) -> LocalForward:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _spawn(self, target: Callable[..., None], name: str, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def _accept_loop(self) -> None:
        assert self._server is not None
        while not self._closed.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            conn.settimeout(None)
            self._spawn(self._serve, f"forward {self.name}: connection", conn)

    def _serve(self, conn: socket.socket) -> None:
        try:
            remote, close_remote = self.connect()
        except (InferboxError, OSError) as exc:
            log.warning("%s: %s", self.name, exc)
            conn.close()
            return
        done = threading.Event()
        upstream = threading.Thread(target=_pump, args=(conn, remote, done), daemon=True,
                                    name=f"forward {self.name}: up")
        upstream.start()
        _pump(remote, conn, done)
        upstream.join(timeout=5)
        for closer in (conn.close, close_remote):
            with contextlib.suppress(OSError):
                closer()


def _pump(source: Any, sink: Any, done: threading.Event) -> None:
    """Copy until EOF on ``source``, then half-close ``sink``'s sending side."""
    try:
        while not done.is_set():
            data = source.recv(_CHUNK)
            if not data:
                break
            sink.sendall(data)
    except OSError:
        done.set()
    finally:
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

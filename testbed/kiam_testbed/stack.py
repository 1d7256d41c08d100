"""The whole system as real processes: Kubernetes emulator, STS stand-in, server, agent.

Used by the end-to-end tests and by ``kiam demo``. Every command goes through a
:class:`Placement`, so the same code runs the processes on this host (the demo, on
loopback addresses) or inside a test bed's node namespace (``ip netns exec``; the tests
and ``kiam demo --netns``). The processes are the real console commands: ``kiam certs``,
``kiam server`` and ``kiam agent`` with mTLS, ``python -m kiam_testbed.kube`` and
``python -m kiam_testbed.sts``.

Kubernetes objects are created through the emulator's HTTP API by a small Python child run in the
same place as the emulator (from the host, a node namespace's loopback is unreachable):
create the object, then set a pod's IP with a merge patch on the ``/status``
subresource, as a kubelet would.

Synchronous on purpose (like :mod:`kiam_testbed.netns`): starting and stopping processes
is set-up work; asyncio callers use ``asyncio.to_thread``.

:meth:`Stack.close` stops every process :meth:`Stack.spawn` started, last first (SIGTERM,
then SIGKILL after ten seconds): a Ctrl-C or SIGTERM arriving while a child is being
started is held until the child is recorded, so none can escape the clean-up.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from kiam_testbed.commands import (
    aws_test_env,
    isolated_env,
    kiam_command,
    server_args,
    tls_args,
)

_START_TIMEOUT = 30.0
_STOP_TIMEOUT = 10.0


_PR_SET_PDEATHSIG = 1
# Looked up here, in the parent: the child may only call it (no loading after a fork).
_prctl = ctypes.CDLL(None, use_errno=True).prctl


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it when the process that started it dies.

    Whatever kills the demo or a test run (even SIGKILL, which no clean-up sees), the
    stand-ins and daemons it started do not outlive it. ``ip netns exec`` execs the
    command, which keeps the setting. Only an async-signal-safe system call runs
    between fork and exec, which is what makes ``preexec_fn`` safe here.
    """
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


# Run as `python -c` where the processes are: one request described on stdin, the answer
# as JSON on stdout (status 0 when nothing answered).
_HTTP_CHILD = """
import json, sys, urllib.error, urllib.request
spec = json.load(sys.stdin)
headers = dict(spec["headers"])
data = None
if spec["body"] is not None:
    data = spec["body"].encode()
    headers["Content-Type"] = spec["content_type"]
req = urllib.request.Request(spec["url"], data=data, method=spec["method"], headers=headers)
try:
    with urllib.request.urlopen(req, timeout=10) as resp:
        out = {"status": resp.status, "body": resp.read().decode(errors="replace")}
except urllib.error.HTTPError as exc:
    out = {"status": exc.code, "body": exc.read().decode(errors="replace")}
except OSError as exc:
    out = {"status": 0, "body": str(exc)}
json.dump(out, sys.stdout)
"""


class StackError(Exception):
    """A process did not start, did not become ready, or a request to it failed."""


def _identity(argv: Sequence[str]) -> list[str]:
    return list(argv)


@dataclass(frozen=True, kw_only=True)
class Placement:
    """Where the processes run and on which addresses they listen."""

    wrap: Callable[[Sequence[str]], list[str]] = _identity
    """Turns a command into the command that runs it in place (e.g. ``bed.node_argv``)."""
    sts_host: str = "127.0.0.1"
    """Address of the STS stand-in (the bridge address in a bed, so pods reach it)."""
    server_port: int = 9610
    agent_listen: str = "127.0.0.1"
    """The agent's ``--listen-address`` (empty binds every address)."""
    agent_port: int = 3100
    iptables_host: str = ""
    """With an address, the agent runs with ``--iptables --host`` this address."""
    iptables_interface: str = ""
    """The agent's ``--host-interface`` with ``--iptables``."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on ``host`` right now (for processes on this host's own loopback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Process:
    """A started process, its output files, and how to stop it."""

    name: str
    popen: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path

    def first_line(self, *, timeout: float = _START_TIMEOUT) -> str:
        """The first line the process prints (the stand-ins print their URL first)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.stdout_path.read_text(errors="replace")
            if "\n" in text:
                return text.split("\n", 1)[0].strip()
            if self.popen.poll() is not None:
                break
            time.sleep(0.05)
        raise StackError(f"{self.name} printed no first line: {self.diagnostics()}")

    def diagnostics(self) -> str:
        code = self.popen.poll()
        state = "running" if code is None else f"exited {code}"
        tail = self.stderr_path.read_text(errors="replace")[-3000:]
        return f"{self.name} ({state}); stderr tail:\n{tail}"

    def stop(self, *, timeout: float = _STOP_TIMEOUT) -> int:
        """SIGTERM, wait, then SIGKILL; return the exit code."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            try:
                return self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
        return self.popen.wait()


@dataclass(frozen=True, kw_only=True)
class KubeReply:
    status: int
    body: Any


@dataclass
class Stack:
    """Starts the processes in order and stops them all (in reverse) on :meth:`close`."""

    workdir: Path
    placement: Placement = field(default_factory=Placement)
    processes: dict[str, Process] = field(default_factory=dict)
    kube_url: str = ""
    sts_url: str = ""
    kubeconfig: Path = field(init=False)
    certs: Path = field(init=False)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.kubeconfig = self.workdir / "kubeconfig"
        self.certs = self.workdir / "certs"

    # ------------------------------------------------------------ processes

    def spawn(self, name: str, command: Sequence[str], *, env: Mapping[str, str]) -> Process:
        out = self.workdir / f"{name}.out"
        err = self.workdir / f"{name}.err"
        # A Ctrl-C raised inside Popen after the fork would lose the child: it would run on,
        # unrecorded, and close() would never stop it. Hold the signal until it is recorded.
        with _signals_deferred(), out.open("wb") as stdout, err.open("wb") as stderr:
            popen = subprocess.Popen(
                self.placement.wrap(command),
                stdout=stdout,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
                env=dict(env),
                cwd=self.workdir,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 (see _die_with_parent)
            )
            proc = Process(name=name, popen=popen, stdout_path=out, stderr_path=err)
            self.processes[name] = proc
        return proc

    def run(self, command: Sequence[str], *, timeout: float = 30.0) -> str:
        """Run a short command in place; return stdout or raise :class:`StackError`."""
        done = subprocess.run(
            self.placement.wrap(command),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=isolated_env(),
        )
        if done.returncode != 0:
            raise StackError(f"{' '.join(command)}: exit {done.returncode}: {done.stderr}")
        return done.stdout

    def start_kube(self) -> str:
        proc = self.spawn(
            "kube",
            [
                sys.executable,
                "-m",
                "kiam_testbed.kube",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--kubeconfig",
                str(self.kubeconfig),
            ],
            env=isolated_env(),
        )
        self.kube_url = proc.first_line().rstrip("/")
        return self.kube_url

    def start_sts(self) -> str:
        host = self.placement.sts_host
        proc = self.spawn(
            "sts",
            [sys.executable, "-m", "kiam_testbed.sts", "--host", host, "--port", "0"],
            env=isolated_env(),
        )
        self.sts_url = proc.first_line().rstrip("/")
        return self.sts_url

    def make_certs(self) -> Path:
        self.run(_kiam("certs", "--out", str(self.certs)))
        return self.certs

    def start_server(self, *, extra: Sequence[str] = ()) -> Process:
        if not (self.kube_url and self.sts_url):
            raise StackError("start the Kubernetes emulator and the STS stand-in first")
        args = server_args(
            bind=f"127.0.0.1:{self.placement.server_port}",
            kubeconfig=self.kubeconfig,
            sts_url=self.sts_url,
            tls=self._tls("server"),
            extra=("--region", "us-east-1", "--sync", "1m", *extra),
        )
        # Dummy keys for the stand-in, which checks none; never the real metadata service.
        command, env = _kiam(*args), aws_test_env()
        return self.spawn("server", command, env=env)

    def start_agent(self, *, extra: Sequence[str] = ()) -> Process:
        p = self.placement
        args = [
            "agent",
            "--server-address",
            f"127.0.0.1:{p.server_port}",
            "--port",
            str(p.agent_port),
            "--listen-address",
            p.agent_listen,
            *self._tls("agent"),
        ]
        if p.iptables_host:
            args += ["--iptables", "--host", p.iptables_host]
            args += ["--host-interface", p.iptables_interface]
        return self.spawn("agent", _kiam(*args, *extra), env=isolated_env())

    def _tls(self, who: str) -> list[str]:
        c = self.certs
        return tls_args(cert=c / f"{who}.pem", key=c / f"{who}-key.pem", ca=c / "ca.pem")

    @property
    def agent_url(self) -> str:
        host = self.placement.agent_listen or "127.0.0.1"
        return f"http://{host}:{self.placement.agent_port}"

    def wait_agent_ready(self, *, timeout: float = _START_TIMEOUT) -> None:
        """Poll the agent's deep health (agent up and a synced server behind it)."""
        deadline = time.monotonic() + timeout
        url = self.agent_url + "/health?deep=1"
        while time.monotonic() < deadline:
            for name in ("server", "agent"):
                proc = self.processes.get(name)
                if proc is not None and proc.popen.poll() is not None:
                    raise StackError(f"{name} exited while starting: {proc.diagnostics()}")
            status, _ = self.http("GET", url)
            if status == 200:
                return
            time.sleep(0.2)
        details = "\n".join(self.processes[n].diagnostics() for n in ("server", "agent"))
        raise StackError(f"the agent did not become healthy in {timeout}s:\n{details}")

    # ------------------------------------------------------------ HTTP in place

    def http(
        self,
        method: str,
        url: str,
        *,
        body: Any = None,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, str]:
        """One HTTP request made where the processes run; (status, body), status 0 when
        the connection failed. A short Python child makes it, so it works inside a
        namespace the test process cannot reach, and needs no curl."""
        spec = {
            "method": method,
            "url": url,
            "headers": dict(headers or {}),
            "body": None if body is None else json.dumps(body),
            "content_type": content_type,
        }
        done = subprocess.run(
            self.placement.wrap([sys.executable, "-c", _HTTP_CHILD]),
            input=json.dumps(spec),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        try:
            reply = json.loads(done.stdout)
        except ValueError:
            raise StackError(f"HTTP helper failed: {done.stderr.strip()[-1000:]}") from None
        return int(reply["status"]), str(reply["body"])

    def kube(
        self, method: str, path: str, body: Any = None, *, content_type: str = "application/json"
    ) -> KubeReply:
        status, text = self.http(method, self.kube_url + path, body=body, content_type=content_type)
        try:
            doc = json.loads(text) if text else None
        except ValueError:
            doc = text
        return KubeReply(status=status, body=doc)

    def kube_ok(
        self, method: str, path: str, body: Any = None, *, content_type: str = "application/json"
    ) -> Any:
        reply = self.kube(method, path, body, content_type=content_type)
        if not 200 <= reply.status < 300:
            raise StackError(f"{method} {path}: HTTP {reply.status}: {reply.body}")
        return reply.body

    def create_namespace(self, name: str, *, permitted: str | None) -> None:
        annotations = {} if permitted is None else {"iam.amazonaws.com/permitted": permitted}
        self.kube_ok(
            "POST",
            "/api/v1/namespaces",
            {"metadata": {"name": name, "annotations": annotations}},
        )

    def create_pod(
        self,
        namespace: str,
        name: str,
        *,
        ip: str,
        role: str = "",
        session_name: str = "",
        node_name: str = "node-1",
    ) -> None:
        """Create a running pod with ``ip`` (created, then its status set as a kubelet would)."""
        annotations = {}
        if role:
            annotations["iam.amazonaws.com/role"] = role
        if session_name:
            annotations["iam.amazonaws.com/session-name"] = session_name
        pod = {
            "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
            "spec": {"nodeName": node_name, "containers": [{"name": "app", "image": "app:1"}]},
        }
        self.kube_ok("POST", f"/api/v1/namespaces/{namespace}/pods", pod)
        status = {"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}}
        self.kube_ok(
            "PATCH",
            f"/api/v1/namespaces/{namespace}/pods/{name}/status",
            status,
            content_type="application/merge-patch+json",
        )

    def events(self, namespace: str) -> list[dict[str, Any]]:
        doc = self.kube_ok("GET", f"/api/v1/namespaces/{namespace}/events")
        items = doc.get("items", []) if isinstance(doc, dict) else []
        return [i for i in items if isinstance(i, dict)]

    # ------------------------------------------------------------ teardown

    def stop(self, name: str) -> int | None:
        proc = self.processes.get(name)
        return None if proc is None else proc.stop()

    def close(self) -> None:
        """Stop every process, last started first (the agent before the server, ...)."""
        for name in reversed(list(self.processes)):
            self.processes[name].stop()


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM for the duration of the block; act on them at its end.

    Python-level handlers (not a blocked signal mask) so that the child started inside
    the block gets the default dispositions back at exec, and stays stoppable. Only the
    main thread may set handlers; elsewhere the block runs unprotected."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        held.append(signum)

    previous = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for signum in dict.fromkeys(held):
            handler = previous[signal.Signals(signum)]
            if callable(handler):
                handler(signum, None)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(signum)


def _kiam(*args: str) -> list[str]:
    return kiam_command(*args)

"""The whole system as real processes: the stand-ins, ``kiam server``, ``kiam agent``.

The one builder of the test bed's processes, used by the tests, ``kiam demo`` and the
benchmarks. Every command goes through a :class:`Placement`, so the same code runs the
processes on this host (on loopback addresses) or inside a test bed's node namespace
(``ip netns exec``). The processes are the real console commands: ``kiam certs``,
``kiam server`` and ``kiam agent`` with mTLS, and ``python -m kiam_testbed.standins``
(the Kubernetes emulator and the STS stand-in); each is a
:class:`kiam_testbed.child.Child` (log file ``WORKDIR/NAME.log``), recorded before a
Ctrl-C can lose it, and :meth:`Stack.close` stops them all, last first.

The stand-ins are driven by pipe, wherever they run (from the host, a node namespace's
loopback is unreachable): ``stack.kube`` and ``stack.sts`` offer the in-process API of
:class:`~kiam_testbed.kube.KubeEmulator` and :class:`~kiam_testbed.sts.StsStandIn`, each
call made in the stand-ins process (:class:`StandIns`).

Synchronous on purpose: starting and stopping processes is set-up work. Asyncio callers
start from the loop's thread with ``wait=False`` and wait through
:class:`kiam_testbed.child.AsyncChild` (:mod:`kiam_testbed.processes`).
"""

from __future__ import annotations

import json
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from kiam_testbed.child import READY_TIMEOUT, Child, HarnessError, signals_deferred
from kiam_testbed.commands import (
    ROLE_BASE_ARN,
    SERVING,
    aws_test_env,
    isolated_env,
    kiam_command,
    server_args,
    tls_args,
)
from kiam_testbed.netns import Bed

AGENT_READY = "kiam agent ready"
"""``kiam agent``'s log line once every start-up step is done (docs/architecture.md)."""
CALL_TIMEOUT = 900.0
"""Seconds a call into the stand-ins may take unless told (the bulk ones are slow)."""
HTTP_LINES = [sys.executable, "-m", "kiam_testbed.http_lines"]
"""The command that makes HTTP requests in place (:mod:`kiam_testbed.http_lines`)."""


@dataclass(frozen=True, kw_only=True)
class Placement:
    """Where the processes run and on which addresses they listen."""

    wrap: Callable[[Sequence[str]], list[str]] = list
    """Turns a command into the command that runs it in place (e.g. ``bed.node_argv``)."""
    sts_host: str = "127.0.0.1"
    """Address of the STS stand-in (the bridge address in a bed, so pods reach it)."""
    server_port: int = 9610
    agent_listen: str = "127.0.0.1"
    """The agent's ``--listen-address`` (empty binds every address)."""
    agent_port: int = 3100
    """Port 0: the agent picks one (see ``tests.agent.standins.AgentProcess``)."""
    iptables_host: str = ""
    """With an address, the agent runs with ``--iptables --host`` this address."""
    iptables_interface: str = ""
    """The agent's ``--host-interface`` with ``--iptables``."""


def node_placement(bed: Bed) -> Placement:
    """Everything in the bed's node namespace; pods reach the agent through the real DNAT
    rule (on the bridge) and the STS stand-in on the bridge address."""
    return Placement(
        wrap=bed.node_argv,
        sts_host=bed.bridge_ip,
        agent_listen="",
        iptables_host=bed.bridge_ip,
        iptables_interface=bed.bridge,
    )


EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
"""Where the kernel picks the ports of port-0 listeners and outgoing connections."""
_LOWEST_PICKED = 20000
_HANDED_OUT: set[int] = set()


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` different ports free on ``host`` right now, for processes on this host's
    own loopback that must be told their port before they start.

    Drawn below the kernel's ephemeral range: a port the kernel handed out (to a port-0
    listener or an outgoing connection, any process's) could be taken again between
    this check and the process binding it (a metrics port once was, in CI). Nor is a
    port handed out twice by this process, so ports chosen one at a time for processes
    not started yet are different too."""
    low = int(EPHEMERAL_RANGE.read_text().split()[0]) if EPHEMERAL_RANGE.exists() else 32768
    if low - _LOWEST_PICKED < 1000:
        raise HarnessError(f"the ephemeral range starts at {low}: no room below it for "
                           f"the test bed's ports (it draws from {_LOWEST_PICKED})")
    picked: list[int] = []
    candidates = [port for port in range(_LOWEST_PICKED, low) if port not in _HANDED_OUT]
    for port in random.sample(candidates, k=len(candidates)):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
        picked.append(port)
        if len(picked) == count:
            _HANDED_OUT.update(picked)
            return picked
    raise HarnessError(f"no {count} free ports on {host} in {_LOWEST_PICKED}-{low - 1}")


def free_port(host: str = "127.0.0.1") -> int:
    """One port of :func:`free_ports`."""
    return free_ports(1, host)[0]


def loopback_placement() -> Placement:
    """Server and agent on this host, on two ports free on 127.0.0.1 right now."""
    server, agent = free_ports(2)
    return Placement(server_port=server, agent_port=agent)


@dataclass(eq=False)
class StandIns:
    """The stand-ins process (:mod:`kiam_testbed.standins`): its URLs, and calls into it."""

    child: Child
    kube_url: str = ""
    sts_url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def started(cls, child: Child) -> StandIns:
        """Wait for the URLs ``child`` prints once it serves."""
        standins = cls(child)
        first = standins._read()
        standins.kube_url, standins.sts_url = str(first["kube"]), str(first["sts"])
        return standins

    def _read(self) -> dict[str, Any]:
        assert self.child.popen.stdout is not None  # started with pipes
        if not (line := self.child.popen.stdout.readline()):
            raise HarnessError(f"the stand-ins ended: {self.child.diagnostics()}")
        reply: dict[str, Any] = orjson.loads(line)
        return reply

    def call(self, target: str, method: str, args: Sequence[Any] = (),
             kwargs: Mapping[str, Any] | None = None, *, timeout: float = CALL_TIMEOUT) -> Any:
        """``target.method(*args, **kwargs)`` in the stand-ins process, within
        ``timeout`` seconds; its result, as JSON. HarnessError with its error when it
        raised. Safe from several threads."""
        call = orjson.dumps({"target": target, "method": method, "args": args,
                             "kwargs": kwargs or {}, "timeout": timeout}) + b"\n"
        assert self.child.popen.stdin is not None  # started with pipes
        with self._lock:
            try:
                self.child.popen.stdin.write(call)
                self.child.popen.stdin.flush()
            except OSError:
                raise HarnessError(f"the stand-ins ended: {self.child.diagnostics()}") from None
            reply = self._read()
        if "error" in reply:
            raise HarnessError(f"{target}.{method}: {reply['error']}")
        return reply["result"]


class Remote:
    """One target of the stand-ins process, called as if it were here:
    ``stack.kube.create_pod("team", "web", ip="10.0.0.5")``. Public methods only: a
    property (``resource_version``) is not a call, and its error says so."""

    def __init__(self, standins: StandIns, target: str, timeout: float) -> None:
        self._standins, self._target, self._timeout = standins, target, timeout

    def __getattr__(self, method: str) -> Callable[..., Any]:
        if method.startswith("_"):
            raise AttributeError(method)

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._standins.call(self._target, method, args, kwargs, timeout=self._timeout)

        return call


class Stack:
    """Starts the processes in order and stops them all (in reverse) on :meth:`close`.

    Given ``kube_url``/``sts_url``, ``kubeconfig`` and ``certs``: stand-ins and
    certificates that exist already (the server suite's in-process stand-ins); another
    stack's, its stand-ins process too: :meth:`sibling`."""

    def __init__(
        self,
        workdir: Path,
        placement: Placement | None = None,
        *,
        kube_url: str = "",
        sts_url: str = "",
        kubeconfig: Path | None = None,
        certs: Path | None = None,
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.placement = placement or Placement()
        self.kube_url, self.sts_url = kube_url, sts_url
        self.kubeconfig = kubeconfig or workdir / "kubeconfig"
        self.certs = certs or workdir / "certs"
        """A ``kiam certs --out`` directory."""
        self.processes: dict[str, Child] = {}
        self.standins: StandIns | None = None

    def sibling(self, workdir: Path, placement: Placement) -> Stack:
        """Another stack on this one's stand-ins and certificates (a second server)."""
        other = Stack(workdir, placement, kube_url=self.kube_url, sts_url=self.sts_url,
                      kubeconfig=self.kubeconfig, certs=self.certs)
        other.standins = self.standins
        return other

    # ------------------------------------------------------------ processes

    def spawn(self, name: str, command: Sequence[str], *, env: Mapping[str, str],
              cwd: Path | None = None, pipes: bool = False) -> Child:
        """Start ``command`` in place as the child ``name`` (working directory: the
        stack's, unless ``cwd``; ``pipes``: see :meth:`Child.start`)."""
        # A Ctrl-C between the start and the record would lose the child: held until then.
        with signals_deferred():
            child = Child.start(name, self.placement.wrap(command), env=env, pipes=pipes,
                                log_path=self.workdir / f"{name}.log", cwd=cwd or self.workdir)
            self.processes[name] = child
        return child

    def run(self, command: Sequence[str], *, timeout: float = 30.0) -> str:
        """Run a short command in place; return stdout or raise :class:`HarnessError`."""
        done = subprocess.run(self.placement.wrap(command), capture_output=True, text=True,
                              timeout=timeout, check=False, env=isolated_env())
        if done.returncode != 0:
            raise HarnessError(f"{' '.join(command)}: exit {done.returncode}: {done.stderr}")
        return done.stdout

    def start_standins(self, *args: str, module: str = "kiam_testbed.standins",
                       cwd: Path | None = None) -> StandIns:
        """The Kubernetes emulator (writing :attr:`kubeconfig`) and, unless ``--no-sts``
        is among ``args``, the STS stand-in on the placement's ``sts_host``; ``module``
        adds targets (``bench.standins``)."""
        command = [sys.executable, "-m", module, "--kubeconfig", str(self.kubeconfig),
                   "--sts-host", self.placement.sts_host, *args]
        child = self.spawn("standins", command, env=isolated_env(), cwd=cwd, pipes=True)
        self.standins = StandIns.started(child)
        self.kube_url, self.sts_url = self.standins.kube_url, self.standins.sts_url
        return self.standins

    def remote(self, target: str, *, timeout: float = CALL_TIMEOUT) -> Remote:
        """The stand-ins process's ``target``; each call within ``timeout`` seconds."""
        if self.standins is None:
            raise HarnessError("start the stand-ins first (Stack.start_standins)")
        return Remote(self.standins, target, timeout)

    @property
    def kube(self) -> Remote:
        """The emulator's :class:`~kiam_testbed.kube.KubeEmulator` API, by pipe."""
        return self.remote("kube")

    @property
    def sts(self) -> Remote:
        """The STS stand-in's :class:`~kiam_testbed.sts.StsStandIn` API, by pipe."""
        return self.remote("sts")

    def make_certs(self) -> Path:
        self.run(kiam_command("certs", "--out", str(self.certs)))
        return self.certs

    def start_server(
        self,
        *,
        extra: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        base_arn: str = ROLE_BASE_ARN,
        wait: bool = True,
    ) -> Child:
        """``kiam server`` against the stand-ins, once it listens (``wait=False``: the
        caller waits for :data:`SERVING` itself, e.g. without blocking an event loop).

        ``base_arn=""`` leaves ``--role-base-arn`` out; ``env`` adds to the environment."""
        if not (self.kubeconfig.exists() and self.sts_url):
            raise HarnessError("start the Kubernetes emulator and the STS stand-in first")
        args = server_args(
            bind=f"127.0.0.1:{self.placement.server_port}",
            kubeconfig=self.kubeconfig,
            sts_url=self.sts_url,
            tls=self._tls("server"),
            base_arn=base_arn,
            extra=("--region", "us-east-1", "--sync", "1m", *extra),
        )
        server = self.spawn("server", kiam_command(*args), env=aws_test_env(**(env or {})))
        if wait:
            server.wait_for(SERVING)
        return server

    def start_agent(self, *, extra: Sequence[str] = ()) -> Child:
        """``kiam agent`` in front of this stack's server (``extra`` comes last, so a
        ``--server-address`` in it wins)."""
        p = self.placement
        args = ["agent", "--server-address", f"127.0.0.1:{p.server_port}",
                "--port", str(p.agent_port), "--listen-address", p.agent_listen,
                *self._tls("agent")]
        if p.iptables_host:
            args += ["--iptables", "--host", p.iptables_host]
            args += ["--host-interface", p.iptables_interface]
        return self.spawn("agent", kiam_command(*args, *extra), env=isolated_env())

    def _tls(self, who: str) -> list[str]:
        c = self.certs
        return tls_args(cert=c / f"{who}.pem", key=c / f"{who}-key.pem", ca=c / "ca.pem")

    @property
    def agent_url(self) -> str:
        host = self.placement.agent_listen or "127.0.0.1"
        return f"http://{host}:{self.placement.agent_port}"

    def wait_agent_ready(self, *, timeout: float = READY_TIMEOUT) -> None:
        """Until the agent is ready for pods: it has logged ``kiam agent ready`` (every
        start-up step done: the DNAT rule with ``--iptables``, the token credentials
        endpoint with ``--token-credentials``) and its deep health answers 200 (a synced
        server behind it).

        Health alone would not do: the agent listens before its later start-up steps, so
        a pod's first request could run before the rule exists."""
        server, agent = self.processes["server"], self.processes["agent"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for child in (server, agent):
                if child.returncode is not None:
                    raise HarnessError(f"exited while starting: {child.diagnostics()}")
            if (agent.check_ready(AGENT_READY) is not None
                    and self.http("GET", self.agent_url + "/health?deep=1")[0] == 200):
                return
            time.sleep(0.2)
        details = "\n".join(c.diagnostics() for c in (server, agent))
        raise HarnessError(f"the agent did not become ready in {timeout}s:\n{details}")

    # ------------------------------------------------------------ in place

    def http(self, method: str, url: str, *, body: Any = None,
             content_type: str = "application/json") -> tuple[int, str]:
        """One HTTP request made where the processes run; (status, body), status 0 when
        the connection failed. :mod:`kiam_testbed.http_lines` makes it, so it works
        inside a namespace the test process cannot reach, and needs no curl."""
        spec = {"method": method, "url": url, "content_type": content_type,
                "body": None if body is None else json.dumps(body)}
        done = subprocess.run(self.placement.wrap(HTTP_LINES), input=json.dumps(spec) + "\n",
                              capture_output=True, text=True, timeout=30, check=False)
        try:
            status, text = json.loads(done.stdout)
        except ValueError:
            raise HarnessError(f"HTTP helper failed: {done.stderr.strip()[-1000:]}") from None
        return int(status), str(text)

    def create_namespace(self, name: str, *, permitted: str | None) -> None:
        annotations = {} if permitted is None else {"iam.amazonaws.com/permitted": permitted}
        self.kube.create_namespace(name, annotations=annotations)

    def create_pod(self, namespace: str, name: str, *, ip: str, role: str = "",
                   session_name: str = "", node_name: str = "node-1") -> None:
        """Create a running pod with ``ip``, annotated with ``role`` and ``session_name``."""
        names = {"role": role, "session-name": session_name}
        annotations = {f"iam.amazonaws.com/{key}": value for key, value in names.items() if value}
        self.kube.create_pod(namespace, name, ip=ip, annotations=annotations,
                             node_name=node_name)

    # ------------------------------------------------------------ teardown

    def stop(self, name: str) -> int | None:
        proc = self.processes.get(name)
        return None if proc is None else proc.stop()

    def close(self) -> None:
        """Stop every process, last started first (the agent before the server, ...)."""
        for name in reversed(list(self.processes)):
            self.processes[name].stop()

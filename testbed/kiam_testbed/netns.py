"""Network-namespace test bed: a "node" namespace with a bridge, and "pod" namespaces on it.

Root only. Layout (``<id>`` is random per bed, so parallel runs never share names)::

    node netns  kiamt<id>n   lo up, bridge kbr<id> = 10.A.B.1/24, the node ends of the veths
    pod netns   kiamt<id>p0  lo up, eth0 = 10.A.B.10/24, default route via 10.A.B.1
    pod netns   kiamt<id>p1  ...

Nothing is ever configured in the host's own namespace: the veth pairs are created with
both ends already inside the bed's namespaces, so the host's interfaces, addresses and
iptables stay untouched, and traffic from a pod can only reach the node namespace.
Processes (the Kubernetes emulator, the STS stand-in, ``kiam server``, ``kiam agent``)
run inside the node namespace through ``ip netns exec``; the agent's DNAT rule goes into
the node namespace's nat table.

Teardown kills every process still inside the bed's namespaces, deletes the veths
explicitly (``ip netns del`` only drops the name; the kernel tears the namespace down
asynchronously, and a veth end kept alive by a lingering process would outlive it), then
deletes the namespaces and checks that nothing is left. Each bed records its owner's PID
in :data:`STATE_DIR`, so :func:`cleanup_leftovers` removes only the beds of processes that
are gone (a crashed earlier run), never those of a run still going.

The API is synchronous on purpose: it only runs ``ip`` commands at set-up and teardown
(asyncio callers use ``asyncio.to_thread``), and pytest's module-scoped fixtures are
simplest when synchronous.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

PREFIX = "kiamt"
"""Every namespace of a bed is named ``kiamt<id>n`` (node) or ``kiamt<id>p<i>`` (pod)."""
BRIDGE_PREFIX = "kbr"
VETH_PREFIX = "kv"
STATE_DIR = Path(tempfile.gettempdir()) / "kiam-netns"
"""One ``<id>.owner`` file per live bed: the owner's PID and the subnet. The directory
goes when its last bed does."""

_NAME_RE = re.compile(rf"^{PREFIX}([0-9a-f]{{6}})(n|p\d+)$")
_COMMAND_TIMEOUT = 20.0
_MAX_PODS = 200


class NetnsError(Exception):
    """An ``ip``/``iptables`` command failed, or teardown left something behind."""


def unavailable_reason() -> str | None:
    """Why the bed cannot be built here (``None`` when it can): root, iproute2, iptables."""
    if os.geteuid() != 0:
        return "the network-namespace test bed needs root (and iproute2, iptables)"
    for tool, package in (("ip", "iproute2"), ("iptables", "iptables")):
        if shutil.which(tool) is None:
            return f"the network-namespace test bed needs {tool!r} (Debian package {package})"
    return None


@dataclass(frozen=True, kw_only=True)
class PodNetns:
    """One "pod": its namespace name and address."""

    name: str
    ip: str

    def argv(self, command: Sequence[str]) -> list[str]:
        """``command`` run inside this pod's namespace."""
        return ["ip", "netns", "exec", self.name, *command]


@dataclass(frozen=True, kw_only=True)
class Bed:
    """A node namespace with a bridge and the pod namespaces joined to it."""

    bed_id: str
    node: str
    """The node namespace's name."""
    bridge: str
    """The bridge interface inside the node namespace (the agent's ``--host-interface``)."""
    bridge_ip: str
    """The node's address on the bridge (the agent's ``--host``; the pods' default route)."""
    subnet: str
    pods: tuple[PodNetns, ...]

    def node_argv(self, command: Sequence[str]) -> list[str]:
        """``command`` run inside the node namespace."""
        return ["ip", "netns", "exec", self.node, *command]

    @property
    def namespaces(self) -> tuple[str, ...]:
        return (self.node, *(p.name for p in self.pods))


# ---------------------------------------------------------------- commands


def run(argv: Sequence[str], *, check: bool = True, timeout: float = _COMMAND_TIMEOUT) -> str:
    """Run a command, return its stdout; a failure raises :class:`NetnsError` with stderr."""
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetnsError(f"{' '.join(argv)}: {exc}") from None
    if check and done.returncode != 0:
        raise NetnsError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def list_namespaces() -> list[str]:
    # `ip netns list` prints "name (id: 3)" for namespaces that have an id.
    return [line.split()[0] for line in run(["ip", "netns", "list"]).splitlines() if line.strip()]


def namespace_pids(name: str) -> list[int]:
    out = run(["ip", "netns", "pids", name], check=False)
    return [int(word) for word in out.split() if word.isdigit()]


# ---------------------------------------------------------------- subnets


def _used_networks() -> list[ipaddress.IPv4Network]:
    """Networks on the host's routes and addresses, and those of other live beds."""
    used: list[ipaddress.IPv4Network] = []
    out = run(["ip", "-4", "-o", "addr", "show"], check=False)
    out += run(["ip", "-4", "route", "show", "table", "all"], check=False)
    for word in re.findall(r"\b\d+\.\d+\.\d+\.\d+(?:/\d+)?\b", out):
        with contextlib.suppress(ValueError):
            net = ipaddress.IPv4Network(word, strict=False)
            if net.prefixlen > 0:  # a default route overlaps everything and says nothing
                used.append(net)
    if STATE_DIR.is_dir():
        for owner in STATE_DIR.glob("*.owner"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                used.append(ipaddress.IPv4Network(owner.read_text().split()[1]))
    return used


def pick_subnet(rng: random.Random | None = None) -> ipaddress.IPv4Network:
    """A random 10.A.B.0/24 that overlaps nothing the host or another bed uses."""
    rng = rng or random.Random()
    used = _used_networks()
    for _ in range(200):
        net = ipaddress.IPv4Network(f"10.{rng.randrange(256)}.{rng.randrange(256)}.0/24")
        if not any(net.overlaps(u) for u in used):
            return net
    raise NetnsError("no free 10.x.y.0/24 subnet found for the test bed")


# ---------------------------------------------------------------- build


def _owner_file(bed_id: str) -> Path:
    return STATE_DIR / f"{bed_id}.owner"


def create_bed(*, pods: int = 3) -> Bed:
    """Build a bed with ``pods`` pod namespaces; on any failure, tear down what was built."""
    if not 1 <= pods <= _MAX_PODS:
        raise ValueError(f"pods must be 1-{_MAX_PODS}")
    reason = unavailable_reason()
    if reason:
        raise NetnsError(reason)
    bed_id = secrets.token_hex(3)
    net = pick_subnet()
    hosts = list(net.hosts())
    bed = Bed(
        bed_id=bed_id,
        node=f"{PREFIX}{bed_id}n",
        bridge=f"{BRIDGE_PREFIX}{bed_id}",
        bridge_ip=str(hosts[0]),
        subnet=str(net),
        pods=tuple(
            PodNetns(name=f"{PREFIX}{bed_id}p{i}", ip=str(hosts[9 + i])) for i in range(pods)
        ),
    )
    _write_owner(bed_id, f"{os.getpid()} {net}\n")
    try:
        _build(bed, prefix_len=net.prefixlen)
    except BaseException:
        destroy_bed(bed)
        raise
    return bed


def _write_owner(bed_id: str, text: str) -> None:
    # Another bed's teardown may remove the (then empty) state directory between our
    # mkdir and the write: make it again.
    for _ in range(5):
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        try:
            _owner_file(bed_id).write_text(text)
            return
        except FileNotFoundError:
            continue
    raise NetnsError(f"cannot record the test bed's owner in {STATE_DIR}")


def _forget_owner(bed_id: str) -> None:
    """Remove the bed's owner file, and the state directory once no bed is left in it."""
    with contextlib.suppress(FileNotFoundError):
        _owner_file(bed_id).unlink()
    with contextlib.suppress(OSError):  # not empty: another bed is alive
        STATE_DIR.rmdir()


def _build(bed: Bed, *, prefix_len: int) -> None:
    node = bed.node
    run(["ip", "netns", "add", node])
    run(["ip", "-n", node, "link", "set", "lo", "up"])
    run(["ip", "-n", node, "link", "add", bed.bridge, "type", "bridge"])
    run(["ip", "-n", node, "addr", "add", f"{bed.bridge_ip}/{prefix_len}", "dev", bed.bridge])
    run(["ip", "-n", node, "link", "set", bed.bridge, "up"])
    for index, pod in enumerate(bed.pods):
        veth = f"{VETH_PREFIX}{bed.bed_id}p{index}"
        run(["ip", "netns", "add", pod.name])
        run(["ip", "-n", pod.name, "link", "set", "lo", "up"])
        # Both ends are born inside the bed's namespaces: the host never sees them.
        peer = ["peer", "name", "eth0", "netns", pod.name]
        run(["ip", "-n", node, "link", "add", veth, "type", "veth", *peer])
        run(["ip", "-n", node, "link", "set", veth, "master", bed.bridge, "up"])
        run(["ip", "-n", pod.name, "addr", "add", f"{pod.ip}/{prefix_len}", "dev", "eth0"])
        run(["ip", "-n", pod.name, "link", "set", "eth0", "up"])
        run(["ip", "-n", pod.name, "route", "add", "default", "via", bed.bridge_ip])


# ---------------------------------------------------------------- teardown


def _kill_all(namespaces: Sequence[str], *, grace: float = 5.0) -> list[int]:
    """SIGTERM every process inside the namespaces, then SIGKILL what is still there.

    Returns the PIDs that survived even SIGKILL (none, unless a process is stuck in the
    kernel)."""
    existing = set(list_namespaces())
    names = [n for n in namespaces if n in existing]

    def alive() -> set[int]:
        return {pid for name in names for pid in namespace_pids(name)}

    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        pids = alive()
        if not pids:
            return []
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and alive():
            time.sleep(0.05)
    return sorted(alive())


def _delete_namespaces(bed_id: str, namespaces: Sequence[str]) -> None:
    existing = set(list_namespaces())
    node = f"{PREFIX}{bed_id}n"
    if node in existing:
        links = run(["ip", "-n", node, "-o", "link", "show"], check=False)
        for veth in re.findall(rf"\b({VETH_PREFIX}{bed_id}p\d+)@", links):
            run(["ip", "-n", node, "link", "del", veth], check=False)
        run(["ip", "-n", node, "link", "del", f"{BRIDGE_PREFIX}{bed_id}"], check=False)
    for name in namespaces:
        if name in existing:
            run(["ip", "netns", "del", name], check=False)


def destroy_bed(bed: Bed) -> None:
    """Kill the bed's processes, delete veths, bridge and namespaces; check none is left."""
    survivors = _kill_all(bed.namespaces)
    _delete_namespaces(bed.bed_id, bed.namespaces)
    left = [n for n in list_namespaces() if n in bed.namespaces]
    _forget_owner(bed.bed_id)
    if left or survivors:
        raise NetnsError(
            f"test bed {bed.bed_id}: left behind: namespaces {left}, processes {survivors}"
        )


def _owner_alive(bed_id: str) -> bool:
    try:
        pid = int(_owner_file(bed_id).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup_leftovers() -> list[str]:
    """Remove the namespaces of beds whose owner process is gone; return their names."""
    if unavailable_reason():
        return []
    beds: dict[str, list[str]] = {}
    for name in list_namespaces():
        if match := _NAME_RE.match(name):
            beds.setdefault(match.group(1), []).append(name)
    removed: list[str] = []
    for bed_id, names in beds.items():
        if _owner_alive(bed_id):
            continue
        _kill_all(names)
        _delete_namespaces(bed_id, names)
        _forget_owner(bed_id)
        removed.extend(names)
    if STATE_DIR.is_dir():
        for owner in STATE_DIR.glob("*.owner"):
            if not _owner_alive(owner.stem):
                _forget_owner(owner.stem)
    return removed


@contextlib.contextmanager
def network_bed(*, pods: int = 3) -> Iterator[Bed]:
    """A bed for the duration of a ``with`` block (leftovers of crashed runs removed first)."""
    cleanup_leftovers()
    bed = create_bed(pods=pods)
    try:
        yield bed
    finally:
        destroy_bed(bed)

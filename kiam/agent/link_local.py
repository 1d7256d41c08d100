"""The dummy interface that holds the container credentials addresses on the node.

The AWS SDKs send token credentials requests in plain HTTP only to loopback,
``169.254.170.23`` and ``fd00:ec2::23`` (docs/token-credentials.md, "On the agent"). A
pod reaches such an address through its default route to the node, so the node must
own it: the agent (hostNetwork, NET_ADMIN) puts the addresses on a dummy interface of
its own, as it adds its DNAT rule, and removes the interface at shutdown::

    ip link add kiam0 type dummy        # "type bridge" where the kernel has no dummy driver
    ip link set kiam0 alias kiam-token-credentials
    ip addr replace 169.254.170.23/32 dev kiam0
    ip addr replace fd00:ec2::23/128 dev kiam0 nodad
    ip link set kiam0 up

A bridge with no ports holds local addresses as a dummy interface does; some kernels
(e.g. Firecracker guests) are built without the dummy driver. Only an interface with the
alias :data:`ALIAS` is ever changed or removed, so a mistyped
``--token-credentials-interface eth0`` cannot take the node off the network. Commands
run as asyncio subprocesses of iproute2's ``ip``, as :mod:`kiam.agent.iptables` runs
iptables (no library wraps netlink for asyncio without a daemon of its own); failures
become :class:`InterfaceError` with ``ip``'s own words.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence

from kiam.agent.host_tools import find_tool, run_tool

log = logging.getLogger(__name__)


ALIAS = "kiam-token-credentials"
"""The mark of an interface the agent made (``ip link show`` prints it)."""
_KINDS = ("dummy", "bridge")


class InterfaceError(Exception):
    """``ip`` is missing, or refused a command (the message says which and why)."""


class LinkLocalInterface:
    """One dummy interface with the endpoint's addresses."""

    def __init__(self, name: str, addresses: Sequence[str], *, binary: str = "ip") -> None:
        self._binary = find_tool(
            binary,
            error=InterfaceError,
            hint="install iproute2 in the image, or give --token-credentials-interface '' "
            "and put the addresses on the node yourself",
        )
        self.name = name
        self.addresses = tuple(dict.fromkeys(addresses))

    async def _run(self, *args: str) -> tuple[int, str, str]:
        done = await run_tool(self._binary, list(args), error=InterfaceError)
        return done.code, done.out, done.err

    async def owned(self) -> bool | None:
        """True: ours (it has :data:`ALIAS`); False: another interface; None: none."""
        code, out, _ = await self._run("-o", "link", "show", "dev", self.name)
        if code != 0:
            return None
        # one line; the alias is its own field, "alias <text>", after a "\\" separator
        return f"alias {ALIAS}" in out

    async def _create(self) -> None:
        errors: list[str] = []
        for kind in _KINDS:
            code, _, err = await self._run("link", "add", self.name, "type", kind)
            if code == 0:
                if kind != _KINDS[0]:
                    log.info(
                        "no dummy interfaces in this kernel; an empty bridge holds the "
                        "addresses instead",
                        extra={"fields": {"interface": self.name}},
                    )
                break
            errors.append(f"{kind}: {err}")
        else:
            raise InterfaceError(f"ip could not add interface {self.name}: {'; '.join(errors)}")
        code, _, err = await self._run("link", "set", self.name, "alias", ALIAS)
        if code != 0:
            await self._run("link", "del", self.name)
            raise InterfaceError(f"ip could not mark interface {self.name}: {err}")

    async def add(self) -> tuple[str, ...]:
        """Create the interface (unless ours is there) and give it the addresses; those
        it holds afterwards. An IPv6 address on a node without IPv6 is left out with a
        warning; anything else ``ip`` refuses is an :class:`InterfaceError`."""
        owned = await self.owned()
        if owned is None:
            await self._create()
        elif not owned:
            raise InterfaceError(
                f"interface {self.name} exists and was not made by kiam: choose another "
                "--token-credentials-interface"
            )
        held: list[str] = []
        for address in self.addresses:
            version = ipaddress.ip_address(address).version
            prefix = f"{address}/{32 if version == 4 else 128}"
            extra = ("nodad",) if version == 6 else ()
            code, _, err = await self._run("addr", "replace", prefix, "dev", self.name, *extra)
            if code != 0:
                if version == 6:
                    log.warning(
                        "cannot add the IPv6 token credentials address; serving IPv4 only",
                        extra={"fields": {"address": address, "error": err}},
                    )
                    continue
                raise InterfaceError(f"ip could not add {prefix} to {self.name}: {err}")
            held.append(address)
        code, _, err = await self._run("link", "set", self.name, "up")
        if code != 0:
            raise InterfaceError(f"ip could not bring {self.name} up: {err}")
        log.info(
            "token credentials interface ready",
            extra={"fields": {"interface": self.name, "addresses": ",".join(held)}},
        )
        return tuple(held)

    async def remove(self) -> bool:
        """Delete the interface if it is there and ours; True when it went."""
        owned = await self.owned()
        if not owned:
            if owned is not None:
                log.warning(
                    "not removing an interface kiam did not make",
                    extra={"fields": {"interface": self.name}},
                )
            return False
        code, _, err = await self._run("link", "del", self.name)
        if code != 0:
            raise InterfaceError(f"ip could not delete interface {self.name}: {err}")
        log.info("removed token credentials interface", extra={"fields": {"interface": self.name}})
        return True


__all__ = ["InterfaceError", "LinkLocalInterface"]

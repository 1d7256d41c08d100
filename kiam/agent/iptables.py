"""The DNAT rule that sends pods' metadata traffic to the agent.

    iptables -w 5 -t nat -A PREROUTING -p tcp -d 169.254.169.254 --dport 80 \\
        [!] -i IFACE -j DNAT --to-destination HOST:PORT

``--host-interface`` ``!eth0`` inverts the interface match and ``cali+`` is iptables'
own prefix wildcard, passed through unchanged. Adding checks first (``-C``) so a
restarted agent does not stack duplicates; removing deletes every copy. ``-w`` waits
for the xtables lock other agents (kube-proxy, CNI plugins) hold. Commands run as
asyncio subprocesses; failures become :class:`IptablesError` with iptables' own words.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass

from kiam.agent.host_tools import find_tool, run_tool

log = logging.getLogger(__name__)

METADATA_IP = "169.254.169.254"
METADATA_PORT = 80
TABLE = "nat"
CHAIN = "PREROUTING"
LOCK_WAIT_SECONDS = 5


class IptablesError(Exception):
    """iptables is missing, or refused a command (the message says which and why)."""


@dataclass(frozen=True, kw_only=True)
class DnatRule:
    host: str
    """DNAT destination: this node's IPv4 address."""
    port: int
    """The agent's HTTP port."""
    interface: str
    """``docker0``, ``!eth0`` (anything but eth0) or ``cali+`` (prefix); empty matches any."""

    def __post_init__(self) -> None:
        try:
            address = ipaddress.ip_address(self.host)
        except ValueError:
            raise IptablesError(f"--host {self.host!r} is not an IP address") from None
        if address.version != 4:
            raise IptablesError(f"--host {self.host}: the metadata address is IPv4, so is --host")
        if not 0 < self.port < 65536:
            raise IptablesError(f"port {self.port} is not a valid DNAT port")
        name = self.interface.removeprefix("!")
        if self.interface.startswith("!") and not name:
            raise IptablesError("--host-interface '!' names no interface")
        if any(ch.isspace() for ch in self.interface):
            raise IptablesError(f"--host-interface {self.interface!r} contains whitespace")

    def spec(self) -> list[str]:
        """The rule's match and target, without the table, chain or command."""
        args = ["-p", "tcp", "-d", METADATA_IP, "--dport", str(METADATA_PORT)]
        if self.interface.startswith("!"):
            args += ["!", "-i", self.interface[1:]]
        elif self.interface:
            args += ["-i", self.interface]
        args += ["-j", "DNAT", "--to-destination", f"{self.host}:{self.port}"]
        return args

    def command(self, action: str) -> list[str]:
        """Arguments after the binary, e.g. ``command("-C")``."""
        return ["-w", str(LOCK_WAIT_SECONDS), "-t", TABLE, action, CHAIN, *self.spec()]


class Iptables:
    """Runs the rule's commands with the ``iptables`` binary found on PATH."""

    def __init__(self, *, binary: str = "iptables") -> None:
        self._binary = find_tool(
            binary,
            error=IptablesError,
            hint="install iptables in the image or run without --iptables",
        )

    async def _run(self, args: list[str]) -> tuple[int, str]:
        done = await run_tool(self._binary, args, error=IptablesError)
        return done.code, done.err

    async def exists(self, rule: DnatRule) -> bool:
        # -C exits 1 when no such rule exists; real errors resurface on -A or -D
        code, _ = await self._run(rule.command("-C"))
        return code == 0

    async def add(self, rule: DnatRule) -> bool:
        """Append the rule unless it is there already; True when it was added."""
        if await self.exists(rule):
            log.info("iptables rule already present", extra={"fields": _fields(rule)})
            return False
        code, err = await self._run(rule.command("-A"))
        if code != 0:
            raise IptablesError(f"iptables could not add the DNAT rule: {err or f'exit {code}'}")
        log.info("added iptables rule", extra={"fields": _fields(rule)})
        return True

    async def remove(self, rule: DnatRule) -> int:
        """Delete every copy of the rule; return how many went."""
        removed = 0
        while await self.exists(rule):
            code, err = await self._run(rule.command("-D"))
            if code != 0:
                raise IptablesError(
                    f"iptables could not delete the DNAT rule: {err or f'exit {code}'}"
                )
            removed += 1
        log.info("removed iptables rule", extra={"fields": {**_fields(rule), "copies": removed}})
        return removed


def _fields(rule: DnatRule) -> dict[str, object]:
    return {"rule": " ".join(rule.spec())}

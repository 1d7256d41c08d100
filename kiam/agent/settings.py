"""Settings of ``kiam agent``: one field per flag, Kiam's names and defaults."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from kiam.common.flags import (
    SettingsError,
    at_least,
    duration,
    flag,
    nested,
    port_number,
    regexp,
)
from kiam.common.net import split_host_port
from kiam.common.settings import DaemonSettings, KeepaliveSettings, ServerConnection

TOKEN_CREDENTIALS_LISTEN = "169.254.170.23:80,[fd00:ec2::23]:80"
"""The addresses the AWS SDKs accept for a plain-HTTP container credentials endpoint
(docs/token-credentials.md, "On the agent")."""


def listen_addresses(text: str) -> tuple[tuple[str, int], ...]:
    """``ip:port,[ip6]:port`` -> the (ip, port) pairs; SettingsError naming the bad one."""
    found: list[tuple[str, int]] = []
    for entry in text.split(","):
        if not entry.strip():
            continue
        try:
            host, port = split_host_port(entry)
            address = ipaddress.ip_address(host)
        except ValueError as exc:
            raise SettingsError(f"--token-credentials-listen {entry.strip()!r}: {exc}") from None
        found.append((str(address), port))
    if not found:
        raise SettingsError("--token-credentials-listen names no address")
    return tuple(found)


@dataclass(frozen=True, kw_only=True)
class AgentSettings(DaemonSettings, ServerConnection):
    keepalive: KeepaliveSettings = field(default_factory=KeepaliveSettings, metadata=nested())
    port: int = flag(3100, "HTTP port (0 picks a free port)", parse=port_number)
    listen_address: str = flag(
        "", "address to bind the HTTP port on; empty binds every address, IPv4 and IPv6"
    )
    allow_ip_query: bool = flag(
        False, "allow ?ip= to override the caller address (development only)"
    )
    allow_route_regexp: str = flag(
        "^$",
        "metadata paths matching this are proxied to the real IMDS",
        aliases=("whitelist-route-regexp",),
        parse=regexp,
    )
    """Searched (unanchored, as Go Kiam) in the whole normalised path, version segment
    included: ``^/latest/meta-data/placement/availability-zone$``; other paths 404."""
    iptables: bool = flag(False, "add the DNAT rule for 169.254.169.254:80")
    iptables_remove: bool = flag(True, "remove the DNAT rule at shutdown")
    iptables_cleanup: bool = flag(
        False, "remove a leftover DNAT rule (and the token credentials interface) and exit"
    )
    host: str = flag(
        "", "this node's IP, the DNAT destination (env HOST_IP)", env="HOST_IP"
    )
    host_interface: str = flag(
        "docker0", "interface pod traffic arrives on (!eth0 inverts, cali+ is a prefix)"
    )
    imdsv2: str = flag(
        "optional",
        "whether token-less IMDSv1 requests are still served",
        choices=("optional", "required"),
    )
    pod_max_in_flight: int = flag(
        32, "requests one pod may have unanswered at once; more get 429 (0: no limit)",
        parse=at_least(0),
    )
    """Per caller address (docs/architecture.md, "Fairness between pods"). An SDK asks
    one request at a time per process, so a pod reaches 32 only with 32 processes
    fetching credentials at the same instant."""
    pod_rate: int = flag(
        100, "requests per second one pod is answered at, sustained; more get 429 (0: no limit)",
        parse=at_least(0),
    )
    """Per caller address. An SDK that caches credentials asks a few times an hour; a CLI
    in a loop makes about three requests per invocation, some ten a second."""
    pod_burst: int = flag(
        200, "requests a quiet pod may make at once before --pod-rate applies", parse=at_least(1)
    )
    """The token bucket's size: a pod that was quiet may make this many at once."""

    node_name: str = flag(
        "",
        "this node's name, whose pods the agent follows from the servers' node stream "
        "(env NODE_NAME; empty: every answer comes from an RPC)",
        env="NODE_NAME",
    )
    """``spec.nodeName`` through the downward API (docs/architecture.md, "The node
    replica"): the agent then answers from the replica the servers keep current."""
    session_refresh: float = flag(
        300.0,
        "never answer credentials from the node replica or the token cache with this "
        "little left (the server's --session-refresh default)",
        parse=duration,
    )
    """Credentials in the replica or the token answers with this long or less before
    expiry are asked of a server instead, which refreshes them; keep it at the servers'
    --session-refresh."""
    token_credentials: bool = flag(
        False,
        "serve the container credentials endpoint (GET /v1/credentials with the pod's "
        "service-account token) on --token-credentials-listen",
    )
    """docs/token-credentials.md, "On the agent"."""
    token_credentials_listen: str = flag(
        TOKEN_CREDENTIALS_LISTEN,
        "comma-separated ip:port the container credentials endpoint listens on "
        "(port 0 picks a free port)",
    )
    token_credentials_interface: str = flag(
        "kiam0",
        "dummy interface the agent creates with the --token-credentials-listen addresses "
        "and removes at shutdown (empty: the addresses are already on the node)",
    )

    @property
    def token_listen(self) -> tuple[tuple[str, int], ...]:
        """--token-credentials-listen, parsed."""
        return listen_addresses(self.token_credentials_listen)

    def __post_init__(self) -> None:
        if (self.iptables or self.iptables_cleanup) and not self.host:
            raise SettingsError("--host (or env HOST_IP) is required with --iptables")
        if self.token_credentials:
            listen_addresses(self.token_credentials_listen)  # refused here, with the reason
        name = self.token_credentials_interface
        if name and (len(name) > 15 or not name.isascii() or any(c in name for c in "/: \t\n")):
            raise SettingsError(
                f"--token-credentials-interface {name!r} is not an interface name "
                "(at most 15 characters, no '/', ':' or spaces)"
            )


__all__ = ["AgentSettings"]

"""Settings of ``kiam agent``: one field per flag, Kiam's names and defaults."""

from __future__ import annotations

from dataclasses import dataclass, field

from kiam.common.settings import KeepaliveSettings, LogSettings, TLSSettings


@dataclass(frozen=True, kw_only=True)
class AgentSettings:
    tls: TLSSettings
    log: LogSettings = field(default_factory=LogSettings)
    keepalive: KeepaliveSettings = field(default_factory=KeepaliveSettings)
    port: int = 3100
    """HTTP port the metadata proxy listens on."""
    listen_address: str = ""
    """Address the metadata proxy binds; empty binds every address, IPv4 and IPv6 (pods
    reach it through the DNAT rule)."""
    allow_ip_query: bool = False
    """Development only: ``?ip=`` overrides the caller's address."""
    allow_route_regexp: str = "^$"
    """Normalised metadata paths matching this are proxied to the real IMDS; others 404.

    Searched (unanchored, as Go Kiam) in the whole path, version segment included:
    ``^/latest/meta-data/placement/availability-zone$``."""
    iptables: bool = False
    """Install the DNAT rule for 169.254.169.254:80 at start."""
    iptables_remove: bool = True
    """Remove the DNAT rule on shutdown."""
    iptables_cleanup: bool = False
    """Remove a leftover DNAT rule and exit."""
    host: str = ""
    """This node's IP, the DNAT destination (env HOST_IP). Required with --iptables."""
    host_interface: str = "docker0"
    """Interface pod traffic arrives on; ``!eth0`` inverts, ``cali+`` is a prefix match."""
    server_address: str = "localhost:9610"
    """Server(s): ``host:port``, a DNS name with several addresses, or a comma-separated list."""
    gateway_timeout_creation: float = 1.0
    """Seconds to wait for the first connection to a server at start."""
    prometheus_listen_addr: str = ""
    """``host:port`` for /metrics; empty disables."""
    imdsv2: str = "optional"
    """``optional`` serves token-less v1 requests too; ``required`` answers them 401."""
    metadata_endpoint: str = "http://169.254.169.254"
    """The real IMDS, for allow-listed proxied paths."""

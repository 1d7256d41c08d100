"""Addresses as operators write them (``host:port``, ``[::1]:9610``, ``:9620``) and pod
IPs in the one form every layer compares them in.

An IP is normalised once, where it enters (a pod's status from the API, the ``ip`` of a
request, an HTTP peer address), by :func:`normalise_ip`; everything after that takes a
:data:`PodIP` and compares it as it is.
"""

from __future__ import annotations

import ipaddress
from typing import NewType

PodIP = NewType("PodIP", str)
"""An IP in :func:`normalise_ip`'s canonical text."""


def split_host_port(text: str, *, default_port: int | None = None) -> tuple[str, int]:
    """Split ``host:port`` (IPv6 in brackets); an empty host means every address.

    Raises ValueError with the reason for anything else.
    """
    value = text.strip()
    if not value:
        raise ValueError("empty address")
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            raise ValueError(f"address {text!r}: missing ']'")
        host, rest = value[1:end], value[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError(f"address {text!r}: expected ':port' after ']'")
        port_text = rest[1:] if rest else ""
    elif value.count(":") == 1:
        host, port_text = value.split(":")
    elif value.count(":") == 0:
        host, port_text = value, ""
    else:
        # a bare IPv6 address without a port
        ipaddress.IPv6Address(value)
        host, port_text = value, ""
    if not port_text:
        if default_port is None:
            raise ValueError(f"address {text!r}: missing port")
        return host, default_port
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"address {text!r}: invalid port {port_text!r}")
    return host, int(port_text)


def join_host_port(host: str, port: int) -> str:
    """Inverse of :func:`split_host_port`: brackets IPv6 literals."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def normalise_ip(text: str) -> PodIP:
    """Canonical text of an IP: IPv4-mapped IPv6 (``::ffff:10.0.0.1``) becomes IPv4.

    Raises ValueError for anything that is not an IP address.
    """
    address = ipaddress.ip_address(text.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return PodIP(str(address.ipv4_mapped))
    return PodIP(str(address))

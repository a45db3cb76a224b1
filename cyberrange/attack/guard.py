"""The containment guard: no attack packet may leave the twin's address space.

Every playbook step passes through :func:`check_targets` twice: in the runner (parent side,
before the agent is even started) and again in the agent inside the actor's namespace, right
before the first packet (defence in depth: a bug in target resolution or a hand-written agent
request still cannot aim at the outside world).

A target is an IPv4 address, ``ip:port`` or a CIDR. It is refused when it is not entirely inside
one of the allowed networks (the twin's zone subnets), and always when it is loopback, multicast,
the limited broadcast 255.255.255.255, the unspecified address 0.0.0.0, the broadcast address of
an allowed subnet (a sweep of it would fan out to every host), or a CIDR larger than /16.
"""
from __future__ import annotations

import ipaddress
from typing import Iterable

from cyberrange.errors import ContainmentError

MAX_PREFIX = 16          # a CIDR target may be at most a /16 (65534 hosts)
MIN_ALLOWED_PREFIX = 8   # an "allowed" network wider than a /8 is a bug in the topology


def parse_target(target: str) -> tuple[ipaddress.IPv4Network, int | None]:
    """``"10.0.0.1"``, ``"10.0.0.1:22"`` or ``"10.0.0.0/24"`` -> (network, port or None).

    Raises ValueError for anything else (names, IPv6, bad ports)."""
    text = str(target).strip()
    port = None
    if "/" in text:
        net = ipaddress.IPv4Network(text, strict=False)
        return net, None
    if text.count(":") == 1:
        text, port_text = text.split(":")
        port = int(port_text)
        if not 0 < port < 65536:
            raise ValueError(f"port {port} out of range")
    ip = ipaddress.IPv4Address(text)
    return ipaddress.IPv4Network(f"{ip}/32"), port


def _refusal(target: str, net: ipaddress.IPv4Network,
             allowed: list[ipaddress.IPv4Network]) -> str | None:
    """Why ``target`` must not be attacked, or None if it may."""
    first = net.network_address
    if net.prefixlen < MAX_PREFIX:
        return f"is a /{net.prefixlen}, larger than a /{MAX_PREFIX} (too big to sweep)"
    if first.is_loopback or net.overlaps(ipaddress.IPv4Network("127.0.0.0/8")):
        return "is a loopback address"
    if first.is_multicast or net.overlaps(ipaddress.IPv4Network("224.0.0.0/4")):
        return "is a multicast address"
    if ipaddress.IPv4Address("255.255.255.255") in net:
        return "is the limited broadcast address"
    if ipaddress.IPv4Address("0.0.0.0") in net:
        return "is the unspecified address 0.0.0.0"
    inside = [a for a in allowed if net.subnet_of(a)]
    if not inside:
        return "is outside the twin"
    if net.prefixlen == 32:
        for a in inside:
            if a.prefixlen <= 30 and first == a.broadcast_address:
                return f"is the broadcast address of {a}"
    return None


def check_targets(targets: Iterable[str], allowed: Iterable, step: str | None = None) -> None:
    """Raise ContainmentError unless every target lies inside ``allowed``.

    ``allowed`` holds IPv4Network objects (or CIDR strings); ``step`` names the playbook step for
    the message. Nothing is sent by this function; the caller sends nothing when it raises."""
    allowed_nets = [ipaddress.IPv4Network(a, strict=False) if not isinstance(a, ipaddress.IPv4Network)
                    else a for a in allowed]
    where = f"step '{step}': " if step else ""
    shown = ", ".join(str(a) for a in allowed_nets) or "nothing"
    for a in allowed_nets:
        if a.prefixlen < MIN_ALLOWED_PREFIX:
            raise ContainmentError(
                f"{where}the twin's address space contains {a}, wider than a /{MIN_ALLOWED_PREFIX}; "
                f"refusing to attack anything; nothing was sent")
    for target in targets:
        try:
            net, _port = parse_target(target)
        except ValueError as exc:
            raise ContainmentError(
                f"{where}target {target!r} is not an IPv4 address, ip:port or CIDR ({exc}); "
                f"nothing was sent") from None
        why = _refusal(str(target), net, allowed_nets)
        if why:
            raise ContainmentError(
                f"{where}target {target} {why} (allowed: {shown}); nothing was sent")

"""What every loading stage shares: the :class:`Context` it is handed, the defaults of
``defaults.yaml``, and the parsers of addresses and networks that several stages use."""
from __future__ import annotations

import ipaddress
from functools import cache
from pathlib import Path

from cyberrange.model.topology import Interface, Node, Topology, Zone
from cyberrange.model.yamlsrc import Doc, load_yaml

DEFAULTS_FILE = Path(__file__).resolve().parent.parent / "defaults.yaml"


@cache
def defaults() -> dict:
    """The loader's defaults (``model/defaults.yaml``), read once per process."""
    return load_yaml(DEFAULTS_FILE).data


class Context:
    """The one object passed from stage to stage, as netlab passes its topology.

    ``doc`` is the YAML document with the position of every key and value (errors point there);
    ``topo`` is the model being built (None until the ``topology`` stage makes it). The other
    attributes are what one stage leaves for a later one."""

    def __init__(self, doc: Doc):
        self.doc = doc
        self.topo: Topology | None = None
        self.defaults = defaults()
        self.includes: list[str] = []        # files merged in by ``includes``, in merge order
        # switch name -> {vlan id: zone name}, for zones that share a VLAN-aware switch
        self.switches: dict[str, dict[int, str]] = {}
        # next address to try per (zone, first offset): addresses are only ever taken, so the
        # lowest free one never moves down and default addressing stays linear
        self.cursor: dict[tuple[str, int], int] = {}
        # ip -> (owner description, path) for "used twice" errors
        self.used: dict[ipaddress.IPv4Address, tuple[str, tuple]] = {}
        # interfaces still waiting for an address: (node, interface, path of the yaml item)
        self.pending_router: list[tuple[Node, Interface, tuple]] = []
        self.pending_host: list[tuple[Node, Interface, tuple]] = []

    @property
    def v2(self) -> bool:
        """Format version 2 (or later): includes, blocks, VLANs, missions, ..."""
        return self.doc.data["version"] >= 2

    def use(self, ip, owner: str, path) -> None:
        """Take ``ip`` for ``owner``; an address already taken is an error that says by whom."""
        if ip in self.used:
            other, other_path = self.used[ip]
            raise self.doc.error(f"address {ip} is already used by {other} "
                                 f"({self.doc.line_of(other_path, path)})", path)
        self.used[ip] = (owner, path)

    def zone_path(self, z: Zone) -> tuple:
        """Where a zone was written: ``zones.<name>``, or for a link's zone ``links.<index>``."""
        if z.p2p:
            i = next(i for i, l in enumerate(self.doc.data["links"]) if l["name"] == z.name)
            return ("links", i)
        return ("zones", z.name)


def parse_network(doc: Doc, path, what: str = "subnet") -> ipaddress.IPv4Network:
    """A strict IPv4 CIDR: a prefix length is required and host bits must be zero."""
    text = doc.get(path)
    if "/" not in str(text):
        raise doc.error(f"{what} '{text}' needs a prefix length, e.g. {text}/24", path)
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError as e:
        raise doc.error(f"bad {what} '{text}': {e}", path) from None
    if net.version != 4:
        raise doc.error(f"{what} '{text}' is not IPv4 (the twin is IPv4 only)", path)
    if net.network_address != ipaddress.ip_interface(text).ip:
        raise doc.error(f"{what} '{text}' has host bits set (did you mean {net}?)", path)
    return net


def parse_address(doc: Doc, path, what: str = "ip") -> ipaddress.IPv4Address:
    text = doc.get(path)
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise doc.error(f"bad {what} '{text}': not an IPv4 address", path) from None
    if ip.version != 4:
        raise doc.error(f"{what} '{text}' is not IPv4 (the twin is IPv4 only)", path)
    return ip


def usable(net: ipaddress.IPv4Network) -> list[ipaddress.IPv4Address]:
    return list(net.hosts())

"""Which containerlab kinds are routers, firewalls, hosts or bridges, and which role a host
plays (docs/containerlab-import.md has the table)."""
from __future__ import annotations

import re
from fnmatch import fnmatchcase

from cyberrange.model.topology import NODE_KINDS, ROLES

# containerlab kind (glob, lower case) -> our kind; the first match wins. Firewalls before the
# routers (``vr-pan`` before ``vr-*``). Kinds nobody lists here import as hosts, with a note.
KIND_MAP: list[tuple[str, str]] = [
    ("bridge", "bridge"), ("ovs-bridge", "bridge"),
    ("fortinet_*", "firewall"), ("vr-fortios", "firewall"), ("vr-forti*", "firewall"),
    ("paloalto_*", "firewall"), ("vr-pan", "firewall"), ("vr-paloalto*", "firewall"),
    ("juniper_vsrx", "firewall"), ("vr-vsrx", "firewall"), ("vr-juniper_vsrx", "firewall"),
    ("checkpoint_*", "firewall"), ("cisco_ftdv", "firewall"), ("vr-ftdv", "firewall"),
    ("cisco_asav", "firewall"), ("vr-asav", "firewall"),
    ("srl", "router"), ("nokia_*", "router"), ("ceos", "router"), ("arista_*", "router"),
    ("crpd", "router"), ("juniper_*", "router"), ("vr-*", "router"), ("vr_*", "router"),
    ("frr", "router"), ("sonic*", "router"), ("dell_*", "router"), ("cisco_*", "router"),
    ("xrd", "router"), ("cvx", "router"), ("cumulus_cvx", "router"), ("vyos*", "router"),
    ("openbsd", "router"), ("freebsd", "router"), ("mikrotik_*", "router"),
    ("huawei_*", "router"), ("ipinfusion_*", "router"), ("6wind_*", "router"),
    ("fdio_vpp", "router"), ("rare", "router"), ("aruba_*", "router"), ("generic_vm", "host"),
    ("linux", "host"), ("host", "host"), ("ext-container", "host"), ("k8s-kind", "host"),
    ("keysight_ixia-c*", "host"), ("ostinato", "host"),
]

ROLE_HINTS: list[tuple[str, str]] = [
    ("c2", "c2-server"), ("web", "web-server"), ("www", "web-server"), ("dns", "dns-server"),
    ("mail", "mail-server"), ("smtp", "mail-server"), ("dc", "domain-controller"),
    ("ad", "domain-controller"), ("file", "file-server"), ("nas", "file-server"),
    ("print", "printer"), ("hmi", "hmi"), ("plc", "plc"), ("radio", "radio-gateway"),
    ("srv", "server"), ("server", "server"), ("db", "server"),
]

ROUTER_IMAGES = ("frr", "vyos", "bird", "quagga", "openbgpd", "gobgp")
ROLE_LABELS = ("cyberrange.role", "role", "graph-role")

def clab_kind(kind: str, spec: dict | None = None) -> str:
    """Our kind for a clab node (``host``, ``router``, ``firewall`` or ``bridge``): by its
    kind; a role label ``router``/``firewall`` wins; an end system with a routing-suite image
    (FRR, VyOS, BIRD, ...) is a router."""
    spec = spec or {}
    labels = spec.get("labels") or {}
    for key in ("cyberrange.role", "role"):
        if forwards(labels.get(key)):
            return labels[key]
    ours = known_kind(kind) or "host"
    image = str(spec.get("image", "")).lower().rsplit("/", 1)[-1]
    if end_system(ours) and any(image.startswith(r) for r in ROUTER_IMAGES):
        return "router"
    return ours


def known_kind(kind: str) -> str | None:
    """Our kind for a containerlab kind name, None when :data:`KIND_MAP` does not know it."""
    k = str(kind).lower()
    return next((ours for pattern, ours in KIND_MAP if fnmatchcase(k, pattern)), None)


def forwards(kind) -> bool:
    """Our kind ``kind`` forwards (a router or firewall); a clab bridge is no node kind of ours."""
    return isinstance(kind, str) and kind in NODE_KINDS and NODE_KINDS[kind].forwards


def end_system(kind) -> bool:
    return isinstance(kind, str) and kind in NODE_KINDS and NODE_KINDS[kind].end_system


def host_role(name: str, labels: dict) -> str:
    """A host's role: its role label when it is one of ours, else a hint in its name, else
    ``workstation``."""
    for key in ROLE_LABELS:
        if labels.get(key) in ROLES:
            return labels[key]
    words = re.split(r"[^a-z0-9]+", name.lower())
    for hint, role in ROLE_HINTS:
        if any(w == hint or w.startswith(hint) for w in words):
            return role
    return "workstation"

"""Generate a brigade-like topology of about N nodes, for scale tests and benchmarks.

Shape: a brigade core router with the brigade main command post (C2, DNS, mail, file servers,
staff) and a DMZ; one firewall per battalion, joined to the core by a WAN, SATCOM or radio link;
behind each battalion firewall a battalion CP zone (servers) and company LANs of about 40 hosts.
Every battalion firewall has a handful of ordered rules, one of which names a single admin
workstation and one a /27 inside a company LAN, so address classes split some zones, as in real
rule bases. Up to 1,000 nodes the text is format version 1; above, version 2 (v1 allows at most
1,000 nodes), which also carries crown jewels, entry points and mission threads; for a v1 text,
:func:`annotate` sets those on the loaded model.
"""
from __future__ import annotations

import random

import yaml

HOSTS_PER_ZONE = 40
LINK_PROFILES = ("wan", "satcom-geo", "radio")


def generate(n_nodes: int, seed: int = 1, version: int | None = None) -> str:
    """YAML text of a topology with about ``n_nodes`` nodes (hosts, routers, firewalls).

    ``version`` 1 (the default up to 1,000 nodes, format v1's limit) or 2 (the default above;
    it adds crown jewels, entry points and mission threads to the text)."""
    version = version or (1 if n_nodes <= 1000 else 2)
    rnd = random.Random(seed)
    n_zones = max(3, round(n_nodes / HOSTS_PER_ZONE))
    bde_zones = 2                                    # brigade CP and DMZ
    per_bn = 5                                       # zones behind one battalion firewall
    n_bn = max(1, -(-(n_zones - bde_zones) // per_bn))
    hosts_total = n_nodes - 1 - n_bn                 # minus core router and battalion firewalls
    zones: dict = {}
    nodes: list = []
    links: list = []
    zone_names: list[str] = []

    zones["bde-cp"] = {"subnet": "10.0.1.0/24", "classification": "SECRET",
                       "description": "Brigade main command post", "profile": "lan"}
    zones["bde-dmz"] = {"subnet": "10.0.2.0/24", "classification": "UNCLASSIFIED",
                        "description": "Brigade DMZ", "profile": "lan"}
    zone_names += ["bde-cp", "bde-dmz"]
    core_ifaces = [{"zone": "bde-cp"}, {"zone": "bde-dmz"}]
    bn_zones: dict[int, list[str]] = {}
    for b in range(1, n_bn + 1):
        names = []
        for k in range(per_bn):
            zname = f"bn{b}-cp" if k == 0 else f"bn{b}-coy{k}"
            if len(zone_names) >= n_zones and k > 0:
                break
            zones[zname] = {"subnet": f"10.{b}.{k}.0/24",
                            "classification": "SECRET" if k == 0 else "CONFIDENTIAL",
                            "profile": "lan"}
            zone_names.append(zname)
            names.append(zname)
        bn_zones[b] = names
        links.append({"name": f"bn{b}-uplink", "endpoints": ["bde-core", f"bn{b}-fw"],
                      "subnet": f"172.16.{b // 64}.{(b % 64) * 4}/30",
                      "profile": LINK_PROFILES[b % len(LINK_PROFILES)]})

    # hosts, spread evenly over the zones
    per_zone = {z: hosts_total // len(zone_names) for z in zone_names}
    for z in zone_names[: hosts_total - sum(per_zone.values())]:
        per_zone[z] += 1
    for z in zone_names:
        count = per_zone[z]
        for h in range(count):
            node = {"name": f"{z}-h{h + 1}", "kind": "host", "zone": z}
            if z == "bde-cp" and h < 4:
                node["name"], node["role"], svcs = [
                    ("bde-c2", "c2-server", [{"type": "http", "port": 8080},
                                             {"type": "login", "port": 22}]),
                    ("bde-dns", "dns-server", [{"type": "dns", "port": 53}]),
                    ("bde-mail", "mail-server", [{"type": "login", "port": 2222}]),
                    ("bde-files", "file-server", [{"type": "login", "port": 22}]),
                ][h]
                node["services"] = svcs
            elif z == "bde-dmz" and h < 2:
                node["name"], node["role"] = f"dmz-web{h + 1}", "web-server"
                node["services"] = [{"type": "http", "port": 80}]
            elif z.endswith("-cp") and h < 3:
                node["name"], node["role"], svcs = [
                    (f"{z}-c2", "c2-server", [{"type": "http", "port": 8080},
                                              {"type": "login", "port": 22}]),
                    (f"{z}-files", "file-server", [{"type": "login", "port": 22}]),
                    (f"{z}-admin", "workstation", [{"type": "login", "port": 22}]),
                ][h]
                node["services"] = svcs
            elif h == 0:
                node["role"] = "server"
                node["services"] = [{"type": "http", "port": 80}]
            else:
                node["role"] = "workstation"
                if rnd.random() < 0.1:
                    node["services"] = [{"type": "login", "port": 22}]
            nodes.append(node)

    nodes.append({"name": "bde-core", "kind": "router", "interfaces": core_ifaces})
    for b, names in bn_zones.items():
        coys = [z for z in names if "-coy" in z]
        rules = [
            {"action": "allow", "from": "bde-cp", "to": "any", "comment": "brigade CP reaches all"},
            {"action": "allow", "from": f"bn{b}-cp-admin", "to": "any", "proto": "tcp", "port": 22,
             "comment": "battalion admin workstation"},
            {"action": "allow", "from": coys or f"bn{b}-cp", "to": f"bn{b}-cp-c2", "proto": "tcp",
             "port": 8080, "comment": "COP clients"},
            {"action": "allow", "from": "any", "to": "bde-dns", "proto": "udp", "port": 53},
            {"action": "allow", "from": "any", "to": "any", "proto": "icmp"},
            {"action": "deny", "from": "any", "to": f"bn{b}-cp", "proto": "tcp", "port": 22,
             "comment": "no SSH into the battalion CP"},
            {"action": "allow", "from": [f"bn{b}-cp", *coys], "to": ["bde-cp", "bde-dmz"],
             "proto": "tcp", "port": [80, 8080], "comment": "web to brigade"},
        ]
        if coys:
            rules.append({"action": "allow", "from": f"10.{b}.1.0/27", "to": "bde-files",
                          "proto": "tcp", "port": 22, "comment": "1st company signals cell"})
        nodes.append({"name": f"bn{b}-fw", "kind": "firewall",
                      "interfaces": [{"zone": z} for z in names], "default": "deny",
                      "rules": rules})
    doc = {
        "version": version, "name": f"gen-{n_nodes}",
        "classification": "SECRET",
        "description": f"Generated brigade-like topology, about {n_nodes} nodes, seed {seed}",
        "domain": "bde.mil",
        "profiles": {"lan": {"bandwidth": 100}, "wan": {"bandwidth": 20, "delay": 10},
                     "satcom-geo": {"bandwidth": 4, "delay": 550, "jitter": 20, "loss": 0.5},
                     "radio": {"bandwidth": 2, "delay": 60, "jitter": 10, "loss": 1}},
        "zones": zones, "links": links, "nodes": nodes,
        "sensors": [{"name": "bde-span", "zone": "bde-cp"}],
        "benign": {"enabled": False},
    }
    if version >= 2:
        last_coy = [z for z in zone_names if "-coy" in z][-1:] or zone_names[-1:]
        entry = [n["name"] for n in nodes if n.get("zone") in last_coy][-1:]
        doc["crown_jewels"] = ["bde-c2", "bde-files"]
        doc["entry_points"] = entry
        doc["missions"] = {"cop": "bn1-coy* -> bn1-cp-c2 tcp/8080",
                           "dns": "bn1-coy1-h* -> bde-dns udp/53"}
    header = (f"# Generated by cyberrange.model.generate.generate({n_nodes}, seed={seed}).\n"
              f"# A brigade core router, {n_bn} battalion firewalls on WAN/SATCOM/radio uplinks,\n"
              f"# {len(zone_names)} zones of about {HOSTS_PER_ZONE} hosts.\n")
    return header + yaml.safe_dump(doc, sort_keys=False, width=120)


def annotate(topo) -> None:
    """Set the v2 fields the v1 text cannot hold: crown jewels, entry points, mission threads."""
    from cyberrange.model.topology import MissionThread

    topo.crown_jewels = [n for n in ("bde-c2", "bde-files") if n in topo.nodes]
    coys = sorted(z for z in topo.zones if "-coy" in z)
    far = coys[-1] if coys else next(iter(topo.zones))
    topo.entry_points = [n.name for n in topo.hosts if n.interfaces[0].zone == far][-1:]
    cps = sorted(n.name for n in topo.hosts if n.name.endswith("-cp-c2"))
    coy_hosts = [n.name for n in topo.hosts if n.interfaces[0].zone.startswith("bn1-coy")]
    topo.missions = {
        "cop": MissionThread("cop", coy_hosts, cps[:1], "tcp", 8080,
                             "companies reach their battalion COP"),
        "dns": MissionThread("dns", [h.name for h in topo.hosts][:500], ["bde-dns"], "udp", 53),
    }

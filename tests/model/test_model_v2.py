"""Topology format version 2: built-in profiles, VLANs and trunks, multi-interface hosts, static
routes by hand, blocks and instances, includes, software, mission threads, crown jewels, scale.

``tests/data/v2/good/full.yaml`` uses every feature once; each ``tests/data/v2/bad/*.yaml`` starts
with ``# expect: [FILE:]LINE: substring`` (FILE relative to the bad file, when the error belongs
in an included file) and must give exactly that one-line error, from the library and from the
real CLI (exit 2, no traceback).
"""
from __future__ import annotations

import ipaddress
import re
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest
from helpers import ROOT

from cyberrange.errors import UserError
from cyberrange.model.loader import (
    builtin_profiles,
    load_topology,
    parse_bandwidth,
    topology_schema,
)
from cyberrange.model.routing import router_path
from cyberrange.model.yamlsrc import parse_yaml

V2 = ROOT / "tests" / "data" / "v2"
FULL = V2 / "good" / "full.yaml"
BAD = sorted((V2 / "bad").glob("*.yaml"))
ip = ipaddress.ip_address
net = ipaddress.ip_network


@pytest.fixture(scope="module")
def full():
    return load_topology(FULL)


def names(nodes):
    return [n.name for n in nodes]


# -- the good file ---------------------------------------------------------------------------

def test_counts_and_version(full):
    assert full.version == 2 and full.name == "v2-full"
    assert len(full.nodes) == 16 and len(full.hosts) == 11
    assert set(full.zones) == {"staff", "servers", "mgmt", "transit", "hq-lan", "radio",
                               "plt1-lan", "plt2-lan", "plt7-lan"}


def test_builtin_profiles_and_override(full):
    builtin = builtin_profiles()
    assert set(builtin) == {"lan", "wan", "satcom-geo", "satcom-leo", "hf-radio",
                            "vhf-los-radio", "tactical-mesh"}
    assert (builtin["lan"].bandwidth_mbit, builtin["lan"].delay_ms) == (1000, 0.1)
    geo = builtin["satcom-geo"]
    assert (geo.bandwidth_mbit, geo.delay_ms, geo.jitter_ms, geo.loss_pct) == (8, 550, 20, 0.5)
    assert builtin["hf-radio"].bandwidth_mbit == pytest.approx(0.0096)
    assert builtin["vhf-los-radio"].bandwidth_mbit == pytest.approx(0.064)
    # the file's own "lan" replaces the built-in one; the others stay available
    assert full.profiles["lan"].bandwidth_mbit == 100 and full.profiles["lan"].delay_ms == 0
    assert full.zones["staff"].profile.bandwidth_mbit == 100
    assert full.zones["transit"].profile.name == "wan"
    assert full.links["radio"].profile.bandwidth_mbit == pytest.approx(0.0096)
    assert full.zones["plt7-lan"].profile.name == "tactical-mesh"
    assert full.profiles["slow"].bandwidth_mbit == pytest.approx(0.512)   # "512kbit"
    assert builtin["lan"].bandwidth_mbit == 1000            # the override did not leak


@pytest.mark.parametrize("text,mbit", [("9.6kbit", 0.0096), ("2mbit", 2), ("1gbit", 1000),
                                       ("64 kbit/s", 0.064), ("1500bit", 0.0015), (12.5, 12.5)])
def test_bandwidth_units(text, mbit):
    assert parse_bandwidth(text) == pytest.approx(mbit)


def test_vlans_and_trunks(full):
    assert (full.zones["staff"].switch, full.zones["staff"].vlan) == ("core-sw", 10)
    assert full.zones["staff"].switch_name == "core-sw"
    assert full.zones["transit"].switch_name == "transit" and full.zones["transit"].vlan is None
    core = full.nodes["core-rtr"]
    assert [(i.index, i.devname, i.zone, i.vlan, str(i.ip)) for i in core.interfaces] == [
        (0, "eth0.10", "staff", 10, "10.1.10.1"),
        (0, "eth0.20", "servers", 20, "10.1.20.1"),
        (0, "eth0.30", "mgmt", 30, "10.1.30.1"),      # defaulted: lowest free address
        (1, "eth1", "transit", None, "10.1.0.1"),
        (2, "eth2", "radio", None, "172.16.0.1"),     # the link takes the next port
    ]
    srv = full.nodes["srv-host"]                      # a host on a trunk
    assert [(i.devname, i.zone, str(i.ip)) for i in srv.interfaces] == [
        ("eth0.20", "servers", "10.1.20.10"), ("eth0.30", "mgmt", "10.1.30.10")]
    assert srv.gateway == ip("10.1.20.1")


def test_multi_interface_host(full):
    ops = full.nodes["ops-ws"]
    assert [(i.devname, i.zone, str(i.ip)) for i in ops.interfaces] == [
        ("eth0", "staff", "10.1.10.10"), ("eth1", "mgmt", "10.1.30.50")]
    assert ops.ip == ip("10.1.10.10") and ops.gateway == ip("10.1.10.1")   # primary = first
    assert ops.classification == "SECRET"            # the primary zone's marking
    assert [(s.name, s.version) for s in ops.software] == [("firefox", "115.3.0esr")]


def test_static_route_overrides_computed(full):
    core = full.nodes["core-rtr"]
    assert core.static_routes == [(net("10.30.7.0/24"), ip("10.1.0.3"))]
    routes = dict(core.routes)
    assert routes[net("10.30.7.0/24")] == ip("10.1.0.3")       # manual wins (computed: .9)
    assert routes[net("10.30.2.0/24")] == ip("10.1.0.4")       # computed
    assert routes[net("10.9.0.0/24")] == ip("172.16.0.2")
    assert len(core.routes) == len(routes)                     # one route per destination
    assert names(router_path(full, "ops-ws", "10.30.7.10")) == ["core-rtr", "plt1-fw", "plt7-fw"]
    # a host's own route goes before its default route
    assert full.nodes["ops-ws"].routes == [(net("10.9.0.0/24"), ip("10.1.30.1"))]
    assert names(router_path(full, "ops-ws", "10.9.0.10")) == ["core-rtr", "hq-rtr"]


def test_block_instances(full):
    for i in (1, 2, 7):
        assert full.zones[f"plt{i}-lan"].subnet == net(f"10.30.{i}.0/24")
        fw = full.nodes[f"plt{i}-fw"]
        assert fw.kind == "firewall" and fw.default_action == "deny"
        assert {x.zone: str(x.ip) for x in fw.interfaces} == {
            f"plt{i}-lan": f"10.30.{i}.1", "transit": f"10.1.0.{i + 2}"}
        assert full.nodes[f"plt{i}-ws1"].ip == ip(f"10.30.{i}.10")
        assert full.nodes[f"plt{i}-radio"].ip == ip(f"10.30.{i}.{i * 2 + 100}")
        assert full.nodes[f"plt{i}-ws1"].gateway == ip(f"10.30.{i}.1")
        assert fw.rules[0].src.networks == [net(f"10.30.{i}.0/24")]
        assert fw.rules[0].comment == f"platoon {i} out"
        assert fw.rules[1].dst.networks == [net(f"10.30.{i}.{i * 2 + 100}/32")]
        assert full.sensors[f"plt{i}-span"].zone == f"plt{i}-lan"
    assert "plt3-lan" not in full.zones
    # instantiated elements keep the block's lines
    lines = {full.nodes[f"plt{i}-ws1"].src.line for i in (1, 2, 7)}
    assert len(lines) == 1 and full.nodes["plt7-ws1"].src.file == str(FULL)
    text = FULL.read_text().splitlines()
    assert '"plt{i}-ws1"' in text[full.nodes["plt7-ws1"].src.line - 1]
    # routing works across the instances
    assert dict(full.nodes["plt7-fw"].routes)[net("10.30.2.0/24")] == ip("10.1.0.4")
    assert dict(full.nodes["hq-rtr"].routes)[net("10.30.7.0/24")] == ip("172.16.0.1")
    assert names(router_path(full, "plt2-ws1", "10.9.0.10")) == ["plt2-fw", "core-rtr", "hq-rtr"]


def test_includes_merged(full):
    assert [Path(p).name for p in full.includes] == ["hq.yaml", "hq-services.yaml"]
    c2 = full.nodes["c2-server"]
    assert c2.src.file.endswith("parts/hq-services.yaml") and c2.src.line == 3
    assert full.zones["hq-lan"].src.file.endswith("parts/hq.yaml")
    assert c2.classification == "TOP SECRET" and c2.ip == ip("10.9.0.10")
    assert full.nodes["hq-dns"].ip == ip("10.9.0.11")
    assert [(s.name, s.version, s.cpe) for s in c2.software][0] == (
        "openssh", "8.9p1", "cpe:2.3:a:openbsd:openssh:8.9p1:*:*:*:*:*:*:*")
    assert full.missions["hq-dns"].src_ref.file.endswith("parts/hq.yaml")


def test_missions(full):
    fires = full.missions["fires"]
    assert (fires.src, fires.dst) == (["plt1-ws1", "plt2-ws1", "plt7-ws1"], ["c2-server"])
    assert (fires.proto, fires.port) == ("tcp", 8080)
    assert fires.src_ref.file == str(FULL) and fires.src_ref.line > 80
    watch = full.missions["plc-watch"]
    assert watch.src == ["ops-ws", "plt1-radio", "plt2-radio", "plt7-radio"]
    assert watch.dst == ["srv-host", "fuel-plc"]                # the hosts of zone servers
    assert (watch.proto, watch.port) == ("icmp", None)
    assert watch.description == "operators see the PLC"
    dns = full.missions["hq-dns"]
    assert (dns.src, dns.dst, dns.proto, dns.port) == (["c2-server"], ["hq-dns"], "udp", 53)


def test_crown_jewels_entry_points_and_modbus(full):
    assert full.crown_jewels == ["c2-server", "fuel-plc"]
    assert full.entry_points == ["plt1-ws1"]                    # duplicates dropped
    plc = full.nodes["fuel-plc"]
    assert [(s.type, s.port, s.proto) for s in plc.services] == [("modbus", 502, "tcp")]


def test_schema_accepts_v1_and_v2():
    schema = topology_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    v = jsonschema.Draft202012Validator(schema)
    for p in [FULL, ROOT / "topologies" / "fob.yaml", *(ROOT / "tests" / "data" / "good").glob("*.yaml")]:
        v.validate(parse_yaml(p.read_text()).data)


def test_v1_file_unchanged(tmp_path):
    """A v1 file gets no built-in profiles, and is told that they need version 2."""
    p = tmp_path / "v1.yaml"
    p.write_text("version: 1\nname: a\nclassification: SECRET\n"
                 "zones:\n  a: {subnet: 10.0.0.0/24, profile: hf-radio}\n"
                 "nodes:\n  - {name: h, kind: host, zone: a}\n")
    with pytest.raises(UserError, match="built-in profile 'hf-radio' needs version: 2"):
        load_topology(p)
    p.write_text(p.read_text().replace(", profile: hf-radio", ""))
    t = load_topology(p)
    assert t.version == 1 and t.profiles == {} and not t.missions and not t.includes


def test_block_arithmetic_and_integer_templates(tmp_path):
    p = tmp_path / "b.yaml"
    p.write_text("""version: 2
name: b
classification: SECRET
zones:
  trunkless: {subnet: 10.0.0.0/24}
blocks:
  cell:
    params: [i, site]
    zones:
      "c{i}":  {subnet: "10.{i*2}.{i+10}.0/24", switch: "sw-{site}", vlan: "{i+100}"}
    nodes:
      - {name: "{site}-h{i}", kind: host, zone: "c{i}", ip: "10.{i*2}.{i+10}.{i*3-1}"}
instances:
  - {block: cell, count: 2, start: 4, with: {site: north}}
  - {block: cell, with: {i: 9, site: south}}
nodes:
  - {name: h, kind: host, zone: trunkless}
""")
    t = load_topology(p)
    assert t.zones["c4"].subnet == net("10.8.14.0/24") and t.zones["c4"].vlan == 104
    assert t.zones["c5"].switch == "sw-north" and t.zones["c9"].switch == "sw-south"
    assert t.nodes["north-h5"].ip == ip("10.10.15.14")
    assert t.nodes["south-h9"].ip == ip("10.18.19.26")


# -- bad files ---------------------------------------------------------------------------

def expectation(path: Path) -> tuple[str, int, str]:
    m = re.match(r"# expect: (?:(\S+\.yaml):)?(\d+): (.*)", path.read_text().splitlines()[0])
    assert m, f"{path} lacks a first line '# expect: [FILE:]LINE: substring'"
    file = path if m[1] is None else (path.parent / m[1]).resolve()
    return str(file.relative_to(ROOT)), int(m[2]), m[3].strip()


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_enough_bad_files():
    assert len(BAD) >= 12


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_load_error(path, monkeypatch):
    monkeypatch.chdir(ROOT)
    file, line, substring = expectation(path)
    with pytest.raises(UserError) as info:
        load_topology(rel(path))
    message = str(info.value)
    assert message.startswith(f"{file}:{line}:"), message
    assert substring in message, message
    assert "\n" not in message


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_cli_error(path):
    file, line, substring = expectation(path)
    proc = subprocess.run([sys.executable, "-m", "cyberrange.cli.main", "topo", "check", rel(path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: {file}:{line}:"), lines[0]
    assert substring in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout


# -- scale -------------------------------------------------------------------------------

def big_yaml(zones: int = 100, hosts: int = 49) -> str:
    """zones x (1 router + hosts) nodes: 100 x 50 = 5,000, every host with software."""
    out = ["version: 2", "name: big", "classification: SECRET", "zones:",
           "  core: {subnet: 10.255.0.0/24, profile: lan}"]
    out += [f"  z{z}: {{subnet: 10.{z // 200}.{z % 200}.0/24, profile: lan}}" for z in range(zones)]
    out.append("nodes:")
    for z in range(zones):
        out.append(f"  - {{name: r{z}, kind: router, interfaces: [{{zone: z{z}}}, {{zone: core}}]}}")
        out += [f"  - {{name: h{z}-{h}, kind: host, zone: z{z}, "
                f"software: [{{name: openssh, version: '8.9p1'}}]}}" for h in range(hosts)]
    out.append("missions:\n  all: \"h*-0 -> h0-1 tcp/22\"")
    return "\n".join(out) + "\n"


def test_5000_nodes_load(tmp_path):
    p = tmp_path / "big.yaml"
    p.write_text(big_yaml())
    t0 = time.perf_counter()
    t = load_topology(p)
    took = time.perf_counter() - t0
    print(f"\n5,000-node v2 model loaded in {took:.2f} s")
    assert len(t.nodes) == 5000 and len(t.zones) == 101
    assert t.nodes["h99-48"].ip == ip("10.0.99.58")
    assert dict(t.nodes["r5"].routes)[net("10.0.99.0/24")] == ip("10.255.0.100")
    assert len(t.missions["all"].src) == 100


def test_5000_nodes_from_a_block(tmp_path):
    p = tmp_path / "big-block.yaml"
    p.write_text("""version: 2
name: big
classification: SECRET
zones:
  core: {subnet: 10.255.0.0/24}
blocks:
  lan:
    params: [z]
    zones:
      "z{z}": {subnet: "10.{z // 200}.{z % 200}.0/24"}
    nodes:
      - {name: "r{z}", kind: router, interfaces: [{zone: "z{z}"}, {zone: core}]}
""" + "".join(f'      - {{name: "h{{z}}-{h}", kind: host, zone: "z{{z}}"}}\n' for h in range(49)) + """
instances:
  - {block: lan, count: 100, start: 0}
""")
    t0 = time.perf_counter()
    t = load_topology(p)
    print(f"\n5,000-node v2 model from 100 block instances loaded in {time.perf_counter() - t0:.2f} s")
    assert len(t.nodes) == 5000 and t.nodes["h99-48"].ip == ip("10.0.99.58")


# -- sensors and benign traffic sections ------------------------------------------------------

SENSORS_BENIGN = V2 / "good" / "sensors_benign.yaml"


def test_sensor_kinds_and_rotation():
    topo = load_topology(SENSORS_BENIGN)
    s = topo.sensors
    assert [x.kind for x in s.values()] == ["span", "ports", "interface"]
    assert s["ws-span"].zone == "ws-lan" and not s["ws-span"].default
    assert s["srv-ports"].nodes == ["web", "infra"] and s["srv-ports"].rotate_s == 60
    fw = s["fw-transit"]
    assert fw.interface == ("fw", "transit") and fw.zone == "transit"
    assert (fw.rotate_s, fw.rotate_mb) == (300, 100)
    assert fw.src.line == 51


def test_default_span_sensor_per_zone_when_none_declared(tmp_path):
    p = tmp_path / "t.yaml"
    p.write_text("version: 2\nname: t\nclassification: SECRET\nzones:\n  a: {subnet: 10.0.1.0/24}\n"
                 "  b: {subnet: 10.0.2.0/24}\nnodes:\n"
                 "  - {name: r1, kind: router, interfaces: [{zone: a}]}\n"
                 "  - {name: r2, kind: router, interfaces: [{zone: b}]}\n"
                 "  - {name: h, kind: host, zone: a}\n"
                 "links:\n  - {name: wan, endpoints: [r1, r2], subnet: 172.16.0.0/30}\n")
    topo = load_topology(p)
    assert list(topo.sensors) == ["a-span", "b-span"]           # no sensor on the p2p link
    assert all(x.default and x.kind == "span" for x in topo.sensors.values())
    assert topo.sensors["a-span"].zone == "a"


def test_benign_section_parsed():
    b = load_topology(SENSORS_BENIGN).benign
    assert (b.enabled, b.seed, b.intensity, b.interval_s) == (True, 42, 2.0, 2.0)
    assert [p.kind for p in b.roles["hmi"]] == ["modbus-poll"]
    assert b.roles["hmi"][0].params == {"count": 4}
    assert b.nodes["ws3"] == []
    admin = b.nodes["admin1"]
    assert [(p.kind, p.interval_s, p.targets) for p in admin] == [
        ("admin-ssh", 30.0, ["infra"]), ("browse", 5.0, ["web", "portal"])]
    ntp, chat = b.nodes["ws2"]
    assert ntp.params == {"jitter": 0.5}
    assert chat.interval_s == 20.0              # the kind's default interval


def test_v1_benign_keys_unchanged():
    fob = load_topology(ROOT / "topologies" / "fob.yaml")
    assert (fob.benign.interval_s, fob.benign.seed, fob.benign.intensity) == (1.5, 7, 1.0)
    assert fob.benign.roles == {} and fob.benign.nodes == {}


def test_schema_knows_every_kind_and_new_service():
    from cyberrange.model.topology import SERVICE_TYPES
    from cyberrange.model.benign_kinds import KINDS
    defs = topology_schema()["$defs"]
    assert set(defs["trafficProfile"]["properties"]["kind"]["enum"]) == set(KINDS)
    assert set(defs["service"]["properties"]["type"]["enum"]) == set(SERVICE_TYPES)

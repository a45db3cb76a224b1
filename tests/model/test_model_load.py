"""The shipped FOB topology loads, with every default filled in as docs/topology-format.md says."""
from __future__ import annotations

import ipaddress
import json

import jsonschema
import pytest
import yaml
from helpers import ROOT

from cyberrange.model.loader import SCHEMA_DIR, load_topology, topology_schema
from cyberrange.model.routing import router_path
from cyberrange.model.topology import CLASSIFICATIONS, ROLES, SERVICE_TYPES

FOB = ROOT / "topologies" / "fob.yaml"
ip = ipaddress.ip_address
net = ipaddress.ip_network


@pytest.fixture(scope="module")
def fob():
    return load_topology(FOB)


def test_counts(fob):
    assert fob.name == "fob" and fob.classification == "SECRET" and fob.domain == "fob.mil"
    assert len(fob.nodes) == 15
    assert len(fob.hosts) == 12 and len(fob.routers) == 3
    assert set(fob.zones) == {"cp-lan", "ops-lan", "dmz", "transit", "hq-lan", "satcom-uplink"}
    assert set(fob.sensors) == {"cp-span", "ops-span", "dmz-span"}
    assert fob.benign.interval_s == 1.5 and fob.benign.seed == 7 and fob.benign.enabled


def test_default_host_addresses(fob):
    # lowest free from network+10, skipping explicit addresses (c2-server has .10)
    assert fob.nodes["cp-ws1"].ip == ip("10.10.1.11")
    assert fob.nodes["cp-ws2"].ip == ip("10.10.1.12")
    assert [fob.nodes[n].ip for n in ("ops-ws1", "ops-ws2", "ops-ws3")] == \
        [ip("10.10.2.10"), ip("10.10.2.11"), ip("10.10.2.12")]
    assert fob.nodes["c2-server"].ip == ip("10.10.1.10")
    assert fob.nodes["c2-server"].interfaces[0].prefixlen == 24


def test_link_becomes_p2p_zone(fob):
    link = fob.links["satcom-uplink"]
    zone = fob.zones["satcom-uplink"]
    assert zone.p2p and zone.classification == "SECRET" and zone.subnet == net("172.16.0.0/30")
    assert (link.a, link.b) == ("comms-rtr", "hq-rtr")
    comms = {i.zone: i for i in fob.nodes["comms-rtr"].interfaces}
    hq = {i.zone: i for i in fob.nodes["hq-rtr"].interfaces}
    assert comms["satcom-uplink"].ip == ip("172.16.0.1")
    assert hq["satcom-uplink"].ip == ip("172.16.0.2")
    # links are appended after the declared interfaces, indices in order
    assert [(i.index, i.zone) for i in fob.nodes["comms-rtr"].interfaces] == \
        [(0, "transit"), (1, "dmz"), (2, "satcom-uplink")]
    assert [(i.index, i.zone) for i in fob.nodes["hq-rtr"].interfaces] == \
        [(0, "hq-lan"), (1, "satcom-uplink")]
    assert hq["satcom-uplink"].profile.name == "satcom-geo"
    assert hq["satcom-uplink"].profile.delay_ms == 550 and hq["satcom-uplink"].profile.needs_netem
    assert hq["hq-lan"].profile.name == "lan" and hq["hq-lan"].profile.bandwidth_mbit == 100


def test_profiles_and_classification(fob):
    assert fob.zones["dmz"].classification == "UNCLASSIFIED"
    assert fob.nodes["dmz-web"].classification == "UNCLASSIFIED"      # from its zone
    assert fob.nodes["fob-fw"].classification == "SECRET"             # from the topology
    for n in fob.nodes.values():
        for i in n.interfaces:
            assert i.profile is fob.zones[i.zone].profile


def test_gateways(fob):
    expect = {"cp-lan": "10.10.1.1", "ops-lan": "10.10.2.1", "dmz": "10.10.3.1",
              "hq-lan": "10.20.0.1"}
    for h in fob.hosts:
        assert h.gateway == ip(expect[h.interfaces[0].zone]), h.name
    for r in fob.routers:
        assert r.gateway is None


def test_routes_reach_every_subnet(fob):
    for r in fob.routers:
        attached = {fob.zones[i.zone].subnet for i in r.interfaces}
        routed = {n for n, _ in r.routes}
        assert attached | routed == set(fob.address_space()), r.name
        assert not attached & routed
        for _, via in r.routes:          # next hop is a neighbour on a shared zone
            assert any(via in fob.zones[i.zone].subnet for i in r.interfaces)
    routes = dict(fob.nodes["fob-fw"].routes)
    assert routes[net("10.20.0.0/24")] == ip("10.10.0.1")
    routes = dict(fob.nodes["hq-rtr"].routes)
    assert routes[net("10.10.1.0/24")] == ip("172.16.0.1")
    routes = dict(fob.nodes["comms-rtr"].routes)
    assert routes[net("10.10.2.0/24")] == ip("10.10.0.2")
    assert routes[net("10.20.0.0/24")] == ip("172.16.0.2")


def test_router_path(fob):
    names = lambda p: [n.name for n in p]   # noqa: E731
    assert names(router_path(fob, "hq-portal", "10.10.1.10")) == ["hq-rtr", "comms-rtr", "fob-fw"]
    assert names(router_path(fob, "ops-maint", "10.10.1.10")) == ["fob-fw"]
    assert router_path(fob, "ops-maint", "10.10.2.20") == []


def test_services_and_rules(fob):
    c2 = fob.nodes["c2-server"]
    assert [(s.type, s.port, s.proto) for s in c2.services] == [("http", 8080, "tcp"),
                                                                ("login", 22, "tcp")]
    assert [a.user for a in c2.services[1].accounts] == ["c2admin", "operator"]
    dns = fob.nodes["cp-dns"].services[0]
    assert (dns.proto, dns.domain) == ("udp", "fob.mil")
    fw = fob.nodes["fob-fw"]
    assert fw.default_action == "deny" and len(fw.rules) == 8
    r0 = fw.rules[0]
    assert (r0.src.kind, r0.src.networks) == ("zone", [net("10.10.2.0/24")])
    assert (r0.dst.kind, r0.dst.networks) == ("node", [net("10.10.1.10/32")])
    assert r0.ports == [(8080, 8080)] and r0.proto == "tcp"
    assert fw.rules[3].proto == "any" and fw.rules[4].dst.kind == "any"
    assert fw.rules[5].dst.kind == "list"
    assert fw.rules[5].dst.networks == [net("10.10.3.0/24"), net("10.20.0.0/24")]
    assert r0.src_ref.file == str(FOB) and r0.src_ref.line > 100
    assert fob.nodes["comms-rtr"].default_action == "allow" and not fob.nodes["comms-rtr"].rules


def test_source_refs(fob):
    assert fob.zones["cp-lan"].src.line == 30
    assert fob.nodes["c2-server"].src.line == 64
    assert fob.links["satcom-uplink"].src.line == 57
    assert fob.sensors["cp-span"].src.line == 179
    assert fob.nodes["c2-server"].services[0].src.line == 70


def test_schema_is_valid_and_accepts_fob():
    schema = json.loads((SCHEMA_DIR / "topology.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(yaml.safe_load(FOB.read_text()))
    good = ROOT / "tests" / "data" / "good"
    for p in good.glob("*.yaml"):
        jsonschema.Draft202012Validator(schema).validate(yaml.safe_load(p.read_text()))


def test_schema_enums_match_model():
    d = topology_schema()["$defs"]
    assert tuple(d["classification"]["enum"]) == CLASSIFICATIONS
    assert tuple(d["node"]["properties"]["role"]["enum"]) == ROLES
    assert tuple(d["service"]["properties"]["type"]["enum"]) == SERVICE_TYPES


def test_good_files_load():
    for p in (ROOT / "tests" / "data" / "good").glob("*.yaml"):
        load_topology(p)


def test_small_subnet_host_default(tmp_path):
    p = tmp_path / "small.yaml"
    p.write_text("version: 1\nname: small\nclassification: SECRET\n"
                 "zones:\n  a: {subnet: 10.0.0.0/29}\n"
                 "nodes:\n  - {name: r, kind: router, interfaces: [{zone: a}]}\n"
                 "  - {name: h1, kind: host, zone: a}\n  - {name: h2, kind: host, zone: a}\n")
    t = load_topology(p)
    assert t.nodes["r"].ip == ip("10.0.0.1")
    assert (t.nodes["h1"].ip, t.nodes["h2"].ip) == (ip("10.0.0.2"), ip("10.0.0.3"))
    assert t.nodes["h1"].gateway == ip("10.0.0.1") and t.nodes["h1"].role == "workstation"


def test_gateway_by_name_and_ip(tmp_path):
    p = tmp_path / "gw.yaml"
    p.write_text("version: 1\nname: gw\nclassification: SECRET\n"
                 "zones:\n  a: {subnet: 10.0.0.0/24}\n  b: {subnet: 10.0.1.0/24}\n"
                 "nodes:\n  - {name: r1, kind: router, interfaces: [{zone: a}, {zone: b}]}\n"
                 "  - {name: r2, kind: router, interfaces: [{zone: a}]}\n"
                 "  - {name: h1, kind: host, zone: a, gateway: r2}\n"
                 "  - {name: h2, kind: host, zone: a, gateway: 10.0.0.1}\n"
                 "  - {name: h3, kind: host, zone: b}\n")
    t = load_topology(p)
    assert t.nodes["h1"].gateway == ip("10.0.0.2")
    assert t.nodes["h2"].gateway == ip("10.0.0.1")
    assert t.nodes["r2"].routes == [(net("10.0.1.0/24"), ip("10.0.0.1"))]

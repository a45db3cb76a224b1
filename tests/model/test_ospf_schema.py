"""``routing:`` and ``cost:`` in topology files, the OSPF cost rule and the ospfd configuration
text (``model/ospf.py``), without root or FRR."""
from __future__ import annotations

import ipaddress
import subprocess
import sys

import pytest
from helpers import ROOT

from cyberrange.errors import UserError
from cyberrange.model import ospf
from cyberrange.model.loader import load_topology

BRIGADE = ROOT / "topologies" / "brigade.yaml"

BASE = """\
version: 2
name: t
classification: SECRET
{routing}
profiles:
  slow: {{bandwidth: 9.6kbit}}
  fast: {{bandwidth: 10gbit}}
zones:
  lan-a: {{subnet: 10.0.1.0/24{zone_extra}}}
  lan-b: {{subnet: 10.0.2.0/24, profile: wan}}
  transit: {{subnet: 10.0.3.0/29}}
links:
  - {{name: radio, endpoints: [ra, rb], subnet: 172.16.0.0/30, profile: vhf-los-radio{link_extra}}}
  - {{name: sat, endpoints: [ra, rb], subnet: 172.16.0.4/30, profile: slow}}
  - {{name: fibre, endpoints: [ra, rb], subnet: 172.16.0.8/30, profile: fast}}
nodes:
  - {{name: ha, kind: host, zone: lan-a}}
  - {{name: hb, kind: host, zone: lan-b}}
  - {{name: ra, kind: router, interfaces: [{{zone: lan-a}}, {{zone: transit}}]}}
  - {{name: rb, kind: router, interfaces: [{{zone: lan-b}}]}}
  - {{name: rc, kind: router, interfaces: [{{zone: transit}}]}}
"""


def write(tmp_path, routing="", zone_extra="", link_extra=""):
    path = tmp_path / "t.yaml"
    path.write_text(BASE.format(routing=routing, zone_extra=zone_extra, link_extra=link_extra))
    return path


def error_of(path) -> str:
    with pytest.raises(UserError) as info:
        load_topology(path)
    message = str(info.value)
    assert "\n" not in message
    return message


# -- parsing ------------------------------------------------------------------------------------

def test_brigade_asks_for_ospf():
    topo = load_topology(BRIGADE)
    assert (topo.routing.protocol, topo.routing.hello, topo.routing.dead) == ("ospf", 1, 4)
    assert topo.routing.src is not None and topo.routing.src.line > 1


def test_routing_defaults_to_static(tmp_path):
    topo = load_topology(write(tmp_path))
    assert (topo.routing.protocol, topo.routing.hello, topo.routing.dead) == ("static", 1, 4)
    assert ospf.ospf_routers(topo) == []
    assert all(z.cost is None for z in topo.zones.values())


def test_routing_and_costs_are_read(tmp_path):
    topo = load_topology(write(tmp_path, "routing: {protocol: ospf, hello: 2, dead: 9}",
                               zone_extra=", cost: 7", link_extra=", cost: 40"))
    assert (topo.routing.protocol, topo.routing.hello, topo.routing.dead) == ("ospf", 2, 9)
    assert topo.zones["lan-a"].cost == 7
    assert topo.links["radio"].cost == 40 and topo.zones["radio"].cost == 40
    assert [n.name for n in ospf.ospf_routers(topo)] == ["ra", "rb", "rc"]


@pytest.mark.parametrize("routing, zone_extra, link_extra, line, text", [
    ("routing: {protocol: ospf, hello: 4, dead: 4}", "", "", 4,
     "dead interval 4 s must be more than the hello interval 4 s"),
    ("routing: {protocol: ospf, hello: 5}", "", "", 4,
     "dead interval 4 s must be more than the hello interval 5 s"),
    ("routing: {protocol: rip}", "", "", 4, "unknown protocol 'rip'"),
    ("routing: {protocol: ospf, hello: 0}", "", "", 4, "out of range"),
    ("routing: {protocol: ospf, hello: 1.5}", "", "", 4, "expected an integer"),
    ("routing: {protocol: ospf, helo: 1}", "", "", 4, "unknown key 'helo'"),
    ("routing: ospf", "", "", 4, "expected a mapping"),
    ("", ", cost: 0", "", 9, "out of range (must be >= 1)"),
    ("", ", cost: 70000", "", 9, "out of range (must be <= 65535)"),
    ("", "", ", cost: fast", 13, "expected an integer"),
    ("", "", ", cost: true", 13, "expected an integer"),
])
def test_bad_values_name_file_line_and_key(tmp_path, routing, zone_extra, link_extra, line,
                                           text):
    path = write(tmp_path, routing, zone_extra, link_extra)
    message = error_of(path)
    assert message.startswith(f"{path}:{line}:"), message
    assert text in message, message


def test_routing_belongs_in_the_main_file(tmp_path):
    (tmp_path / "part.yaml").write_text("routing: {protocol: ospf}\n")
    path = write(tmp_path, "include: [part.yaml]")
    message = error_of(path)
    assert message.startswith(f"{tmp_path / 'part.yaml'}:1:"), message
    assert "'routing' belongs in the main topology file" in message


def test_cli_exits_2_with_one_line(tmp_path):
    path = write(tmp_path, "routing: {protocol: ospf, hello: 3, dead: 2}")
    proc = subprocess.run([sys.executable, "-m", "cyberrange.cli.main", "topo", "check",
                           str(path)], check=False, cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}:4:"), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


# -- the cost rule ------------------------------------------------------------------------------

def test_cost_from_bandwidth(tmp_path):
    topo = load_topology(write(tmp_path))
    assert ospf.ospf_cost(topo, "radio") == 15625          # 64 kbit/s
    assert ospf.ospf_cost(topo, "sat") == 65535            # 9.6 kbit/s: 104167, capped
    assert ospf.ospf_cost(topo, "fibre") == 1              # 10 Gbit/s: 0.1, at least 1
    assert ospf.ospf_cost(topo, "lan-b") == 10             # wan: 100 Mbit/s
    assert ospf.ospf_cost(topo, "lan-a") == 1              # no profile: 1 Gbit/s
    assert ospf.ospf_cost(topo, "transit") == 1


def test_explicit_cost_wins(tmp_path):
    topo = load_topology(write(tmp_path, zone_extra=", cost: 7", link_extra=", cost: 40"))
    assert ospf.ospf_cost(topo, "lan-a") == 7
    assert ospf.ospf_cost(topo, "radio") == 40


def test_brigade_costs_prefer_vhf_over_hf():
    topo = load_topology(BRIGADE)
    costs = {z: ospf.ospf_cost(topo, z) for z in topo.zones}
    assert costs["bde-los"] == 15625 and costs["bde-skywave"] == 65535
    assert costs["bn1-mesh"] == costs["bn2-mesh"] == 500   # tactical mesh, 2 Mbit/s
    assert costs["main-c2"] == 1                           # lan, 1 Gbit/s


# -- the configuration text ---------------------------------------------------------------------

def blocks(text: str) -> dict[str, list[str]]:
    """``interface X`` / ``router ospf`` -> their indented lines."""
    out, cur = {}, None
    for line in text.splitlines():
        if line.startswith(("interface ", "router ")):
            cur = out.setdefault(line, [])
        elif line.startswith(" ") and cur is not None:
            cur.append(line.strip())
        elif line.startswith("!"):
            cur = None
    return out


def test_frr_conf_of_the_tac_router():
    topo = load_topology(BRIGADE)
    text = ospf.frr_conf(topo, "tac-rtr")
    b = blocks(text)
    dev = {i.zone: i.devname for i in topo.nodes["tac-rtr"].interfaces}
    los, hf, lan = (b[f"interface {dev[z]}"] for z in ("bde-los", "bde-skywave", "tac-lan"))
    assert "ip ospf network point-to-point" in los and "ip ospf cost 15625" in los
    assert "ip ospf passive" not in los
    assert "ip ospf network point-to-point" in hf and "ip ospf cost 65535" in hf
    assert "ip ospf passive" in lan and "ip ospf network point-to-point" not in lan
    for lines in (los, hf, lan):
        assert "ip ospf hello-interval 1" in lines and "ip ospf dead-interval 4" in lines
    router = b["router ospf"]
    assert "ospf router-id 10.30.10.1" in router
    assert "timers throttle spf 0 50 500" in router
    nets = {ln.split()[1] for ln in router if ln.startswith("network ")}
    assert nets == {str(topo.zones[i.zone].subnet) for i in topo.nodes["tac-rtr"].interfaces}
    assert all(ln.endswith("area 0.0.0.0") for ln in router if ln.startswith("network "))
    assert "hostname tac-rtr" in text.splitlines()


def test_frr_conf_of_the_firewall_keeps_hellos_on_the_transit():
    topo = load_topology(BRIGADE)
    b = blocks(ospf.frr_conf(topo, "main-fw"))
    dev = {i.zone: i.devname for i in topo.nodes["main-fw"].interfaces}
    transit = b[f"interface {dev['main-transit']}"]
    assert "ip ospf passive" not in transit                 # main-rtr is there: hellos
    assert "ip ospf network point-to-point" not in transit  # a LAN: broadcast, DR election
    for z in ("main-c2", "main-fires", "main-intel"):
        assert "ip ospf passive" in b[f"interface {dev[z]}"]


def test_frr_conf_timers_devnames_and_lone_router(tmp_path):
    topo = load_topology(write(tmp_path, "routing: {protocol: ospf, hello: 2, dead: 9}"))
    text = ospf.frr_conf(topo, "ra", devname=lambda itf: f"x{itf.index}")
    b = blocks(text)
    assert set(b) == {"interface x0", "interface x1", "interface x2", "interface x3",
                      "interface x4", "router ospf"}
    assert all("ip ospf hello-interval 2" in v and "ip ospf dead-interval 9" in v
               for k, v in b.items() if k.startswith("interface"))
    # ra's LAN (hosts, one router) is passive; transit (ra and rc) keeps its hellos
    dev = {i.zone: f"x{i.index}" for i in topo.nodes["ra"].interfaces}
    assert "ip ospf passive" in b[f"interface {dev['lan-a']}"]
    assert "ip ospf passive" not in b[f"interface {dev['transit']}"]
    assert "ip ospf network point-to-point" in b[f"interface {dev['radio']}"]


def test_a_lan_with_hosts_and_two_routers_keeps_its_hellos(tmp_path):
    text = BASE.format(routing="routing: {protocol: ospf}", zone_extra="", link_extra="")
    text = text.replace("{name: ha, kind: host, zone: lan-a}",
                        "{name: ha, kind: host, zone: lan-a, gateway: ra}")
    text = text.replace("{name: rc, kind: router, interfaces: [{zone: transit}]}",
                        "{name: rc, kind: router, interfaces: [{zone: transit}, {zone: lan-a}]}")
    (tmp_path / "t.yaml").write_text(text)
    topo = load_topology(tmp_path / "t.yaml")
    assert not ospf.passive(topo, "lan-a")                 # ra and rc: hellos across the LAN
    assert ospf.passive(topo, "lan-b")                     # rb alone with its host


def test_expected_prefixes_are_every_reachable_subnet_but_its_own():
    topo = load_topology(BRIGADE)
    got = ospf.expected_prefixes(topo, "tac-rtr")
    want = {ipaddress.ip_network(n) for n in ("10.30.0.0/29", "10.30.1.0/24", "10.30.2.0/24",
                                              "10.30.3.0/24", "10.30.21.0/24", "10.30.22.0/24")}
    assert got == want
    assert ipaddress.ip_network("10.30.10.0/24") not in got          # its own LAN


def test_zebra_conf_names_the_router():
    topo = load_topology(BRIGADE)
    assert "hostname bn1-rtr" in ospf.zebra_conf(topo, "bn1-rtr")

"""``attack validate`` refuses what run time would refuse (issue 15, item 6): one test per run-time
constraint the technique docs state, on crafted playbooks against a crafted topology (static, no
twin), each a FILE:LINE error naming the step and the key; ``node:port`` targets; and, in the
namespace lab, the outcome fixes: T1041 with a custom ``path`` succeeds when every byte arrived,
T1557.002 with 0 intercepted packets fails with its reason."""
from __future__ import annotations

import textwrap

import pytest
from helpers import ROOT
from lab_c2 import C2, LAB, V1, V2
from nslab import lab_fixture, needs_netns, read_jsonl

from cyberrange.attack.playbook import load_playbook
from cyberrange.errors import UserError
from cyberrange.model.loader import load_topology

TOPOLOGY = """\
version: 2
name: rtlab
classification: SECRET
description: two LANs, a dual-homed host, a C2 server, a PLC and a name server
domain: rt.mil
zones:
  lan-a: {subnet: 10.71.1.0/24, classification: SECRET}
  lan-b: {subnet: 10.71.2.0/24, classification: SECRET}
nodes:
  - name: rtr
    kind: router
    interfaces:
      - {zone: lan-a, ip: 10.71.1.1}
      - {zone: lan-b, ip: 10.71.2.1}
  - name: dual
    kind: host
    interfaces:
      - {zone: lan-a, ip: 10.71.1.5}
      - {zone: lan-b, ip: 10.71.2.5}
  - {name: a1, kind: host, zone: lan-a}
  - {name: a2, kind: host, zone: lan-a}
  - {name: a3, kind: host, zone: lan-a}
  - {name: b1, kind: host, zone: lan-b}
  - name: c2-server
    kind: host
    zone: lan-b
    services:
      - {type: c2-http, port: 443}
      - {type: c2-dns, port: 53, domain: wx-update.example}
  - name: plc
    kind: host
    zone: lan-b
    services:
      - {type: modbus, port: 502}
  - name: ns
    kind: host
    zone: lan-b
    services:
      - {type: dns, port: 53}
"""


lab = lab_fixture(LAB)          # built only for the two outcome tests at the end


@pytest.fixture(scope="module")
def topo(tmp_path_factory):
    path = tmp_path_factory.mktemp("rt") / "rtlab.yaml"
    path.write_text(TOPOLOGY)
    return load_topology(path)


def check(tmp_path, topo, step: str):
    """Load a one-step playbook (``step``: the YAML of the step, indented under ``steps:``)."""
    path = tmp_path / "pb.yaml"
    path.write_text("version: 2\nname: t\nsteps:\n" + textwrap.indent(textwrap.dedent(step), "  "))
    return load_playbook(path, topo)


def refused(tmp_path, topo, step: str, line: int, *words: str) -> str:
    with pytest.raises(UserError) as e:
        check(tmp_path, topo, step)
    msg = str(e.value)
    assert msg.startswith(f"{tmp_path / 'pb.yaml'}:{line}:"), msg
    for w in words:
        assert w in msg, msg
    return msg


def passes(tmp_path, topo, step: str):
    return check(tmp_path, topo, step)


# --------------------------------------------------------------------------- T1557.002
def test_arp_spoofing_needs_exactly_two_victims(tmp_path, topo):
    refused(tmp_path, topo, """\
        - id: mitm
          technique: T1557.002
          actor: a1
          targets: [a2, a3, rtr]
        """, 7, "step mitm", "exactly two victims", "got 3")
    refused(tmp_path, topo, """\
        - id: mitm
          technique: T1557.002
          actor: a1
          targets: [a2, 10.71.1.11]
        """, 7, "exactly two victims", "got 1")          # the same victim twice
    passes(tmp_path, topo, """\
        - id: mitm
          technique: T1557.002
          actor: a1
          targets: [a2, 10.71.1.1]
        """)


def test_arp_spoofing_victims_on_the_actors_link(tmp_path, topo):
    refused(tmp_path, topo, """\
        - id: mitm
          technique: T1557.002
          actor: a1
          targets: [a2, b1]
        """, 7, "step mitm", "victim b1", "not on a link of the actor a1")


def test_arp_spoofing_victims_on_one_link(tmp_path, topo):
    refused(tmp_path, topo, """\
        - id: mitm
          technique: T1557.002
          actor: dual
          targets: [a1, b1]
        """, 7, "step mitm", "different links of dual")
    passes(tmp_path, topo, """\
        - id: mitm
          technique: T1557.002
          actor: dual
          targets: [b1, c2-server]
        """)


def test_arp_spoofing_duration_at_most_3600(tmp_path, topo):
    refused(tmp_path, topo, """\
        - id: mitm
          technique: T1557.002
          actor: a1
          targets: [a2, a3]
          params: {duration: 3601}
        """, 8, "step mitm", "duration 3601", "at most 3600")
    refused(tmp_path, topo, """\
        - id: mitm
          technique: T1557.002
          actor: a1
          targets: [a2, a3]
          params: {duration: 0}
        """, 8, "step mitm", "duration 0", "more than 0")


# --------------------------------------------------------------------------- floods
@pytest.mark.parametrize("tid", ["T1498", "T1499"])
def test_flood_duration_at_most_300(tmp_path, topo, tid):
    refused(tmp_path, topo, f"""\
        - id: flood
          technique: {tid}
          actor: a1
          targets: [a2]
          timing: {{duration: 301, rate: 100}}
        """, 8, "step flood", "duration 301", "0..300")
    passes(tmp_path, topo, f"""\
        - id: flood
          technique: {tid}
          actor: a1
          targets: [a2]
          params: {{duration: 300}}
        """)


@pytest.mark.parametrize("tid", ["T1498", "T1499"])
def test_flood_targets_behind_one_interface(tmp_path, topo, tid):
    refused(tmp_path, topo, f"""\
        - id: flood
          technique: {tid}
          actor: dual
          targets: [a1, b1]
        """, 7, "step flood", "target b1", "another interface of dual", "than a1")
    refused(tmp_path, topo, f"""\
        - id: flood
          technique: {tid}
          actor: dual
          targets: [lan-b, "10.71.1.10:80"]
        """, 7, "step flood", "another interface")
    passes(tmp_path, topo, f"""\
        - id: flood
          technique: {tid}
          actor: dual
          targets: [b1, plc]
        """)


# --------------------------------------------------------------------------- services
@pytest.mark.parametrize("tid", ["T1071.001", "T1041"])
def test_http_c2_needs_a_c2_listener(tmp_path, topo, tid):
    refused(tmp_path, topo, f"""\
        - id: c2
          technique: {tid}
          actor: a1
          targets: [plc]
        """, 7, "step c2", "target plc", "has no HTTP C2 listener (service c2-http)", "modbus/502")
    refused(tmp_path, topo, f"""\
        - id: c2
          technique: {tid}
          actor: a1
          targets: ["10.71.2.10:443"]
        """, 7, "target 10.71.2.10:443 (b1)", "c2-http", "none")
    passes(tmp_path, topo, f"""\
        - id: c2
          technique: {tid}
          actor: a1
          targets: ["10.71.2.11:443"]
        """)
    # a wrong port is a scenario (trying a closed port), not an error: the step fails
    passes(tmp_path, topo, f"""\
        - id: c2
          technique: {tid}
          actor: a1
          targets: [c2-server]
          params: {{port: 8443}}
        """)


@pytest.mark.parametrize("tid", ["T1071.004", "T1048"])
def test_dns_c2_needs_a_c2_dns_server(tmp_path, topo, tid):
    refused(tmp_path, topo, f"""\
        - id: dns
          technique: {tid}
          actor: a1
          targets: [ns]
          params: {{domain: wx-update.example}}
        """, 7, "step dns", "target ns", "DNS C2 server (service c2-dns)", "dns/53")


@pytest.mark.parametrize("tid", ["T1071.004", "T1048"])
def test_dns_domain_the_server_refuses(tmp_path, topo, tid):
    refused(tmp_path, topo, f"""\
        - id: dns
          technique: {tid}
          actor: a1
          targets: [c2-server]
          params: {{domain: evil.example}}
        """, 8, "step dns", "domain 'evil.example'", "wx-update.example", "refuses")
    # the default domain (evil.example) is refused too: the error points at the target
    refused(tmp_path, topo, f"""\
        - id: dns
          technique: {tid}
          actor: a1
          targets: [c2-server]
        """, 7, "domain 'evil.example'")
    for domain in ("wx-update.example", "cdn.wx-update.example", "WX-Update.Example."):
        passes(tmp_path, topo, f"""\
            - id: dns
              technique: {tid}
              actor: a1
              targets: [c2-server]
              params: {{domain: "{domain}"}}
            """)


@pytest.mark.parametrize("tid", ["T0855", "T0831", "T0861"])
def test_modbus_needs_a_modbus_service(tmp_path, topo, tid):
    refused(tmp_path, topo, f"""\
        - id: plc
          technique: {tid}
          actor: a1
          targets: [c2-server]
        """, 7, "step plc", "target c2-server", "has no Modbus server (service modbus)")
    passes(tmp_path, topo, f"""\
        - id: plc
          technique: {tid}
          actor: a1
          targets: [plc, "10.71.2.12:502"]
        """)


def test_facts_zones_and_cidrs_are_left_to_run_time(tmp_path, topo):
    """A target known only at run time is not judged here (its hosts are not known yet)."""
    passes(tmp_path, topo, """\
        - id: sweep
          technique: T1018
          actor: a1
          targets: [lan-b]
        - id: c2
          technique: T1071.001
          actor: a1
          targets: ["#{sweep.hosts}", lan-b, 10.71.2.0/28]
        """)


# --------------------------------------------------------------------------- node:port
def test_node_with_port_is_refused_with_its_address(tmp_path, topo):
    refused(tmp_path, topo, """\
        - id: c2
          technique: T1071.001
          actor: a1
          targets: ["c2-server:443"]
        """, 7, "target 'c2-server:443'", "'10.71.2.11:443'")


def test_node_with_port_did_you_mean_keeps_the_port(tmp_path, topo):
    msg = refused(tmp_path, topo, """\
        - id: c2
          technique: T1071.001
          actor: a1
          targets: ["c2-servr:443"]
        """, 7, "unknown target 'c2-servr:443'", "did you mean 'c2-server:443'?",
        "'10.71.2.11:443'")
    assert "'c2-server'?" not in msg


def test_node_with_a_bad_port(tmp_path, topo):
    refused(tmp_path, topo, """\
        - id: c2
          technique: T1071.001
          actor: a1
          targets: ["c2-server:70000"]
        """, 7, "port '70000' is not 1..65535")


def test_node_with_port_without_a_topology(tmp_path):
    path = tmp_path / "pb.yaml"
    path.write_text("version: 2\nname: t\nsteps:\n  - id: c2\n    technique: T1071.001\n"
                    "    actor: a1\n    targets: [\"c2-server:443\"]\n")
    with pytest.raises(UserError) as e:
        load_playbook(path)
    assert str(e.value).startswith(f"{path}:7:") and "takes no ':port'" in str(e.value)


def test_shipped_playbooks_still_validate():
    """Every shipped playbook against the topology it names (the FOB when it names none)."""
    topologies = {load_topology(p).name: p for p in sorted((ROOT / "topologies").glob("*.yaml"))}
    for pb in sorted((ROOT / "attack_playbooks").glob("*.yaml")):
        name = next((ln.split(":", 1)[1].strip() for ln in pb.read_text().splitlines()
                     if ln.startswith("topology:")), "fob")
        load_playbook(pb, load_topology(topologies.get(name, ROOT / "topologies" / "fob.yaml")))


# --------------------------------------------------------------------------- outcomes (lab)


@needs_netns
def test_http_exfiltration_on_a_custom_path_succeeds_when_every_byte_arrived(lab):
    log, _out = lab.service("c2-http")
    res = lab.agent("T1041", [f"{C2}:8443"], {"size": 10000, "chunk": 4096, "seed": 3,
                                              "path": "/api/v2/telemetry/", "session": "hx09"})
    assert res["outcome"] == "succeeded", res
    facts = res["facts"]
    assert facts["complete"] and not facts["confirmed"] and facts["bytes"] == 10000
    # the listener took them as check-ins on that path: every byte of every chunk arrived
    got = [r for r in read_jsonl(log) if "/hx09/" in str(r.get("path", ""))]
    sizes = {r["path"]: r["size"] for r in got}
    assert sizes == {"/api/v2/telemetry/hx09/0": 4096, "/api/v2/telemetry/hx09/1": 4096,
                     "/api/v2/telemetry/hx09/2": 1808,
                     "/api/v2/telemetry/hx09/done": sizes.get("/api/v2/telemetry/hx09/done")}
    # the default path still has the listener's hash check behind it
    res = lab.agent("T1041", [f"{C2}:8443"], {"size": 5000, "session": "hx10"})
    assert res["outcome"] == "succeeded" and res["facts"]["confirmed"], res


@needs_netns
def test_arp_spoofing_with_nothing_intercepted_fails_with_its_reason(lab):
    lab.nsx("v1", "ping", "-c", "1", "-W", "1", V2)              # both caches know each other
    res = lab.agent("T1557.002", [V1, V2], {"duration": 1, "interval": 0.5, "timeout": 0.3})
    assert res["facts"]["intercepted_packets"] == 0, res       # the victims did not talk
    assert res["outcome"] == "failed", res
    assert "0 intercepted" in res["error"], res


# --------------------------------------------------------------------------- parameters alone
def test_arp_spoofing_a_zone_is_more_than_two_victims(tmp_path, topo):
    refused(tmp_path, topo, """\
        - id: mitm
          technique: T1557.002
          actor: a1
          targets: [lan-a]
        """, 7, "exactly two victims", "got 253")      # every host but the actor's own
    passes(tmp_path, topo, """\
        - id: mitm
          technique: T1557.002
          actor: a1
          targets: [10.71.1.4/30]
        """)                                            # .5 and .6: two victims


@pytest.mark.parametrize("tid", ["T1071.001", "T1071.004"])
def test_beacon_count_at_most_100000(tmp_path, topo, tid):
    refused(tmp_path, topo, f"""\
        - id: b
          technique: {tid}
          actor: a1
          targets: ["10.71.2.11:53"]
          params: {{count: 100001}}
        """, 8, "step b", "count 100,001", "at most 100,000 check-ins")


@pytest.mark.parametrize("tid", ["T1071.001", "T1071.004"])
def test_beacon_must_end(tmp_path, tid):
    path = tmp_path / "pb.yaml"
    path.write_text(f"version: 2\nname: t\nsteps:\n  - id: b\n    technique: {tid}\n"
                    "    actor: a1\n    targets: [10.71.2.11]\n    params: {count: 0}\n")
    with pytest.raises(UserError) as e:
        load_playbook(path)                             # no topology needed
    assert str(e.value).startswith(f"{path}:8:") and "never end" in str(e.value)


@pytest.mark.parametrize("tid", ["T1041", "T1048"])
def test_exfil_document_size(tmp_path, topo, tid):
    domain = ", domain: wx-update.example" if tid == "T1048" else ""
    refused(tmp_path, topo, f"""\
        - id: x
          technique: {tid}
          actor: a1
          targets: ["10.71.2.11:443"]
          params: {{size: 50000001{domain}}}
        """, 8, "step x", "size 50,000,001", "1..50,000,000 bytes")
    refused(tmp_path, topo, f"""\
        - id: x
          technique: {tid}
          actor: a1
          targets: ["10.71.2.11:443"]
          params: {{size: 0{domain}}}
        """, 8, "size 0")
    passes(tmp_path, topo, f"""\
        - id: x
          technique: {tid}
          actor: a1
          targets: ["10.71.2.11:443"]
          params: {{size: 0, data: "grid 38S"{domain}}}
        """)


@pytest.mark.parametrize("tid", ["T1110.001", "T1110.003"])
def test_credential_protocol(tmp_path, topo, tid):
    refused(tmp_path, topo, f"""\
        - id: g
          technique: {tid}
          actor: a1
          targets: [b1]
          params: {{protocol: shh}}
        """, 8, "step g", "protocol 'shh'", "did you mean 'ssh'?")


# --------------------------------------------------------------------------- replay
def _pcap(path, pairs):
    """A pcap of one UDP packet per (src, dst) pair."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    from scapy.utils import wrpcap
    wrpcap(str(path), [Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src=s, dst=d)
                       / UDP(sport=1000, dport=53) for s, d in pairs])


def test_replay_auto_map_needs_one_target_per_pcap_address(tmp_path, topo):
    _pcap(tmp_path / "scan.pcap", [("192.0.2.1", "192.0.2.10"), ("192.0.2.1", "192.0.2.11"),
                                   ("192.0.2.10", "192.0.2.1")])
    refused(tmp_path, topo, """\
        - id: rp
          technique: replay
          actor: a1
          targets: [a2]
          params: {pcap: scan.pcap}
        """, 7, "step rp", "2 addresses besides its first source", "1 target(s)")
    passes(tmp_path, topo, """\
        - id: rp
          technique: replay
          actor: a1
          targets: [a2, a3]
          params: {pcap: scan.pcap}
        """)


def test_replay_explicit_map_covers_every_address_and_maps_only_to_actor_or_targets(
        tmp_path, topo):
    _pcap(tmp_path / "two.pcap", [("192.0.2.1", "192.0.2.10")])
    a1, a2 = (str(topo.nodes[n].ip) for n in ("a1", "a2"))
    refused(tmp_path, topo, f"""\
        - id: rp
          technique: replay
          actor: a1
          targets: [a2]
          params: {{pcap: two.pcap, ip_map: {{192.0.2.1: {a1}}}}}
        """, 8, "step rp", "pcap addresses not in ip_map: 192.0.2.10")
    msg = refused(tmp_path, topo, f"""\
        - id: rp
          technique: replay
          actor: a1
          targets: [a2]
          params: {{pcap: two.pcap, ip_map: {{192.0.2.1: {a1}, 192.0.2.10: 10.71.2.5}}}}
        """, 8, "step rp", "ip_map maps to 10.71.2.5", "neither the actor")
    assert a1 not in msg.split("maps to")[1]
    passes(tmp_path, topo, f"""\
        - id: rp
          technique: replay
          actor: a1
          targets: [a2]
          params: {{pcap: two.pcap, ip_map: {{192.0.2.1: {a1}, 192.0.2.10: {a2}}}}}
        """)


def test_replay_of_a_file_that_is_not_a_pcap_is_refused(tmp_path, topo):
    (tmp_path / "notes.pcap").write_text("these are not packets\n")
    refused(tmp_path, topo, """\
        - id: rp
          technique: replay
          actor: a1
          targets: [a2]
          params: {pcap: notes.pcap}
        """, 8, "step rp", "not a pcap file")


def test_the_shipped_replay_pcap_maps_as_at_run_time():
    """The address order validate reads (dpkt) is the replay's own (scapy)."""
    from cyberrange.attack.constraints import pcap_addresses
    from cyberrange.attack.techniques.replay import read_ipv4
    pcap = str(ROOT / "attack_playbooks" / "pcaps" / "worm_scan.pcap")
    pkts = read_ipv4(pcap, 100000, [])
    assert pcap_addresses(pcap, 100000) == list(dict.fromkeys(
        a for p in pkts for a in (p.src, p.dst)))

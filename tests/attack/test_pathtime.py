"""Answer waits follow the path (pure: the model, the loader, the runner with a stub agent).

Found by a drill on a topology nobody here wrote for: from a brigade CP behind a 600 ms GEO
link, a ping sweep and a SYN scan with their default 1 s timeout ended ``blocked`` ("a firewall
on the path drops them") though the firewall allowed both: the answers came after the wait."""
from __future__ import annotations

import textwrap

import pytest
from test_playbook_engine import StubRunner

from cyberrange.attack.pathtime import _clear_of_rto, round_trip_s, stretch_waits
from cyberrange.attack.playbook import load_playbook
from cyberrange.attack.runner import run_playbook
from cyberrange.model.loader import load_topology

TOPO = """
version: 2
name: geo-lab
classification: SECRET
zones:
  hq:  {subnet: 10.1.0.0/24}
  cp:  {subnet: 10.2.0.0/24}
links:
  - {name: geo, endpoints: [hq-rtr, cp-rtr], subnet: 192.0.2.0/30,
     profile: {bandwidth: 1, delay: 600, jitter: 30}}
nodes:
  - {name: hq-ws, kind: host, zone: hq}
  - {name: cp-ws, kind: host, zone: cp}
  - {name: cp-ws2, kind: host, zone: cp}
  - {name: hq-rtr, kind: router, interfaces: [{zone: hq}]}
  - {name: cp-rtr, kind: router, interfaces: [{zone: cp}]}
"""


@pytest.fixture
def geo(tmp_path):
    p = tmp_path / "geo.yaml"
    p.write_text(TOPO)
    return load_topology(p)


def test_round_trip_over_the_geo_link(geo):
    ip = str(geo.nodes["hq-ws"].ip)
    rtt, where = round_trip_s(geo, "cp-ws", [ip, f"{ip}:22"])
    assert where == "geo"
    assert rtt == pytest.approx(2 * (0.63 + 100 * 8 / 1e6), abs=1e-6)
    assert round_trip_s(geo, "cp-ws", [str(geo.nodes["cp-ws2"].ip)]) == (0.0, None)


def test_default_wait_is_raised_a_given_one_kept(geo):
    ip = str(geo.nodes["hq-ws"].ip)
    params, note = stretch_waits("T1018", {"timeout": 1.0, "rate": 500}, frozenset(), geo,
                                 "cp-ws", [ip])
    assert params == {"timeout": 2.2, "rate": 500}          # 1.5 x 1.2616 + 0.3
    assert "raised to 2.2 s" in note and "slowest hop geo" in note
    assert stretch_waits("T1018", {"timeout": 1.0}, frozenset({"timeout"}), geo, "cp-ws",
                         [ip]) == ({"timeout": 1.0}, None)
    assert stretch_waits("T1018", {"timeout": 1.0}, frozenset(), geo, "cp-ws",
                         [str(geo.nodes["cp-ws2"].ip)]) == ({"timeout": 1.0}, None)
    assert stretch_waits("T1110.001", {"io_timeout": 5.0}, frozenset(), geo, "cp-ws",
                         [ip]) == ({"io_timeout": 5.0}, None)


def test_runner_sends_the_stretched_wait_and_keeps_a_written_one(geo, tmp_path):
    pb = tmp_path / "pb.yaml"
    pb.write_text(textwrap.dedent("""
        version: 2
        name: over-geo
        steps:
          - {id: sweep, technique: T1018, actor: cp-ws, targets: [hq-ws]}
          - {id: scan, technique: T1046, actor: cp-ws, targets: [hq-ws], params: {timeout: 0.5}}
        """).lstrip())
    playbook = load_playbook(pb)
    assert playbook.steps[0].given == frozenset() and playbook.steps[1].given == {"timeout"}
    stub = StubRunner(tmp_path, {}, topo=geo)
    run_playbook(playbook, geo, stub, tmp_path / "l.jsonl", "r")
    assert [c["req"]["params"]["timeout"] for c in stub.calls()] == [2.2, 0.5]
    note = (tmp_path / "logs" / "agent-sweep-cp-ws-0.err").read_text()
    assert note.startswith("runner: params.timeout 1 s (the default) raised to 2.2 s")


def test_connect_timeouts_follow_the_path_clear_of_syn_retransmissions(geo):
    """Connect scans, banner grabs, guessing and SSH logins wait for a TCP handshake (one
    round trip): behind a slow path their default connect timeout is raised, and never left
    within 0.3 s of a SYN retransmission (1, 3, 7 s), which would make the SYNs counted vary."""
    ip = str(geo.nodes["hq-ws"].ip)
    p, note = stretch_waits("T1046-connect", {"timeout": 1.5, "rate": 200}, frozenset(), geo,
                            "cp-ws", [f"{ip}:22"])
    assert p == {"timeout": 2.2, "rate": 200} and "params.timeout 1.5 s" in note
    p, _ = stretch_waits("T1046-banner", {"connect_timeout": 1.5, "timeout": 3.0},
                         frozenset(), geo, "cp-ws", [ip])
    assert p == {"connect_timeout": 2.2, "timeout": 3.0}
    # 2.5 s already covers 1.5 x 1.26 + 0.3: unchanged; a given one is kept
    assert stretch_waits("T1110.001", {"connect_timeout": 2.5}, frozenset(), geo, "cp-ws",
                         [ip]) == ({"connect_timeout": 2.5}, None)
    assert stretch_waits("T1021.004", {"connect_timeout": 1.0}, frozenset({"connect_timeout"}),
                         geo, "cp-ws", [ip]) == ({"connect_timeout": 1.0}, None)
    # a wait that would land on a SYN retransmission is moved past it
    assert [_clear_of_rto(x) for x in (0.9, 2.2, 2.8, 3.0, 3.2, 6.9)] == \
        [1.5, 2.2, 3.5, 3.5, 3.5, 7.5]

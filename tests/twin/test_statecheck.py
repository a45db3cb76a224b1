"""`twin verify --outage`: after a live link state change, the twin's routes and the paths the
model says change are compared with the model of that state (twin/statecheck.py)."""
from __future__ import annotations

import pytest
from helpers import needs_twin

from cyberrange.errors import UserError
from cyberrange.model.loader import load_topology
from cyberrange.twin.build import Twin
from cyberrange.twin.statecheck import states_for, verify_states

# r1 and r2 joined by two links; static routes take a-slow (its name sorts first), so an outage
# of a-slow cuts lan-a from lan-c (static routes do not fail over) and one of b-fast changes
# nothing. r3 hangs off r2.
SMALL = """\
version: 2
name: twolinks
classification: UNCLASSIFIED
zones:
  lan-a: {subnet: 10.1.1.0/24, profile: lan}
  lan-c: {subnet: 10.1.3.0/24, profile: lan}
links:
  - {name: a-slow, endpoints: [r1, r2], subnet: 172.16.0.0/30, profile: wan}
  - {name: b-fast, endpoints: [r1, r2], subnet: 172.16.0.4/30, profile: wan}
  - {name: tail, endpoints: [r2, r3], subnet: 172.16.0.8/30, profile: lan}
nodes:
  - {name: a1, kind: host, role: workstation, zone: lan-a}
  - {name: c1, kind: host, role: server, zone: lan-c, services: [{type: http, port: 80}]}
  - {name: r1, kind: router, interfaces: [{zone: lan-a, ip: 10.1.1.1}]}
  - {name: r2, kind: router}
  - {name: r3, kind: router, interfaces: [{zone: lan-c, ip: 10.1.3.1}]}
"""


@pytest.fixture
def small(tmp_path):
    p = tmp_path / "twolinks.yaml"
    p.write_text(SMALL)
    return load_topology(p)


def test_states_for_checks_names_and_lists_every_single_outage(small):
    assert states_for(small, ["a-slow,b-fast"]) == [frozenset({"a-slow", "b-fast"})]
    every = states_for(small, ["a-slow"], every=True)
    assert every[0] == frozenset({"a-slow"}) and frozenset({"tail"}) in every
    assert every.count(frozenset({"a-slow"})) == 1
    with pytest.raises(UserError, match=r"--outage: no link or zone named 'a-slwo'.*a-slow"):
        states_for(small, ["a-slwo"])


def _ip(topo, node, zone):
    return next(str(i.ip) for i in topo.nodes[node].interfaces if i.zone == zone)


@needs_twin
def test_static_outage_agrees_and_a_route_the_model_lacks_is_caught(small, tmp_path):
    twin = Twin(small, tmp_path, "test-statecheck", log=lambda m: None).start()
    try:
        rows = verify_states(twin, [frozenset({"a-slow"}), frozenset({"b-fast"})])
        # sabotage: both routers route around the outage by hand (a backup the model lacks)
        for node, net, peer in (("r1", "10.1.3.0/24", "r2"), ("r2", "10.1.1.0/24", "r1")):
            r = twin.run(node, ["ip", "route", "replace", net, "via", _ip(small, peer, "b-fast")])
            assert r.returncode == 0, r.stderr
        sabotaged = verify_states(twin, [frozenset({"a-slow"})])[0]
    finally:
        twin.stop()
    cut, spare = rows
    assert cut["routing"] == "static" and cut["lost_pairs"] == 2 and cut["agree"], cut
    assert cut["probes"] and not any(p["predicted"] or p["observed"] for p in cut["probes"])
    assert {p["service"] for p in cut["probes"]} == {"icmp", "http"}
    assert spare["lost_pairs"] == 0 and spare["probes"] == [] and spare["agree"]
    assert not sabotaged["agree"]
    wrong = [p for p in sabotaged["probes"] if not p["agree"]]
    assert wrong and all(p["observed"] and not p["predicted"] for p in wrong)

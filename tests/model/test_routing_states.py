"""Routes per link state (issue 19 item 3): static routes do not fail over, OSPF reroutes by
interface cost; ``topo outages`` says which paths each outage cuts or moves. Pure: no twin.

The OSPF topologies are made by setting ``routing`` on a loaded topology (``_ospf``), so the
tests do not depend on the topology schema's ``routing:`` key."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from helpers import ROOT

from cyberrange.cli.topo import topo as topo_group
from cyberrange.errors import UserError
from cyberrange.model.lint import lint
from cyberrange.model.loader import load_topology
from cyberrange.model.outages import outage, single_outages, zone_paths
from cyberrange.model.reach import ReachIndex, allowed, reach_matrix
from cyberrange.model.routing import (
    _ospf_cost,
    compute_routes,
    down_names,
    equal_cost_routes,
    in_state,
    router_path,
    routing_protocol,
)

BRIGADE = ROOT / "topologies" / "brigade.yaml"

# r1 and r2 joined by two links: a-slow (SATCOM, 8 Mbit/s: cost 125) sorts first by name, so
# static routes take it; b-fast (WAN, 100 Mbit/s: cost 10) is cheaper, so OSPF takes it.
# r3 hangs off r2 by tail (tactical mesh, 2 Mbit/s: cost 500).
SMALL = """\
version: 2
name: twolinks
classification: UNCLASSIFIED
zones:
  lan-a: {subnet: 10.1.1.0/24, profile: lan}
  lan-c: {subnet: 10.1.3.0/24, profile: lan}
links:
  - {name: a-slow, endpoints: [r1, r2], subnet: 172.16.0.0/30, profile: satcom-geo}
  - {name: b-fast, endpoints: [r1, r2], subnet: 172.16.0.4/30, profile: wan}
  - {name: tail, endpoints: [r2, r3], subnet: 172.16.0.8/30, profile: tactical-mesh}
nodes:
  - {name: a1, kind: host, role: workstation, zone: lan-a}
  - {name: c1, kind: host, role: server, zone: lan-c, services: [{type: http, port: 80}]}
  - {name: r1, kind: router, interfaces: [{zone: lan-a, ip: 10.1.1.1}]}
  - {name: r2, kind: router}
  - {name: r3, kind: router, interfaces: [{zone: lan-c, ip: 10.1.3.1}]}
missions:
  web: "a1 -> c1 tcp/80"
"""


def _ospf(t):
    """The topology with OSPF routing, routes recomputed (as the loader will once the schema
    has ``routing:``)."""
    t.routing = SimpleNamespace(protocol="ospf", hello_s=1, dead_s=4)
    compute_routes(t)
    return t


@pytest.fixture
def small(tmp_path):
    p = tmp_path / "twolinks.yaml"
    p.write_text(SMALL)
    return load_topology(p)


@pytest.fixture
def brigade():
    return load_topology(BRIGADE)


def names(path):
    return [n.name for n in path]


def links_of(t, src, dst):
    from cyberrange.model.outages import pair_path
    p = pair_path(t, t.nodes[src], t.nodes[dst])
    return list(p.there.links) if p.ok else None


# -- costs ------------------------------------------------------------------------------------
def test_costs_from_profiles(brigade, small):
    assert _ospf_cost(brigade, "bde-los") == 15625        # VHF 64 kbit/s
    assert _ospf_cost(brigade, "bde-skywave") == 65535    # HF 9.6 kbit/s: 104167, clamped
    assert _ospf_cost(brigade, "bn1-mesh") == 500         # 2 Mbit/s
    assert _ospf_cost(brigade, "main-c2") == 1            # lan, 1 Gbit/s
    assert [_ospf_cost(small, z) for z in ("a-slow", "b-fast", "tail")] == [125, 10, 500]
    small.zones["lan-a"].profile = None                   # no profile: 1 Gbit/s
    assert _ospf_cost(small, "lan-a") == 1


def test_explicit_cost_wins_link_before_zone(small):
    small.links["a-slow"].cost = 7
    small.zones["a-slow"].cost = 9
    assert _ospf_cost(small, "a-slow") == 7
    small.zones["lan-c"].cost = 40
    assert _ospf_cost(small, "lan-c") == 40


# -- static: no failover --------------------------------------------------------------------
def test_static_is_the_default_and_keeps_todays_routes(small, brigade):
    assert routing_protocol(small) == "static" and routing_protocol(brigade) == "static"
    assert links_of(small, "a1", "c1") == ["a-slow", "tail"]          # ties by name
    assert links_of(brigade, "tac-ws1", "bde-c2") == ["bde-los", "main-transit"]
    before = {r.name: list(r.routes) for r in brigade.routers}
    compute_routes(brigade, frozenset())                              # the old call still works
    assert {r.name: r.routes for r in brigade.routers} == before


def test_static_outage_of_bde_los_cuts_tac_from_main(brigade):
    s = in_state(brigade, {"bde-los"})
    ok, why = allowed(s, "tac-ws1", "bde-c2", "tcp", 8080)
    assert not ok and "tac-rtr has no route" in why and "bde-los is down" in why
    assert ReachIndex(s).check("tac-ws1", "bde-c2", "tcp", 8080)[0] is False
    assert allowed(brigade, "tac-ws1", "bde-c2", "tcp", 8080)[0]      # the original is unchanged
    # routes across the down link are withdrawn, and nothing replaces them
    assert all(str(via) not in ("172.16.30.1", "172.16.30.5")
               for _, via in s.nodes["tac-rtr"].routes)
    o = outage(brigade, {"bde-los"})
    assert ("tac-lan", "main-c2") in {(c.src, c.dst) for c in o.lost} and not o.rerouted
    assert "cop-forward" in {m.mission for m in o.missions}
    assert not outage(brigade, {"bde-skywave"}).lost


def test_static_withdrawn_route_is_not_replaced_by_the_backup(small):
    s = in_state(small, {"a-slow"})
    assert links_of(s, "a1", "c1") is None
    assert not allowed(s, "a1", "c1", "tcp", 80)[0]


# -- OSPF: shortest path by interface cost ----------------------------------------------------
def test_ospf_takes_the_cheaper_link_and_fails_over(small):
    _ospf(small)
    assert links_of(small, "a1", "c1") == ["b-fast", "tail"]
    assert links_of(in_state(small, {"b-fast"}), "a1", "c1") == ["a-slow", "tail"]
    assert links_of(in_state(small, {"b-fast", "a-slow"}), "a1", "c1") is None
    assert links_of(in_state(small, {"tail"}), "a1", "c1") is None
    gone = in_state(small, {"b-fast", "a-slow"})
    assert not [rt for rt in gone.nodes["r1"].routes if rt[0] == small.zones["lan-c"].subnet]


def test_ospf_brigade_fails_over_to_skywave(brigade):
    _ospf(brigade)
    assert names(router_path(brigade, "tac-ws1", brigade.nodes["bde-c2"].ip)) == \
        ["tac-rtr", "main-rtr", "main-fw"]
    assert links_of(brigade, "tac-ws1", "bde-c2") == ["bde-los", "main-transit"]
    los = in_state(brigade, {"bde-los"})
    assert links_of(los, "tac-ws1", "bde-c2") == ["bde-skywave", "main-transit"]
    assert allowed(los, "tac-ws1", "bde-c2", "tcp", 8080)[0]
    both = in_state(brigade, {"bde-los", "bde-skywave"})
    assert links_of(both, "tac-ws1", "bde-c2") is None
    assert not allowed(both, "tac-ws1", "bde-c2", "tcp", 8080)[0]
    o = outage(brigade, {"bde-los"})
    assert not o.lost and not o.missions
    moved = {(c.src, c.dst): (c.before.there.links, c.after.there.links) for c in o.rerouted}
    assert moved[("tac-lan", "main-c2")] == (("bde-los", "main-transit"),
                                             ("bde-skywave", "main-transit"))
    assert len(moved) == 18                      # 3 forward zones x 3 MAIN enclaves, both ways
    o = outage(brigade, {"bde-los", "bde-skywave"})
    assert len(o.lost) == 18 and {m.mission for m in o.missions} >= {"cop-forward", "tac-fires"}


def test_ospf_reach_matrix_and_lint_read_the_state(brigade):
    _ospf(brigade)
    both = in_state(brigade, {"bde-los", "bde-skywave"})
    m = reach_matrix(both, "tac-lan", "main-c2").to_json()
    assert not any(c["allowed"] for c in m["matrix"]["tac-lan"].values())
    assert "mission-blocked" in {f.code for f in lint(both)}
    assert "mission-blocked" not in {f.code for f in lint(in_state(brigade, {"bde-los"}))}


def test_only_touched_pairs_are_walked_again(brigade):
    """outage() re-walks only the pairs whose path crossed a down zone: the same answer as
    walking every pair in the state, for every single outage of every zone, static and OSPF."""
    for t in (brigade, _ospf(load_topology(BRIGADE))):
        base = zone_paths(t)
        for name in t.zones:
            full = zone_paths(in_state(t, {name}), list(base))
            o = outage(t, {name}, base)
            assert {(c.src, c.dst) for c in o.lost} == \
                {p for p in base if base[p].ok and not full[p].ok}, name
            assert {(c.src, c.dst) for c in o.rerouted} == \
                {p for p in base if base[p].ok and full[p].ok and full[p] != base[p]}, name


# -- equal-cost next hops ---------------------------------------------------------------------
def test_equal_cost_next_hops_warn_once_per_router_and_zone(small):
    assert equal_cost_routes(small) == []                        # static: one next hop
    small.links["a-slow"].cost = small.links["b-fast"].cost = 10
    _ospf(small)
    ties = {(t.router, t.zone): t.hops for t in equal_cost_routes(small)}
    assert ties == {("r1", "lan-c"): (("r2", "a-slow"), ("r2", "b-fast")),
                    ("r1", "tail"): (("r2", "a-slow"), ("r2", "b-fast")),
                    ("r2", "lan-a"): (("r1", "a-slow"), ("r1", "b-fast"))}
    found = [f for f in lint(small) if f.code == "equal-cost-route"]
    assert len(found) == 3 and all(f.severity == "warning" for f in found)
    assert "the twin may use either" in found[0].message
    assert links_of(small, "a1", "c1") == ["a-slow", "tail"]     # the model follows the first
    small.links["b-fast"].cost = 11                              # no longer equal
    assert equal_cost_routes(small) == []


# -- names ------------------------------------------------------------------------------------
def test_down_names_are_checked(brigade):
    assert down_names(brigade, "bde-los, main-transit") == {"bde-los", "main-transit"}
    with pytest.raises(UserError, match=r"no link or zone named 'bde-loss'.*did you mean 'bde-los'"):
        down_names(brigade, "bde-loss")
    assert single_outages(brigade) == ["bde-los", "bde-skywave", "bn1-mesh", "bn2-mesh",
                                       "main-transit"]


# -- CLI ----------------------------------------------------------------------------------------
def run(*args):
    return CliRunner().invoke(topo_group, [*map(str, args)], catch_exceptions=True)


def test_cli_outages_table():
    r = run("outages", BRIGADE)
    assert r.exit_code == 0, r.output
    assert "static routes: no failover" in r.output and "5 outage states" in r.output
    assert "main-c2 ⇄ tac-lan" in r.output and "no route at main-rtr" in r.output
    assert "cop-forward 2/2" in r.output


def test_cli_outages_json_and_down():
    r = run("outages", BRIGADE, "--down", "bde-los,bde-skywave", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["protocol"] == "static" and len(doc["outages"]) == 1
    o = doc["outages"][0]
    assert o["down"] == ["bde-los", "bde-skywave"]
    lost = {(c["from"], c["to"]) for c in o["lost"]}
    assert ("tac-lan", "main-c2") in lost and len(lost) == 18
    assert {m["mission"] for m in o["missions_lost"]} >= {"cop-forward", "call-for-fire"}


def test_cli_outages_ospf(monkeypatch):
    from cyberrange.model import loader
    real = loader.load_topology
    monkeypatch.setattr(loader, "load_topology", lambda f: _ospf(real(f)))
    r = run("outages", BRIGADE, "--down", "bde-los")
    assert r.exit_code == 0, r.output
    assert "ospf routing" in r.output and "bde-skywave › main-transit" in r.output


def test_cli_bad_link_name_is_exit_2(capsys):
    from cyberrange.cli import main as cli_main
    with pytest.raises(SystemExit) as done:
        cli_main.main(["topo", "outages", str(BRIGADE), "--down", "bde-loss"])
    out, err = capsys.readouterr()
    assert done.value.code == 2 and out == ""
    assert "no link or zone named 'bde-loss'" in err and "did you mean 'bde-los'" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    with pytest.raises(SystemExit) as done:
        cli_main.main(["topo", "outages", str(BRIGADE), "--down", "nope", "--json"])
    out, _ = capsys.readouterr()
    assert done.value.code == 2 and "no link or zone named 'nope'" in json.loads(out)["error"]


def test_cli_reach_and_paths_take_down():
    r = run("reach", BRIGADE, "--from", "tac-ws1", "--to", "bde-c2", "--port", "8080",
            "--down", "bde-los", "--json")
    assert r.exit_code == 1 and json.loads(r.output)["allowed"] is False
    r = run("reach", BRIGADE, "--from", "tac-ws1", "--to", "bde-c2", "--port", "8080")
    assert r.exit_code == 0
    r = run("paths", BRIGADE, "--down", "bn2-mesh", "--json")
    assert r.exit_code == 0 and json.loads(r.output)["paths"] == []   # bn2-fsr is cut off
    assert json.loads(run("paths", BRIGADE, "--json").output)["paths"]


def test_a_down_zone_cuts_its_own_hosts_too(brigade):
    o = outage(brigade, {"main-c2"})
    assert "cop-main" in {m.mission for m in o.missions}        # main-ws* -> bde-c2, one zone
    lost = {(c.src, c.dst): c for c in o.lost}
    assert lost[("main-c2", "main-fires")].after.stop == "main-c2 is down"
    assert lost[("main-c2", "main-fires")].before.there.link_text() == "via main-fw"
    ok, why = allowed(in_state(brigade, {"main-c2"}), "main-ws1", "bde-c2", "tcp", 8080)
    assert not ok and "main-c2, which is down" in why


def test_the_matrix_index_reads_a_down_zone_too(brigade):
    """ReachIndex (the matrix, mission-blocked) used to answer "same zone" before the state."""
    tac = sorted(n.name for n in brigade.hosts if n.interfaces[0].zone == "tac-lan")
    assert ReachIndex(brigade).check(tac[0], brigade.nodes[tac[1]].ip, "icmp", None)[0]
    ix = ReachIndex(in_state(brigade, {"tac-lan"}))
    ok, why = ix.check(tac[0], brigade.nodes[tac[1]].ip, "icmp", None)
    assert not ok and "tac-lan is down" in why
    ok, why = ix.check("bde-c2", brigade.nodes[tac[1]].ip, "icmp", None)
    assert not ok and "tac-lan is down" in why
    assert ix.check("bde-c2", brigade.nodes["bde-dns"].ip, "icmp", None)[0]   # elsewhere: as before

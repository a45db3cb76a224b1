"""Static reachability (routes + ordered firewall rules) on the FOB and on tests/data/good/reach.yaml.

reach.yaml lists its expected verdicts in ``# reach:`` comment lines; the twin's live test reads
the same file, so static analysis and real packets are held to one table.
"""
from __future__ import annotations

import re
import subprocess
import sys

import pytest
from helpers import ROOT

from cyberrange.errors import UserError
from cyberrange.model.loader import load_topology
from cyberrange.model import reach
from cyberrange.model.reach import allowed, decide, matrix

FOB = ROOT / "topologies" / "fob.yaml"
REACH = ROOT / "tests" / "data" / "good" / "reach.yaml"


@pytest.fixture(scope="module")
def fob():
    return load_topology(FOB)


@pytest.mark.parametrize("src,dst,proto,port,ok,why", [
    ("ops-maint", "c2-server", "tcp", 8080, True, "fob-fw rule 1"),
    ("ops-maint", "c2-server", "tcp", 22, False, "fob-fw rule 4"),
    ("ops-maint", "cp-dns", "udp", 53, True, "fob-fw rule 2"),
    ("cp-ws1", "ops-files", "tcp", 22, True, "fob-fw rule 5"),
    ("hq-portal", "c2-server", "tcp", 22, False, "fob-fw default deny"),
    ("hq-portal", "c2-server", "tcp", 8080, True, "fob-fw rule 7"),
    ("ops-ws1", "cp-ws1", "icmp", None, True, "fob-fw rule 3"),
    ("ops-maint", "c2-server", "icmp", None, True, "fob-fw rule 3"),
    ("ops-maint", "ops-files", "tcp", 22, True, "path ops-maint -> 10.10.2.20"),   # same LAN
    ("ops-maint", "dmz-web", "tcp", 80, True, "fob-fw rule 6"),
    ("dmz-web", "ops-files", "tcp", 22, False, "fob-fw default deny"),
    ("dmz-web", "hq-portal", "tcp", 443, True, "path dmz-web -> comms-rtr -> hq-rtr"),
    ("hq-portal", "cp-dns", "udp", 53, True, "fob-fw rule 8"),
])
def test_fob(fob, src, dst, proto, port, ok, why):
    verdict, reason = allowed(fob, src, fob.nodes[dst].ip, proto, port)
    assert verdict is ok, reason
    assert why in reason


def test_router_source_and_router_destination(fob):
    # a router's own traffic is not forwarded by itself; comms-rtr -> c2-server crosses fob-fw
    ok, why = allowed(fob, "comms-rtr", "10.10.1.10", "tcp", 22)
    assert not ok and "fob-fw default deny" in why
    # traffic addressed to the firewall itself is input, not forward
    ok, why = allowed(fob, "ops-maint", "10.10.1.1", "tcp", 22)
    assert ok and "input" in why


def test_no_route(fob):
    ok, why = allowed(fob, "ops-maint", "192.168.7.7", "tcp", 80)
    assert not ok and "not in any zone" in why


def test_bad_queries(fob):
    with pytest.raises(UserError, match="did you mean 'ops-maint'"):
        allowed(fob, "ops-mant", "10.10.1.10", "tcp", 80)
    with pytest.raises(UserError, match="needs a port"):
        allowed(fob, "ops-maint", "10.10.1.10", "tcp", None)
    with pytest.raises(UserError, match="neither a node nor"):
        allowed(fob, "ops-maint", "c2-srv", "tcp", 80)


def test_first_match_wins(fob):
    fw = fob.nodes["fob-fw"]
    import ipaddress
    src, dst = ipaddress.ip_address("10.10.2.66"), ipaddress.ip_address("10.10.1.10")
    # rule 1 (allow 8080) comes before rule 4 (deny ops -> cp): first match decides
    assert decide(fw, src, dst, "tcp", 8080)[0] is True
    assert decide(fw, src, dst, "tcp", 8081)[0] is False


def reach_table() -> list[tuple[bool, str, str, str, int | None]]:
    rows = []
    for line in REACH.read_text().splitlines():
        m = re.match(r"# reach: (allow|deny)\s+(\S+) -> (\S+) (tcp|udp|icmp)(?:/(\d+))?", line)
        if m:
            rows.append((m[1] == "allow", m[2], m[3], m[4], int(m[5]) if m[5] else None))
    return rows


def test_reach_table_is_there():
    rows = reach_table()
    assert len(rows) >= 10
    assert {ok for ok, *_ in rows} == {True, False}


@pytest.mark.parametrize("ok,src,dst,proto,port", reach_table(),
                         ids=lambda v: str(v))
def test_reach_yaml(ok, src, dst, proto, port):
    topo = load_topology(REACH)
    verdict, why = allowed(topo, src, topo.nodes[dst].ip, proto, port)
    assert verdict is ok, why
    if port is not None:   # every expected pair names a service that listens there
        assert any(s.port == port and s.proto == proto for s in topo.nodes[dst].services)


def test_matrix_agrees_with_allowed():
    topo = load_topology(REACH)
    rows = matrix(topo)
    assert rows
    n_hosts = len(topo.hosts)
    services = sum(len(h.services) for h in topo.hosts)
    assert len(rows) == n_hosts * (n_hosts - 1) + (n_hosts - 1) * services
    for r in rows:
        assert allowed(topo, r.src, topo.nodes[r.dst].ip, r.proto, r.port)[0] == r.allowed


def test_cli_reach():
    base = [sys.executable, "-m", "cyberrange.cli.main", "topo", "reach", str(FOB)]
    proc = subprocess.run(base + ["--from", "ops-maint", "--to", "c2-server", "--port", "8080"],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0 and "allowed" in proc.stdout
    proc = subprocess.run(base + ["--from", "ops-maint", "--to", "10.10.1.10", "--port", "22"],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 1 and "denied" in proc.stdout
    proc = subprocess.run(base + ["--from", "nobody", "--to", "c2-server", "--port", "22"],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith("error: unknown node 'nobody'")


# -- asymmetric routes: a reply that comes back through a firewall that never saw the request --

V2_FULL = ROOT / "tests" / "data" / "v2" / "good" / "full.yaml"


def test_reply_through_another_firewall_is_denied():
    from cyberrange.model.reach import ReachIndex
    topo = load_topology(V2_FULL)
    ok, why = reach.allowed(topo, "plt7-ws1", "c2-server", "tcp", 8080)
    assert not ok and "on the way back" in why and "plt1-fw" in why
    # platoon 1 is routed symmetrically: same request, allowed
    ok1, _ = reach.allowed(topo, "plt1-ws1", "c2-server", "tcp", 8080)
    assert ok1
    idx = ReachIndex(topo)
    for src in ("plt7-ws1", "plt1-ws1", "plt2-ws1"):
        for dst, proto, port in (("c2-server", "tcp", 8080), ("srv-host", "icmp", None)):
            assert idx.check(src, dst, proto, port)[0] == reach.allowed(topo, src, dst, proto, port)[0]

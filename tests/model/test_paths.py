"""Attack paths (cyberrange.model.paths), the address-class reachability index and matrix
(cyberrange.model.reach.ReachIndex / reach_matrix), and the topo reach / paths commands."""
from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest
import yaml
from helpers import ROOT

from cyberrange.model.generate import annotate, generate
from cyberrange.model.loader import load_topology
from cyberrange.model.paths import SERVICE_WEIGHT, attack_graph, attack_paths
from cyberrange.model.reach import ReachIndex, allowed, reach_matrix

FOB = ROOT / "topologies" / "fob.yaml"
REACH = ROOT / "tests" / "data" / "good" / "reach.yaml"


def cli(*args):
    return subprocess.run([sys.executable, "-m", "cyberrange.cli.main", *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT)


@pytest.fixture(scope="module")
def fob():
    return load_topology(FOB)


@pytest.fixture(scope="module")
def gen(tmp_path_factory):
    """A generated 300-node brigade: rules naming single hosts and a /27 split its zones."""
    p = tmp_path_factory.mktemp("gen") / "gen300.yaml"
    p.write_text(generate(300, seed=5))
    t = load_topology(p)
    annotate(t)
    return t


# -- the fast index gives allowed()'s verdict -------------------------------------------------
def _probes(t):
    for s in t.hosts:
        for d in t.hosts:
            if s is d:
                continue
            yield s, d, "icmp", None
            for svc in d.services:
                yield s, d, svc.proto, svc.port
            yield s, d, "tcp", 9999


@pytest.mark.parametrize("path", [FOB, REACH])
def test_index_equals_allowed_on_every_pair(path):
    t = load_topology(path)
    ix = ReachIndex(t)
    n = 0
    for s, d, proto, port in _probes(t):
        assert ix.check(s.name, d.ip, proto, port)[0] == allowed(t, s.name, d.ip, proto, port)[0], \
            (s.name, d.name, proto, port)
        n += 1
    assert n > 50


def test_index_equals_allowed_on_a_generated_brigade(gen):
    ix = ReachIndex(gen)
    assert any(len(c) > 0 for c in ix.cuts.values())      # some zones are split by rules
    rnd = random.Random(3)
    probes = list(_probes(gen))
    for s, d, proto, port in rnd.sample(probes, 3000):
        assert ix.check(s.name, d.ip, proto, port)[0] == allowed(gen, s.name, d.ip, proto, port)[0], \
            (s.name, d.name, proto, port)


def test_matrix_cells_agree_with_allowed(fob):
    m = reach_matrix(fob)
    assert [r.name for r in m.rows] == ["cp-lan", "ops-lan", "dmz", "hq-lan"]
    for row, cells in zip(m.rows, m.cells):
        for col, (ok, total, _) in zip(m.columns, cells):
            expect = sum(allowed(fob, h, fob.nodes[col.node].ip, col.proto, col.port)[0]
                         for h in row.hosts if h != col.node)
            assert (ok, total) == (expect, len(row.hosts - {col.node})), (row.name, col.label)
    cell = m.cells[1][[c.label for c in m.columns].index("c2-server:tcp/22")]
    assert m.state(cell) == "deny" and "fob-fw rule 4" in cell[2]


def test_matrix_partial_zone(gen):
    """bn1-cp-admin may ssh anywhere (rule 2): its zone's row is 'partial' for remote ssh."""
    m = reach_matrix(gen, "bn1-cp", "bde-files")
    ssh = [c for c in m.columns if c.port == 22][0]
    k = m.columns.index(ssh)
    ok, total, _ = m.cells[0][k]
    assert m.state(m.cells[0][k]) == "partial" and ok == 1 and total > 1


def test_matrix_filters_and_errors(fob):
    m = reach_matrix(fob, "ops-maint", "cp-lan")
    assert [r.name for r in m.rows] == ["ops-maint"] and m.rows[0].kind == "node"
    assert {c.node for c in m.columns} == {"c2-server", "cp-dns", "cp-ws1", "cp-ws2"}
    from cyberrange.errors import UserError
    with pytest.raises(UserError, match="did you mean 'cp-lan'"):
        reach_matrix(fob, "cp-lam")
    with pytest.raises(UserError, match="is a firewall"):
        reach_matrix(fob, "fob-fw")


# -- attack paths ----------------------------------------------------------------------------
def test_fob_paths_are_what_the_firewall_allows(fob):
    paths = attack_paths(fob, ["ops-maint"], ["c2-server"], k=10)
    assert len(paths) == 10
    assert paths[0].text() == "ops-maint —http/8080→ c2-server"
    assert paths[1].text() == "ops-maint —login/22→ ops-files —http/8080→ c2-server"
    ops_lan = {n.name for n, _ in fob.members("ops-lan")}
    for p in paths:
        assert p.nodes[0] == "ops-maint" and p.nodes[-1] == "c2-server"
        for h in p.hops:
            ok, why = allowed(fob, h.src, fob.nodes[h.dst].ip, h.proto, h.port)
            assert ok, (p.text(), why)
            svc = next(s for s in fob.nodes[h.dst].services if s.port == h.port)
            assert h.weight == SERVICE_WEIGHT[svc.type]
            # the firewall denies OPS -> c2-server ssh: no path may use it from the OPS LAN
            assert not (h.dst == "c2-server" and h.port == 22 and h.src in ops_lan), p.text()
    weights = [(p.weight, len(p.hops)) for p in paths]
    assert weights == sorted(weights)
    # login/22 on the c2-server is only ever reached from inside the CP LAN
    assert any(h.dst == "c2-server" and h.port == 22 and h.src == "cp-dns"
               for p in paths for h in p.hops)


def test_paths_default_to_entry_points_and_crown_jewels(fob):
    assert fob.entry_points == ["ops-maint"] and fob.crown_jewels == ["c2-server"]
    assert attack_paths(fob, k=3)[0].text() == "ops-maint —http/8080→ c2-server"


def test_compressed_graph_gives_the_same_best_paths(gen):
    exact = attack_paths(gen, k=4, graph=attack_graph(gen, compress=False))
    small = attack_paths(gen, k=4, graph=attack_graph(gen, compress=True))
    assert [p.weight for p in exact] == [p.weight for p in small]
    assert exact[0].text() == small[0].text()
    for p in small:
        for h in p.hops:
            assert allowed(gen, h.src, gen.nodes[h.dst].ip, h.proto, h.port)[0]


def test_no_path_and_bad_names(fob):
    from cyberrange.errors import UserError
    # the mgmt zone of reach.yaml takes no new connection from anyone else
    assert attack_paths(load_topology(REACH), ["user1"], ["admin"]) == []
    # dmz -> ops-files is denied directly, but cp-dns is a stepping stone
    assert attack_paths(fob, ["dmz-web"], ["ops-files"], k=1)[0].nodes == ["dmz-web", "cp-dns", "ops-files"]
    with pytest.raises(UserError, match="did you mean 'ops-maint'"):
        attack_paths(fob, ["ops-mant"], ["c2-server"])


# -- the commands ----------------------------------------------------------------------------
def test_cli_reach_single_query_unchanged():
    r = cli("topo", "reach", FOB, "--from", "ops-maint", "--to", "c2-server", "--port", "22")
    assert r.returncode == 1 and "denied" in r.stdout and "fob-fw rule 4" in r.stdout
    r = cli("topo", "reach", FOB, "--from", "ops-maint", "--to", "c2-server", "--proto", "icmp")
    assert r.returncode == 0 and "allowed" in r.stdout


def test_cli_reach_matrix_json():
    r = cli("topo", "reach", FOB, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["matrix"]["ops-lan"]["c2-server:tcp/22"]["verdict"] == "deny"
    assert doc["matrix"]["ops-lan"]["c2-server:tcp/8080"]["verdict"] == "allow"
    assert doc["matrix"]["hq-lan"]["cp-dns:udp/53"]["verdict"] == "allow"
    r = cli("topo", "reach", FOB, "--from", "dmz")
    assert r.returncode == 0 and "c2-server http tcp/8080" in r.stdout


def test_cli_paths():
    r = cli("topo", "paths", FOB, "--from", "ops-maint", "--to", "c2-server", "--max", "3", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert [p["path"] for p in doc["paths"]][:2] == [
        "ops-maint —http/8080→ c2-server", "ops-maint —login/22→ ops-files —http/8080→ c2-server"]
    r = cli("topo", "paths", FOB)
    assert r.returncode == 0 and "login/22" in r.stdout


def test_generated_text_is_v1_and_about_the_size_asked():
    doc = yaml.safe_load(generate(1000, seed=2))
    assert doc["version"] == 1
    n = len(doc["nodes"])
    assert 950 <= n <= 1050

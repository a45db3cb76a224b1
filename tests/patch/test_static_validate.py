"""Static validation: the matrix diff equals a brute-force baseline (every cell of both sides
decided host by host with ``reach.allowed``), and every shipped example gets its verdict."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from cyberrange.cli.main import main
from cyberrange.model.loader import load_topology
from cyberrange.model.reach import ReachIndex, allowed
from cyberrange.patch.changeset import load_change
from cyberrange.patch.static import matrix_diff, static_validate

ROOT = Path(__file__).resolve().parents[2]
TOPO = ROOT / "topologies"
CHANGES = TOPO / "changes"

# example -> the verdict it must get, and the checks that must fail
EXAMPLES = {
    "fob_close_ssh_ops_c2.yaml": ("PASS", set()),
    "fob_rotate_passwords.yaml": ("PASS", set()),
    "fob_restrict_dns.yaml": ("PASS", set()),
    "air_base_plc_firmware.yaml": ("PASS", set()),
    "fob_break_cop.yaml": ("FAIL", {"mission cop"}),
    "fob_open_ssh_admin.yaml": ("FAIL", {"crown jewel c2-server"}),
    "fob_move_cop_port.yaml": ("FAIL", {"mission cop", "mission hq-cop-feed",
                                        "service c2-server http tcp/8080 -> tcp/8443"}),
    "brigade_open_fires_to_bn.yaml": ("FAIL", {"crown jewel fires-fdc", "crown jewel bde-c2"}),
    "brigade_restrict_intel.yaml": ("PASS", set()),
}


def _topology_of(change: Path) -> Path:
    cs = load_change(change)
    return TOPO / (cs.topology.replace("-", "_") + ".yaml")


def _brute_cells(topo) -> dict:
    """Every (source zone, destination node, service) cell, decided host by host."""
    out = {}
    rows: dict[str, list] = {}
    for h in topo.hosts:
        rows.setdefault(h.interfaces[0].zone, []).append(h)
    for zone, members in rows.items():
        for d in topo.hosts:
            cols = [("icmp", "icmp", None)] + [(f"{s.type} {s.proto}/{s.port}", s.proto, s.port)
                                               for s in d.services]
            for label, proto, port in cols:
                srcs = [h for h in members if h is not d]
                ok = sum(allowed(topo, h.name, d.ip, proto, port)[0] for h in srcs)
                state = ("self" if not srcs else "allow" if ok == len(srcs)
                         else "deny" if ok == 0 else "partial")
                out[(zone, d.name, label)] = state
    return out


@pytest.mark.parametrize("change", ["fob_open_ssh_admin.yaml", "fob_restrict_dns.yaml",
                                    "fob_move_cop_port.yaml", "brigade_open_fires_to_bn.yaml",
                                    "brigade_restrict_intel.yaml"])
def test_matrix_diff_equals_the_brute_force_baseline(change):
    path = CHANGES / change
    tpath = _topology_of(path)
    before = load_topology(tpath)
    after = load_topology(tpath, change=load_change(path))
    diff, total = matrix_diff(before, after, ReachIndex(before), ReachIndex(after))
    b, a = _brute_cells(before), _brute_cells(after)
    assert total == len(set(b) | set(a))
    expected = {}
    for key in set(b) | set(a):
        sb, sa = b.get(key, "absent"), a.get(key, "absent")
        if sb != sa and not {sb, sa} <= {"absent", "deny", "self"}:
            expected[key] = (sb, sa)
    got = {(c.src_zone, c.dst_node, c.service): (c.before, c.after) for c in diff}
    assert got == expected
    assert got, "each of these changes moves some cell"


@pytest.mark.parametrize("change", sorted(EXAMPLES))
def test_every_example_gets_its_verdict(change):
    path = CHANGES / change
    res = static_validate(_topology_of(path), load_change(path))
    verdict, failing = EXAMPLES[change]
    assert res.verdict == verdict, [c for c in res.checks if c.status == "fail"]
    assert {c.name for c in res.checks if c.status == "fail"} == failing


def test_every_shipped_example_is_listed():
    assert {p.name for p in CHANGES.glob("*.yaml")} == set(EXAMPLES)


def test_cli_outputs_json_markdown_junit_and_exit_codes(tmp_path, capsys):
    change = str(CHANGES / "fob_open_ssh_admin.yaml")
    junit, md = tmp_path / "r.xml", tmp_path / "r.md"
    with pytest.raises(SystemExit) as e:
        main(["validate", str(TOPO / "fob.yaml"), change, "--static-only", "--json",
              "--junit", str(junit), "--markdown", str(md)])
    assert e.value.code == 1
    out = json.loads(capsys.readouterr().out)
    assert out["verdict"] == "FAIL" and out["reachability"]["opened"] == 1
    assert any(g == {"from": "ops-lan", "to_zone": "cp-lan", "service": "tcp/22",
                     "change": "opened", "nodes": ["c2-server"]}
               for g in out["reachability"]["groups"])
    suite = ET.parse(junit).getroot().find("testsuite")
    cases = suite.findall("testcase")
    assert int(suite.get("tests")) == len(cases) == len(out["checks"])
    failed = [c.get("name") for c in cases if c.find("failure") is not None]
    assert failed == ["crown jewel c2-server"] and suite.get("failures") == "1"
    assert "**FAIL**" in md.read_text() and "ops-maint —login/22→ c2-server" in md.read_text()
    with pytest.raises(SystemExit) as e:
        main(["validate", str(TOPO / "fob.yaml"), str(CHANGES / "fob_restrict_dns.yaml")])
    assert e.value.code == 0

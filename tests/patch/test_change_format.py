"""Change sets (docs/change-format.md): each operation patches the topology it names, positions
follow the edits, and every malformed change set is one line ``CHANGE:LINE:COL: ...``, exit 2."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from cyberrange.cli.main import main
from cyberrange.errors import UserError
from cyberrange.model.loader import load_topology
from cyberrange.patch.changeset import load_change

ROOT = Path(__file__).resolve().parents[2]
FOB = str(ROOT / "topologies" / "fob.yaml")
HEAD = "version: 1\nname: t\ntopology: fob\nchanges:\n"


def _write(tmp_path, body: str, head: str = HEAD) -> str:
    p = tmp_path / "change.yaml"
    p.write_text(head + textwrap.dedent(body))
    return str(p)


def _patched(tmp_path, body: str):
    return load_topology(FOB, change=load_change(_write(tmp_path, body)))


def test_rules_services_accounts_software_routes_and_profiles_are_patched(tmp_path):
    t = _patched(tmp_path, """\
      - {op: add-rule, firewall: fob-fw, position: 2, rule: {action: deny, from: ops-maint, to: any}}
      - {op: remove-rule, firewall: fob-fw, rule: 9, expect: {from: [dmz, hq-lan]}}
      - {op: replace-rule, firewall: fob-fw, rule: 1, with: {action: allow, from: ops-lan, to: c2-server, proto: tcp, port: 8080}}
      - {op: set-default, firewall: fob-fw, default: deny}
      - {op: add-service, node: cp-ws1, service: {type: http, port: 80}}
      - {op: modify-service, node: dmz-web, port: 80, set: {banner: nginx/1.26.0}}
      - {op: remove-service, node: cp-dns, port: 873}
      - {op: set-password, node: ops-files, user: admin, password: "n3w-Pass!"}
      - {op: add-account, node: dmz-mail, user: ops, password: "x"}
      - {op: remove-account, node: c2-server, user: operator}
      - {op: set-software, node: c2-server, name: openssh, version: "9.6p1"}
      - {op: add-route, node: ops-ws1, route: {to: 10.20.0.0/24, via: 10.10.2.1}}
      - {op: define-profile, name: slow, profile: {bandwidth: 1, delay: 100}}
      - {op: set-profile, target: satcom-uplink, profile: slow}
      - {op: add-zone, name: lab, zone: {subnet: 10.10.9.0/24}}
      - {op: add-node, node: {name: lab-pc, kind: host, zone: lab}}
      - {op: remove-node, node: cp-ws2}
    """)
    fw = t.nodes["fob-fw"]
    assert len(fw.rules) == 8 and fw.rules[1].src.value == "ops-maint"
    assert fw.rules[1].src_ref.file.endswith("change.yaml") and fw.rules[1].src_ref.line == 5
    assert fw.rules[0].comment == "" and fw.rules[2].comment == "name resolution"
    assert [s.port for s in t.nodes["cp-ws1"].services] == [80]
    assert t.nodes["dmz-web"].services[0].banner == "nginx/1.26.0"
    assert 873 not in [s.port for s in t.nodes["cp-dns"].services]
    assert t.nodes["ops-files"].services[0].accounts[0].password == "n3w-Pass!"
    assert [a.user for a in t.nodes["dmz-mail"].services[0].accounts] == ["relay", "ops"]
    assert [a.user for a in t.nodes["c2-server"].services[1].accounts] == ["c2admin"]
    assert [(s.name, s.version) for s in t.nodes["c2-server"].software] == [("openssh", "9.6p1")]
    assert t.nodes["ops-ws1"].static_routes
    assert t.zones["satcom-uplink"].profile.bandwidth_mbit == 1
    assert "lab-pc" in t.nodes and "lab" in t.zones and "cp-ws2" not in t.nodes
    # the unpatched file is unchanged
    assert len(load_topology(FOB).nodes["fob-fw"].rules) == 8


def test_an_error_in_what_the_change_brought_in_points_into_the_change(tmp_path):
    with pytest.raises(UserError) as e:
        _patched(tmp_path, """\
          - op: add-node
            node: {name: lab-pc, kind: host, zone: nowhere}
        """)
    assert e.value.file.endswith("change.yaml") and e.value.line == 6
    assert "nowhere" in e.value.message


# (body, line, words in the message): each must be refused at that line of the change set
MALFORMED = [
    ("  - {op: add-rul, firewall: fob-fw}\n", 5, "did you mean 'add-rule'"),
    ("  - {op: add-rule, firewall: fob-fw, rule: {action: allow, from: ops-lan, to: x, prot: tcp}}\n",
     5, "unknown key 'prot'"),
    ("  - {op: remove-rule, firewall: fob-fw, rule: 42}\n", 5, "there is no rule 42"),
    ("  - {op: remove-rule, firewall: fob-fw, rule: 1, expect: {port: 22}}\n", 5, "not 22"),
    ("  - {op: add-rule, firewall: comms-rtr, rule: {action: deny, from: any, to: any}}\n", 5,
     "not a firewall"),
    ("  - {op: set-password, node: ops-files, user: admn, password: x}\n", 5,
     "no account 'admn' (did you mean 'admin'?)"),
    ("  - {op: modify-service, node: c2-server, port: 23, set: {port: 24}}\n", 5,
     "no service on port 23"),
    ("  - {op: remove-node, node: ops-maint}\n", 5, "still names it"),
    ("  - {op: remove-zone, zone: dmz}\n", 5, "still names it"),
    ("  - {op: add-node, node: {name: c2-server, kind: host, zone: cp-lan}}\n", 5,
     "is a node of the topology already"),
    ("  - {op: add-rule, firewall: fob-fw, position: 20, rule: {action: deny, from: any, to: any}}\n",
     5, "past the end"),
    ("  - {op: set-software, node: c2-serv, name: x, version: '1'}\n", 5,
     "did you mean 'c2-server'"),
    ("  - {op: modify-service, node: c2-server, port: 8080, set: {port: 70000}}\n", 5,
     "out of range"),
    (("  - {op: add-service, node: cp-ws1, service: {type: http, port: 8080}}\n"
     "  - {op: add-service, node: cp-ws1, service: {type: http, port: 8080}}\n"), 6, "8080"),
    ("  - {op: remove-route, node: ops-ws1, to: 10.0.0.0/8}\n", 5, "no hand-given route"),
    ("  - {op: set-profile, target: satcom, profile: lan}\n", 5, "unknown zone or link 'satcom'"),
    ("  - {op: add-account, node: ops-files, user: admin, password: x}\n", 5,
     "has an account 'admin' already"),
]


@pytest.mark.parametrize("body,line,words", MALFORMED, ids=[str(k) for k in range(len(MALFORMED))])
def test_malformed_change_sets_are_one_line_at_their_position_exit_2(tmp_path, capsys, body,
                                                                      line, words):
    path = _write(tmp_path, body)
    with pytest.raises(SystemExit) as e:
        main(["change", "check", FOB, path])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert err.startswith(f"error: {path}:{line}:"), err
    assert words in err, err


@pytest.mark.parametrize("head,words", [
    ("version: 1\nname: t\ntopology: brigade\nchanges:\n", "is for topology 'brigade'"),
    ("version: 2\nname: t\ntopology: fob\nchanges:\n", "must be 1"),
    ("version: 1\nname: T\ntopology: fob\nchanges:\n", "is not valid"),
    ("version: 1\nname: t\nname: u\ntopology: fob\nchanges:\n", "duplicate key"),
])
def test_malformed_headers(tmp_path, capsys, head, words):
    path = _write(tmp_path, "  - {op: remove-node, node: cp-ws2}\n", head=head)
    with pytest.raises(SystemExit) as e:
        main(["validate", FOB, path, "--static-only"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {path}:") and words in err, err


def test_change_check_lints_the_patched_topology(capsys):
    changes = ROOT / "topologies" / "changes"
    with pytest.raises(SystemExit) as e:
        main(["change", "check", FOB, str(changes / "fob_restrict_dns.yaml"), "--json"])
    assert e.value.code == 0
    with pytest.raises(SystemExit) as e:
        main(["change", "check", FOB, str(changes / "fob_break_cop.yaml"), "--json"])
    assert e.value.code == 1                      # the mission thread cop is blocked
    out = capsys.readouterr().out
    assert '"code": "mission-blocked"' in out


def test_a_change_reaches_nodes_of_includes_and_block_instances(tmp_path):
    full = str(ROOT / "tests" / "data" / "v2" / "good" / "full.yaml")
    head = "version: 1\nname: t\ntopology: v2-full\nchanges:\n"
    ok = _write(tmp_path, "  - {op: set-software, node: hq-dns, name: dnsmasq, version: '2.90'}\n"
                          "  - {op: add-rule, firewall: plt2-fw, position: 1, rule: {action: deny,"
                          " from: any, to: plt2-ws1}}\n", head=head)
    t = load_topology(full, change=load_change(ok))
    assert t.nodes["plt2-fw"].rules[0].action == "deny"
    assert [(s.name, s.version) for s in t.nodes["hq-dns"].software][-1] == ("dnsmasq", "2.90")
    bad = _write(tmp_path, "  - {op: add-rule, firewall: plt2-fw, rule: {action: allow, from: any,"
                           " to: plt2-wsx}}\n", head=head)
    with pytest.raises(UserError) as e:
        load_topology(full, change=load_change(bad))
    assert e.value.file == bad and e.value.line == 5
    assert e.value.message.startswith("unknown zone or node 'plt2-wsx'"), e.value.message

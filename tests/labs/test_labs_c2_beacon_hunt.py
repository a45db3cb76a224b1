"""labs/c2-beacon-hunt on a real twin (issue 16, item 5): unsolved by default, a wrong answer
refused and counted, the scripted solution passes every check, nothing left after stop, < 90 s
(tests/labs/labrunner.py); then the ledger of that run backs the lab's answers: the beacon ran
from admin-ws2 to red-c2:443 and ended blocked."""
from __future__ import annotations


from helpers import needs_twin
from labrunner import lab_ledger, prove_lab

pytestmark = needs_twin


def test_c2_beacon_hunt(tmp_path):
    res = prove_lab("c2-beacon-hunt", tmp_path)
    assert res["solved_s"] < 90, res
    led = lab_ledger(res["dir"])
    beacon = [r for r in led if r["step_id"] == "beacon"]
    assert [r["outcome"] for r in beacon] == ["blocked"], beacon
    assert beacon[0]["actor_ip"] == "10.60.3.66" and beacon[0]["facts"]["beacons"] >= 1
    assert {(f["dst"], f["dport"]) for f in beacon[0]["flows"]} == {("10.61.250.10", 443)}

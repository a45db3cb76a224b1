"""labs/arp-mitm on a real twin (issue 16, item 5): unsolved by default, a wrong answer refused and
counted, the scripted solution passes every check, nothing left after stop, < 90 s
(tests/labs/labrunner.py); then the ledger of that run backs the lab's answers: the first
poisoning sat between ops-ws1 and the gateway and intercepted packets."""
from __future__ import annotations


from helpers import needs_twin
from labrunner import lab_ledger, prove_lab

pytestmark = needs_twin


def test_arp_mitm(tmp_path):
    res = prove_lab("arp-mitm", tmp_path)
    assert res["solved_s"] < 90, res
    led = lab_ledger(res["dir"])
    gw = [r for r in led if r["step_id"] == "mitm-gw"]
    assert gw and gw[0]["outcome"] == "succeeded", gw
    assert gw[0]["facts"]["victims"] == ["10.10.2.10", "10.10.2.1"]
    assert gw[0]["actor_ip"] == "10.10.2.66"

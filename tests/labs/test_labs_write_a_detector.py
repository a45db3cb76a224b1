"""labs/write-a-detector on a real twin (issue 16, item 5): unsolved by default, a wrong answer
refused and counted, the scripted solution passes every check, nothing left after stop, < 90 s
(tests/labs/labrunner.py); then the ledger of that run backs the lab's answers: the scan's first
pass probed 3 hosts x 6 ports from admin-ws2."""
from __future__ import annotations


from helpers import needs_twin
from labrunner import lab_ledger, prove_lab

pytestmark = needs_twin


def test_write_a_detector(tmp_path):
    res = prove_lab("write-a-detector", tmp_path)
    assert res["solved_s"] < 90, res
    led = lab_ledger(res["dir"])
    admin = [r for r in led if r["step_id"] == "admin"]
    assert admin and admin[0]["actor_ip"] == "10.40.4.66"
    pairs = {(f["dst"], f["dport"]) for f in admin[0]["flows"]}
    assert len(pairs) == 18, pairs                                                  # task pairs
    otseg = [r for r in led if r["step_id"] == "otseg"]
    assert {f["dport"] for f in otseg[0]["flows"]} == {22, 502}                     # task plc

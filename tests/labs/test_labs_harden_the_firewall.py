"""labs/harden-the-firewall on a real twin (issue 16, item 5): unsolved by default, a wrong answer
refused and counted, the scripted solution passes every check, nothing left after stop, < 90 s
(tests/labs/labrunner.py); then the ledger of that run backs the lab's answers: a static lab: no
scenario playbook, no ledger record."""
from __future__ import annotations


from helpers import needs_twin
from labrunner import lab_ledger, prove_lab

pytestmark = needs_twin


def test_harden_the_firewall(tmp_path):
    res = prove_lab("harden-the-firewall", tmp_path)
    assert res["solved_s"] < 90, res
    led = lab_ledger(res["dir"])
    assert led == []

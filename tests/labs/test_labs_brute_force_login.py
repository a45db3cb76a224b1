"""labs/brute-force-login on a real twin (issue 16, item 5): unsolved by default, a wrong answer
refused and counted, the scripted solution passes every check, nothing left after stop, < 90 s
(tests/labs/labrunner.py); then the ledger of that run backs the lab's answers: the account
found is admin/admin123 on ops-files; a re-use was blocked."""
from __future__ import annotations


from helpers import needs_twin
from labrunner import lab_ledger, prove_lab

pytestmark = needs_twin


def test_brute_force_login(tmp_path):
    res = prove_lab("brute-force-login", tmp_path)
    assert res["solved_s"] < 90, res
    led = lab_ledger(res["dir"])
    brute = [r for r in led if r["step_id"] == "brute"]
    assert brute and brute[0]["facts"]["credentials"] == [
        {"target": "10.10.2.20:22", "user": "admin", "password": "admin123"}]
    use = [r["outcome"] for r in led if r["step_id"] == "use"]
    assert use[0] == "succeeded" and "blocked" in use, use     # before and after the block

"""labs/dns-exfil on a real twin (issue 16, item 5): unsolved by default, a wrong answer refused
and counted, the scripted solution passes every check, nothing left after stop, < 90 s
(tests/labs/labrunner.py); then the ledger of that run backs the lab's answers: the tunnel took
the 16384-byte document whose SHA-256 the answers name."""
from __future__ import annotations


from helpers import needs_twin
from labrunner import lab_ledger, prove_lab

pytestmark = needs_twin


def test_dns_exfil(tmp_path):
    res = prove_lab("dns-exfil", tmp_path)
    assert res["solved_s"] < 90, res
    led = lab_ledger(res["dir"])
    tunnel = [r for r in led if r["step_id"] == "tunnel"]
    assert tunnel and tunnel[0]["outcome"] == "succeeded", tunnel
    facts = tunnel[0]["facts"]
    assert facts["bytes"] == 16384 and facts["sha256"].startswith("4fbf1ecc6d45369e"), facts
    upload = [r for r in led if r["step_id"] == "upload"]
    assert upload[0]["outcome"] == "blocked" and upload[0]["flows"][0]["dport"] == 8443

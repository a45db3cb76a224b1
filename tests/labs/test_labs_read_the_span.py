"""labs/read-the-span on a real twin (issue 16, item 5): unsolved by default, a wrong answer
refused and counted, the scripted solution passes every check, nothing left after stop, < 90 s
(tests/labs/labrunner.py); then the ledger of that run backs the lab's answers: the worm replay:
both replays ran and the answers' facts hold."""
from __future__ import annotations


from helpers import needs_twin
from labrunner import lab_ledger, prove_lab

pytestmark = needs_twin


def test_read_the_span(tmp_path):
    res = prove_lab("read-the-span", tmp_path)
    assert res["solved_s"] < 90, res
    led = lab_ledger(res["dir"])
    replays = [r for r in led if r["step_id"] in ("replay1", "replay2")]
    assert {r["outcome"] for r in replays} == {"succeeded"}, replays
    victims = {f["dst"] for r in replays for f in r["flows"]}
    assert victims == {"10.10.2.20", "10.10.2.10", "10.10.2.11", "10.10.2.12"}    # task victims: 4
    assert {r["actor_ip"] for r in replays} == {"10.10.2.66"}                      # task infected
    ports = {f["dport"] for r in replays for f in r["flows"] if f["proto"] == "tcp"}
    assert ports == {22, 80, 139, 445, 3389}                                        # task ports

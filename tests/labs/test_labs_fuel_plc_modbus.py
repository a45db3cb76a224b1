"""labs/fuel-plc-modbus on a real twin (issue 16, item 5): unsolved by default, a wrong answer
refused and counted, the scripted solution passes every check, nothing left after stop, < 90 s
(tests/labs/labrunner.py); then the ledger of that run backs the lab's answers: the probe was
blocked, the alarm write changed register 2 from 1150 to 1400."""
from __future__ import annotations


from helpers import needs_twin
from labrunner import lab_ledger, prove_lab

pytestmark = needs_twin


def test_fuel_plc_modbus(tmp_path):
    res = prove_lab("fuel-plc-modbus", tmp_path)
    assert res["solved_s"] < 90, res
    led = lab_ledger(res["dir"])
    by = {r["step_id"]: r for r in led}
    assert by["probe"]["outcome"] == "blocked" and by["probe"]["actor_ip"] == "10.60.3.66"
    alarm = by["alarm"]
    assert alarm["actor_ip"] == "10.60.4.10"
    assert alarm["facts"]["before"] == {"10.60.5.21:502": {"2": 1150}}
    assert alarm["facts"]["written"] == {"10.60.5.21:502": {"2": 1400}}

"""ICS techniques against the twin's Modbus/TCP PLC through the real agent: the read returns the
PLC's registers, the unauthorised write really changes a register (read back independently and
in the PLC's log), and the ledger equals the capture per 5-tuple."""
from __future__ import annotations

from lab_c2 import ATTACKER, LAB, PLC
from nslab import lab_fixture, ledger_flows, needs_netns, packets_only, pcap_flows, read_jsonl

pytestmark = needs_netns

lab = lab_fixture(LAB)


def _read_back(lab, addr, count):
    """Read holding registers from the PLC's own namespace (independent of the agent)."""
    code = ("import socket,struct;s=socket.create_connection(('127.0.0.1',502),timeout=3);"
            f"s.sendall(struct.pack('!HHHBBHH',9,0,6,1,3,{addr},{count}));"
            "import time;time.sleep(0.2);d=s.recv(512);print(list(struct.unpack("
            f"'!{count}H',d[9:9+2*{count}])))")
    import sys
    out = lab.nsx("p", sys.executable, "-c", code).stdout
    return eval(out)


def test_modbus_read_enumerates_registers(lab):
    lab.service("plc")
    cap = lab.capture("mbread")
    res = lab.agent("T0861", [f"{PLC}:502"], {"address": 0, "count": 4})
    path = cap.stop()
    assert res["outcome"] == "succeeded", res
    assert res["facts"]["registers"] == {f"{PLC}:502": {"0": 350, "1": 72, "2": 1, "3": 0}}
    assert res["facts"]["plcs"] == [f"{PLC}:502"]
    ledger, captured = ledger_flows(res["flows"]), pcap_flows(path, ATTACKER)
    assert captured == ledger, (captured, ledger)


def test_modbus_write_changes_the_register(lab):
    log = lab.service("plc")
    cap = lab.capture("mbwrite")
    res = lab.agent("T0855", [PLC], {"address": 1, "value": 999})
    res2 = lab.agent("T0831", [f"{PLC}:502"], {"address": 5, "values": [11, 22, 33],
                                                 "repeat": 3, "interval": 0.05})
    path = cap.stop()
    assert res["outcome"] == "succeeded", res
    assert res["facts"]["written"] == {f"{PLC}:502": {"1": 999}}
    assert res["facts"]["before"] == {f"{PLC}:502": {"1": 72}}
    assert res2["outcome"] == "succeeded", res2
    assert res2["facts"]["written"] == {f"{PLC}:502": {"5": 11, "6": 22, "7": 33}}
    assert _read_back(lab, 0, 8) == [350, 999, 1, 0, 0, 11, 22, 33]
    writes = [r for r in read_jsonl(log) if r.get("function") in (6, 16)]
    assert writes[0] == {**writes[0], "peer": ATTACKER, "function": 6, "address": 1,
                         "values": [999], "old": [72]}
    assert [w["function"] for w in writes[1:]] == [16, 16, 16]
    ledger, captured = ledger_flows(res["flows"] + res2["flows"]), pcap_flows(path, ATTACKER)
    assert len(ledger) == 2 and captured == ledger, (captured, ledger)


def test_modbus_closed_port_is_blocked(lab):
    cap = lab.capture("mbclosed")
    res = lab.agent("T0855", [f"{PLC}:503"], {"address": 1, "value": 1})
    path = cap.stop()
    assert res["outcome"] == "blocked", res
    assert packets_only(pcap_flows(path, ATTACKER)) == packets_only(ledger_flows(res["flows"]))

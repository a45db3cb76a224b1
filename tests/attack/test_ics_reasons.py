"""A Modbus step that fails says why (pure: a stand-in PLC client, no twin).

Found by a drill on a topology nobody here wrote for: a PLC with a writer allow-list refused the
write (exception 1) and the step ended ``failed`` with no reason in the ledger, the scorecard or
the report; the reason was only in the agent's log."""
from __future__ import annotations

import struct
import types
import typing

from cyberrange.attack.techniques import ics


class _FakePLC:
    """What ``ModbusClient`` shows the techniques: a connection, reads, writes, a close."""

    registers: typing.ClassVar[dict[int, int]] = {}
    refuse_writes = False
    ignore_writes = False

    def __init__(self, ip, port, unit, *a, **kw):
        self.conn = types.SimpleNamespace(established=True)
        self.key = f"{ip}:{port}"

    status = "ok"

    def read_holding(self, addr, count):
        return [self.registers.get(addr + i, 0) for i in range(count)]

    def write(self, addr, values):
        if self.refuse_writes:
            raise ics.ModbusError("exception 1 (illegal function) for function 16")
        if not self.ignore_writes:
            for i, v in enumerate(values):
                self.registers[addr + i] = v

    def close(self):
        return {"src": "10.0.0.5", "dst": self.key.split(":")[0], "proto": "tcp", "sport": 40000,
                "dport": 502, "packets": 4, "bytes": 300}


def _plc(monkeypatch, **kw):
    cls = type("PLC", (_FakePLC,), {"registers": {10: 75}, **kw})
    monkeypatch.setattr(ics, "ModbusClient", cls)


def test_refused_write_fails_with_the_plcs_exception_as_reason(monkeypatch):
    _plc(monkeypatch, refuse_writes=True)
    res = ics.modbus_write(["172.20.14.2:502"], {"port": 502, "unit": 1, "address": 10,
                                                 "value": 0, "values": [0, 0], "repeat": 1,
                                                 "interval": 0})
    assert res.outcome == "failed"
    assert res.error == "172.20.14.2:502: exception 1 (illegal function) for function 16"
    assert "\n" not in res.error


def test_write_that_does_not_hold_says_what_the_registers_read(monkeypatch):
    _plc(monkeypatch, ignore_writes=True)
    res = ics.modbus_write(["10.1.1.2"], {"port": 502, "unit": 1, "address": 10, "value": 9,
                                          "values": [], "repeat": 1, "interval": 0})
    assert res.outcome == "failed"
    assert "registers read {'10': 75} afterwards" in res.error


def test_successful_write_has_no_reason(monkeypatch):
    _plc(monkeypatch)
    res = ics.modbus_write(["10.1.1.2"], {"port": 502, "unit": 1, "address": 10, "value": 9,
                                          "values": [], "repeat": 1, "interval": 0})
    assert res.outcome == "succeeded" and res.error is None


def test_exception_reply_names_the_code(monkeypatch):
    """The real client's text for an exception reply (MBAP header + function|0x80 + code)."""
    monkeypatch.setattr(ics, "send_segments", lambda conn, data: None)
    cl = ics.ModbusClient.__new__(ics.ModbusClient)
    cl.unit, cl.tid, cl.requests = 1, 0, 0
    reply = struct.pack("!HHHB", 1, 0, 3, 1) + bytes([0x90, 0x01])
    cl.conn = types.SimpleNamespace(buf=reply, sock=None)
    try:
        cl.call(b"\x10")
    except ics.ModbusError as exc:
        assert str(exc) == "exception 1 (illegal function) for function 16"
    else:
        raise AssertionError("no ModbusError")

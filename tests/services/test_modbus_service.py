"""The twin's Modbus/TCP PLC, spoken to with hand-built MBAP frames over real TCP (loopback)."""
from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import time

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def plc(tmp_path):
    port = _free_port()
    log = tmp_path / "plc.jsonl"
    p = subprocess.Popen([sys.executable, "-m", "cyberrange.services.modbus", "--bind",
                          "127.0.0.1", "--port", str(port), "--registers", '{"0": 350, "1": 72}',
                          "--log", str(log)])
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield port, log
    p.terminate()
    p.wait(timeout=5)


def _call(port, pdu: bytes, tid=1, unit=1) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(struct.pack("!HHHB", tid, 0, len(pdu) + 1, unit) + pdu)
        head = s.recv(7)
        rtid, proto, length, runit = struct.unpack("!HHHB", head)
        assert (rtid, proto, runit) == (tid, 0, unit)
        body = b""
        while len(body) < length - 1:
            body += s.recv(256)
        return body


def test_read_initial_holding_registers(plc):
    port, _ = plc
    r = _call(port, struct.pack("!BHH", 3, 0, 3))
    assert r == bytes([3, 6]) + struct.pack("!HHH", 350, 72, 0)


def test_write_single_register_changes_it_and_is_logged(plc):
    port, log = plc
    assert _call(port, struct.pack("!BHH", 6, 1, 9999)) == struct.pack("!BHH", 6, 1, 9999)
    assert _call(port, struct.pack("!BHH", 3, 1, 1)) == bytes([3, 2]) + struct.pack("!H", 9999)
    writes = [json.loads(line) for line in log.read_text().splitlines() if '"values"' in line]
    assert writes[-1]["function"] == 6 and writes[-1]["values"] == [9999] and writes[-1]["old"] == [72]


def test_write_multiple_registers_and_coils(plc):
    port, _ = plc
    pdu = struct.pack("!BHHB3H", 16, 10, 3, 6, 1, 2, 3)
    assert _call(port, pdu) == struct.pack("!BHH", 16, 10, 3)
    assert _call(port, struct.pack("!BHH", 3, 10, 3)) == bytes([3, 6]) + struct.pack("!3H", 1, 2, 3)
    assert _call(port, struct.pack("!BHH", 5, 7, 0xFF00)) == struct.pack("!BHH", 5, 7, 0xFF00)
    assert _call(port, struct.pack("!BHH", 1, 0, 8)) == bytes([1, 1, 0b10000000])


def test_exceptions_for_bad_function_and_address(plc):
    port, _ = plc
    assert _call(port, bytes([43, 14, 1, 0])) == bytes([43 | 0x80, 1])
    assert _call(port, struct.pack("!BHH", 3, 9999, 10)) == bytes([0x83, 2])
    assert _call(port, struct.pack("!BHH", 3, 0, 0)) == bytes([0x83, 3])

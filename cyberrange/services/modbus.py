"""A Modbus/TCP PLC for twin hosts: real MBAP framing over real TCP, port 502 by default.

``python -m cyberrange.services.modbus --port 502 [--registers JSON] [--unit 1] [--log FILE]``

It serves one unit with 10,000 coils, discrete inputs, holding registers and input registers and
implements function codes 1, 2, 3, 4 (reads), 5, 6 (single writes), 15, 16 (multiple writes);
anything else gets exception 01 (illegal function), out-of-range addresses exception 02. Every
request is logged as a JSON line (time, peer, unit, function, address, count, values written),
so a run can tell exactly which registers an attacker changed.

Why not pymodbus' server: its 3.x datastore classes are deprecated in the middle of the move to
v4 and their addressing changed between minor releases; a PLC that answers the eight basic
function codes is a small, stable piece of the protocol, kept here with its tests.
"""
from __future__ import annotations

import asyncio
import json
import struct
import time

from cyberrange.services import _behaviours as behaviours
from cyberrange.services.spec import Launch, ServiceSpec


def _argv(run: Launch) -> list[str]:
    regs = run.service.registers or {}
    argv = run.serve("modbus", "--registers", json.dumps({str(k): v for k, v in regs.items()}))
    allowed = behaviours.modbus_writers(run.topology, run.node, run.service)
    if allowed is not None:     # the firmware enforces an allow-list (behaviours.yaml)
        argv += ["--writers", ",".join(allowed)]
    return argv


SERVICE = ServiceSpec("modbus", 502, _argv, weight=2,
                      summary="Modbus/TCP PLC with initial holding registers")


SIZE = 10_000
WRITES = (5, 6, 15, 16)


class PLC:
    def __init__(self, registers: dict[int, int] | None = None, unit: int = 1, log=None,
                 writers: set[str] | None = None):
        self.unit = unit
        self.writers = writers          # None: anyone may write; else the allowed clients
        self.coils = bytearray(SIZE)
        self.discrete = bytearray(SIZE)
        self.holding = [0] * SIZE
        self.inputs = [0] * SIZE
        for addr, value in (registers or {}).items():
            self.holding[int(addr)] = int(value) & 0xFFFF
            self.inputs[int(addr)] = int(value) & 0xFFFF
        self.log = log

    def _log(self, **rec):
        if self.log:
            self.log.write(json.dumps({"time": time.time(), **rec}) + "\n")
            self.log.flush()

    @staticmethod
    def _bits(values) -> bytes:
        out = bytearray((len(values) + 7) // 8)
        for i, v in enumerate(values):
            if v:
                out[i // 8] |= 1 << (i % 8)
        return bytes(out)

    def handle(self, fc: int, data: bytes, peer: str) -> bytes:
        """One PDU in (after the function code), one PDU out (function code included)."""
        def exc(code: int) -> bytes:
            self._log(peer=peer, function=fc, exception=code)
            return bytes([fc | 0x80, code])
        if fc in WRITES and self.writers is not None and peer not in self.writers:
            self._log(peer=peer, function=fc, refused="not on the writer allow-list")
            return exc(1)
        try:
            if fc in (1, 2, 3, 4):
                addr, count = struct.unpack("!HH", data[:4])
                limit = 2000 if fc in (1, 2) else 125
                if not 1 <= count <= limit:
                    return exc(3)
                if addr + count > SIZE:
                    return exc(2)
                self._log(peer=peer, function=fc, address=addr, count=count)
                if fc in (1, 2):
                    src = self.coils if fc == 1 else self.discrete
                    payload = self._bits(src[addr:addr + count])
                else:
                    src = self.holding if fc == 3 else self.inputs
                    payload = struct.pack(f"!{count}H", *src[addr:addr + count])
                return bytes([fc, len(payload)]) + payload
            if fc == 5:
                addr, value = struct.unpack("!HH", data[:4])
                if value not in (0x0000, 0xFF00):
                    return exc(3)
                if addr >= SIZE:
                    return exc(2)
                self.coils[addr] = 1 if value else 0
                self._log(peer=peer, function=fc, address=addr, values=[bool(value)])
                return bytes([fc]) + data[:4]
            if fc == 6:
                addr, value = struct.unpack("!HH", data[:4])
                if addr >= SIZE:
                    return exc(2)
                old = self.holding[addr]
                self.holding[addr] = value
                self._log(peer=peer, function=fc, address=addr, values=[value], old=[old])
                return bytes([fc]) + data[:4]
            if fc == 15:
                addr, count, nbytes = struct.unpack("!HHB", data[:5])
                if addr + count > SIZE or nbytes < (count + 7) // 8:
                    return exc(2)
                bits = data[5:5 + nbytes]
                vals = [(bits[i // 8] >> (i % 8)) & 1 for i in range(count)]
                self.coils[addr:addr + count] = bytes(vals)
                self._log(peer=peer, function=fc, address=addr, values=vals)
                return bytes([fc]) + struct.pack("!HH", addr, count)
            if fc == 16:
                addr, count, nbytes = struct.unpack("!HHB", data[:5])
                if not 1 <= count <= 123 or nbytes != 2 * count:
                    return exc(3)
                if addr + count > SIZE:
                    return exc(2)
                vals = list(struct.unpack(f"!{count}H", data[5:5 + nbytes]))
                old = self.holding[addr:addr + count]
                self.holding[addr:addr + count] = vals
                self._log(peer=peer, function=fc, address=addr, values=vals, old=old)
                return bytes([fc]) + struct.pack("!HH", addr, count)
        except struct.error:
            return exc(3)
        return exc(1)

    async def serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        peer = writer.get_extra_info("peername")[0]
        try:
            while True:
                header = await reader.readexactly(7)
                tid, proto, length, unit = struct.unpack("!HHHB", header)
                if proto != 0 or not 2 <= length <= 254:
                    break
                pdu = await reader.readexactly(length - 1)
                if unit not in (self.unit, 0, 0xFF):
                    continue
                reply = self.handle(pdu[0], pdu[1:], peer)
                writer.write(struct.pack("!HHHB", tid, 0, len(reply) + 1, unit) + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def _serve(args) -> None:
    log = open(args.log, "a") if args.log else None
    registers = json.loads(args.registers) if args.registers else {}
    writers = None if args.writers is None else {w for w in args.writers.split(",") if w}
    plc = PLC(registers, unit=args.unit, log=log, writers=writers)
    server = await asyncio.start_server(plc.serve_client, args.bind, args.port, reuse_address=True)
    async with server:
        await server.serve_forever()


def main(argv=None) -> None:
    ap = SERVICE.arguments("Modbus/TCP PLC for cyberrange twins")
    ap.add_argument("--unit", type=int, default=1)
    ap.add_argument("--registers", help='initial holding registers as JSON, e.g. {"0": 350}')
    ap.add_argument("--writers", default=None,
                    help="comma-separated client addresses allowed to write (default: anyone)")
    try:
        asyncio.run(_serve(ap.parse_args(argv)))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

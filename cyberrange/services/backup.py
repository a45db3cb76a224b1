"""A backup server for twin hosts: bulk uploads over TCP, port 873 by default.

``python -m cyberrange.services.backup --port 873 [--log FILE] [--max-mb 1024]``

A client sends ``PUT <name> <size>\\n`` and then exactly ``size`` bytes; the server answers
``OK <size> <sha256 hex>\\n`` (the digest of what it received) and closes. It keeps nothing: the
point is the bulk transfer on the wire. A bad header or a size above ``--max-mb`` gets
``ERR ...``. Every upload is logged as a JSON line (time, peer, name, size, seconds, ok).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import time

from cyberrange.services.spec import ServiceSpec


SERVICE = ServiceSpec("backup", 873, lambda run: run.serve("backup"),
                      summary="bulk upload server (benign traffic's backups)")


async def handle(reader, writer, log, max_bytes: int):
    peer = writer.get_extra_info("peername")[0]
    t0 = time.time()
    name, size, ok = "", 0, False
    try:
        head = (await asyncio.wait_for(reader.readline(), 30)).decode("ascii", "replace").split()
        if len(head) != 3 or head[0] != "PUT" or not head[2].isdigit():
            writer.write(b"ERR expected: PUT <name> <size>\n")
        elif int(head[2]) > max_bytes:
            writer.write(b"ERR too large\n")
        else:
            name, size = head[1][:128], int(head[2])
            digest, left = hashlib.sha256(), size
            while left:
                chunk = await asyncio.wait_for(reader.read(min(left, 1 << 16)), 60)
                if not chunk:
                    break
                digest.update(chunk)
                left -= len(chunk)
            ok = left == 0
            writer.write(f"OK {size} {digest.hexdigest()}\n".encode() if ok
                         else b"ERR short upload\n")
        await writer.drain()
    except (asyncio.TimeoutError, ConnectionError):
        pass
    finally:
        writer.close()
        if log:
            log.write(json.dumps({"time": t0, "peer": peer, "name": name, "size": size,
                                  "seconds": round(time.time() - t0, 3), "ok": ok}) + "\n")
            log.flush()


async def serve(port: int, bind: str, log, max_bytes: int) -> None:
    server = await asyncio.start_server(lambda r, w: handle(r, w, log, max_bytes), bind, port,
                                        reuse_address=True)
    async with server:
        await server.serve_forever()


def main(argv=None):
    ap = SERVICE.arguments(__doc__)
    ap.add_argument("--max-mb", type=int, default=1024)
    a = ap.parse_args(argv)
    try:
        asyncio.run(serve(a.port, a.bind, open(a.log, "a") if a.log else None, a.max_mb << 20))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

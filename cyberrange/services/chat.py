"""A small line-based chat server for twin hosts (tactical chat), TCP port 5222 by default.

``python -m cyberrange.services.chat --port 5222 [--log FILE]``

One command per line: ``HELLO <user>`` -> ``OK welcome <user>``; ``MSG <room> <text>`` ->
``ACK <n>`` (n counts messages server-wide); ``BYE`` -> ``BYE`` and the server closes;
anything else -> ``ERR unknown command``. Messages before HELLO get ``ERR say HELLO first``.
Every command is logged as a JSON line (time, peer, user, command, room).
"""
from __future__ import annotations

import asyncio
import json
import time

from cyberrange.services.spec import ServiceSpec


SERVICE = ServiceSpec("chat", 5222, lambda run: run.serve("chat"),
                      summary="line-based tactical chat server")


MAX_LINE = 4096


class Chat:
    def __init__(self, log=None):
        self.log = log
        self.count = 0

    def _log(self, **rec):
        if self.log:
            self.log.write(json.dumps({"time": time.time(), **rec}) + "\n")
            self.log.flush()

    def answer(self, user: str | None, line: str) -> tuple[str | None, str, bool]:
        """(user after the line, reply, close?) for one command line."""
        cmd, _, rest = line.strip().partition(" ")
        cmd = cmd.upper()
        if cmd == "HELLO" and rest.strip():
            return rest.strip()[:64], f"OK welcome {rest.strip()[:64]}", False
        if cmd == "BYE":
            return user, "BYE", True
        if cmd == "MSG":
            if user is None:
                return user, "ERR say HELLO first", False
            self.count += 1
            return user, f"ACK {self.count}", False
        return user, "ERR unknown command", False

    async def handle(self, reader, writer):
        peer = writer.get_extra_info("peername")[0]
        user = None
        try:
            while True:
                line = await asyncio.wait_for(reader.readline(), 120)
                if not line or len(line) > MAX_LINE:
                    break
                text = line.decode("utf-8", "replace")
                user, reply, close = self.answer(user, text)
                parts = text.split()
                self._log(peer=peer, user=user, command=parts[0].upper() if parts else "",
                          room=parts[1] if len(parts) > 2 and parts[0].upper() == "MSG" else None)
                writer.write((reply + "\n").encode())
                await writer.drain()
                if close:
                    break
        except (asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()


async def serve(port: int, bind: str, log) -> None:
    chat = Chat(log)
    server = await asyncio.start_server(chat.handle, bind, port, reuse_address=True)
    async with server:
        await server.serve_forever()


def main(argv=None):
    ap = SERVICE.arguments(__doc__)
    a = ap.parse_args(argv)
    try:
        asyncio.run(serve(a.port, a.bind, open(a.log, "a") if a.log else None))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

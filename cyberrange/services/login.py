"""An SSH-style, line-based login service for twin hosts (the target of password guessing).

    python -m cyberrange.services.login --port 22 --banner "SSH-2.0-OpenSSH_8.9p1" \\
        --accounts-file accounts.json [--bind 0.0.0.0] [--log attempts.jsonl]

Dialogue (every line ends with "\\n")::

    S: <banner>
    S: "login: "            C: <user>
    S: "password: "         C: <password>
    right pair:  S: "Welcome <user>" then a prompt "<user>@<host>$ "; the client may send lines
                 ("exit" or EOF ends the session, anything else gets "<cmd>: command not found")
    wrong pair:  S: "Login incorrect" and the SERVER closes the connection first

The accounts file is JSON: ``[{"user": "admin", "password": "admin123"}, ...]``. Each attempt
(a user and a password line received) is logged as one JSON line ``{"time", "peer", "user",
"ok"}`` to ``--log``. asyncio serves many clients at once; clients that disconnect, stall or send
garbage (over-long lines, binary) only end their own session.
"""
from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
import time

from cyberrange.services import _behaviours as behaviours
from cyberrange.services.spec import Launch, ServiceSpec


def _argv(run: Launch) -> list[str]:
    extra = behaviours.for_service(run.topology, run.node, "login").get("default_accounts", [])
    accounts = run.accounts_file()
    if extra:                   # factory accounts of this software version (behaviours.yaml)
        mine = json.loads(accounts.read_text())
        users = {a["user"] for a in mine}
        accounts.write_text(json.dumps(mine + [a for a in extra if a["user"] not in users]))
    return run.serve("login", "--banner", run.service.banner or "SSH-2.0-cyberrange",
                     "--accounts-file", str(accounts))


SERVICE = ServiceSpec("login", 22, _argv, weight=1,
                      summary="SSH-style line-based login (the target of password guessing)")


MAX_LINE = 1024          # bytes; a longer line ends the session
IDLE_TIMEOUT = 30.0      # seconds a client may stay silent
MAX_COMMANDS = 100       # lines after login before the session is closed


class LoginService:
    def __init__(self, accounts: dict[str, str], banner: str, log_path: str | None = None,
                 hostname: str | None = None, idle_timeout: float = IDLE_TIMEOUT):
        self.accounts = accounts
        self.banner = banner
        self.hostname = hostname or socket.gethostname()
        self.idle_timeout = idle_timeout
        self._log = open(log_path, "a", encoding="utf-8") if log_path else None

    def log_attempt(self, peer: str, user: str, ok: bool) -> None:
        if self._log is None:
            return
        self._log.write(json.dumps({"time": time.time(), "peer": peer, "user": user, "ok": ok}) + "\n")
        self._log.flush()

    async def _readline(self, reader: asyncio.StreamReader) -> str | None:
        """One line without its end, or None on EOF / timeout / garbage."""
        try:
            raw = await asyncio.wait_for(reader.readuntil(b"\n"), self.idle_timeout)
        except asyncio.IncompleteReadError as exc:     # EOF; a last unterminated line counts
            raw = exc.partial
            if not raw:
                return None
        except (asyncio.LimitOverrunError, ValueError):  # line longer than the stream limit
            return None
        except (asyncio.TimeoutError, ConnectionError, OSError):
            return None
        if len(raw) > MAX_LINE:
            return None
        return raw.decode("utf-8", "replace").rstrip("\r\n")

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername") or ("?", 0)
        peer = f"{peername[0]}:{peername[1]}"
        try:
            await self._session(reader, writer, peer)
        except (ConnectionError, OSError, asyncio.TimeoutError):
            pass                                         # the client went away; nothing to do
        finally:
            try:
                writer.close()
                await asyncio.wait_for(writer.wait_closed(), 5)
            except Exception:                            # noqa: BLE001 - closing a dead socket
                pass

    async def _send(self, writer: asyncio.StreamWriter, text: str) -> None:
        writer.write(text.encode())
        await asyncio.wait_for(writer.drain(), self.idle_timeout)

    async def _session(self, reader, writer, peer: str) -> None:
        await self._send(writer, f"{self.banner}\n" if self.banner else "")
        await self._send(writer, "login: ")
        user = await self._readline(reader)
        if user is None:
            return
        await self._send(writer, "password: ")
        password = await self._readline(reader)
        if password is None:
            return
        ok = user in self.accounts and self.accounts[user] == password
        self.log_attempt(peer, user, ok)
        if not ok:
            await self._send(writer, "Login incorrect\n")
            return                                       # server closes first
        prompt = f"{user}@{self.hostname}$ "
        await self._send(writer, f"Welcome {user}\n{prompt}")
        for _ in range(MAX_COMMANDS):
            line = await self._readline(reader)
            if line is None or line.strip() == "exit":
                return
            cmd = line.strip()
            await self._send(writer, (f"{cmd.split()[0]}: command not found\n" if cmd else "") + prompt)


def load_accounts(path: str) -> dict[str, str]:
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of {{user, password}} objects")
    accounts = {}
    for n, item in enumerate(data):
        if not isinstance(item, dict) or "user" not in item or "password" not in item:
            raise ValueError(f"{path}: entry {n} needs 'user' and 'password'")
        accounts[str(item["user"])] = str(item["password"])
    return accounts


async def serve(service: LoginService, bind: str, port: int, ready=None) -> None:
    server = await asyncio.start_server(service.handle, bind, port, limit=MAX_LINE * 4,
                                        reuse_address=True, backlog=512)
    if ready is not None:
        ready(server)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    ap = SERVICE.arguments("SSH-style line-based login service for the twin")
    ap.add_argument("--banner", default="SSH-2.0-OpenSSH_8.9p1", help="first line sent to a client")
    ap.add_argument("--accounts-file", required=True, help='JSON [{"user": .., "password": ..}]')
    ap.add_argument("--hostname", default=None, help="host name shown in the prompt")
    args = ap.parse_args(argv)
    try:
        accounts = load_accounts(args.accounts_file)
    except (OSError, ValueError) as exc:
        print(f"login: {exc}", file=sys.stderr)
        return 2
    service = LoginService(accounts, args.banner, args.log, args.hostname)

    def ready(server):
        print(f"login: listening on {args.bind}:{args.port}", file=sys.stderr, flush=True)

    try:
        asyncio.run(serve(service, args.bind, args.port, ready))
    except OSError as exc:
        print(f"login: cannot listen on {args.bind}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

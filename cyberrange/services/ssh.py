"""A real SSH-protocol server for twin hosts (paramiko): password logins and a tiny fake shell.

    python -m cyberrange.services.ssh --port 22 --accounts-file accounts.json \\
        [--banner SSH-2.0-OpenSSH_8.9p1] [--log attempts.jsonl] [--host-key-dir DIR] \\
        [--hostname NAME] [--bind 0.0.0.0] [--max-auth-tries 6]

Any SSH client (OpenSSH, paramiko, hydra) can talk to it: key exchange, host key, password
authentication, ``exec`` and ``shell`` channels are real SSH. Behind the login there is no real
shell: commands are answered by :func:`fake_shell` (``id``, ``whoami``, ``hostname``,
``uname -a``, ``cat`` of a few canned files, ``echo``, ``exit``; anything else is "not found").

- Accounts file: JSON ``[{"user": "admin", "password": "admin123"}, ...]`` (as the login service).
- Host key: an ECDSA P-256 key, generated on first start and cached as
  ``<host-key-dir>/ssh_host_ecdsa_key`` (the same key across restarts, as a real host has).
- Log: one JSON line per event: ``{"time", "event": "auth", "peer", "user", "ok", "method"}``
  per password attempt, ``{"time", "event": "exec"|"shell", "peer", "user", "command",
  "exit_status"}`` per command.
- A connection gets ``--max-auth-tries`` password attempts, then the server disconnects it;
  a client that has not logged in after ``--login-grace`` seconds is disconnected too.
  When the client sends SSH_MSG_DISCONNECT the server closes its side at once (FIN).
"""
from __future__ import annotations

import signal
import socket
import sys
import threading

from cyberrange.services._shell import LOGIN_GRACE, MAX_AUTH_TRIES, fake_shell  # noqa: F401
from cyberrange.services.spec import Launch, ServiceSpec


def _argv(run: Launch) -> list[str]:
    svc = run.service
    return run.serve("ssh", "--accounts-file", str(run.accounts_file()), "--hostname", run.node,
                     "--host-key-dir", str(run.run_dir / "config" / "hostkeys" / run.node),
                     *(["--banner", svc.banner] if svc.banner else []))


SERVICE = ServiceSpec("ssh", 22, _argv, weight=1,
                      summary="SSH-protocol server (paramiko): password logins, a fake shell")


# --------------------------------------------------------------------------- the server
def load_accounts(path: str) -> dict[str, str]:
    from cyberrange.services.login import load_accounts as _load
    return _load(path)


def main(argv: list[str] | None = None) -> int:
    ap = SERVICE.arguments("SSH-protocol server (paramiko) for the twin")
    ap.add_argument("--banner", default="SSH-2.0-OpenSSH_8.9p1 Ubuntu-3ubuntu0.6",
                    help="the server's SSH version string (must start with SSH-2.0-)")
    ap.add_argument("--accounts-file", required=True, help='JSON [{"user": .., "password": ..}]')
    ap.add_argument("--host-key-dir", default=None,
                    help="directory caching the host key (default: a new key per start)")
    ap.add_argument("--hostname", default=None, help="host name shown by the fake shell")
    ap.add_argument("--max-auth-tries", type=int, default=MAX_AUTH_TRIES,
                    help="password attempts per connection before the server disconnects")
    ap.add_argument("--login-grace", type=float, default=LOGIN_GRACE,
                    help="seconds a client has to log in")
    args = ap.parse_args(argv)
    from cyberrange.services._sshd import (  # paramiko: only to serve
        SSHService,
        load_host_key,
    )
    try:
        accounts = load_accounts(args.accounts_file)
        key = load_host_key(args.host_key_dir)
        service = SSHService(accounts, args.banner, key, args.log, args.hostname,
                             args.max_auth_tries, args.login_grace)
    except (OSError, ValueError) as exc:
        print(f"ssh: {exc}", file=sys.stderr)
        return 2
    try:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((args.bind, args.port))
        listener.listen(512)
    except OSError as exc:
        print(f"ssh: cannot listen on {args.bind}:{args.port}: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"ssh: listening on {args.bind}:{args.port} ({key.get_name()} "
          f"{key.fingerprint if hasattr(key, 'fingerprint') else ''})", file=sys.stderr, flush=True)
    try:
        service.serve_forever(listener, stop)
    finally:
        listener.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

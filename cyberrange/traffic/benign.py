"""Benign background traffic: what a busy, healthy network looks like to a sensor.

Two halves, like the attack agent:

* ``plan_benign(topology)`` (parent side) decides, per host, which services it talks to: only
  services the firewall rules allow it to reach (static analysis), so benign traffic never
  looks like probing of closed doors. Workstations browse web servers and the C2 web client,
  resolve names, and now and then an operator logs in to a login service with a valid account.
* ``python -m cyberrange.traffic.benign`` (inside the host's namespace) reads its plan as JSON
  on stdin and generates that traffic with real kernel sockets until it is terminated, pausing
  an exponentially distributed time (mean = ``interval``) between requests. It is
  deterministic for a seed. Every request is logged as a JSON line (time, kind, 5-tuple, ok)
  so that a run can account for what benign generators sent. Benign traffic is never labelled
  as attack: it never enters the ledger.
"""
from __future__ import annotations

import json
import random
import signal
import socket
import struct
import sys
import threading
import time

ROLES_THAT_BROWSE = {"workstation", "hq", "hmi"}


def plan_benign(topology, seed: int | None = None) -> dict[str, dict]:
    """Per host name: the JSON plan its generator gets. Only allowed flows are planned."""
    from cyberrange.model import reach
    seed = topology.benign.seed if seed is None else seed
    plans: dict[str, dict] = {}
    services = [(n, s) for n in topology.hosts for s in n.services]
    for idx, host in enumerate(sorted(topology.hosts, key=lambda n: n.name)):
        if host.role not in ROLES_THAT_BROWSE:
            continue
        targets = []
        for srv_node, svc in services:
            if srv_node.name == host.name:
                continue
            ok, _ = reach.allowed(topology, host.name, srv_node.ip, svc.proto, svc.port)
            if not ok:
                continue
            t = {"type": svc.type, "ip": str(srv_node.ip), "port": svc.port, "node": srv_node.name}
            if svc.type == "dns":
                t["names"] = [f"{n.name}.{topology.domain}" for n in topology.nodes.values()]
            if svc.type == "login":
                if not svc.accounts:
                    continue
                acc = svc.accounts[idx % len(svc.accounts)]
                t.update(user=acc.user, password=acc.password)
            targets.append(t)
        if targets:
            plans[host.name] = {"seed": seed * 1000 + idx, "interval": topology.benign.interval_s,
                                "targets": targets}
    return plans


# -- generator (runs inside a host namespace) -----------------------------------

WEIGHTS = {"http": 6, "dns": 3, "login": 1}


def _dns_query(rng: random.Random, name: str) -> bytes:
    qid = rng.randrange(65536)
    header = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return header + qname + struct.pack("!HH", 1, 1)


def _http(t, rng) -> tuple[int, bool]:
    path = rng.choice(["/", "/status", f"/reports/{rng.randrange(100)}"])
    with socket.create_connection((t["ip"], t["port"]), timeout=3) as s:
        sport = s.getsockname()[1]
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {t['ip']}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return sport, data.startswith(b"HTTP/1.1 200")


def _dns(t, rng) -> tuple[int, bool]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.bind(("0.0.0.0", 0))
        s.sendto(_dns_query(rng, rng.choice(t["names"])), (t["ip"], t["port"]))
        sport = s.getsockname()[1]
        data, _ = s.recvfrom(4096)
    return sport, len(data) > 12


def _login(t, rng) -> tuple[int, bool]:
    with socket.create_connection((t["ip"], t["port"]), timeout=3) as s:
        sport = s.getsockname()[1]
        f = s.makefile("rwb", buffering=0)
        buf = b""

        def until(token: bytes):
            nonlocal buf
            while token not in buf:
                chunk = s.recv(4096)
                if not chunk:
                    return False
                buf += chunk
            buf = buf.split(token, 1)[1]
            return True
        ok = until(b"login: ")
        f.write(t["user"].encode() + b"\n")
        ok = ok and until(b"password: ")
        f.write(t["password"].encode() + b"\n")
        ok = ok and until(b"Welcome")
        time.sleep(rng.uniform(0.2, 1.0))      # a short session
        try:
            f.write(b"exit\n")
        except OSError:
            pass
    return sport, bool(ok)


KINDS = {"http": _http, "dns": _dns, "login": _login}


def generate(plan: dict, log, stop: threading.Event | None = None,
             max_requests: int | None = None) -> int:
    """Send requests until ``stop`` is set (or ``max_requests``); return how many were made."""
    stop = stop or threading.Event()
    rng = random.Random(plan["seed"])
    targets = plan["targets"]
    weights = [WEIGHTS.get(t["type"], 1) for t in targets]
    n = 0
    stop.wait(rng.uniform(0, plan["interval"]))       # hosts do not start in lockstep
    while not stop.is_set() and (max_requests is None or n < max_requests):
        t = rng.choices(targets, weights)[0]
        rec = {"time": time.time(), "kind": t["type"], "dst": t["ip"], "dport": t["port"],
               "proto": "udp" if t["type"] == "dns" else "tcp"}
        try:
            rec["sport"], rec["ok"] = KINDS[t["type"]](t, rng)
        except OSError as e:
            rec["ok"], rec["error"] = False, str(e)
        log.write(json.dumps(rec) + "\n")
        log.flush()
        n += 1
        stop.wait(rng.expovariate(1.0 / plan["interval"]))
    return n


def main() -> None:
    plan = json.loads(sys.stdin.read())
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    log = open(plan["log"], "a") if plan.get("log") else sys.stdout
    try:
        generate(plan, log, stop=stopping)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

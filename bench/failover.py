"""OSPF failover on the brigade: how long the TAC loses the MAIN CP when its radio link fails.

    python bench/failover.py [--n 10] [--outage 10] [--static-n 2] [--json FILE]
                                                              (root; builds two real twins)

Builds ``topologies/brigade.yaml`` (``routing: ospf``, link emulation ``relay``: the VHF and HF
links have their delay and loss) and, ``--n`` times each, takes the primary MAIN-TAC link
``bde-los`` ``down`` (carrier lost) and ``jammed`` (every frame dropped, carrier up) for
``--outage`` seconds, then ``up`` again. Throughout, tac-ws1 (tac-lan) sends an ICMP echo of
36 bytes to bde-c2 (main-c2) every 0.2 s (HF carries 9.6 kbit/s: the probes take < 2 kbit/s),
and a watcher reads tac-rtr's route to main-c2 every 20 ms. Per outage:

| column | what |
|---|---|
| route | state change -> tac-rtr's route to main-c2 leaves by bde-skywave |
| first reply | state change -> send time of the first echo sent after it that was answered |
| availability | echoes answered / echoes sent while the link was not up |
| recovery | ``up`` -> the route is back on bde-los |

The baseline, in the same run: the same outages (``--static-n`` of each) on the same topology
with ``routing: static`` (the routes computed once, as before OSPF), which never fails over.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import select
import socket
import statistics
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cyberrange.model.loader import load_topology
from cyberrange.twin import ddil, frr, netns
from cyberrange.twin.build import Twin

LINK, BACKUP = "bde-los", "bde-skywave"
SRC, DST, ROUTER = "tac-ws1", "bde-c2", "tac-rtr"
HZ = 5.0


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


class Prober:
    """ICMP echoes from a node at ``hz``, over a raw socket opened in the node's namespace."""

    def __init__(self, ns: str, dst: str, hz: float = HZ):
        with netns.entered(ns):
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        self.dst, self.period = dst, 1.0 / hz
        self.ident = os.getpid() & 0xFFFF
        self.sent: dict[int, float] = {}
        self.got: dict[int, float] = {}
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=f, daemon=True) for f in (self._send, self._recv)]

    def start(self) -> Prober:
        for t in self.threads:
            t.start()
        return self

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=2)
        self.sock.close()

    def _send(self) -> None:
        seq, t0 = 0, time.monotonic()
        while not self.stop.is_set():
            seq += 1
            body = struct.pack("!d", time.time())
            head = struct.pack("!BBHHH", 8, 0, 0, self.ident, seq & 0xFFFF)
            pkt = struct.pack("!BBHHH", 8, 0, _checksum(head + body), self.ident,
                              seq & 0xFFFF) + body
            self.sent[seq & 0xFFFF] = time.monotonic()
            try:
                self.sock.sendto(pkt, (self.dst, 0))
            except OSError:
                pass                                  # no route right now: a lost probe
            self.stop.wait(max(0.0, t0 + seq * self.period - time.monotonic()))

    def _recv(self) -> None:
        while not self.stop.is_set():
            ready, _, _ = select.select([self.sock], [], [], 0.2)
            if not ready:
                continue
            data = self.sock.recv(2048)
            ihl = (data[0] & 0x0F) * 4
            typ, _code, _ck, ident, seq = struct.unpack("!BBHHH", data[ihl:ihl + 8])
            if typ == 0 and ident == self.ident and seq not in self.got:
                self.got[seq] = time.monotonic()

    def window(self, t0: float, t1: float) -> tuple[int, int, float | None]:
        """Probes sent in [t0, t1): (sent, answered, send time of the first answered)."""
        sent = [(t, s) for s, t in list(self.sent.items()) if t0 <= t < t1]
        ok = sorted(t for t, s in sent if s in self.got)
        return len(sent), len(ok), (ok[0] if ok else None)


class RouteWatch:
    """tac-rtr's route to main-c2, read every 20 ms: [(time, zone)] at every change."""

    def __init__(self, twin, dst: str):
        self.twin, self.dst = twin, dst
        self.changes: list[tuple[float, str | None]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        last = object()
        while not self.stop.is_set():
            zone = frr.via_zone(self.twin.topo, self.twin.ns[ROUTER], self.dst)
            if zone != last:
                self.changes.append((time.monotonic(), zone))
                last = zone
            self.stop.wait(0.02)

    def first(self, zone: str, after: float) -> float | None:
        return next((t for t, z in list(self.changes) if t >= after and z == zone), None)

    def now(self) -> str | None:
        return self.changes[-1][1] if self.changes else None


def outages(twin, kinds, n: int, outage: float, log) -> list[dict]:
    """``n`` outages of each kind on ``bde-los``; one row per outage."""
    ctl = ddil.LinkControl(twin)
    dst_ip = str(twin.topo.nodes[DST].ip)
    main_c2 = str(twin.topo.zones[twin.topo.nodes[DST].interfaces[0].zone].subnet)
    probe = Prober(twin.ns[SRC], dst_ip).start()
    watch = RouteWatch(twin, main_c2)
    watch.thread.start()
    rows = []
    try:
        time.sleep(3)                                  # ARP, first replies
        for i in range(n):
            for kind in kinds:
                _settle(watch)
                t0 = time.monotonic()
                ctl.set(LINK, kind, reason=f"bench failover {kind} {i + 1}")
                time.sleep(outage)
                t_up = time.monotonic()
                ctl.set(LINK, "up", reason="bench failover end")
                sent, ok, first = probe.window(t0, t_up)
                moved = watch.first(BACKUP, t0)
                back = _settle(watch, t_up)
                row = {"kind": kind, "i": i + 1, "sent": sent, "ok": ok,
                       "availability": ok / sent if sent else 0.0,
                       "route_s": _r(moved - t0) if moved and moved < t_up else None,
                       "first_reply_s": _r(first - t0) if first else None,
                       "recovery_s": _r(back - t_up) if back else None}
                rows.append(row)
                log(f"  {kind:6} {i + 1:2}: route {row['route_s']} s, first reply "
                    f"{row['first_reply_s']} s, availability {ok}/{sent}, recovery "
                    f"{row['recovery_s']} s")
    finally:
        watch.stop.set()
        probe.close()
    return rows


def _settle(watch: RouteWatch, since: float = 0.0, timeout: float = 25.0) -> float | None:
    """Wait until the route is on the primary link (static: it never leaves), then one more
    second; the time the route came back to it after ``since`` (None: it did not move)."""
    t0 = time.monotonic()
    while watch.now() != LINK and time.monotonic() - t0 < timeout:
        time.sleep(0.02)
    back = [t for t, z in list(watch.changes) if z == LINK and t >= since]
    time.sleep(1.0)
    return back[-1] if back and watch.now() == LINK else None


def _r(x: float) -> float:
    return round(x, 3)


def pct(values: list[float], q: float) -> float | None:
    """The ``q`` quantile (nearest rank) of the values that are not None."""
    v = sorted(x for x in values if x is not None)
    if not v:
        return None
    return v[min(len(v) - 1, max(0, math.ceil(q * len(v)) - 1))]


def summary(rows: list[dict], protocol: str) -> list[dict]:
    out = []
    for kind in sorted({r["kind"] for r in rows}):
        rs = [r for r in rows if r["kind"] == kind]
        entry = {"protocol": protocol, "kind": kind, "n": len(rs),
                 "failed_over": sum(r["route_s"] is not None for r in rs)}
        for key in ("route_s", "first_reply_s", "recovery_s"):
            entry[f"{key}_median"] = pct([r[key] for r in rs], 0.5)
            entry[f"{key}_p95"] = pct([r[key] for r in rs], 0.95)
        avail = [r["availability"] for r in rs]
        entry["availability_median"] = round(statistics.median(avail), 3)
        entry["availability_min"] = round(min(avail), 3)
        out.append(entry)
    return out


def run_one(protocol: str, n: int, outage: float, log) -> dict:
    topo = load_topology(ROOT / "topologies" / "brigade.yaml")
    topo.routing.protocol = protocol
    with tempfile.TemporaryDirectory(prefix=f"failover-{protocol}-") as d:
        twin = Twin(topo, Path(d), f"bench-failover-{protocol}", log=lambda m: None)
        twin.link_emulation = "relay"
        t = time.monotonic()
        twin.start()
        try:
            built = time.monotonic() - t
            converged = twin.frr.converged_s if twin.frr else None
            ready = twin.frr.ready_s if twin.frr else {}
            log(f"{protocol}: twin up in {built:.1f} s (OSPF converged {converged} s: {ready})")
            rows = outages(twin, ("down", "jammed"), n, outage, log)
        finally:
            twin.stop()
    return {"protocol": protocol, "build_s": _r(built), "converged_s": converged, "rows": rows,
            "summary": summary(rows, protocol)}


def table(summaries: list[dict]) -> str:
    def f(x):
        return "-" if x is None else f"{x:.2f}"
    head = ("| routing | outage | n | failed over | route (median / p95 s) | first reply "
            "(median / p95 s) | availability (median / min) | recovery (median / p95 s) |")
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        lines.append(
            f"| {s['protocol']} | {s['kind']} | {s['n']} | {s['failed_over']} | "
            f"{f(s['route_s_median'])} / {f(s['route_s_p95'])} | "
            f"{f(s['first_reply_s_median'])} / {f(s['first_reply_s_p95'])} | "
            f"{s['availability_median']:.2f} / {s['availability_min']:.2f} | "
            f"{f(s['recovery_s_median'])} / {f(s['recovery_s_p95'])} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10, help="outages of each kind with OSPF")
    ap.add_argument("--static-n", type=int, default=2, help="outages of each kind, static")
    ap.add_argument("--outage", type=float, default=10.0, help="seconds each outage lasts")
    ap.add_argument("--json", type=Path, help="write every row and the summary here")
    args = ap.parse_args()

    def log(msg):
        print(msg, flush=True)

    results = [run_one("ospf", args.n, args.outage, log)]
    if args.static_n:
        results.append(run_one("static", args.static_n, args.outage, log))
    summaries = [s for r in results for s in r["summary"]]
    print()
    print(table(summaries))
    if args.json:
        args.json.write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M UTC",
                                                               time.gmtime()),
                                         "outage_s": args.outage, "results": results},
                                        indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

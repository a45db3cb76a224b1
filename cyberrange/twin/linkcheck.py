"""``twin verify``'s link checks: does each profiled zone delay, jitter and drop as promised?

For every zone (or point-to-point link) whose profile has a delay, jitter or loss and that has
two members, one member pings the other: a short warm-up (ARP, first-packet costs), then
``probes`` echo requests, paced so they use at most a tenth of the link's bandwidth (an echo
that queues behind its predecessors measures the queue, not the link) and cut to a time budget.

What the model promises for a round trip through a zone (the profile applies once per crossing,
see ``twin/linkemu.py``): RTT = 2 × delay; the RTT's standard deviation = jitter × √(2/3) (two
independent uniform draws in ±jitter); round-trip loss = 1 - (1 - loss)². A check agrees when

* RTT: |mean - 2·delay| ≤ max(5 % of 2·delay, 1 ms);
* jitter: |std - expected| ≤ max(25 % of expected, 1 ms) (the 1 ms covers the emulator's
  timer granularity and a loaded machine's scheduling);
* loss: the expected round-trip loss lies inside the 99 % Wilson interval of the measured one
  (the interval's half-width is reported: it says what the probe count can resolve).

A profile value the twin does not emulate (no netem and link emulation ``shape``) is a failed
check, ``status: "not emulated"``, unless the caller accepts it (``twin verify
--accept-unemulated``), which the report then records.
"""
from __future__ import annotations

import math
import re
import statistics

RTT_TOLERANCE = 0.05
ABS_TOLERANCE_MS = 1.0
JITTER_TOLERANCE = 0.25
PROBE_BYTES = 98                      # an ICMP echo of ping's default 56-byte payload, framed
MAX_LINK_SHARE = 0.10
BUDGET_S = 20.0
Z99 = 2.5758

_RTT = re.compile(r"icmp_seq=(\d+) .*time=([\d.]+) ms")


def probe_timeout(topo, base: float = 1.5) -> float:
    """A reachability probe's time-out on a twin that emulates delay: the base plus twice the
    worst round trip (every profiled zone crossed once each way, plus one ARP exchange)."""
    delays = sum(z_prof.delay_ms + z_prof.jitter_ms for z_prof in _zone_profiles(topo))
    return round(base + 2 * 2 * delays / 1000.0, 2)


def _zone_profiles(topo) -> list:
    out = []
    for zone in topo.zones.values():
        prof = next((i.profile for _, i in topo.members(zone.name)
                     if i.profile and i.profile.needs_netem), None)
        if prof is not None:
            out.append(prof)
    return out


def zone_pairs(topo, want) -> list[tuple]:
    """(zone, client, server, server ip, profile) for each zone or link with two members whose
    profile passes ``want``: two hosts where it has them (routers run ping and iperf3 too)."""
    out = []
    for zone in topo.zones.values():
        members = topo.members(zone.name)
        prof = next((i.profile for _, i in members if i.profile and want(i.profile)), None)
        if prof is None or len(members) < 2:
            continue
        members = sorted(members, key=lambda m: (not m[0].is_host, m[0].name))
        (a, _), (b, ib) = members[0], members[1]
        out.append((zone.name, a.name, b.name, ib.ip, prof))
    return out


def link_pairs(topo) -> list[tuple]:
    """The pairs of every zone whose profile has a delay, jitter or loss."""
    return zone_pairs(topo, lambda p: p.needs_netem)


def plan(profile, probes: int, budget_s: float = BUDGET_S) -> tuple[int, float]:
    """(count, interval in s) for ``profile``: at most a tenth of its bandwidth, at least
    10 ms apart, within ``budget_s`` (fewer probes on slow links, never fewer than 20)."""
    interval = 0.01
    if profile.bandwidth_mbit:
        interval = max(interval, PROBE_BYTES * 8 * 2 / (profile.bandwidth_mbit * 1e6
                                                          * MAX_LINK_SHARE))
    count = max(20, min(probes, int(budget_s / interval)))
    return count, round(interval, 4)


def expected(profile) -> dict:
    lo = profile.loss_pct / 100.0
    return {"rtt_ms": 2 * profile.delay_ms,
            "rtt_std_ms": profile.jitter_ms * math.sqrt(2.0 / 3.0),
            "loss_pct": 100.0 * (1 - (1 - lo) ** 2)}


def wilson(lost: int, n: int, z: float = Z99) -> tuple[float, float]:
    """The Wilson score interval of a proportion, in percent."""
    if n == 0:
        return (0.0, 100.0)
    p = lost / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (100 * max(0.0, mid - half), 100 * min(1.0, mid + half))


def parse_ping(text: str, count: int) -> tuple[list[float], int]:
    """Round-trip times (ms) of the replies in ping's output, and how many echoes had none.
    Duplicates (the same icmp_seq twice) count once."""
    rtts: dict[int, float] = {}
    for m in _RTT.finditer(text):
        rtts.setdefault(int(m.group(1)), float(m.group(2)))
    return list(rtts.values()), count - len(rtts)


def judge(profile, rtts: list[float], lost: int, emulated: bool) -> dict:
    """The row for one link: measured values, what was expected, and whether they agree."""
    exp = expected(profile)
    n = len(rtts) + lost
    row = {"expected_rtt_ms": round(exp["rtt_ms"], 3),
           "expected_rtt_std_ms": round(exp["rtt_std_ms"], 3),
           "expected_loss_pct": round(exp["loss_pct"], 4), "probes": n}
    if not rtts:
        row.update(status="error", agree=False, explanation="no echo came back")
        return row
    mean = statistics.fmean(rtts)
    std = statistics.pstdev(rtts) if len(rtts) > 1 else 0.0
    lo, hi = wilson(lost, n)
    row.update(rtt_ms=round(mean, 3), rtt_std_ms=round(std, 3),
               loss_pct=round(100 * lost / n, 4), loss_ci99=[round(lo, 4), round(hi, 4)])
    checks = {
        "rtt": abs(mean - exp["rtt_ms"]) <= max(RTT_TOLERANCE * exp["rtt_ms"], ABS_TOLERANCE_MS),
        "jitter": abs(std - exp["rtt_std_ms"]) <= max(JITTER_TOLERANCE * exp["rtt_std_ms"],
                                                     ABS_TOLERANCE_MS),
        "loss": lo <= exp["loss_pct"] <= hi,
    }
    row["checks"] = checks
    row["agree"] = all(checks.values())
    row["status"] = "measured" if emulated else "not emulated"
    if not emulated:
        row["agree"] = False
        row["explanation"] = ("delay, jitter and loss are not emulated on this kernel (no netem,"
                              " link emulation 'shape'): the link behaves as a LAN")
    elif not row["agree"]:
        bad = [k for k, ok in checks.items() if not ok]
        row["explanation"] = "; ".join(_why(k, row) for k in bad)
    return row


def _why(check: str, row: dict) -> str:
    if check == "rtt":
        return f"RTT {row['rtt_ms']:.1f} ms, expected {row['expected_rtt_ms']:.1f} ms"
    if check == "jitter":
        return (f"RTT deviation {row['rtt_std_ms']:.1f} ms, expected "
                f"{row['expected_rtt_std_ms']:.1f} ms")
    lo, hi = row["loss_ci99"]
    return (f"loss {row['loss_pct']:.2f} % (99 % interval {lo:.2f}-{hi:.2f}), expected "
            f"{row['expected_loss_pct']:.2f} %")


def measure_links(twin, probes: int = 1000, budget_s: float = BUDGET_S,
                  accept_unemulated: bool = False) -> list[dict]:
    """One row per profiled zone (see the module's docstring); the zones are measured at
    once (each ping stays inside its own zone)."""
    from concurrent.futures import ThreadPoolExecutor
    pairs = link_pairs(twin.topo)
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(pairs)))) as ex:
        rows = list(ex.map(lambda p: _measure_one(twin, p, probes, budget_s), pairs))
    for row in rows:
        if row["status"] == "not emulated" and accept_unemulated:
            row.update(agree=True, accepted=True,
                       explanation=row["explanation"] + " (accepted by --accept-unemulated)")
    return rows


def _measure_one(twin, pair, probes: int, budget_s: float) -> dict:
    from cyberrange.twin import linkemu
    zone, client, server, ip, prof = pair
    count, interval = plan(prof, probes, budget_s)
    # sub-millisecond delay alone is the veth's own (linkemu.relay_needed)
    emulated = (twin.netem or twin.link_emulation == "relay"
                or not linkemu.relay_needed(prof))
    wait = max(2, math.ceil(4 * (2 * prof.delay_ms + 2 * prof.jitter_ms) / 1000) + 1)
    twin.run(client, ["ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", str(wait), str(ip)],
             timeout=30)
    r = twin.run(client, ["ping", "-n", "-c", str(count), "-i", f"{interval:g}",
                          "-W", str(wait), str(ip)],
                 timeout=count * interval + wait + 30)
    rtts, lost = parse_ping(r.stdout, count)
    row = {"zone": zone, "client": client, "server": server, "profile": prof.name,
           "delay_ms": prof.delay_ms, "jitter_ms": prof.jitter_ms, "loss": prof.loss_pct,
           "interval_s": interval}
    row.update(judge(prof, rtts, lost, emulated))
    return row

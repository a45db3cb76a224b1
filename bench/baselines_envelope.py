"""Before/after envelope of the baseline-relative rules (issue 15, item 2), on synthetic records.

For each miss the issue lists, the main parameter is swept and the smallest / slowest value any
instance of the family alerts on is reported, with the detectors of a reference folder (before:
``--before DIR``, e.g. main's ``detectors/`` from before the change, run with this code -- the
new settings default to off, so it behaves as before) and of ``detectors/`` (after). Every
trainable detector learns from the benign baseline of tests/support/baseline_scenarios.py (60 s).

    python bench/baselines_envelope.py --before /path/to/old/detectors [--markdown FILE]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "support"))

import baseline_scenarios as sc
from records import records

from cyberrange.detect.registry import load_detectors
from cyberrange.telemetry.schema import FLOW_RECORD_SCHEMA

START = sc.T0 + sc.BASE_S + 30


def fires(folder, family, rows, pk_rows=None, names=None) -> bool:
    """Does any enabled instance of ``family`` in ``folder`` alert on the attacker?"""
    cut = int((sc.T0 + sc.BASE_S) * 1e6)
    base = records([r for r in rows if r["event.start"] < cut]) if rows else \
        FLOW_RECORD_SCHEMA.empty_table()
    whole = records(rows) if rows else FLOW_RECORD_SCHEMA.empty_table()
    pk = pkb = None
    if pk_rows is not None:
        pk = sc.packets(pk_rows)
        pkb = sc.packets([r for r in pk_rows if r["@timestamp"] < cut])
    for d in load_detectors(folder):
        if d.family != family or (names and d.name not in names):
            continue
        if d.trainable:
            d.fit(base, pkb)
        got = d.detect(whole, pk if d.needs_packets else None)
        if any(a.source_ip in (sc.ATT, sc.WEB) or a.destination_ip in (sc.FILES,)
               for a in got):
            return True
    return False


def smallest(folder, family, build, values, **kw):
    return next((v for v in values if fires(folder, family, *build(v), **kw)), None)


def largest(folder, family, build, values, **kw):
    hit = [v for v in values if fires(folder, family, *build(v), **kw)]
    return max(hit) if hit else None


def measure(folder) -> dict:
    b = sc.benign()
    out = {}
    out["password guesses to alert (1/s, a source with no baseline login)"] = smallest(
        folder, "bruteforce", lambda n: (b + sc.guesses(START, n),), range(2, 13))
    out["spray attempts to alert (1/s over 3 services)"] = smallest(
        folder, "bruteforce", lambda n: (b + sc.spray(START, n),), range(2, 13))
    hosts = [f"10.40.9.{i}" for i in range(1, 13)]

    def sweep(n, every):
        live = [sc.flow(sc.T0 + i, sc.WS2, h, 80) for i, h in enumerate(hosts[:n])]
        return (b + live + sc.small_sweep(START, n, every=every, hosts=hosts),)
    out["smallest subnet fully swept that alerts (ICMP, 1 host/s)"] = smallest(
        folder, "portscan", lambda n: sweep(n, 1.0), range(2, 13))
    out["smallest subnet fully swept that alerts (ICMP, 1 host/30 s)"] = smallest(
        folder, "portscan", lambda n: sweep(n, 30.0), range(2, 13))
    out["slowest UDP scan that alerts (s between probes, 20 targets)"] = largest(
        folder, "portscan", lambda s: (b + sc.udp_scan(START, s, n=20),),
        [0.25, 0.5, 0.9, 1, 2, 5, 10, 30, 60, 80, 85, 90, 120])
    out["slowest ARP scan that alerts (s between requests, 20 targets)"] = largest(
        folder, "arp", lambda s: ([], sc.benign_arp() + sc.arp_scan(START, s, n=20)),
        [0.25, 0.5, 0.6, 1, 2, 5, 10, 30, 60, 80, 85, 90, 120])
    pps = [50, 90, 100, 150, 200, 300, 400, 500, 600, 800, 1000, 1200]
    out["lowest SYN flood that alerts on a quiet service (SYN/s, 3 s)"] = smallest(
        folder, "flood", lambda p: (b + sc.flood(START, p, dst=sc.FILES, port=80),), pps)
    out["lowest UDP flood that alerts on a quiet host (datagrams/s, 3 s)"] = smallest(
        folder, "flood", lambda p: (b + sc.flood(START, p, dst=sc.FILES, port=9,
                                                 mode="udp"),), pps)
    intrusion = b + sc.quiet_intrusion(START)
    out["quiet intrusion (3 guesses, 1 login, 1 hop) alerted"] = any(
        fires(folder, fam, intrusion) for fam in ("novelty", "lateral", "bruteforce",
                                                   "portscan"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True, help="detectors folder before the change")
    ap.add_argument("--after", default=str(ROOT / "detectors"))
    ap.add_argument("--markdown", help="also write the table here")
    args = ap.parse_args()
    before, after = measure(args.before), measure(args.after)
    lines = ["| miss (issue 15) | before | after |", "|---|---|---|"]
    for k in before:
        fmt = lambda v: "missed" if v is None or v is False else ("yes" if v is True else v)
        lines.append(f"| {k} | {fmt(before[k])} | {fmt(after[k])} |")
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")


if __name__ == "__main__":
    main()

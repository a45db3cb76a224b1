"""Benign statistics behind the baseline-relative thresholds (issue 15, item 2), and the alerts
and weak signals of the detectors over stored runs, split by whether they touch the attack.

For every run folder given (a drill: manifest.json, store.duckdb, ledger.jsonl), the attack
flows are labelled from the ledger (``score.label_flows``: this is evaluation, the detectors
never see it) and left out of the statistics; ARP requests of a step's actor are left out too.

Statistics (the largest value over all runs; each yaml comment quotes the one it rests on):

* ``udp_unanswered_600s``: distinct unanswered unicast UDP (host, port) per source in 10 min;
* ``probed_hosts_600s``: distinct hosts per source among probe-like TCP / ICMP echo flows;
* ``logins_edge_20s`` / ``logins_src_30s``: short login sessions per (source, service) in 20 s
  and per source in 30 s, for all sources and for *novices* (no login in the run's warm-up);
* ``syn_pps`` / ``syn_flows`` / ``udp_pps``: the busiest target's rate in any 1 s bin;
* ``arp_targets_600s``: distinct ARP targets per asking MAC in 10 min.

Then every detector of ``--detectors`` (trained on each run's own warm-up, as a drill does) is
run, and its alerts and signals are counted as *attack* (an attack flow among its flows, or its
source is a step's actor) or *benign*.

    python bench/baselines_corpus.py RUN_DIR... [--detectors detectors] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow as pa

from cyberrange.detect.arp import arp_frames
from cyberrange.detect.base import columns
from cyberrange.detect.bruteforce import login_attempts, session_key
from cyberrange.detect.flood import FloodDetector
from cyberrange.detect.portscan import PortScanDetector
from cyberrange.detect.registry import baseline_end, baseline_window, load_detectors
from cyberrange.score.score import label_flows, load_ledger
from cyberrange.store import open_store
from cyberrange.telemetry.schema import RECORD_SCHEMAS

S = 1_000_000


def max_distinct(events, window_us) -> int:
    """Largest number of distinct keys among ``(t, key)`` events within any window."""
    events = sorted(events)
    best, j, cnt = 0, 0, Counter()
    for t, k in events:
        cnt[k] += 1
        while events[j][0] <= t - window_us:
            cnt[events[j][1]] -= 1
            if not cnt[events[j][1]]:
                del cnt[events[j][1]]
            j += 1
        best = max(best, len(cnt))
    return best


def group_max(groups: dict, window_us) -> int:
    return max([max_distinct(v, window_us) for v in groups.values()] or [0])


def flow_stats(fl: pa.Table, warmup_end_us: int | None) -> dict:
    out = {}
    udp = PortScanDetector("u", mode="ports", transports=["udp"], udp_probes="unanswered")
    c = columns(fl.filter(udp.probe_mask(fl)), ["event.start", "source.ip", "destination.ip",
                                               "destination.port"])
    g = defaultdict(list)
    for t, s, d, p in zip(*c.values()):
        g[s].append((t, (d, p)))
    out["udp_unanswered_600s"] = group_max(g, 600 * S)
    hosts = PortScanDetector("h", mode="hosts", transports=["tcp", "icmp"])
    c = columns(fl.filter(hosts.probe_mask(fl)), ["event.start", "source.ip", "destination.ip"])
    g = defaultdict(list)
    for t, s, d in zip(*c.values()):
        g[s].append((t, d))
    out["probed_hosts_600s"] = group_max(g, 600 * S)
    la = login_attempts(fl, [22, 23, 2222, 3389], 10 * 10**9, 40)
    c = columns(la, ["event.start", "source.ip", "destination.ip", "destination.port",
                     "network.community_id", "cyberrange.flow_id"])
    clients = {s for t, s in zip(c["event.start"], c["source.ip"])
               if warmup_end_us is not None and t < warmup_end_us}
    for who in ("all", "novice"):
        edge, src = defaultdict(list), defaultdict(list)
        for t, s, d, p, cid, fid in zip(*c.values()):
            if who == "novice" and (warmup_end_us is None or s in clients or t < warmup_end_us):
                continue
            key = session_key(cid, t, fid)
            edge[(s, d, p)].append((t, key))
            src[s].append((t, key))
        out[f"logins_edge_20s_{who}"] = group_max(edge, 20 * S)
        out[f"logins_src_30s_{who}"] = group_max(src, 30 * S)
    for mode in ("syn", "udp"):
        det = FloodDetector("f", mode=mode, pps=1e-9, flows=0, sustain=1)
        prep = det._prepare(fl)
        rp = rf = [0.0]
        if prep is not None:
            _, start, end, pkts, byts, target, obs, _ = prep
            _, _, rp, _, rf = det._bin_rates(start, end, pkts, byts, target, obs)
        out[f"{mode}_pps"] = round(float(max(rp)), 1)
        if mode == "syn":
            out["syn_flows"] = round(float(max(rf)), 1)
    return out


def arp_stats(pk: pa.Table, actors: set) -> int:
    g = defaultdict(list)
    for t, op, sip, smac, tip, esrc in arp_frames(pk):
        if op == "request" and tip != sip and sip not in actors:
            g[(esrc or smac, sip)].append((t, tip))
    return group_max(g, 600 * S)


def run_one(run: Path, detectors, counts, stats) -> int:
    m = json.loads((run / "manifest.json").read_text())
    led = load_ledger(run / "ledger.jsonl") if (run / "ledger.jsonl").exists() else []
    actors = {s.get("actor_ip") for s in led}
    cols = {k: list(v.names) for k, v in RECORD_SCHEMAS.items()}
    with open_store(run / "store.duckdb") as st:
        fl = st.read("flows", m["run_id"], columns=cols["flows"])
        pk = st.read("packets", m["run_id"], columns=cols["packets"])
    if fl.num_rows == 0:
        return 0
    labels = label_flows(led, fl)
    attack = {f for f, lb in zip(fl.column("cyberrange.flow_id").to_pylist(), labels) if lb}
    benign = fl.filter(pa.array([lb is None for lb in labels]))
    bs, bu = m.get("baseline_s"), m.get("baseline_end")
    end = baseline_end(fl, pk, bs, bu) if (bs or bu) else None
    end_us = int(end.timestamp() * S) if end is not None else None
    for k, v in flow_stats(benign, end_us).items():
        stats[k] = max(stats.get(k, 0), v)
    stats["arp_targets_600s"] = max(stats.get("arp_targets_600s", 0), arp_stats(pk, actors))
    train = baseline_window(fl, pk, bs, bu) if (bs or bu) else None
    for det in detectors:
        if det.trainable:
            if train is not None:
                det.fit(train[0], train[1] if det.needs_packets else None)
            else:
                det.trained = False
        p = pk if det.needs_packets else None
        found = [("alert", a) for a in det.detect(fl, p)]
        if hasattr(det, "signals"):
            found += [("signal", s) for s in det.signals(fl, p)]
        for kind, a in found:
            bad = bool(set(a.flow_ids) & attack) or a.source_ip in actors
            counts[det.name][f"{kind}_{'attack' if bad else 'benign'}"] += 1
    return benign.num_rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--detectors", default="detectors")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    detectors = load_detectors(args.detectors)
    counts: dict = defaultdict(Counter)
    stats: dict = {}
    rows = sum(run_one(r, detectors, counts, stats) for r in args.runs
               if (r / "manifest.json").exists())
    result = {"runs": len(args.runs), "benign_flow_rows": rows, "benign_max": stats,
              "detectors": {k: dict(v) for k, v in sorted(counts.items())}}
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()

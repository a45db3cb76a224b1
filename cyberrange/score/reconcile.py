"""Capture reconciliation: did every packet that crossed a sensor reach the store, once?

Per sensor, four counts that must agree, and two that explain where traffic came from:

* ``captured``        tcpdump's own counter (packets it wrote), read when it stopped;
* ``received``        packets the kernel handed to the capture (``received by filter``);
* ``kernel_drops``    packets the capture ring had no room for (``dropped by kernel``);
* ``pcap_frames``     complete records in the sensor's pcap files, counted now from the files;
* ``stored``          packet records in the store with ``observer.name`` = the sensor;
* ``attack_ledger`` / ``attack_stored``: packets the ledger says attack steps sent on 5-tuples
  this sensor must see (the sender is in its scope: a member of a span zone, a listed node of a
  port set) or did see, against the packet records stored for those 5-tuples in the steps'
  windows (``score.packet_reconciliation`` per observer);
* ``benign_logged``   what the benign generators logged for hosts in the sensor's scope or to its
  addresses (``logs/benign-*.jsonl``: ``packets`` where a record has it, else requests). Shown,
  not compared: a request is not a packet count.

A sensor is **zero loss** when kernel_drops is 0, received == captured == pcap_frames == stored,
no file that the sensor wrote at stop time is missing or shorter, no pcap ends in a cut-short
record, and attack_ledger == attack_stored. Otherwise ``differences`` lists, in words, each count
that differs. Inputs are the run folder's manifest (``sensors``: what
``cyberrange.twin.sensors.Sensors.stop`` recorded), the pcaps, the ledger and the store's packets.
"""
from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from cyberrange.score.score import packet_reconciliation
from cyberrange.telemetry.files import capture_files, count_frames

__all__ = ["benign_counts", "reconcile"]


def benign_counts(log_dir: Path) -> dict[str, dict]:
    """Per generating host: ``{requests, packets (None when not logged), records: [...]}``."""
    out: dict[str, dict] = {}
    for f in sorted(Path(log_dir).glob("benign-*.jsonl")):
        host = f.name[len("benign-"):-len(".jsonl")]
        recs = []
        for line in f.read_text(errors="replace").splitlines():
            try:
                recs.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        pk = [r.get("packets") for r in recs if isinstance(r, dict)]
        out[host] = {"requests": len(recs),
                     "packets": sum(p for p in pk if isinstance(p, int)) if any(
                         isinstance(p, int) for p in pk) else None,
                     "records": recs}
    return out


def _in(ip, nets) -> bool:
    try:
        a = ipaddress.ip_address(ip)
    except (ValueError, TypeError):
        return False
    return any(a in n for n in nets)


def _stored_per_observer(packets: pa.Table) -> dict[str, int]:
    if packets.num_rows == 0:
        return {}
    vc = pc.value_counts(packets.column("observer.name")).to_pylist()
    return {d["values"]: int(d["counts"]) for d in vc}


def reconcile(run_dir: Path, manifest: dict, ledger: list[dict], packets: pa.Table,
              parse_stats: dict | None = None, slack_s: float = 2.0) -> dict:
    """The reconciliation of one run: ``{zero_loss, verdict, sensors: [...], attack: {...}}``."""
    run_dir = Path(run_dir)
    recorded = manifest.get("sensors") or {}
    files_now = capture_files(run_dir / "pcaps")
    stored = _stored_per_observer(packets)
    benign = benign_counts(run_dir / "logs")
    per_sensor_parse = (parse_stats or {}).get("sensors") or {}
    names = sorted(set(recorded) | set(files_now))
    rows = []
    for name in names:
        rec = recorded.get(name) or {}
        diffs: list[str] = []
        # the files: what tcpdump left at stop time against what is there now
        now = {str(f.relative_to(run_dir)): f for f in files_now.get(name, [])}
        frames_now = {}
        truncated = []
        for rel, f in now.items():
            c = count_frames(f)
            frames_now[rel] = c["frames"] or 0
            if c["truncated"]:
                truncated.append(rel)
        for fr in rec.get("files") or []:
            rel = fr["file"]
            if rel not in now:
                diffs.append(f"file {rel} ({fr.get('frames')} frames) is missing")
            elif fr.get("frames") is not None and frames_now[rel] != fr["frames"]:
                diffs.append(f"file {rel} had {fr['frames']} frames at stop, now {frames_now[rel]}")
        for rel in truncated:
            diffs.append(f"file {rel} ends in a cut-short record")
        pcap_frames = sum(frames_now.values())
        captured, received = rec.get("captured"), rec.get("received_by_filter")
        drops = rec.get("dropped_by_kernel")
        n_stored = stored.get(name, 0)
        if drops:
            diffs.append(f"kernel dropped {drops} packets")
        if received is not None and captured is not None and received != captured:
            diffs.append(f"kernel handed over {received} packets, tcpdump wrote {captured}")
        if captured is not None and captured != pcap_frames:
            diffs.append(f"tcpdump wrote {captured} packets, the pcaps hold {pcap_frames}")
        if captured is None and rec:
            diffs.append("tcpdump's counters are missing (it did not stop cleanly)")
        if n_stored != pcap_frames:
            ps = per_sensor_parse.get(name) or {}
            why = ""
            if ps.get("skipped"):
                why = " (parser skipped: " + ", ".join(f"{k} {v}" for k, v in
                                                        sorted(ps["skipped"].items())) + ")"
            diffs.append(f"the pcaps hold {pcap_frames} frames, the store {n_stored} records{why}")
        # attack packets on the 5-tuples this sensor must see or did see
        scope = rec.get("scope") or {}
        scope_ips = set(scope.get("ips") or [])
        arows = packet_reconciliation(ledger, packets, observer=name, slack_s=slack_s) \
            if ledger else []
        expected = [r for r in arows if r["src"] in scope_ips or r["stored_packets"] > 0]
        a_ledger = sum(r["ledger_packets"] for r in expected)
        a_stored = sum(r["stored_packets"] for r in expected)
        bad = [r for r in expected if r["ledger_packets"] != r["stored_packets"]]
        if bad:
            diffs.append(f"attack packets: ledger {a_ledger}, stored {a_stored} "
                         f"({len(bad)} of {len(expected)} 5-tuples differ)")
        # benign: logged by hosts in scope or sent to its addresses
        nets = [ipaddress.ip_network(c, strict=False) for c in scope.get("cidrs") or []]
        nodes = set(scope.get("nodes") or [])
        b_req, b_pk, b_pk_known = 0, 0, True
        for host, b in benign.items():
            mine = [r for r in b["records"] if isinstance(r, dict)
                    and (host in nodes or _in(r.get("dst"), nets) or _in(r.get("src"), nets))]
            b_req += len(mine)
            for r in mine:
                if isinstance(r.get("packets"), int):
                    b_pk += r["packets"]
                else:
                    b_pk_known = False
        rows.append({
            "sensor": name, "kind": rec.get("kind") or scope.get("kind"),
            "files": len(now), "captured": captured, "received": received,
            "kernel_drops": drops, "pcap_frames": pcap_frames, "stored": n_stored,
            "attack_ledger": a_ledger, "attack_stored": a_stored,
            "attack_mismatched": bad[:20],
            "benign_requests": b_req, "benign_packets": b_pk if (b_req and b_pk_known) else None,
            "zero_loss": not diffs, "differences": diffs,
            "verdict": "zero loss" if not diffs else "; ".join(diffs),
        })
    lost = [r for r in rows if not r["zero_loss"]]
    if not rows:
        verdict = "no sensors"
    elif not lost:
        verdict = "zero loss"
    else:
        verdict = "; ".join(f"{r['sensor']}: {r['verdict']}" for r in lost)
    return {"zero_loss": bool(rows) and not lost, "verdict": verdict, "per_sensor": rows}

"""Reconciliation without a twin: synthetic captures in a run folder, then injected losses."""
from __future__ import annotations

import json
import socket
import struct
import time
from pathlib import Path

import pyarrow.compute as pc
import pytest

from cyberrange.drill import analyse
from cyberrange.run import Run
from cyberrange.score.reconcile import reconcile
from cyberrange.telemetry.files import (
    capture_files,
    count_frames,
    join_pcaps,
    rotation_key,
)
from cyberrange.ingest.load import load_captures

T0 = time.time() - 60
SRC, DST, SPORT, DPORT = "10.0.0.1", "10.0.0.2", 40000, 9


def frame(i: int, sport=SPORT) -> bytes:
    payload = bytes([i % 256]) * 18
    udp = struct.pack("!HHHH", sport, DPORT, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i, 0, 64, 17, 0,
                     socket.inet_aton(SRC), socket.inet_aton(DST))
    return b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00" + ip + udp


def write_pcap(path: Path, frames: list[tuple[float, bytes]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
        fh.writelines(struct.pack("<IIII", int(t), int((t % 1) * 1e6), len(f), len(f)) + f for t, f in frames)


def _sensor_record(run_dir: Path, name: str, files: list[Path], captured: int) -> dict:
    return {"kind": "span", "captured": captured, "received_by_filter": captured,
            "dropped_by_kernel": 0,
            "files": [{"file": str(f.relative_to(run_dir)), "frames": count_frames(f)["frames"],
                       "truncated": False} for f in files],
            "scope": {"kind": "span", "nodes": ["a", "b"], "ips": [SRC, DST],
                      "cidrs": ["10.0.0.0/24"]}}


@pytest.fixture
def run(tmp_path):
    """A finished run: sensor s1 in one file, s2 rotated into three files, 30 ledger packets."""
    d = tmp_path / "run-1"
    frames = [(T0 + i * 0.1, frame(i)) for i in range(30)]
    write_pcap(d / "pcaps" / "s1.pcap", frames)
    rot = [d / "pcaps" / "s2" / f"s2-2026112700000{k}.pcap" for k in (1, 2)]
    rot.append(d / "pcaps" / "s2" / "s2-20261127000002.pcap1")       # -C numbering
    for k, f in enumerate(rot):
        write_pcap(f, frames[k * 10:(k + 1) * 10])
    (d / "logs").mkdir()
    (d / "logs" / "benign-a.jsonl").write_text(
        json.dumps({"time": T0, "kind": "http", "dst": DST, "dport": 80, "proto": "tcp"}) + "\n"
        + json.dumps({"time": T0, "kind": "dns", "dst": "10.9.9.9", "dport": 53, "proto": "udp",
                      "packets": 2}) + "\n")
    (d / "ledger.jsonl").write_text(json.dumps({
        "step_id": "flood", "technique": "T1499", "outcome": "succeeded", "start": T0 - 1,
        "end": T0 + 5, "flows": [{"proto": "udp", "src": SRC, "sport": SPORT, "dst": DST,
                                  "dport": DPORT, "packets": 30}]}) + "\n")
    r = Run(d)
    r.manifest = {"run_id": d.name, "sensors": {
        "s1": _sensor_record(d, "s1", [d / "pcaps" / "s1.pcap"], 30),
        "s2": _sensor_record(d, "s2", rot, 30)}}
    r.save()
    return r


def _recon(run):
    from cyberrange.attack.ledger import read_ledger
    ledger = read_ledger(run.ledger_path)
    packets, flows, stats = load_captures(run.dir / "pcaps", run.id)
    return reconcile(run.dir, run.manifest, ledger, packets, stats), packets, flows


def test_capture_files_are_in_rotation_order(run):
    files = capture_files(run.dir / "pcaps")
    assert [f.name for f in files["s2"]] == ["s2-20261127000001.pcap", "s2-20261127000002.pcap",
                                             "s2-20261127000002.pcap1"]
    assert rotation_key(Path("x.pcap")) < rotation_key(Path("x.pcap1")) < rotation_key(Path("x.pcap10"))
    assert [f.name for f in files["s1"]] == ["s1.pcap"]


def test_a_flow_across_rotations_is_one_flow(run, tmp_path):
    _rec, packets, flows = _recon(run)
    for obs in ("s1", "s2"):
        f = flows.filter(pc.equal(flows["observer.name"], obs))
        assert f.num_rows == 1 and f["network.packets"][0].as_py() == 30, obs
    joined = tmp_path / "j.pcap"
    assert join_pcaps(capture_files(run.dir / "pcaps")["s2"], joined)["frames"] == 30
    assert count_frames(joined)["frames"] == 30
    assert not (run.dir / "pcaps" / ".joined-s2.pcap").exists()


def test_clean_run_is_zero_loss(run):
    rec, _p, _f = _recon(run)
    assert rec["zero_loss"] and rec["verdict"] == "zero loss", rec
    rows = {r["sensor"]: r for r in rec["per_sensor"]}
    for name in ("s1", "s2"):
        r = rows[name]
        assert (r["captured"], r["pcap_frames"], r["stored"], r["kernel_drops"]) == (30, 30, 30, 0)
        assert r["attack_ledger"] == r["attack_stored"] == 30
        assert r["benign_requests"] == 2        # host a is in scope
    assert rows["s2"]["files"] == 3


def test_deleted_rotated_file_is_flagged(run):
    (run.dir / "pcaps" / "s2" / "s2-20261127000002.pcap").unlink()
    rec, _p, _f = _recon(run)
    assert not rec["zero_loss"]
    rows = {r["sensor"]: r for r in rec["per_sensor"]}
    assert rows["s1"]["zero_loss"]
    bad = rows["s2"]
    assert not bad["zero_loss"] and bad["pcap_frames"] == 20 and bad["stored"] == 20
    text = " ".join(bad["differences"])
    assert "is missing" in text and "tcpdump wrote 30 packets, the pcaps hold 20" in text
    assert "attack packets: ledger 30, stored 20" in text


def test_truncated_pcap_is_flagged(run):
    p = run.dir / "pcaps" / "s1.pcap"
    p.write_bytes(p.read_bytes()[:-7])
    rec, _p, _f = _recon(run)
    bad = {r["sensor"]: r for r in rec["per_sensor"]}["s1"]
    assert not bad["zero_loss"] and bad["pcap_frames"] == 29
    assert "cut-short" in bad["verdict"] and "had 30 frames at stop, now 29" in bad["verdict"]


def test_kernel_drops_are_flagged(run):
    run.manifest["sensors"]["s1"]["dropped_by_kernel"] = 5
    rec, _p, _f = _recon(run)
    assert "s1: kernel dropped 5 packets" in rec["verdict"]


def test_analyse_puts_the_verdict_in_the_scorecard_and_report(run):
    card = analyse(run, [])
    rec = card["reconciliation"]
    assert rec["zero_loss"] and rec["ledger_packets"] == rec["stored_packets"] == 30
    assert "zero loss" in (run.dir / "report.md").read_text()
    (run.dir / "pcaps" / "s2" / "s2-20261127000001.pcap").unlink()
    card = analyse(run, [])
    assert not card["reconciliation"]["zero_loss"]
    assert "s2: file pcaps/s2/s2-20261127000001.pcap (10 frames) is missing" in \
        card["reconciliation"]["verdict"]
    from rich.console import Console

    from cyberrange.report.terminal import print_scorecard
    con = Console(record=True, width=200)
    print_scorecard(card, con)
    assert "Capture reconciliation" in con.export_text()

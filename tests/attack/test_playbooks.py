"""The playbook library: every file in attack_playbooks/ validates against the topology it names
(no root), and, in a real twin of that topology (root), runs with the outcome designed for each
step and with ledger packet counts equal to what the sensors captured, per 5-tuple.

A new playbook dropped into attack_playbooks/ is picked up by every test here; it also needs an
entry in ``EXPECT`` (the outcome of each step) and, if it runs longer than ~30 s as shipped, in
``COMPRESS`` (param and timing overrides that shorten it for the test; the shipped pacing is
realistic: minutes to an hour).

Timings (2 cores, shared): the validation tests take ~10 s; each live playbook 3-25 s including the
twin's boot and teardown; they run 6 at a time (``live_playbook``), the whole file ~1.5 min.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from background import Pool
from helpers import ROOT, cli, needs_twin
from pacing import COMPRESS, compressed_copy

from cyberrange.attack.ledger import read_ledger
from cyberrange.attack.playbook import load_playbook
from cyberrange.model.loader import load_topology

PLAYBOOKS = sorted((ROOT / "attack_playbooks").glob("*.yaml"))
IDS = [p.stem for p in PLAYBOOKS]
TOPOLOGY_FILES = {load_topology(p).name: p for p in sorted((ROOT / "topologies").glob("*.yaml"))}

# The outcome every step must have in the test run (one per step id; a repeated step: every
# execution). "blocked" marks the steps designed to be stopped by a firewall.
EXPECT: dict[str, dict[str, str]] = {
    "recon-bruteforce": {"sweep": "succeeded", "scan": "succeeded", "brute": "succeeded"},
    "depot-intrusion-exfil": {"sweep": "succeeded", "scan": "succeeded", "brute": "succeeded",
                              "pivot": "succeeded", "probe-inside": "blocked",
                              "exfil": "succeeded"},
    "depot-dns-exfil": {"poll": "succeeded", "upload": "blocked", "tunnel": "succeeded"},
    "depot-insider-theft": {"login": "succeeded", "upload": "succeeded"},
    "airbase-c2-beacon": {"beacon": "succeeded", "dns-poll": "succeeded", "sweep": "succeeded",
                          "report": "succeeded"},
    "airbase-fuel-plc": {"probe": "blocked", "read": "succeeded", "alarm": "succeeded",
                         "hold": "succeeded"},
    "fob-satcom-dos": {"recon": "succeeded", "link-flood": "succeeded", "syn-flood": "succeeded"},
    "fob-ops-mitm": {"arpscan": "succeeded", "mitm-gw": "succeeded", "mitm-files": "succeeded"},
    "fob-pcap-replay": {"replay1": "succeeded", "replay2": "succeeded"},
    "fob-service-discovery": {"udp": "succeeded", "banner": "succeeded"},
    "naval-low-slow-scan": {"admin": "succeeded", "otdmz": "succeeded", "otseg": "blocked"},
    "coalition-password-spray": {"sweep": "succeeded", "scan": "succeeded", "spray": "succeeded",
                                 "spray-usa": "blocked", "login": "succeeded"},
    "coalition-quiet-valid-accounts": {"guess": "succeeded", "login": "succeeded",
                                       "hop": "succeeded"},
}

# Background traffic the victims of a MitM must have: Linux only updates neighbour entries that
# exist, so a victim that never talked to the other is not poisoned. (node, argv) run for the
# whole playbook; their packets come from the victims, never from an actor in the ledger.
VICTIM_TRAFFIC: dict[str, list[tuple[str, list[str]]]] = {
    "fob-ops-mitm": [("ops-ws1", ["ping", "-q", "-i", "0.2", "10.10.3.80"]),
                     ("ops-ws2", ["ping", "-q", "-i", "0.2", "10.10.2.20"])],
}


# Playbooks whose steps send ARP only (no 5-tuple, no ledger flows): the ARP frames the actor
# sent, counted from this sensor's capture, must equal the steps' own counts (facts).
ARP_CHECKS = {"fob-ops-mitm": "ops-span"}


def _doc(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _topology_file(path: Path) -> Path:
    name = _doc(path).get("topology")
    assert name in TOPOLOGY_FILES, f"{path.name}: topology {name!r} is not in topologies/"
    return TOPOLOGY_FILES[name]


# -- static: no root ---------------------------------------------------------------------------

def test_library_has_ten_campaigns_on_shipped_topologies():
    docs = {p.name: _doc(p) for p in PLAYBOOKS}
    v2 = [n for n, d in docs.items() if d.get("version") == 2]
    assert len(v2) >= 10, v2
    assert len({d["topology"] for d in docs.values()}) >= 5     # spread over the library
    assert {d["name"] for d in docs.values()} == set(EXPECT), "every playbook needs an EXPECT entry"


@pytest.mark.parametrize("path", PLAYBOOKS, ids=IDS)
def test_playbook_validates_against_its_topology(path):
    r = cli("attack", "validate", path.relative_to(ROOT), "--topology",
            _topology_file(path).relative_to(ROOT))
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("path", PLAYBOOKS, ids=IDS)
def test_playbook_is_documented_and_expected(path):
    lines = path.read_text().splitlines()
    header = "\n".join(line for line in lines[:next(i for i, line in enumerate(lines)
                                                     if not line.startswith("#"))])
    assert len(header.splitlines()) >= 5, "the header comment should describe the campaign"
    doc = _doc(path)
    if doc["version"] == 2:
        for word in ("Scenario", "ATT&CK", "Topology", "Duration", "What blue should see"):
            assert word in header, f"{path.name}: the header should say {word!r}"
    pb = load_playbook(path, load_topology(_topology_file(path)))
    assert [s.id for s in pb.steps] == list(EXPECT[pb.name]), "EXPECT must list every step in order"
    for step_id in COMPRESS.get(pb.name, {}):
        assert step_id in EXPECT[pb.name], f"COMPRESS names an unknown step {step_id}"
    if len(pb.steps) > 1:        # facts flow between the steps of every multi-step campaign
        assert "#{" in path.read_text(), f"{path.name}: no step uses an earlier step's facts"


def test_replay_pcap_is_small_and_reproducible(tmp_path):
    pcap = ROOT / "attack_playbooks" / "pcaps" / "worm_scan.pcap"
    assert pcap.stat().st_size < 50_000
    subprocess.run([sys.executable, str(ROOT / "attack_playbooks" / "pcaps" / "make_pcaps.py"),
                    str(tmp_path)], check=True, capture_output=True)
    assert (tmp_path / "worm_scan.pcap").read_bytes() == pcap.read_bytes()


# -- live: every playbook in a real twin (root) --------------------------------------------------



# The live playbooks run side by side, each in a worker process of its own (tests/attack/playbook_worker.py:
# twin, victims' traffic, playbook, sensors, teardown), all started when this module's first live
# test asks for one (tests/support/background.py); each test then checks its playbook's ledger and capture.
# The checks below (no sensor drop, ledger == capture per 5-tuple, ARP frame counts) are what
# would show a packet lost to the contention. 6 at a time: the playbooks mostly wait (paced steps).
SLOTS = 6
LIVE = "test_playbook_runs_in_its_twin_and_the_ledger_matches_the_capture"
# rough wall times alone (s), to start the longest first
LENGTH = {"fob_service_discovery": 25, "airbase_c2_beacon": 22, "naval_low_slow_scan": 20,
          "fob_ops_mitm": 20}


def _worker_argv(path: Path, out: Path) -> list:
    out.mkdir(parents=True, exist_ok=True)
    doc = _doc(path)
    return [sys.executable, ROOT / "tests" / "attack" / "playbook_worker.py",
            compressed_copy(path, out), _topology_file(path), out,
            json.dumps(VICTIM_TRAFFIC.get(doc["name"], []))]


@pytest.fixture(scope="module")
def live_playbook(tmp_path_factory, request):
    """``live_playbook(path)`` -> the worker's output folder, once the playbook has run."""
    base = tmp_path_factory.mktemp("live-playbooks")
    pool = Pool(SLOTS)
    request.addfinalizer(pool.close)
    wanted = [i.callspec.params["path"] for i in request.session.items
              if i.module is request.module and i.originalname == LIVE]
    for path in sorted(wanted, key=lambda p: -LENGTH.get(p.stem, 10)):
        pool.submit(path, _worker_argv(path, base / path.stem), timeout=600, cwd=ROOT)

    def get(path: Path) -> Path:
        r = pool.result(path, None if path in pool.jobs else _worker_argv(path, base / path.stem),
                        timeout=600, cwd=ROOT)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        return base / path.stem
    return get



@needs_twin
@pytest.mark.parametrize("path", PLAYBOOKS, ids=IDS)
def test_playbook_runs_in_its_twin_and_the_ledger_matches_the_capture(path, live_playbook,
                                                                       record_property):
    from cyberrange.score.score import packet_reconciliation
    from cyberrange.telemetry.pcap import parse_pcaps

    pb = load_playbook(path, load_topology(_topology_file(path)))
    run_id = f"test-pb-{pb.name}"
    out = live_playbook(path)
    result = json.loads((out / "result.json").read_text())
    sensor_stats = result["sensor_stats"]
    sensor_files = {n: Path(f) for n, f in result["sensor_files"].items()}
    ledger_path = out / "run" / "ledger.jsonl"
    record_property("playbook_s", result.get("playbook_s"))
    record_property("total_s", result["total_s"])
    records = read_ledger(ledger_path)

    # every step ran with the outcome it was designed for
    got: dict[str, list[str]] = {}
    for r in records:
        got.setdefault(r["step_id"], []).append(r["outcome"])
    detail = {r["step_id"]: (r["outcome"], r.get("error"), r.get("skipped_reason"))
              for r in records if r["outcome"] != EXPECT[pb.name].get(r["step_id"])}
    assert set(got) == set(EXPECT[pb.name]), (got, detail)
    for step_id, want in EXPECT[pb.name].items():
        assert all(o == want for o in got[step_id]), (step_id, got[step_id], detail)

    # the sensors lost nothing, and saw every ledger packet: per 5-tuple, in the step's window
    for name, stats in sensor_stats.items():
        assert not stats.get("dropped"), (name, stats)
    pcaps = [(str(f), name) for name, f in sensor_files.items() if f.exists()]
    packets, _flows, _stats = parse_pcaps(pcaps, run_id)
    rows = packet_reconciliation(records, packets)
    bad = [r for r in rows if r["ledger_packets"] != r["stored_packets"]]
    assert not bad, f"{len(bad)} of {len(rows)} ledger flows differ from the capture: {bad[:5]}"
    ledger_packets = sum(r["ledger_packets"] for r in rows)
    record_property("flows", len(rows))
    record_property("packets", ledger_packets)
    flowless = {"fob-ops-mitm"}            # ARP only: no IP flows by design
    if pb.name not in flowless:
        assert rows and ledger_packets > 0

    _check_effects(pb.name, records)
    if pb.name in ARP_CHECKS:
        _check_arp_frames(records, sensor_files[ARP_CHECKS[pb.name]])


def _check_arp_frames(records: list[dict], pcap: Path) -> None:
    """ARP requests of T1018-arp steps == ``arp_requests``; ARP replies of T1557.002 steps that
    claim another host's address (poison and restore) == ``arp_frames``, per step window; only
    frames from the actor's MAC (the ``actor_mac`` fact of its T1557.002 steps)."""
    from scapy.layers.l2 import ARP, Ether
    from scapy.utils import PcapReader
    frames = []
    with PcapReader(str(pcap)) as rd:
        for p in rd:
            if p.haslayer(ARP):
                frames.append((float(p.time), p[Ether].src, p[ARP].op, p[ARP].psrc))
    macs = {r["actor"]: r["facts"]["actor_mac"] for r in records
            if r["technique"] == "T1557.002" and r["facts"]}
    for r in records:
        f = r["facts"] or {}
        if r["technique"] == "T1018-arp":
            want, op = f["arp_requests"], 1
        elif r["technique"] == "T1557.002":
            want, op = f["arp_frames"], 2
        else:
            continue
        actor_ip, actor_mac = r["actor_ip"], macs[r["actor"]]
        mine = [t for t, src, o, psrc in frames
                if src == actor_mac and o == op and r["start"] - 0.5 <= t <= r["end"] + 0.5
                and (psrc == actor_ip) == (op == 1)]
        assert len(mine) == want, (r["step_id"], len(mine), want)


def _facts(records, step_id) -> dict:
    merged: dict = {}
    for r in records:
        if r["step_id"] == step_id:
            merged.update(r["facts"] or {})
    return merged


def _check_effects(name: str, records: list[dict]) -> None:
    """What each campaign is for actually happened (beyond its outcomes)."""
    if name == "depot-intrusion-exfil":
        creds = _facts(records, "brute")["credentials"]
        assert {"target": "10.80.4.20:22", "user": "clerk", "password": "depot123"} in creds
        assert _facts(records, "pivot")["compromised"] == ["10.80.4.20"]
        assert {r["actor"] for r in records if r["step_id"] in ("probe-inside", "exfil")} \
            == {"depot-files"}
        assert _facts(records, "exfil")["complete"] is True
    elif name == "depot-dns-exfil":
        assert _facts(records, "tunnel")["complete"] is True
        assert _facts(records, "tunnel")["session"] == _facts(records, "poll")["session"]
    elif name == "depot-insider-theft":
        assert _facts(records, "upload")["complete"] is True
        assert _facts(records, "upload")["bytes"] == 262144
    elif name == "airbase-c2-beacon":
        assert _facts(records, "beacon")["beacons"] >= 5
        assert "10.60.3.66" not in _facts(records, "sweep")["hosts"]
    elif name == "airbase-fuel-plc":
        assert _facts(records, "alarm")["written"] == {"10.60.5.21:502": {"2": 1400}} or \
            _facts(records, "alarm")["written"] == {"10.60.5.21:502": {2: 1400}}
        before = _facts(records, "read")["registers"]["10.60.5.21:502"]
        assert {int(k): v for k, v in before.items()}[2] == 1150
    elif name == "fob-satcom-dos":
        assert _facts(records, "link-flood")["packets"] == 20000
        assert _facts(records, "syn-flood")["packets"] >= 10000
    elif name == "fob-ops-mitm":
        for step in ("mitm-gw", "mitm-files"):
            f = _facts(records, step)
            assert f["arp_frames"] > 0 and f["intercepted_packets"] > 0, (step, f)
    elif name == "coalition-password-spray":
        creds = _facts(records, "spray")["credentials"]
        assert {(c["target"], c["user"]) for c in creds} == {("10.73.0.10:22", "logistique"),
                                                             ("10.73.0.12:22", "liaison")}
        assert sorted(_facts(records, "login")["compromised"]) == ["10.73.0.10", "10.73.0.12"]
    elif name == "coalition-quiet-valid-accounts":       # 3 guesses, the third right; the hop
        guess = next(r for r in records if r["step_id"] == "guess")
        assert len(guess["flows"]) == 3                   # from the logistics server itself
        assert _facts(records, "guess")["credentials"] == [
            {"target": "10.73.0.10:22", "user": "logistique", "password": "Summer2024!"}]
        hop = next(r for r in records if r["step_id"] == "hop")
        assert hop["actor"] == "fra-log" and hop["actor_ip"] == "10.73.0.10"
        assert _facts(records, "hop")["compromised"] == ["10.73.0.12"]

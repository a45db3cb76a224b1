"""Delay, jitter and loss without netem: the userspace relay on real twins (issue 19).

These tests build twins of ``tests/data/good/links.yaml`` (one zone per link profile) with link
emulation ``relay`` and measure what the model promises with ``twin verify``'s link checks."""
from __future__ import annotations

import json
import subprocess

import dpkt

from helpers import ROOT, cli, needs_twin
from cyberrange.model.loader import load_topology
from cyberrange.twin.build import Twin
from cyberrange.twin.state import leftovers, nothing_left

LINKS = ROOT / "tests" / "data" / "good" / "links.yaml"
pytestmark = needs_twin


def test_verify_measures_every_profile_value_and_bandwidth_through_the_relay(tmp_path):
    r = cli("twin", "verify", LINKS, "--runs-dir", tmp_path,
            "--link-emulation", "relay", "--link-probes", "600", "--json")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    rep = json.loads(r.stdout)
    bw = {row["zone"]: row for row in rep["bandwidth"]}
    assert bw["lan"]["method"] == "tcp" and bw["sat"]["method"] == "udp"
    assert bw["radio"]["method"] == "udp"                   # 64 kbit/s: measured, not skipped
    for row in bw.values():
        assert row["status"] == "measured" and abs(row["ratio"] - 1) <= 0.05, row
    rows = {row["zone"]: row for row in rep["links"]}
    assert set(rows) == {"sat", "radio", "lossy"}      # the LAN has nothing to emulate
    for row in rows.values():
        assert row["status"] == "measured" and row["agree"], row
    assert abs(rows["sat"]["rtt_ms"] - 200) <= 10           # 2 x 100 ms
    assert rows["lossy"]["loss_pct"] > 3                     # 5 % each way: ~9.75 % round trip
    assert rows["radio"]["interval_s"] > 0.2                 # paced for 64 kbit/s
    assert rep["summary"]["disagree"] == 0                   # reachability still agrees


def test_an_unemulated_profile_fails_verify_unless_accepted(tmp_path):
    r = cli("twin", "verify", LINKS, "--runs-dir", tmp_path, "--no-bandwidth",
            "--link-emulation", "shape", "--link-probes", "20", "--json")
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    rows = json.loads(r.stdout)["links"]
    assert rows and all(row["status"] == "not emulated" and not row["agree"] for row in rows)
    assert "NOT emulated" in r.stderr                       # the twin's one warning
    r = cli("twin", "verify", LINKS, "--runs-dir", tmp_path, "--no-bandwidth",
            "--link-emulation", "shape", "--link-probes", "20", "--accept-unemulated", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    assert all(row["accepted"] for row in json.loads(r.stdout)["links"])


def test_sensors_see_exactly_what_crossed_the_lossy_link_and_tcp_works_through_the_relay(
        tmp_path):
    """The loss-only zone drops with nftables (not the relay), the SATCOM-like one relays:
    the lossy sensor captures exactly the frames the drop let through."""
    topo = load_topology(LINKS)
    twin = Twin(topo, tmp_path, "test-linkemu", log=lambda m: None)
    twin.link_emulation = "relay"
    twin.start()
    prefix = twin.state.prefix
    try:
        assert twin.relay_proc is not None and twin.relay_proc.poll() is None
        mac = next(m for (n, _k), m in twin.port_key_mac.items() if n == "lossy1")
        r = twin.run("lossy1", ["ping", "-n", "-q", "-c", "400", "-i", "0.005", "-W", "1",
                                _ip(topo, "lossy2")], timeout=60)
        assert "packets transmitted" in r.stdout, r.stderr
        # TCP (checksum-offloaded, segmented frames) across the delayed, lossy SATCOM zone
        srv = twin.popen("sat2", ["python3", "-m", "http.server", "8080", "--bind",
                                  _ip(topo, "sat2")], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, cwd=str(ROOT / "docs"))
        got = twin.run("sat1", ["python3", "-c",
                                "import urllib.request,sys,time\n"
                                "for i in range(50):\n"
                                "  try:\n"
                                f"    b=urllib.request.urlopen('http://{_ip(topo, 'sat2')}:8080/"
                                "architecture.md',timeout=5).read();print(len(b));break\n"
                                "  except OSError: time.sleep(0.2)\n"], timeout=60)
        srv.kill()
        size = (ROOT / "docs" / "architecture.md").stat().st_size
        assert got.stdout.strip() == str(size), got.stderr
    finally:
        twin.stop_sensors()
        twin.relay_proc.terminate()
        twin.relay_proc.wait(timeout=5)
        stats = json.loads((tmp_path / "logs" / "linkemu.json").read_text())
        port = next(p for (n, _k), p in twin.port.items() if n == "lossy1")
        came, dropped = _nft_counters(twin, port)
        pcaps = list((tmp_path / "pcaps").glob("lossy-span*.pcap*"))
        twin.stop()
    assert nothing_left(prefix), leftovers(prefix)
    assert not any(d["link"].startswith("lossy") for d in stats["directions"])   # not relayed
    assert dropped > 0 and 0.02 < dropped / came < 0.09, (came, dropped)     # 5 % of ~400
    seen = 0
    for path in pcaps:
        with open(path, "rb") as f:
            for _ts, buf in dpkt.pcap.Reader(f):
                if dpkt.ethernet.Ethernet(buf).src == bytes.fromhex(mac.replace(":", "")):
                    seen += 1
    assert seen == came - dropped, (seen, came, dropped)


def _nft_counters(twin, port: str) -> tuple[int, int]:
    """(frames that came, frames dropped) at the loss-only drop of bridge port ``port``."""
    from cyberrange.twin.linkemu import DROP_TABLE
    out = twin.switch_run(["nft", "-j", "list", "chain", "netdev", DROP_TABLE, port]).stdout
    rules = [x["rule"] for x in json.loads(out)["nftables"] if "rule" in x]
    counts = [next(e["counter"]["packets"] for e in r["expr"] if "counter" in e) for r in rules]
    return counts[0], counts[1]


def _ip(topo, node: str) -> str:
    return str(topo.nodes[node].ip)

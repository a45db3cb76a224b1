"""DDIL link states on a real twin (issue 19 item 2): outages, jamming, degradation steps and
intermittent schedules, applied live and logged."""
from __future__ import annotations

import json
import re
import statistics
import threading
import time

import pytest

from helpers import ROOT, can_build_twin
from cyberrange.model.loader import load_topology
from cyberrange.twin import ddil, linkcheck
from cyberrange.twin.build import Twin
from cyberrange.twin.state import leftovers, nothing_left

LINKS = ROOT / "tests" / "data" / "good" / "links.yaml"
ZONES = {"lan", "sat", "radio", "lossy"}


def test_schedules_expand_in_time_order():
    changes = ddil.parse_events([
        {"at": 5, "zone": "sat", "state": "down", "for": 10},
        {"at": 0, "zone": "radio", "intermittent": {"on": 2, "off": 1}, "until": 8},
        {"at": 20, "zone": "sat", "degrade": {"delay": 800, "loss": 5}},
        {"at": 3, "zone": "lossy", "state": "jammed"},
    ], ZONES)
    got = [(c.at, c.zone, c.state) for c in changes]
    # same time: the events' order in the file
    assert got == [(2, "radio", "down"), (3, "radio", "up"), (3, "lossy", "jammed"),
                   (5, "sat", "down"), (5, "radio", "down"), (6, "radio", "up"),
                   (15, "sat", "up"), (20, "sat", "degraded")]
    assert changes[-1].values == {"delay": 800, "loss": 5}


@pytest.mark.parametrize("event, message", [
    ({"at": 1, "zone": "nowhere", "state": "down"}, "link_events[0].zone: no zone"),
    ({"at": 1, "zone": "sat", "state": "broken"}, "link_events[0].state"),
    ({"at": -1, "zone": "sat", "state": "down"}, "link_events[0].at"),
    ({"at": 1, "zone": "sat", "degrade": {"colour": 1}}, "link_events[0].degrade"),
    ({"at": 1, "zone": "sat", "degrade": {"loss": 101}}, "link_events[0].degrade.loss"),
    ({"at": 1, "zone": "sat", "intermittent": {"on": 0, "off": 1}, "until": 5},
     "link_events[0].intermittent: intermittent needs"),
    ({"at": 1, "zone": "sat", "intermittent": {"on": 1, "off": 1}}, "link_events[0].until"),
    ("down", "link_events[0]: want a mapping"),
])
def test_bad_events_name_the_event_and_key(event, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        ddil.parse_events([event], ZONES)


def _ping(twin, src, dst, count=10, interval=0.05, wait=2):
    r = twin.run(src, ["ping", "-n", "-c", str(count), "-i", str(interval), "-W", str(wait),
                       dst], timeout=count * interval + wait + 20)
    return linkcheck.parse_ping(r.stdout, count)


@pytest.mark.skipif(can_build_twin() is not None, reason=f"twin: {can_build_twin()}")
def test_outage_jamming_degradation_and_a_schedule_on_a_live_twin(tmp_path):
    topo = load_topology(LINKS)
    ip = {n: str(topo.nodes[n].ip) for n in topo.nodes}
    twin = Twin(topo, tmp_path, "test-ddil", log=lambda m: None)
    twin.link_emulation = "relay"
    twin.start()
    prefix = twin.state.prefix
    try:
        ctl = ddil.LinkControl(twin)
        assert _ping(twin, "sat1", ip["sat2"], 3, 0.2, 3)[0]          # warm (ARP)
        # jammed: every frame lost, carrier stays up
        ctl.set("lossy", "jammed", reason="test")
        rtts, lost = _ping(twin, "lossy1", ip["lossy2"], 10, 0.05, 1)
        assert rtts == [] and lost == 10
        link = twin.run("lossy1", ["ip", "-o", "link", "show", "eth0"]).stdout
        assert "NO-CARRIER" not in link and "state UP" in link
        ctl.set("lossy", "up")
        assert _ping(twin, "lossy1", ip["lossy2"], 20, 0.05, 2)[0]
        # down: an outage, the node sees its carrier go
        ctl.set("sat", "down")
        link = twin.run("sat1", ["ip", "-o", "link", "show", "eth0"]).stdout
        assert "NO-CARRIER" in link or "LOWERLAYERDOWN" in link, link
        assert not _ping(twin, "sat1", ip["sat2"], 3, 0.2, 1)[0]
        ctl.set("sat", "up")
        time.sleep(0.5)
        # degraded: the relay takes the new delay (100 ms -> 300 ms one way), no loss
        ctl.set("sat", "degraded", {"delay": 300, "jitter": 0, "loss": 0})
        time.sleep(0.3)
        rtts, lost = _ping(twin, "sat1", ip["sat2"], 20, 0.05, 3)
        assert lost == 0 and abs(statistics.fmean(rtts) - 600) < 30, statistics.fmean(rtts)
        # degraded bandwidth: the HTB classes of both ends change
        ctl.set("radio", "degraded", {"bandwidth": 0.0096})
        out = twin.switch_run(["tc", "class", "show", "dev",
                               ctl.ports("radio")[0][2]]).stdout
        m = re.search(r"rate (\d+)bit", out)            # tc rounds to its own units
        assert m and abs(int(m.group(1)) / 10038 - 1) < 0.01, out
        # an intermittent schedule, applied in a thread, logged, and ends up
        changes = ddil.parse_events([{"at": 0, "zone": "lossy",
                                      "intermittent": {"on": 0.5, "off": 0.5}, "until": 2.2}],
                                    ZONES)
        stop = threading.Event()
        recs = ddil.run(ctl, changes, time.monotonic(), stop)
        assert [r["state"] for r in recs] == ["down", "up", "down", "up"]
    finally:
        twin.stop()
    assert nothing_left(prefix), leftovers(prefix)
    log = [json.loads(x) for x in (tmp_path / "logs" / "links.jsonl").read_text().splitlines()]
    assert [r["state"] for r in log][:4] == ["jammed", "up", "down", "up"]
    assert log[-1]["zone"] == "lossy" and log[-1]["state"] == "up"

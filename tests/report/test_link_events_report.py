"""The after-action view of DDIL link changes: how long each lasted and what the missions saw
while a link was not up (report/content.py ``link_events``)."""
from __future__ import annotations

from cyberrange.report.content import link_events


def test_each_change_lasts_until_the_zones_next_one_and_counts_the_missions_meanwhile():
    records = [{"t": 100.0, "zone": "bde-los", "state": "down", "values": {}, "notes": []},
               {"t": 105.0, "zone": "bn1-mesh", "state": "degraded", "values": {"loss": 10},
                "notes": []},
               {"t": 130.0, "zone": "bde-los", "state": "up", "values": {}, "notes": []}]
    # cop probed every 5 s: down (False) from 100 to 125 while the primary link is out
    cop = [[t, not (100 <= t < 130), 20.0] for t in range(90, 150, 5)]
    fires = [[t, True, 30.0] for t in range(90, 150, 10)]
    rows = link_events(records, {"series": {"cop": cop, "fires": fires}})
    down, degraded, up = rows
    assert (down["state"], down["until"]) == ("down", 130.0)
    assert down["missions"] == {"cop": [0, 6], "fires": [3, 3]}      # probes at 100..125
    assert degraded["until"] is None and degraded["values"] == {"loss": 10}
    assert degraded["missions"]["cop"] == [4, 9]                       # 105..145, to the end
    assert up["missions"] == {}                                        # nothing lost while up


def test_no_log_no_section_and_bad_lines_are_skipped():
    assert link_events(None, None) is None
    rows = link_events([{"t": "x", "zone": "a"}, {"t": 1.0, "zone": 5},
                        {"t": 2.0, "zone": "a", "state": "jammed"}], None)
    assert [(r["zone"], r["state"], r["missions"]) for r in rows] == [("a", "jammed", {})]

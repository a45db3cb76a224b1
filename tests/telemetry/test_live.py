"""Live mode on a real twin: records reach the store while the drill runs, and the final store
equals what the pcaps give (a re-analysis without live mode)."""
from __future__ import annotations

import json
import threading

import duckdb
from helpers import ROOT, needs_twin

from cyberrange.drill import DrillOptions, analyse, run_drill
from cyberrange.run import Run
from cyberrange.telemetry.files import capture_files, count_frames
from cyberrange.ui import NullUI

pytestmark = needs_twin
REACH = ROOT / "tests" / "data" / "good" / "reach.yaml"

PLAYBOOK = """version: 1
name: live-sweep
topology: reach-test
steps:
  - id: sweep
    technique: T1018
    actor: user1
    targets: [servers, users]
    params: {timeout: 1.0}
    timing: {delay: 1}
  - id: scan
    technique: T1046
    actor: user1
    targets: ["#{sweep.hosts}"]
    params: {ports: [22, 80, 443, 8080], rate: 50, timeout: 1.0}
    timing: {delay: 1}
"""


class LiveUI(NullUI):
    def __init__(self):
        self.live = None
        self.phases = []
        self.seen = []            # (phase at that moment, records in the store, progress)
        self.lock = threading.Lock()

    def phase(self, name, text):
        self.phases.append(name)

    def live_started(self, live):
        self.live = live

    def live_progress(self, p):
        if p.get("final"):
            return
        with self.lock:
            self.seen.append((self.phases[-1] if self.phases else None,
                              self.live.count("packets"), dict(p)))


def test_live_records_arrive_during_the_drill_and_the_final_store_is_exact(tmp_path):
    pb = tmp_path / "live.yaml"
    pb.write_text(PLAYBOOK)
    ui = LiveUI()
    opts = DrillOptions(detectors_dir=str(ROOT / "detectors"), runs_dir=str(tmp_path / "runs"),
                        benign=False, warmup_s=0, cooldown_s=1.5, live=True, live_rotate_s=1)
    run = run_drill(str(REACH), str(pb), opts, ui)
    # records were in the store before the drill ended (before the sensors stopped)
    during = [n for phase, n, _p in ui.seen if phase in ("attack", "cooldown")]
    assert during and max(during) > 0, ui.seen
    man = json.loads((run.dir / "manifest.json").read_text())
    assert man["live"]["files_ingested"] >= 3 and man["live"]["packets_stored_live"] > 0
    # rotation happened, and the final store holds exactly the pcaps' frames
    files = capture_files(run.dir / "pcaps")
    assert any(len(v) > 2 for v in files.values()), files
    frames = {n: sum(count_frames(f)["frames"] for f in fs) for n, fs in files.items()}
    con = duckdb.connect(str(run.store_path), read_only=True)
    stored = dict(con.execute('SELECT "observer.name", count(*) FROM packets GROUP BY 1').fetchall())
    flows_live = con.execute("SELECT count(*) FROM flows").fetchone()[0]
    con.close()
    assert stored == frames
    # every live packet record was exact: per ingested file, records == frames
    for name, d in man["live"]["files"].items():
        assert d["packets"] == d["frames"], (name, d)
    assert man["live"]["packets_stored_live"] <= sum(frames.values())
    card = json.loads(run.scorecard_path.read_text())
    assert card["reconciliation"]["zero_loss"], card["reconciliation"]["verdict"]
    # a non-live analysis of the same pcaps gives the same store
    again = analyse(Run(run.dir), [])
    assert again["run"]["telemetry"]["packets"] == sum(frames.values())
    assert again["run"]["telemetry"]["flows"] == flows_live == card["run"]["telemetry"]["flows"]

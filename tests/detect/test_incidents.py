"""Incidents across the kill chain (issue 15, item 3): the correlator on synthetic alerts and
signals (pure, no root), the plumbing detector -> signals table -> incidents table in a DuckDB
store, and the incident scoring against a ledger. docs/incidents.md."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest

from cyberrange.detect.base import Alert, alerts_to_table
from cyberrange.detect.incidents import (
    Settings,
    correlate,
    incident_rows,
    observations,
    run_incidents,
    stage_of,
)
from cyberrange.detect.registry import run_detectors
from cyberrange.score.incidents import score_incidents
from cyberrange.store.duckdb_store import DuckDBStore
from cyberrange.telemetry.schema import FLOW_SCHEMA

T0 = datetime(2026, 12, 5, 12, 0, 0, tzinfo=timezone.utc)
WS, SRV, LNO, OUT = "10.73.0.66", "10.73.0.10", "10.73.0.12", "10.81.250.10"


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def obs(t, rule, technique, src, dst, score=0.9, kind="alert", category=None, fids=(),
        dur=1.0):
    a = Alert(timestamp=at(t), start=at(t), end=at(t + dur), rule_name=rule,
              rule_category=category or rule, technique=technique, source_ip=src,
              destination_ip=dst, message=f"{rule} saw {src} -> {dst}", score=score,
              flow_ids=list(fids) or [f"{rule}-{src}-{dst}-{t}"])
    if kind == "signal":
        a.kind, a.dataset = "signal", "cyberrange.signal"
    return a


def incidents_of(alerts=(), signals=(), settings=None, learned=frozenset()):
    s = settings or Settings()
    o = observations(alerts_to_table(alerts), alerts_to_table(signals), s, learned=learned)
    return correlate(o, s)


# -- stages ------------------------------------------------------------------------------------

@pytest.mark.parametrize("technique, stage", [
    ("T1046-udp", "recon"), ("T1018", "recon"), ("T1110.001", "credential-access"),
    ("T1557.002", "credential-access"), ("T1021.004", "lateral-movement"),
    ("T1021", "lateral-movement"), ("T1078", "credential-access"), ("T1071.004", "c2"),
    ("T1071", "c2"), ("T1041", "exfiltration"), ("T1048", "exfiltration"),
    ("T0855", "impact"), ("T1499", "impact"), ("unknown", None), (None, None)])
def test_stage_of_comes_from_the_tactic(technique, stage):
    assert stage_of(technique) == stage


# -- the quiet intrusion: signals none of which alerts -----------------------------------------

def quiet_signals():
    """Three guesses (a bruteforce signal: 3 of 8), the server then opening SSH to a host it
    never talked to (a first-seen-edge signal), as the signal families would report them."""
    return [obs(10, "login-bruteforce", "T1110.001", WS, SRV, 0.375, "signal"),
            obs(30, "first-seen-edge", "T1021.004", WS, SRV, 0.3, "signal"),
            obs(45, "first-seen-edge", "T1021.004", SRV, LNO, 0.5, "signal")]


def test_signals_none_of_which_alerts_raise_one_incident():
    (inc,) = incidents_of(signals=quiet_signals())
    assert inc.alert_ids == [] and len(inc.signal_ids) == 3
    assert inc.entities == [WS, SRV, LNO]
    assert inc.pivots == [{"host": SRV, "from": WS, "to": LNO, "at": at(45).isoformat()}]
    assert inc.stages["credential-access"] and inc.stages["lateral-movement"]
    assert not inc.stages["recon"]
    # noisy-OR per detector (0.375, 0.5) -> 0.6875, one further stage and one pivot: x 0.75^2
    assert inc.score == pytest.approx(1 - 0.3125 * 0.75 ** 2, abs=1e-4)
    assert inc.score >= Settings().threshold
    assert inc.raised_at == int(at(45).timestamp() * 1e6)      # only the hop made it enough
    assert len(inc.explanation) == 3
    assert inc.explanation[0].startswith("credential-access: 12:00:10 signal login-bruteforce")
    assert inc.summary.startswith(f"{WS} => {SRV}: credential-access -> lateral-movement")


def test_the_same_signals_without_the_hop_stay_below_the_threshold():
    assert incidents_of(signals=quiet_signals()[:2]) == []


def test_an_operators_day_is_no_incident():
    """Several detectors' views of one host's logins -- a few short sessions, a spray-like
    round, a first-seen admin edge, a faint rhythm -- all in one stage, no pivot: seen on the
    benign runs with the entity-baselines signals."""
    day = [obs(0, "password-spray", "T1110.003", WS, None, 0.8, "signal"),
           obs(1, "login-bruteforce", "T1110.001", WS, SRV, 0.6, "signal"),
           obs(2, "first-seen-admin-edge", "T1078", WS, SRV, 0.5, "signal"),
           obs(9, "c2-beacon", "T1071.001", WS, SRV, 0.25, "signal")]    # below stage_floor
    assert incidents_of(signals=day) == []
    (inc,) = incidents_of(signals=day, settings=Settings(progression=False))
    assert inc.score > 0.9            # the score alone would have raised it
    # two detectors reading the same sessions as two stages (short logins: guessing; a new
    # edge: lateral movement) -- one step, not a progression (seen on a held-out benign host)
    same = [obs(0, "login-bruteforce", "T1110.001", LNO, SRV, 0.6, "signal"),
            obs(0, "first-seen-admin-edge", "T1021.004", LNO, SRV, 0.5, "signal")]
    assert incidents_of(signals=same) == []
    # the same host then opening a session from the server it reached: a chain
    hop = obs(30, "first-seen-admin-edge", "T1021.004", SRV, LNO, 0.5, "signal")
    (inc,) = incidents_of(signals=day + [hop])
    assert inc.pivots and inc.stages["lateral-movement"]


def test_one_detectors_signals_alone_never_raise_an_incident():
    many = [obs(t, "first-seen-edge", "T1021.004", WS, f"10.73.0.{t}", 0.6, "signal")
            for t in range(20, 60, 4)]
    assert incidents_of(signals=many) == []
    # each detector counts once (its strongest): ten 0.6 signals are 0.6, not 1 - 0.4^10
    one = Settings(min_detectors=1, progression=False)
    assert incidents_of(signals=many, settings=one) == []
    (inc,) = incidents_of(signals=many, settings=Settings(min_detectors=1, threshold=0.6,
                                                          progression=False))
    assert inc.score == pytest.approx(0.6) and len(inc.signal_ids) == 10


def test_learned_anomalies_alone_never_raise_an_incident():
    learned = [obs(5, "flow-anomaly", "unknown", WS, SRV, category="iforest"),
               obs(6, "packet-anomaly", "unknown", WS, None, category="kitnet"),
               obs(7, "packet-anomaly", "unknown", SRV, WS, category="kitnet")]
    assert incidents_of(learned, learned=frozenset({"iforest", "kitnet"})) == []
    # the same rows from rule detectors raise: one incident per source (the server answering
    # the workstation is no pivot)
    assert len(incidents_of(learned)) == 2


# -- one per intrusion ------------------------------------------------------------------------

def intrusion():
    return [obs(0, "arp-scan", "T1018", WS, None, fids=()),
            obs(3, "vertical-portscan", "T1046", WS, None),
            obs(8, "login-bruteforce", "T1110.001", WS, SRV),
            obs(9, "lateral-movement", "T1021.004", WS, SRV),
            obs(20, "upload-volume", "T1041", SRV, OUT)]


def test_an_intrusion_is_one_incident_with_its_kill_chain():
    (inc,) = incidents_of(intrusion())
    assert [s for s, ids in inc.stages.items() if ids] == [
        "recon", "credential-access", "lateral-movement", "exfiltration"]
    assert inc.entities == [WS, SRV, OUT] and inc.pivots[0]["host"] == SRV
    assert inc.severity == "critical" and inc.score > 0.99
    assert inc.raised_at == int(at(0).timestamp() * 1e6)     # a rule alert raises at once
    assert len(inc.alert_ids) == 5 and len(inc.explanation) == 5
    # the pivot prefers the alert into the server that came last before it acted
    assert inc.pivots[0]["from"] == WS and inc.pivots[0]["to"] == OUT


def test_two_actors_sharing_only_a_destination_are_two_incidents():
    a = [obs(0, "login-bruteforce", "T1110.001", WS, SRV),
         obs(5, "login-bruteforce", "T1110.001", "10.73.0.67", SRV)]
    assert len(incidents_of(a)) == 2


def test_one_source_far_apart_in_time_is_two_incidents():
    a = [obs(0, "vertical-portscan", "T1046", WS, None),
         obs(2000, "vertical-portscan", "T1046", WS, None)]
    assert len(incidents_of(a)) == 2
    assert len(incidents_of(a, settings=Settings(link_window_s=3000))) == 1


def test_a_host_answering_the_one_that_reached_it_is_no_pivot():
    a = [obs(0, "login-bruteforce", "T1110.001", WS, SRV)]
    b = [obs(5, "reply-thing", "T1071.001", SRV, WS, 0.4, "signal")]
    (inc,) = incidents_of(a, b)
    assert inc.pivots == [] and inc.signal_ids == []
    loose = Settings(min_detectors=1, threshold=0.3, progression=False)
    assert len(incidents_of(a, b, settings=loose)) == 2
    # the same signal towards a third host is a pivot: one incident
    c = [obs(5, "reply-thing", "T1071.001", SRV, LNO, 0.4, "signal")]
    (inc,) = incidents_of(a, c)
    assert inc.pivots[0]["host"] == SRV and len(inc.signal_ids) == 1


def test_incident_ids_are_stable_and_the_table_round_trips():
    one, two = incidents_of(intrusion()), incidents_of(list(reversed(intrusion())))
    assert one[0].incident_id == two[0].incident_id
    from cyberrange.detect.incidents import incidents_to_table
    (row,) = incident_rows(incidents_to_table(one, "r1"))
    assert row["cyberrange.run_id"] == "r1" and row["related.ip"] == [WS, SRV, OUT]
    assert row["threat.tactic.name"] == ["recon", "credential-access", "lateral-movement",
                                         "exfiltration"]
    assert row["stages"]["recon"] and row["pivots"][0]["host"] == SRV
    assert row["event.severity"] == 4 and row["cyberrange.severity"] == "critical"


# -- plumbing: detectors -> signals table -> incidents table ----------------------------------

class Quiet:
    """A stand-in detector with the ``signals`` hook: it raises one alert on the scan flows and
    gives the quiet intrusion's signals, plus one signal that repeats its own alert."""
    family = "quiet"
    technique = "T1110.001"
    kind = "rule"
    trainable = needs_packets = scores_flows = False
    trained = False

    def __init__(self, name):
        self.name = name

    def detect(self, flows, packets=None):
        return [obs(0, self.name, "T1046", "10.9.9.9", None, fids=["scanflow"])]

    def signals(self, flows, packets=None):
        out = [obs(s.timestamp.timestamp() - T0.timestamp(), "ignored-name", s.technique,
                   s.source_ip, s.destination_ip, s.score, "signal", fids=s.flow_ids)
               for s in quiet_signals()]
        out.append(obs(0, "x", "T1046", "10.9.9.9", None, 0.4, "signal", fids=["scanflow"]))
        out[0].kind = "alert"                  # a sloppy family: the registry fixes it
        return out


class Edges(Quiet):
    family = "edges"

    def detect(self, flows, packets=None):
        return []

    def signals(self, flows, packets=None):
        return []


def test_signals_go_to_their_own_table_and_incidents_follow():
    with DuckDBStore(":memory:") as store:
        stats: dict = {}
        alerts = run_detectors(store, "r1", [Quiet("quiet-a"), Edges("edges")], stats=stats)
        assert alerts.num_rows == 1
        signals = store.read("signals", "r1")
        assert signals.num_rows == 3                  # the one repeating its alert is dropped
        assert set(signals.column("event.kind").to_pylist()) == {"signal"}
        assert set(signals.column("rule.name").to_pylist()) == {"quiet-a"}
        assert stats["quiet-a"]["signals"] == 3 and stats["edges"]["signals"] == 0
        assert store.count("alerts", "r1") == 1       # signals are never alerts
        # one detector's signals: not an incident; the scan alert: one
        inc = run_incidents(store, "r1")
        assert inc.num_rows == 1 and store.count("incidents", "r1") == 1
        run_detectors(store, "r1", [Quiet("quiet-a")])
        run_incidents(store, "r1")                    # re-running replaces, never adds
        assert store.count("signals", "r1") == 3 and store.count("incidents", "r1") == 1


def test_an_old_store_without_the_new_tables_reads_as_empty(tmp_path):
    import duckdb
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute('CREATE TABLE alerts ("@timestamp" TIMESTAMPTZ)')
    con.close()
    with DuckDBStore(path, read_only=True) as store:
        assert not store.has("signals") and not store.has("incidents")
        assert store.read_or_empty("signals", "r").num_rows == 0


# -- scoring: ground truth only in score/ -----------------------------------------------------

def _flows(rows):
    cols = {f.name: [] for f in FLOW_SCHEMA}
    for fid, src, sport, dst, dport, t in rows:
        r = {"cyberrange.flow_id": fid, "source.ip": src, "source.port": sport,
             "destination.ip": dst, "destination.port": dport, "network.transport": "tcp",
             "@timestamp": at(t), "event.start": at(t), "observer.name": "span"}
        for f in FLOW_SCHEMA:
            cols[f.name].append(r.get(f.name))
    return pa.table({f.name: pa.array(cols[f.name], f.type) for f in FLOW_SCHEMA})


def test_incident_recall_and_false_incidents_against_the_ledger():
    flows = _flows([("g1", WS, 40001, SRV, 22, 10), ("l1", WS, 40002, SRV, 22, 30),
                    ("h1", SRV, 40003, LNO, 22, 45), ("b1", "10.1.1.1", 5000, "10.1.1.2", 80, 50)])
    ledger = [{"step_id": sid, "technique": tech, "actor_ip": actor, "outcome": "succeeded",
               "start": at(t).timestamp(), "end": at(t + 2).timestamp(),
               "flows": [{"proto": "tcp", "src": actor, "sport": sp, "dst": dst, "dport": 22,
                          "packets": 10}]}
              for sid, tech, actor, sp, dst, t in (
                  ("guess", "T1110.001", WS, 40001, SRV, 10),
                  ("login", "T1021.004", WS, 40002, SRV, 30),
                  ("hop", "T1021.004", SRV, 40003, LNO, 45))]
    sig = quiet_signals()
    for s, fid in zip(sig, ("g1", "l1", "h1")):
        s.flow_ids = [fid]
    noise = [obs(50, "vertical-portscan", "T1046", "10.1.1.1", None, fids=["b1"])]
    alerts, signals = alerts_to_table(noise), alerts_to_table(sig)
    incs = run_incidents_of(alerts, signals)
    card = score_incidents(ledger, flows, incs, alerts, signals)
    assert card["total"] == 2 and card["true"] == 1 and card["false"] == 1
    assert card["is_incident"] is True and card["steps_in_incidents"] == 3
    assert card["best"]["steps"] == ["guess", "hop", "login"] and card["best"]["share"] == 1.0
    assert card["time_to_incident_s"] == pytest.approx(35.0, abs=0.01)   # raised at the hop
    json.dumps(card, default=str)
    # a benign run: every incident is false, nothing to find
    card = score_incidents([], flows, incs, alerts, signals)
    assert card["false"] == 2 and card["is_incident"] is None


def run_incidents_of(alerts, signals):
    from cyberrange.detect.incidents import incidents_to_table
    s = Settings()
    return incidents_to_table(correlate(observations(alerts, signals, s, frozenset()), s), "r")


# -- views: terminal, HTML, Navigator (late steps), detect eval goals -------------------------

def _step(**kw):
    row = {"step_id": "scan", "name": "scan", "technique": "T1046", "attack_id": "T1046",
           "technique_name": "Network Service Discovery", "outcome": "succeeded", "reason": None,
           "packets": 40, "attack_flows": 20, "detected": False, "time_to_detect_s": None,
           "detected_by": [], "observable": True, "contained": None, "time_to_contain_s": None,
           "contained_by": None, "detected_late": True, "late_by": ["slow-portscan"],
           "late_detect_s": 37.5}
    row.update(kw)
    return row


def test_a_late_step_shows_late_in_the_html_and_the_navigator():
    from cyberrange.report import html, navigator
    cell = html._steps({"steps": [_step()]})
    assert "late (37.5 s)" in cell and "slow-portscan" in cell and ">no<" not in cell
    assert ">no<" in html._steps({"steps": [_step(detected_late=False)]})
    entry = navigator.technique_entries([_step()])["T1046"]
    assert entry["color"] == navigator.LATE
    assert "late (37.5 s) by slow-portscan, not on time" in entry["comment"]
    missed = navigator.technique_entries([_step(detected_late=False)])["T1046"]
    assert missed["color"] == navigator.MISSED and "MISSED" in missed["comment"]


def _card_section():
    from cyberrange.detect.incidents import incidents_to_table
    flows = _flows([("g1", WS, 40001, SRV, 22, 10), ("l1", WS, 40002, SRV, 22, 30),
                    ("h1", SRV, 40003, LNO, 22, 45)])
    ledger = [{"step_id": "hop", "technique": "T1021.004", "actor_ip": SRV,
               "outcome": "succeeded", "start": at(45).timestamp(), "end": at(47).timestamp(),
               "flows": [{"proto": "tcp", "src": SRV, "sport": 40003, "dst": LNO, "dport": 22,
                          "packets": 9}]}]
    sig = quiet_signals()
    for s, fid in zip(sig, ("g1", "l1", "h1")):
        s.flow_ids = [fid]
    signals = alerts_to_table(sig)
    table = incidents_to_table(correlate(observations(None, signals, learned=frozenset())))
    return score_incidents(ledger, flows, table, None, signals)


def test_the_scorecard_incidents_print_and_render():
    from rich.console import Console

    from cyberrange.report.incidents import html_section, print_scorecard_incidents
    sec = _card_section()
    console = Console(record=True, width=200)
    print_scorecard_incidents({"incidents": sec}, console)
    text = console.export_text()
    assert "the playbook became an incident" in text and "1 true, 0 false" in text
    assert "recon ▸ cred ▸ lateral" in text and f"{WS} ⇒ {SRV}" in text
    assert "credential-access: 12:00:10 signal login-bruteforce" in text
    page = html_section(sec)
    assert "became an incident" in page and page.count("<li>") == 3
    assert "No incidents in this scorecard" in html_section(None)


def test_eval_incident_goals_are_not_measured_without_evidence():
    from cyberrange.report.evaluation import incident_goals
    assert incident_goals(None) == []          # an evaluation from before incidents
    none = incident_goals({"per_playbook": [], "attack_runs": 0, "benign_runs": 0,
                           "benign_incidents": 0})
    assert [met for _, met, _ in none] == [None, None]
    row = {"playbook": "quiet", "runs": 2, "incident": 1, "recall": 0.5, "steps": 6,
           "steps_in_incidents": 3, "incidents": 1, "false": 0, "one_incident": 1}
    (pb, benign) = incident_goals({"per_playbook": [row], "attack_runs": 2, "benign_runs": 3,
                                   "benign_incidents": 0})
    assert pb[1] is False and "quiet 1/2" in pb[2]
    assert benign[1] is True and benign[2] == "0 incidents on 3 benign runs"


# -- beacon's signals: its near-misses, weighted ----------------------------------------------

def test_beacon_signals_are_its_near_misses_with_their_flows():
    import sys

    import numpy as np
    from helpers import ROOT
    sys.path.insert(0, str(ROOT / "bench"))
    import beacon_envelope as env

    from cyberrange.detect.beacon import BeaconDetector
    empty = env._table([], env.PACKET_RECORD_SCHEMA)

    def table(interval, jitter, count):
        rows = env.Rows()
        env.beacon(rows, np.random.default_rng(3), interval, jitter, count)
        return rows.table()
    det = BeaconDetector("c2-beacon")
    few = table(120, 0.1, 6)                             # two check-ins short of a beacon
    (s,) = det.signals(few, empty)
    assert s.kind == "signal" and s.technique == "T1071.001" and s.destination_ip == env.C2
    assert s.score == pytest.approx(0.5 * 6 / 8) and s.evidence["connections"] == 6
    assert len(s.flow_ids) == 6 and "connections >= min_connections" in s.message
    assert det.signals(table(60, 0.2, 12), empty) == []          # it alerts: no signal
    known = BeaconDetector("c2-beacon", allow=[env.C2])           # known-good: no signal
    assert known.signals(few, empty) == []


def test_a_busy_server_does_not_chain_all_its_clients():
    """Weak first-seen edges into and out of one server for an hour (a busy hub, acting all
    along): no pivot through it, so 300 hosts do not become one incident; the same server
    reached once and then acting is a pivot (test above)."""
    import random
    rnd = random.Random(1)
    hub = "10.9.9.9"
    sig = []
    for k in range(3000):
        t, peer = rnd.uniform(0, 3600), f"10.0.{k % 300 // 250}.{k % 250}"
        src, dst = (peer, hub) if rnd.random() < 0.5 else (hub, peer)
        sig.append(obs(t, f"edge{k % 3}", "T1021", src, dst, rnd.uniform(0.05, 0.6), "signal"))
    sig.append(obs(-5, "edge0", "T1021", hub, "10.0.0.1", 0.5, "signal"))    # acts first
    o = observations(None, alerts_to_table(sig), learned=frozenset())
    from cyberrange.detect.incidents import _link
    _, pivots = _link(o, Settings())
    assert pivots == []
    assert incidents_of(signals=sig) == []


def test_the_tactic_table_of_the_correlator_is_the_attack_catalogues():
    """detect/ may not import the attack side, so the correlator keeps its own copy of the
    library's technique tactics: it must say what the catalogue says, for every technique."""
    from cyberrange.attack.catalog import TECHNIQUES
    from cyberrange.detect.incidents import TACTIC_STAGES, TECHNIQUE_TACTICS, stage_of
    for tid, t in TECHNIQUES.items():
        if tid == "replay":                  # a harness capability, not ATT&CK
            continue
        base = tid if t.custom else tid.split("-", 1)[0]     # CR-J0001: a custom id
        assert TECHNIQUE_TACTICS.get(base) == t.tactic, tid
        assert stage_of(tid) == TACTIC_STAGES[t.tactic], tid

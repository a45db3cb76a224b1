"""iforest family on synthetic flows: trained on benign-looking flows, a scan stands out."""
from __future__ import annotations

import random

import numpy as np
from test_detect import ATTACKER, T0, flow, table

from cyberrange.detect.iforest import FEATURES, IsolationForestDetector, flow_features

SERVERS = ["10.10.1.10", "10.10.1.11", "10.10.1.53"]


def benign(t0, seconds, seed=1):
    rnd = random.Random(seed)
    rows = []
    t = t0
    while t < t0 + seconds:
        src = f"10.10.2.{rnd.randint(10, 20)}"
        if rnd.random() < 0.3:
            rows.append(flow(t, src, SERVERS[2], 53, transport="udp", packets=1,
                             duration=0.001))
        else:
            rows.append(flow(t, src, rnd.choice(SERVERS[:2]), 443, state="SF", flags="SAFP",
                             packets=rnd.randint(8, 14), duration=rnd.uniform(0.05, 0.4)))
        t += rnd.uniform(0.05, 0.3)
    return rows


def scan(t0, n=60):
    """A SYN scan of filtered ports: one SYN each, no answer (Zeek state S0)."""
    rows = [flow(t0 + i * 0.01, ATTACKER, "10.10.2.20", 1000 + i, state="S0", flags="S")
            for i in range(n)]
    for r in rows:
        r.update({"destination.packets": 0, "destination.bytes": 0, "network.packets": 1,
                  "network.bytes": 60})
    return rows


def test_features_shape_and_names():
    X = flow_features(table(benign(T0, 5)))
    assert X.shape[1] == len(FEATURES)
    assert np.isfinite(X).all()


def test_trained_scan_scores_higher_and_alerts_with_explanation():
    base = benign(T0, 60)
    attack = scan(T0 + 90)
    later = benign(T0 + 60, 60, seed=2)
    # the in-sample quantile rule: these synthetic scan flows score only a little above the
    # benign ones (one SYN each; the synthetic flows have no inter-arrival features), which the
    # default calibration for 10 false alerts per 10k does not let through (test_calibration)
    det = IsolationForestDetector("flow-anomaly", calibration="quantile")
    det.fit(table(base))
    assert det.trained
    rows = base + later + attack
    t = table(rows)
    scores = det.score_flows(t)
    assert scores.shape == (len(rows),)
    n_benign = len(base) + len(later)
    assert scores[n_benign:].min() > np.quantile(scores[:n_benign], 0.97)
    alerts = det.detect(t)
    scan_ids = {r["cyberrange.flow_id"] for r in attack}
    hits = [a for a in alerts if scan_ids & set(a.flow_ids)]
    assert len(hits) == 1
    a = hits[0]
    assert a.source_ip == ATTACKER and a.destination_ip == "10.10.2.20"
    assert a.technique == "unknown" and a.rule_category == "iforest"
    ev = a.evidence
    assert ev["feature"] == "isolation_forest_score" and ev["trained"] is True
    assert ev["value"] > ev["threshold"] and ev["flows"] == len(a.flow_ids) >= 50
    assert {"feature", "value", "baseline", "z"} <= set(ev["top_features"][0])
    assert any(f["feature"] in ("tcp_state", "transport", "log_dst_packets", "log_bytes_ratio") for f in ev["top_features"])
    assert 0.5 < a.score <= 1 and ATTACKER in a.message
    # benign traffic alone stays (almost) quiet
    quiet = det.detect(table(base + later))
    assert sum(len(x.flow_ids) for x in quiet) < 0.02 * n_benign


def test_deterministic_with_fixed_seed():
    base, rows = benign(T0, 40), benign(T0 + 40, 20, seed=3) + scan(T0 + 70)
    out = []
    for _ in range(2):
        det = IsolationForestDetector("flow-anomaly", seed=7, calibration="quantile")
        det.fit(table(base))
        alerts = det.detect(table(rows))
        out.append([(a.alert_id, a.score, a.flow_ids, a.evidence) for a in alerts])
        assert alerts
    assert out[0] == out[1]


def test_untrained_fits_on_the_run_and_says_so():
    rows = benign(T0, 120) + scan(T0 + 130, 40)
    det = IsolationForestDetector("flow-anomaly", contamination=0.05)
    alerts = det.detect(table(rows))
    assert alerts and all(a.evidence["trained"] is False for a in alerts)
    assert all(a.evidence["contamination"] == 0.05 and "untrained" in a.evidence["note"]
               for a in alerts)
    assert any(a.source_ip == ATTACKER for a in alerts)


def test_empty_and_tiny_inputs():
    det = IsolationForestDetector("flow-anomaly")
    assert det.detect(table([])) == []
    det.fit(table([]))
    assert not det.trained


def test_a_run_with_no_flows_after_a_trained_one(tmp_path):
    """``detect eval`` over several runs reuses one detector: a run with no flows used to reach
    ``decision_function`` with zero rows (scikit-learn refuses them) through the model of the
    run before, and an empty baseline kept that run's model."""
    det = IsolationForestDetector("flow-anomaly")
    det.fit(table(benign(T0, 60)))
    assert det.trained
    scores = det.score_flows(table([]))
    assert isinstance(scores, np.ndarray) and scores.shape == (0,)
    assert det.detect(table([])) == []
    det.fit(table([]))                    # an empty baseline: untrained, nothing kept
    assert not det.trained and det.model is None
    assert det.score_flows(table([])).shape == (0,)

    # the whole path: evaluate() of a stored run with flows, then one without
    import json

    from test_detect_cli import craft_run

    from cyberrange.score.evaluate import evaluate
    from cyberrange.store.duckdb_store import DuckDBStore
    from cyberrange.telemetry.schema import RECORD_SCHEMAS
    full = craft_run(tmp_path / "full", scan=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with DuckDBStore(empty / "store.duckdb") as store:
        store.write("flows", RECORD_SCHEMAS["flows"].empty_table())
        store.write("packets", RECORD_SCHEMAS["packets"].empty_table())
    (empty / "ledger.jsonl").write_text("")
    (empty / "manifest.json").write_text(json.dumps({
        "run_id": "empty", "status": "done", "topology": "crafted", "playbook": None,
        "kind": "benign", "baseline_s": 5.0}))
    ev = evaluate([full, empty], [IsolationForestDetector("flow-anomaly")]).to_dict()
    assert [r["benign_flows"] for r in ev["runs"]][1] == 0
    (row,) = ev["detectors"]
    assert row["detector"] == "flow-anomaly" and row["false"] >= 0

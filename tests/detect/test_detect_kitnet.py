"""kitnet family: Kitsune's damped statistics against brute force and the per-packet
reference, the batched ensemble, and alerts on synthetic packet records."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from cyberrange.detect._kitnet_model import KitNET, cluster_features, reference_execute
from cyberrange.detect._kitsune_features import (
    ReferenceExtractor,
    extract,
    feature_names,
    seg_scan,
    stats_1d,
)
from cyberrange.detect.kitnet import KitNETDetector

T0 = 1_750_000_000.0
ATTACKER = "10.10.2.66"


def random_keys(n=2000, seed=1):
    rng = np.random.default_rng(seed)
    hosts = rng.integers(0, 6, n)
    dst = (hosts + rng.integers(1, 6, n)) % 6
    self_pair = rng.random(n) < 0.03          # a few streams paired with themselves
    dst[self_pair] = hosts[self_pair]
    return {"t": np.cumsum(rng.exponential(0.01, n)),
            "size": rng.integers(60, 1500, n).astype(float), "mi": hosts * 10,
            "h_src": hosts, "h_dst": dst, "jit": hosts * 100 + dst,
            "hp_src": hosts * 1000 + rng.integers(0, 3, n),
            "hp_dst": dst * 1000 + rng.integers(0, 3, n)}


def test_seg_scan_matches_loop_across_blocks_and_segments():
    rng = np.random.default_rng(0)
    n = 5000                                     # > 32 * 32: the carry scan recurses
    a = rng.uniform(0.5, 1.0, (n, 2))
    a[rng.random(n) < 0.01] = 0.0                # segment starts
    b = rng.normal(size=(n, 2, 3))
    want = b.copy()
    for m in range(1, n):
        want[m] += a[m][:, None] * want[m - 1]
    assert np.allclose(seg_scan(a, b), want, rtol=1e-10, atol=1e-10)


def test_damped_stats_equal_brute_force_sums():
    rng = np.random.default_rng(3)
    n = 300
    key = rng.integers(0, 4, n)
    t = np.cumsum(rng.exponential(0.2, n))
    v = rng.uniform(40, 1500, n)
    lams = (5.0, 1.0, 0.01)
    w, mean, var = stats_1d(key, t, v, lams)
    for m in range(0, n, 7):
        same = (key[: m + 1] == key[m])
        for j, lam in enumerate(lams):
            f = 2.0 ** (-lam * (t[m] - t[: m + 1][same]))
            W, LS, SS = f.sum(), (f * v[: m + 1][same]).sum(), (f * v[: m + 1][same] ** 2).sum()
            assert w[m, j] == pytest.approx(W, rel=1e-9)
            assert mean[m, j] == pytest.approx(LS / W, rel=1e-9)
            assert var[m, j] == pytest.approx(abs(SS / W - (LS / W) ** 2), rel=1e-6, abs=1e-6)


def test_batch_features_equal_per_packet_reference():
    keys = random_keys()
    F = extract(keys)
    R = ReferenceExtractor().run(keys)
    assert F.shape == R.shape == (2000, 100) and len(feature_names()) == 100
    assert np.allclose(F, R, rtol=1e-7, atol=1e-4)


def test_feature_mapper_groups_are_bounded_and_cover_every_feature():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(500, 5))
    X = np.hstack([base + 0.01 * rng.normal(size=(500, 5)) for _ in range(5)])  # 5 twins each
    groups = cluster_features(X, 6)
    assert sorted(i for g in groups for i in g) == list(range(25))
    assert all(len(g) <= 6 for g in groups)
    # correlated twins (column j, j+5, j+10, ...) end up together
    assert any({0, 5, 10} <= set(g) for g in groups)


def test_batched_ensemble_equals_per_packet_execution():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(400, 30))
    net = KitNET(max_cluster=7, seed=0)
    net.fit(X, epochs=2)
    rmse, groups = net.execute(X[:50])
    parts, out = net.reference_parts()
    assert groups.shape == (50, len(net.clusters))
    for i in range(50):
        assert rmse[i] == pytest.approx(reference_execute(parts, out, X[i]), rel=1e-4)


# ---- the detector on synthetic packet records

def packets(rows):
    names = ["@timestamp", "observer.name", "source.mac", "destination.mac", "source.ip",
             "destination.ip", "source.port", "destination.port", "network.transport",
             "network.bytes", "cyberrange.flow_id"]
    cols = {n: [r[i] for r in rows] for i, n in enumerate(names)}
    types = {"@timestamp": pa.int64(), "source.port": pa.int32(),
             "destination.port": pa.int32(), "network.bytes": pa.int64()}
    arrays = [pa.array(cols[n], types.get(n, pa.string())) for n in names]
    arrays[0] = arrays[0].cast(pa.timestamp("us", tz="UTC"))
    return pa.table(dict(zip(names, arrays)))


def benign_packets(t0, seconds, seed=0):
    """Three clients polling two servers: request, response, steady rhythm."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(3):
        cip, cmac = f"10.10.2.{10 + c}", f"02:00:00:00:00:{10 + c:02x}"
        t = t0 + c * 0.1
        k = 0
        while t < t0 + seconds:
            sip, smac = f"10.10.1.{10 + k % 2}", f"02:00:00:00:01:{k % 2:02x}"
            sport = 40000 + c * 100 + k % 50
            fid = f"f{c}-{k}"
            for j in range(3):
                us = int((t + j * 0.002) * 1e6)
                rows.append((us, "s1", cmac, smac, cip, sip, sport, 443, "tcp",
                             int(rng.integers(60, 200)), fid))
                rows.append((us + 500, "s1", smac, cmac, sip, cip, 443, sport, "tcp",
                             int(rng.integers(600, 1400)), fid))
            t += 0.1 + rng.uniform(0, 0.02)
            k += 1
    return sorted(rows)


def flood_packets(t0, n=2000):
    return [(int((t0 + i * 0.0005) * 1e6), "s1", "02:00:00:00:00:66", "02:00:00:00:01:00",
             ATTACKER, "10.10.1.10", 1024 + i % 60000, 80, "tcp", 60, f"atk-{i}")
            for i in range(n)]


@pytest.fixture(scope="module")
def trained():
    base = benign_packets(T0, 20)
    det = KitNETDetector("packet-anomaly", epochs=5)
    det.fit(None, packets(base))
    rows = sorted(base + benign_packets(T0 + 20, 20, seed=1) + flood_packets(T0 + 30))
    return det, packets(rows), rows


def test_flood_scores_higher_and_alerts_with_explanation(trained):
    det, table, rows = trained
    assert det.trained
    alerts = det.detect(None, table)
    atk = [a for a in alerts if a.source_ip == ATTACKER]
    assert len(atk) == 1
    a = atk[0]
    ev = a.evidence
    assert a.technique == "unknown" and a.rule_category == "kitnet"
    assert ev["feature"] == "kitnet_rmse" and ev["value"] > ev["threshold"] > 0
    assert ev["trained"] is True and ev["packets"] >= 5 and ev["baseline_packets"] > 0
    assert ev["top_groups"] and {"group", "rmse_vs_baseline", "features"} <= set(
        ev["top_groups"][0])
    assert a.flow_ids and all(f.startswith("atk-") for f in a.flow_ids)
    assert 0.5 < a.score <= 1 and ATTACKER in a.message
    # per-flow scores: the attack flows rank above the benign ones
    fids = sorted({r[10] for r in rows})
    flows = pa.table({"cyberrange.flow_id": pa.array(fids)})
    s = det.score_flows(flows, table)
    is_atk = np.array([f.startswith("atk-") for f in fids])
    assert np.median(s[is_atk]) > np.quantile(s[~is_atk], 0.99)
    # benign packets alone raise few alerts, none from the clients' steady polling, after the
    # baseline window (its first seconds, statistics warming up from zero, are not scored)
    quiet = det.detect(None, packets(sorted(benign_packets(T0, 40))))
    assert len([a for a in quiet if a.start.timestamp() >= T0 + 20]) <= 1
    assert ev["calibration"]["target_per_10k"] == 10 and ev["calibration"]["held_out"] > 0


def test_deterministic_with_fixed_seed(trained):
    _, table, _ = trained
    base = packets(benign_packets(T0, 20))
    out = []
    for _ in range(2):
        det = KitNETDetector("packet-anomaly", epochs=5, seed=3)
        det.fit(None, base)
        out.append([(a.alert_id, a.score, a.flow_ids, a.evidence)
                    for a in det.detect(None, table)])
    assert out[0] and out[0] == out[1]


def test_untrained_uses_the_runs_first_packets_and_says_so(trained):
    _, table, _ = trained
    det = KitNETDetector("packet-anomaly", grace_packets=3000, epochs=5)
    alerts = det.detect(None, table)
    assert alerts and all(a.evidence["trained"] is False and "untrained" in a.evidence["note"]
                          for a in alerts)
    assert any(a.source_ip == ATTACKER for a in alerts)


def test_a_second_fit_with_too_few_packets_leaves_no_model_of_the_first():
    """A detector object reused across runs (``detect eval``) must not score a run whose
    baseline is too small with the previous run's model."""
    det = KitNETDetector("packet-anomaly", epochs=2)
    det.fit(None, packets(benign_packets(T0, 20)))
    assert det.trained and det.model is not None
    det.fit(None, packets(benign_packets(T0, 20)[:50]))
    assert not det.trained and det.model is None
    det.fit(None, None)
    assert not det.trained and det.model is None


def test_a_baseline_shorter_than_min_baseline_s_gives_weak_signals_not_alerts(trained):
    """min_baseline_s: a model trained on 10 s of traffic (the default drill warm-up) has
    no false-alert evidence behind its threshold; its flood episode becomes a weak signal at
    half the score, and no alert. The same model trained on 20 s alerts."""
    from cyberrange.detect.registry import collect_signals
    _, table, _ = trained
    short = KitNETDetector("packet-anomaly", epochs=5, min_baseline_s=15)
    short.fit(None, packets(benign_packets(T0 + 10, 10)))
    assert short.trained and 9 < short.model["baseline_s"] < 10.1 and short.short_baseline()
    assert short.detect(None, table) == []
    sig = [s for s in collect_signals(short, None, table, []) if s.source_ip == ATTACKER]
    assert len(sig) == 1 and sig[0].kind == "signal" and sig[0].score <= 0.5
    assert "min_baseline_s 15" in sig[0].evidence["signal_only"]
    long = KitNETDetector("packet-anomaly", epochs=5, min_baseline_s=15)
    long.fit(None, packets(benign_packets(T0, 20)))
    assert not long.short_baseline() and long.signals(None, table) == []
    assert any(a.source_ip == ATTACKER for a in long.detect(None, table))

"""iforest family: unsupervised flow anomaly detection with scikit-learn's IsolationForest.

Every flow becomes a vector of ``FEATURES`` (sizes and times log-scaled, so a 10x change counts
the same at any scale): duration, packets and bytes each way, the byte and packet ratios, bytes
per packet each way, inter-arrival mean/std/min/max, the destination port class (well-known,
registered, ephemeral, none), the transport and the Zeek TCP state (ordinal codes).

* **Trained** (``fit`` on the baseline window's flows): the forest learns the baseline; the
  alert threshold is the ``quantile`` of the baseline flows' scores plus ``margin``. A flow is
  anomalous when its score exceeds it.
* **Untrained**: the forest is fitted on the run itself, and the threshold is the forest's own
  cut for the ``contamination`` share of flows; the evidence says ``"trained": false``.

A flow's score is the negated ``decision_function`` (higher = more anomalous: >0 is the
forest's "outlier" side for its contamination). Anomalous flows are grouped per source IP into
episodes (the next anomalous flow of the source within ``window`` seconds continues the
episode); an episode of at least ``min_flows`` flows is one alert, explained by the features
whose values in those flows lie furthest from the baseline (robust z-scores: distance from the
baseline median in units of 1.4826 MAD). An episode of a source whose alert was raised less than
``realert`` seconds before joins that alert instead of raising another (one alert per source and
period: ``_learned.suppress``; the calibration counts alerts the same way). The forest does not know what it saw: the technique is
``"unknown"`` (see ``_learned.UNKNOWN_TECHNIQUE``). Deterministic: ``random_state`` = ``seed``.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ._learned import (
    CALIBRATION_SETTINGS,
    UNKNOWN_TECHNIQUE,
    blocked_folds,
    calibrate,
    configure_calibration,
    dedup_flows,
    episodes,
    ratio_score,
    robust_center_scale,
    suppress,
    top_features,
)
from .base import Alert, Detector, SettingError, us_to_dt

# categorical features are ordinal codes, not one-hots: the forest picks a feature at random
# for every split, so one dense column per category is chosen 10x as often as each of ten
# one-hot columns, and a category never seen in the baseline is isolated in one split
STATES = ("SF", "S1", "RSTO", "RSTR", "SH", "OTH", "RSTOS0", "S0", "REJ")   # + other
TRANSPORTS = ("tcp", "udp", "icmp")                                       # + other
PORT_CLASSES = ("none", "well-known", "registered", "ephemeral")
FEATURES = [
    "log_duration_s", "log_src_packets", "log_dst_packets", "log_src_bytes", "log_dst_bytes",
    "log_bytes_ratio", "log_packets_ratio", "log_src_bytes_per_packet",
    "log_dst_bytes_per_packet", "log_iat_mean_us", "log_iat_std_us", "log_iat_min_us",
    "log_iat_max_us", "port_class", "transport", "tcp_state"]
#: code -> name of the categorical features (for the explanation)
CATEGORIES = {"port_class": dict(enumerate(PORT_CLASSES)),
              "transport": dict(enumerate(TRANSPORTS + ("other",))),
              "tcp_state": {-1: "none", **dict(enumerate(STATES + ("other",)))}}


def _num(flows: pa.Table, name: str) -> np.ndarray:
    if name not in flows.column_names:
        return np.zeros(flows.num_rows)
    return pc.fill_null(flows.column(name).cast(pa.float64()), 0.0).to_numpy(
        zero_copy_only=False)


def _code(values: np.ndarray, choices) -> np.ndarray:
    out = np.full(len(values), float(len(choices)))
    for j, c in enumerate(choices):
        out[values == c] = j
    return out


def flow_features(flows: pa.Table) -> np.ndarray:
    """The (n, len(FEATURES)) matrix of flow records."""
    n = flows.num_rows
    if n == 0:
        return np.zeros((0, len(FEATURES)))
    dur = _num(flows, "event.duration") / 1e9
    sp, dp = _num(flows, "source.packets"), _num(flows, "destination.packets")
    sb, db = _num(flows, "source.bytes"), _num(flows, "destination.bytes")
    iat = [_num(flows, f"cyberrange.iat.{s}_us") for s in ("mean", "std", "min", "max")]
    port = pc.fill_null(flows.column("destination.port"), -1).to_numpy(zero_copy_only=False)
    transport = pc.fill_null(flows.column("network.transport"), "").to_numpy(
        zero_copy_only=False).astype(object)
    state = pc.fill_null(flows.column("cyberrange.tcp_state"), "").to_numpy(
        zero_copy_only=False).astype(object)
    ported = ((transport == "tcp") | (transport == "udp")) & (port >= 0)
    port_class = np.where(~ported, 0, np.where(port < 1024, 1, np.where(port < 49152, 2, 3)))
    cols = [np.log1p(dur), np.log1p(sp), np.log1p(dp), np.log1p(sb), np.log1p(db),
            np.log((sb + 1) / (db + 1)), np.log((sp + 1) / (dp + 1)),
            np.log1p(sb / np.maximum(sp, 1)), np.log1p(db / np.maximum(dp, 1))]
    cols += [np.log1p(np.maximum(x, 0)) for x in iat]
    cols += [port_class, _code(transport, TRANSPORTS),
             np.where(transport == "tcp", _code(state, STATES), -1.0)]
    return np.column_stack([np.asarray(c, float) for c in cols])


def _explain(top: list[dict]) -> list[dict]:
    """Categorical codes in the explanation as their names."""
    for t in top:
        names = CATEGORIES.get(t["feature"])
        if names:
            t["value"] = names.get(int(round(t["value"])), t["value"])
            t["baseline"] = names.get(int(round(t["baseline"])), t["baseline"])
    return top


class IsolationForestDetector(Detector):
    family = "iforest"
    kind = "learned"
    technique = UNKNOWN_TECHNIQUE
    trainable = True
    scores_flows = True
    legacy_calibration = "quantile"      # the in-sample rule before the false-alert target
    SETTINGS = {
        "n_estimators": 200,     # trees
        "max_samples": 256,      # flows per tree (the paper's default)
        **CALIBRATION_SETTINGS,  # trained: threshold for false_alert_target (or: quantile)
        "quantile": 0.95,        # calibration quantile: this quantile of in-sample scores ...
        "margin": 0.0,           # ... plus this margin (score units; added in both modes)
        "contamination": 0.01,   # untrained: share of the run's own flows taken as outliers
        "window": 10,            # seconds: anomalous flows of a source this close = one episode
        "min_flows": 5,          # anomalous flows an episode needs to raise an alert
        "realert": 120,          # seconds: at most one alert per source per realert (0: off)
        "quiet_min_flows": 3,    # calibration: the held-out baseline has no episode this big
        "seed": 0,               # random_state of the forest
    }

    def configure(self) -> None:
        self.n_estimators = int(self._number("n_estimators", minimum=1, integer=True))
        self.max_samples = int(self._number("max_samples", minimum=2, integer=True))
        self.quantile = float(self._number("quantile", minimum=0.5))
        if self.quantile > 1:
            raise SettingError(f"setting 'quantile' of {self.name!r} must be <= 1",
                               setting="quantile")
        self.margin = float(self._number("margin", minimum=0))
        configure_calibration(self, self.legacy_calibration)
        self.contamination = float(self._number("contamination", minimum=0.0001))
        if self.contamination > 0.5:
            raise SettingError(f"setting 'contamination' of {self.name!r} must be <= 0.5",
                               setting="contamination")
        self.window_us = int(self._number("window", minimum=0.001) * 1_000_000)
        self.min_flows = int(self._number("min_flows", minimum=1, integer=True))
        self.realert_us = int(self._number("realert", minimum=0) * 1_000_000)
        # never above min_flows: an episode the detector would alert on is always too big
        self.quiet_min = min(self.min_flows,
                             int(self._number("quiet_min_flows", minimum=1, integer=True)))
        self.seed = int(self._number("seed", minimum=0, integer=True))
        self.model = None

    def _forest(self, X: np.ndarray, contamination):
        from sklearn.ensemble import IsolationForest
        forest = IsolationForest(n_estimators=self.n_estimators,
                                 max_samples=min(self.max_samples, len(X)),
                                 contamination=contamination, random_state=self.seed)
        return forest.fit(X)

    def fit(self, flows: pa.Table, packets: pa.Table | None = None) -> None:
        X = flow_features(flows)
        if len(X) < 2:                               # nothing to learn from: untrained, and
            self.model, self.trained = None, False   # nothing kept from an earlier fit
            return
        forest = self._forest(X, "auto")
        scores = -forest.decision_function(X)
        base_q = float(np.quantile(scores, self.quantile))
        ts = pc.cast(flows.column("@timestamp").cast(pa.timestamp("us", tz="UTC")), pa.int64())
        self.model = {"forest": forest, "threshold": base_q + self.margin,
                      "trained_until_us": pc.max(ts).as_py(),
                      "baseline_quantile": base_q, "center_scale": robust_center_scale(X),
                      "flows": len(X), "calibration": {"method": "quantile (in-sample)"}}
        if self.calibration == "target":
            cal = self._calibrate(X, flows)
            self.model["threshold"] = cal.threshold + self.margin
            self.model["calibration"] = {**cal.evidence(), "target_per_10k": self.fa_target,
                                         "quiet_min_flows": self.quiet_min}
        self.trained = True

    def _calibrate(self, X: np.ndarray, flows: pa.Table):
        """Out-of-sample scores of the baseline flows (time blocks, each scored by a forest
        fitted on the other blocks) -> the threshold for ``false_alert_target`` (see
        ``_learned.conservative_threshold``)."""
        start = pc.fill_null(pc.cast(flows.column("event.start").cast(
            pa.timestamp("us", tz="UTC")), pa.int64()), 0).to_numpy(zero_copy_only=False)
        order = np.argsort(start, kind="stable")
        Xt = X[order]
        oos = np.full(len(Xt), np.nan)
        for train, test in blocked_folds(len(Xt), min(self.folds, len(Xt))):
            if len(train) >= 2:
                oos[test] = -self._forest(Xt[train], "auto").decision_function(Xt[test])
        src = flows.column("source.ip").to_pylist()
        return calibrate(self, oos, start[order], [src[i] for i in order], dedup_flows(flows),
                         self.min_flows, self.window_us)

    def _model_for(self, X: np.ndarray) -> dict:
        if self.model is not None:
            return self.model
        forest = self._forest(X, self.contamination)
        return {"forest": forest, "threshold": 0.0, "baseline_quantile": None,
                "center_scale": robust_center_scale(X), "flows": len(X)}

    def score_flows(self, flows: pa.Table, packets: pa.Table | None = None) -> np.ndarray:
        X = flow_features(flows)
        if len(X) == 0 or (len(X) < 2 and self.model is None):
            return np.zeros(len(X))                  # a run with no flows has no scores
        return -self._model_for(X)["forest"].decision_function(X)

    def detect(self, flows: pa.Table, packets: pa.Table | None = None) -> list[Alert]:
        X = flow_features(flows)
        if len(X) < 2:
            return []
        model = self._model_for(X)
        scores = -model["forest"].decision_function(X)
        thr = model["threshold"]
        flagged = scores > thr
        if not flagged.any():
            return []
        ts = pc.cast(flows.column("event.start").cast(pa.timestamp("us", tz="UTC")),
                     pa.int64()).to_numpy(zero_copy_only=False)
        ends = pc.cast(flows.column("event.end").cast(pa.timestamp("us", tz="UTC")),
                       pa.int64()).to_numpy(zero_copy_only=False)
        src = flows.column("source.ip").to_pylist()
        dst = flows.column("destination.ip").to_pylist()
        fids = flows.column("cyberrange.flow_id").to_pylist()
        med, scale = model["center_scale"]
        alerts = []
        for ep in suppress(episodes(ts, src, flagged, self.window_us, self.min_flows), ts,
                           self.realert_us, model.get("trained_until_us")):
            rows = ep.rows
            best = max(rows, key=lambda i: (scores[i], -i))
            dsts = {dst[i] for i in rows}
            one = next(iter(dsts)) if len(dsts) == 1 else None
            top = _explain(top_features(X[rows], FEATURES, med, scale))
            value = float(scores[best])
            evidence = {
                "feature": "isolation_forest_score", "value": round(value, 4),
                "threshold": round(thr, 4), "flows": len(rows),
                "top_features": top, "trained": self.model is not None,
                "baseline": (round(model["baseline_quantile"], 4)
                             if model["baseline_quantile"] is not None else None),
                "baseline_flows": model["flows"] if self.model is not None else 0,
                "calibration": model.get("calibration"),
                "window_s": self.window_us / 1e6, "min_flows": self.min_flows,
                "realert_s": self.realert_us / 1e6, "episodes": ep.merged,
            }
            if self.model is None:
                evidence["contamination"] = self.contamination
                evidence["note"] = ("untrained: the forest was fitted on this run's own flows; "
                                    "the threshold is its contamination cut")
            why = ", ".join(f"{t['feature']}={t['value']} (baseline {t['baseline']})"
                            for t in top)
            target = one or f"{len(dsts)} hosts"
            merged = f" in {ep.merged} episodes" if ep.merged > 1 else ""
            msg = (f"{ep.source} -> {target}: {len(rows)} flows{merged} unlike the "
                   f"{'baseline' if self.model is not None else 'rest of the run'} "
                   f"(isolation score up to {value:.3f}, threshold {thr:.3f}); most unusual: "
                   f"{why}")
            alerts.append(Alert(
                timestamp=us_to_dt(ts[rows[ep.crossed]]), start=us_to_dt(ts[rows[0]]),
                end=us_to_dt(max(ends[i] for i in rows)), rule_name=self.name,
                rule_category=self.family, technique=self.technique, source_ip=ep.source,
                destination_ip=one, message=msg, score=ratio_score(value + 0.5, thr + 0.5),
                evidence=evidence, flow_ids=[fids[i] for i in rows]))
        return alerts

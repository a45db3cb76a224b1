"""kitnet family: a packet-level online autoencoder ensemble in the manner of Kitsune / KitNET
(Mirsky et al., "Kitsune: An Ensemble of Autoencoders for Online Network Intrusion Detection",
NDSS 2018), in numpy.

::

    packets ─▶ damped statistics (5 decay rates × MAC-IP, IP, channel, socket) ─▶ 100 features
            ─▶ feature mapper (correlation clusters of ≤ max_cluster features)
            ─▶ ensemble of small autoencoders ─▶ their RMSEs ─▶ output autoencoder ─▶ RMSE

* features: ``_kitsune_features`` (AfterImage's statistics, computed batch-wise);
* model: ``_kitnet_model`` (feature mapper, batched ensemble, output layer);
* **trained** (``fit`` on the baseline window's packets): the mapper and the autoencoders learn
  the baseline packets (minibatch SGD, ``epochs`` passes -- Kitsune trains online, one pass);
  the threshold comes from a log-normal fit of the baseline RMSEs: ``exp(mu + threshold_sigma *
  sigma)`` of log RMSE (Kitsune's paper fits a log-normal too);
* **untrained**: the first ``grace_packets`` packets of the run itself are the grace period,
  as in Kitsune; the evidence says ``"trained": false``.

Feature statistics always run over the whole run from its first packet (each sensor keeps its
own), so a packet's features do not depend on where the baseline window ends. A packet is
anomalous when its RMSE exceeds the threshold; anomalous packets are grouped per source into
episodes (the next one within ``window`` seconds continues it) and an episode with at least
``min_packets`` is one alert. The evidence names the feature groups whose autoencoders were
furthest above their baseline RMSE, and ``flow_ids`` lists the flows of the anomalous packets.
``score_flows``: the largest RMSE of a flow's packets. Technique: ``"unknown"``.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ._kitnet_model import KitNET
from ._kitsune_features import LAMBDAS, extract, feature_names, packet_keys
from ._learned import (
    CALIBRATION_SETTINGS,
    UNKNOWN_TECHNIQUE,
    blocked_folds,
    calibrate,
    configure_calibration,
    dedup_flows,
    episodes,
    ratio_score,
)
from .base import Alert, Detector, SettingError, us_to_dt


class KitNETDetector(Detector):
    family = "kitnet"
    kind = "learned"
    technique = UNKNOWN_TECHNIQUE
    needs_packets = True
    trainable = True
    scores_flows = True
    legacy_calibration = "lognormal"     # the in-sample rule before the false-alert target
    SETTINGS = {
        "max_cluster": 10,          # m: most features per ensemble autoencoder
        "hidden_ratio": 0.75,       # hidden units per input of every autoencoder
        "epochs": 10,               # minibatch passes over the grace-period packets
        "batch_size": 32,
        "learning_rate": 0.1,
        **CALIBRATION_SETTINGS,     # trained: threshold for false_alert_target (or: lognormal)
        "clustering": "worst",      # a flow's packets are flagged together, never scattered
        "threshold_sigma": 4.0,     # lognormal: exp(mu + this * sigma) of baseline log RMSE
        "window": 10,               # seconds: anomalous packets of a source this close = episode
        "min_packets": 5,           # anomalous packets an episode needs to raise an alert
        "min_baseline_s": 0,        # trained on a shorter baseline: episodes are weak signals
                                    # for the incident correlator, not alerts (0: off)
        "grace_packets": 20000,     # untrained: the run's first packets are the grace period
        "max_train_packets": 200000,  # longer baselines are thinned evenly to this many
        "lambdas": list(LAMBDAS),   # decay rates (1/s) of the damped statistics
        "max_gap": 5.0,             # s: channel inter-arrival times are capped here (null: no cap)
        "log_features": True,       # feed sign(x)·log(1+|x|) to the autoencoders
        "seed": 0,                  # weight initialisation and minibatch order
    }

    def configure(self) -> None:
        self.max_cluster = int(self._number("max_cluster", minimum=1, integer=True))
        self.hidden_ratio = float(self._number("hidden_ratio", minimum=0.01))
        self.epochs = int(self._number("epochs", minimum=1, integer=True))
        self.batch_size = int(self._number("batch_size", minimum=1, integer=True))
        self.lr = float(self._number("learning_rate", minimum=0))
        self.sigma = float(self._number("threshold_sigma", minimum=0))
        configure_calibration(self, self.legacy_calibration)
        self.window_us = int(self._number("window", minimum=0.001) * 1_000_000)
        self.min_packets = int(self._number("min_packets", minimum=1, integer=True))
        self.min_baseline_s = float(self._number("min_baseline_s", minimum=0))
        self.grace = int(self._number("grace_packets", minimum=100, integer=True))
        self.max_train = int(self._number("max_train_packets", minimum=100, integer=True))
        self.seed = int(self._number("seed", minimum=0, integer=True))
        lam = self.settings["lambdas"]
        if not isinstance(lam, list) or not lam or any(
                isinstance(x, bool) or not isinstance(x, (int, float)) or x <= 0 for x in lam):
            raise SettingError(f"setting 'lambdas' of {self.name!r} must be a list of decay "
                               f"rates > 0 (per second), got {lam!r}", setting="lambdas")
        self.lambdas = tuple(float(x) for x in lam)
        self.names = feature_names(self.lambdas)
        self.log_features = bool(self.settings["log_features"])
        gap = self.settings["max_gap"]
        self.max_gap = None if gap is None else float(self._number("max_gap", minimum=0.001))
        self.model = None
        self._cache = None

    def _features(self, keys: dict) -> np.ndarray:
        X = extract(keys, self.lambdas, self.max_gap)
        if self.log_features:
            # heavy tails (a variance of 10^6 bytes², a jitter of minutes) would squash
            # everything else into a corner of the min-max box
            X = np.sign(X) * np.log1p(np.abs(X))
        return X

    # -- training
    def _net(self, X: np.ndarray) -> KitNET:
        if len(X) > self.max_train:
            X = X[np.linspace(0, len(X) - 1, self.max_train).astype(int)]
        net = KitNET(self.max_cluster, self.hidden_ratio, self.seed)
        net.fit(X, epochs=self.epochs, batch=self.batch_size, lr=self.lr)
        return net

    def _train(self, X: np.ndarray) -> dict:
        if len(X) > self.max_train:
            X = X[np.linspace(0, len(X) - 1, self.max_train).astype(int)]
        net = self._net(X)
        rmse, groups = net.execute(X)
        logs = np.log(np.maximum(rmse, 1e-12))
        mu, sd = float(logs.mean()), float(logs.std())
        return {"net": net, "threshold": float(np.exp(mu + self.sigma * sd)),
                "log_mu": mu, "log_sigma": sd, "packets": len(X),
                "group_baseline": np.median(groups, 0) + 1e-12,
                "calibration": {"method": "lognormal (in-sample)"}}

    def fit(self, flows: pa.Table, packets: pa.Table | None = None) -> None:
        if packets is None or packets.num_rows < 100:
            # too little to learn from: untrained, and no model left from an earlier run
            self.model, self.trained, self._cache = None, False, None
            return
        keys = packet_keys(packets)
        X = self._features(keys)                    # rows in time order
        self.model = self._train(X)
        ts = pc.min_max(packets.column("@timestamp").cast(pa.int64()))
        self.model["baseline_s"] = (ts["max"].as_py() - ts["min"].as_py()) / 1e6
        if self.calibration == "target":
            cal = self._calibrate(X, flows, packets, keys)
            self.model["threshold"] = float(np.exp(cal.threshold))
            self.model["calibration"] = {**cal.evidence(), "target_per_10k": self.fa_target,
                                         "score": "log RMSE"}
        self.trained = True
        self._cache = None

    def _calibrate(self, X: np.ndarray, flows: pa.Table | None, packets: pa.Table, keys: dict):
        """Out-of-sample log RMSEs of the baseline packets (time blocks, each scored by a model
        trained on the other blocks) -> the threshold for ``false_alert_target``. The target
        is per 10k flows (the baseline's deduplicated flows; without flow records, its
        distinct flow ids): the per-packet budget comes from the packets' own sources and
        timing (``_learned.calibrate``)."""
        oos = np.full(len(X), np.nan)
        for train, test in blocked_folds(len(X), self.folds):
            if len(train) >= 100:
                rmse, _ = self._net(X[train]).execute(X[test])
                oos[test] = np.log(np.maximum(rmse, 1e-12))
        if flows is not None and flows.num_rows:
            n_flows = dedup_flows(flows)
        else:
            n_flows = len(set(packets.column("cyberrange.flow_id").to_pylist()) - {None})
        ts, src, _ = _times_sources(packets, keys)
        return calibrate(self, oos, ts, src, n_flows, self.min_packets, self.window_us)

    # -- execution
    def _run(self, packets: pa.Table):
        """(keys, rmse, group rmse, model) for the packets (in time order), cached per table."""
        if self._cache is not None and self._cache[0] is packets:
            return self._cache[1]
        keys = packet_keys(packets)
        X = self._features(keys)
        model = self.model
        if model is None:
            model = self._train(X[:self.grace])
        rmse, groups = model["net"].execute(X)
        out = (keys, rmse, groups, model)
        self._cache = (packets, out)
        return out

    def score_flows(self, flows: pa.Table, packets: pa.Table | None = None) -> np.ndarray:
        if packets is None or packets.num_rows < 100 or flows.num_rows == 0:
            return np.zeros(flows.num_rows)
        keys, rmse, _, _ = self._run(packets)
        fid = packets.column("cyberrange.flow_id").take(pa.array(keys["order"]))
        fdict = {f: i for i, f in enumerate(flows.column("cyberrange.flow_id").to_pylist())}
        idx = np.array([fdict.get(f, -1) for f in fid.to_pylist()], np.int64)
        ok = idx >= 0
        out = np.zeros(flows.num_rows)
        np.maximum.at(out, idx[ok], rmse[ok])
        return out

    def short_baseline(self) -> bool:
        """Trained on less than ``min_baseline_s`` of traffic: its calibration is not backed
        by evidence (every false-alert measurement used baselines of 15 s and more; drills with
        10 s warm-ups on topologies written outside the project gave 12 false alerts and 1 true
        on 3,991 benign flows, 30 per 10k). Such a model's episodes are weak signals."""
        return bool(self.min_baseline_s and self.model is not None
                    and self.model.get("baseline_s", 0.0) < self.min_baseline_s)

    def detect(self, flows: pa.Table, packets: pa.Table | None = None) -> list[Alert]:
        if self.short_baseline():
            return []
        return self._episodes(flows, packets)

    def signals(self, flows: pa.Table, packets: pa.Table | None = None) -> list[Alert]:
        """With a baseline shorter than ``min_baseline_s``, what would have been alerts, as
        weak signals at half their score (docs/incidents.md: the correlator weighs them)."""
        if not self.short_baseline():
            return []
        out = []
        for a in self._episodes(flows, packets):
            a.score = round(0.5 * a.score, 3)
            a.evidence["signal_only"] = (f"baseline {self.model['baseline_s']:.1f} s < "
                                         f"min_baseline_s {self.min_baseline_s:g} s")
            a.message += f" [weak signal: baseline {self.model['baseline_s']:.0f} s is short]"
            out.append(a)
        return out

    def _episodes(self, flows: pa.Table, packets: pa.Table | None) -> list[Alert]:
        if packets is None or packets.num_rows < 100:
            return []
        keys, rmse, groups, model = self._run(packets)
        thr = model["threshold"]
        flagged = rmse > thr
        if not flagged.any():
            return []
        ts, src, order = _times_sources(packets, keys)
        dst = pc.coalesce(packets.column("destination.ip"), packets.column("destination.mac")) \
            .take(order).to_pylist()
        fids = packets.column("cyberrange.flow_id").take(order).to_pylist()
        net = model["net"]
        alerts = []
        for ep in episodes(ts, src, flagged, self.window_us, self.min_packets):
            rows = ep.rows
            best = max(rows, key=lambda i: (rmse[i], -i))
            ratio = np.median(groups[rows], 0) / model["group_baseline"]
            top = []
            for g in np.argsort(-ratio, kind="stable")[:3]:
                feats = [self.names[j] for j in net.clusters[g]]
                top.append({"group": int(g), "rmse_vs_baseline": round(float(ratio[g]), 1),
                            "features": feats[:6] + (["..."] if len(feats) > 6 else [])})
            flow_ids = list(dict.fromkeys(f for f in (fids[i] for i in rows) if f))
            dsts = {dst[i] for i in rows}
            one = next(iter(dsts)) if len(dsts) == 1 else None
            # ECS: source.ip / destination.ip hold addresses only (ARP and other non-IP frames
            # are keyed by MAC; the MAC goes to the evidence)
            src_ip, dst_ip = _ip(ep.source), _ip(one)
            value = float(rmse[best])
            evidence = {
                "feature": "kitnet_rmse", "value": round(value, 5), "threshold": round(thr, 5),
                "baseline": round(float(np.exp(model["log_mu"])), 5),
                "packets": len(rows), "flows": len(flow_ids), "top_groups": top,
                "trained": self.model is not None, "baseline_packets": model["packets"],
                "threshold_sigma": self.sigma, "window_s": self.window_us / 1e6,
                "calibration": model.get("calibration") if self.model is not None else None,
            }
            if ep.source and src_ip is None:
                evidence["source_mac"] = ep.source
            if one and dst_ip is None:
                evidence["destination_mac"] = one
            if self.model is None:
                evidence["note"] = (f"untrained: the run's first {model['packets']} packets "
                                    f"were the grace period")
            lead = ", ".join(top[0]["features"][:3])
            msg = (f"{ep.source} -> {one or f'{len(dsts)} hosts'}: {len(rows)} packets in "
                   f"{len(flow_ids)} flows unlike the "
                   f"{'baseline' if self.model is not None else 'grace period'} (KitNET RMSE up "
                   f"to {value:.3g}, threshold {thr:.3g}); strongest group: {lead} "
                   f"({top[0]['rmse_vs_baseline']:g}x its baseline error)")
            alerts.append(Alert(
                timestamp=us_to_dt(ts[rows[ep.crossed]]), start=us_to_dt(ts[rows[0]]),
                end=us_to_dt(ts[rows[-1]]), rule_name=self.name, rule_category=self.family,
                technique=self.technique, source_ip=src_ip, destination_ip=dst_ip, message=msg,
                score=ratio_score(value, thr), evidence=evidence, flow_ids=flow_ids))
        return alerts


def _times_sources(packets: pa.Table, keys: dict):
    """Packet times (us) and sources (IP; ARP sender IP; MAC) in the features' time order, and
    that order as an arrow array."""
    order = pa.array(keys["order"])
    ts = pc.cast(packets.column("@timestamp").cast(pa.timestamp("us", tz="UTC")),
                 pa.int64()).take(order).to_numpy(zero_copy_only=False)
    src = pc.coalesce(*[packets.column(c) for c in
                        ("source.ip", "cyberrange.arp.sender_ip", "source.mac")
                        if c in packets.column_names]).take(order).to_pylist()
    return ts, src, order


def _ip(value):
    """``value`` if it is an IP address, else None (a MAC)."""
    import ipaddress
    try:
        ipaddress.ip_address(value)
        return value
    except (ValueError, TypeError):
        return None

"""volume family: a host suddenly sending far more than it normally does (exfiltration, T1041).

Per host (``source.ip``: the originator of the flows, i.e. uploads, not the answers of a server)
the detector sums the originator bytes (``source.bytes``) of the flows it started in a sliding
window of ``window`` seconds ending at each of its flows. Flows to ``ignore_ports`` (scheduled
backups, which move more than any exfiltration) are left out, and with ``answered_only`` (default)
so are flows that were no conversation (the peer never answered, or a TCP originator never
ACKed): a flood or a scan moves packets, not data. Each sensor keeps its own copy of a
flow, so the sums are per sensor and the largest counts: a second sensor does not double them.

Trained (``fit`` on a benign baseline window), each host gets the mean and standard deviation of
its window sums over the baseline (tumbling windows, empty ones counted as zero); a window sum
is anomalous when its z-score ``(value - mean) / max(std, min_bytes / z)`` reaches ``z`` -- i.e.
when it is at least ``max(z * std, min_bytes)`` above the host's mean. Hosts unseen in the
baseline, and every host when untrained, have mean and std 0: the threshold is then
``min_bytes``, the configured absolute threshold.

Anomalous windows of one host no more than ``window`` seconds apart form ONE alert; its
``flow_ids`` are the host's counted flows from the start of the first anomalous window to the last
anomalous flow that went to a peer receiving at least ``peer_share`` of those flows' bytes (the
upload, not the host's everyday requests that happened to fall in the window). ``score_flows`` gives every flow the z-score of its host's window sum at its start.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .base import Alert, Detector, SettingError, us_to_dt
from .flood import codes, int_col, scatter_max, stable_id, ts_us


class VolumeDetector(Detector):
    family = "volume"
    kind = "statistical"
    technique = "T1041"
    trainable = True
    scores_flows = True
    SETTINGS = {
        "window": 10,           # seconds of the sliding window
        "z": 4.0,               # z-score against the host's baseline that raises an alert
        "min_bytes": 65536,     # never alert below this many bytes per window (untrained: the
                                # threshold)
        "ignore_ports": [],     # destination ports whose flows are not counted (e.g. backup)
        "transports": ["tcp", "udp"],
        "answered_only": True,  # count only conversations (not floods, not scans)
        "peer_share": 0.1,      # alert flows: those to peers that got this share of the bytes
    }

    def configure(self) -> None:
        self.window_us = int(self._number("window", minimum=0.001) * 1_000_000)
        self.z = float(self._number("z", minimum=0.1))
        self.min_bytes = float(self._number("min_bytes", minimum=1))
        ports = self.settings["ignore_ports"]
        if not isinstance(ports, list) or any(
                isinstance(p, bool) or not isinstance(p, int) or not 0 <= p < 65536 for p in ports):
            raise SettingError(f"setting 'ignore_ports' of {self.name!r} must be a list of port "
                               f"numbers, got {ports!r}", setting="ignore_ports")
        self.ignore_ports = sorted(set(ports))
        transports = self._choices("transports", ("tcp", "udp", "icmp"))
        self.transports = sorted(set(transports))
        if not isinstance(self.settings["answered_only"], bool):
            raise SettingError(f"setting 'answered_only' of {self.name!r} must be true or false",
                               setting="answered_only")
        self.answered_only = self.settings["answered_only"]
        self.peer_share = float(self._number("peer_share"))
        if self.peer_share > 1:
            raise SettingError(f"setting 'peer_share' of {self.name!r} must be in [0, 1], got "
                               f"{self.peer_share!r}", setting="peer_share")
        self.baseline: dict[str, tuple[float, float]] = {}

    # -- measurement -------------------------------------------------------------------------
    def _select(self, flows: pa.Table) -> pa.Table:
        mask = pc.is_in(flows.column("network.transport"), value_set=pa.array(self.transports))
        if self.ignore_ports:
            ign = pc.is_in(flows.column("destination.port"),
                           value_set=pa.array(self.ignore_ports, pa.int32()))
            mask = pc.and_(mask, pc.invert(pc.fill_null(ign, False)))
        if self.answered_only:
            answered = pc.greater(pc.fill_null(flows.column("destination.packets"), 0), 0)
            # TCP: the originator's ACK completed a handshake (a SYN flood is answered too)
            acked = pc.or_(pc.not_equal(flows.column("network.transport"), "tcp"),
                           pc.fill_null(pc.match_substring(flows.column("cyberrange.tcp_flags"),
                                                           "A"), False))
            mask = pc.and_(mask, pc.and_(answered, pc.fill_null(acked, False)))
        return flows.filter(pc.fill_null(mask, False))

    def _sums(self, sel: pa.Table):
        """Per flow (sorted by sensor, host, time): the host's window sum at the flow's start."""
        host, hosts = codes(sel, "source.ip")
        obs, _ = codes(sel, "observer.name")
        t = ts_us(sel, "event.start")
        b = int_col(sel, "source.bytes").astype(np.float64)
        n_host = len(hosts) + 1
        key = obs * n_host + host + 1 + n_host          # >= 0 even for null codes
        order = np.lexsort((t, key))
        k, ts_, bs = key[order], t[order], b[order]
        rel = ts_ - ts_.min()
        span = int(rel.max()) + self.window_us + 1
        comb = k * span + rel
        # window (t - W, t]; flows of the same start all count (side="right" at the end)
        hi = np.searchsorted(comb, comb, side="right")
        lo = np.searchsorted(comb, comb - self.window_us, side="right")
        c = np.r_[0.0, np.cumsum(bs)]
        value = c[hi] - c[lo]
        return order, host[order], hosts, ts_, bs, value, lo

    def _stats(self, host, hosts):
        """Baseline mean and effective std per host code."""
        mean = np.zeros(len(hosts) + 1)
        sd = np.zeros(len(hosts) + 1)
        for i, h in enumerate(hosts):
            if h in self.baseline:
                mean[i], sd[i] = self.baseline[h]
        mean_h = mean[host]                       # host -1 -> the last slot: zeros
        sd_eff = np.maximum(sd[host], self.min_bytes / self.z)
        return mean_h, sd_eff

    # -- API ---------------------------------------------------------------------------------
    def fit(self, flows: pa.Table, packets: pa.Table | None = None) -> None:
        self.baseline = {}
        sel = self._select(flows)
        if sel.num_rows:
            host, hosts = codes(sel, "source.ip")
            obs, _ = codes(sel, "observer.name")
            t = ts_us(sel, "event.start")
            b = int_col(sel, "source.bytes").astype(np.float64)
            t0 = int(t.min())
            n_bins = max(1, int(-(-(int(t.max()) - t0 + 1) // self.window_us)))
            bins = (t - t0) // self.window_us
            n_obs = int(obs.max()) + 2
            # bytes per (host, sensor, bin); per host the busiest sensor's bins
            key = ((host + 1) * n_obs + obs + 1) * n_bins + bins
            uk, inv = np.unique(key, return_inverse=True)
            tot = np.bincount(inv, weights=b)
            hk = uk // n_bins
            for hs in np.unique(hk):
                h = int(hs // n_obs) - 1
                if h < 0:
                    continue
                vals = np.zeros(n_bins)
                m = hk == hs
                vals[uk[m] % n_bins] = tot[m]
                mean, sd = float(vals.mean()), float(vals.std())
                old = self.baseline.get(hosts[h])
                if old is None or mean > old[0]:
                    self.baseline[hosts[h]] = (mean, sd)
        self.trained = True

    def _measure(self, flows: pa.Table):
        sel = self._select(flows)
        if sel.num_rows == 0:
            return None
        order, host, hosts, t, b, value, lo = self._sums(sel)
        mean_h, sd_eff = self._stats(host, hosts)
        z = (value - mean_h) / sd_eff
        return sel, order, host, hosts, t, b, value, lo, mean_h, sd_eff, z

    def detect(self, flows: pa.Table, packets: pa.Table | None = None) -> list[Alert]:
        if flows.num_rows == 0:
            return []
        m = self._measure(flows)
        if m is None:
            return []
        sel, order, host, hosts, t, _b, value, lo, mean_h, sd_eff, z = m
        self._t = t
        hot = np.flatnonzero(z >= self.z)
        if len(hot) == 0:
            return []
        # episodes per host across sensors: sort the hot flows by (host, time)
        hot = hot[np.lexsort((t[hot], host[hot]))]
        hh, ht = host[hot], t[hot]
        new = np.r_[True, (hh[1:] != hh[:-1]) | (ht[1:] - ht[:-1] > self.window_us)]
        starts = np.flatnonzero(new)
        ends = np.r_[starts[1:], len(hot)]
        alerts = []
        by_host = np.lexsort((t, host))                   # every flow by (host, time)
        hk = host[by_host]
        hmin, tmin = int(hk.min()), int(t.min())
        span = int(t.max()) - tmin + 1
        comb = (hk - hmin) * span + (t[by_host] - tmin)
        self._cols = (sel.column("cyberrange.flow_id").to_numpy(zero_copy_only=False)[order],
                      *codes(sel, "destination.ip"), int_col(sel, "source.bytes")[order])
        for s, e in zip(starts, ends):
            ep = hot[s:e]
            first = int(ep[np.argmin(t[ep])])
            t0 = int(t[lo[first]])                        # start of the first hot window
            t1 = int(t[ep].max())
            h = int(host[first])
            base = (h - hmin) * span - tmin
            rows = by_host[np.searchsorted(comb, base + t0, side="left"):
                           np.searchsorted(comb, base + t1, side="right")]
            alerts.append(self._alert(sel, order, rows, ep, hosts[h], first, t0, t1,
                                      value, mean_h, sd_eff, z))
        return alerts

    def score_flows(self, flows: pa.Table, packets: pa.Table | None = None):
        out = np.zeros(flows.num_rows)
        if flows.num_rows == 0:
            return out
        m = self._measure(flows)
        if m is None:
            return out
        sel, order, *_rest, z = m
        fids = sel.column("cyberrange.flow_id").take(pa.array(order))
        return scatter_max(flows, fids, np.maximum(z, 0.0))

    # -- explanation -------------------------------------------------------------------------
    def _alert(self, sel, order, rows, ep, host, first, t0, t1, value, mean_h, sd_eff, z):
        fid, dst, dst_names, nbytes = self._cols
        # the flows that make the anomaly: those to peers that received at least
        # `peer_share` of the bytes (the host's small everyday flows in the window are not)
        d = dst[order[rows]]
        peers, inv = np.unique(d, return_inverse=True)
        per_peer = np.bincount(inv, weights=nbytes[rows].astype(np.float64))
        total = max(float(per_peer.sum()), 1.0)
        big = per_peer / total >= self.peer_share
        flow_ids = list(dict.fromkeys(f for f in fid[rows][big[inv]] if f))
        rank = np.argsort(-per_peer, kind="stable")
        dsts = [dst_names[peers[i]] for i in rank if peers[i] >= 0]
        main = [dst_names[peers[i]] for i in rank if big[i] and peers[i] >= 0]
        peak = int(ep[np.argmax(z[ep])])
        top = dsts[0] if dsts else None
        mean, sd = float(mean_h[peak]), float(sd_eff[peak])
        thr = mean + self.z * sd
        window_s = self.window_us / 1_000_000
        baseline = "untrained" if not self.trained else (
            "host not in baseline" if host not in self.baseline else
            f"baseline {mean:,.0f} +- {self.baseline[host][1]:,.0f} bytes")
        msg = (f"{host} sent {value[peak]:,.0f} bytes in {window_s:g} s "
               f"(threshold {thr:,.0f}: {baseline}; z = {z[peak]:.1f}) between "
               f"{us_to_dt(t0):%H:%M:%S} and {us_to_dt(t1):%H:%M:%S} UTC, "
               f"{len(rows)} flows to {len(dsts)} peers, {per_peer.max() / total:.0%} of the bytes to {top}")
        evidence = {"feature": "bytes_out_per_window", "value": float(value[peak]),
                    "threshold": round(thr, 1),
                    "baseline": {"mean": round(mean, 1),
                                 "std": round(self.baseline.get(host, (0, 0))[1], 1),
                                 "trained": self.trained, "host_seen": host in self.baseline},
                    "z": round(float(z[peak]), 2), "z_threshold": self.z,
                    "min_bytes": self.min_bytes, "window_s": window_s,
                    "bytes": int(nbytes[rows].sum()),
                    "flows": len(flow_ids), "flows_in_window": int(len(rows)),
                    "peers": len(dsts), "top_peer": top, "receiving_peers": main,
                    "top_peer_share": round(float(per_peer.max()) / total, 3)}
        return Alert(
            timestamp=us_to_dt(int(self._t[first])), start=us_to_dt(t0), end=us_to_dt(t1), rule_name=self.name,
            rule_category=self.family, technique=self.technique, source_ip=host,
            destination_ip=main[0] if len(main) == 1 else None, message=msg,
            score=round(min(1.0, float(z[peak]) / (2 * self.z)), 3), evidence=evidence,
            flow_ids=flow_ids, alert_id=stable_id(self.name, host, flow_ids[0]))

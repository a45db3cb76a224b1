"""flood family: packet-rate floods against one target (SYN flood T1499, UDP flood T1498).

A flood is a rate, not a count of distinct things, so this family measures rates per target and
per time bin of ``window`` seconds, from flow records alone (no packet records needed):

* ``mode: syn`` -- per ``(destination.ip, destination.port)`` (or per destination.ip with
  ``per_port: false``), TCP flows that never became a conversation: the originator never sent an
  ACK (flags without ``A``: a SYN-only flow, also "SYN ... RST") or Zeek state S0, REJ, RSTOS0,
  SH, OTH. Measured: originator packets per second (SYNs/s, ``pps``) and half-open flows started
  per second (``flows``; a spoofed-source flood makes one flow per SYN). ATT&CK T1499.
* ``mode: udp`` -- per destination.ip, every UDP flow. Measured: originator packets per second
  (``pps``) and bytes per second (``bps``, frame bytes). ATT&CK T1498.

A flow's originator packets and bytes are spread evenly over its lifetime, each bin getting the
share it overlaps (a flood 5-tuple that lasts 30 s contributes 1/30 of its packets to each
second). Each sensor
records its own copy of a flow, so rates are computed per sensor and the largest is taken: a
second sensor on the path does not double the rate.

A bin whose rate reaches any of the configured thresholds is *hot*. Hot bins of one target no
more than ``gap`` seconds apart form an episode; an episode with at least ``sustain`` hot bins
raises ONE alert, whose ``flow_ids`` hold every counted flow of the target during the episode.
The alert's time is when the ``sustain``-th hot bin crossed the threshold (estimated from the
bin's rate: start of the bin, or of the first flow in it, plus the time the threshold took).

Baseline-relative thresholds (issue 15; ``relative`` > 0): ``fit`` learns each target's peak
rate per bin in the benign baseline (0 for a target it did not see). Trained, a target's
``pps`` threshold is ``min(pps, max(min_pps, relative x its baseline peak))`` and likewise
``flows`` with ``min_flows``: a few hundred packets per second against a host that normally sees
a few is a flood, while a target busy in the baseline keeps at most the absolute threshold
(never less reach than untrained). Untrained, the absolute ``pps``/``flows`` apply. A
multicast or broadcast destination absent from the baseline keeps the absolute thresholds: its
rate is many members' chatter, which a floor sized for one quiet host does not bound.
"""
from __future__ import annotations

import ipaddress
import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .base import Alert, Detector, SettingError, us_to_dt
from .features import codes, int_col, scatter_max, stable_id, ts_us  # noqa: F401

#: Zeek states of TCP flows that never completed a handshake
HALF_OPEN_STATES = ["S0", "REJ", "RSTOS0", "SH", "OTH"]


def is_group(ip) -> bool:
    """A multicast or limited-broadcast destination (many receivers, many senders)."""
    try:
        a = ipaddress.ip_address(ip)
    except (TypeError, ValueError):
        return False
    return a.is_multicast or (a.version == 4 and int(a) == 0xFFFFFFFF)


class FloodDetector(Detector):
    family = "flood"
    technique = "T1499"
    SETTINGS = {
        "mode": "syn",          # syn (T1499) | udp (T1498)
        "window": 1,            # seconds per rate bin
        "pps": 500,             # originator packets per second to one target (0: not used)
        "flows": 200,           # syn: half-open flows started per second (0: not used)
        "bps": 0,               # udp: frame bytes per second to one target (0: not used)
        "per_port": True,       # syn: target = destination ip:port (false: destination ip)
        "sustain": 2,           # hot bins an episode needs before it alerts
        "gap": 5,               # seconds: hot bins further apart start a new episode
        "relative": 0,          # trained: x the target's baseline peak (0: absolute only)
        "min_pps": 0,           # trained: the relative pps threshold is at least this
        "min_flows": 0,         # trained, syn: the relative flows threshold is at least this
    }
    trainable = True

    def configure(self) -> None:
        mode = self.settings["mode"]
        if mode not in ("syn", "udp"):
            raise SettingError(f"setting 'mode' of {self.name!r} must be 'syn' or 'udp', "
                               f"got {mode!r}", setting="mode")
        self.mode = mode
        self.technique = "T1499" if mode == "syn" else "T1498"
        self.window_us = int(self._number("window", minimum=0.001) * 1_000_000)
        self.pps = float(self._number("pps"))
        self.flows_thr = float(self._number("flows"))
        self.bps = float(self._number("bps"))
        if mode == "udp" and self.settings["flows"] and "flows" in self._given():
            raise SettingError(f"setting 'flows' of {self.name!r} applies to mode 'syn' only",
                               setting="flows")
        if mode == "syn" and self.bps:
            raise SettingError(f"setting 'bps' of {self.name!r} applies to mode 'udp' only",
                               setting="bps")
        if mode == "udp":
            self.flows_thr = 0.0
        if not (self.pps or self.flows_thr or self.bps):
            raise SettingError(f"{self.name!r}: set at least one of 'pps', 'flows', 'bps' "
                               f"above 0", setting="pps")
        per_port = self.settings["per_port"]
        if not isinstance(per_port, bool):
            raise SettingError(f"setting 'per_port' of {self.name!r} must be true or false, "
                               f"got {per_port!r}", setting="per_port")
        self.per_port = per_port and mode == "syn"
        self.sustain = int(self._number("sustain", minimum=1, integer=True))
        self.gap_us = int(self._number("gap", minimum=0) * 1_000_000)
        self.relative = float(self._number("relative"))
        self.min_pps = float(self._number("min_pps"))
        self.min_flows = float(self._number("min_flows"))
        if self.relative and not (self.min_pps or self.min_flows):
            raise SettingError(f"{self.name!r}: 'relative' needs a floor: set 'min_pps' (or "
                               f"'min_flows') above 0", setting="relative")
        self.peaks: dict[tuple, tuple[float, float]] = {}    # target -> baseline (pps, flows)

    def fit(self, flows: pa.Table, packets: pa.Table | None = None) -> None:
        """Each target's peak packet and half-open-flow rate per bin in the baseline."""
        self.peaks = {}
        prep = self._prepare(flows) if flows is not None and flows.num_rows else None
        if prep is not None:
            _, start, end, pkts, byts, target, obs, labels = prep
            tgt, _, rp, _, rf = self._bin_rates(start, end, pkts, byts, target, obs)
            for t, p, f in zip(tgt, rp, rf):
                old = self.peaks.get(labels[t], (0.0, 0.0))
                self.peaks[labels[t]] = (max(old[0], float(p)), max(old[1], float(f)))
        self.trained = True

    def _thresholds(self, label) -> tuple[float, float]:
        """(pps, flows) thresholds of one target: absolute, or relative to its baseline."""
        if not (self.relative and self.trained):
            return self.pps, self.flows_thr
        p, f = self.peaks.get(label, (0.0, 0.0))
        if not (p or f) and is_group(label[0]):
            # a multicast/broadcast group the baseline never saw: its rate is the sum of every
            # member's chatter (mDNS, SSDP, routing hellos), not one host's habit -- no floor
            return self.pps, self.flows_thr
        pps = min(self.pps or math.inf, max(self.min_pps, self.relative * p)) \
            if self.min_pps else self.pps
        flows = min(self.flows_thr or math.inf, max(self.min_flows, self.relative * f)) \
            if self.min_flows and self.flows_thr else self.flows_thr
        return pps, flows

    def _given(self) -> set:
        return {k for k, v in self.settings.items() if v != self.SETTINGS[k]}

    # -- selection ---------------------------------------------------------------------------
    def _mask(self, flows: pa.Table):
        transport = flows.column("network.transport")
        if self.mode == "udp":
            return pc.fill_null(pc.equal(transport, "udp"), False)
        flags = flows.column("cyberrange.tcp_flags")
        no_ack = pc.invert(pc.fill_null(pc.match_substring(flags, "A"), True))
        half = pc.fill_null(pc.is_in(flows.column("cyberrange.tcp_state"),
                                     value_set=pa.array(HALF_OPEN_STATES)), False)
        return pc.and_(pc.fill_null(pc.equal(transport, "tcp"), False), pc.or_(no_ack, half))

    def _prepare(self, flows: pa.Table):
        """Selected flows as numpy columns: (table, start, end, pkts, bytes, target, obs)."""
        sel = flows.filter(self._mask(flows))
        if sel.num_rows == 0:
            return None
        start = ts_us(sel, "event.start")
        end = np.maximum(ts_us(sel, "event.end"), start)
        pkts = int_col(sel, "source.packets").astype(np.float64)
        byts = int_col(sel, "source.bytes").astype(np.float64)
        dst, dst_names = codes(sel, "destination.ip")
        if self.per_port:
            port = int_col(sel, "destination.port", -1)
            pair = dst * 65537 + (port + 1)
            target, inv = np.unique(pair, return_inverse=True)
            labels = [(dst_names[t // 65537], int(t % 65537) - 1) for t in target]
        else:
            uniq, inv = np.unique(dst, return_inverse=True)
            labels = [(dst_names[t], None) for t in uniq]
        obs, _ = codes(sel, "observer.name")
        self._src = codes(sel, "source.ip")
        return sel, start, end, pkts, byts, inv.astype(np.int64), obs + 1, labels

    def _bin_rates(self, start, end, pkts, byts, target, obs):
        """Per (target, bin): rates (max over sensors) and half-open flows started."""
        W = self.window_us
        b0 = start // W
        b1 = end // W
        nb = (b1 - b0 + 1)
        total = int(nb.sum())
        row = np.repeat(np.arange(len(start)), nb)
        offs = np.cumsum(nb) - nb
        b = b0[row] + (np.arange(total) - offs[row])
        # each flow's packets spread over its lifetime: a bin gets the share it overlaps
        dur = (end - start)[row]
        lo = np.maximum(start[row], b * W)
        hi = np.minimum(end[row], (b + 1) * W)
        share = np.where(dur > 0, (hi - lo) / np.maximum(dur, 1), 1.0)
        n_obs = int(obs.max()) + 1
        bmin = int(b0.min())
        span = int(b.max()) - bmin + 1
        # key = ((target * n_obs) + obs) * span + bin
        key = (target[row] * n_obs + obs[row]) * span + (b - bmin)
        uk, inv = np.unique(key, return_inverse=True)
        p = np.bincount(inv, weights=pkts[row] * share)
        y = np.bincount(inv, weights=byts[row] * share)
        first = np.zeros(total, dtype=bool)
        first[offs] = True            # the bin where each flow started
        f = np.bincount(inv, weights=first.astype(np.float64))
        # max over sensors per (target, bin)
        tgt = uk // (n_obs * span)
        bins = uk % span + bmin
        tb = tgt * span + (bins - bmin)
        order = np.lexsort((uk, tb))
        tb_s = tb[order]
        cut = np.flatnonzero(np.r_[True, tb_s[1:] != tb_s[:-1]])
        scale = 1_000_000 / W
        rate_p = np.maximum.reduceat(p[order], cut) * scale
        rate_b = np.maximum.reduceat(y[order], cut) * scale
        rate_f = np.maximum.reduceat(f[order], cut) * scale
        return tgt[order][cut], bins[order][cut], rate_p, rate_b, rate_f

    def _hot(self, rate_p, rate_b, rate_f, tgt=None, labels=None):
        """Hot bins and how far past its threshold each bin is (the largest ratio); with
        ``tgt``/``labels`` the pps and flows thresholds are the target's own (_thresholds)."""
        hot = np.zeros(len(rate_p), dtype=bool)
        ratio = np.zeros(len(rate_p))
        thr_p = np.full(len(rate_p), self.pps)
        thr_f = np.full(len(rate_p), self.flows_thr)
        if tgt is not None and self.relative and self.trained:
            per = np.array([self._thresholds(lb) for lb in labels]).reshape(-1, 2)
            thr_p, thr_f = per[tgt, 0], per[tgt, 1]
        for thr, r in ((thr_p, rate_p), (np.full(len(rate_p), self.bps), rate_b),
                       (thr_f, rate_f)):
            on = thr > 0
            hot |= on & (r >= np.where(on, thr, np.inf))
            ratio = np.maximum(ratio, np.where(on, r / np.where(on, thr, 1.0), 0.0))
        return hot, ratio

    # -- API ---------------------------------------------------------------------------------
    def detect(self, flows: pa.Table, packets: pa.Table | None = None) -> list[Alert]:
        if flows.num_rows == 0:
            return []
        prep = self._prepare(flows)
        if prep is None:
            return []
        sel, start, end, pkts, byts, target, obs, labels = prep
        tgt, bins, rp, rb, rf = self._bin_rates(start, end, pkts, byts, target, obs)
        hot, ratio = self._hot(rp, rb, rf, tgt, labels)
        idx = np.flatnonzero(hot)
        if len(idx) == 0:
            return []
        fids = None
        alerts = []
        W = self.window_us
        gap_bins = max(1, -(-self.gap_us // W))
        # idx is sorted by (target, bin): split into episodes
        t_h, b_h = tgt[idx], bins[idx]
        new = np.r_[True, (t_h[1:] != t_h[:-1]) | (b_h[1:] - b_h[:-1] > gap_bins)]
        starts = np.flatnonzero(new)
        ends = np.r_[starts[1:], len(idx)]
        for s, e in zip(starts, ends):
            if e - s < self.sustain:
                continue
            ep = idx[s:e]
            t = int(t_h[s])
            ep_start, ep_end = int(b_h[s]) * W, (int(b_h[e - 1]) + 1) * W
            m = np.flatnonzero((target == t) & (start < ep_end) & (end >= ep_start))
            if fids is None:
                fids = sel.column("cyberrange.flow_id").to_pylist()
            # crossing: the sustain-th hot bin, at its start (or its first flow) plus the time
            # the threshold took at the bin's rate
            cb = idx[s + self.sustain - 1]
            b_start = int(bins[cb]) * W
            in_bin = start[m][(start[m] >= b_start) & (start[m] < b_start + W)]
            t_cross = max(b_start, int(in_bin.min()) if len(in_bin) else b_start)
            t_cross = min(b_start + W - 1, t_cross + int(W / max(ratio[cb], 1.0)))
            alerts.append(self._alert(labels[t], ep, rp, rb, rf, ratio, t_cross,
                                      int(start[m].min()), int(end[m].max()),
                                      [fids[i] for i in m[np.argsort(start[m], kind="stable")]],
                                      int(pkts[m].sum()), int(byts[m].sum()),
                                      self._sources(m)))
        return alerts

    def _sources(self, m) -> list[str]:
        src, names = self._src
        return [names[i] for i in np.unique(src[m]) if i >= 0]

    def _alert(self, label, ep, rp, rb, rf, ratio, t_cross, t0, t1, flow_ids, pkts, byts,
               sources):
        dst, port = label
        peak = int(ep[np.argmax(ratio[ep])])
        window_s = self.window_us / 1_000_000
        target = f"{dst}:{port}" if port is not None else dst
        # the feature that is furthest past its threshold at the peak
        cand = []
        thr_p, thr_f = self._thresholds(label)
        if thr_p:
            cand.append(("syn_pps" if self.mode == "syn" else "pps", rp[peak], thr_p))
        if thr_f:
            cand.append(("half_open_flows_per_s", rf[peak], thr_f))
        if self.bps:
            cand.append(("bytes_per_s", rb[peak], self.bps))
        feature, value, thr = max(cand, key=lambda c: c[1] / c[2])
        srcs = sources[0] if len(sources) == 1 else None
        what = "SYN flood" if self.mode == "syn" else "UDP flood"
        unit = {"syn_pps": "SYN/s", "pps": "packets/s", "half_open_flows_per_s":
                "half-open flows/s", "bytes_per_s": "bytes/s"}[feature]
        note = ""
        if self.relative and self.trained and thr < (self.pps if feature.endswith("pps")
                                                     else self.flows_thr or math.inf):
            base = self.peaks.get(label, (0.0, 0.0))
            note = (f", relative: its baseline peak was "
                    f"{base[0 if feature.endswith('pps') else 1]:,.1f}/s")
        msg = (f"{what} against {target}: {value:,.0f} {unit} at peak (threshold {thr:g}{note}) "
               f"in {len(ep)} of {window_s:g} s bins between {us_to_dt(t0):%H:%M:%S} and "
               f"{us_to_dt(t1):%H:%M:%S} UTC, {len(flow_ids)} flows, {pkts:,} packets from "
               f"{srcs or f'{len(sources)} sources'}")
        evidence = {"feature": feature, "value": round(float(value), 1), "threshold": thr,
                    "window_s": window_s, "hot_bins": len(ep), "sustain": self.sustain,
                    "peak_pps": round(float(rp[peak]), 1),
                    "peak_bytes_per_s": round(float(rb[peak]), 1),
                    "flows": len(flow_ids), "packets": pkts, "bytes": byts,
                    "mode": self.mode, "target": target, "sources": len(sources)}
        if self.mode == "syn":
            evidence["peak_half_open_flows_per_s"] = round(float(rf[peak]), 1)
        if self.relative and self.trained:
            base = self.peaks.get(label, (0.0, 0.0))
            evidence["baseline"] = {"peak_pps": round(base[0], 1),
                                    "peak_half_open_flows_per_s": round(base[1], 1),
                                    "relative": self.relative, "min_pps": self.min_pps,
                                    "min_flows": self.min_flows,
                                    "absolute": {"pps": self.pps, "flows": self.flows_thr}}
        return Alert(
            timestamp=us_to_dt(t_cross), start=us_to_dt(t0), end=us_to_dt(t1),
            rule_name=self.name, rule_category=self.family, technique=self.technique,
            source_ip=srcs, destination_ip=dst, message=msg,
            score=round(min(1.0, float(ratio[peak]) / 2.0), 3), evidence=evidence,
            flow_ids=flow_ids, alert_id=stable_id(self.name, target, flow_ids[0]))

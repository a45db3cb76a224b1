"""dnstunnel family: data carried in DNS query names (ATT&CK T1048, DNS tunnelling / exfiltration).

A DNS tunnel writes its data into the labels of query names under one domain the attacker runs:
``<base32 chunk>.<seq>.<session>.d.evil.example``. Each name is new, long and random-looking;
there are many of them in a short time; TXT/NULL queries carry data both ways. Benign lookups
repeat a few short, readable host names.

Queries are read from packet records (``dns.question.name``, ``dns.question.type``; responses
are left out), because a tunnel usually sends every query from one UDP socket, which is ONE flow
record holding only its first name. Without packet records the flows' first names are used.

Per **registered domain** (the last ``domain_labels`` labels of the name) and over a sliding
window of ``window`` seconds ending at each query, the detector measures

* ``distinct_names`` -- names in the window not seen before under the domain,
* ``mean_length`` -- mean length of those names' subdomain part (the name without the
  registered domain),
* ``mean_entropy`` -- mean Shannon entropy (bits per character) of those subdomains, dots left
  out,
* ``type_share`` -- share of the window's queries of a data-carrying type (``types``: TXT, NULL,
  ...).

A query is *suspicious* when ``distinct_names >= min_distinct`` and at least one of the other
three reaches its threshold (``0`` turns a test off). Suspicious queries of one domain no more than
``window`` seconds apart form ONE alert; its ``flow_ids`` are the flows that carried the domain's
queries from the start of the first suspicious window to the last suspicious query. Each domain
is judged from the sensor that saw most of its queries, so a second sensor on the path does not
change the counts.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .base import Alert, Detector, SettingError, us_to_dt
from .beacon import dns_queries, registered_domain
from .features import codes, scatter_max, stable_id, ts_us


def shannon_entropy(strings: list[str], chunk: int = 16384) -> np.ndarray:
    """Shannon entropy in bits per character of each string, dots left out (vectorised:
    per chunk of strings one ``bincount`` into a strings x alphabet matrix)."""
    n = len(strings)
    out = np.zeros(n)
    if n == 0:
        return out
    raw = [s.encode("utf-8", "replace") for s in strings]
    lens = np.fromiter((len(b) for b in raw), dtype=np.int64, count=n)
    buf = np.frombuffer(b"".join(raw), dtype=np.uint8)
    if len(buf) == 0:
        return out
    offs = np.r_[0, np.cumsum(lens)]
    # compact alphabet: only the byte values that occur, dots left out
    used = np.flatnonzero(np.bincount(buf, minlength=256))
    used = used[used != ord(".")]
    if len(used) == 0:
        return out
    lut = np.full(256, len(used), dtype=np.int64)          # dots -> an extra, ignored column
    lut[used] = np.arange(len(used))
    k = len(used) + 1
    sym = lut[buf]
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        seg = sym[offs[a]:offs[b]]
        row = np.repeat(np.arange(b - a), lens[a:b])
        counts = np.bincount(row * k + seg, minlength=(b - a) * k).reshape(b - a, k)[:, :-1]
        size = counts.sum(axis=1, keepdims=True).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            p = np.where(counts > 0, counts / np.maximum(size, 1), 1.0)
            out[a:b] = -(p * np.log2(p)).sum(axis=1)
    return out + 0.0                                           # no -0.0


class DnsTunnelDetector(Detector):
    family = "dnstunnel"
    technique = "T1048"
    needs_packets = True
    scores_flows = True
    SETTINGS = {
        "window": 60,                 # seconds of the sliding window
        "min_distinct": 10,           # new names under one domain within the window
        "length": 40,                 # mean subdomain length (characters) (0: off)
        "entropy": 4.0,               # mean subdomain entropy, bits per character (0: off)
        "type_share": 0.5,            # share of TXT/NULL/... queries in the window (0: off)
        "types": ["TXT", "NULL", "10", "ANY", "CNAME", "MX"],   # data-carrying query types
        "domain_labels": 2,           # labels that make the registered domain
        "allow": [],                  # domains (and their subdomains) never reported
        "technique": "T1048",         # ATT&CK id the alerts claim (T1071.004 for a TXT-poll
                                      # instance: C2 rather than exfiltration)
    }

    def configure(self) -> None:
        self.window_us = int(self._number("window", minimum=0.001) * 1_000_000)
        self.min_distinct = int(self._number("min_distinct", minimum=1, integer=True))
        self.length = float(self._number("length"))
        self.entropy = float(self._number("entropy"))
        self.type_share = float(self._number("type_share"))
        if self.type_share > 1:
            raise SettingError(f"setting 'type_share' of {self.name!r} must be in [0, 1], got "
                               f"{self.type_share!r}", setting="type_share")
        if not (self.length or self.entropy or self.type_share):
            raise SettingError(f"{self.name!r}: set at least one of 'length', 'entropy', "
                               f"'type_share' above 0", setting="length")
        types = self.settings["types"]
        if not isinstance(types, list) or any(not isinstance(t, (str, int)) for t in types):
            raise SettingError(f"setting 'types' of {self.name!r} must be a list of DNS query "
                               f"types, got {types!r}", setting="types")
        self.types = sorted({str(t).upper() for t in types})
        self.domain_labels = int(self._number("domain_labels", minimum=1, integer=True))
        allow = self.settings["allow"]
        if not isinstance(allow, list) or any(not isinstance(a, str) or not a for a in allow):
            raise SettingError(f"setting 'allow' of {self.name!r} must be a list of domain "
                               f"names, got {allow!r}", setting="allow")
        self.allow = [a.lower().strip(".") for a in allow]
        tech = self.settings["technique"]
        if not isinstance(tech, str) or not tech.startswith("T") or not tech[1:5].isdigit():
            raise SettingError(f"setting 'technique' of {self.name!r} must be an ATT&CK id "
                               f"such as T1048, got {tech!r}", setting="technique")
        self.technique = tech

    # -- measurement -------------------------------------------------------------------------
    def _measure(self, flows: pa.Table, packets: pa.Table | None):
        """Per query (one sensor per domain, time order): window features. None if no DNS."""
        if packets is not None:
            q = dns_queries(packets)
            tcol = "@timestamp"
        else:
            q = flows.filter(pc.is_valid(flows.column("dns.question.name")))
            tcol = "event.start"
        if q.num_rows == 0:
            return None
        name, names = codes(q, "dns.question.name")
        reg = registered_domain(pa.array(names, pa.string()), self.domain_labels)
        renc = pc.dictionary_encode(reg)
        rcode = renc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        domains = renc.dictionary.to_pylist()
        regs = reg.to_pylist()
        subs = [n.rstrip(".")[:max(0, len(n.rstrip(".")) - len(r) - 1)]
                for n, r in zip(names, regs)]
        sub_len = np.fromiter((len(s) for s in subs), dtype=np.float64, count=len(subs))
        sub_ent = shannon_entropy(subs)
        dom = rcode[name]
        obs, _ = codes(q, "observer.name")
        t = ts_us(q, tcol)
        qtype = q.column("dns.question.type")
        odd = pc.fill_null(pc.is_in(pc.utf8_upper(qtype), value_set=pa.array(self.types)),
                           False).to_numpy(zero_copy_only=False)
        # one sensor per domain: the one that saw most of its queries
        n_obs = int(obs.max()) + 2
        do = dom * n_obs + obs + 1
        udo, cnt = np.unique(do, return_counts=True)
        order = np.lexsort((cnt, udo // n_obs))
        last = np.r_[(udo // n_obs)[order][1:] != (udo // n_obs)[order][:-1], True]
        chosen = udo[order][last]
        mine = np.isin(do, chosen)
        idx = np.flatnonzero(mine)
        idx = idx[np.lexsort((t[idx], dom[idx]))]
        g, tt, nm = dom[idx], t[idx], name[idx]
        # first occurrence of each name under its domain
        o2 = np.lexsort((tt, nm, g))
        first = np.ones(len(idx), dtype=bool)
        first[o2[1:]] = ~((g[o2][1:] == g[o2][:-1]) & (nm[o2][1:] == nm[o2][:-1]))
        # sliding window per domain via a combined, monotone key
        rel = tt - tt.min()
        span = int(rel.max()) + self.window_us + 1
        key = g * span + rel
        j = np.searchsorted(key, key - self.window_us, side="right")
        c_new = np.r_[0, np.cumsum(first)]
        c_len = np.r_[0, np.cumsum(np.where(first, sub_len[nm], 0.0))]
        c_ent = np.r_[0, np.cumsum(np.where(first, sub_ent[nm], 0.0))]
        c_odd = np.r_[0, np.cumsum(odd[idx])]
        i1 = np.arange(1, len(idx) + 1)
        distinct = c_new[i1] - c_new[j]
        with np.errstate(divide="ignore", invalid="ignore"):
            mean_len = np.where(distinct > 0, (c_len[i1] - c_len[j]) / distinct, 0.0)
            mean_ent = np.where(distinct > 0, (c_ent[i1] - c_ent[j]) / distinct, 0.0)
        share = (c_odd[i1] - c_odd[j]) / (i1 - j)
        ratio = np.zeros(len(idx))
        for thr, v in ((self.length, mean_len), (self.entropy, mean_ent),
                       (self.type_share, share)):
            if thr:
                ratio = np.maximum(ratio, v / thr)
        volume = distinct >= self.min_distinct
        suspicious = volume & (ratio >= 1.0)
        return dict(q=q, idx=idx, g=g, t=tt, j=j, distinct=distinct, mean_len=mean_len,
                    mean_ent=mean_ent, share=share, ratio=ratio, suspicious=suspicious,
                    domains=domains, dom_all=dom, t_all=t)

    def _allowed(self, domain: str) -> bool:
        return any(domain == a or domain.endswith("." + a) for a in self.allow)

    # -- API ---------------------------------------------------------------------------------
    def detect(self, flows: pa.Table, packets: pa.Table | None = None) -> list[Alert]:
        m = self._measure(flows, packets)
        if m is None:
            return []
        sus = np.flatnonzero(m["suspicious"])
        if len(sus) == 0:
            return []
        g, t = m["g"][sus], m["t"][sus]
        new = np.r_[True, (g[1:] != g[:-1]) | (t[1:] - t[:-1] > self.window_us)]
        starts = np.flatnonzero(new)
        ends = np.r_[starts[1:], len(sus)]
        alerts = []
        for s, e in zip(starts, ends):
            domain = m["domains"][int(g[s])]
            if self._allowed(domain):
                continue
            alerts.append(self._alert(m, sus[s:e], domain))
        return alerts

    def score_flows(self, flows: pa.Table, packets: pa.Table | None = None):
        out = np.zeros(flows.num_rows)
        m = self._measure(flows, packets) if flows.num_rows else None
        if m is None:
            return out
        vol = np.minimum(1.0, m["distinct"] / self.min_distinct)
        qscore = np.minimum(1.0, m["ratio"] / 2.0) * vol
        allowed = np.array([self._allowed(d) for d in m["domains"]] + [False])
        qscore[allowed[m["g"]]] = 0.0
        fids = m["q"].column("cyberrange.flow_id").take(pa.array(m["idx"]))
        return scatter_max(flows, fids, qscore)

    # -- explanation -------------------------------------------------------------------------
    def _alert(self, m, ep, domain) -> Alert:
        q, idx = m["q"], m["idx"]
        first, last = int(ep[0]), int(ep[-1])
        t0 = int(m["t"][m["j"][first]])            # start of the first suspicious window
        t1 = int(m["t"][last])
        # every query of the domain (any sensor) in [t0, t1] -> its flows
        sel = np.flatnonzero((m["dom_all"] == m["g"][first]) & (m["t_all"] >= t0) &
                             (m["t_all"] <= t1))
        sel = sel[np.argsort(m["t_all"][sel], kind="stable")]
        sub = q.take(pa.array(sel))
        flow_ids = list(dict.fromkeys(f for f in sub.column("cyberrange.flow_id").to_pylist()
                                      if f))
        sources = sorted(set(sub.column("source.ip").drop_null().to_pylist()))
        servers = sorted(set(sub.column("destination.ip").drop_null().to_pylist()))
        peak = int(ep[np.argmax(m["ratio"][ep])])
        cand = []
        for feat, thr, key in (("mean_subdomain_length", self.length, "mean_len"),
                               ("mean_subdomain_entropy", self.entropy, "mean_ent"),
                               ("data_type_share", self.type_share, "share")):
            if thr:
                cand.append((feat, float(m[key][peak]), thr))
        feature, value, thr = max(cand, key=lambda c: c[1] / c[2])
        window_s = self.window_us / 1_000_000
        # names (not packets): distinct names over the whole episode from the chosen sensor
        ep_rows = np.arange(int(m["j"][first]), last + 1)
        names = q.column("dns.question.name").take(pa.array(idx[ep_rows]))
        n_names = len(pc.unique(names))
        src = sources[0] if len(sources) == 1 else None
        what = "DNS tunnel" if self.technique == "T1048" else "DNS data channel"
        msg = (f"{what} under {domain}: {n_names} distinct query names from "
               f"{src or f'{len(sources)} hosts'} between {us_to_dt(t0):%H:%M:%S} and "
               f"{us_to_dt(t1):%H:%M:%S} UTC; up to {int(m['distinct'][ep].max())} new names per "
               f"{window_s:g} s (min {self.min_distinct}), subdomains {m['mean_len'][peak]:.0f} "
               f"characters long at {m['mean_ent'][peak]:.2f} bits/char, "
               f"{m['share'][peak]:.0%} TXT/NULL-type ({feature} {value:.2f} vs {thr:g})")
        evidence = {"feature": feature, "value": round(value, 3), "threshold": thr,
                    "window_s": window_s, "domain": domain,
                    "distinct_names": int(m["distinct"][peak]),
                    "min_distinct": self.min_distinct,
                    "mean_subdomain_length": round(float(m["mean_len"][peak]), 1),
                    "mean_subdomain_entropy": round(float(m["mean_ent"][peak]), 3),
                    "data_type_share": round(float(m["share"][peak]), 3),
                    "names": int(n_names), "queries": int(len(sel)), "sources": sources,
                    "servers": servers, "flows": len(flow_ids)}
        return Alert(
            timestamp=us_to_dt(int(m["t"][first])), start=us_to_dt(t0), end=us_to_dt(t1),
            rule_name=self.name, rule_category=self.family, technique=self.technique,
            source_ip=src, destination_ip=servers[0] if len(servers) == 1 else None,
            message=msg, score=round(min(1.0, float(m["ratio"][peak]) / 2.0), 3),
            evidence=evidence, flow_ids=flow_ids,
            alert_id=stable_id(self.name, domain, t0))

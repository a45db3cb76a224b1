"""beacon family: command-and-control check-ins, scored RITA-style per conversation series.

A *series* is every "connection" of one channel:

* TCP/UDP flows per ``(source.ip, destination.ip, destination.port, transport)`` -- an HTTP(S)
  implant opens one connection per check-in (ATT&CK T1071.001 for TCP, T1071 for other UDP);
* DNS queries per ``(source.ip, registered domain of dns.question.name)`` -- a DNS implant's
  polls may go through a resolver, so the destination address says little while the queried
  domain is the channel (T1071.004). Queries come from packet records (every query, even when
  several share one UDP 5-tuple and so one flow); a query repeated within ``retry`` seconds is a
  retry, not a check-in. Without packet records, the DNS name of each flow is used.

Each series with at least ``min_connections`` connections and a median interval of at least
``min_interval`` seconds is scored in [0, 1] as ``timing * (0.6 + 0.2 * size + 0.2 * count)``:

* timing -- ``0.8 * (1 - jitter_hat / allowed) + 0.2 * (1 - |Bowley skew|)`` of the
  inter-connection intervals, 0 when ``jitter_hat >= allowed``. ``allowed`` is ``jitter`` for
  short series and grows with the count up to ``jitter_max`` (``allowance()``): random arrivals
  look less regular the more of them there are, so a long series may be more jittered. Intervals shorter than ``burst``
  times the median interval are left out: a second connection right after a check-in (results
  posted, a retry) is part of that check-in. ``jitter_hat`` estimates the
  relative jitter: the mean of ``2 * MADM / median`` (MADM = median absolute deviation about the
  median) and ``sqrt(3) * std / mean``; both equal ``j`` for intervals spread uniformly over
  ``median * (1 +- j)`` -- an implant's "interval +- jitter" -- and are 1.4-1.7 for Poisson
  arrivals (people browsing, resolving names). Bowley skew is 0 for a symmetric spread;
* size -- ``1 - size_jitter_hat / size_jitter`` on the originator bytes per connection, clipped
  to [0, 1] (a check-in is the same request every time);
* count -- ``min(1, connections / full_count)``.

Short series are judged by a second test, the *rhythm* of their first ``min_connections`` - 1
connections (``beacon_stats``): the spread ``(longest - shortest) / (longest + shortest)`` of
their intervals, and the exact chance ``p`` that random (Poisson) arrivals are that regular. A
series with at least ``rhythm_min_connections`` connections and same-size requests (size score
> 0) scores ``threshold * log10(p) / log10(rhythm_p)`` by it, so it reaches the threshold exactly
when ``p <= rhythm_p``; its score is the larger of the two. Five to seven check-ins -- all a 45 s
beacon makes in five minutes -- are then enough when the jitter is small enough (the envelope
edge, docs/detectors/beacon.md).

A series alerts when its score reaches ``threshold``, unless it is known-good:

* it matches ``allow`` (destination IPs/CIDRs, or domains and their subdomains),
* its destination port is in ``ignore_ports`` (NTP's clockwork polls; see the YAML),
* its median connection moves more than ``max_bytes`` (bulk transfers such as backups are not
  check-ins), or
* (trained) it already had ``baseline_min_connections`` connections in the benign baseline
  window: a channel that was busy before the drill began is the network's own (the benign
  ``c2-report`` role reports to the real C2 server every few seconds); for DNS also any domain
  queried that often in the baseline by all sources together (the network's own domain), and
  for addresses any server port that ``baseline_peers`` sources used in the baseline (a COP
  server every client reports to).

One alert per series; its ``flow_ids`` hold every flow of the series, its evidence every
component of the score and the thresholds it was held to. ``near_misses()`` lists the series
that came close and did not alert, with what failed by how much (``detect run --explain``). Its time is the first
connection at which the series' running score reached the threshold.
"""
from __future__ import annotations

import ipaddress
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .base import Alert, Detector, SettingError, us_to_dt
from .beacon_explain import BeaconExplain
from .beacon_stats import (
    dns_queries,
    group_quantiles,
    log10_p_random,
    registered_domain,
    regularity,
)
from .features import codes, int_col, scatter_max, stable_id, ts_us

__all__ = ["BeaconDetector", "dns_queries", "group_quantiles", "log10_p_random",
           "registered_domain", "regularity"]


def _spread_chance(ig: np.ndarray, ints: np.ndarray, n_groups: int):
    """Per group of intervals: the spread ``(max - min) / (max + min)`` (1 with fewer than two)
    and log10 of the chance that random arrivals are that regular (``log10_p_random``)."""
    n_int = np.bincount(ig, minlength=n_groups)
    hi = np.zeros(n_groups)
    np.maximum.at(hi, ig, ints)
    lo = np.full(n_groups, np.inf)
    np.minimum.at(lo, ig, ints)
    with np.errstate(divide="ignore", invalid="ignore"):
        spread = np.nan_to_num(np.where(n_int >= 2, (hi - lo) / (hi + lo), 1.0), nan=1.0)
    return spread, log10_p_random(n_int, spread)


class BeaconDetector(BeaconExplain, Detector):
    family = "beacon"
    kind = "statistical"
    technique = "T1071.001"
    trainable = True
    scores_flows = True
    needs_packets = True
    SETTINGS: ClassVar[dict] = {
        "threshold": 0.35,                # score in [0, 1] that raises an alert
        "min_connections": 8,             # a series needs this many connections to be scored
        "full_count": 10,                 # connections that earn the full count score
        "jitter": 0.8,                    # estimated interval jitter at which timing scores 0
        "jitter_max": 1.2,                # ... allowed to grow to this for long series
        "size_jitter": 0.5,               # estimated size spread at which size scores 0
        "burst": 0.05,                    # intervals below this x the median: same check-in
        "min_interval": 1.0,              # seconds: a faster series is a session, not check-ins
        "max_bytes": 65536,               # median originator bytes above which: not a check-in
        "ignore_ports": [123],            # destination ports never scored (NTP)
        "allow": [],                      # known-good destinations: IPs, CIDRs, domains
        "dns": True,                      # score DNS queries per registered domain
        "domain_labels": 2,               # labels that make the registered domain
        "retry": 2,                       # seconds: same query again within this = a retry
        "baseline_min_connections": 3,    # trained: series this busy in the baseline are known
        "rhythm_p": 0.001,                # short series: alert when random arrivals would look
                                          # this regular with at most this chance (0: off)
        "rhythm_min_connections": 5,      # ... and it has at least this many connections
        "baseline_peers": 3,              # trained: a server port this many sources used in
                                          # the baseline is the network's own service (0: off)
        "new_peer_p": 0.05,               # trained: a series to an address nobody used in the
                                          # baseline alerts when random arrivals would be as
                                          # regular with at most this chance, over all its
                                          # intervals (0: off)
        "new_peer_min_connections": 4,    # ... and it has at least this many connections
    }

    def configure(self) -> None:
        self.threshold = float(self._number("threshold"))
        if self.threshold > 1:
            raise SettingError(f"setting 'threshold' of {self.name!r} must be in [0, 1], got "
                               f"{self.threshold!r}", setting="threshold")
        self.min_conn = int(self._number("min_connections", minimum=3, integer=True))
        self.full_count = int(self._number("full_count", minimum=1, integer=True))
        self.jitter = float(self._number("jitter", minimum=0.001))
        self.jitter_max = float(self._number("jitter_max", minimum=0.001))
        self.size_jitter = float(self._number("size_jitter", minimum=0.001))
        self.max_bytes = float(self._number("max_bytes", minimum=1))
        self.min_interval = float(self._number("min_interval"))
        self.burst = float(self._number("burst"))
        if self.burst >= 1:
            raise SettingError(f"setting 'burst' of {self.name!r} must be below 1, got "
                               f"{self.burst!r}", setting="burst")
        ports = self.settings["ignore_ports"]
        if not isinstance(ports, list) or any(
                isinstance(p, bool) or not isinstance(p, int) or not 0 <= p < 65536 for p in ports):
            raise SettingError(f"setting 'ignore_ports' of {self.name!r} must be a list of port "
                               f"numbers, got {ports!r}", setting="ignore_ports")
        self.ignore_ports = np.array(sorted(set(ports)), dtype=np.int64)
        allow = self.settings["allow"]
        if not isinstance(allow, list) or any(not isinstance(a, str) or not a for a in allow):
            raise SettingError(f"setting 'allow' of {self.name!r} must be a list of IPs, CIDRs "
                               f"or domain names, got {allow!r}", setting="allow")
        self.allow_nets, self.allow_domains = [], []
        for a in allow:
            try:
                self.allow_nets.append(ipaddress.ip_network(a, strict=False))
            except ValueError:
                self.allow_domains.append(a.lower().strip("."))
        if not isinstance(self.settings["dns"], bool):
            raise SettingError(f"setting 'dns' of {self.name!r} must be true or false",
                               setting="dns")
        self.domain_labels = int(self._number("domain_labels", minimum=1, integer=True))
        self.retry_us = int(self._number("retry") * 1_000_000)
        self.baseline_min = int(self._number("baseline_min_connections", minimum=1, integer=True))
        self.rhythm_p = float(self._number("rhythm_p"))
        if not 0 <= self.rhythm_p < 1:
            raise SettingError(f"setting 'rhythm_p' of {self.name!r} must be in [0, 1), got "
                               f"{self.rhythm_p!r}", setting="rhythm_p")
        self.rhythm_min = int(self._number("rhythm_min_connections", minimum=3, integer=True))
        self.baseline_peers = int(self._number("baseline_peers", minimum=0, integer=True))
        self.new_peer_p = float(self._number("new_peer_p"))
        if not 0 <= self.new_peer_p < 1:
            raise SettingError(f"setting 'new_peer_p' of {self.name!r} must be in [0, 1), got "
                               f"{self.new_peer_p!r}", setting="new_peer_p")
        self.new_peer_min = int(self._number("new_peer_min_connections", minimum=3,
                                             integer=True))
        self.baseline_hosts: set = set()
        self.known_services: set = set()
        self.known: set = set()
        self.known_domains: set = set()

    # -- events ------------------------------------------------------------------------------
    def _events(self, flows: pa.Table, packets: pa.Table | None):
        """Connections of every series: dict of numpy arrays + labels.

        keys: series label tuples; ``g`` series index per event; ``obs`` observer code; ``t``
        µs; ``size`` bytes; ``fid`` flow id index into ``fids``.
        """
        parts = []
        transport = flows.column("network.transport")
        is_ip = pc.is_in(transport, value_set=pa.array(["tcp", "udp"]))
        dport = flows.column("destination.port")
        use_pkts = self.settings["dns"] and packets is not None
        if self.settings["dns"]:
            # DNS is scored per domain; keep port-53 flows out of the address pairs
            is_dns = pc.or_(pc.fill_null(pc.equal(dport, 53), False),
                            pc.is_valid(flows.column("dns.question.name")))
            is_ip = pc.and_(is_ip, pc.invert(is_dns))
        if len(self.ignore_ports):
            is_ip = pc.and_(is_ip, pc.invert(pc.fill_null(
                pc.is_in(dport, value_set=pa.array(self.ignore_ports.tolist(), pa.int32())),
                False)))
        ip = flows.filter(pc.fill_null(is_ip, False))
        if ip.num_rows:
            src, sn = codes(ip, "source.ip")
            dst, dn = codes(ip, "destination.ip")
            port = int_col(ip, "destination.port", -1)
            tr, tn = codes(ip, "network.transport")
            key = ((src * (len(dn) + 1) + dst) * 65537 + port + 1) * (len(tn) + 1) + tr
            parts.append(("ip", ip, key, (src, sn, dst, dn, port, tr, tn),
                          ts_us(ip, "event.start"), int_col(ip, "source.bytes"),
                          ip.column("cyberrange.flow_id")))
        if self.settings["dns"]:
            q = dns_queries(packets) if use_pkts else flows.filter(
                pc.is_valid(flows.column("dns.question.name")))
            if q.num_rows:
                src, sn = codes(q, "source.ip")
                name, nn = codes(q, "dns.question.name")
                reg = registered_domain(pa.array(nn, pa.string()), self.domain_labels) \
                    if nn else pa.array([], pa.string())
                renc = pc.dictionary_encode(reg)
                rcode = renc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
                rn = renc.dictionary.to_pylist()
                dom = rcode[name]
                key = src * (len(rn) + 1) + dom
                t = ts_us(q, "@timestamp" if use_pkts else "event.start")
                size = int_col(q, "network.bytes" if use_pkts else "source.bytes")
                obs, _ = codes(q, "observer.name")
                # drop retries: the same name in the same series within `retry` seconds
                order = np.lexsort((t, name, key, obs))
                ks, ns, ts_, os_ = key[order], name[order], t[order], obs[order]
                retry = np.r_[False, (ks[1:] == ks[:-1]) & (ns[1:] == ns[:-1]) &
                              (os_[1:] == os_[:-1]) & (ts_[1:] - ts_[:-1] <= self.retry_us)]
                keep = np.sort(order[~retry])
                parts.append(("dns", q.take(keep), key[keep], (src[keep], sn, dom[keep], rn),
                              t[keep], size[keep], q.column("cyberrange.flow_id").take(keep)))
        return parts

    def _series(self, part):
        """Series of one part: unique keys, inverse, labels."""
        kind, tab, key, lab = part[:4]
        obs, _ = codes(tab, "observer.name")
        uk, inv = np.unique(key, return_inverse=True)
        first = np.zeros(len(uk), dtype=np.int64)
        first[inv[::-1]] = np.arange(len(inv))[::-1]
        if kind == "ip":
            src, sn, dst, dn, port, tr, tn = lab
            labels = [("ip", sn[src[i]] if src[i] >= 0 else None,
                       dn[dst[i]] if dst[i] >= 0 else None, int(port[i]), tn[tr[i]])
                      for i in first]
        else:
            src, sn, dom, rn = lab
            labels = [("dns", sn[src[i]] if src[i] >= 0 else None, rn[dom[i]], 53, "udp")
                      for i in first]
        return inv.astype(np.int64), obs, labels

    def _score(self, g, obs, t, size, n_series, new_peer=None):
        """Score every (series, observer); return per-series best score and its details.
        ``new_peer``: per series, whether its destination is an address nobody used in the
        baseline (the new-peer test applies to those only)."""
        n_obs = int(obs.max()) + 2 if len(obs) else 1
        so = g * n_obs + (obs + 1)
        uso, sinv = np.unique(so, return_inverse=True)
        G = len(uso)
        order = np.lexsort((t, sinv))
        gs, ts_, ss = sinv[order], t[order], size[order].astype(np.float64)
        counts = np.bincount(gs, minlength=G)
        same = np.r_[False, gs[1:] == gs[:-1]]
        ints = np.diff(ts_, prepend=ts_[:1])[same] / 1e6
        ig = gs[same]
        # a connection right after another (< `burst` x the median interval) belongs to the
        # same check-in (a GET then a POST of results, a retry): leave that interval out
        med0 = group_quantiles(ig, ints, G, (0.5,))[0]
        keep = ints >= self.burst * med0[ig]
        ints, ig = ints[keep], ig[keep]
        skew_i, med_i, madm_i, jit_i = regularity(ig, ints, G)
        _, med_b, _, jit_b = regularity(gs, ss, G)
        # timing: how far the estimated jitter is below the allowance, and Bowley symmetry.
        # The allowance is `jitter` at `full_count` connections and grows with the count, as
        # far as `jitter_max`: Poisson arrivals' estimate tightens with more intervals, so a
        # long series may be far more jittered at the same false-alert rate (see allowance())
        n_int = np.bincount(ig, minlength=G)
        allowed = self.allowance(n_int + 1)
        timing = 0.8 * np.clip(1 - jit_i / allowed, 0, 1) + 0.2 * (1 - np.abs(skew_i))
        timing = np.where(jit_i < allowed, timing, 0.0)
        sizes = np.clip(1 - jit_b / self.size_jitter, 0, 1)
        count = np.minimum(1.0, counts / self.full_count)
        rita = timing * (0.6 + 0.2 * sizes + 0.2 * count)
        # the rhythm test (short series): how likely random arrivals would look this regular,
        # judged on the shortest and longest interval (beacon_stats.log10_p_random)
        spread, lp, rhythm = self._rhythm(ig, ints, sizes, G)
        series = uso // n_obs
        # every kept interval less the burst cut: random (Poisson) intervals kept for being
        # longer than the cut are the cut plus an exponential (memorylessness), so the chance
        # stays exact for them
        spread_all, lp_all, fresh = self._new_peer(
            ig, np.maximum(ints - self.burst * med0[ig], 0.0), sizes, G, series, new_peer)
        raw = np.maximum(np.maximum(rita, rhythm), fresh)
        gate = med_i >= self.min_interval
        score = np.where(gate, np.maximum.reduce([
            np.where(counts >= self.min_conn, rita, 0.0),
            np.where(counts >= self.rhythm_min, rhythm, 0.0),
            np.where(counts >= self.new_peer_min, fresh, 0.0)]), 0.0)
        best = np.full(n_series, -1.0)
        pick = np.full(n_series, -1, dtype=np.int64)
        # best observer per series: highest score, then most connections
        rank = np.lexsort((counts, score, series))
        last = np.r_[series[rank][1:] != series[rank][:-1], True]
        chosen = rank[last]
        best[series[chosen]] = score[chosen]
        pick[series[chosen]] = chosen
        t_first = np.full(G, np.iinfo(np.int64).max)
        np.minimum.at(t_first, gs, ts_)
        t_last = np.zeros(G, dtype=np.int64)
        np.maximum.at(t_last, gs, ts_)
        detail = {"counts": counts, "med_i": med_i, "madm_i": madm_i, "skew_i": skew_i,
                  "med_b": med_b, "jit_i": jit_i, "jit_b": jit_b, "allowed": allowed,
                  "duration": (t_last - t_first) / 1e6, "timing": timing, "sizes": sizes,
                  "count": count, "score": score, "raw": raw, "rita": rita,
                  "spread": spread, "log10_p": lp, "rhythm": rhythm,
                  "spread_all": spread_all, "log10_p_all": lp_all, "new_peer_score": fresh,
                  "new_peer": np.zeros(G, dtype=bool) if new_peer is None
                  else np.asarray(new_peer, dtype=bool)[series]}
        return best, pick, detail, sinv

    def _new_peer(self, ig, ints, sizes, n_groups, series, new_peer):
        """Per group: the spread of ALL its intervals, log10 of the chance that random arrivals
        are that regular, and the new-peer score ``threshold x log10(p) / log10(new_peer_p)``
        (clipped to [0, 1]) -- 0 unless the series goes to an address nobody used in the
        baseline (``new_peer``) and its sizes are consistent. Unlike the rhythm test it reads
        every interval, so a long series with a wide jitter (+-80 % over 10 intervals: a chance
        near 1 in 100) or a short one at a long interval is judged on all it shows."""
        spread, lp = _spread_chance(ig, ints, n_groups)
        if self.new_peer_p <= 0 or new_peer is None:
            return spread, lp, np.zeros(n_groups)
        score = np.clip(self.threshold * lp / np.log10(self.new_peer_p), 0.0, 1.0)
        fresh = np.asarray(new_peer, dtype=bool)[series]
        return spread, lp, np.where(fresh & (sizes > 0), score, 0.0)

    def _rhythm(self, ig, ints, sizes, n_groups):
        """Per group: the spread ``(max - min) / (max + min)`` of its first intervals, log10 of the
        chance that random arrivals are that regular, and the rhythm score
        ``threshold x log10(p) / log10(rhythm_p)`` (clipped to [0, 1]; it reaches the threshold
        exactly when p <= rhythm_p), 0 unless the sizes are consistent (size score > 0)."""
        # the first `min_connections` - 1 connections of each series only: one test per series
        # (more chances would multiply the false alerts), where the RITA score cannot yet judge
        first = np.flatnonzero(np.arange(len(ig)) - np.searchsorted(ig, ig) < self.min_conn - 2)
        spread, lp = _spread_chance(ig[first], ints[first], n_groups)
        if self.rhythm_p <= 0:
            return spread, lp, np.zeros(n_groups)
        rhythm = np.clip(self.threshold * lp / np.log10(self.rhythm_p), 0.0, 1.0)
        return spread, lp, np.where(sizes > 0, rhythm, 0.0)

    def allowance(self, n: np.ndarray) -> np.ndarray:
        """Estimated jitter at which timing scores 0, for series of ``n`` connections.

        ``jitter`` for short series; for long ones 1.4 x the 0.1 % quantile of the estimate for
        Poisson arrivals with ``n`` connections (simulated with the burst rule: ~``1.46 - 3.4 /
        sqrt(n)``, 0.40 at 10, 0.70 at 20, 0.93 at 40), at most ``jitter_max``. The estimate of
        random arrivals tightens as the count grows, so a long series may be more jittered at
        the same false-alert rate: 20 check-ins at +-60 % are as clear as 10 at +-40 %.
        ``jitter_max`` <= ``jitter`` turns the growth off.
        """
        q001 = 1.46 - 3.4 / np.sqrt(np.maximum(np.asarray(n, dtype=np.float64), 1.0))
        return np.clip(1.4 * q001, self.jitter, max(self.jitter, self.jitter_max))

    def _known(self, label) -> bool:
        kind, src, dst, port, proto = label
        if (kind, src, dst, port, proto) in self.known or \
                (kind == "ip" and (dst, port, proto) in self.known_services):
            return True
        if kind == "ip":
            if dst and self.allow_nets:
                try:
                    addr = ipaddress.ip_address(dst)
                except ValueError:
                    return False
                return any(addr in n for n in self.allow_nets)
            return False
        return dst in self.known_domains or \
            any(dst == d or dst.endswith("." + d) for d in self.allow_domains)

    def _known_why(self, label) -> str:
        if label in self.known:
            return "in baseline"
        if label[0] == "ip" and label[2:] in self.known_services:
            return "service of the baseline"
        return "allow"

    def _analyse(self, flows, packets):
        """Yield (part, labels, g, best, pick, detail, sinv) per part."""
        for part in self._events(flows, packets):
            g, obs, labels = self._series(part)
            best, pick, detail, sinv = self._score(g, obs, part[4], part[5], len(labels),
                                                   self._new_peers(labels))
            yield part, labels, g, best, pick, detail, sinv

    def _new_peers(self, labels) -> np.ndarray | None:
        """Per series: whether it goes to an address that no flow of the baseline came from or
        went to (trained, address series only; None when the new-peer test is off)."""
        if not (self.trained and self.new_peer_p > 0 and self.baseline_hosts):
            return None
        return np.array([lab[0] == "ip" and lab[2] is not None
                         and lab[2] not in self.baseline_hosts for lab in labels], dtype=bool)

    # -- API ---------------------------------------------------------------------------------
    def fit(self, flows: pa.Table, packets: pa.Table | None = None) -> None:
        self.known = set()
        self.known_domains = set()
        self.known_services = set()
        # every address that sent or received a flow in the baseline: the network's own peers
        self.baseline_hosts = {a for c in ("source.ip", "destination.ip")
                               for a in pc.unique(flows.column(c)).drop_null().to_pylist()} \
            if flows.num_rows else set()
        for part in self._events(flows, packets):
            g, obs, labels = self._series(part)
            so = g * (int(obs.max()) + 2) + obs + 1
            uso = np.unique(so)
            per_obs = np.bincount(np.searchsorted(uso, so), minlength=len(uso))
            busiest = np.zeros(len(labels), dtype=np.int64)
            np.maximum.at(busiest, uso // (int(obs.max()) + 2), per_obs)
            self.known.update(labels[i] for i in np.flatnonzero(busiest >= self.baseline_min))
            if part[0] == "dns":
                # a domain the whole network resolved during the baseline is its own
                per_dom: dict = {}
                for i in range(len(labels)):
                    per_dom[labels[i][2]] = per_dom.get(labels[i][2], 0) + int(busiest[i])
                self.known_domains.update(d for d, n in per_dom.items()
                                          if n >= self.baseline_min)
            elif self.baseline_peers:
                # a server port that many sources used in the baseline is the network's own
                # service (a COP server every client reports to), whoever reports to it later
                peers: dict = {}
                for lab in labels:
                    peers.setdefault(lab[2:], set()).add(lab[1])
                self.known_services.update(k for k, v in peers.items()
                                           if len(v) >= self.baseline_peers)
        self.trained = True

    def detect(self, flows: pa.Table, packets: pa.Table | None = None) -> list[Alert]:
        alerts = []
        if flows.num_rows == 0 and (packets is None or packets.num_rows == 0):
            return alerts
        for part, labels, g, best, pick, d, sinv in self._analyse(flows, packets):
            for s in np.flatnonzero(best >= self.threshold):
                label = labels[s]
                p = pick[s]
                if d["med_b"][p] > self.max_bytes or self._known(label):
                    continue
                alerts.append(self._alert(part, label, g, s, p, d, sinv))
        return alerts

    def score_flows(self, flows: pa.Table, packets: pa.Table | None = None):
        out = np.zeros(flows.num_rows)
        if flows.num_rows == 0:
            return out
        for part, labels, g, best, pick, d, sinv in self._analyse(flows, packets):
            val = best.copy()
            for s in np.flatnonzero(best > 0):
                if d["med_b"][pick[s]] > self.max_bytes or self._known(labels[s]):
                    val[s] = 0.0
            out = np.maximum(out, scatter_max(flows, part[6], np.maximum(val[g], 0.0)))
        return out

    # -- explanation -------------------------------------------------------------------------
    def _alert(self, part, label, g, s, p, d, sinv) -> Alert:
        kind, src, dst, port, proto = label
        tab, t, size, fidcol = part[1], part[4], part[5], part[6]
        members = np.flatnonzero(g == s)
        members = members[np.argsort(t[members], kind="stable")]
        fids_all = fidcol.take(pa.array(members)).to_pylist()
        flow_ids = list(dict.fromkeys(f for f in fids_all if f))
        # when did the running score first reach the threshold? (the chosen sensor's series)
        mine = members[sinv[members] == p]
        t_cross = self._crossing(t[mine], size[mine], bool(d["new_peer"][p]))
        if kind == "dns":
            servers = sorted(set(pc.unique(tab.column("destination.ip").take(
                pa.array(members))).drop_null().to_pylist()))
            dst_ip = servers[0] if len(servers) == 1 else None
            technique, where = "T1071.004", f"DNS queries under {dst}"
            channel = f"{src} -> {dst} (DNS)"
        else:
            dst_ip = dst
            technique = "T1071.001" if proto == "tcp" else "T1071"
            where = f"{proto}/{port} connections to {dst}"
            channel = f"{src} -> {dst}:{port}/{proto}"
        n = int(d["counts"][p])
        score = float(d["score"][p])
        msg = (f"{src} beacons: {n} {where} every {d['med_i'][p]:.1f} s "
               f"+-{min(d['jit_i'][p], 9.99):.0%} (MADM {d['madm_i'][p]:.1f} s, median "
               f"{d['med_b'][p]:.0f} bytes each) between "
               f"{us_to_dt(t[members].min()):%H:%M:%S} and {us_to_dt(t[members].max()):%H:%M:%S}"
               f" UTC; beacon score {score:.2f} (threshold {self.threshold:g}"
               f"{self._route_text(d, p)})")
        evidence = {"feature": "beacon_score", "value": round(score, 3),
                    "threshold": self.threshold, "channel": channel, "connections": n,
                    "interval_median_s": round(float(d["med_i"][p]), 3),
                    "route": self._route(d, p),
                    **self._measures(d, p), **self._components(d, p),
                    "baseline": "not in baseline" if self.trained else "untrained",
                    "flows": len(flow_ids)}
        return Alert(
            timestamp=us_to_dt(t_cross), start=us_to_dt(int(t[members].min())),
            end=us_to_dt(int(t[members].max())), rule_name=self.name, rule_category=self.family,
            technique=technique, source_ip=src, destination_ip=dst_ip, message=msg,
            score=round(score, 3), evidence=evidence, flow_ids=flow_ids,
            alert_id=stable_id(self.name, channel, flow_ids[0] if flow_ids else ""))

    def _crossing(self, t: np.ndarray, size: np.ndarray, new_peer: bool = False) -> int:
        """Time of the first connection at which the series' running score reached the
        threshold (checked at up to 64 prefixes)."""
        order = np.argsort(t, kind="stable")
        t, size = t[order], size[order]
        n = len(t)
        lo = min(self.min_conn, self.rhythm_min) if self.rhythm_p > 0 else self.min_conn
        if new_peer and self.new_peer_p > 0:
            lo = min(lo, self.new_peer_min)
        ks = np.unique(np.linspace(lo, n, num=min(64, n - lo + 1))
                       .astype(np.int64)) if n >= lo else np.array([n])
        for k in ks:
            g = np.zeros(k, dtype=np.int64)
            best, _, _, _ = self._score(g, np.zeros(k, dtype=np.int64), t[:k], size[:k], 1,
                                        np.array([new_peer]))
            if best[0] >= self.threshold:
                return int(t[k - 1])
        return int(t[-1])

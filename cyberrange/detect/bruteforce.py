"""bruteforce family: password guessing (one service, many attempts) and password spraying
(many services, few attempts each), counted from short login sessions.

A *login attempt* is a TCP flow to a port in ``ports`` that

* completed a handshake (Zeek state SF, S1, S2, S3, RSTO or RSTR, and the originator sent an
  ACK -- this keeps the open ports of a SYN scan, "SYN, SYN-ACK, RST" = RSTO, out),
* carried data from the originator (a PSH segment in ``cyberrange.tcp_flags``): a login sends
  a name and a password, while a banner grab, a service health check or a connect scan reads
  the banner, or nothing, and closes,
* is short (``event.duration < max_duration`` seconds) and
* small (``network.packets <= max_packets``).

The same connection seen by two sensors is counted once (flows are told apart by
``network.community_id`` and start second), so adding a sensor does not halve the threshold.
Attempts are selected with Arrow compute; only they reach Python.

``mode: guess`` (default; ATT&CK T1110.001, Password Guessing)
    Per ``(source.ip, destination.ip, destination.port)``, attempts in a sliding window of
    ``window`` seconds over flow start times. When the count reaches ``threshold`` one alert
    opens and keeps absorbing further attempts while they come no more than ``window`` seconds
    apart.

    Tuning (defaults ``window: 20, threshold: 8``): a workstation that logs in every ``p`` seconds
    makes about ``window / p`` attempts per window. With the defaults a login every 3 s (6-7 per
    window) stays quiet, while password guessing -- dozens of attempts within seconds -- crosses
    the threshold in well under a second of its start. A 60 s window with threshold 8 (the
    textbook setting) would flag a monitoring script or an operator logging in every 5 s, so the
    window was shortened rather than the threshold raised.

``mode: spray`` (ATT&CK T1110.003, Password Spraying)
    Per ``source.ip``, attempts to *all* login services in a sliding window. An alert opens when
    the window holds at least ``threshold`` attempts against at least ``min_targets`` distinct
    services (``destination.ip:port``) and no service tried more than ``max_per_target`` times
    in it -- many doors tried a few times each, the shape a lockout-aware spray leaves (one
    password per round for every account at every service). Guessing, dozens of attempts at one
    service, has the other shape and is left to ``mode: guess``. The accounts are invisible in
    encrypted SSH, so "many accounts on one service" looks like guessing at a slow pace.
"""
from __future__ import annotations

import bisect
import functools
import hashlib
import math
from collections import defaultdict, deque
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc

from ._signals import overlaps, signal, subnet_of
from .base import Alert, Detector, SettingError, columns, find_episodes, us_to_dt

ESTABLISHED_STATES = frozenset({"SF", "S1", "S2", "S3", "RSTO", "RSTR"})


def established(flows: pa.Table) -> pa.ChunkedArray:
    """Boolean mask: TCP flows whose handshake completed and whose originator sent an ACK."""
    state_ok = pc.is_in(flows.column("cyberrange.tcp_state"),
                        value_set=pa.array(sorted(ESTABLISHED_STATES)))
    flags = flows.column("cyberrange.tcp_flags")
    ack = pc.or_kleene(pc.is_null(flags), pc.match_substring(flags, "A"))
    return pc.fill_null(pc.and_kleene(pc.and_kleene(
        pc.equal(flows.column("network.transport"), "tcp"), state_ok), ack), False)


def client_sent_data(flows: pa.Table) -> pa.ChunkedArray:
    """Boolean mask: the originator pushed data (PSH among its flags; unknown flags count)."""
    flags = flows.column("cyberrange.tcp_flags")
    return pc.fill_null(pc.or_kleene(pc.is_null(flags), pc.match_substring(flags, "P")), True)


def login_attempts(flows: pa.Table, ports, max_duration_ns: int, max_packets: int) -> pa.Table:
    """The flows that look like one login attempt each (see the module docstring)."""
    mask = pc.and_kleene(pc.and_kleene(
        pc.is_in(flows.column("destination.port"), value_set=pa.array(sorted(ports), pa.int32())),
        established(flows)), client_sent_data(flows))
    dur = pc.fill_null(flows.column("event.duration"), 0)
    pkts = pc.fill_null(flows.column("network.packets"), 0)
    mask = pc.and_kleene(mask, pc.and_kleene(pc.less(dur, max_duration_ns),
                                             pc.less_equal(pkts, max_packets)))
    return flows.filter(pc.fill_null(mask, False))


def _us(dt) -> int:
    return round(dt.timestamp() * 1_000_000)


def _first_us(flows: pa.Table) -> int:
    """Start of the records (us): the earliest ``event.start``; 0 when there is none."""
    if not flows.num_rows:
        return 0
    lo = pc.min(flows.column("event.start").cast(pa.timestamp("us")).cast(pa.int64())).as_py()
    return lo or 0


def poisson_quantile(mu: float, alpha: float) -> int:
    """The smallest ``n`` with P(N >= n) <= ``alpha`` for N ~ Poisson(``mu``)."""
    n, term, cdf = 0, math.exp(-mu), 0.0
    while 1.0 - (cdf + term) > alpha:
        cdf += term
        n += 1
        term *= mu / n
    return n + 1


@functools.lru_cache(maxsize=4096)
def pace_bound(n: int, conf: float) -> float:
    """The exact (Garwood) upper ``conf`` confidence bound on a Poisson mean given ``n``
    observed events, ``chi2.ppf(conf, 2 (n + 1)) / 2``: the mean under which ``n`` or fewer
    events have probability ``1 - conf`` (also the ``conf`` quantile of the mean's posterior
    under a flat prior); ``n`` itself when ``conf`` is 0 (off). One event bounds the mean at
    2.44 (``conf`` 0.7) or 3.89 (0.9): one login in a warm-up is a thin estimate."""
    if not conf:
        return float(n)
    from scipy.special import gammaincinv  # the Gamma(n + 1) quantile: chi2's, halved
    return float(gammaincinv(n + 1, conf))


def session_key(cid, t_us, fid):
    """One connection recorded by several sensors: same community id and start second."""
    return (cid, round(t_us / 1_000_000)) if cid else fid


class BruteForceDetector(Detector):
    family = "bruteforce"
    technique = "T1110.001"
    SETTINGS: ClassVar[dict[str, Any]] = {
        "mode": "guess",                # guess (T1110.001) | spray (T1110.003)
        "ports": [22, 23, 2222, 3389],  # login services
        "window": 20,                   # seconds
        "threshold": 8,                 # attempts within the window
        "max_duration": 10,             # seconds: a session at least this long is not a guess
        "max_packets": 40,              # a session with more packets is not a guess
        "min_targets": 2,               # spray: distinct services within the window
        "max_per_target": 0,            # spray: most attempts on one service in the window (0: any)
        "max_share": 0.75,              # spray: most of the window's attempts on one service
        "novice_threshold": 0,          # trained: threshold of a source with no baseline login
        "rate_alpha": 0,                # trained: threshold >= the (1 - alpha) quantile of the
                                        # source's baseline pace per window (0: off)
        "pace_history": 0,              # spray, with rate_alpha: seconds of the client's own
                                        # attempts before the window that also set its pace
        "pace_confidence": 0,           # trained, with rate_alpha: a login client's own
                                        # counts (baseline, history) set its pace as their
                                        # upper bound at this confidence (0: the counts)
        "peer_prefix": 0,               # trained, with rate_alpha: a login client's pace is at
                                        # least the mean of the other login clients of its
                                        # /peer_prefix subnet in the baseline (0: off)
        "signal_min": 0,                # signals(): attempts of a weak signal (0: off)
    }
    trainable = True                    # learns the login clients of the baseline

    def configure(self) -> None:
        mode = self.settings["mode"]
        if mode not in ("guess", "spray"):
            raise SettingError(f"setting 'mode' of {self.name!r} must be 'guess' or 'spray', "
                               f"got {mode!r}", setting="mode")
        self.mode = mode
        self.technique = "T1110.001" if mode == "guess" else "T1110.003"
        self.ports = frozenset(self._ports("ports"))
        self.window_us = int(self._number("window", minimum=0.001) * 1_000_000)
        self.threshold = int(self._number("threshold", minimum=2, integer=True))
        self.max_duration_ns = int(self._number("max_duration", minimum=0) * 1_000_000_000)
        self.max_packets = int(self._number("max_packets", minimum=1, integer=True))
        self.min_targets = int(self._number("min_targets", minimum=2, integer=True))
        self.max_per_target = self._number("max_per_target", minimum=0)
        self.max_share = self._number("max_share", minimum=0.01)
        if self.max_share > 1:
            raise SettingError(f"setting 'max_share' of {self.name!r} must be a fraction in "
                               f"(0, 1], got {self.max_share!r}", setting="max_share")
        self.rate_alpha = self._number("rate_alpha", minimum=0)
        self.history_us = int(self._number("pace_history", minimum=0) * 1_000_000)
        self.peer_prefix = int(self._number("peer_prefix", minimum=0, integer=True))
        self.pace_conf = self._number("pace_confidence", minimum=0)
        if self.pace_conf and not 0.5 <= self.pace_conf < 1:
            raise SettingError(f"setting 'pace_confidence' of {self.name!r} must be 0 (off) or "
                               f"a confidence in [0.5, 1), got {self.pace_conf!r}",
                               setting="pace_confidence")
        if self.peer_prefix > 32:
            raise SettingError(f"setting 'peer_prefix' of {self.name!r} must be 0 (off) or an "
                               f"IPv4 prefix length 1..32, got {self.peer_prefix}",
                               setting="peer_prefix")
        if self.rate_alpha >= 0.5:
            raise SettingError(f"setting 'rate_alpha' of {self.name!r} must be 0 (off) or a "
                               f"small probability below 0.5, got {self.rate_alpha!r}",
                               setting="rate_alpha")
        self.novice_threshold = int(self._number("novice_threshold", minimum=0, integer=True))
        if self.novice_threshold == 1 or self.novice_threshold > self.threshold:
            raise SettingError(f"setting 'novice_threshold' of {self.name!r} must be 0 (off) "
                               f"or 2..threshold ({self.threshold}), got "
                               f"{self.novice_threshold}", setting="novice_threshold")
        self.signal_min = int(self._number("signal_min", minimum=0, integer=True))
        self.clients: set[str] = set()          # sources with login attempts in the baseline
        self.counts: dict[str, int] = {}        # source -> login attempts in the baseline
        self.span_us = self.window_us           # how long the baseline lasted (>= one window)
        self.subnets: dict[str, list] = {}      # subnet -> baseline attempts of its clients

    def fit(self, flows: pa.Table, packets: pa.Table | None = None) -> None:
        self.clients, self.counts, self.span_us = set(), {}, self.window_us
        if flows is not None and flows.num_rows:
            starts = pc.min_max(flows.column("event.start").cast(pa.timestamp("us")).cast(
                pa.int64()))
            if starts["min"].is_valid:
                self.span_us = max(self.window_us, starts["max"].as_py() - starts["min"].as_py())
            for src, events in self._attempts(flows, by_source=True).items():
                self.counts[src] = len({e[1] for e in events})
            self.clients = set(self.counts)
        self.subnets = defaultdict(list)
        if self.peer_prefix:
            for src, n in sorted(self.counts.items()):
                self.subnets[subnet_of(src, self.peer_prefix)].append(n)
        self.trained = True

    def peer_mean(self, src) -> float | None:
        """Mean baseline attempts of the *other* login clients of the source's
        ``/peer_prefix`` subnet (None: off, or no such peer)."""
        if not self.peer_prefix or src not in self.counts:
            return None
        net = subnet_of(src, self.peer_prefix)
        if net is None:
            return None
        others = list(self.subnets.get(net, []))
        others.remove(self.counts[src])           # the source's own count is in the list
        return sum(others) / len(others) if others else None

    def expected(self, src) -> float | None:
        """Login attempts the source makes in one window at its baseline pace (``rate_alpha``
        on and trained; else None): its own, or its subnet peers' mean when that is higher
        (``peer_prefix``) -- one or two logins in a warm-up are a thin estimate of a
        workstation's pace, and the workstations of one subnet share a role. With
        ``pace_confidence`` its own count counts as its upper bound (``pace_bound``): the
        pace that one login in a warm-up allows, not the pace of exactly one login."""
        if not self.rate_alpha or not self.trained or src not in self.counts:
            return None
        n = max(pace_bound(self.counts[src], self.pace_conf), self.peer_mean(src) or 0)
        return n * self.window_us / self.span_us

    def threshold_of(self, src) -> int:
        """The source's threshold: ``novice_threshold`` for a source the trained baseline never
        saw make a login attempt; for a login client, ``threshold`` or, with ``rate_alpha``,
        the count its own baseline pace reaches in a window with probability ``rate_alpha``
        at most (Poisson), whichever is higher: a busy workstation's chance bursts of its own
        logins are its day's work."""
        if self.novice_threshold and self.trained and src not in self.clients:
            return self.novice_threshold
        mu = self.expected(src)
        if mu is None:
            return self.threshold
        return max(self.threshold, poisson_quantile(mu, self.rate_alpha))

    def threshold_at(self, src, t: int, times: list, t_first: int) -> tuple[int, float | None]:
        """The spray threshold of ``src`` for a window ending at ``t`` (us), and the pace behind
        it (attempts per window). For a login client with ``pace_history``: also its own pace
        over the ``pace_history`` seconds before the window (``times``: the start times of its
        distinct attempts, sorted; history counts from ``t_first``, the records' first flow,
        and only once it is a window long; its count, too, as its ``pace_bound``) -- a
        workstation busier than its warm-up showed."""
        thr, mu = self.threshold_of(src), self.expected(src)
        if mu is None or not self.history_us:
            return thr, mu
        hi = t - self.window_us
        lo = max(t - self.history_us, t_first)
        if hi - lo >= self.window_us:
            n = bisect.bisect_left(times, hi) - bisect.bisect_left(times, lo)
            mu = max(mu, pace_bound(n, self.pace_conf) * self.window_us / (hi - lo))
            thr = max(thr, poisson_quantile(mu, self.rate_alpha))
        return thr, mu

    def _attempts(self, flows: pa.Table, by_source: bool = False) -> dict:
        if flows.num_rows == 0:
            return {}
        sel = login_attempts(flows, self.ports, self.max_duration_ns, self.max_packets)
        if sel.num_rows == 0:
            return {}
        c = columns(sel, ["event.start", "source.ip", "destination.ip", "destination.port",
                          "network.community_id", "cyberrange.flow_id"])
        groups: dict = defaultdict(list)
        spray = self.mode == "spray" or by_source
        for t, src, dst, port, cid, fid in zip(
                c["event.start"], c["source.ip"], c["destination.ip"], c["destination.port"],
                c["network.community_id"], c["cyberrange.flow_id"]):
            key = session_key(cid, t, fid)
            if spray:
                groups[src].append((t, key, fid, (dst, port)))
            else:
                groups[(src, dst, port)].append((t, key, fid))
        for events in groups.values():
            events.sort(key=lambda e: e[0])
        return groups

    def detect(self, flows: pa.Table, packets: pa.Table | None = None) -> list[Alert]:
        groups = self._attempts(flows)
        alerts = []
        if self.mode == "spray":
            t_first = _first_us(flows)
            for src, events in sorted(groups.items()):
                alerts.extend(self._spray(src, events, t_first=t_first))
            return alerts
        for (src, dst, port), events in groups.items():
            for ep in find_episodes(events, self.window_us, self.threshold_of(src)):
                alerts.append(self._alert(src, dst, port, ep))
        return alerts

    def signals(self, flows: pa.Table, packets: pa.Table | None = None) -> list[Alert]:
        """Sub-threshold guessing or spraying, and a longer session after short ones (see the
        module docstring); nothing an alert of the same source already covers."""
        if not self.signal_min or flows.num_rows == 0:
            return []
        alerts = self.detect(flows)
        groups = self._attempts(flows)
        out = []
        window_s = self.window_us / 1e6
        for group, events in sorted(groups.items()):
            src = group if self.mode == "spray" else group[0]
            thr = self.threshold_of(src)
            weight = 0.5 if self.trained and src in self.clients else 1.0
            if self.signal_min >= thr:
                continue
            if self.mode == "spray":
                eps = [(_us(a.start), _us(a.end), a.evidence["value"], a.flow_ids, None)
                       for a in self._spray(src, events, threshold=self.signal_min)]
            else:
                eps = [(e.start, e.end, e.value, e.flow_ids, f"{group[1]}:{group[2]}")
                       for e in find_episodes(events, self.window_us, self.signal_min)]
            for t0, t1, value, fids, service in eps:
                if overlaps(alerts, src, t0, t1):
                    continue
                what = f"to {service}" if service else "across services"
                out.append(signal(
                    self, t0=t0, t1=t1, source_ip=src,
                    destination_ip=group[1] if service else None,
                    message=(f"{src} made {value} short login attempts {what} within "
                             f"{window_s:g} s (alert threshold {thr}): below the threshold"),
                    score=weight * value / thr, flow_ids=fids, key=service or "spray",
                    evidence={"feature": "short_sessions" if service else
                              "attempts_across_services", "value": value, "threshold": thr,
                              "window_s": window_s, "weight": weight,
                              "baseline": {"trained": self.trained,
                                           "login_client": src in self.clients}}))
        if self.mode == "guess":
            out += self._after_short(flows, groups, alerts)
        return out

    def _after_short(self, flows, groups, alerts) -> list[Alert]:
        """A session to a login port that is not a guess (longer or bigger) right after
        ``signal_min`` or more short ones to the same service: a login that may have worked."""
        mask = pc.and_kleene(pc.is_in(flows.column("destination.port"),
                                      value_set=pa.array(sorted(self.ports), pa.int32())),
                             established(flows))
        long_ = pc.or_kleene(
            pc.greater_equal(pc.fill_null(flows.column("event.duration"), 0),
                             self.max_duration_ns),
            pc.greater(pc.fill_null(flows.column("network.packets"), 0), self.max_packets))
        sel = flows.filter(pc.fill_null(pc.and_kleene(mask, long_), False))
        c = columns(sel, ["event.start", "source.ip", "destination.ip", "destination.port",
                          "cyberrange.flow_id"])
        out, seen = [], set()
        for t, src, dst, port, fid in sorted(zip(*c.values())):
            before = [e for e in groups.get((src, dst, port), [])
                      if t - self.window_us <= e[0] < t]
            n = len({e[1] for e in before})
            if n < self.signal_min or (src, dst, port, before[0][0]) in seen or \
                    overlaps(alerts, src, before[0][0], t):
                continue
            seen.add((src, dst, port, before[0][0]))
            out.append(signal(
                self, t0=before[0][0], t1=t, source_ip=src, destination_ip=dst,
                message=(f"{src} held a longer session with {dst}:{port} right after {n} "
                         f"short login sessions to it: a login that may have worked"),
                score=0.5 * min(1.0, n / self.threshold_of(src)), key=f"after|{port}",
                flow_ids=[e[2] for e in before] + [fid],
                evidence={"feature": "session_after_short_sessions", "value": n,
                          "threshold": self.signal_min, "window_s": self.window_us / 1e6}))
        return out

    def _alert(self, src, dst, port, ep) -> Alert:
        window_s = self.window_us / 1_000_000
        thr = self.threshold_of(src)
        msg = (f"{src} opened {len(ep.keys)} short login sessions to {dst}:{port} between "
               f"{us_to_dt(ep.start):%H:%M:%S} and {us_to_dt(ep.end):%H:%M:%S} UTC; at most "
               f"{ep.value} within {window_s:g} s (threshold {thr}{self._why(src, thr)})")
        evidence = {"feature": "short_sessions", "value": ep.value, "threshold": thr,
                    "window_s": window_s, "sessions": len(ep.keys), "flows": len(ep.flow_ids),
                    "port": port}
        if self.trained and (self.novice_threshold or self.rate_alpha):
            evidence["baseline"] = self._baseline_evidence(src)
        return Alert(
            timestamp=us_to_dt(ep.crossed_at), start=us_to_dt(ep.start), end=us_to_dt(ep.end),
            rule_name=self.name, rule_category=self.family, technique=self.technique,
            source_ip=src, destination_ip=dst, message=msg,
            score=round(min(1.0, ep.value / (2.0 * thr)), 3),
            evidence=evidence, flow_ids=list(ep.flow_ids))

    def _spray(self, src, events, threshold: int | None = None, t_first: int = 0
               ) -> list[Alert]:
        """Sliding window over one source's attempts: count sessions and distinct services.
        ``threshold``: a fixed one (signals), else the source's (``threshold_at``)."""
        first: dict = {}
        for e in events:
            first.setdefault(e[1], e[0])
        times = sorted(first.values())
        alerts = []
        win: deque = deque()
        sessions: dict = defaultdict(int)          # session key -> events in window
        targets: dict = defaultdict(set)           # service -> session keys in window
        ep = None
        for t, key, fid, target in events:
            while win and win[0][0] <= t - self.window_us:
                _, k, _, tg = win.popleft()
                sessions[k] -= 1
                if not sessions[k]:
                    del sessions[k]
                    targets[tg].discard(k)
                    if not targets[tg]:
                        del targets[tg]
            if ep is not None and t - ep["end"] > self.window_us:
                alerts.append(self._spray_alert(src, ep))
                ep = None
            win.append((t, key, fid, target))
            sessions[key] += 1
            targets[target].add(key)
            n, k = len(sessions), len(targets)
            thr, pace = (threshold, None) if threshold else \
                self.threshold_at(src, t, times, t_first)
            if ep is not None:
                ep["end"] = t
                ep["fids"].append(fid)
                ep["sessions"].add(key)
                ep["targets"].setdefault(target, set()).add(key)
                ep["value"] = max(ep["value"], n)
                ep["peak_targets"] = max(ep["peak_targets"], k)
            elif n >= thr and k >= self.min_targets and \
                    self._spread(max(len(v) for v in targets.values()), n):
                ep = {"crossed": t, "start": win[0][0], "end": t, "value": n, "peak_targets": k,
                      "threshold": thr, "pace": pace,
                      "fids": [e[2] for e in win], "sessions": {e[1] for e in win},
                      "targets": {}}
                for e in win:
                    ep["targets"].setdefault(e[3], set()).add(e[1])
        if ep is not None:
            alerts.append(self._spray_alert(src, ep))
        return alerts

    def _why(self, src, thr: int, pace: float | None = None) -> str:
        """Why the source's threshold is not ``threshold`` (for alert messages)."""
        if thr == self.threshold:
            return ""
        if src not in self.clients:
            return "; a source with no login in the baseline"
        pace = self.expected(src) if pace is None else pace
        peers = self.peer_mean(src)
        pooled = peers is not None and peers > pace_bound(self.counts[src], self.pace_conf) \
            and math.isclose(pace, peers * self.window_us / self.span_us)
        whose = "subnet peers'" if pooled else "own"
        bound = f" (its {self.pace_conf:.0%} upper bound)" if self.pace_conf and not pooled \
            else ""
        return f"; a login client whose {whose} pace is {pace:.2g} attempts per window{bound}"

    def _baseline_evidence(self, src) -> dict:
        mu = self.expected(src)
        return {"login_client": src in self.clients, "login_clients": len(self.clients),
                "baseline_attempts": self.counts.get(src, 0),
                "peer_mean_attempts": self.peer_mean(src),
                "baseline_s": round(self.span_us / 1e6, 1),
                "expected_per_window": None if mu is None else round(mu, 2),
                "rate_alpha": self.rate_alpha or None, "pace_confidence": self.pace_conf or None,
                "threshold": self.threshold}

    def _spread(self, busiest: int, n: int) -> bool:
        """Many doors, not one: the busiest service holds at most ``max_share`` of the window's
        attempts (and at most ``max_per_target`` of them, when set). Guessing one service while
        the source's routine logins go elsewhere has nearly all of them on one service."""
        if self.max_per_target and busiest > self.max_per_target:
            return False
        return busiest <= self.max_share * n + 1e-9

    def _spray_alert(self, src, ep) -> Alert:
        window_s = self.window_us / 1_000_000
        thr = ep["threshold"]
        per = {f"{d}:{p}": len(k) for (d, p), k in sorted(ep["targets"].items())}
        hosts = sorted({d for d, _ in ep["targets"]})
        msg = (f"{src} made {len(ep['sessions'])} short login attempts against "
               f"{len(per)} services on {len(hosts)} hosts between "
               f"{us_to_dt(ep['start']):%H:%M:%S} and {us_to_dt(ep['end']):%H:%M:%S} UTC, "
               f"at most {max(per.values())} per service; up to {ep['value']} within "
               f"{window_s:g} s (threshold {thr} across >= {self.min_targets} "
               f"services{self._why(src, thr, ep.get('pace'))}): password spraying")
        evidence = {"feature": "attempts_across_services", "value": ep["value"],
                    "threshold": thr, "min_targets": self.min_targets,
                    "max_per_target": self.max_per_target or None,
                    "max_share": self.max_share, "window_s": window_s,
                    "services": len(per), "peak_services": ep["peak_targets"],
                    "attempts_per_service": per, "sessions": len(ep["sessions"]),
                    "flows": len(ep["fids"])}
        if self.trained and (self.novice_threshold or self.rate_alpha):
            evidence["baseline"] = self._baseline_evidence(src)
            if ep.get("pace") is not None:
                evidence["baseline"]["pace_per_window"] = round(ep["pace"], 2)
                evidence["baseline"]["pace_history_s"] = self.history_us / 1e6 or None
        text = f"{self.name}|{src}|{ep['fids'][0]}"
        return Alert(
            timestamp=us_to_dt(ep["crossed"]), start=us_to_dt(ep["start"]),
            end=us_to_dt(ep["end"]), rule_name=self.name, rule_category=self.family,
            technique="T1110.003", source_ip=src,
            destination_ip=hosts[0] if len(hosts) == 1 else None, message=msg,
            score=round(min(1.0, ep["value"] / (2.0 * thr)), 3),
            evidence=evidence, flow_ids=list(ep["fids"]),
            alert_id=hashlib.sha1(text.encode()).hexdigest())

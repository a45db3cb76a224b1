"""lateral family: remote-service sessions on new edges of the host graph, when the source has
given itself away (ATT&CK T1021 Remote Services; T1021.004 for SSH).

An *edge* is ``source.ip -> destination.ip:port`` for a port in ``ports`` (SSH, telnet, RDP,
WinRM, SMB). A *session* on it is a TCP flow that completed a handshake (as in ``bruteforce``)
and carried data both ways: at least ``min_bytes`` from each side (a connect-scan or a banner
grab of an open port does not). The edge is *known* when the baseline graph learned in ``fit``
holds it, or the source is in ``admin_sources`` (jump hosts, the admins' workstations).

A new edge alone is weak evidence: workstations and operators log in to servers all day, and a
baseline window of a minute cannot hold every pair. So with ``require: corroborated`` (default)
a session on a new edge raises an alert only when the source did something else first, within
``lookback`` seconds before the session:

* **probes**: ``min_probes`` or more probe-like flows to remote-service ports (a scan for SSH/RDP:
  the SYN-only, refused or connect-and-reset flows of ``portscan``);
* **failures**: ``min_failures`` or more short sessions to the same host within
  ``failure_window`` seconds (a burst of failed logins: guessing or spraying before the login
  that worked; an operator's occasional logins do not come in bursts). With ``rate_alpha``
  (trained), a source that made short sessions in the baseline needs at least as many as its
  own baseline pace reaches in ``failure_window`` with probability ``rate_alpha`` at most
  (Poisson): a busy workstation logs in to one server several times in a few seconds now and
  then, and each of those logins is a short session too;
* **pivot** (``pivot: true``): the source itself received a session on a new edge from
  another host within ``pivot_window`` seconds before (it was just logged in to, and now logs
  in onward: a chain), **and the onward edge had no session before that entry** (the source
  contacts the host only after being entered). The second condition is what made the check
  shippable (issue 15): failed guesses are sessions too, so a sprayed workstation doing its
  owner's routine SSH login afterwards looked like a chain -- but its owner had used that edge
  before the spray (the tuning split's coalition drill). The alert lists the entering sessions
  with its own: the chain is the finding.

After an alert into a host, ``after_entry_probes`` or more distinct services probed *from* that
host within ``lookback`` seconds raise a second alert (ATT&CK T1046, with ``source.ip`` the
entered host): the intruder looking around from its new foothold, however slowly.

``require: new-edge`` alerts on every session of a new edge (use with a long baseline or a
complete ``admin_sources`` list).

Sessions of one edge that follow each other within ``window`` seconds are one alert; the alert
keeps the contributing flows (the corroborating probes and failures are named in the evidence,
not listed as flows of the alert).
"""
from __future__ import annotations

import bisect
import hashlib
import ipaddress
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc

from .base import Alert, Detector, SettingError, columns, us_to_dt
from .bruteforce import established, poisson_quantile, session_key
from .portscan import PortScanDetector

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_US = timedelta(microseconds=1)


REMOTE_PORTS = [22, 23, 445, 2222, 3389, 5985, 5986]
TECHNIQUES = {22: "T1021.004", 2222: "T1021.004", 3389: "T1021.001", 445: "T1021.002",
              5985: "T1021.006", 5986: "T1021.006", 5900: "T1021.005"}
REQUIRE = ("corroborated", "new-edge")


class LateralDetector(Detector):
    family = "lateral"
    technique = "T1021"
    trainable = True
    SETTINGS: ClassVar[dict[str, Any]] = {
        "ports": REMOTE_PORTS,        # remote-service ports whose sessions are edges
        "min_bytes": 400,             # bytes from each side for a flow to be a session
        "admin_sources": [],          # IP/CIDR allowed to reach any remote service
        "require": "corroborated",    # corroborated | new-edge
        "lookback": 600,              # seconds before a session searched for corroboration
        "min_probes": 3,              # probe-like flows to remote-service ports
        "min_failures": 4,            # short sessions to the same host ...
        "failure_window": 8,          # ... within this many seconds (a burst of failed logins)
        "max_failure_duration": 10,   # seconds: a shorter, smaller session may be a failure
        "max_failure_packets": 40,
        "pivot": False,               # also corroborate by "was just entered on a new edge"
        "pivot_window": 0,            # seconds after the entry an onward login counts (0: lookback)
        "window": 300,                # seconds: sessions of an edge closer than this = one alert
        "after_entry_probes": 3,      # probed services from a host just entered (0: off)
        "rate_alpha": 0,              # trained: min_failures >= the (1 - alpha) quantile of the
                                      # source's baseline pace of short sessions (0: off)
    }

    def configure(self) -> None:
        self.ports = frozenset(self._ports("ports"))
        self.min_bytes = int(self._number("min_bytes", minimum=0, integer=True))
        nets = self.settings["admin_sources"]
        try:
            if not isinstance(nets, list):
                raise TypeError(nets)
            self.admin_nets = [ipaddress.ip_network(str(n), strict=False) for n in nets]
        except (TypeError, ValueError):
            raise SettingError(f"setting 'admin_sources' of {self.name!r} must be a list of IP "
                               f"addresses or CIDRs, got {nets!r}",
                               setting="admin_sources") from None
        if self.settings["require"] not in REQUIRE:
            raise SettingError(f"setting 'require' of {self.name!r} must be one of "
                               f"{', '.join(REQUIRE)}, got {self.settings['require']!r}",
                               setting="require")
        self.require = self.settings["require"]
        self.lookback_us = int(self._number("lookback", minimum=0) * 1_000_000)
        self.min_probes = int(self._number("min_probes", minimum=1, integer=True))
        self.min_failures = int(self._number("min_failures", minimum=1, integer=True))
        self.failure_window_us = int(self._number("failure_window", minimum=0.001) * 1_000_000)
        self.max_fail_ns = int(self._number("max_failure_duration", minimum=0) * 1_000_000_000)
        self.max_fail_packets = int(self._number("max_failure_packets", minimum=1, integer=True))
        self.window_us = int(self._number("window", minimum=0.001) * 1_000_000)
        if not isinstance(self.settings["pivot"], bool):
            raise SettingError(f"setting 'pivot' of {self.name!r} must be true or false, got "
                               f"{self.settings['pivot']!r}", setting="pivot")
        self.pivot = self.settings["pivot"]
        self.pivot_us = int(self._number("pivot_window", minimum=0) * 1_000_000) or \
            self.lookback_us
        self.after_probes = int(self._number("after_entry_probes", minimum=0, integer=True))
        self.rate_alpha = self._number("rate_alpha", minimum=0)
        if self.rate_alpha >= 0.5:
            raise SettingError(f"setting 'rate_alpha' of {self.name!r} must be 0 (off) or a "
                               f"small probability below 0.5, got {self.rate_alpha!r}",
                               setting="rate_alpha")
        self.short_counts: dict[str, int] = {}      # source -> short sessions in the baseline
        self.span_us = self.failure_window_us       # how long the baseline lasted
        self.edges: set[tuple] = set()
        self._by_source: dict[str, list] = {}       # source -> "dst:port" of its known edges
        self._probe = PortScanDetector(f"{self.name}/probes", mode="ports", transports=["tcp"])

    def _admin(self, ip) -> bool:
        if not self.admin_nets:
            return False
        try:
            addr = ipaddress.ip_address(ip)
        except (ValueError, TypeError):
            return False
        return any(addr in n for n in self.admin_nets)

    def _remote(self, flows: pa.Table) -> pa.Table:
        return flows.filter(pc.fill_null(pc.and_kleene(
            pc.equal(flows.column("network.transport"), "tcp"),
            pc.is_in(flows.column("destination.port"),
                     value_set=pa.array(sorted(self.ports), pa.int32()))), False))

    def _sessions_mask(self, flows: pa.Table):
        return pc.fill_null(pc.and_kleene(established(flows), pc.and_kleene(
            pc.greater_equal(pc.fill_null(flows.column("source.bytes"), 0), self.min_bytes),
            pc.greater_equal(pc.fill_null(flows.column("destination.bytes"), 0),
                             self.min_bytes))), False)

    def _short(self, sessions: pa.Table) -> pa.Table:
        """The sessions short and small enough to be a failed login."""
        return sessions.filter(pc.and_kleene(
            pc.less(pc.fill_null(sessions.column("event.duration"), 0), self.max_fail_ns),
            pc.less_equal(pc.fill_null(sessions.column("network.packets"), 0),
                          self.max_fail_packets)))

    def fit(self, flows: pa.Table, packets: pa.Table | None = None) -> None:
        self.edges, self.short_counts, self.span_us = set(), {}, self.failure_window_us
        if flows is not None and flows.num_rows:
            rem = self._remote(flows)
            ses = rem.filter(self._sessions_mask(rem))
            c = columns(ses, ["source.ip", "destination.ip", "destination.port"])
            self.edges = set(zip(c["source.ip"], c["destination.ip"], c["destination.port"]))
            starts = pc.min_max(flows.column("event.start").cast(pa.timestamp("us")).cast(
                pa.int64()))
            if starts["min"].is_valid:
                self.span_us = max(self.failure_window_us,
                                   starts["max"].as_py() - starts["min"].as_py())
            fc = columns(self._short(ses), ["event.start", "source.ip", "network.community_id",
                                            "cyberrange.flow_id"])
            keys: dict[str, set] = defaultdict(set)
            for t, src, cid, fid in zip(*fc.values()):
                keys[src].add(session_key(cid, t, fid))
            self.short_counts = {src: len(k) for src, k in keys.items()}
        self._by_source = defaultdict(list)
        for src, dst, port in sorted(self.edges):
            self._by_source[src].append(f"{dst}:{port}")
        self.trained = True

    def min_failures_of(self, src) -> int:
        """``min_failures``, or with ``rate_alpha`` (trained) the count of short sessions the
        source's own baseline pace reaches in ``failure_window`` with probability ``rate_alpha``
        at most, whichever is higher."""
        if not self.rate_alpha or not self.trained or src not in self.short_counts:
            return self.min_failures
        mu = self.short_counts[src] * self.failure_window_us / self.span_us
        return max(self.min_failures, poisson_quantile(mu, self.rate_alpha))

    def _edge_keys(self, t: pa.Table):
        return pc.binary_join_element_wise(
            t.column("source.ip"), t.column("destination.ip"),
            pc.cast(t.column("destination.port"), pa.string()), "|")

    def detect(self, flows: pa.Table, packets: pa.Table | None = None) -> list[Alert]:
        if flows.num_rows == 0:
            return []
        rem = self._remote(flows)
        if rem.num_rows == 0:
            return []
        sessions = rem.filter(self._sessions_mask(rem))
        # new edges only, with Arrow compute: not in the baseline graph, not from an admin source
        known = pa.array(sorted(f"{s}|{d}|{p}" for s, d, p in self.edges), pa.string())
        new = sessions.filter(pc.invert(pc.is_in(self._edge_keys(sessions), value_set=known)))
        if self.admin_nets and new.num_rows:
            admins = [ip for ip in pc.unique(new.column("source.ip")).to_pylist()
                      if self._admin(ip)]
            new = new.filter(pc.invert(pc.is_in(new.column("source.ip"),
                                                value_set=pa.array(admins, pa.string()))))
        if new.num_rows == 0:
            return []
        nc = columns(new, ["event.start", "source.ip", "destination.ip", "destination.port",
                           "network.community_id", "cyberrange.flow_id"])
        new_sessions: dict[tuple, list] = defaultdict(list)
        # one connection seen by several sensors is several flow records: every record's id
        # goes into the alert, but it counts once (session_key) as a session
        keys: dict = {}
        for t, src, dst, port, cid, fid in zip(nc["event.start"], nc["source.ip"],
                                               nc["destination.ip"], nc["destination.port"],
                                               nc["network.community_id"],
                                               nc["cyberrange.flow_id"]):
            new_sessions[(src, dst, port)].append((t, fid))
            keys[fid] = session_key(cid, t, fid)
        for v in new_sessions.values():
            v.sort()
        sources = pa.array(sorted({k[0] for k in new_sessions}), pa.string())

        # corroboration, for those sources only: probe times and burst-of-short-session times
        probes: dict[str, list] = defaultdict(list)
        failures: dict[tuple, list] = defaultdict(list)
        if self.require != "new-edge":
            mine = rem.filter(pc.is_in(rem.column("source.ip"), value_set=sources))
            pr = columns(mine.filter(self._probe.probe_mask(mine)),
                         ["event.start", "source.ip", "destination.ip", "destination.port",
                          "network.community_id", "cyberrange.flow_id"])
            seen_probe = set()
            for t, src, dst, port, cid, fid in zip(pr["event.start"], pr["source.ip"],
                                                   pr["destination.ip"], pr["destination.port"],
                                                   pr["network.community_id"],
                                                   pr["cyberrange.flow_id"]):
                key = session_key(cid, t, fid)        # a probe seen by 3 sensors is 1 probe
                if key not in seen_probe:
                    seen_probe.add(key)
                    probes[src].append((t, f"{dst}:{port}"))
            short = self._short(sessions.filter(
                pc.is_in(sessions.column("source.ip"), value_set=sources)))
            fc = columns(short, ["event.start", "source.ip", "destination.ip",
                                 "network.community_id", "cyberrange.flow_id"])
            seen = set()
            for t, src, dst, cid, fid in zip(fc["event.start"], fc["source.ip"],
                                             fc["destination.ip"], fc["network.community_id"],
                                             fc["cyberrange.flow_id"]):
                key = session_key(cid, t, fid)
                if key not in seen:
                    seen.add(key)
                    failures[(src, dst)].append(t)
            for v in probes.values():
                v.sort()
            for v in failures.values():
                v.sort()
        probe_times = {k: [e[0] for e in v] for k, v in probes.items()}
        # who was logged in to on a new edge, and when (for the pivot rule)
        entered: dict[str, list] = defaultdict(list)
        if self.pivot:
            for (src, dst, port), evs in new_sessions.items():
                entered[dst].extend((t, src, fid) for t, fid in evs)
            for v in entered.values():
                v.sort()
        alerts = []
        for (src, dst, port), evs in sorted(new_sessions.items()):
            episode: list = []
            for ev in evs + [None]:
                if episode and (ev is None or ev[0] - episode[-1][0] > self.window_us):
                    alert = self._episode(src, dst, port, episode, probes, probe_times,
                                          failures, entered, evs[0][0], keys)
                    if alert is not None:
                        alerts.append(alert)
                    episode = []
                if ev is not None:
                    episode.append(ev)
        if self.after_probes and alerts:
            alerts.extend(self._after_entry(flows, alerts))
        return alerts

    def _after_entry(self, flows: pa.Table, entries: list[Alert]) -> list[Alert]:
        """Probes from a host right after an alerted session into it: the intruder looking
        around from its new foothold (ATT&CK T1046 from the entered host)."""
        entered = pa.array(sorted({a.destination_ip for a in entries}), pa.string())
        mine = flows.filter(pc.fill_null(pc.and_kleene(
            pc.equal(flows.column("network.transport"), "tcp"),
            pc.is_in(flows.column("source.ip"), value_set=entered)), False))
        if mine.num_rows == 0:
            return []
        pr = columns(mine.filter(self._probe.probe_mask(mine)),
                     ["event.start", "source.ip", "destination.ip", "destination.port",
                      "cyberrange.flow_id"])
        by_src: dict[str, list] = defaultdict(list)
        for t, src, dst, port, fid in zip(pr["event.start"], pr["source.ip"],
                                          pr["destination.ip"], pr["destination.port"],
                                          pr["cyberrange.flow_id"]):
            by_src[src].append((t, f"{dst}:{port}", fid))
        out = []
        first_entry: dict[str, Alert] = {}
        for a in sorted(entries, key=lambda a: a.timestamp):
            first_entry.setdefault(a.destination_ip, a)
        for host, entry in sorted(first_entry.items()):
            t_in = (entry.timestamp - _EPOCH) // _US
            probes = sorted(e for e in by_src.get(host, [])
                            if t_in <= e[0] <= t_in + self.lookback_us)
            services = sorted({e[1] for e in probes})
            if len(services) < self.after_probes:
                continue
            crossed = next(e[0] for e in probes if len({x[1] for x in probes
                                                        if x[0] <= e[0]}) >= self.after_probes)
            t0, t1 = probes[0][0], probes[-1][0]
            msg = (f"{host}, entered from {entry.source_ip} at {entry.timestamp:%H:%M:%S} UTC, "
                   f"then probed {len(services)} services ({', '.join(services[:4])}"
                   f"{', ...' if len(services) > 4 else ''}) between {us_to_dt(t0):%H:%M:%S} "
                   f"and {us_to_dt(t1):%H:%M:%S} UTC: discovery from a new foothold")
            evidence = {"feature": "probes_after_entry", "value": len(services),
                        "threshold": self.after_probes, "entered_from": entry.source_ip,
                        "entry_alert": entry.alert_id, "lookback_s": self.lookback_us / 1e6,
                        "services": services[:20], "flows": len(probes)}
            text = f"{self.name}|after|{host}|{t0}"
            out.append(Alert(
                timestamp=us_to_dt(crossed), start=us_to_dt(t0), end=us_to_dt(t1),
                rule_name=self.name, rule_category=self.family, technique="T1046",
                source_ip=host, destination_ip=None, message=msg,
                score=round(min(1.0, len(services) / (2.0 * self.after_probes)), 3),
                evidence=evidence, flow_ids=[e[2] for e in probes],
                alert_id=hashlib.sha1(text.encode()).hexdigest()))
        return out

    def _pivot(self, src, dst, t: int, first_t: int, entered) -> tuple[list, list]:
        """Hosts that entered ``src`` on a new edge within ``pivot_window`` before ``t`` (not
        ``dst`` itself), when the edge ``src -> dst`` had no session before the entry
        (``first_t``: its first session in the records); and the flows of those entries."""
        ent = entered.get(src, [])
        a = bisect.bisect_left(ent, (t - self.pivot_us, "", ""))
        b = bisect.bisect_right(ent, (t, "\uffff", "\uffff"))
        hits = [(te, s_, fid) for te, s_, fid in ent[a:b] if s_ != dst and te <= first_t]
        return sorted({s_ for _, s_, _ in hits}), [fid for _, _, fid in hits]

    def _episode(self, src, dst, port, episode, probes, probe_times, failures, entered,
                 first_t: int, keys: dict) -> Alert | None:
        """The first session of the episode that is corroborated raises the alert."""
        reasons: dict = {}
        crossed = None
        entry_fids: list = []
        pt = probe_times.get(src, [])
        ft = failures.get((src, dst), [])
        fw = min(self.failure_window_us, self.lookback_us)
        min_failures = self.min_failures_of(src)
        for t, _ in episode:
            if self.require == "new-edge":
                crossed = t
                break
            hi = bisect.bisect_right(pt, t)
            lo = bisect.bisect_left(pt, t - self.lookback_us)
            n_fail = bisect.bisect_right(ft, t) - bisect.bisect_right(ft, t - fw)
            piv: list = []
            if self.pivot:
                piv, entry_fids = self._pivot(src, dst, t, first_t, entered)
            if hi - lo >= self.min_probes:
                reasons["probes"] = hi - lo
                reasons["probed_services"] = len({e[1] for e in probes[src][lo:hi]})
            if n_fail >= min_failures:
                reasons["short_sessions"] = n_fail
            if piv:
                reasons["entered_from"] = piv
            if reasons:
                crossed = t
                break
        if crossed is None:
            return None
        technique = TECHNIQUES.get(port, "T1021")
        t0, t1 = episode[0][0], episode[-1][0]
        d0, d1 = us_to_dt(t0), us_to_dt(t1)
        why = []
        if "probes" in reasons:
            why.append(f"{reasons['probes']} probes of remote services")
        if "short_sessions" in reasons:
            why.append(f"{reasons['short_sessions']} short login sessions to it within "
                       f"{self.failure_window_us / 1e6:g} s")
        if "entered_from" in reasons:
            why.append(f"was itself entered from {', '.join(reasons['entered_from'])} within "
                       f"{self.pivot_us / 1e6:g} s before, and never contacted {dst} before that")
        lookback_s = self.lookback_us / 1e6
        n_sessions = len({keys.get(fid, fid) for _, fid in episode})
        msg = (f"{src} opened {n_sessions} remote-service sessions to {dst}:{port}, an edge "
               f"not in the baseline graph, between {d0:%H:%M:%S} and {d1:%H:%M:%S} UTC"
               + (f"; within {lookback_s:g} s before: {'; '.join(why)}" if why else ""))
        evidence = {"feature": "new_remote_service_edge", "value": f"{src}->{dst}:{port}",
                    "baseline": {"edges": len(self.edges),
                                 "edges_from_source": self._by_source.get(src, [])[:10],
                                 "short_sessions": self.short_counts.get(src, 0),
                                 "trained": self.trained},
                    "threshold": {"require": self.require, "min_probes": self.min_probes,
                                  "min_failures": min_failures, "lookback_s": lookback_s,
                                  "pivot_window_s": self.pivot_us / 1e6 if self.pivot else None},
                    "corroboration": reasons, "sessions": n_sessions,
                    "flow_records": len(episode)}
        score = min(1.0, 0.5 + 0.15 * len(reasons))
        if entry_fids:
            reasons["entry_sessions"] = len(set(entry_fids))
        text = f"{self.name}|{src}|{dst}|{port}|{t0}"
        return Alert(
            timestamp=us_to_dt(crossed), start=d0, end=d1,
            rule_name=self.name, rule_category=self.family, technique=technique,
            source_ip=src, destination_ip=dst, message=msg, score=round(score, 3),
            evidence=evidence,
            flow_ids=[fid for _, fid in episode] + list(dict.fromkeys(entry_fids)),
            alert_id=hashlib.sha1(text.encode()).hexdigest())

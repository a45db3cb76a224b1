"""bruteforce family: password guessing (one service, many attempts) and password spraying
(many services, few attempts each), counted from short login sessions.

A *login attempt* is a TCP flow to a port in ``ports`` that

* completed a handshake (Zeek state SF, S1, S2, S3, RSTO or RSTR, and the originator sent an
  ACK -- this keeps the open ports of a SYN scan, "SYN, SYN-ACK, RST" = RSTO, out),
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

import hashlib
from collections import defaultdict, deque

import pyarrow as pa
import pyarrow.compute as pc

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


def login_attempts(flows: pa.Table, ports, max_duration_ns: int, max_packets: int) -> pa.Table:
    """The flows that look like one login attempt each (see the module docstring)."""
    mask = pc.and_kleene(
        pc.is_in(flows.column("destination.port"), value_set=pa.array(sorted(ports), pa.int32())),
        established(flows))
    dur = pc.fill_null(flows.column("event.duration"), 0)
    pkts = pc.fill_null(flows.column("network.packets"), 0)
    mask = pc.and_kleene(mask, pc.and_kleene(pc.less(dur, max_duration_ns),
                                             pc.less_equal(pkts, max_packets)))
    return flows.filter(pc.fill_null(mask, False))


def session_key(cid, t_us, fid):
    """One connection recorded by several sensors: same community id and start second."""
    return (cid, round(t_us / 1_000_000)) if cid else fid


class BruteForceDetector(Detector):
    family = "bruteforce"
    technique = "T1110.001"
    SETTINGS = {
        "mode": "guess",                # guess (T1110.001) | spray (T1110.003)
        "ports": [22, 23, 2222, 3389],  # login services
        "window": 20,                   # seconds
        "threshold": 8,                 # attempts within the window
        "max_duration": 10,             # seconds: a session at least this long is not a guess
        "max_packets": 40,              # a session with more packets is not a guess
        "min_targets": 2,               # spray: distinct services within the window
        "max_per_target": 5,            # spray: most attempts on one service within the window
    }

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
        self.max_per_target = self._number("max_per_target", minimum=1)

    def _attempts(self, flows: pa.Table) -> dict[str, list]:
        if flows.num_rows == 0:
            return {}
        sel = login_attempts(flows, self.ports, self.max_duration_ns, self.max_packets)
        if sel.num_rows == 0:
            return {}
        c = columns(sel, ["event.start", "source.ip", "destination.ip", "destination.port",
                          "network.community_id", "cyberrange.flow_id"])
        groups: dict = defaultdict(list)
        spray = self.mode == "spray"
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
            for src, events in sorted(groups.items()):
                alerts.extend(self._spray(src, events))
            return alerts
        for (src, dst, port), events in groups.items():
            for ep in find_episodes(events, self.window_us, self.threshold):
                alerts.append(self._alert(src, dst, port, ep))
        return alerts

    def _alert(self, src, dst, port, ep) -> Alert:
        window_s = self.window_us / 1_000_000
        msg = (f"{src} opened {len(ep.keys)} short login sessions to {dst}:{port} between "
               f"{us_to_dt(ep.start):%H:%M:%S} and {us_to_dt(ep.end):%H:%M:%S} UTC; at most "
               f"{ep.value} within {window_s:g} s (threshold {self.threshold})")
        evidence = {"feature": "short_sessions", "value": ep.value, "threshold": self.threshold,
                    "window_s": window_s, "sessions": len(ep.keys), "flows": len(ep.flow_ids),
                    "port": port}
        return Alert(
            timestamp=us_to_dt(ep.crossed_at), start=us_to_dt(ep.start), end=us_to_dt(ep.end),
            rule_name=self.name, rule_category=self.family, technique=self.technique,
            source_ip=src, destination_ip=dst, message=msg,
            score=round(min(1.0, ep.value / (2.0 * self.threshold)), 3),
            evidence=evidence, flow_ids=list(ep.flow_ids))

    def _spray(self, src, events) -> list[Alert]:
        """Sliding window over one source's attempts: count sessions and distinct services."""
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
            if ep is not None:
                ep["end"] = t
                ep["fids"].append(fid)
                ep["sessions"].add(key)
                ep["targets"].setdefault(target, set()).add(key)
                ep["value"] = max(ep["value"], n)
                ep["peak_targets"] = max(ep["peak_targets"], k)
            elif n >= self.threshold and k >= self.min_targets and \
                    max(len(v) for v in targets.values()) <= self.max_per_target:
                ep = {"crossed": t, "start": win[0][0], "end": t, "value": n, "peak_targets": k,
                      "fids": [e[2] for e in win], "sessions": {e[1] for e in win},
                      "targets": {}}
                for e in win:
                    ep["targets"].setdefault(e[3], set()).add(e[1])
        if ep is not None:
            alerts.append(self._spray_alert(src, ep))
        return alerts

    def _spray_alert(self, src, ep) -> Alert:
        window_s = self.window_us / 1_000_000
        per = {f"{d}:{p}": len(k) for (d, p), k in sorted(ep["targets"].items())}
        hosts = sorted({d for d, _ in ep["targets"]})
        msg = (f"{src} made {len(ep['sessions'])} short login attempts against "
               f"{len(per)} services on {len(hosts)} hosts between "
               f"{us_to_dt(ep['start']):%H:%M:%S} and {us_to_dt(ep['end']):%H:%M:%S} UTC, "
               f"at most {max(per.values())} per service; up to {ep['value']} within "
               f"{window_s:g} s (threshold {self.threshold} across >= {self.min_targets} "
               f"services): password spraying")
        evidence = {"feature": "attempts_across_services", "value": ep["value"],
                    "threshold": self.threshold, "min_targets": self.min_targets,
                    "max_per_target": self.max_per_target, "window_s": window_s,
                    "services": len(per), "peak_services": ep["peak_targets"],
                    "attempts_per_service": per, "sessions": len(ep["sessions"]),
                    "flows": len(ep["fids"])}
        text = f"{self.name}|{src}|{ep['fids'][0]}"
        return Alert(
            timestamp=us_to_dt(ep["crossed"]), start=us_to_dt(ep["start"]),
            end=us_to_dt(ep["end"]), rule_name=self.name, rule_category=self.family,
            technique="T1110.003", source_ip=src,
            destination_ip=hosts[0] if len(hosts) == 1 else None, message=msg,
            score=round(min(1.0, ep["value"] / (2.0 * self.threshold)), 3),
            evidence=evidence, flow_ids=list(ep["fids"]),
            alert_id=hashlib.sha1(text.encode()).hexdigest())

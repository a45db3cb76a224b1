"""bruteforce family: many short login sessions from one source to one login service.

Per ``(source.ip, destination.ip, destination.port)`` with the port in ``ports``, count TCP flows
that

* completed a handshake (Zeek state SF, S1, S2, S3, RSTO or RSTR, and the originator sent an
  ACK -- this keeps the open ports of a SYN scan, "SYN, SYN-ACK, RST" = RSTO, out),
* are short (``event.duration < max_duration`` seconds) and
* small (``network.packets <= max_packets``),

in a sliding window of ``window`` seconds over flow start times. When the count reaches
``threshold`` one alert opens (ATT&CK T1110.001, Password Guessing) and keeps absorbing further
attempts while they come no more than ``window`` seconds apart.

The same connection seen by two sensors is counted once (flows are told apart by
``network.community_id`` and start second), so adding a sensor does not halve the threshold.

Tuning (defaults ``window: 20, threshold: 8``): a workstation that logs in every ``p`` seconds
makes about ``window / p`` attempts per window. With the defaults a login every 3 s (6-7 per
window) stays quiet, while password guessing -- dozens of attempts within seconds -- crosses the
threshold in well under a second of its start. A 60 s window with threshold 8 (the textbook
setting) would flag a monitoring script or an operator logging in every 5 s, so the window was
shortened rather than the threshold raised.
"""
from __future__ import annotations

from collections import defaultdict

import pyarrow as pa

from .base import Alert, Detector, SettingError, columns, find_episodes, us_to_dt

ESTABLISHED_STATES = frozenset({"SF", "S1", "S2", "S3", "RSTO", "RSTR"})


class BruteForceDetector(Detector):
    family = "bruteforce"
    technique = "T1110.001"
    SETTINGS = {
        "ports": [22, 23, 2222, 3389],  # login services
        "window": 20,                   # seconds
        "threshold": 8,                 # short sessions within the window
        "max_duration": 10,             # seconds: a session at least this long is not a guess
        "max_packets": 40,              # a session with more packets is not a guess
    }

    def configure(self) -> None:
        ports = self.settings["ports"]
        if not isinstance(ports, list) or not ports or any(
                isinstance(p, bool) or not isinstance(p, int) or not 0 < p < 65536 for p in ports):
            raise SettingError(f"setting 'ports' of {self.name!r} must be a list of port numbers, "
                               f"got {ports!r}", setting="ports")
        self.ports = frozenset(ports)
        self.window_us = int(self._number("window", minimum=0.001) * 1_000_000)
        self.threshold = int(self._number("threshold", minimum=2, integer=True))
        self.max_duration_ns = int(self._number("max_duration", minimum=0) * 1_000_000_000)
        self.max_packets = int(self._number("max_packets", minimum=1, integer=True))

    def detect(self, flows: pa.Table, packets: pa.Table | None = None) -> list[Alert]:
        if flows.num_rows == 0:
            return []
        c = columns(flows, ["event.start", "event.duration", "source.ip", "destination.ip",
                            "destination.port", "network.transport", "network.packets",
                            "network.community_id", "cyberrange.tcp_state", "cyberrange.tcp_flags",
                            "cyberrange.flow_id"])
        groups: dict[tuple, list] = defaultdict(list)
        for i, proto in enumerate(c["network.transport"]):
            if proto != "tcp" or c["destination.port"][i] not in self.ports:
                continue
            if c["cyberrange.tcp_state"][i] not in ESTABLISHED_STATES:
                continue
            if "A" not in (c["cyberrange.tcp_flags"][i] or "A"):
                continue
            if (c["event.duration"][i] or 0) >= self.max_duration_ns:
                continue
            if (c["network.packets"][i] or 0) > self.max_packets:
                continue
            t = c["event.start"][i]
            fid = c["cyberrange.flow_id"][i]
            cid = c["network.community_id"][i]
            key = (cid, round(t / 1_000_000)) if cid else fid     # one session, many sensors
            groups[(c["source.ip"][i], c["destination.ip"][i], c["destination.port"][i])].append(
                (t, key, fid))

        alerts = []
        for (src, dst, port), events in groups.items():
            events.sort(key=lambda e: e[0])
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

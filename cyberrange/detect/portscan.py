"""portscan family: one source touching many services (vertical) or many hosts (horizontal).

Per source IP, a sliding window over flow start times counts distinct targets:

* ``mode: ports`` -- distinct ``(destination.ip, transport, destination.port)`` among probe-like
  flows (ATT&CK T1046, Network Service Discovery);
* ``mode: hosts`` -- distinct ``destination.ip`` (ICMP: echo requests only, i.e.
  ``source.port == 8``; TCP: probe-like flows only; UDP: any flow). T1018 (Remote System
  Discovery) when the evidence contains ICMP, T1046 otherwise.

A TCP flow is *probe-like* when it never became a normal conversation: its Zeek state is one of
S0, REJ, RSTOS0, RSTR, SH, OTH; or the originator never sent an ACK (a SYN-only flow, as a SYN
scan of an open port leaves: SYN, SYN-ACK, bare RST from the scanner -> RSTO with flags "SR");
or it is RSTO with at most 3 originator packets (a connect() scan: SYN, ACK, RST).
Every UDP flow counts (UDP scans look like any other datagram).

When the count reaches ``threshold`` one alert opens for the source; it keeps absorbing the
source's further probes while they come no more than ``window`` seconds apart, so a long scan is
one alert whose ``cyberrange.flow_ids`` lists every contributing flow.
"""
from __future__ import annotations

from collections import defaultdict

import pyarrow as pa
import pyarrow.compute as pc

from .base import Alert, Detector, SettingError, columns, find_episodes, us_to_dt

PROBE_STATES = frozenset({"S0", "REJ", "RSTOS0", "RSTR", "SH", "OTH"})


def is_tcp_probe(state: str | None, orig_flags: str | None, orig_packets: int | None) -> bool:
    """Does a TCP flow look like a probe rather than a conversation?"""
    if state in PROBE_STATES:
        return True
    if orig_flags is not None and "A" not in orig_flags:
        return True
    return state == "RSTO" and (orig_packets or 0) <= 3


class PortScanDetector(Detector):
    family = "portscan"
    technique = "T1046"
    SETTINGS = {
        "mode": "ports",                # ports | hosts
        "window": 10,                   # seconds
        "threshold": 12,                # distinct targets within the window
        "transports": ["tcp", "udp"],   # which flows count (tcp, udp, icmp)
    }

    def configure(self) -> None:
        mode = self.settings["mode"]
        if mode not in ("ports", "hosts"):
            raise SettingError(f"setting 'mode' of {self.name!r} must be 'ports' or 'hosts', "
                               f"got {mode!r}", setting="mode")
        self.mode = mode
        self.window_us = int(self._number("window", minimum=0.001) * 1_000_000)
        self.threshold = int(self._number("threshold", minimum=2, integer=True))
        transports = self._choices("transports", ("tcp", "udp", "icmp"))
        if mode == "ports" and transports == ["icmp"]:
            raise SettingError("mode 'ports' counts ports; ICMP has none (use mode 'hosts')",
                               setting="transports")
        self.transports = frozenset(transports)
        self.technique = "T1018" if mode == "hosts" and "icmp" in self.transports else "T1046"

    def probe_mask(self, flows: pa.Table) -> pa.ChunkedArray:
        """Boolean mask of the flows that count (Arrow compute, no Python loop): probe-like TCP
        (``is_tcp_probe``), every UDP flow, ICMP echo requests in mode ``hosts``."""
        proto = flows.column("network.transport")
        false = pa.scalar(False)
        mask = None
        if "tcp" in self.transports:
            state = flows.column("cyberrange.tcp_state")
            flags = flows.column("cyberrange.tcp_flags")
            probe = pc.or_kleene(
                pc.fill_null(pc.is_in(state, value_set=pa.array(sorted(PROBE_STATES))), False),
                pc.fill_null(pc.invert(pc.match_substring(flags, "A")), False))
            connect = pc.and_kleene(pc.fill_null(pc.equal(state, "RSTO"), False),
                                    pc.less_equal(pc.fill_null(flows.column("source.packets"), 0),
                                                  3))
            mask = pc.and_kleene(pc.equal(proto, "tcp"), pc.or_kleene(probe, connect))
        if "udp" in self.transports:
            udp = pc.equal(proto, "udp")
            mask = udp if mask is None else pc.or_kleene(mask, udp)
        if "icmp" in self.transports and self.mode == "hosts":
            icmp = pc.and_kleene(pc.equal(proto, "icmp"),
                                 pc.equal(pc.fill_null(flows.column("source.port"), -1), 8))
            mask = icmp if mask is None else pc.or_kleene(mask, icmp)
        if mask is None:
            return pa.chunked_array([pa.array([False] * flows.num_rows)])
        return pc.fill_null(mask, false)

    def detect(self, flows: pa.Table, packets: pa.Table | None = None) -> list[Alert]:
        if flows.num_rows == 0:
            return []
        sel = flows.filter(self.probe_mask(flows))
        if sel.num_rows == 0:
            return []
        c = columns(sel, ["event.start", "source.ip", "destination.ip", "destination.port",
                          "network.transport", "cyberrange.flow_id"])
        per_source: dict[str, list] = defaultdict(list)
        ports_mode = self.mode == "ports"
        for t, src, dst, port, proto, fid in zip(
                c["event.start"], c["source.ip"], c["destination.ip"], c["destination.port"],
                c["network.transport"], c["cyberrange.flow_id"]):
            key = (dst, proto, port) if ports_mode else dst
            per_source[src].append((t, key, fid, proto))

        alerts = []
        for src, events in per_source.items():
            events.sort(key=lambda e: e[0])
            protos_by_fid = {e[2]: e[3] for e in events}
            for ep in find_episodes([e[:3] for e in events], self.window_us, self.threshold):
                alerts.append(self._alert(src, ep, protos_by_fid))
        return alerts

    def _alert(self, src, ep, protos_by_fid) -> Alert:
        window_s = self.window_us / 1_000_000
        if self.mode == "ports":
            hosts = {k[0] for k in ep.keys}
            dst = next(iter(hosts)) if len(hosts) == 1 else None
            feature = "distinct_dst_ports"
            where = f"on {dst}" if dst else f"on {len(hosts)} hosts"
            what = f"{len(ep.keys)} distinct ports {where}"
            technique = "T1046"
        else:
            dst = next(iter(ep.keys)) if len(ep.keys) == 1 else None
            feature = "distinct_dst_hosts"
            what = f"{len(ep.keys)} distinct hosts"
            used = {protos_by_fid[f] for f in ep.flow_ids}
            technique = "T1018" if "icmp" in used else "T1046"
        msg = (f"{src} probed {what} between {us_to_dt(ep.start):%H:%M:%S} and "
               f"{us_to_dt(ep.end):%H:%M:%S} UTC; at most {ep.value} within {window_s:g} s "
               f"(threshold {self.threshold}), {len(ep.flow_ids)} flows")
        evidence = {"feature": feature, "value": ep.value, "threshold": self.threshold,
                    "window_s": window_s, "targets": len(ep.keys), "flows": len(ep.flow_ids),
                    "mode": self.mode, "transports": sorted(self.transports)}
        return Alert(
            timestamp=us_to_dt(ep.crossed_at), start=us_to_dt(ep.start), end=us_to_dt(ep.end),
            rule_name=self.name, rule_category=self.family, technique=technique,
            source_ip=src, destination_ip=dst, message=msg,
            score=round(min(1.0, ep.value / (2.0 * self.threshold)), 3),
            evidence=evidence, flow_ids=list(ep.flow_ids))

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

Issue 15 additions (docs/detectors/portscan.md, "Baselines and small scans"):

* ``udp_probes: unanswered`` counts only UDP datagrams to unicast addresses that got no answer
  (``destination.packets == 0``): what a UDP scan leaves (closed ports answer with ICMP, open
  ones rarely answer a probe) and what DNS/NTP clients do not (their servers answer). With it a
  slow instance may count UDP too.
* ``min_fraction`` (mode ``hosts``): a sweep of a small subnet never reaches an absolute count of
  hosts. Per ``/subnet_prefix`` subnet, an alert also opens when the source probed at least
  ``min_hosts`` hosts of it and at least ``min_fraction`` of its live addresses (addresses seen
  sending, or answering, in the baseline learned by ``fit`` and in the records themselves).
* ``signals()`` (``signal_min`` > 0): episodes with at least ``signal_min`` distinct targets
  that stayed under the threshold, as weak signals (score = value / threshold).
"""
from __future__ import annotations

import math
from collections import Counter, defaultdict, deque

import pyarrow as pa
import pyarrow.compute as pc

from ._signals import overlaps, signal, subnet_of
from .base import (
    Alert,
    Detector,
    Episode,
    SettingError,
    columns,
    find_episodes,
    us_to_dt,
)

PROBE_STATES = frozenset({"S0", "REJ", "RSTOS0", "RSTR", "SH", "OTH"})
#: multicast (224-239.x), limited broadcast and x.x.x.255: nobody in particular answers them
NOT_UNICAST = r"^(22[4-9]|23[0-9]|255)\.|\.255$"


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
        "udp_probes": "any",            # any | unanswered (no datagram back, unicast only)
        "min_fraction": 0,              # hosts: fraction of a subnet's live hosts (0: off)
        "min_hosts": 3,                 # hosts: ... and at least this many of them
        "subnet_prefix": 24,            # the subnet of min_fraction
        "signal_min": 0,                # signals(): distinct targets of a weak signal (0: off)
    }
    trainable = True                    # learns live addresses (min_fraction)

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
        if self.settings["udp_probes"] not in ("any", "unanswered"):
            raise SettingError(f"setting 'udp_probes' of {self.name!r} must be 'any' or "
                               f"'unanswered', got {self.settings['udp_probes']!r}",
                               setting="udp_probes")
        self.udp_unanswered = self.settings["udp_probes"] == "unanswered"
        self.min_fraction = float(self._number("min_fraction"))
        if self.min_fraction > 1:
            raise SettingError(f"setting 'min_fraction' of {self.name!r} must be between 0 and "
                               f"1, got {self.min_fraction}", setting="min_fraction")
        if self.min_fraction and mode != "hosts":
            raise SettingError("min_fraction applies to mode 'hosts' only",
                               setting="min_fraction")
        self.min_hosts = int(self._number("min_hosts", minimum=2, integer=True))
        self.prefix = int(self._number("subnet_prefix", minimum=8, integer=True))
        if self.prefix > 30:
            raise SettingError(f"setting 'subnet_prefix' of {self.name!r} must be 8-30, got "
                               f"{self.prefix}", setting="subnet_prefix")
        self.signal_min = int(self._number("signal_min", minimum=0, integer=True))
        self.known_hosts: set[str] = set()       # live addresses of the baseline (fit)

    def fit(self, flows: pa.Table, packets: pa.Table | None = None) -> None:
        self.known_hosts = live_hosts(flows) if flows is not None else set()
        self.trained = True

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
            if self.udp_unanswered:
                udp = pc.and_kleene(udp, pc.and_kleene(
                    pc.equal(pc.fill_null(flows.column("destination.packets"), 0), 0),
                    pc.invert(pc.fill_null(pc.match_substring_regex(
                        flows.column("destination.ip"), NOT_UNICAST), True))))
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
        live = self._live(flows) if self.min_fraction else None
        for src, events in per_source.items():
            events.sort(key=lambda e: e[0])
            protos_by_fid = {e[2]: e[3] for e in events}
            if live is not None:
                alerts += [self._alert(src, ep, protos_by_fid, subnet=why)
                           for ep, why in self._subnet_episodes(src, events, live)]
                continue
            alerts += [self._alert(src, ep, protos_by_fid)
                       for ep in find_episodes([e[:3] for e in events], self.window_us,
                                               self.threshold)]
        return alerts

    def _live(self, flows: pa.Table) -> dict[str, set]:
        """Live addresses per subnet: the baseline's and the records' own (see live_hosts)."""
        by_net: dict[str, set] = defaultdict(set)
        for ip in self.known_hosts | live_hosts(flows):
            net = subnet_of(ip, self.prefix)
            if net:
                by_net[net].add(ip)
        return by_net

    def _subnet_episodes(self, src, events, live) -> list[tuple[Episode, tuple | None]]:
        """``find_episodes`` with a second way to cross: within the window, the hosts probed
        in one subnet reach ``max(min_hosts, ceil(min_fraction x its live hosts))`` (the
        source not counted). One episode either way, absorbing every probe of the source;
        returns ``(episode, (subnet, live hosts, need) or None when the count crossed)``."""
        need: dict = {}
        for _, dst, _, _ in events:
            net = subnet_of(dst, self.prefix)
            if net and net not in need:
                n_live = len(live.get(net, set()) - {src})
                need[net] = (n_live, max(self.min_hosts, math.ceil(self.min_fraction * n_live)))
        out: list = []
        dq: deque = deque()
        counts: Counter = Counter()
        per_net: dict = defaultdict(set)
        ep, why = None, None
        for t, key, fid, _ in events:
            while dq and dq[0][0] <= t - self.window_us:
                _, k, _ = dq.popleft()
                counts[k] -= 1
                if not counts[k]:
                    del counts[k]
                    per_net[subnet_of(k, self.prefix)].discard(k)
            if ep is not None and t - ep.end > self.window_us:
                out.append((ep, why))
                ep = None
            dq.append((t, key, fid))
            counts[key] += 1
            net = subnet_of(key, self.prefix)
            per_net[net].add(key)
            if ep is not None:
                ep.end = t
                ep.flow_ids.append(fid)
                ep.keys.add(key)
                ep.value = max(ep.value, len(counts))
                continue
            n_live, k_need = need.get(net, (0, self.threshold))
            if len(counts) >= self.threshold or len(per_net[net]) >= k_need:
                why = None if len(counts) >= self.threshold else (net, n_live, k_need)
                ep = Episode(crossed_at=t, start=dq[0][0], end=t,
                             value=len(per_net[net]) if why else len(counts),
                             flow_ids=[e[2] for e in dq], keys={e[1] for e in dq})
        if ep is not None:
            out.append((ep, why))
        return out

    def signals(self, flows: pa.Table, packets: pa.Table | None = None) -> list[Alert]:
        """Sub-threshold episodes: at least ``signal_min`` distinct targets within the window
        (score = value / threshold), when no alert of the source covers them."""
        if not self.signal_min or flows.num_rows == 0:
            return []
        alerts = self.detect(flows)
        sel = flows.filter(self.probe_mask(flows))
        c = columns(sel, ["event.start", "source.ip", "destination.ip", "destination.port",
                          "network.transport", "cyberrange.flow_id"])
        per_source: dict[str, list] = defaultdict(list)
        for t, src, dst, port, proto, fid in zip(*c.values()):
            per_source[src].append((t, (dst, proto, port) if self.mode == "ports" else dst, fid))
        out = []
        for src, events in sorted(per_source.items()):
            events.sort(key=lambda e: e[0])
            for ep in find_episodes(events, self.window_us, self.signal_min):
                if overlaps(alerts, src, ep.start, ep.end):
                    continue
                hosts = sorted({k[0] if self.mode == "ports" else k for k in ep.keys})
                feature = "distinct_dst_ports" if self.mode == "ports" else "distinct_dst_hosts"
                window_s = self.window_us / 1e6
                out.append(signal(
                    self, t0=ep.start, t1=ep.end, source_ip=src,
                    destination_ip=hosts[0] if len(hosts) == 1 else None,
                    message=(f"{src} probed {len(ep.keys)} distinct "
                             f"{'services' if self.mode == 'ports' else 'hosts'} "
                             f"(at most {ep.value} within {window_s:g} s, alert threshold "
                             f"{self.threshold}): below the threshold"),
                    score=ep.value / self.threshold,
                    evidence={"feature": feature, "value": ep.value,
                              "threshold": self.threshold, "window_s": window_s,
                              "hosts": len(hosts), "flows": len(ep.flow_ids),
                              "transports": sorted(self.transports)},
                    flow_ids=ep.flow_ids, key=feature))
        return out

    def _alert(self, src, ep, protos_by_fid, subnet=None) -> Alert:
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
        threshold = self.threshold
        if subnet is not None:
            net, n_live, threshold = subnet
            in_net = {k for k in ep.keys if subnet_of(k, self.prefix) == net}
            feature = evidence["feature"] = "fraction_of_subnet_hosts"
            evidence.update(value=len(in_net), threshold=threshold, subnet=net,
                            live_hosts=n_live, fraction=round(len(in_net) / max(1, n_live), 3),
                            min_fraction=self.min_fraction, min_hosts=self.min_hosts,
                            baseline={"trained": self.trained,
                                      "live_hosts_learned": len(self.known_hosts)})
            msg = (f"{src} probed {len(in_net)} hosts of {net} ({n_live} live addresses "
                   f"known){f' and {len(ep.keys) - len(in_net)} elsewhere' if len(ep.keys) > len(in_net) else ''} "
                   f"between {us_to_dt(ep.start):%H:%M:%S} and {us_to_dt(ep.end):%H:%M:%S} UTC "
                   f"(threshold {threshold} hosts of the subnet within {window_s:g} s: "
                   f"{self.min_fraction:g} of its live hosts, at least {self.min_hosts}): a "
                   f"sweep of a small subnet, {len(ep.flow_ids)} flows")
        return Alert(
            timestamp=us_to_dt(ep.crossed_at), start=us_to_dt(ep.start), end=us_to_dt(ep.end),
            rule_name=self.name, rule_category=self.family, technique=technique,
            source_ip=src, destination_ip=dst, message=msg,
            score=round(min(1.0, evidence["value"] / (2.0 * threshold)), 3),
            evidence=evidence, flow_ids=list(ep.flow_ids))


def live_hosts(flows: pa.Table) -> set[str]:
    """Addresses that are alive according to the records: every source of a flow, and every
    destination that sent something back (a refused port too: the host is there)."""
    if flows is None or flows.num_rows == 0:
        return set()
    answered = flows.filter(pc.greater(pc.fill_null(flows.column("destination.packets"), 0), 0))
    return (set(pc.unique(flows.column("source.ip")).to_pylist()) |
            set(pc.unique(answered.column("destination.ip")).to_pylist())) - {None}

"""arp family: ARP cache poisoning (IP<->MAC binding changes) and ARP scans, from packet records.

ARP frames carry no IP 5-tuple, so this family reads packet records (``needs_packets``): the
ARP fields ``cyberrange.arp.operation|sender_ip|sender_mac|target_ip`` and the Ethernet
``source.mac``. Only ARP rows are looked at (filtered with Arrow compute before any Python loop),
and a frame seen by several sensors counts once.

``mode: spoof`` (ATT&CK T1557.002, ARP Cache Poisoning)
    Every ARP frame (request or reply) *claims* ``sender_ip is-at sender_mac``. The first MAC seen
    claiming an IP is its binding: learned in ``fit`` from the baseline window, else from the
    first claim in the run. A claim of a bound IP by another MAC is a *conflict*; a MAC claiming
    more than ``max_ips_per_mac`` IPs is a *multi-claim*. Conflicts and multi-claims of one MAC
    that follow each other within ``window`` seconds form one episode; an episode with at least
    ``threshold`` of them is one alert. Unsolicited replies (no request for that IP within
    ``window`` s before) are counted in the evidence.

``mode: scan`` (ATT&CK T1018, Remote System Discovery; the library's ``T1018-arp``)
    Per asking MAC, distinct ``target_ip`` of ARP requests in a sliding ``window``; ``threshold``
    distinct targets open an alert. Trained, a MAC that asked for many addresses in the baseline
    (a router, a monitoring host) needs ``2 x`` its baseline peak. ``signals()`` (``signal_min``
    > 0) keeps the episodes of at least ``signal_min`` distinct targets under the threshold
    (trained: and more than the MAC's own baseline peak). When IP packets of another
    host to at least half of the addresses came first (within 2 s), the MAC is a router
    resolving for a remote scanner: the alert names that host as ``source.ip``.

The alert's ``source.ip`` is the IP the offending MAC owns itself (the sender IP of its own ARP
requests -- a poisoner asks for its victims with its true address -- else the IP bound to it in
the baseline, else the source IP it used most in IP packets), so that an alert with no flows can
be tied to the host that sent the frames. A spoofing alert is one offending MAC claiming one IP
(``destination.ip``; two victims poisoned against each other are two alerts), with the MACs and
packet counts in the evidence and no flows. A scan alert lists as flows the IP flows the
scanner then sent to the addresses it ARPed (a ping sweep's echoes, a SYN scan's probes; none
for a pure ARP scan; probe-like flows only, so that a scanner's own conversations with hosts it
ARPed are not taken for the scan).
"""
from __future__ import annotations

import hashlib
import heapq
import ipaddress
import socket
from collections import Counter, defaultdict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ._signals import signal
from .base import Alert, Detector, SettingError, find_episodes, us_to_dt
from .portscan import PortScanDetector

ARP_COLUMNS = ["@timestamp", "observer.name", "source.mac", "destination.mac",
               "cyberrange.arp.operation", "cyberrange.arp.sender_ip",
               "cyberrange.arp.sender_mac", "cyberrange.arp.target_ip"]
UNSPECIFIED = frozenset({None, "", "0.0.0.0"})
FOLLOW_US = 3_000_000     # scan alerts: IP flows to ARPed targets up to 3 s after the last request
TRIGGER_US = 2_000_000    # an IP packet to an address up to 2 s before the ARP request for it


def _us(col) -> list[int]:
    return pc.cast(col.cast(pa.timestamp("us", tz="UTC")), pa.int64()).to_pylist()


def arp_frames(packets: pa.Table | None) -> list[tuple]:
    """ARP rows of ``packets`` as time-ordered tuples ``(t_us, op, sender_ip, sender_mac,
    target_ip, eth_src)``; a frame captured by several sensors is kept once (same fields within
    the same 10 ms)."""
    if packets is None or packets.num_rows == 0 or \
            "cyberrange.arp.operation" not in packets.column_names:
        return []
    arp = packets.filter(pc.is_valid(packets.column("cyberrange.arp.operation")))
    if arp.num_rows == 0:
        return []
    arp = arp.select(ARP_COLUMNS)
    rows = zip(_us(arp.column("@timestamp")), *(arp.column(n).to_pylist() for n in (
        "cyberrange.arp.operation", "cyberrange.arp.sender_ip", "cyberrange.arp.sender_mac",
        "cyberrange.arp.target_ip", "source.mac", "destination.mac")))
    out, seen = [], set()
    for t, op, sip, smac, tip, esrc, edst in sorted(rows, key=lambda r: r[0]):
        key = (t // 10_000, op, sip, smac, tip, esrc, edst)
        if key in seen or (t // 10_000 - 1,) + key[1:] in seen:
            continue
        seen.add(key)
        out.append((t, op, sip, (smac or esrc or "").lower(), tip, (esrc or "").lower()))
    return out


def _alert_id(*parts) -> str:
    return hashlib.sha1("|".join(str(p) for p in parts).encode()).hexdigest()


class ArpDetector(Detector):
    family = "arp"
    technique = "T1557.002"
    needs_packets = True
    trainable = True
    SETTINGS = {
        "mode": "spoof",            # spoof (binding changes, T1557.002) | scan (T1018)
        "window": 10,               # seconds: spoof -> gap that ends an episode; scan -> window
        "threshold": 1,             # spoof: conflicting claims; scan: distinct IPs asked for
        "max_ips_per_mac": 2,       # spoof: a MAC claiming more IPs than this is suspicious
        "ignore_ips": [],           # shared/virtual addresses (VRRP, HSRP, failover), IP or CIDR
        "ignore_macs": [],          # e.g. a monitoring host that ARP-scans on purpose
        "signal_min": 0,            # scan: distinct targets of a weak signal (0: off)
    }

    def configure(self) -> None:
        mode = self.settings["mode"]
        if mode not in ("spoof", "scan"):
            raise SettingError(f"setting 'mode' of {self.name!r} must be 'spoof' or 'scan', "
                               f"got {mode!r}", setting="mode")
        self.mode = mode
        self.technique = "T1557.002" if mode == "spoof" else "T1018"
        self.window_us = int(self._number("window", minimum=0.001) * 1_000_000)
        self.threshold = int(self._number("threshold", minimum=1, integer=True))
        if mode == "scan" and self.threshold < 2:
            raise SettingError(f"setting 'threshold' of {self.name!r} must be >= 2 in mode "
                               f"'scan', got {self.threshold}", setting="threshold")
        self.max_ips = int(self._number("max_ips_per_mac", minimum=1, integer=True))
        nets = self.settings["ignore_ips"]
        try:
            if not isinstance(nets, list):
                raise ValueError
            self.ignore_nets = [ipaddress.ip_network(str(n), strict=False) for n in nets]
        except ValueError:
            raise SettingError(f"setting 'ignore_ips' of {self.name!r} must be a list of IP "
                               f"addresses or CIDRs, got {nets!r}", setting="ignore_ips") from None
        macs = self.settings["ignore_macs"]
        if not isinstance(macs, list) or not all(isinstance(m, str) for m in macs):
            raise SettingError(f"setting 'ignore_macs' of {self.name!r} must be a list of MAC "
                               f"addresses, got {macs!r}", setting="ignore_macs")
        self.ignore_macs = frozenset(m.lower() for m in macs)
        self.signal_min = int(self._number("signal_min", minimum=0, integer=True))
        if self.signal_min and mode != "scan":
            raise SettingError("signal_min applies to mode 'scan' only", setting="signal_min")
        self.bindings: dict[str, str] = {}        # ip -> mac, learned in fit
        self.owner: dict[str, str] = {}           # mac -> its own ip, learned in fit
        self.scan_peak: dict[str, int] = {}       # mac -> distinct targets in baseline window

    def _ignored_ip(self, ip: str | None) -> bool:
        if not self.ignore_nets or ip in UNSPECIFIED:
            return False
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in n for n in self.ignore_nets)

    # ------------------------------------------------------------------ learning

    def fit(self, flows: pa.Table, packets: pa.Table | None = None) -> None:
        frames = arp_frames(packets)
        self.bindings, self.owner = {}, {}
        asked: dict[str, Counter] = defaultdict(Counter)
        for _, op, sip, smac, _, _ in frames:
            if sip in UNSPECIFIED or not smac:
                continue
            self.bindings.setdefault(sip, smac)
            if op == "request":
                asked[smac][sip] += 1
        for mac, ips in asked.items():
            self.owner[mac] = ips.most_common(1)[0][0]
        self.scan_peak = {}
        for mac, events in self._requests(frames).items():
            eps = find_episodes(events, self.window_us, 2)
            self.scan_peak[mac] = max((e.value for e in eps), default=1)
        self.trained = True

    # ------------------------------------------------------------------ detection

    def detect(self, flows: pa.Table, packets: pa.Table | None = None) -> list[Alert]:
        frames = arp_frames(packets)
        if not frames:
            return []
        owners = _Owners(self._owners(frames, packets), self, packets)
        if self.mode == "scan":
            return self._scan(frames, owners, flows, packets)
        return self._spoof(frames, owners)

    def _owners(self, frames, packets) -> dict[str, str]:
        """MAC -> the IP the host behind it owns (see the module docstring)."""
        asked: dict[str, Counter] = defaultdict(Counter)
        for _, op, sip, smac, tip, esrc in frames:
            if op == "request" and sip not in UNSPECIFIED and sip != tip and smac == esrc:
                asked[smac][sip] += 1
        owners = {mac: ips.most_common(1)[0][0] for mac, ips in asked.items()}
        for mac, ip in self.owner.items():
            owners.setdefault(mac, ip)
        by_mac: dict[str, list] = defaultdict(list)
        for ip, mac in self.bindings.items():
            by_mac[mac].append(ip)
        for mac, ips in by_mac.items():
            if len(ips) == 1:
                owners.setdefault(mac, ips[0])
        return owners

    def _owner_from_ip_packets(self, mac: str, packets) -> str | None:
        """The source IP ``mac`` used most in IP packets (last resort: a router's MAC carries
        many sources, a relaying poisoner its victims' too)."""
        if packets is None or "source.mac" not in packets.column_names:
            return None
        sel = packets.filter(pc.and_(pc.equal(pc.utf8_lower(packets.column("source.mac")), mac),
                                     pc.is_valid(packets.column("source.ip"))))
        if sel.num_rows == 0:
            return None
        counts = pc.value_counts(sel.column("source.ip")).to_pylist()
        return max(counts, key=lambda c: (c["counts"], c["values"]))["values"]

    def _requests(self, frames) -> dict[str, list]:
        per_mac: dict[str, list] = defaultdict(list)
        for i, (t, op, sip, smac, tip, esrc) in enumerate(frames):
            if op != "request" or tip in UNSPECIFIED or tip == sip:     # gratuitous: announce
                continue
            mac = esrc or smac
            per_mac[mac].append((t, tip, str(i)))
        return per_mac

    def _scan(self, frames, owners, flows=None, packets=None) -> list[Alert]:
        alerts = []
        # each alert looks at the packets and flows of its own time span only: index by time
        # once, so an alert costs a binary search instead of a pass over the whole table
        packets = _Timed(packets, "@timestamp")
        flows = _Timed(flows, "event.start")
        for mac, events in sorted(self._requests(frames).items()):
            if mac in self.ignore_macs:
                continue
            threshold = max(self.threshold, 2 * self.scan_peak.get(mac, 0))
            for ep in find_episodes(events, self.window_us, threshold):
                alerts.append(self._scan_alert(mac, ep, threshold, owners, flows, packets))
        return alerts

    def signals(self, flows: pa.Table, packets: pa.Table | None = None) -> list[Alert]:
        """Scan mode: a MAC that asked for at least ``signal_min`` distinct addresses within
        the window without reaching its threshold (score = value / threshold)."""
        if self.mode != "scan" or not self.signal_min:
            return []
        frames = arp_frames(packets)
        if not frames:
            return []
        owners = _Owners(self._owners(frames, packets), self, packets)
        out = []
        for mac, events in sorted(self._requests(frames).items()):
            if mac in self.ignore_macs:
                continue
            threshold = max(self.threshold, 2 * self.scan_peak.get(mac, 0))
            alerted = {(e.start, e.end) for e in find_episodes(events, self.window_us,
                                                                threshold)}
            # a MAC that asked for k addresses in the baseline signals from k + 1 on
            floor = max(self.signal_min, self.scan_peak.get(mac, 0) + 1)
            if floor >= threshold:
                continue
            for ep in find_episodes(events, self.window_us, floor):
                if any(a0 <= ep.end and ep.start <= a1 for a0, a1 in alerted):
                    continue
                own = owners.get(mac)
                window_s = self.window_us / 1e6
                out.append(signal(
                    self, t0=ep.start, t1=ep.end, source_ip=own, destination_ip=None,
                    message=(f"MAC {mac} ({own or 'IP unknown'}) sent ARP requests for "
                             f"{len(ep.keys)} distinct addresses (at most {ep.value} within "
                             f"{window_s:g} s, alert threshold {threshold}): below the "
                             f"threshold"),
                    score=ep.value / threshold, technique="T1018",
                    evidence={"feature": "distinct_arp_targets", "value": ep.value,
                              "threshold": threshold, "window_s": window_s, "mac": mac,
                              "packets": len(ep.flow_ids),
                              "sample_targets": heapq.nsmallest(10, ep.keys, key=_ip_key),
                              **({"baseline": self.scan_peak[mac]}
                                 if mac in self.scan_peak else {})},
                    key=mac))
        return out

    def _scan_alert(self, mac, ep, threshold, owners, flows, packets) -> Alert:
        own = owners.get(mac)
        window_s = self.window_us / 1e6
        # A router resolves the addresses a remote host sends packets to: a sweep of a
        # subnet behind it makes it "ARP-scan" that subnet. Then the scanner is whoever sent
        # the packets that made it ask.
        behalf, covered = _triggered_by(packets.between(ep.start - TRIGGER_US, ep.end), own,
                                        ep.keys, ep.start, ep.end)
        src = behalf or own
        who = f"MAC {mac} ({own or 'IP unknown'})"
        what = (f"on behalf of {behalf} (its packets to {covered} of the addresses came "
                f"first): a sweep through a router" if behalf else "an ARP scan")
        msg = (f"{who} sent ARP requests for {len(ep.keys)} distinct addresses between "
               f"{us_to_dt(ep.start):%H:%M:%S} and {us_to_dt(ep.end):%H:%M:%S} UTC; at most "
               f"{ep.value} within {window_s:g} s (threshold {threshold}), {what}")
        evidence = {"feature": "distinct_arp_targets", "value": ep.value,
                    "threshold": threshold, "window_s": window_s, "mac": mac,
                    "source_ip": src, "mac_ip": own, "targets": len(ep.keys),
                    "packets": len(ep.flow_ids),
                    "sample_targets": heapq.nsmallest(10, ep.keys, key=_ip_key)}
        if behalf:
            evidence["on_behalf_of"] = behalf
            evidence["triggered_targets"] = covered
        if mac in self.scan_peak:
            evidence["baseline"] = self.scan_peak[mac]
        lo, hi = ep.start - (TRIGGER_US if behalf else 0), ep.end + min(self.window_us, FOLLOW_US)
        fids = _followed_by(flows.between(lo, hi), src, ep.keys, lo, hi)
        evidence["flows"] = len(fids)
        return Alert(
            timestamp=us_to_dt(ep.crossed_at), start=us_to_dt(ep.start),
            end=us_to_dt(ep.end), rule_name=self.name, rule_category=self.family,
            technique="T1018", source_ip=src, destination_ip=None, message=msg,
            score=round(min(1.0, ep.value / (2.0 * threshold)), 3), evidence=evidence,
            flow_ids=fids, alert_id=_alert_id(self.name, mac, ep.start))

    def _spoof(self, frames, owners) -> list[Alert]:
        bindings = dict(self.bindings)
        claims: dict[str, set] = defaultdict(set)           # mac -> ips it claimed
        for ip, mac in self.bindings.items():
            claims[mac].add(ip)
        last_request: dict[tuple, int] = {}                 # (asker ip, asked ip) -> time
        events: dict[str, list] = defaultdict(list)         # offending mac -> events
        for t, op, sip, smac, tip, esrc in frames:
            if op == "request" and tip not in UNSPECIFIED:
                last_request[(sip, tip)] = t
            if sip in UNSPECIFIED or not smac or self._ignored_ip(sip):
                continue
            # a reply nobody asked for: gratuitous (sender = target) or no request from its
            # target for this address within the window
            unsolicited = op == "reply" and (sip == tip or t - last_request.get(
                (tip, sip), -10**18) > self.window_us)
            bound = bindings.setdefault(sip, smac)
            claims[smac].add(sip)
            if smac in self.ignore_macs:
                continue
            if bound != smac:
                events[(smac, sip)].append((t, "conflict", sip, bound, unsolicited, esrc))
            elif len(claims[smac]) > self.max_ips and op == "reply":
                events[(smac, None)].append((t, "multi", sip, None, unsolicited, esrc))
        alerts = []
        for (mac, ip), evs in sorted(events.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
            episode: list = []
            for ev in evs + [None]:
                if episode and (ev is None or ev[0] - episode[-1][0] > self.window_us):
                    if len(episode) >= self.threshold:
                        alerts.append(self._spoof_alert(mac, episode, owners, claims))
                    episode = []
                if ev is not None:
                    episode.append(ev)
        return alerts

    def _spoof_alert(self, mac, episode, owners, claims) -> Alert:
        src = owners.get(mac)
        conflicts = [e for e in episode if e[1] == "conflict"]
        spoofed = sorted({e[2] for e in episode}, key=_ip_key)
        if src in spoofed:                                    # its own address is no spoof
            spoofed.remove(src)
        baseline = {e[2]: e[3] for e in conflicts}
        unsolicited = sum(1 for e in episode if e[4])
        t0, t1 = episode[0][0], episode[-1][0]
        crossed = episode[self.threshold - 1][0]
        if conflicts:
            feature, value = "ip_mac_binding_change", len(conflicts)
            what = ", ".join(f"{ip} (bound to {baseline[ip]})" for ip in
                             sorted(baseline, key=_ip_key)[:4])
            msg = (f"MAC {mac} ({src or 'IP unknown'}) claimed {what} in {len(conflicts)} ARP "
                   f"frames ({unsolicited} unsolicited replies) between {us_to_dt(t0):%H:%M:%S}"
                   f" and {us_to_dt(t1):%H:%M:%S} UTC: ARP cache poisoning")
        else:
            feature, value = "ips_claimed_per_mac", len(claims[mac])
            msg = (f"MAC {mac} ({src or 'IP unknown'}) claimed {len(claims[mac])} IP addresses "
                   f"in ARP replies (more than {self.max_ips}) between {us_to_dt(t0):%H:%M:%S} "
                   f"and {us_to_dt(t1):%H:%M:%S} UTC: possible ARP cache poisoning")
        evidence = {"feature": feature, "value": value, "threshold": self.threshold,
                    "baseline": baseline, "mac": mac, "source_ip": src, "spoofed_ips": spoofed,
                    "claimed_ips": sorted(claims[mac], key=_ip_key),
                    "packets": len(episode), "conflicting_packets": len(conflicts),
                    "unsolicited_replies": unsolicited, "window_s": self.window_us / 1e6,
                    "max_ips_per_mac": self.max_ips,
                    "eth_sources": sorted({e[5] for e in episode if e[5]})}
        score = min(1.0, 0.5 + 0.1 * len(spoofed) + 0.02 * value)
        return Alert(
            timestamp=us_to_dt(crossed), start=us_to_dt(t0), end=us_to_dt(t1),
            rule_name=self.name, rule_category=self.family, technique="T1557.002",
            source_ip=src, destination_ip=spoofed[0] if len(spoofed) == 1 else None,
            message=msg, score=round(score, 3), evidence=evidence, flow_ids=[],
            alert_id=_alert_id(self.name, mac, spoofed, t0))


def _triggered_by(packets, own_ip, targets, start, end) -> tuple[str | None, int]:
    """The host whose IP packets to the ARPed addresses preceded the requests (a router
    resolving for a remote scanner), when it accounts for at least half of the addresses."""
    if packets is None or packets.num_rows == 0 or not targets:
        return None, 0
    ts = packets.column("@timestamp")
    lo = pa.scalar(start - TRIGGER_US, pa.int64()).cast(pa.timestamp("us")).cast(ts.type)
    hi = pa.scalar(end, pa.int64()).cast(pa.timestamp("us")).cast(ts.type)
    mask = pc.and_kleene(
        pc.and_kleene(pc.greater_equal(ts, lo), pc.less_equal(ts, hi)),
        pc.is_in(packets.column("destination.ip"),
                 value_set=pa.array(sorted(targets), pa.string())))
    if own_ip is not None:
        mask = pc.and_kleene(mask, pc.not_equal(packets.column("source.ip"), own_ip))
    sel = packets.filter(pc.fill_null(mask, False)).select(["source.ip", "destination.ip"])
    if sel.num_rows == 0:
        return None, 0
    pairs = sel.group_by(["source.ip", "destination.ip"]).aggregate([])
    counts = pc.value_counts(pairs.column("source.ip")).to_pylist()
    best = max(counts, key=lambda c: (c["counts"], c["values"]))
    if best["counts"] * 2 >= len(targets):
        return best["values"], best["counts"]
    return None, 0


def _followed_by(flows, src, targets, start, end) -> list[str]:
    """Probe-like flows from ``src`` to the addresses it ARPed, within the scan: what the scan
    was for (a ping sweep's echoes, a SYN scan's probes, unanswered UDP). Empty for a pure ARP
    scan. Conversations are left out: a scanner with a user at it also talks to its DNS server
    and its file server, which it ARPed too, and those flows are not the scan's."""
    if flows is None or flows.num_rows == 0 or src is None:
        return []
    ts = flows.column("event.start")
    lo = pa.scalar(start, pa.int64()).cast(pa.timestamp("us")).cast(ts.type)
    hi = pa.scalar(end, pa.int64()).cast(pa.timestamp("us")).cast(ts.type)
    mask = pc.and_kleene(
        pc.and_kleene(pc.equal(flows.column("source.ip"), src),
                      pc.is_in(flows.column("destination.ip"),
                               value_set=pa.array(sorted(targets), pa.string()))),
        pc.and_kleene(pc.greater_equal(ts, lo), pc.less_equal(ts, hi)))
    sel = flows.filter(pc.fill_null(mask, False))
    if sel.num_rows:
        sel = sel.filter(_PROBES.probe_mask(sel))
    return sorted(sel.column("cyberrange.flow_id").to_pylist())


_PROBES = PortScanDetector("arp/probes", mode="hosts", transports=["tcp", "udp", "icmp"],
                           udp_probes="unanswered")


class _Owners(dict):
    """MAC -> own IP; a MAC not found in ARP falls back to its most used IP source address."""

    def __init__(self, known, det, packets):
        super().__init__(known)
        self.det, self.packets = det, packets

    def get(self, mac, default=None):
        if mac not in self:
            self[mac] = self.det._owner_from_ip_packets(mac, self.packets)
        return self[mac] if self[mac] is not None else default


def _ip_key(ip):
    try:                                                  # IPv4, the common case: in C
        return (0, int.from_bytes(socket.inet_aton(ip), "big"))
    except (OSError, TypeError):
        pass
    try:
        return (1, int(ipaddress.ip_address(ip)))
    except (ValueError, TypeError):
        return (2, str(ip))


class _Timed:
    """A table sorted by a timestamp column, sliced by time with a binary search."""

    def __init__(self, table, column: str):
        self.table = table
        if table is None or table.num_rows == 0:
            self.ts = None
            return
        ts = pc.cast(table.column(column).cast(pa.timestamp("us", tz="UTC")), pa.int64())
        ts = ts.to_numpy(zero_copy_only=False)
        if ts.size > 1 and (np.diff(ts) < 0).any():
            order = np.argsort(ts, kind="stable")
            self.table, ts = table.take(pa.array(order)), ts[order]
        self.ts = ts

    def between(self, lo: int, hi: int):
        """Rows with lo <= time <= hi (microseconds)."""
        if self.ts is None:
            return self.table
        i0 = int(np.searchsorted(self.ts, lo, "left"))
        i1 = int(np.searchsorted(self.ts, hi, "right"))
        return self.table.slice(i0, max(0, i1 - i0))

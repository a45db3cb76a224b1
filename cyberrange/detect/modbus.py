"""modbus family: Modbus/TCP client and writer allow-lists, and held writes.

Modbus has no authentication: any host that reaches a PLC's port 502 may read and write it. The
defence is knowing who may talk to which PLC and who may write. This family keeps two
allow-lists, each the union of what the operator configured (the HMI, the engineering
workstation, the historian) and what ``fit`` learned from the benign baseline window:

* **clients**: ``(client, PLC)`` pairs that speak Modbus; a flow to a Modbus port from a client
  not on the list (even one that never got an answer) is ATT&CK for ICS **T0861** Point & Tag
  Identification when it reads (or tries to), **T0855** Unauthorized Command Message when it
  writes.
* **writers**: clients allowed to use write function codes (5, 6, 15, 16, 22, 23 by default);
  a write by anyone else is **T0855**. A client is a writer by configuration or when the baseline
  saw it write to that PLC.

And a rate rule: **T0831** Manipulation of Control -- at least ``hold_writes`` write requests
from one client to one PLC within ``hold_window`` seconds (an adversary holding a setpoint
against an operator who keeps resetting it). It counts write ADUs in packet records
(``cyberrange.modbus.function_code``; a segment seen by two sensors counts once) and applies to
allowed writers too: trained, a pair needs more than twice its baseline peak.

Checks run only when they have a list to compare with: untrained and with no configured
``clients`` the client check is off (there is nothing to know who is normal); the writer check
always runs (with no configured or learned writer every write alerts -- writes are rare, and an
unknown writer is exactly what must not go unseen).

Flows of one client to one PLC that follow each other within ``window`` seconds form one alert
per technique; its ``cyberrange.flow_ids`` lists them all.
"""
from __future__ import annotations

import hashlib
import ipaddress
from collections import defaultdict

import pyarrow as pa
import pyarrow.compute as pc

from .base import Alert, Detector, SettingError, columns, find_episodes, us_to_dt

WRITE_CODES = (5, 6, 15, 16, 22, 23)
CHECKS = ("clients", "writers", "hold")
FC_NAMES = {1: "read coils", 2: "read discrete inputs", 3: "read holding registers",
            4: "read input registers", 5: "write single coil", 6: "write single register",
            15: "write multiple coils", 16: "write multiple registers",
            22: "mask write register", 23: "read/write multiple registers",
            43: "read device identification"}


def _alert_id(*parts) -> str:
    return hashlib.sha1("|".join(str(p) for p in parts).encode()).hexdigest()


def _nets(value, key, name):
    try:
        if not isinstance(value, list):
            raise ValueError
        return [ipaddress.ip_network(str(v), strict=False) for v in value]
    except ValueError:
        raise SettingError(f"setting {key!r} of {name!r} must be a list of IP addresses or "
                           f"CIDRs, got {value!r}", setting=key) from None


def _in(ip, nets) -> bool:
    if not nets or ip is None:
        return False
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(addr in n for n in nets)


def modbus_flows(flows: pa.Table, ports) -> pa.Table:
    """TCP flows to a Modbus port (filtered with Arrow compute first)."""
    mask = pc.and_(pc.equal(flows.column("network.transport"), "tcp"),
                   pc.is_in(flows.column("destination.port"),
                            value_set=pa.array(sorted(ports), pa.int32())))
    return flows.filter(mask)


class ModbusDetector(Detector):
    family = "modbus"
    technique = "T0855"
    needs_packets = True
    trainable = True
    SETTINGS = {
        "ports": [502],             # Modbus/TCP server ports
        "clients": [],              # hosts (IP/CIDR) that may talk Modbus to any PLC
        "writers": [],              # hosts (IP/CIDR) that may write (HMI, engineering station)
        "write_codes": list(WRITE_CODES),
        "checks": list(CHECKS),     # which rules run: clients, writers, hold
        "window": 60,               # seconds: flows of a pair closer than this = one alert
        "hold_writes": 3,           # write requests of one client to one PLC ...
        "hold_window": 120,         # ... within this many seconds: T0831
    }

    def configure(self) -> None:
        self.ports = frozenset(self._ports("ports"))
        self.client_nets = _nets(self.settings["clients"], "clients", self.name)
        self.writer_nets = _nets(self.settings["writers"], "writers", self.name)
        codes = self.settings["write_codes"]
        if not isinstance(codes, list) or not codes or any(
                isinstance(c, bool) or not isinstance(c, int) or not 0 < c < 128 for c in codes):
            raise SettingError(f"setting 'write_codes' of {self.name!r} must be a list of "
                               f"function codes 1..127, got {codes!r}", setting="write_codes")
        self.write_codes = frozenset(codes)
        checks = self.settings["checks"]
        if isinstance(checks, str):
            checks = [checks]
        if not isinstance(checks, list) or not checks or any(c not in CHECKS for c in checks):
            raise SettingError(f"setting 'checks' of {self.name!r} must be a list drawn from "
                               f"{', '.join(CHECKS)}; got {checks!r}", setting="checks")
        self.checks = frozenset(checks)
        self.window_us = int(self._number("window", minimum=0.001) * 1_000_000)
        self.hold_writes = int(self._number("hold_writes", minimum=2, integer=True))
        self.hold_window_us = int(self._number("hold_window", minimum=0.001) * 1_000_000)
        self.pairs: set[tuple[str, str]] = set()          # learned (client, plc)
        self.writer_pairs: set[tuple[str, str]] = set()   # learned (client, plc) that wrote
        self.hold_peak: dict[tuple[str, str], int] = {}
        self._client_cache: dict[str, bool] = {}
        self._writer_cache: dict[str, bool] = {}
        self._known_by_plc = None

    # ------------------------------------------------------------------ learning

    def fit(self, flows: pa.Table, packets: pa.Table | None = None) -> None:
        self.pairs, self.writer_pairs = set(), set()
        self._known_by_plc = None
        for src, dst, codes, _t, _fid, _state in self._flow_rows(flows):
            if codes:                              # it really spoke Modbus
                self.pairs.add((src, dst))
                if self.write_codes.intersection(codes):
                    self.writer_pairs.add((src, dst))
        self.hold_peak = {}
        for pair, events in self._write_adus(packets).items():
            eps = find_episodes(events, self.hold_window_us, 1)
            self.hold_peak[pair] = max((e.value for e in eps), default=0)
        self.trained = True

    # ------------------------------------------------------------------ detection

    def _flow_rows(self, flows: pa.Table):
        if flows is None or flows.num_rows == 0:
            return []
        sel = modbus_flows(flows, self.ports)
        if sel.num_rows == 0:
            return []
        has_codes = "cyberrange.modbus.function_codes" in sel.column_names
        names = ["source.ip", "destination.ip", "event.start", "cyberrange.flow_id",
                 "cyberrange.tcp_state"]
        c = columns(sel, names)
        codes = sel.column("cyberrange.modbus.function_codes").to_pylist() if has_codes \
            else [None] * sel.num_rows
        rows = list(zip(c["source.ip"], c["destination.ip"], codes, c["event.start"],
                        c["cyberrange.flow_id"], c["cyberrange.tcp_state"]))
        rows.sort(key=lambda r: r[3])
        return rows

    def _write_adus(self, packets: pa.Table | None) -> dict[tuple, list]:
        """(client, plc) -> time-ordered ``(t_us, key, flow_id)`` of write requests; one
        sensor per connection (the lowest observer name) so a second sensor adds nothing."""
        out: dict[tuple, list] = defaultdict(list)
        if packets is None or packets.num_rows == 0 or \
                "cyberrange.modbus.function_code" not in packets.column_names:
            return out
        fc = packets.column("cyberrange.modbus.function_code")
        mask = pc.and_(pc.is_in(fc, value_set=pa.array(sorted(self.write_codes), pa.int32())),
                       pc.is_in(packets.column("destination.port"),
                                value_set=pa.array(sorted(self.ports), pa.int32())))
        sel = packets.filter(pc.fill_null(mask, False))
        if sel.num_rows == 0:
            return out
        c = columns(sel, ["@timestamp", "source.ip", "destination.ip", "observer.name",
                          "network.community_id", "cyberrange.flow_id"])
        first_obs: dict = {}
        for cid, obs in zip(c["network.community_id"], c["observer.name"]):
            if cid not in first_obs or (obs or "") < first_obs[cid]:
                first_obs[cid] = obs or ""
        for i in range(sel.num_rows):
            cid = c["network.community_id"][i]
            if (c["observer.name"][i] or "") != first_obs[cid]:
                continue
            out[(c["source.ip"][i], c["destination.ip"][i])].append(
                (c["@timestamp"][i], i, c["cyberrange.flow_id"][i]))
        for events in out.values():
            events.sort(key=lambda e: e[0])
        return out

    def _client_ok(self, src, dst) -> bool:
        if (src, dst) in self.pairs:
            return True
        if src not in self._client_cache:
            self._client_cache[src] = _in(src, self.client_nets) or _in(src, self.writer_nets)
        return self._client_cache[src]

    def _writer_ok(self, src, dst) -> bool:
        if (src, dst) in self.writer_pairs:
            return True
        if src not in self._writer_cache:
            self._writer_cache[src] = _in(src, self.writer_nets)
        return self._writer_cache[src]

    def _known(self, dst) -> dict:
        """Learned clients and writers of a PLC, for the evidence."""
        if self._known_by_plc is None:
            clients, writers = defaultdict(list), defaultdict(list)
            for c, p in sorted(self.pairs):
                clients[p].append(c)
            for c, p in sorted(self.writer_pairs):
                writers[p].append(c)
            self._known_by_plc = (clients, writers)
        clients, writers = self._known_by_plc
        return {"clients": clients.get(dst, [])[:20], "writers": writers.get(dst, [])[:20]}

    def detect(self, flows: pa.Table, packets: pa.Table | None = None) -> list[Alert]:
        rows = self._flow_rows(flows)
        alerts: list[Alert] = []
        client_check = "clients" in self.checks and (self.trained or self.client_nets)
        groups: dict[tuple, list] = defaultdict(list)     # (technique, src, dst) -> flows
        for src, dst, codes, t, fid, state in rows:
            writes = sorted(self.write_codes.intersection(codes or ()))
            if writes and "writers" in self.checks and not self._writer_ok(src, dst):
                groups[("T0855", src, dst)].append((t, fid, codes, writes))
            elif not writes and client_check and not self._client_ok(src, dst):
                groups[("T0861", src, dst)].append((t, fid, codes, writes))
        for (tech, src, dst), evs in sorted(groups.items()):
            episode: list = []
            for ev in evs + [None]:
                if episode and (ev is None or ev[0] - episode[-1][0] > self.window_us):
                    alerts.append(self._access_alert(tech, src, dst, episode))
                    episode = []
                if ev is not None:
                    episode.append(ev)
        if "hold" in self.checks:
            for (src, dst), events in sorted(self._write_adus(packets).items()):
                peak = self.hold_peak.get((src, dst), 0)
                threshold = max(self.hold_writes, 2 * peak + 1)
                for ep in find_episodes(events, self.hold_window_us, threshold):
                    alerts.append(self._hold_alert(src, dst, ep, threshold, peak))
        return alerts

    def _access_alert(self, tech, src, dst, episode) -> Alert:
        codes = sorted({c for e in episode for c in (e[2] or ())})
        described = ", ".join(f"{c} ({FC_NAMES.get(c, 'function')})" for c in codes) or \
            "none answered"
        window_s = self.window_us / 1e6
        t0, t1 = episode[0][0], episode[-1][0]
        if tech == "T0855":
            writes = sorted({c for e in episode for c in e[3]})
            feature, value = "write_by_non_writer", writes
            allowed = "a writer" if self.trained or self.writer_nets else "any configured writer"
            msg = (f"{src} sent Modbus writes (function {', '.join(map(str, writes))}) to {dst} "
                   f"in {len(episode)} connections between {us_to_dt(t0):%H:%M:%S} and "
                   f"{us_to_dt(t1):%H:%M:%S} UTC but is not {allowed} for it")
            score = 0.9
        else:
            feature, value = "unknown_modbus_client", src
            msg = (f"{src} is not a known Modbus client of {dst}: {len(episode)} connections "
                   f"to port 502 between {us_to_dt(t0):%H:%M:%S} and {us_to_dt(t1):%H:%M:%S} UTC"
                   f", function codes: {described}")
            score = 0.7 if codes else 0.5
        evidence = {"feature": feature, "value": value,
                    "baseline": self._known(dst),
                    "threshold": {"clients": [str(n) for n in self.client_nets],
                                  "writers": [str(n) for n in self.writer_nets]},
                    "function_codes": codes, "flows": len(episode), "window_s": window_s,
                    "trained": self.trained}
        return Alert(
            timestamp=us_to_dt(t0), start=us_to_dt(t0), end=us_to_dt(t1),
            rule_name=self.name, rule_category=self.family, technique=tech,
            source_ip=src, destination_ip=dst, message=msg, score=score, evidence=evidence,
            flow_ids=sorted({e[1] for e in episode}),
            alert_id=_alert_id(self.name, tech, src, dst, t0))

    def _hold_alert(self, src, dst, ep, threshold, peak) -> Alert:
        window_s = self.hold_window_us / 1e6
        fids = sorted(set(ep.flow_ids))
        msg = (f"{src} sent {len(ep.keys)} Modbus write requests to {dst} between "
               f"{us_to_dt(ep.start):%H:%M:%S} and {us_to_dt(ep.end):%H:%M:%S} UTC; at most "
               f"{ep.value} within {window_s:g} s (threshold {threshold}): a value held by "
               f"repeated writes")
        evidence = {"feature": "write_requests", "value": ep.value, "threshold": threshold,
                    "baseline": peak, "window_s": window_s, "writes": len(ep.keys),
                    "flows": len(fids), "writer_allowed": self._writer_ok(src, dst)}
        return Alert(
            timestamp=us_to_dt(ep.crossed_at), start=us_to_dt(ep.start), end=us_to_dt(ep.end),
            rule_name=self.name, rule_category=self.family, technique="T0831",
            source_ip=src, destination_ip=dst, message=msg,
            score=round(min(1.0, ep.value / (2.0 * threshold)), 3), evidence=evidence,
            flow_ids=fids, alert_id=_alert_id(self.name, "T0831", src, dst, ep.start))

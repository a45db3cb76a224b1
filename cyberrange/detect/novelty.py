"""novelty family: first-seen admin-service edges and logins against an entity baseline, above
all a server that starts logging in to other hosts (ATT&CK T1021 Remote Services; T1078 Valid
Accounts for a first-seen login). See docs/detectors/novelty.md.

``fit`` learns, from a benign baseline (a drill's warm-up, ``detect eval --train RUN``,
``detect run --train-pcap``), per host:

* the admin-service *edges* ``source -> destination:port`` that carried a session (a TCP flow
  whose handshake completed, as in ``bruteforce``, with data both ways: ``min_bytes`` each);
* which hosts *served* (answered a flow: the destination of a flow with packets back) and which
  were *admin clients* (opened an admin-service session, on any edge).

In the records, every admin-service session on an edge the baseline does not hold, from a source
not in ``admin_sources``, to an ``internal`` destination, is a *first-seen edge*, scored by what
made it unusual (``weights``; the score is their sum, capped at 1):

==========================  =======================================================================
component                   when
==========================  =======================================================================
``first_seen_edge``         always (the edge is new)
``server_turned_client``    the source served in the baseline and opened no admin session in it:
                            a server that starts logging in to other hosts
``entered``                 the source itself received an admin session on a first-seen edge from
                            another host within ``lookback`` before (a chain: entered, then onward)
``fan_out``                 the source opened first-seen admin edges to ``fan_out`` or more hosts
                            within ``lookback``
==========================  =======================================================================

An edge whose score reaches ``alert_score`` is an alert (one per source and episode: first-seen
edges of a source closer than ``lookback`` are one episode); every other first-seen edge is a
weak signal (``signals()``), with ``technique`` T1078 when the source is neither a baseline
server nor entered (a first-seen login), T1021.x otherwise. Untrained the family says nothing:
without a baseline every edge is first seen.
"""
from __future__ import annotations

import bisect
import hashlib
import ipaddress
from collections import defaultdict
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc

from ._signals import overlaps, signal
from .base import Alert, Detector, SettingError, columns, us_to_dt
from .bruteforce import established
from .lateral import REMOTE_PORTS, TECHNIQUES

WEIGHTS = {"first_seen_edge": 0.2, "server_turned_client": 0.4, "entered": 0.3,
           "fan_out": 0.2}
PRIVATE = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]


class NoveltyDetector(Detector):
    family = "novelty"
    technique = "T1021"
    trainable = True
    SETTINGS: ClassVar[dict[str, Any]] = {
        "ports": REMOTE_PORTS,        # admin services (SSH, telnet, SMB, RDP, WinRM)
        "min_bytes": 400,             # bytes from each side for a flow to be a session
        "admin_sources": [],          # IP/CIDR never flagged (jump hosts, admins)
        "internal": PRIVATE,          # destinations that count (IP/CIDR)
        "lookback": 600,              # seconds: entered / fan-out / episode horizon
        "fan_out": 2,                 # first-seen admin destinations for the fan_out component
        "weights": WEIGHTS,           # component -> weight (missing: the default)
        "alert_score": 0.9,           # a first-seen edge scoring this much is an alert
        "signals": True,              # first-seen edges under alert_score as weak signals
    }

    def configure(self) -> None:
        self.ports = frozenset(self._ports("ports"))
        self.min_bytes = int(self._number("min_bytes", minimum=0, integer=True))
        self.admin_nets = self._nets("admin_sources")
        self.internal = self._nets("internal")
        self.lookback_us = int(self._number("lookback", minimum=1) * 1_000_000)
        self.fan_out = int(self._number("fan_out", minimum=2, integer=True))
        w = self.settings["weights"]
        if not isinstance(w, dict) or any(k not in WEIGHTS for k in w) or any(
                isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1
                for v in w.values()):
            raise SettingError(f"setting 'weights' of {self.name!r} must map some of "
                               f"{', '.join(WEIGHTS)} to numbers 0-1, got {w!r}",
                               setting="weights")
        self.weights = {**WEIGHTS, **w}
        self.alert_score = float(self._number("alert_score", minimum=0.01))
        if not isinstance(self.settings["signals"], bool):
            raise SettingError(f"setting 'signals' of {self.name!r} must be true or false",
                               setting="signals")
        self.edges: set[tuple] = set()
        self.served: set[str] = set()
        self.admin_clients: set[str] = set()

    def _nets(self, key):
        nets = self.settings[key]
        bad = SettingError(f"setting {key!r} of {self.name!r} must be a list of IP addresses "
                           f"or CIDRs, got {nets!r}", setting=key)
        if not isinstance(nets, list):
            raise bad
        try:
            return [ipaddress.ip_network(str(n), strict=False) for n in nets]
        except ValueError:
            raise bad from None

    @staticmethod
    def _within(ip, nets) -> bool:
        try:
            addr = ipaddress.ip_address(ip)
        except (ValueError, TypeError):
            return False
        return any(addr in n for n in nets)

    def _sessions(self, flows: pa.Table) -> pa.Table:
        """Admin-service sessions: established TCP to ``ports`` with data both ways."""
        mask = pc.and_kleene(
            pc.is_in(flows.column("destination.port"),
                     value_set=pa.array(sorted(self.ports), pa.int32())),
            pc.and_kleene(established(flows), pc.and_kleene(
                pc.greater_equal(pc.fill_null(flows.column("source.bytes"), 0), self.min_bytes),
                pc.greater_equal(pc.fill_null(flows.column("destination.bytes"), 0),
                                 self.min_bytes))))
        return flows.filter(pc.fill_null(mask, False))

    # ------------------------------------------------------------------ learning

    def fit(self, flows: pa.Table, packets: pa.Table | None = None) -> None:
        self.edges, self.served, self.admin_clients = set(), set(), set()
        if flows is not None and flows.num_rows:
            ses = columns(self._sessions(flows),
                          ["source.ip", "destination.ip", "destination.port"])
            self.edges = set(zip(ses["source.ip"], ses["destination.ip"],
                                 ses["destination.port"]))
            self.admin_clients = set(ses["source.ip"])
            answered = flows.filter(pc.greater(
                pc.fill_null(flows.column("destination.packets"), 0), 0))
            self.served = set(pc.unique(answered.column("destination.ip")).to_pylist()) - {None}
        self.trained = True

    # ------------------------------------------------------------------ detection

    def _first_seen(self, flows: pa.Table) -> list[tuple]:
        """``(t, src, dst, port, fid)`` of sessions on edges the baseline does not hold, the
        first session of each edge only, in time order."""
        if not self.trained or flows.num_rows == 0:
            return []
        c = columns(self._sessions(flows), ["event.start", "source.ip", "destination.ip",
                                            "destination.port", "cyberrange.flow_id"])
        first: dict[tuple, tuple] = {}
        for t, src, dst, port, fid in sorted(zip(*c.values())):
            edge = (src, dst, port)
            if edge in self.edges or edge in first or src == dst:
                continue
            if self._within(src, self.admin_nets) or not self._within(dst, self.internal):
                continue
            first[edge] = (t, src, dst, port, fid)
        return sorted(first.values())

    def _score(self, events) -> list[dict]:
        """Each first-seen edge with its components and score."""
        entered: dict[str, list] = defaultdict(list)       # host -> [(t, from)]
        for t, src, dst, _, _ in events:
            entered[dst].append((t, src))
        out_by_src: dict[str, list] = defaultdict(list)    # src -> [(t, dst)]
        scored = []
        for t, src, dst, port, fid in events:
            out_by_src[src].append((t, dst))
            parts = {"first_seen_edge": True}
            if src in self.served and src not in self.admin_clients:
                parts["server_turned_client"] = True
            ins = entered.get(src, [])
            lo = bisect.bisect_left(ins, (t - self.lookback_us, ""))
            hi = bisect.bisect_left(ins, (t, ""))
            came = sorted({s for _, s in ins[lo:hi] if s != dst})
            if came:
                parts["entered"] = came
            dsts = {d for tt, d in out_by_src[src] if tt >= t - self.lookback_us}
            if len(dsts) >= self.fan_out:
                parts["fan_out"] = len(dsts)
            score = min(1.0, sum(self.weights[k] for k in parts))
            scored.append({"t": t, "src": src, "dst": dst, "port": port, "fid": fid,
                           "parts": parts, "score": round(score, 3)})
        return scored

    def detect(self, flows: pa.Table, packets: pa.Table | None = None) -> list[Alert]:
        scored = self._score(self._first_seen(flows))
        by_src: dict[str, list] = defaultdict(list)
        for s in scored:
            by_src[s["src"]].append(s)
        alerts = []
        for src, evs in sorted(by_src.items()):
            episode: list = []
            for ev in evs + [None]:
                if episode and (ev is None or ev["t"] - episode[-1]["t"] > self.lookback_us):
                    crossed = next((e for e in episode if e["score"] >= self.alert_score), None)
                    if crossed is not None:
                        alerts.append(self._alert(src, episode, crossed))
                    episode = []
                if ev is not None:
                    episode.append(ev)
        return alerts

    def _why(self, parts) -> str:
        why = []
        if "server_turned_client" in parts:
            why.append("it served in the baseline and logged in nowhere")
        if "entered" in parts:
            why.append(f"it was itself just entered from {', '.join(parts['entered'])}")
        if "fan_out" in parts:
            why.append(f"{parts['fan_out']} new admin destinations within the lookback")
        return "; ".join(why) or "nothing else unusual"

    def _evidence(self, e) -> dict:
        return {"feature": "first_seen_admin_edge", "value": f"{e['src']}->{e['dst']}:{e['port']}",
                "threshold": self.alert_score, "score": e["score"],
                "components": {k: self.weights[k] for k in e["parts"]},
                "details": {k: v for k, v in e["parts"].items() if v is not True},
                "baseline": {"edges": len(self.edges), "served": e["src"] in self.served,
                             "admin_client": e["src"] in self.admin_clients,
                             "trained": self.trained}}

    def _alert(self, src, episode, crossed) -> Alert:
        later = [e for e in episode if e["t"] >= crossed["t"]]
        dsts = sorted({f"{e['dst']}:{e['port']}" for e in later})
        t0, t1 = later[0]["t"], later[-1]["t"]
        msg = (f"{src} opened admin sessions on {len(dsts)} edges the baseline does not hold "
               f"({', '.join(dsts[:4])}{', ...' if len(dsts) > 4 else ''}) between "
               f"{us_to_dt(t0):%H:%M:%S} and {us_to_dt(t1):%H:%M:%S} UTC: "
               f"{self._why(crossed['parts'])} (score {crossed['score']:g}, alert at "
               f"{self.alert_score:g})")
        evidence = self._evidence(crossed)
        evidence["edges"] = dsts[:20]
        text = f"{self.name}|{src}|{crossed['fid']}"
        return Alert(
            timestamp=us_to_dt(crossed["t"]), start=us_to_dt(t0), end=us_to_dt(t1),
            rule_name=self.name, rule_category=self.family,
            technique=TECHNIQUES.get(crossed["port"], "T1021"), source_ip=src,
            destination_ip=crossed["dst"] if len({e["dst"] for e in later}) == 1 else None,
            message=msg, score=crossed["score"], evidence=evidence,
            flow_ids=[e["fid"] for e in later],
            alert_id=hashlib.sha1(text.encode()).hexdigest())

    def signals(self, flows: pa.Table, packets: pa.Table | None = None) -> list[Alert]:
        """Every first-seen admin edge that no alert of its source covers."""
        if not self.settings["signals"]:
            return []
        scored = self._score(self._first_seen(flows))
        alerts = self.detect(flows)
        out = []
        for e in scored:
            if overlaps(alerts, e["src"], e["t"], e["t"]):
                continue
            lateral = {"server_turned_client", "entered"} & set(e["parts"])
            technique = TECHNIQUES.get(e["port"], "T1021") if lateral else "T1078"
            out.append(signal(
                self, t0=e["t"], t1=e["t"], source_ip=e["src"], destination_ip=e["dst"],
                message=(f"{e['src']} opened an admin session to {e['dst']}:{e['port']}, an "
                         f"edge the baseline does not hold ({self._why(e['parts'])}) "
                         f"(score {e['score']:g}, alert at {self.alert_score:g})"),
                score=e["score"], evidence=self._evidence(e), flow_ids=[e["fid"]],
                technique=technique, key=f"{e['dst']}:{e['port']}"))
        return out

"""Incidents across the kill chain: a run's alerts and weak signals correlated by entity and time.

A blue team triages incidents, not alerts: one incident per intrusion, with the chain of hosts
it went through, the kill-chain stages it reached, a combined score and one line of explanation
per observation that contributed. The correlator sees what the detectors saw (alerts and
signals in the store) and nothing else: no ledger, no label (docs/incidents.md).

How observations become incidents:

1. **Observations.** Every alert and every weak signal (``kind="signal"``, see
   ``registry.collect_signals``) of the run, each with a kill-chain *stage* from the ATT&CK
   tactic of its technique (``stage_of``: ``TECHNIQUE_TACTICS``, the library's catalogue,
   then ``EXTRA_STAGES``) and a *weight*: a rule or statistical alert ``alert_weight``, an alert of a learned detector
   ``learned_weight`` (they raise false alerts at a configured rate: alone they are weak), a
   signal its own score (how close it came to its detector's threshold).
2. **Links.** Two observations with the same source within ``link_window_s`` are one actor's.
   A *pivot*: an observation from host H is linked to the last observation *into* H before it
   (within ``pivot_window_s``; alerts preferred to signals) -- the destination became a source,
   so the intruder moved on (learned anomalies, which do not say what they saw, make no
   pivots; a host answering the one that reached it is no pivot; only what reached H before
   H first acted can be its entry, so a busy server does not chain all its clients). Linked observations form one group (union-find). Destinations
   alone never link: two hosts talking to one busy server are not one intrusion.
3. **Score.** Per group: each detector counts once (its strongest observation), combined by
   noisy-OR ``1 - prod(1 - w)``; every kill-chain stage beyond the first (held by an
   observation of weight ``stage_floor`` or more) and every pivot then removes a further
   ``stage_bonus`` of what is left: ``1 - (1 - p) * (1 - bonus)^steps``.
4. **Raised.** A group is an incident when it holds an alert of a rule or statistical detector,
   or when its combined score reaches ``threshold`` with evidence from at least
   ``min_detectors`` detectors, one of them no learned detector, *and the chain progressed*:
   a pivot, or two kill-chain stages towards different destinations -- so signals none of which alerts alone can raise an
   incident, while neither one detector's noise, nor learned anomalies (their false-alert rate
   is a configured target, not zero), nor several detectors' views of one host's logins (an
   operator's day) can. Only observations of weight ``stage_floor`` or more count a stage or
   make a pivot: a faint rhythm is no C2 stage. Its time (``@timestamp``) is the first observation
   at which that became true.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.compute as pc

from ..ecs import technique_id
from ..telemetry.schema import INCIDENT_SCHEMA

__all__ = ["EXTRA_STAGES", "STAGES", "Incident", "Observation", "Settings", "correlate",
           "incident_rows", "incidents_to_table", "observations", "run_incidents", "stage_of"]

#: the kill chain, in order (the stages an incident lists)
STAGES = ("recon", "credential-access", "lateral-movement", "c2", "exfiltration", "impact")

#: ATT&CK tactic (as the technique catalogue names it) -> kill-chain stage
TACTIC_STAGES = {
    "reconnaissance": "recon", "discovery": "recon",
    "credential-access": "credential-access", "initial-access": "credential-access",
    "lateral-movement": "lateral-movement",
    "command-and-control": "c2",
    "exfiltration": "exfiltration", "collection": "exfiltration",
    "impact": "impact", "impair-process-control": "impact",
    "inhibit-response-function": "impact",
}

#: techniques detectors may name that the attack library does not run (stage by ATT&CK tactic)
EXTRA_STAGES = {
    "T1595": "recon", "T1590": "recon", "T1135": "recon", "T1040": "credential-access",
    "T1078": "credential-access", "T1110": "credential-access", "T1557": "credential-access",
    "T1021": "lateral-movement", "T1563": "lateral-movement", "T1570": "lateral-movement",
    "T1071": "c2", "T1090": "c2", "T1095": "c2", "T1105": "c2", "T1571": "c2", "T1572": "c2",
    "T1573": "c2", "T1020": "exfiltration", "T1030": "exfiltration", "T1048": "exfiltration",
    "T1567": "exfiltration", "T1485": "impact", "T1489": "impact", "T1490": "impact",
    "T1498": "impact", "T1499": "impact",
}

SEVERITIES = ("low", "medium", "high", "critical")
LATE_STAGES = frozenset({"lateral-movement", "c2", "exfiltration", "impact"})


#: the ATT&CK tactic of every technique the attack library runs, as its catalogue names it.
#: Kept here because detectors may not import the attack side (which holds the ground truth);
#: tests/detect/test_incidents.py checks it against cyberrange.attack.catalog.
TECHNIQUE_TACTICS = {
    "T0831": "impact", "T0855": "impair-process-control", "T0861": "collection",
    "T1018": "discovery", "T1021.004": "lateral-movement", "T1041": "exfiltration",
    "T1046": "discovery", "T1048": "exfiltration", "T1071.001": "command-and-control",
    "T1071.004": "command-and-control", "T1110.001": "credential-access",
    "T1110.003": "credential-access", "T1498": "impact", "T1499": "impact",
    "T1557.002": "credential-access",
    "CR-J0001": "impact",            # RF jamming: a custom id (no alert claims it today)
}


def stage_of(technique: str | None) -> str | None:
    """The kill-chain stage of an ATT&CK (or library) technique id; None when unknown.
    ``T1046-udp`` and ``T1110.001`` are looked up as such, then by their ATT&CK parent."""
    if not technique:
        return None
    base = technique.split("-", 1)[0]
    tactic = TECHNIQUE_TACTICS.get(technique) or TECHNIQUE_TACTICS.get(base)
    if tactic and TACTIC_STAGES.get(tactic):
        return TACTIC_STAGES[tactic]
    parent = base.split(".", 1)[0]
    return EXTRA_STAGES.get(base) or EXTRA_STAGES.get(parent) or next(
        (TACTIC_STAGES[t] for tid, t in sorted(TECHNIQUE_TACTICS.items())
         if tid.split(".", 1)[0] == parent and TACTIC_STAGES.get(t)), None)


@dataclass
class Settings:
    """The correlator's knobs (docs/incidents.md says how they were chosen)."""
    link_window_s: float = 900.0     # one source's observations this close: one actor
    pivot_window_s: float = 1800.0   # a host acting this long after something reached it
    threshold: float = 0.7           # combined score that raises a group without a rule alert
    min_detectors: int = 2           # ... with evidence from at least this many detectors
    stage_bonus: float = 0.25        # share of the rest each further stage or pivot adds
    alert_weight: float = 0.9        # what a rule or statistical alert contributes
    learned_weight: float = 0.4      # what an alert of a learned detector contributes
    stage_floor: float = 0.3         # weakest observation that counts a stage or makes a pivot
    progression: bool = True         # signals alone need a pivot or two stages

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


@dataclass
class Observation:
    """One alert or signal as the correlator sees it (times in µs since the epoch)."""
    id: str
    kind: str                   # alert | signal
    rule: str                   # detector instance (rule.name)
    category: str               # detector family (rule.category)
    technique: str | None
    stage: str | None
    t: int                      # @timestamp
    start: int
    end: int
    src: str | None
    dst: str | None
    weight: float
    raises: bool                # a rule/statistical alert: raises an incident on its own
    message: str = ""
    learned: bool = False       # an alert of a learned detector (corroborates, never leads)

    @property
    def actor(self) -> str | None:
        return self.src or self.dst


@dataclass
class Incident:
    """One incident: a linked group of observations that was raised (module doc)."""
    incident_id: str
    raised_at: int
    start: int
    end: int
    score: float
    severity: str
    entities: list[str]
    stages: dict[str, list[str]]
    pivots: list[dict]
    explanation: list[str]
    alert_ids: list[str]
    signal_ids: list[str]
    summary: str = ""
    run_id: str | None = None
    observations: list[Observation] = field(default_factory=list, repr=False)

    def to_row(self) -> dict:
        reached = [s for s in STAGES if self.stages.get(s)]
        return {
            "@timestamp": _dt(self.raised_at), "event.kind": "alert",
            "event.dataset": "cyberrange.incident", "event.start": _dt(self.start),
            "event.end": _dt(self.end), "event.severity": SEVERITIES.index(self.severity) + 1,
            "cyberrange.severity": self.severity, "cyberrange.incident_id": self.incident_id,
            "cyberrange.score": round(self.score, 4), "related.ip": list(self.entities),
            "threat.tactic.name": reached,
            "cyberrange.stages": json.dumps(self.stages, sort_keys=True),
            "cyberrange.pivots": json.dumps(self.pivots, sort_keys=True),
            "message": self.summary, "cyberrange.explanation": list(self.explanation),
            "cyberrange.alert_ids": list(self.alert_ids),
            "cyberrange.signal_ids": list(self.signal_ids), "cyberrange.run_id": self.run_id,
        }


def _dt(us: int) -> datetime:
    return datetime.fromtimestamp(us / 1_000_000, tz=timezone.utc).replace(
        microsecond=int(us % 1_000_000))


def _us(col) -> list[int]:
    return pc.cast(col.cast(pa.timestamp("us", tz="UTC")), pa.int64()).to_pylist()


def learned_categories() -> frozenset:
    """Detector families whose alerts are learned anomalies (weak on their own)."""
    from .registry import FAMILIES
    return frozenset(n for n, cls in FAMILIES.items() if getattr(cls, "kind", "") == "learned")


def observations(alerts: pa.Table | None, signals: pa.Table | None,
                 settings: Settings | None = None, learned: frozenset | None = None
                 ) -> list[Observation]:
    """Alert and signal rows (ALERT_SCHEMA) -> observations, in time order."""
    s = settings or Settings()
    learned = learned_categories() if learned is None else learned
    out: list[Observation] = []
    for table, kind in ((alerts, "alert"), (signals, "signal")):
        if table is None or not table.num_rows:
            continue
        cols = {n: table.column(n).to_pylist() for n in (
            "cyberrange.alert_id", "rule.name", "rule.category", "threat.technique.id",
            "source.ip", "destination.ip", "cyberrange.score", "message")}
        ts, starts, ends = (_us(table.column(n)) for n in
                            ("@timestamp", "event.start", "event.end"))
        for i in range(table.num_rows):
            cat = cols["rule.category"][i] or ""
            tech = technique_id(cols["threat.technique.id"][i])    # old runs: "unknown"
            is_learned = False
            if kind == "signal":
                weight = min(max(float(cols["cyberrange.score"][i] or 0.0), 0.0), 0.999)
                raises = False
            elif cat in learned:
                weight, raises = s.learned_weight, False
                is_learned = True
            else:
                weight, raises = s.alert_weight, True
            out.append(Observation(
                id=cols["cyberrange.alert_id"][i], kind=kind, rule=cols["rule.name"][i],
                category=cat, technique=tech, stage=stage_of(tech), t=ts[i],
                start=starts[i] if starts[i] is not None else ts[i],
                end=ends[i] if ends[i] is not None else ts[i],
                src=cols["source.ip"][i], dst=cols["destination.ip"][i], weight=weight,
                raises=raises, message=cols["message"][i] or "", learned=is_learned))
    out.sort(key=lambda o: (o.t, o.kind, o.id))
    return out


class _Groups:
    """Union-find over observation indexes."""

    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _link(obs: list[Observation], s: Settings) -> tuple[_Groups, list[tuple[int, int]]]:
    """Union same-source observations close in time, and pivots; returns the groups and the
    pivot links ``(into H, from H)`` as index pairs."""
    groups = _Groups(len(obs))
    link_us, pivot_us = int(s.link_window_s * 1e6), int(s.pivot_window_s * 1e6)
    last_of: dict[str, int] = {}            # actor -> index of its latest observation
    for i, o in enumerate(obs):
        a = o.actor
        if a is not None:
            j = last_of.get(a)
            if j is not None and o.start - max(obs[j].end, obs[j].t) <= link_us:
                groups.union(i, j)
            last_of[a] = i
    into: dict[str, list[int]] = {}         # host -> observations into it, time order
    for i, o in enumerate(obs):
        if o.dst and o.src and o.dst != o.src and not o.learned and o.weight >= s.stage_floor:
            into.setdefault(o.dst, []).append(i)
    # when each host first acted itself: only what reached it before that can be its entry
    # (a busy server that acted all along is no foothold: else it would chain every client)
    first_act: dict[str, int] = {}
    for o in obs:
        if o.src and not o.learned and o.weight >= s.stage_floor:
            first_act.setdefault(o.src, o.t)
    pivots = []
    for i, o in enumerate(obs):
        if not o.src or o.src not in into or o.learned or o.weight < s.stage_floor:
            continue
        entry_by = first_act[o.src]
        cands = [j for j in into[o.src] if obs[j].start <= entry_by and obs[j].src != o.src
                 and o.start - obs[j].end <= pivot_us and j != i and obs[j].src != o.dst]
        if not cands:
            continue
        j = max(cands, key=lambda k: (obs[k].kind == "alert", obs[k].weight >= 0.5, obs[k].t))
        groups.union(i, j)
        pivots.append((j, i))
    return groups, pivots


def _combine(best: dict[str, float], n_stages: int, n_pivots: int, bonus: float) -> float:
    rest = 1.0
    for w in best.values():
        rest *= 1.0 - w
    steps = max(n_stages - 1, 0) + n_pivots
    return 1.0 - rest * (1.0 - bonus) ** steps


def _progressed(seen: set) -> bool:
    """Two kill-chain stages seen towards different destinations: the chain moved on. Two
    detectors' readings of the same sessions (short logins to a server read as guessing by
    one and as a new edge by another) are one step, whatever stages they name."""
    return any(s1 != s2 and d1 != d2 for s1, d1 in seen for s2, d2 in seen)


def _raised_at(members: list[Observation], pivot_at: list[int], s: Settings) -> int | None:
    """Time of the first observation at which the group would be raised (None: never)."""
    best: dict[str, float] = {}
    stages: set = set()         # stages held by an observation of weight >= stage_floor
    seen: set = set()           # (stage, destination) of those observations
    led = False                 # an observation that is no learned anomaly
    for o in members:
        if o.raises:
            return o.t
        best[o.rule] = max(best.get(o.rule, 0.0), o.weight)
        led = led or not o.learned
        if o.stage and o.weight >= s.stage_floor:
            stages.add(o.stage)
            seen.add((o.stage, o.dst))
        pivots = sum(1 for t in pivot_at if t <= o.t)
        if led and (pivots or _progressed(seen) or not s.progression) and \
                len(best) >= s.min_detectors and \
                _combine(best, len(stages), pivots, s.stage_bonus) >= s.threshold:
            return o.t
    return None


def _severity(score: float, stages: set, threshold: float) -> str:
    if score >= 0.9 and stages & LATE_STAGES:
        return "critical"
    if score >= 0.8:
        return "high"
    return "medium" if score >= threshold else "low"


def _line(o: Observation) -> str:
    when = _dt(o.t).strftime("%H:%M:%S")
    return (f"{o.stage or 'other'}: {when} {o.kind} {o.rule} ({o.technique or '-'}) "
            f"{o.src or '?'} -> {o.dst or 'many'}: {o.message} [weight {o.weight:.2f}]")


def _incident(members: list[Observation], pivots: list[tuple[Observation, Observation]],
              raised: int, s: Settings, run_id: str | None) -> Incident:
    best: dict[str, float] = {}
    stages: dict[str, list[str]] = {st: [] for st in STAGES}
    entities: list[str] = []
    for o in members:
        best[o.rule] = max(best.get(o.rule, 0.0), o.weight)
        stages.setdefault(o.stage or "other", []).append(o.id)
        for ip in (o.src, o.dst):
            if ip and ip not in entities:
                entities.append(ip)
    reached = {st for st in STAGES if stages[st]}
    counted = {o.stage for o in members if o.stage and o.weight >= s.stage_floor}
    score = _combine(best, len(counted), len(pivots), s.stage_bonus)
    piv = [{"host": b.src, "from": a.src, "to": b.dst, "at": _dt(b.t).isoformat()}
           for a, b in pivots]
    chain = " -> ".join(st for st in STAGES if stages[st]) or "no known stage"
    n_al = sum(o.kind == "alert" for o in members)
    hosts = " => ".join(dict.fromkeys([members[0].actor or "?"] + [p["host"] for p in piv]))
    summary = (f"{hosts}: {chain}; {n_al} alerts, {len(members) - n_al} signals from "
               f"{len(best)} detectors" + (f", {len(piv)} pivots" if piv else "") +
               f"; score {score:.2f}")
    ids = sorted(o.id for o in members)
    return Incident(
        incident_id=hashlib.sha1("|".join(ids).encode()).hexdigest()[:16], raised_at=raised,
        start=min(o.start for o in members), end=max(max(o.end, o.t) for o in members),
        score=round(score, 4), severity=_severity(score, reached, s.threshold),
        entities=entities, stages=stages, pivots=piv, explanation=[_line(o) for o in members],
        alert_ids=[o.id for o in members if o.kind == "alert"],
        signal_ids=[o.id for o in members if o.kind == "signal"], summary=summary,
        run_id=run_id, observations=members)


def correlate(obs: list[Observation], settings: Settings | None = None,
              run_id: str | None = None) -> list[Incident]:
    """Group observations into incidents (module doc); sorted by the time they were raised."""
    s = settings or Settings()
    obs = sorted(obs, key=lambda o: (o.t, o.kind, o.id))
    groups, pivot_links = _link(obs, s)
    members: dict[int, list[int]] = {}
    for i in range(len(obs)):
        members.setdefault(groups.find(i), []).append(i)
    pivots_of: dict[int, list[tuple[int, int]]] = {}
    for a, b in pivot_links:
        pivots_of.setdefault(groups.find(b), []).append((a, b))
    out = []
    for root, idx in members.items():
        group = [obs[i] for i in idx]
        piv = sorted(pivots_of.get(root, []), key=lambda p: obs[p[1]].t)
        # one pivot per host counts (a second session from the same foothold moves no further)
        seen, uniq = set(), []
        for a, b in piv:
            if obs[b].src not in seen:
                seen.add(obs[b].src)
                uniq.append((obs[a], obs[b]))
        raised = _raised_at(group, [b.t for _, b in uniq], s)
        if raised is not None:
            out.append(_incident(group, uniq, raised, s, run_id))
    out.sort(key=lambda inc: (inc.raised_at, inc.incident_id))
    return out


def incidents_to_table(incidents: list[Incident], run_id: str | None = None) -> pa.Table:
    rows = []
    for inc in incidents:
        if run_id is not None:
            inc.run_id = run_id
        rows.append(inc.to_row())
    if not rows:
        return INCIDENT_SCHEMA.empty_table()
    return pa.Table.from_pylist(rows, schema=INCIDENT_SCHEMA)


def run_incidents(store, run_id: str, settings: Settings | None = None, *,
                  write: bool = True, since_us: int | None = None) -> pa.Table:
    """Correlate a run's alerts and signals in ``store`` into incidents; store them in the
    ``incidents`` table (replacing the run's earlier ones) and return them. ``since_us``:
    only observations from then on (the evaluation window after a training baseline)."""
    alerts = store.read_or_empty("alerts", run_id)
    signals = store.read_or_empty("signals", run_id)
    obs = observations(alerts, signals, settings)
    if since_us is not None:
        obs = [o for o in obs if o.t >= since_us]
    table = incidents_to_table(correlate(obs, settings, run_id), run_id)
    if write and store.has("incidents"):
        store.delete("incidents", run_id)
        store.write("incidents", table)
    return table


def incident_rows(table: pa.Table) -> list[dict]:
    """Incident records as plain dicts (``stages``/``pivots`` decoded) for scoring and views."""
    out = []
    for r in table.to_pylist():
        r = dict(r)
        r["stages"] = json.loads(r.pop("cyberrange.stages") or "{}")
        r["pivots"] = json.loads(r.pop("cyberrange.pivots") or "[]")
        out.append(r)
    return out

"""Detection envelopes, part 1: parameter spaces and scenario draws (no twin, no ground truth).

A *scenario* is one drill: a topology, a benign seed and intensity, and a version 2 playbook of
attack steps whose main parameters are drawn from wide ranges (``SPACES``). The draws depend
only on the scenario seed: the same seed gives the same playbook, byte for byte. Seeds of the
TUNING split and of the EVALUATION split come from disjoint ranges (``split_seeds``); nobody
tunes a detector on the evaluation split (docs/detection-envelopes.md).

Packing many points into one drill without letting them contaminate each other:

* every step runs from its **own actor** (a host in a sensored zone that is no step's target):
  every detector keys its windows by source (scans, sweeps, guessing, floods, beacons, upload
  volume, learned episodes), and the slow rules' 10-minute windows could never be waited out
  inside one drill. An actor does at most one step of the scan class (scan, sweep, ARP scan)
  and at most one other step, after a drawn quiet period longer than every short window
  (30 s spray window + 5 s);
* the step drawers and their parameter ranges are in ``envelope_steps``; ``FOCUS`` names the
  family subsets a drill may be drawn from (``rare``: the families with too few steps);
* steps are placed on an absolute schedule (``parallel: true`` + ``timing.at``), at most
  ``LANES`` non-beacon actors at a time; beacons run alongside from their own actors;
* the drawn parameters of every step are written beside the playbook (``plan``), never into the
  packets: detectors cannot see them. Scoring joins them with the ledger in
  ``envelope_eval`` (this package is the only place where ground truth is read).
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import yaml

from .envelope_steps import DRAWERS, SPACES, Draw, Offer, support_files

__all__ = ["FAMILIES", "FOCUS", "SPACES", "SPLITS", "Scenario", "draw_scenario",
           "focus_families", "split_seeds", "support_files"]

#: seed ranges of the two splits: disjoint by construction (tests check it)
SPLITS = {"tuning": 1000, "eval": 9000}
SPLIT_SIZE = 1000
LANES = 4                 # non-beacon actors running at the same time
DRILL_S = 320.0           # target length of the attack phase of one drill (s)
SECOND_STEP = 0.6         # chance that an actor runs a second step after a quiet period
GENERATOR = 7             # in every plan: bump when a change alters the draws of a seed
#: 6 (2026-12-06): two floods never hit one target within FLOOD_GAP of each other
#: 7 (2026-12-06): valid-login draws 0-2 hops onward from the entered host (before: always 0)
FLOODS = ("udp-flood", "syn-flood")
#: seconds between two floods of one target: the flood detectors key by destination (5 s
#: episode gap, 2 s windows), so overlapping floods would share their alerts
FLOOD_GAP = 15.0
QUIET = (35.0, 90.0)      # quiet period between an actor's two steps (s), > every short window
#: focus ``ics``: an actor that reaches a PLC runs one step of each Modbus family in turn, each
#: after a quiet period longer than modbus-allowlist's windows (60 s per client/PLC pair, 120 s
#: for a hold), so each step is an alert of its own (only three hosts of the shipped
#: topologies reach a PLC at all)
CHAIN = ("modbus-write", "modbus-read", "modbus-hold")
CHAIN_QUIET = (130.0, 160.0)
START_GAP = (3.0, 12.0)   # drawn pause before a lane starts in its slot (s)


def split_seeds(split: str, n: int, start: int = 0) -> list[int]:
    """The scenario seeds of ``split`` ('tuning' or 'eval'): ``n`` of them from the split's
    ``start``-th on, never shared with the other split."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} (expected {', '.join(SPLITS)})")
    if not 0 < n or not 0 <= start or start + n > SPLIT_SIZE:
        raise ValueError(f"a split holds seeds 0..{SPLIT_SIZE - 1} from its base, not "
                         f"{start}..{start + n - 1}")
    return [SPLITS[split] + start + i for i in range(n)]


# ---------------------------------------------------------------------------- parameter spaces
@dataclass(frozen=True)
class Family:
    """One kind of step. ``main``: the parameter recall is plotted against; ``harder``: which
    end of it is harder to detect ('low' or 'high'); ``params``: every recorded parameter."""
    name: str
    techniques: tuple
    main: str
    harder: str
    unit: str
    params: tuple
    scan_class: bool = False
    beacon: bool = False
    also: tuple = ()          # more envelope axes: (parameter, harder end, unit)


FAMILIES = {f.name: f for f in [
    Family("scan", ("T1046", "T1046-udp", "T1046-connect"), "rate", "low", "probes/s",
           ("rate", "probes", "ports", "hosts", "protocol"), scan_class=True,
           also=(("probes", "low", "probes"),)),
    Family("sweep", ("T1018",), "addresses", "low", "addresses",
           ("addresses", "rate", "onlink"), scan_class=True,
           also=(("rate", "low", "addresses/s"),)),
    Family("arp-scan", ("T1018-arp",), "rate", "low", "requests/s",
           ("rate", "addresses"), scan_class=True, also=(("addresses", "low", "addresses"),)),
    Family("guess", ("T1110.001",), "guesses", "low", "guesses", ("guesses", "pause"),
           also=(("pause", "high", "s between guesses"),)),
    Family("spray", ("T1110.003",), "width", "low", "attempts/round",
           ("width", "services", "accounts", "rounds", "pause", "round_pause")),
    Family("udp-flood", ("T1498",), "pps", "low", "packets/s", ("pps", "duration", "sources"),
           also=(("duration", "low", "s"),)),
    Family("syn-flood", ("T1499",), "pps", "low", "packets/s", ("pps", "duration", "sources"),
           also=(("duration", "low", "s"),)),
    Family("http-beacon", ("T1071.001",), "interval", "high", "s",
           ("interval", "jitter", "count"), beacon=True,
           also=(("jitter", "high", "(fraction)"), ("count", "low", "check-ins"))),
    Family("dns-beacon", ("T1071.004",), "interval", "high", "s",
           ("interval", "jitter", "count"), beacon=True,
           also=(("jitter", "high", "(fraction)"), ("count", "low", "polls"))),
    Family("dns-exfil", ("T1048",), "rate", "low", "queries/s", ("rate", "queries", "chars"),
           also=(("queries", "low", "queries"),)),
    Family("upload", ("T1041",), "size", "low", "bytes", ("size", "chunk", "rate")),
    Family("modbus-write", ("T0855",), "writes", "low", "writes", ("writes", "interval")),
    # hops: SSH logins onward from the entered host to hosts it never contacts in its benign
    # day, derived when scored (0: the lone quiet login, or hops over its routine edges only;
    # drills made before generator 7 drew none); commands change nothing a sensor sees
    Family("valid-login", ("T1021.004",), "hops", "low", "new onward logins",
           ("hops", "commands")),
    # new_plcs: the PLCs read that the actor does not poll in its benign day (the run's
    # benign plan; 0: the PLC's own HMI reading it), derived when scored
    Family("modbus-read", ("T0861",), "registers", "low", "registers",
           ("registers", "plcs", "new_plcs"),
           also=(("new_plcs", "low", "PLCs the actor never polls"),)),
    Family("modbus-hold", ("T0831",), "interval", "high", "s between writes",
           ("interval", "writes"), also=(("writes", "low", "writes"),)),
    Family("arp-poison", ("T1557.002",), "duration", "low", "s",
           ("duration", "interval", "rounds"), scan_class=True,
           also=(("interval", "high", "s between rounds"),)),
    Family("banner", ("T1046-banner",), "ports", "low", "connections", ("ports", "hosts"),
           scan_class=True),
    Family("replay", ("replay",), "rate", "low", "packets/s", ("rate", "loops", "packets"),
           scan_class=True),
]}



# ---------------------------------------------------------------------------- one drill
@dataclass
class Scenario:
    """One drawn drill: the playbook (a dict, version 2) and the plan (what was drawn)."""
    seed: int
    split: str
    topology_file: str
    topology: str
    intensity: int
    playbook: dict
    plan: dict

    def playbook_yaml(self) -> str:
        head = (f"# Generated by bench/envelope.py generate: split {self.split}, seed {self.seed}.\n"
                f"# Drawn parameters of every step: the plan file beside this one. Do not edit:\n"
                f"# regenerate (the same seed gives the same file).\n")
        return head + yaml.safe_dump(self.playbook, sort_keys=False, width=100)


#: how often a family is drawn, relative to the others (before its use in the drill damps it):
#: the issue's misses (slow scans, small sweeps, few guesses, sprays, exfiltration) come first
WEIGHTS = {"scan": 3, "sweep": 2, "arp-scan": 1, "guess": 3, "spray": 3, "udp-flood": 1.2,
           "syn-flood": 1.2, "http-beacon": 1, "dns-beacon": 2.5, "dns-exfil": 2.5, "upload": 1,
           "modbus-write": 2, "valid-login": 2, "modbus-read": 1.5, "modbus-hold": 1.5,
           "arp-poison": 1.5, "banner": 1.5, "replay": 1}

#: family subsets a scenario may be drawn from (``draw_scenario(focus=...)``): ``rare`` leaves
#: out the families that every drill already measures many times (scans, sweeps, ARP scans,
#: guessing, floods), so that a short drill adds steps where the envelopes have too few
FOCUS = {"all": list(FAMILIES),
         "rare": [f for f in FAMILIES if f not in ("scan", "sweep", "arp-scan", "guess",
                                                   "udp-flood", "syn-flood")]}
FOCUS["ics"] = FOCUS["rare"]        # the same families, with the Modbus chain (CHAIN)
#: ``thin``: only the families whose envelope cells had too few steps after the first drills
#: (2026-12-06: spray, DNS-beacon interval, Modbus read and hold, upload, UDP-flood rate), each
#: with its full parameter range (a focus narrows the families, never the ranges)
FOCUS["thin"] = ["spray", "udp-flood", "dns-beacon", "upload", "modbus-read", "modbus-hold"]
#: ``beacon``: HTTP and DNS beacons only (the tuning drills of seeds 1500-1511 were drawn so)
FOCUS["beacon"] = ["http-beacon", "dns-beacon"]


def focus_families(focus: str = "all", families=None) -> list[str]:
    """The families a drill draws from: ``families`` (names of ``FAMILIES``) when given, else
    those of the focus ``focus``. Unknown names raise ValueError naming them."""
    if families:
        bad = [f for f in families if f not in FAMILIES]
        if bad:
            raise ValueError(f"unknown famil{'ies' if len(bad) > 1 else 'y'} "
                             f"{', '.join(map(repr, bad))} (expected {', '.join(FAMILIES)})")
        return list(dict.fromkeys(families))
    if focus not in FOCUS:
        raise ValueError(f"unknown focus {focus!r} (expected {', '.join(FOCUS)})")
    return list(FOCUS[focus])


def _pick_family(rng, feasible: list[str], used: dict) -> str:
    """A family among ``feasible``, by ``WEIGHTS``, damped by how often this drill used it."""
    return rng.choices(feasible, weights=[WEIGHTS[f] / (1 + 2 * used.get(f, 0))
                                          for f in feasible])[0]


def _draw_for(rng, off: Offer, actor: str, families: list[str], used: dict) -> Draw | None:
    """A step of one of ``families`` that ``actor`` can run here (None: none can)."""
    left = list(families)
    while left:
        fam = _pick_family(rng, left, used)
        d = DRAWERS[fam](rng, off, actor)
        if d is not None:
            used[fam] = used.get(fam, 0) + 1
            return d
        left.remove(fam)
    return None


def _step_doc(sid: str, actor: str, d: Draw, at: float) -> dict:
    rec = ", ".join(f"{k} {v}" for k, v in d.recorded.items())
    return {"id": sid, "name": f"{d.family}: {rec}", "technique": d.technique, "actor": actor,
            "targets": list(d.targets), "parallel": True, "params": d.params,
            "timing": {"at": round(at, 1)}}


def _chain(rng, off: Offer, actor: str, first: str, end: float, families: list, add) -> float:
    """The other Modbus families after ``first``, each after a ``CHAIN_QUIET`` pause; returns
    when the actor's last step ends."""
    rest = [f for f in CHAIN if f != first and f in families]
    rng.shuffle(rest)
    for fam in rest:
        d = DRAWERS[fam](rng, off, actor)
        if d is None:
            continue
        quiet = round(rng.uniform(*CHAIN_QUIET), 1)
        end = add(actor, d, end + quiet, quiet) + d.seconds
    return end


class _Book:
    """The steps of one drill as they are placed: the playbook's steps, the plan's records,
    and when each target is flooded. ``add`` returns the step's start: a flood whose target
    another flood hits within ``FLOOD_GAP`` starts ``FLOOD_GAP`` after it (and its quiet
    period grows by as much)."""

    def __init__(self, topo):
        self.topo = topo
        self.steps: list = []
        self.plan: dict = {}
        self.flooded: dict = {}         # target -> [(start, end)] of its floods

    def _unflooded(self, targets, at: float, secs: float) -> float:
        busy = [w for t in targets for w in self.flooded.get(t, [])]
        while clash := [b for a, b in busy if at < b + FLOOD_GAP and a < at + secs + FLOOD_GAP]:
            at = max(clash) + FLOOD_GAP
        return at

    def add(self, actor: str, d: Draw, at: float, quiet=None) -> float:
        if d.family in FLOODS:
            late = self._unflooded(d.targets, at, d.seconds)
            quiet = None if quiet is None else round(quiet + late - at, 1)
            at = late
            for t in d.targets:
                self.flooded.setdefault(t, []).append((at, at + d.seconds))
        sid = f"{d.family}-{len(self.steps) + 1}"
        self.steps.append(_step_doc(sid, actor, d, at))
        self.plan[sid] = {"family": d.family, "technique": d.technique, "actor": actor,
                          "actor_role": self.topo.nodes[actor].role, "targets": list(d.targets),
                          "at": round(at, 1), "expected_s": round(d.seconds, 1),
                          "quiet_before": quiet, "params": d.recorded}
        t = at + d.seconds - sum(g + s for _, _, g, s in d.then)
        for k, (target, params, gap, secs) in enumerate(d.then):
            t += gap
            hid = f"{sid}-hop{k + 1}"
            self.steps.append({"id": hid, "name": f"{d.family}: hop {k + 1} from the entered host",
                               "technique": d.technique, "actor": f"#{{{sid}.compromised}}",
                               "from": "first", "targets": [target], "parallel": True,
                               "params": params, "timing": {"at": round(t, 1)}})
            self.plan[hid] = {"family": d.family, "technique": d.technique, "part_of": sid,
                              "actor": self.plan[sid]["targets"][0], "targets": [target],
                              "at": round(t, 1), "expected_s": secs, "params": {}}
            t += secs
        return at


def _second_families(first: str, scans: list, others: list) -> list:
    """What an actor may draw after a quiet period: the other class (scan-class after any
    other step, and the reverse). With no scan-class family to draw (focus ``thin``) another
    family of the non-scan class, not the first one's (its long windows and per-source
    baselines: two sprays from one source are one spray to ``password-spray``) and not a
    Modbus one (those chain)."""
    if first in scans:
        return others
    if scans:
        return scans
    return [f for f in others if f != first and f not in CHAIN]


def draw_scenario(seed: int, split: str, topology_file: str, families=None,
                  focus: str = "all") -> Scenario:
    """The drill of ``seed``: every draw comes from ``random.Random(f"envelope/{seed}")``.
    ``focus`` (a key of ``FOCUS``) or ``families`` limit the families drawn; with any focus
    but ``all`` (or a family list) up to three actors beacon (the beacon families have the
    fewest steps per drill), every other actor draws the scarce families first, and with
    ``ics``, ``thin`` or a family list a host that reaches a PLC chains the Modbus families."""
    from ..model.loader import load_topology
    listed = bool(families)
    narrow = focus != "all" or listed
    families = focus_families(focus, families)
    topo = load_topology(topology_file)
    off = Offer.of(topo)
    rng = random.Random(f"envelope/{seed}")
    beacons = [f for f in families if FAMILIES[f].beacon]
    scans = [f for f in families if FAMILIES[f].scan_class]
    others = [f for f in families if f not in beacons and f not in scans]
    actors = list(off.actors)
    rng.shuffle(actors)
    used: dict = {}
    book = _Book(topo)
    add = book.add
    rare = narrow       # the scarce families first, and always a second step
    chains = focus != "rare" and narrow     # ics, thin, a family list: the Modbus chain
    n_beacons = min(len(actors) // (2 if rare else 3), 3) \
        if (off.c2_http or off.c2_dns) and beacons else 0
    lanes = []          # actors that do not beacon (one that cannot reach a C2 server too)
    for actor in actors:
        d = _draw_for(rng, off, actor, beacons, used) if n_beacons else None
        if d is None:
            lanes.append(actor)
            continue
        add(actor, d, rng.uniform(0, 15))
        n_beacons -= 1
    free = [0.0] * LANES
    for actor in lanes:
        k = min(range(LANES), key=free.__getitem__)
        if free[k] > DRILL_S:
            break
        if rare:        # a scarce family if this actor can run one, else a scan-class one
            d1 = _draw_for(rng, off, actor, others, used) or _draw_for(rng, off, actor, scans,
                                                                        used)
        else:
            d1 = _draw_for(rng, off, actor, scans + others, used)
        if d1 is None:
            continue
        at = add(actor, d1, free[k] + rng.uniform(*START_GAP))
        end = at + d1.seconds
        chained = chains and d1.family in CHAIN and any(f in families for f in CHAIN
                                                        if f != d1.family)
        if chained:         # the chain is this actor's whole share of the drill
            end = _chain(rng, off, actor, d1.family, end, families, add)
        if (rng.random() < SECOND_STEP or rare) and not chained:    # after a quiet period
            d2 = _draw_for(rng, off, actor, _second_families(d1.family, scans, others), used)
            if d2 is not None:
                quiet = round(rng.uniform(*QUIET), 1)
                end = add(actor, d2, end + quiet, quiet) + d2.seconds
        free[k] = end
    name = f"envelope-{split}-{seed}"
    intensity = rng.choice([1, 2, 3])
    steps, plan_steps = book.steps, book.plan
    pb = {"version": 2, "name": name,
          "description": f"Detection-envelope drill ({split} split, seed {seed}): "
                         f"{len(steps)} steps with drawn parameters",
          "topology": topo.name, "seed": seed, "defaults": {"max_rate": 20000}, "steps": steps}
    plan = {"generator": GENERATOR, "seed": seed, "split": split,
            "focus": "families" if listed else focus, **({"families": families} if listed else {}),
            "topology": topo.name,
            "topology_file": str(topology_file), "intensity": intensity,
            "expected_s": round(max([s["at"] + s["expected_s"] for s in plan_steps.values()]
                                    or [0.0]), 1),
            "steps": plan_steps}
    return Scenario(seed, split, str(topology_file), topo.name, intensity, pb, plan)

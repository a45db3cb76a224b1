"""Corpus steps against the published detection envelope (reads ground truth: the ledger).

Issue 15's goal is *recall >= 0.9 inside each technique's published envelope*. The corpus
(``bench/corpus.py``) runs playbooks written by hand, whose steps may lie outside the envelope
(a single ICMP echo is no sweep of >= 6 addresses). For every step of a run this module derives
the step's envelope family (``FAMILIES``, by technique) and its parameters **as
``envelope_steps.py`` defines them**, from what the run keeps: the playbook it ran (the
manifest's ``inputs.playbook``, checked by SHA-256; an envelope drill's
``envelope-playbook.yaml``) with the catalogue's defaults and ``timing.rate`` filled in by the
loader, and the ledger (targets as expanded at run time, facts such as credentials found or
check-ins made). Then it places the step against the published envelope
(``docs/data/envelopes.json``, ``envelope_publish``):

| status | meaning |
|---|---|
| inside | inside every axis of its family that has an envelope |
| outside | outside at least one such axis; ``misses`` says which ("guesses 3 < 8") |
| no-envelope | its family has no envelope (or its technique is drawn by no family) |
| unknown | its parameters cannot be derived; ``why`` says why |

Parameters (``envelope_steps.py``'s draws): scan ``probes`` = hosts x ports, ``rate``; sweep and
ARP scan ``addresses`` (a CIDR written in the playbook counts its hosts, as the drawn /29-/24
do; otherwise the addresses the ledger lists), ``rate``; guess ``guesses`` at one service
(usernames x passwords, fewer when ``stop_on_success`` stopped an account at its password:
the largest over the step's services), ``pause``; spray ``width`` = accounts x services;
floods ``pps``, ``duration`` (or count / rate); beacons ``interval``, ``jitter``, ``count`` (the
check-ins made when the playbook gives a duration instead); DNS exfiltration ``rate``,
``queries`` (made); upload ``size``; Modbus ``writes``, ``registers``, ``interval``; ARP
poisoning ``duration``, ``interval``; banner ``ports`` = connections; replay ``rate``.
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
from collections import Counter, defaultdict
from pathlib import Path

from .envelope_eval import benign_plan, benign_targets
from .envelope_publish import axis_inside, technique_family

__all__ = ["STATUSES", "by_technique", "classify", "classify_corpus", "derive", "goal",
           "markdown", "step_specs"]

STATUSES = ("inside", "outside", "no-envelope", "unknown")
GOAL_RECALL = 0.9
ROOT = Path(__file__).resolve().parent.parent.parent


class Unknown(Exception):
    """The step's parameters cannot be derived (the message says why)."""


# ---------------------------------------------------------------------------- the playbook
def _playbook_path(run_dir: Path) -> tuple[Path | None, str | None]:
    own = run_dir / "envelope-playbook.yaml"
    if own.exists():
        return own, None
    man = json.loads((run_dir / "manifest.json").read_text())
    pb = (man.get("inputs") or {}).get("playbook") or {}
    if not pb.get("path"):
        return None, "the manifest names no playbook"
    path = Path(pb["path"])
    for cand in ([path] if path.is_absolute() else [run_dir / path, ROOT / path]):
        if cand.exists():
            if pb.get("sha256") and hashlib.sha256(cand.read_bytes()).hexdigest() != pb["sha256"]:
                return None, f"{cand} changed since the run (SHA-256 differs)"
            return cand, None
    return None, f"the playbook it ran ({path}) is gone"


def step_specs(run_dir) -> tuple[dict, str | None]:
    """Step id -> the playbook step the run ran (``params`` with the catalogue's defaults and
    ``timing.rate``/``timing.duration`` filled in, as the loader does); ``({}, why)`` when it
    cannot be read. A playbook the loader refuses now (a file it names lies outside today's
    confinement, e.g. a paced copy's pcap) is read for its numbers alone (``_raw_steps``)."""
    from ..attack.playbook import load_playbook
    from ..errors import UserError
    path, why = _playbook_path(Path(run_dir))
    if path is None:
        return {}, why
    try:
        return {s.id: s for s in load_playbook(str(path)).steps}, None
    except UserError as e:
        try:
            return _raw_steps(path), None
        except (KeyError, TypeError, ValueError, AttributeError):
            return {}, f"its playbook does not load ({str(e).splitlines()[0][:160]})"


def _raw_steps(path: Path) -> dict:
    """The playbook's steps read as ``load_playbook`` fills their numbers (defaults, the rate
    of ``timing``, 0 = the per-step cap), without opening the files they name."""
    from types import SimpleNamespace

    import yaml

    from ..attack.catalog import TECHNIQUES
    from ..attack.playbook import DEFAULT_MAX_RATE
    d = yaml.safe_load(path.read_text())
    cap = float((d.get("defaults") or {}).get("max_rate", DEFAULT_MAX_RATE))
    out = {}
    for s in d["steps"]:
        tech = TECHNIQUES[s["technique"]]
        params = {**tech.with_defaults({}), **(s.get("params") or {})}
        timing = s.get("timing") or {}
        for key in ("rate", "duration"):
            if timing.get(key) is not None:
                params[key] = timing[key]
        if "rate" in tech.params and isinstance(params.get("rate"), (int, float)):
            params["rate"] = min(params["rate"], cap) or cap
        out[s["id"]] = SimpleNamespace(id=s["id"], params=params,
                                       targets=list(s.get("targets") or []))
    return out


# ---------------------------------------------------------------------------- parameters
def _num(p: dict, key: str) -> float:
    v = p.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise Unknown(f"params.{key} is {v!r}")
    return float(v)


def _list(p: dict, key: str) -> list:
    v = p.get(key)
    if not isinstance(v, list) or any(isinstance(x, str) and "#{" in x for x in v):
        raise Unknown(f"params.{key} is {v!r}")
    return v


def _hosts(recs: list) -> int:
    n = max(len(set(r.get("targets") or [])) for r in recs)
    if not n:
        raise Unknown("the ledger lists no target")
    return n


def _addresses(written: list, recs: list) -> int:
    """Addresses swept: each CIDR written in the playbook by its hosts (as drawn), plus the
    ledger's other targets; else the ledger's targets (zones: as expanded at run time)."""
    nets = []
    for t in written:
        try:
            net = ipaddress.ip_network(str(t), strict=False)
        except ValueError:
            continue
        if net.num_addresses > 1:
            nets.append(net)
    best = 0
    for r in recs:
        ips = set(r.get("targets") or [])
        rest = [ip for ip in ips if not any(ipaddress.ip_address(ip) in n for n in nets)]
        best = max(best, sum(max(1, n.num_addresses - 2) for n in nets) + len(rest))
    if not best:
        raise Unknown("the ledger lists no target")
    return best


def _guesses(p: dict, recs: list) -> int:
    """Attempts at the busiest service: usernames x passwords, an account cut short at its
    password when ``stop_on_success`` (the technique's loop: users, then passwords)."""
    users, pws = _list(p, "usernames"), [str(x) for x in _list(p, "passwords")]
    best = 0
    for r in recs:
        found = defaultdict(dict)
        for c in ((r.get("facts") or {}).get("credentials") or []):
            found[str(c.get("target", "")).split(":")[0]][str(c.get("user"))] = str(c.get("password"))
        for ip in set(r.get("targets") or []) or {""}:
            n = 0
            for u in users:
                pw = found[ip].get(str(u))
                n += pws.index(pw) + 1 if p.get("stop_on_success") and pw in pws else len(pws)
            best = max(best, n)
    return best


def _beacon(p: dict, recs: list) -> dict:
    count = p.get("count")
    if not isinstance(count, (int, float)) or not count:
        made = [(r.get("facts") or {}).get("beacons") for r in recs]
        made = [m for m in made if isinstance(m, int)]
        if not made:
            raise Unknown("params.count is 0 and the ledger records no check-ins")
        count = max(made)
    return {"interval": _num(p, "interval"), "jitter": _num(p, "jitter"), "count": count}


def _flood(p: dict, recs: list) -> dict:
    rate = _num(p, "rate")
    dur = p.get("duration") or (_num(p, "count") / rate if rate else 0)
    return {"pps": rate, "duration": float(dur)}


def _exfil(p: dict, recs: list) -> dict:
    made = [(r.get("facts") or {}).get("queries") for r in recs]
    made = [m for m in made if isinstance(m, int)]
    if not made:
        raise Unknown("the ledger records no query count")
    return {"rate": _num(p, "rate"), "queries": max(made)}


def _upload(p: dict, recs: list) -> dict:
    if p.get("data"):           # an inline payload: the bytes it sent
        sent = [(r.get("facts") or {}).get("bytes") for r in recs]
        sent = [b for b in sent if isinstance(b, int)]
        if not sent:
            raise Unknown("params.data given and the ledger records no byte count")
        return {"size": max(sent)}
    return {"size": _num(p, "size")}


DERIVE = {
    "scan": lambda p, r, w: {"rate": _num(p, "rate"),
                             "probes": _hosts(r) * len(_list(p, "ports"))},
    "sweep": lambda p, r, w: {"addresses": _addresses(w, r), "rate": _num(p, "rate")},
    "arp-scan": lambda p, r, w: {"rate": _num(p, "rate"), "addresses": _addresses(w, r)},
    "guess": lambda p, r, w: {"guesses": _guesses(p, r), "pause": _num(p, "pause")},
    "spray": lambda p, r, w: {"width": len(_list(p, "usernames")) * _hosts(r)
                              * len(_list(p, "ports"))},
    "udp-flood": lambda p, r, w: _flood(p, r),
    "syn-flood": lambda p, r, w: _flood(p, r),
    "http-beacon": lambda p, r, w: _beacon(p, r),
    "dns-beacon": lambda p, r, w: _beacon(p, r),
    "dns-exfil": lambda p, r, w: _exfil(p, r),
    "upload": lambda p, r, w: _upload(p, r),
    "modbus-write": lambda p, r, w: {"writes": _num(p, "repeat"), "interval": _num(p, "interval")},
    "valid-login": lambda p, r, w: {"commands": len(_list(p, "commands"))},
    "modbus-read": lambda p, r, w: {"registers": _num(p, "count"), "plcs": len(_hosts_of(r))},
    "modbus-hold": lambda p, r, w: {"interval": _num(p, "interval"), "writes": _num(p, "repeat")},
    "arp-poison": lambda p, r, w: {"duration": _num(p, "duration"),
                                   "interval": _num(p, "interval")},
    "banner": lambda p, r, w: {"ports": _hosts(r) * len(_list(p, "ports"))},
    "replay": lambda p, r, w: {"rate": _num(p, "rate")},
}


def _hosts_of(recs: list) -> set:
    return {ip for r in recs for ip in (r.get("targets") or [])}


def _hops(recs: list, ledger: list, benign: dict | None) -> int:
    """valid-login's ``hops``: later remote-service logins (T1021.*) that succeeded, ran on a
    host this step entered (its ``compromised`` fact, by address) and went to a host that one
    never contacts in its benign day (``envelope_eval.benign_targets``, by address)."""
    entered = {ip for r in recs for ip in ((r.get("facts") or {}).get("compromised") or [])}
    end = max(float(r["end"]) for r in recs if r.get("end") is not None) \
        if any(r.get("end") is not None for r in recs) else None
    mine = {id(r) for r in recs}
    n = 0
    for r in ledger:
        if id(r) in mine or not str(r.get("technique") or "").startswith("T1021") \
                or r.get("outcome") != "succeeded" or r.get("actor_ip") not in entered \
                or (end is not None and r.get("start") is not None
                    and float(r["start"]) < end - 1.0):
            continue
        n += not set(r.get("targets") or []) <= benign_targets(benign, r.get("actor"), "ip")
    return n


def derive(family: str, params: dict, recs: list, written_targets=(), ctx=None) -> dict:
    """The envelope parameters of one step of ``family``: ``params`` as loaded (defaults
    filled in), ``recs`` its ledger records; ``ctx`` what the run adds: ``ledger`` (every
    record: valid-login's ``hops``) and ``benign`` (the run's benign plan: modbus-read's
    ``new_plcs``). Raises ``Unknown`` with the reason."""
    if not recs:
        raise Unknown("no ledger record")
    got = DERIVE[family](params, recs, list(written_targets))
    if family == "valid-login":
        if ctx is None or "ledger" not in ctx:
            raise Unknown("hops need the run's ledger")
        got["hops"] = _hops(recs, ctx["ledger"], ctx.get("benign"))
    if family == "modbus-read":
        if ctx is None or "benign" not in ctx:
            raise Unknown("new_plcs needs the run's benign plan")
        polled = benign_targets(ctx["benign"], recs[0].get("actor"), "ip", "modbus")
        got["new_plcs"] = sum(1 for ip in _hosts_of(recs) if ip not in polled)
    return got


# ---------------------------------------------------------------------------- classification
def _miss(ax: dict, x: float) -> str:
    neg = {">=": "<", "<": ">=", "<=": ">"}[ax["direction"]]
    unit = ax.get("unit", "")
    if unit == ax["param"]:
        return f"{x:g} {unit} {neg} {ax['bound']:g}"
    return f"{ax['param']} {x:g} {neg} {ax['bound']:g} {unit}".rstrip()


def classify(fam_entry: dict | None, params: dict) -> tuple[str, list, str | None]:
    """(status, misses, why) of one step with derived ``params`` against its family's
    published entry (None: the technique is drawn by no family)."""
    if fam_entry is None:
        return "no-envelope", [], "its technique is drawn by no envelope family"
    if fam_entry["status"] != "envelope":
        return "no-envelope", [], fam_entry.get("why") or "its family has no envelope"
    misses = []
    for ax in fam_entry["axes"]:
        if ax.get("direction") is None:
            continue
        if ax["param"] not in params:
            return "unknown", [], f"no {ax['param']} derived"
        if not axis_inside(ax, float(params[ax["param"]])):
            misses.append(_miss(ax, float(params[ax["param"]])))
    return ("outside" if misses else "inside"), misses, None


def classify_run(run_dir, published: dict) -> dict:
    """(step id -> row) for one run: family, params, status, misses, why."""
    from ..attack.ledger import read_ledger
    fam_of = technique_family()
    specs, why_pb = step_specs(run_dir)
    recs = defaultdict(list)
    for r in read_ledger(Path(run_dir) / "ledger.jsonl"):
        recs[r["step_id"]].append(r)
    # no benign plan (no benign traffic in the run): every PLC and every hop is new
    ctx = {"ledger": [r for rs in recs.values() for r in rs], "benign": benign_plan(run_dir)}
    out = {}
    for sid, rs in recs.items():
        tech = rs[0].get("technique")
        fam = fam_of.get(tech)
        row = {"step_id": sid, "technique": tech, "family": fam, "params": {}, "misses": [],
               "why": None}
        entry = published["families"].get(fam) if fam else None
        if fam is None or entry is None or entry["status"] != "envelope":
            row["status"], row["misses"], row["why"] = classify(entry, {})
        elif sid not in specs:
            row["status"], row["why"] = "unknown", why_pb or "step not in the playbook it ran"
        else:
            try:
                row["params"] = derive(fam, dict(specs[sid].params), rs, specs[sid].targets,
                                       ctx)
                row["status"], row["misses"], row["why"] = classify(entry, row["params"])
            except Unknown as e:
                row["status"], row["why"] = "unknown", str(e)
        out[sid] = row
    return out


def classify_corpus(ev: dict, published: dict) -> list[dict]:
    """Every step of ``ev`` (``detect eval --json``: its ``totals.step_outcomes``, the run
    folders in ``runs``) with what the detectors made of it and where it lies."""
    dirs = {r["run_id"]: r["dir"] for r in ev["runs"]}
    cache: dict = {}
    rows = []
    for s in ev["totals"].get("step_outcomes") or []:
        run = s["run_id"]
        if run not in cache:
            cache[run] = classify_run(dirs[run], published)
        c = cache[run].get(s["step_id"]) or {"status": "unknown", "why": "not in the ledger",
                                             "family": None, "params": {}, "misses": []}
        rows.append({**s, **{k: c[k] for k in ("family", "params", "status", "misses", "why")}})
    return rows


# ---------------------------------------------------------------------------- per technique
def by_technique(rows: list[dict]) -> dict:
    """Technique -> counted steps by status, detected inside, recall inside, what lies out."""
    out: dict = {}
    for r in rows:
        if not r["counted"]:
            continue
        t = out.setdefault(r["technique"], {"family": r["family"], "counted": 0,
                                            **{k: 0 for k in STATUSES}, "detected_inside": 0,
                                            "outside_steps": [], "unknown_steps": [],
                                            "no_envelope_why": None})
        t["counted"] += 1
        t[r["status"]] += 1
        label = f"{r['run_id']} {r['step_id']}"
        if r["status"] == "inside":
            t["detected_inside"] += r["detected"]
        elif r["status"] == "outside":
            t["outside_steps"].append({"step": label, "detected": r["detected"],
                                       "misses": r["misses"]})
        elif r["status"] == "unknown":
            t["unknown_steps"].append({"step": label, "why": r["why"]})
        else:
            t["no_envelope_why"] = r["why"]
    for t in out.values():
        t["recall_inside"] = (round(t["detected_inside"] / t["inside"], 4)
                              if t["inside"] else None)
    return dict(sorted(out.items()))


def goal(techs: dict, attack_only=None) -> tuple[str, bool | None, str]:
    """Issue 15's goal over the corpus: (goal, met, detail); ``met`` None: not measured.
    ``attack_only``: a predicate on technique ids (the all-steps goal counts ATT&CK ones)."""
    name = f"every technique recall >= {GOAL_RECALL} inside its published envelope"
    techs = {k: v for k, v in techs.items() if attack_only is None or attack_only(k)}
    low = [f"{k} {v['recall_inside']:.2f} ({v['detected_inside']}/{v['inside']})"
           for k, v in techs.items() if v["inside"] and v["recall_inside"] < GOAL_RECALL]
    blind = [f"{k} ({v['family'] or 'no family'}: "
             + ("no envelope" if v["no-envelope"] else "no step inside") + ")"
             for k, v in techs.items() if not v["inside"]]
    n_in = sum(v["inside"] for v in techs.values())
    n_det = sum(v["detected_inside"] for v in techs.values())
    seen = Counter(f"{k} {v['family']}: {'; '.join(o['misses'])}" for k, v in techs.items()
                   for o in v["outside_steps"])
    outside = [f"{m} (x{n})" if n > 1 else m for m, n in seen.items()]
    tail = (f"; inside: {n_det}/{n_in} steps of {sum(bool(v['inside']) for v in techs.values())}"
            f" techniques" + (f"; outside: {', '.join(outside)}" if outside else ""))
    if not n_in:
        return name, None, "not measured (no counted step inside a published envelope)"
    if low:
        return name, False, "below: " + ", ".join(low) + (
            f"; not measured: {', '.join(blind)}" if blind else "") + tail
    if blind:
        return name, False, f"not measured: {', '.join(blind)}" + tail
    return name, True, "all met" + tail


def markdown(techs: dict, source: str) -> list[str]:
    """A per-technique table: counted steps, inside / detected / recall inside, outside
    (with the bound each misses), no envelope, unknown."""
    lines = ["### Recall inside the published envelope", "",
             (f"Each counted step placed against the published envelope of its family "
              f"(`{source}`, measured on the envelope drills' evaluation split; "
              "`cyberrange/score/corpus_envelope.py`): *inside* every axis that has an "
              "envelope, *outside* one (the bound it misses), *no envelope* (its family has "
              "none: not measured, never met), *unknown* (parameters not derivable)."), "",
             ("| technique | family | counted | inside | detected inside | recall inside | "
              "outside (parameter vs bound) | no envelope | unknown |"),
             "|---|---|---:|---:|---:|---:|---|---:|---:|"]
    for k, v in techs.items():
        out = "; ".join(f"{', '.join(o['misses'])}{'' if o['detected'] else ' (missed)'}"
                        for o in v["outside_steps"]) or "—"
        rec = "✘ not measured" if v["recall_inside"] is None else f"{v['recall_inside']:.2f}"
        unk = str(v["unknown"]) + (f" ({'; '.join(u['why'] for u in v['unknown_steps'])})"
                                   if v["unknown"] else "")
        lines.append(f"| {k} | {v['family'] or '—'} | {v['counted']} | {v['inside']} | "
                     f"{v['detected_inside']} | {rec} | {out} | {v['no-envelope']} | {unk} |")
    return lines + [""]

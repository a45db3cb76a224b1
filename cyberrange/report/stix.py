"""A run as a STIX 2.1 bundle (``drill report RUN --stix FILE``), built with the ``stix2``
library so every object is checked by it as it is made.

- an ``identity`` for the range (the run), which made every object and sighted every alert;
- an ``attack-pattern`` per ATT&CK technique the playbook played or an alert claimed, with
  ``external_references`` ``mitre-attack`` (Enterprise) or ``mitre-ics-attack`` (``T0xxx``);
  a custom technique of the catalogue (``CR-J0001`` RF jamming: ATT&CK has none) gets one
  too, with the external reference ``cyberrange`` and its custom id, no MITRE reference and no
  URL (its related ATT&CK ids in the description);
- an ``indicator`` per attacker address (the ledger's actor addresses, and the targets of C2 and
  exfiltration steps: the attacker's servers) and per C2 domain (the playbook's ``domain``
  parameters), with ``indicates`` relationships to the techniques they took part in;
- a ``sighting`` per (detector, technique) of the attack-pattern and per (detector, address) of
  the indicator, with ``count``, ``first_seen`` and ``last_seen`` of the alerts.

The field-by-field mapping is in docs/exports.md. Ids are UUIDv5 of the run id and what the
object stands for, so the same run gives the same bundle and two runs' bundles never share an
id (their attack-patterns join through the ATT&CK ``external_id``). An alert without an ATT&CK
id and without an attacker address in it is sighted nowhere; it is counted in the notes this
module returns. The ledger (ground truth) is read here as in the rest of the after-action
report: this is reporting, not detection.
"""
from __future__ import annotations

import ipaddress
import re
import uuid
from datetime import datetime, timezone

import stix2

from cyberrange.report.content import attack_domain, attack_id, technique_name

NAMESPACE = uuid.UUID("6f1c5a38-7c43-5d0e-9a0b-2c2f1f7e0c11")   # cyberrange's STIX ids
TECHNIQUE_ID = re.compile(r"^T\d{4}(\.\d{3})?$")
#: ATT&CK techniques whose step targets are the attacker's own servers (C2, exfiltration)
C2_TECHNIQUES = ("T1071", "T1095", "T1571", "T1572", "T1573", "T1568", "T1041", "T1048")
SOURCE_NAME = {"enterprise-attack": "mitre-attack", "ics-attack": "mitre-ics-attack"}


def _id(kind: str, *key) -> str:
    return f"{kind}--{uuid.uuid5(NAMESPACE, '|'.join(map(str, (kind, *key))))}"


def _dt(epoch) -> datetime | None:
    if isinstance(epoch, (int, float)) and not isinstance(epoch, bool):
        return datetime.fromtimestamp(epoch, timezone.utc)
    return None


def technique_url(tid: str) -> str:
    return "https://attack.mitre.org/techniques/" + tid.replace(".", "/") + "/"


def attack_name(tid: str, names: list[str]) -> str:
    """The ATT&CK name from the catalogue's names of the variants played: the part before the
    variant (``Network Service Discovery: TCP SYN scan`` -> ``Network Service Discovery``), the
    parenthesised note dropped; the id when no name is known."""
    for name in names:
        name = re.sub(r"\s*\(.*\)\s*$", "", name).strip()
        if "." not in tid:
            name = name.split(":", 1)[0].strip()
        if name:
            return name
    return tid


def attack_pattern(run_id: str, tid: str, names: list[str], identity: str, when: datetime):
    domain = attack_domain(tid)
    played = "; ".join(names)
    return stix2.AttackPattern(
        id=_id("attack-pattern", run_id, tid), created=when, modified=when,
        created_by_ref=identity,
        name=attack_name(tid, names),
        description=f"As the range plays or detects it: {played}" if played else None,
        external_references=[{"source_name": SOURCE_NAME[domain], "external_id": tid,
                              "url": technique_url(tid)}])


def custom_spec(technique):
    """The catalogue's entry of a custom technique id (``CR-J0001``), else None."""
    from cyberrange.attack.catalog import TECHNIQUES
    spec = TECHNIQUES.get(technique) if isinstance(technique, str) else None
    return spec if spec is not None and spec.custom else None


def pattern_id(technique) -> str | None:
    """The id an attack-pattern stands for: the ATT&CK id, or a custom catalogue id."""
    spec = custom_spec(technique)
    return spec.id if spec is not None else attack_id(technique)


def custom_pattern(run_id: str, spec, identity: str, when: datetime):
    """The attack-pattern of a custom technique: its own external id, no MITRE reference."""
    related = f"; related ATT&CK: {', '.join(spec.related)}" if spec.related else ""
    return stix2.AttackPattern(
        id=_id("attack-pattern", run_id, spec.id), created=when, modified=when,
        created_by_ref=identity, name=spec.name,
        description=f"A cyberrange custom technique (ATT&CK has none){related}",
        external_references=[{"source_name": "cyberrange", "external_id": spec.id,
                              "description": "custom technique id of the cyberrange catalogue "
                                             "(docs/techniques.md)"}])


def _ip(value) -> str | None:
    """An IP address from a ledger target (``10.0.0.5``, ``10.0.0.5:443``), else None."""
    if not isinstance(value, str):
        return None
    text = value.rsplit(":", 1)[0] if value.count(":") == 1 else value
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _is_c2(technique) -> bool:
    tid = attack_id(technique) or ""
    return any(tid == t or tid.startswith(t + ".") for t in C2_TECHNIQUES)


def attacker_addresses(ledger: list[dict]) -> dict[str, dict]:
    """address -> {"role", "techniques", "first", "nodes"} from the ledger's executed steps."""
    out: dict[str, dict] = {}

    def add(ip, role, rec):
        e = out.setdefault(ip, {"role": role, "techniques": set(), "first": None, "nodes": set()})
        if tid := pattern_id(rec.get("technique")):
            e["techniques"].add(tid)
        start = rec.get("start")
        if isinstance(start, (int, float)):
            e["first"] = start if e["first"] is None else min(e["first"], start)
        if role == "actor" and isinstance(rec.get("actor"), str):
            e["nodes"].add(rec["actor"])

    for rec in ledger:
        if rec.get("outcome") == "skipped":
            continue
        if ip := _ip(rec.get("actor_ip")):
            add(ip, "actor", rec)
        if _is_c2(rec.get("technique")):
            for t in rec.get("targets") or []:
                if (ip := _ip(t)) and ip not in out:
                    add(ip, "c2", rec)
                elif ip:
                    add(ip, out[ip]["role"], rec)
    return out


def c2_domains(playbook) -> dict[str, set[str]]:
    """domain -> ATT&CK ids of the playbook steps that name it in a ``domain`` parameter."""
    out: dict[str, set[str]] = {}
    for step in getattr(playbook, "steps", None) or []:
        dom = (step.params or {}).get("domain")
        if isinstance(dom, str) and dom.strip(".") and "#{" not in dom:
            ids = out.setdefault(dom.strip(".").lower(), set())
            if tid := attack_id(step.technique):
                ids.add(tid)
    return out


def load_playbook_of(run, notes: list[str]):
    """The playbook the manifest names (for its C2 domains), or None with a note."""
    from pathlib import Path

    from cyberrange.attack.playbook import load_playbook
    from cyberrange.errors import UserError
    inp = (run.manifest.get("inputs") or {}).get("playbook")
    path = inp.get("path") if isinstance(inp, dict) else None
    if not isinstance(path, str) or not Path(path).is_file():
        if path:
            notes.append(f"playbook {path} not found: no C2 domain indicators")
        return None
    try:
        return load_playbook(Path(path))
    except UserError as e:
        notes.append(f"playbook {path} no longer loads ({e}): no C2 domain indicators")
        return None


def _indicator(run_id, kind: str, value: str, what: str, identity: str, when, valid_from):
    pattern = f"[{kind}:value = '{value}']"
    return stix2.Indicator(
        id=_id("indicator", run_id, kind, value), created=when, modified=when,
        created_by_ref=identity,
        name=f"{what} {value}", pattern=pattern, pattern_type="stix",
        valid_from=valid_from, indicator_types=["malicious-activity"])


def _relationship(src: str, dst: str, identity: str, when):
    return stix2.Relationship(id=_id("relationship", src, "indicates", dst), created=when,
                              modified=when, created_by_ref=identity, relationship_type="indicates",
                              source_ref=src, target_ref=dst)


def _sighting(of: str, key: tuple, alerts: list[dict], identity: str, when, what: str):
    times = [a["time"] for a in alerts if a["time"] is not None]
    true = sum(1 for a in alerts if a.get("true") is True)
    false = sum(1 for a in alerts if a.get("true") is False)
    verdict = f" ({true} true, {false} false by the scorer)" if true or false else ""
    kw = {"first_seen": _dt(min(times)), "last_seen": _dt(max(times))} if times else {}
    return stix2.Sighting(id=_id("sighting", *key), created=when, modified=when,
                          created_by_ref=identity, sighting_of_ref=of, count=len(alerts),
                          where_sighted_refs=[identity], summary=False,
                          description=f"{len(alerts)} alert(s) of {what}{verdict}", **kw)


def build(content: dict, ledger: list[dict], playbook=None) -> tuple[stix2.Bundle, list[str]]:
    """The bundle of one run and the notes on what it leaves out. ``content`` is
    ``report.content.gather``'s dict, ``ledger`` the run's raw ledger records."""
    run, notes = content["run"], []
    when = _dt(run.get("created")) or _dt(content.get("t0")) or datetime.now(timezone.utc)
    identity = stix2.Identity(
        id=_id("identity", run["run_id"]), created=when, modified=when,
        name=f"cyberrange range: {run.get('topology')}", identity_class="system",
        description=f"Network digital twin of topology {run.get('topology')} (run "
                    f"{run['run_id']}, playbook {run.get('playbook')})")
    ident = identity.id
    names: dict[str, list[str]] = {}

    def known(tid, *candidates):
        if tid and TECHNIQUE_ID.match(tid):
            have = names.setdefault(tid, [])
            have += [n for n in candidates if n and n not in have]

    for s in content.get("steps") or []:
        known(s.get("attack_id"), s.get("technique_name"))
    items = (content.get("alerts") or {}).get("items") or []
    for a in items:
        tid = attack_id(a.get("technique"))
        known(tid, technique_name(a.get("technique")), technique_name(tid))
    patterns = {tid: attack_pattern(run["run_id"], tid, names[tid], ident, when)
                for tid in sorted(names)}
    for s in content.get("steps") or []:
        spec = custom_spec(s.get("technique"))
        if spec is not None and spec.id not in patterns:
            patterns[spec.id] = custom_pattern(run["run_id"], spec, ident, when)

    objects: list = [identity, *patterns.values()]
    addrs = attacker_addresses(ledger)
    start = _dt(min((e["first"] for e in addrs.values() if e["first"] is not None),
                    default=None)) or when
    indicators: dict[str, stix2.Indicator] = {}
    for ip, e in sorted(addrs.items()):
        kind = "ipv6-addr" if ":" in ip else "ipv4-addr"
        what = "attacker address" if e["role"] == "actor" else "C2 / exfiltration server"
        if e["nodes"]:
            what += f" ({', '.join(sorted(e['nodes']))})"
        ind = _indicator(run["run_id"], kind, ip, what, ident, when, _dt(e["first"]) or start)
        indicators[ip] = ind
        objects.append(ind)
        objects += [_relationship(ind.id, patterns[t].id, ident, when)
                    for t in sorted(e["techniques"]) if t in patterns]
    for dom, tids in sorted(c2_domains(playbook).items()):
        ind = _indicator(run["run_id"], "domain-name", dom, "C2 domain", ident, when, start)
        objects.append(ind)
        objects += [_relationship(ind.id, patterns[t].id, ident, when)
                    for t in sorted(tids) if t in patterns]

    by_technique: dict[tuple, list] = {}
    by_indicator: dict[tuple, list] = {}
    unsighted = 0
    for a in items:
        tid = attack_id(a.get("technique"))
        hit = False
        if tid in patterns:
            by_technique.setdefault((a["detector"], tid), []).append(a)
            hit = True
        for ip in {a.get("source"), a.get("destination")} & set(indicators):
            by_indicator.setdefault((a["detector"], ip), []).append(a)
            hit = True
        unsighted += not hit
    for (det, tid), group in sorted(by_technique.items()):
        objects.append(_sighting(patterns[tid].id, (run["run_id"], det, tid), group, ident, when,
                                 f"detector {det} claiming {tid}"))
    for (det, ip), group in sorted(by_indicator.items()):
        objects.append(_sighting(indicators[ip].id, (run["run_id"], det, ip), group, ident,
                                 when, f"detector {det} naming {ip}"))
    if unsighted:
        notes.append(f"{unsighted} alert(s) with neither an ATT&CK id nor an attacker address "
                     "are in no sighting")
    bundle = stix2.Bundle(objects=objects, id=_id("bundle", run["run_id"]))
    return bundle, notes


def counts(bundle) -> dict[str, int]:
    """Objects of the bundle by STIX type."""
    out: dict[str, int] = {}
    for o in bundle.objects:
        out[o.type] = out.get(o.type, 0) + 1
    return dict(sorted(out.items()))


def write(path, run, content: dict) -> list[str]:
    """Write the run's bundle to ``path``; the lines ``drill report`` prints about it."""
    from pathlib import Path

    from cyberrange.errors import UserError
    notes: list[str] = []
    playbook = load_playbook_of(run, notes)
    bundle, more = build(content, run.ledger(), playbook)
    try:
        Path(path).write_text(bundle.serialize(pretty=True) + "\n", encoding="utf-8")
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None
    what = ", ".join(f"{n} {t}" for t, n in counts(bundle).items())
    return [f"STIX 2.1 bundle: {path} ({what})"] + [f"  note: {n}" for n in notes + more]

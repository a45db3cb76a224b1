"""Sigma rules for the detectors whose logic one Sigma detection can express
(``cyberrange detect export --sigma DIR``), and the reason for every one it cannot.

A Sigma detection is a predicate over **one** event. A detector can be written as one when
whether a flow belongs to an alert depends on that flow's own ECS fields and on lists fixed
before detection (a configured allow-list, or one learned from a baseline and baked into the
rule). Of the rule detectors only the ``modbus`` family's ``writers`` and ``clients`` checks are
of that kind; every other family counts, rates, averages or compares with what came before,
over a window of many records (see ``REFUSED``). Sigma correlation rules (``event_count``,
``value_count``) count in fixed time spans rather than the detectors' sliding windows with
episodes, and pySigma's Elasticsearch Lucene and ES|QL backends do not convert them; they
are not used.

Rules read the flow records as the store writes them (``cyberrange-flows*`` in
Elasticsearch, ``flows`` in DuckDB): logsource ``product: cyberrange``, ``service: flows``;
the field names are the records' own ECS names, so no field mapping pipeline is needed.
Each rule carries ``cyberrange: {detector, family, check, technique}`` so a query can be
traced back to the detector it mirrors.
"""
from __future__ import annotations

import datetime as _dt
import uuid

import yaml

from .base import Detector

NAMESPACE = uuid.UUID("0d1f6a0c-8e0b-5b9a-b7c2-6a1d7c0f5e21")
LOGSOURCE = {"product": "cyberrange", "service": "flows"}

#: family -> why a Sigma detection over one record cannot say what it detects
REFUSED = {
    "portscan": "counts distinct destination ports or hosts per source in a sliding window "
                "(with episodes, subnet-relative sweeps and unanswered-UDP rules): an "
                "aggregation over many flows",
    "bruteforce": "counts short login sessions per source and service (or across services) "
                  "in a sliding window, with a lower threshold for sources the baseline never "
                  "saw log in: an aggregation over many flows",
    "flood": "packets and new flows per second per target in rate bins, sustained over several "
             "bins and compared with the target's baseline peak: an aggregation with a baseline",
    "novelty": "first-seen admin edges and logins: whether an edge is new depends on every "
               "earlier record (the baseline graph and the lookback), not on the flow itself",
    "lateral": "a remote-service session alerts only when corroborated by earlier probes, "
               "failures or an entry within a lookback window, against the baseline graph",
    "dnstunnel": "distinct new names per registered domain in a window, their mean label "
                 "length and entropy and the share of TXT/NULL queries: aggregates over a "
                 "window (and entropy is no field of the records); a single long name is not "
                 "what it alerts on",
    "arp": "reads ARP packet records, not flows: IP-MAC binding changes against what was "
           "announced before (state), and distinct IPs requested per window (aggregation)",
}
NOT_RULE = "a {kind} detector: it scores against a baseline model ({family}), which no " \
           "Sigma predicate can hold"
HOLD = "the hold check counts write requests per (client, PLC) in a sliding window from " \
       "packet records: an aggregation"
CLIENTS_OFF = "the clients check is off in the detector itself: untrained and with no " \
              "configured clients it has no list to compare with (export with --run RUN to " \
              "bake in the clients a run's baseline saw)"


def rule_id(*key) -> str:
    return str(uuid.uuid5(NAMESPACE, "|".join(map(str, key))))


def _pairs(pairs: set[tuple[str, str]], prefix: str) -> dict[str, dict]:
    """One selection per learned (client, PLC) pair, for a ``not 1 of filter_*`` condition."""
    return {f"{prefix}_{i}": {"source.ip": src, "destination.ip": dst}
            for i, (src, dst) in enumerate(sorted(pairs), 1)}


def _cidrs(nets) -> list[str]:
    return [str(n) for n in nets]


def _modbus_rule(det, check: str, today: str) -> dict:
    """The Sigma rule of one modbus check (``writers``: T0855, ``clients``: T0861)."""
    base = {"network.transport": "tcp", "destination.port": sorted(det.ports)}
    writes = {"cyberrange.modbus.function_codes": sorted(det.write_codes)}
    det_sel: dict = {}
    if check == "writers":
        tech, level = "T0855", "high"
        det_sel["selection"] = dict(base, **writes)
        allowed_nets = _cidrs(det.writer_nets)
        learned = _pairs(det.writer_pairs, "filter_learned_writer")
        title = f"{det.name}: Modbus write by a client not allowed to write"
        what = ("a Modbus/TCP connection carrying a write function code from a client that is "
                "neither a configured writer nor one the baseline saw write to that PLC")
    else:
        tech, level = "T0861", "medium"
        det_sel["selection"] = base
        det_sel["write_codes"] = writes
        allowed_nets = _cidrs(det.client_nets) + _cidrs(det.writer_nets)
        learned = _pairs(det.pairs, "filter_learned_client")
        title = f"{det.name}: Modbus connection from an unknown client"
        what = ("a Modbus/TCP connection without a write function code from a client that is "
                "neither a configured client or writer nor one the baseline saw speak Modbus "
                "to that PLC")
    if allowed_nets:
        det_sel["filter_configured"] = {"source.ip|cidr": allowed_nets}
    det_sel.update(learned)
    cond = "selection"
    if check == "clients":
        cond += " and not write_codes"
    if allowed_nets or learned:
        cond += " and not 1 of filter_*"
    det_sel["condition"] = cond
    learned_note = (f" Allow-list learned from a baseline: {len(learned)} (client, PLC) "
                    "pair(s)." if det.trained else
                    " Untrained: configured lists only (the detector adds what it learns from "
                    "a baseline; export with --run RUN to bake in that run's list).")
    return {
        "title": title,
        "id": rule_id(det.name, check),
        "status": "experimental",
        "description": f"Mirrors check '{check}' of cyberrange detector {det.name} (family "
                       f"modbus): {what}.{learned_note} The detector groups matching flows of "
                       f"one pair within {det.window_us / 1e6:g} s into one alert; every "
                       "matching flow is in one.",
        "references": ["docs/detectors/modbus.md", "docs/exports.md"],
        "author": "cyberrange detect export",
        "date": today,
        "tags": [f"attack.{tech.lower()}"],
        "logsource": dict(LOGSOURCE),
        "detection": det_sel,
        "fields": ["source.ip", "destination.ip", "destination.port",
                   "cyberrange.modbus.function_codes", "cyberrange.flow_id"],
        "falsepositives": ["a new HMI, engineering workstation or historian not yet on its "
                           + "allow-list"],
        "level": level,
        "cyberrange": {"detector": det.name, "family": det.family, "check": check,
                       "technique": tech},
    }


def export(detectors: list[Detector], today: str | None = None
           ) -> tuple[dict[str, dict], list[dict]]:
    """``({file name: Sigma rule}, [{"detector", "family", "part", "reason"}])`` for the
    enabled ``detectors`` (configured, and trained when they should carry a learned list)."""
    today = today or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d")
    rules: dict[str, dict] = {}
    refused: list[dict] = []

    def refuse(det, reason, part="all"):
        refused.append({"detector": det.name, "family": det.family, "part": part,
                        "reason": reason})

    for det in detectors:
        if det.kind != "rule":
            refuse(det, NOT_RULE.format(kind=det.kind, family=det.family))
        elif det.family in REFUSED:
            refuse(det, REFUSED[det.family])
        elif det.family == "modbus":
            for check in ("writers", "clients"):
                if check not in det.checks:
                    continue
                if check == "clients" and not (det.trained or det.client_nets):
                    refuse(det, CLIENTS_OFF, check)
                    continue
                rules[f"{det.name}-{check}.yml"] = _modbus_rule(det, check, today)
            if "hold" in det.checks:
                refuse(det, HOLD, "hold")
        else:
            refuse(det, f"family {det.family!r} has no Sigma translation yet")
    return rules, refused


def dump(rule: dict) -> str:
    """A rule as Sigma YAML, keys in the order the Sigma specification lists them."""
    return yaml.safe_dump(rule, sort_keys=False, allow_unicode=True, width=100)


def train_on_run(detectors: list[Detector], store, run_id: str, baseline_s=None,
                 baseline_until=None) -> bool:
    """Fit the trainable detectors on a run's baseline window, as ``run_detectors`` does.
    False when the run has no baseline (they stay untrained)."""
    from .registry import _columns, baseline_window
    if not (baseline_s or baseline_until):
        return False
    flows = store.read("flows", run_id, columns=_columns(store, "flows"))
    packets = store.read("packets", run_id, columns=_columns(store, "packets")) \
        if any(d.needs_packets and d.trainable for d in detectors) else None
    train = baseline_window(flows, packets, baseline_s, baseline_until)
    for det in detectors:
        if det.trainable:
            det.fit(train[0], train[1] if det.needs_packets else None)
    return True


def write_rules(folder, detectors: list[Detector], run=None) -> tuple[list[str], list[dict]]:
    """Export the rules of ``detectors`` into ``folder`` (trained on ``run``'s baseline when a
    run is given): ``(written paths, refused)``."""
    from pathlib import Path

    from ..errors import UserError
    if run is not None:
        store = run.open_store(need=("flows",))
        try:
            m = run.manifest
            if not train_on_run(detectors, store, run.id, m.get("baseline_s"),
                                m.get("baseline_end")):
                raise UserError(f"{run.dir}: the run records no baseline (warm-up) to learn "
                                "allow-lists from")
        finally:
            store.close()
    rules, refused = export(detectors)
    out = Path(folder)
    try:
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for name, rule in rules.items():
            (out / name).write_text(dump(rule), encoding="utf-8")
            written.append(str(out / name))
    except OSError as e:
        raise UserError(f"cannot write Sigma rules to {folder}: {e.strerror or e}") from None
    return written, refused

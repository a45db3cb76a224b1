"""The detector API: a Detector turns flow (and optionally packet) records into Alerts.

A detector family is a subclass of ``Detector`` with a ``family`` name, a default ATT&CK
``technique`` and a ``SETTINGS`` dict of ``{name: default}``; an instance is configured from
``detectors/*.yaml`` (see ``registry.py``). Detectors see only what the store holds -- never the
ledger, never a label.

Times inside detectors are integer microseconds since the epoch (the store's resolution);
``Alert`` carries timezone-aware UTC datetimes because it maps 1:1 onto ``ALERT_SCHEMA``.

The contract every family keeps (tests/detect/test_detect_drills.py checks it on real drills):

* ``detect(flows, packets)`` is a pure function of the records (and of what ``fit`` learned):
  the same records give the same alerts with the same ``alert_id`` -- the streaming runner
  (``stream.py``) relies on it to report each alert once.
* Every alert explains itself: ``evidence`` holds ``feature`` (what was measured), ``value``
  (what was observed) and ``threshold`` and/or ``baseline`` (what it was compared with);
  ``flow_ids`` lists the contributing flows (packet-only evidence such as ARP leaves it empty
  and says ``packets`` in the evidence); ``message`` says it in one line of words; ``score``
  grows with how far the value is past the threshold.
* ``trainable`` families learn normal behaviour in ``fit`` from a benign baseline window (the
  drill's warm-up, or another run: see ``registry.run_detectors``); untrained they fall back to
  their configured settings.
* ``scores_flows`` families give every flow a number in ``score_flows`` (higher = more
  anomalous): the evaluation harness computes ROC-AUC and PR-AUC from it.
"""
from __future__ import annotations

import copy
import difflib
import hashlib
import json
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.compute as pc

from ..ecs import split_technique
from ..errors import UserError
from ..telemetry.schema import ALERT_SCHEMA

__all__ = ["Alert", "Detector", "SettingError", "alerts_to_table", "columns", "us_to_dt",
           "find_episodes", "Episode"]

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def us_to_dt(us: int) -> datetime:
    """Microseconds since the epoch -> aware UTC datetime (exact, no float rounding)."""
    return _EPOCH + timedelta(microseconds=int(us))


class SettingError(UserError):
    """A detector setting is unknown or has a bad value; ``setting`` names it (for file:line)."""

    def __init__(self, message: str, setting: str | None = None):
        super().__init__(message)
        self.setting = setting


@dataclass
class Alert:
    """One alert; fields map 1:1 onto ALERT_SCHEMA (see ``to_row``).

    ``timestamp`` is the event time at which the threshold was crossed (the start time of the flow
    that crossed it): time-to-detect is measured from it. ``start``/``end`` bound the evidence.
    """

    timestamp: datetime
    start: datetime
    end: datetime
    rule_name: str
    rule_category: str
    technique: str
    source_ip: str | None
    destination_ip: str | None
    message: str
    score: float
    evidence: dict = field(default_factory=dict)
    flow_ids: list[str] = field(default_factory=list)
    run_id: str | None = None
    alert_id: str | None = None
    kind: str = "alert"
    dataset: str = "cyberrange.alert"

    def __post_init__(self):
        if self.alert_id is None:
            # the first contributing flow names the episode; packet-only evidence (no flows):
            # the episode's start, so two episodes of one source get two ids
            first = self.flow_ids[0] if self.flow_ids else f"{self.destination_ip}|{self.start}"
            text = f"{self.rule_name}|{self.source_ip}|{first}"
            self.alert_id = hashlib.sha1(text.encode()).hexdigest()

    def to_row(self) -> dict:
        # threat.technique.id holds an ATT&CK id or nothing (cyberrange/ecs.py): a learned
        # family's "unknown" is left out; a library variant keeps its name in the evidence
        tid, variant = split_technique(self.technique)
        evidence = {**self.evidence, "technique_variant": variant} if variant else self.evidence
        return {
            "@timestamp": self.timestamp,
            "event.kind": self.kind,
            "event.dataset": self.dataset,
            "event.start": self.start,
            "event.end": self.end,
            "rule.name": self.rule_name,
            "rule.category": self.rule_category,
            "threat.technique.id": tid,
            "source.ip": self.source_ip,
            "destination.ip": self.destination_ip,
            "message": self.message,
            "cyberrange.score": float(self.score),
            "cyberrange.evidence": json.dumps(evidence, sort_keys=True),
            "cyberrange.flow_ids": list(self.flow_ids),
            "cyberrange.alert_id": self.alert_id,
            "cyberrange.run_id": self.run_id,
        }


def alerts_to_table(alerts: Iterable[Alert], run_id: str | None = None) -> pa.Table:
    """Alerts -> Arrow table with ALERT_SCHEMA, ordered by @timestamp."""
    rows = []
    for a in sorted(alerts, key=lambda a: (a.timestamp, a.rule_name)):
        if run_id is not None:
            a.run_id = run_id
        rows.append(a.to_row())
    if not rows:
        return ALERT_SCHEMA.empty_table()
    return pa.Table.from_pylist(rows, schema=ALERT_SCHEMA)


class Detector:
    """Base class of detector families.

    Subclasses set ``family``, ``technique``, ``SETTINGS`` (``{name: default}``) and implement
    ``detect``; they may override ``configure`` to check setting values (raise ``SettingError``).
    ``needs_packets = True`` makes ``run_detectors`` read packet records for them.
    """

    family: str = ""
    technique: str = ""
    needs_packets: bool = False
    kind: str = "rule"               # rule | statistical | learned (how its goals are set)
    trainable: bool = False          # implements fit() on a benign baseline window
    scores_flows: bool = False       # implements score_flows() (ROC-AUC / PR-AUC)
    SETTINGS: dict[str, Any] = {}

    def __init__(self, name: str, **settings):
        unknown = [k for k in settings if k not in self.SETTINGS]
        if unknown:
            key = unknown[0]
            hint = difflib.get_close_matches(key, list(self.SETTINGS), n=1)
            msg = f"unknown setting {key!r} for detector family {self.family!r}"
            msg += f" (did you mean {hint[0]!r}?)" if hint else \
                f" (known: {', '.join(sorted(self.SETTINGS))})"
            raise SettingError(msg, setting=key)
        self.name = name
        self.trained = False
        self.settings = copy.deepcopy(self.SETTINGS)
        self.settings.update(settings)
        self.configure()

    def configure(self) -> None:
        """Check and take over ``self.settings``; raise SettingError on a bad value."""

    def detect(self, flows: pa.Table, packets: pa.Table | None = None) -> list[Alert]:
        raise NotImplementedError

    def fit(self, flows: pa.Table, packets: pa.Table | None = None) -> None:
        """Learn normal behaviour from benign baseline records (``trainable`` families)."""
        self.trained = True

    def score_flows(self, flows: pa.Table, packets: pa.Table | None = None):
        """One anomaly score per flow row, higher = more anomalous (``scores_flows``
        families); a numpy float array of length ``flows.num_rows``."""
        raise NotImplementedError(f"{self.family} does not score flows")

    # helpers for subclasses
    def _number(self, key: str, minimum: float = 0, integer: bool = False) -> float:
        value = self.settings[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum \
                or (integer and not isinstance(value, int)):
            kind = "an integer" if integer else "a number"
            raise SettingError(f"setting {key!r} of {self.name!r} must be {kind} >= {minimum}, "
                               f"got {value!r}", setting=key)
        return value

    def _ports(self, key: str, allow_empty: bool = False) -> list[int]:
        """A setting that must be a list of port numbers (1-65535)."""
        ports = self.settings[key]
        if not isinstance(ports, list) or (not ports and not allow_empty) or any(
                isinstance(p, bool) or not isinstance(p, int) or not 0 < p < 65536 for p in ports):
            raise SettingError(f"setting {key!r} of {self.name!r} must be a list of port numbers, "
                               f"got {ports!r}", setting=key)
        return list(ports)

    def _choices(self, key: str, allowed) -> list[str]:
        """A setting that must be a non-empty list drawn from ``allowed`` (a string: one)."""
        value = self.settings[key]
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value or any(v not in allowed for v in value):
            raise SettingError(f"setting {key!r} of {self.name!r} must be a list drawn from "
                               f"{', '.join(allowed)}; got {value!r}", setting=key)
        return list(value)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.settings!r})"


def columns(table: pa.Table, names: list[str]) -> dict[str, list]:
    """Selected columns as Python lists; timestamp columns become integer microseconds."""
    out = {}
    for name in names:
        col = table.column(name)
        if pa.types.is_timestamp(col.type):
            col = pc.cast(col.cast(pa.timestamp("us", tz="UTC")), pa.int64())
        out[name] = col.to_pylist()
    return out


@dataclass
class Episode:
    """A run of events of one group during which the threshold was crossed."""

    crossed_at: int                 # µs: time of the event that crossed the threshold
    start: int                      # µs: first event in the window at crossing time
    end: int                        # µs: last event that extended the episode
    value: int                      # largest distinct count seen
    flow_ids: list[str]
    keys: set


def find_episodes(events: list[tuple[int, Any, str]], window_us: int, threshold: int
                  ) -> list[Episode]:
    """Sliding-window counting of distinct keys over time-ordered ``(t_us, key, flow_id)``.

    The window at an event at time t holds the events in ``(t - window, t]``. When the number of
    distinct keys in it reaches ``threshold`` an episode opens at that event, holding every event
    of the window. While it is open each further event extends it (one alert per episode, not
    one per flow); it closes when no event comes for longer than ``window``.
    """
    out: list[Episode] = []
    dq: deque = deque()
    counts: Counter = Counter()
    ep: Episode | None = None
    for t, key, fid in events:
        while dq and dq[0][0] <= t - window_us:
            _, k, _ = dq.popleft()
            counts[k] -= 1
            if not counts[k]:
                del counts[k]
        if ep is not None and t - ep.end > window_us:
            out.append(ep)
            ep = None
        dq.append((t, key, fid))
        counts[key] += 1
        distinct = len(counts)
        if ep is not None:
            ep.end = t
            ep.flow_ids.append(fid)
            ep.keys.add(key)
            ep.value = max(ep.value, distinct)
        elif distinct >= threshold:
            ep = Episode(crossed_at=t, start=dq[0][0], end=t, value=distinct,
                         flow_ids=[e[2] for e in dq], keys={e[1] for e in dq})
    if ep is not None:
        out.append(ep)
    return out

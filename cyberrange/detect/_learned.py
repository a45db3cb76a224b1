"""Helpers shared by the learned families (iforest, kitnet): anomalous events -> per-source
episodes, and which features of the flagged events are most unusual against the baseline."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: ``threat.technique.id`` of the learned families' alerts. They find "unlike the baseline", not
#: a technique; scoring matches alerts to ledger steps by their flows, never by this id, and the
#: scorer itself files a step without a technique under the same word.
UNKNOWN_TECHNIQUE = "unknown"


@dataclass
class Run:
    source: str
    rows: list          # indices (into the caller's arrays) of the anomalous events, time order
    crossed: int        # index (into rows) of the event at which the episode reached min_events


def episodes(times_us: np.ndarray, sources: list, flagged: np.ndarray, gap_us: int,
             min_events: int) -> list[Run]:
    """Flagged events grouped per source into episodes: an episode goes on while the next
    flagged event of the source follows within ``gap_us``; kept when it holds >= ``min_events``.
    Deterministic: sources in sorted order, events in (time, index) order."""
    idx = np.flatnonzero(flagged)
    per: dict[str, list[int]] = {}
    order = idx[np.argsort(times_us[idx], kind="stable")]
    for i in order.tolist():
        per.setdefault(sources[i], []).append(i)
    out = []
    for src in sorted(per, key=str):
        rows = per[src]
        cur = [rows[0]]
        for i in rows[1:]:
            if times_us[i] - times_us[cur[-1]] > gap_us:
                if len(cur) >= min_events:
                    out.append(Run(src, cur, min_events - 1))
                cur = []
            cur.append(i)
        if len(cur) >= min_events:
            out.append(Run(src, cur, min_events - 1))
    return out


def robust_center_scale(X: np.ndarray, floor: float = 0.1):
    """Per-column median and a robust spread: 1.4826 * MAD, else the standard deviation (a
    mostly-constant column, e.g. a one-hot), never below ``floor``."""
    med = np.median(X, 0)
    mad = 1.4826 * np.median(np.abs(X - med), 0)
    spread = np.where(mad > 0, mad, X.std(0))
    return med, np.maximum(spread, floor)


def top_features(X: np.ndarray, names: list[str], med, scale, k: int = 3) -> list[dict]:
    """The ``k`` features whose median over the rows of ``X`` lies furthest (robust z) from the
    baseline median."""
    value = np.median(X, 0)
    z = (value - med) / scale
    best = np.argsort(-np.abs(z), kind="stable")[:k]
    return [{"feature": names[j], "value": round(float(value[j]), 3),
             "baseline": round(float(med[j]), 3), "z": round(float(z[j]), 1)} for j in best]


def ratio_score(value: float, threshold: float) -> float:
    """Alert score in (0.5, 1) for value > threshold, growing with value / threshold."""
    r = value / threshold if threshold > 0 else float("inf")
    return round(r / (1.0 + r), 3) if np.isfinite(r) else 1.0

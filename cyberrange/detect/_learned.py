"""Helpers shared by the learned families (iforest, kitnet): anomalous events -> per-source
episodes, and which features of the flagged events are most unusual against the baseline."""
from __future__ import annotations

import itertools
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
    merged: int = 1     # episodes in this alert (``suppress`` joins a source's later ones)


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


def suppress(runs: list[Run], times_us: np.ndarray, realert_us: int,
             trained_until_us: int | None = None) -> list[Run]:
    """At most one alert per source per ``realert_us`` (SOC alert suppression: one alert per
    entity and period): an episode of a source whose crossing (the event at which it reached
    ``min_events``) comes less than ``realert_us`` after the crossing of the source's open
    alert joins that alert (its events are added) instead of raising a new one; the first
    episode after the period opens the next alert. ``realert_us`` <= 0: every episode is an
    alert. ``runs`` as ``episodes`` returns them (per source, in time order).
    An episode crossing at or before ``trained_until_us`` (in the baseline the model learned
    from, where no alert counts) stays as it is and opens no period: else it would swallow the
    first real alert of its source after the baseline."""
    if realert_us <= 0:
        return runs
    out: list[Run] = []
    opened: dict[str, int] = {}          # source -> crossing time of its open alert
    for ep in runs:
        t = int(times_us[ep.rows[ep.crossed]])
        if trained_until_us is not None and t <= trained_until_us:
            out.append(ep)
            continue
        last = out[-1] if out and out[-1].source == ep.source else None
        if last is not None and ep.source in opened and t - opened[ep.source] < realert_us:
            last.rows, last.merged = last.rows + ep.rows, last.merged + 1
            continue
        opened[ep.source] = t
        out.append(Run(ep.source, list(ep.rows), ep.crossed))
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


# -- calibration: an alert threshold from the benign baseline for a false-alert target ----------
#
# Why per event and not per alert: a detector raises an alert only for an episode of at least
# ``min_events`` flagged events (flows, packets) of one source, so on any traffic
#     alerts <= flagged events / min_events.
# A threshold that a benign event exceeds with probability <= p therefore keeps the expected
# alerts per 10k flows <= p * events_per_flow * 10_000 / min_events, whatever the clustering.
# A 30 s baseline holds a few hundred flows: too few to see a rate of 10 alerts per 10k
# directly (0 alerts in 500 flows bounds the rate only at ~46 per 10k), but enough to bound a
# per-event exceedance probability of ~0.5 % with an order statistic.

#: settings every learned family takes for its calibration (docs/detectors/learned-calibration.md)
CALIBRATION_SETTINGS = {
    "calibration": "target",     # target | the family's older in-sample rule
    "false_alert_target": 10,    # false alerts per 10k benign flows the threshold aims at
    "confidence": 0.9,           # that the held-out order statistic holds
    "folds": 4,                  # baseline time blocks; those in its second half are scored
                                 # by a model trained on the blocks before them
    "clustering": "scattered",   # how flagged benign events may group into alerts: scattered|worst
    "max_share": 0.05,           # never let more than this share of benign events exceed it
}


def configure_calibration(detector, legacy: str) -> None:
    """Check the ``CALIBRATION_SETTINGS`` of ``detector`` and set them as attributes."""
    from .base import SettingError
    st = detector.settings
    for key, allowed in (("calibration", ("target", legacy)),
                         ("clustering", ("scattered", "worst"))):
        if st[key] not in allowed:
            raise SettingError(f"setting {key!r} of {detector.name!r} must be one of "
                               f"{', '.join(allowed)}; got {st[key]!r}", setting=key)
    detector.calibration, detector.clustering = st["calibration"], st["clustering"]
    detector.fa_target = fa_target(detector)
    detector.confidence = confidence(detector)
    detector.folds = int(detector._number("folds", minimum=2, integer=True))
    detector.max_share = float(detector._number("max_share", minimum=1e-6))
    if detector.max_share > 0.5:
        raise SettingError(f"setting 'max_share' of {detector.name!r} must be <= 0.5, got "
                           f"{detector.max_share!r}", setting="max_share")


def calibrate(detector, held_out: np.ndarray, times_us: np.ndarray, sources: list,
              flows: int, min_events: int, gap_us: int) -> Calibration:
    """The threshold for ``detector.fa_target`` from the out-of-sample baseline scores
    ``held_out`` of the baseline's events (``times_us``, ``sources``: all of them, time order
    not needed), ``flows`` = its deduplicated flows: a per-event budget (``scattered_budget``
    or, ``clustering: worst``, ``event_budget``), then ``conservative_threshold``."""
    realert_us = int(getattr(detector, "realert_us", 0))
    if detector.clustering == "worst":
        budget = min(detector.max_share,
                     event_budget(detector.fa_target, min_events, flows, len(times_us)))
    else:
        budget = scattered_budget(np.asarray(times_us, np.int64), sources, gap_us, min_events,
                                  flows, detector.fa_target, detector.max_share,
                                  seed=int(detector.settings.get("seed", 0)),
                                  realert_us=realert_us)
    ok = np.isfinite(held_out)
    cal = conservative_threshold(held_out[ok], budget, detector.confidence)
    cal.clustering = detector.clustering
    # the held-out baseline itself, with its real sources and timing (correlated anomalies
    # included), must stay within the target: no lower than where it would raise more alerts
    allowed = int(detector.fa_target * flows * ok.mean() // 10_000) if len(ok) else 0
    codes = np.unique(np.asarray([str(x) for x in sources]), return_inverse=True)[1]
    quiet = quiet_threshold(held_out[ok], np.asarray(times_us, np.int64)[ok], codes[ok], gap_us,
                            min(min_events, int(getattr(detector, "quiet_min", min_events))),
                            allowed, realert_us)
    cal.quiet = quiet
    if quiet > cal.threshold:
        cal.threshold, cal.method = quiet, f"{cal.method}; raised: quiet on the held-out baseline"
    return cal


def quiet_threshold(scores: np.ndarray, times_us: np.ndarray, codes: np.ndarray, gap_us: int,
                    min_events: int, allowed: int, realert_us: int = 0) -> float:
    """The lowest threshold (one of ``scores``, or -inf) at which the events, flagged where
    their score exceeds it and grouped as ``episodes`` does, raise <= ``allowed`` alerts."""
    cand = np.unique(scores)
    if len(cand) == 0 or episode_count(times_us, codes, scores > -np.inf, gap_us,
                                       min_events, realert_us) <= allowed:
        return float("-inf")
    lo, hi = 0, len(cand) - 1          # cand[hi] flags nothing: quiet
    while lo < hi:
        mid = (lo + hi) // 2
        if episode_count(times_us, codes, scores > cand[mid], gap_us, min_events,
                         realert_us) <= allowed:
            hi = mid
        else:
            lo = mid + 1
    return float(cand[lo])


def fa_target(detector) -> float:
    """The ``false_alert_target`` setting (false alerts per 10k benign flows) checked: > 0."""
    from .base import SettingError
    value = detector.settings["false_alert_target"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 \
            or not np.isfinite(value):
        raise SettingError(f"setting 'false_alert_target' of {detector.name!r} must be a number "
                           f"> 0 (false alerts per 10k benign flows), got {value!r}",
                           setting="false_alert_target")
    return float(value)


def confidence(detector) -> float:
    """The ``confidence`` setting checked: 0.5 <= c < 1."""
    from .base import SettingError
    value = detector.settings["confidence"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.5 <= value < 1:
        raise SettingError(f"setting 'confidence' of {detector.name!r} must be a number in "
                           f"[0.5, 1), got {value!r}", setting="confidence")
    return float(value)


def event_budget(target_per_10k: float, min_events: int, flows: int, events: int) -> float:
    """Largest probability p that a benign event may exceed the threshold while the alerts
    stay <= ``target_per_10k`` per 10k ``flows`` (the baseline's deduplicated flows), given
    that ``events`` events (flow rows, packets) came with them and an alert needs
    ``min_events``: p * events / min_events <= target * flows / 10k."""
    if events <= 0:
        return 1.0
    return float(min(1.0, target_per_10k * min_events * max(flows, 1) / (10_000 * events)))


def episode_count(times_us: np.ndarray, codes: np.ndarray, flagged: np.ndarray, gap_us: int,
                  min_events: int, realert_us: int = 0) -> int:
    """How many alerts ``episodes`` (then ``suppress`` with ``realert_us``) would raise for
    ``flagged`` (vectorised; ``codes``: the events' sources as integers)."""
    idx = np.flatnonzero(flagged)
    if len(idx) < min_events:
        return 0
    o = np.lexsort((times_us[idx], codes[idx]))
    s, t = codes[idx][o], times_us[idx][o]
    new = np.ones(len(idx), bool)
    new[1:] = (s[1:] != s[:-1]) | (t[1:] - t[:-1] > gap_us)
    ep = np.cumsum(new) - 1
    if realert_us <= 0:
        return int((np.bincount(ep) >= min_events).sum())
    # the crossing event of every kept episode: its min_events-th event
    first = np.flatnonzero(new)
    pos = np.arange(len(idx)) - first[ep]
    cross = np.flatnonzero(pos == min_events - 1)
    alerts, src, opened = 0, None, 0
    for c, tc in zip(s[cross].tolist(), t[cross].tolist(), strict=True):
        if c != src or tc - opened >= realert_us:
            alerts, src, opened = alerts + 1, c, tc
    return alerts


def scattered_budget(times_us: np.ndarray, sources: list, gap_us: int, min_events: int,
                     flows: int, target_per_10k: float, cap: float, seed: int = 0,
                     reps: int = 64, realert_us: int = 0) -> float:
    """Largest share p of benign events that may exceed the threshold (<= ``cap``) such that,
    were those events scattered at random over the baseline's own events (its real sources and
    timing, bursts included), the episodes they would form raise <= ``target_per_10k`` alerts
    per 10k of the baseline's ``flows``. Monte Carlo with ``reps`` draws (common random numbers,
    so the estimate is monotone enough for a bisection on log p)."""
    n = len(times_us)
    if n == 0 or flows <= 0:
        return cap
    codes = np.unique(np.asarray([str(x) for x in sources]), return_inverse=True)[1]
    u = np.random.default_rng(seed).random((reps, n))

    def rate(p: float) -> float:
        alerts = sum(episode_count(times_us, codes, u[r] < p, gap_us, min_events, realert_us)
                     for r in range(reps))
        return alerts / reps / flows * 10_000

    if rate(cap) <= target_per_10k:
        return cap
    lo, hi = np.log(1e-7), np.log(cap)
    for _ in range(14):                 # log p to within ~0.1 %: finer than the draws
        mid = (lo + hi) / 2
        if rate(float(np.exp(mid))) <= target_per_10k:
            lo = mid
        else:
            hi = mid
    return float(np.exp(lo))


def blocked_folds(n: int, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Forward-chaining time blocks: ``range(n)`` (rows in time order) cut into ``k``
    contiguous blocks; block j (j >= 1) is held out and scored by a model trained on blocks
    0..j-1. Returns (train, held-out) index pairs. In time order, not random folds, because a
    deployed model always scores the future: benign traffic is not stationary (a service first
    speaks late in the baseline; damped statistics warm up from zero at the start of a run),
    and a model of the past scoring the next block sees the same kind of novelty the run after
    the baseline will. Only blocks in the second half are held out: a model of less than half
    the baseline (damped statistics still warming up from zero) is not the model that runs."""
    edges = np.linspace(0, n, k + 1).astype(int)
    return [(np.arange(0, a), np.arange(a, b))
            for a, b in itertools.pairwise(edges) if b > a > 0 and 2 * a >= n - 1]


@dataclass
class Calibration:
    threshold: float
    method: str          # "order statistic" | "exponential tail" | "maximum"
    held_out: int        # out-of-sample baseline events the threshold was read from
    budget: float        # per-event exceedance probability allowed (event_budget)
    rank: int | None     # order statistic: the threshold is the rank-th largest held-out score
    clustering: str = "worst"
    quiet: float | None = None   # lowest threshold at which the held-out baseline stays quiet

    def evidence(self) -> dict:
        return {"method": self.method, "held_out": self.held_out, "clustering": self.clustering,
                "event_budget": float(f"{self.budget:.3g}"), "rank": self.rank}


def conservative_threshold(scores, budget: float, conf: float = 0.9) -> Calibration:
    """A threshold that a new event from the held-out ``scores``' distribution exceeds with
    probability <= ``budget``, with confidence ``conf`` over the draw of the sample.

    * **Order statistic** (enough samples): the k-th largest of n scores is exceeded with
      probability ~ Beta(k, n-k+1), so P(exceedance > p) = P(Binomial(n, p) <= k-1); take the
      largest k with that <= 1 - conf (the lowest threshold that still holds).
    * **Exponential tail** (too few: even the maximum does not hold, (1-p)^n > 1-conf): fit an
      exponential to the excesses of the top m = max(5, n/10) scores over the next one (u), with
      the scale's one-sided ``conf`` upper bound (chi-square), and extrapolate to p:
      ``u + scale * ln(m / (n p))``; never below the maximum.
    * **Maximum**: fewer than 10 scores, or all top scores equal.
    """
    from scipy.stats import binom, chi2
    s = np.sort(np.asarray(scores, float))[::-1]
    n = len(s)
    if n == 0:
        return Calibration(float("inf"), "maximum", 0, budget, None)
    delta = 1.0 - conf
    if budget >= 1:
        return Calibration(float(s[-1]) - 1e-9, "order statistic", n, budget, n)
    q = int(binom.ppf(delta, n, budget))
    while q >= 0 and binom.cdf(q, n, budget) > delta:
        q -= 1
    if q >= 0:
        k = min(q + 1, n)
        return Calibration(float(s[k - 1]), "order statistic", n, budget, k)
    m = max(5, n // 10)
    if n < 10 or m >= n:
        return Calibration(float(s[0]), "maximum", n, budget, 1)
    u = s[m]
    excess = float(np.mean(s[:m] - u))
    if excess <= 0:
        return Calibration(float(s[0]), "maximum", n, budget, 1)
    scale = 2 * m * excess / float(chi2.ppf(delta, 2 * m))
    x = float(u + scale * np.log(m / (n * budget)))
    return Calibration(max(x, float(s[0])), "exponential tail", n, budget, None)


def dedup_flows(flows) -> int:
    """Connections among flow rows (as the scorer counts them: community id + start second;
    rows without a community id count alone)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    n = flows.num_rows
    if n == 0 or "network.community_id" not in flows.column_names:
        return n
    cid = flows.column("network.community_id").to_pylist()
    sec = pc.cast(flows.column("event.start").cast(pa.timestamp("us", tz="UTC")), pa.int64()) \
        .to_numpy(zero_copy_only=False) // 1_000_000
    keys = {(c, int(t)) if c else ("row", i)
            for i, (c, t) in enumerate(zip(cid, sec, strict=True))}
    return len(keys)

"""Statistics of the beacon family (``beacon.py``): per-group quantiles, the jitter estimate of
the RITA-style score, the chance that random arrivals look as regular as a short series, and
the DNS helpers (registered domain, queries among packet records).

``log10_p_random`` is the rhythm test of short series: for ``k`` intervals between random
(Poisson) arrivals -- independent exponential intervals -- the chance that the longest is at
most ``r`` times the shortest is exactly

    P(max / min <= r) = Gamma(k/s + 1) Gamma(k) / Gamma(k/s + k),   s = r - 1

(condition on the shortest interval m ~ Exp(k): by memorylessness the other k - 1 exceed it by
independent Exp(1) amounts, each below s*m; integrating gives k/s * B(k/s, k)). The spread
``(max - min) / (max + min)`` of an implant's intervals drawn uniformly over
``period * (1 +- j)`` tends to ``j`` from below; for uniform jitter the shortest and longest
interval are all the information there is (they are its sufficient statistic), which is why a
short series is judged on them.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy.special import gammaln


def group_quantiles(g: np.ndarray, v: np.ndarray, n_groups: int, qs) -> list[np.ndarray]:
    """Per-group quantiles (linear interpolation) of ``v`` grouped by ``g`` (0..n_groups-1)."""
    order = np.lexsort((v, g))
    vs = v[order]
    counts = np.bincount(g, minlength=n_groups)
    offs = np.cumsum(counts) - counts
    last = np.maximum(counts - 1, 0)
    out = []
    for q in qs:
        pos = q * last
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, last)
        frac = pos - lo
        ok = counts > 0
        val = np.zeros(n_groups)
        a = vs[(offs + lo)[ok]]
        b = vs[(offs + hi)[ok]]
        val[ok] = a + frac[ok] * (b - a)
        out.append(val)
    return out


def regularity(g: np.ndarray, v: np.ndarray, n_groups: int):
    """Per group: Bowley skew, median, MADM and the estimated relative jitter.

    The jitter estimate is the mean of ``2 * MADM / median`` and ``sqrt(3) * CV`` (CV =
    std / mean): both equal ``j`` for values spread uniformly over ``median * (1 +- j)``, and
    are about 1.4 and 1.7 for Poisson arrivals (exponential intervals).
    """
    q1, q2, q3 = group_quantiles(g, v, n_groups, (0.25, 0.5, 0.75))
    iqr = q3 - q1
    with np.errstate(divide="ignore", invalid="ignore"):
        skew = np.where((iqr > 0) & (q2 != q1) & (q2 != q3), (q1 + q3 - 2 * q2) / iqr, 0.0)
    madm = group_quantiles(g, np.abs(v - q2[g]), n_groups, (0.5,))[0]
    n = np.bincount(g, minlength=n_groups).astype(np.float64)
    mean = np.bincount(g, weights=v, minlength=n_groups) / np.maximum(n, 1)
    var = np.bincount(g, weights=(v - mean[g]) ** 2, minlength=n_groups) / np.maximum(n, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        r_madm = np.where(q2 > 0, 2 * madm / q2, np.where(madm > 0, np.inf, 0.0))
        r_cv = np.where(mean > 0, np.sqrt(3 * var) / mean, np.where(var > 0, np.inf, 0.0))
    return skew, q2, madm, (r_madm + r_cv) / 2


def registered_domain(names: pa.Array, labels: int) -> pa.Array:
    """The last ``labels`` labels of each DNS name, lower case (the whole name if shorter)."""
    low = pc.utf8_lower(pc.utf8_rtrim(names, characters="."))
    pat = r"(?P<d>(?:[^.]+\.){" + str(labels - 1) + r"}[^.]+)$"
    got = pc.struct_field(pc.extract_regex(low, pattern=pat), [0])
    return pc.if_else(pc.is_null(got), low, got)


def dns_queries(packets: pa.Table) -> pa.Table:
    """DNS queries (not responses) among packet records."""
    name = packets.column("dns.question.name")
    mask = pc.and_(pc.is_valid(name), pc.is_null(packets.column("dns.response_code")))
    return packets.filter(mask)


def log10_p_random(k: np.ndarray, spread: np.ndarray) -> np.ndarray:
    """log10 of the chance that ``k`` intervals of random (Poisson) arrivals have a spread
    ``(max - min) / (max + min)`` at most ``spread`` (module docstring). 0 (chance 1) for fewer
    than 2 intervals; a spread of 0 (clockwork) gives a very small chance, not minus infinity."""
    k = np.asarray(k, dtype=np.float64)
    spread = np.clip(np.asarray(spread, dtype=np.float64), 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.maximum(2 * spread / np.maximum(1 - spread, 1e-300), 1e-9)   # max/min - 1
        a = np.maximum(k, 1.0) / s
        lp = (gammaln(a + 1) + gammaln(np.maximum(k, 1.0)) - gammaln(a + k)) / np.log(10)
    return np.where((k >= 2) & (spread < 1), np.minimum(lp, 0.0), 0.0)

"""Weak signals (issue 15's contract, /docs/detectors/novelty.md): sub-threshold observations
that are kept, not alerted. A signal is an ``Alert`` with ``kind="signal"`` and
``dataset="cyberrange.signal"``; its ``score`` in (0, 1) says how close to the alert threshold
the observation came. Signals never count as detections or false alerts; ``detect/incidents.py``
correlates them with alerts into incidents.

Shared helpers of the families that emit signals (bruteforce, portscan, arp, novelty), and the
address helpers their baseline-relative rules use.
"""
from __future__ import annotations

import hashlib
import ipaddress

from .base import Alert, us_to_dt

SIGNAL_KIND = "signal"
SIGNAL_DATASET = "cyberrange.signal"


def signal(det, *, t0: int, t1: int, source_ip, destination_ip, message: str, score: float,
           evidence: dict, flow_ids=(), technique: str | None = None, key: str = "") -> Alert:
    """One signal of detector ``det``; ``t0``/``t1`` in microseconds (``t0`` = the first
    contributing observation). ``score`` is clipped into (0, 1)."""
    score = min(0.99, max(0.01, float(score)))
    text = f"{det.name}|signal|{source_ip}|{destination_ip}|{key}|{t0}"
    return Alert(
        timestamp=us_to_dt(t0), start=us_to_dt(t0), end=us_to_dt(t1), rule_name=det.name,
        rule_category=det.family, technique=technique or det.technique,
        source_ip=source_ip, destination_ip=destination_ip, message=message,
        score=round(score, 3), evidence=evidence, flow_ids=list(flow_ids),
        alert_id=hashlib.sha1(text.encode()).hexdigest(), kind=SIGNAL_KIND,
        dataset=SIGNAL_DATASET)


def overlaps(alerts, source_ip, t0: int, t1: int) -> bool:
    """Does an alert of ``source_ip`` cover any of ``[t0, t1]`` (microseconds)? An observation
    that already raised an alert is not also a signal."""
    for a in alerts:
        if a.source_ip != source_ip:
            continue
        a0 = int(a.start.timestamp() * 1_000_000)
        a1 = int(a.end.timestamp() * 1_000_000)
        if a0 <= t1 and t0 <= a1:
            return True
    return False


def subnet_of(ip, prefix: int) -> str | None:
    """The ``/prefix`` network of an IPv4 address as text (None: not IPv4)."""
    try:
        return str(ipaddress.IPv4Network(f"{ip}/{prefix}", strict=False))
    except (ValueError, TypeError):
        return None


def is_unicast(ip) -> bool:
    """Not multicast, broadcast (limited or a /24 subnet's .255) nor unspecified: datagrams to
    those answer nobody in particular, so an unanswered one says nothing."""
    try:
        addr = ipaddress.ip_address(ip)
    except (ValueError, TypeError):
        return False
    if addr.is_multicast or addr.is_unspecified or str(addr) == "255.255.255.255":
        return False
    return not (addr.version == 4 and str(addr).endswith(".255"))

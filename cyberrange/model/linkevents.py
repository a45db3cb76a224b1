"""Link events (DDIL schedules) as written in a playbook's ``link_events:``: checked and
expanded into timed state changes here, applied to a live twin by ``twin/ddil.py``."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Change:
    """One state change of one zone at ``at`` seconds after the schedule's start."""
    at: float
    zone: str
    state: str
    values: dict = field(default_factory=dict)      # degraded: delay, jitter, loss, bandwidth
    reason: str = ""


def parse_events(events: list, zones=None, error=None) -> list[Change]:
    """A schedule's events → state changes in time order. Each event is one of

    * ``{at: S, zone: Z, state: down|jammed|up, for: S}`` (``for`` optional: back up after);
    * ``{at: S, zone: Z, degrade: {delay: MS, jitter: MS, loss: %, bandwidth: MBIT}, for: S}``;
    * ``{at: S, zone: Z, intermittent: {on: S, off: S}, until: S}`` (down for ``off`` every
      ``on + off`` seconds, starting up);

    Changes at the same time keep the order of their events in the list. ``zones``: the names
    a ``zone`` may take (None: not checked). A bad event raises ``error(message, path)`` (a
    ValueError by default; a playbook passes its FILE:LINE error), the path naming the
    event's index and key."""
    def fail(msg, *path):
        where = "link_events" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}"
                                        for p in path)
        exc = (error or (lambda m, _p: ValueError(m)))(f"{where}: {msg}",
                                                      ("link_events", *path))
        raise exc

    out: list[Change] = []
    for i, ev in enumerate(events):
        if not isinstance(ev, dict):
            fail("want a mapping", i)
        zone = ev.get("zone")
        if not isinstance(zone, str) or (zones is not None and zone not in zones):
            fail(f"no zone or link {zone!r}", i, "zone")
        at = _num(ev, "at", fail, (i,), 0.0)
        dur = _num(ev, "for", fail, (i,), None)
        if "intermittent" in ev:
            pat = ev["intermittent"] if isinstance(ev["intermittent"], dict) else {}
            on = _num(pat, "on", fail, (i, "intermittent"))
            off = _num(pat, "off", fail, (i, "intermittent"))
            until = _num(ev, "until", fail, (i,))
            if on <= 0 or off <= 0 or until <= at:
                fail("intermittent needs on > 0, off > 0 and until > at", i, "intermittent")
            t = at + on
            while t < until:
                out.append(Change(t, zone, "down", reason="intermittent"))
                out.append(Change(min(t + off, until), zone, "up", reason="intermittent"))
                t += on + off
            continue
        if "degrade" in ev:
            vals = ev["degrade"] if isinstance(ev["degrade"], dict) else {}
            bad = set(vals) - {"delay", "jitter", "loss", "bandwidth"}
            if bad or not vals:
                fail("keys are delay, jitter, loss, bandwidth", i, "degrade")
            for k, v in vals.items():
                if (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0
                        or (k == "loss" and v > 100)):
                    fail("want a number >= 0 (loss: at most 100)", i, "degrade", k)
            out.append(Change(at, zone, "degraded", dict(vals), "degrade"))
        else:
            state = ev.get("state")
            if state not in ("down", "jammed", "up"):
                fail("want down, jammed or up", i, "state")
            out.append(Change(at, zone, state, reason=state))
        if dur is not None:
            out.append(Change(at + dur, zone, "up", reason=f"end of link_events[{i}]"))
    return sorted(out, key=lambda c: c.at)


def _num(d: dict, key: str, fail, path: tuple, default=...):
    if key not in d:
        if default is ...:
            fail("missing", *path, key)
        return default
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
        fail("want a number of seconds >= 0", *path, key)
    return float(v)

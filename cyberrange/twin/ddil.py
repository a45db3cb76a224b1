"""DDIL: links that are denied, disrupted, intermittent or limited, changed live on a twin.

``LinkControl(twin).set(zone, state)`` changes what every port of a zone (or point-to-point
link) does, now, and appends one line to ``logs/links.jsonl`` of the run:

| state | what happens | how |
|---|---|---|
| ``down`` | an outage: the link is gone, both ends lose carrier (a cut cable, a lost terminal) | ``ip link set p<N> down`` on the zone's bridge ports |
| ``jammed`` | every frame is lost but interfaces stay up (routing only notices when hellos stop) | an nftables ``drop`` at the ingress of the zone's bridge ports |
| ``degraded`` | other values for ``delay``/``jitter``/``loss``/``bandwidth`` | loss: an nftables ``numgen`` drop (or the relay's own loss on a relayed link); delay and jitter: the relay (``twin/linkemu.py``), else recorded as not emulated; bandwidth: the HTB classes of both ends |
| ``up`` | the profile again | all of the above undone |

Frames a state drops are dropped before the bridge, so the sensors never capture them (ledger
= capture holds: what a sensor sees crossed the link).

``parse_events`` (``model/linkevents.py``) expands a list of timed events (outage windows,
degradation steps, intermittent on/off patterns) into state changes, and ``run(control,
changes, t0, stop)`` applies them at their times.
"""
from __future__ import annotations

import json
import threading
import time

from cyberrange.errors import EnvironmentProblem
from cyberrange.model.linkevents import Change, parse_events  # noqa: F401 - re-exported

STATES = ("up", "down", "jammed", "degraded")
TABLE = "cyberrange_ddil"


class LinkControl:
    """Live link states of one twin (see the module's docstring)."""

    def __init__(self, twin, log_path=None):
        self.twin = twin
        self.log_path = log_path or (twin.run_dir / "logs" / "links.jsonl")
        self.state: dict[str, dict] = {}
        self._lock = threading.Lock()
        self._table = False
        self.on_change = None           # called with each record (the live drill screen)

    table = TABLE

    @classmethod
    def of(cls, twin) -> LinkControl:
        """The one LinkControl of ``twin``, kept as ``twin.link_control``: the schedule and
        jamming steps (``attack/techniques/rf.py``, which cannot import twin/) share it."""
        if getattr(twin, "link_control", None) is None:
            twin.link_control = cls(twin)
        return twin.link_control

    # -- what a zone is made of ---------------------------------------------------------
    def ports(self, zone: str) -> list[tuple]:
        """(node, port key, switch port, node device, interface) of every member of ``zone``."""
        tw = self.twin
        if zone not in tw.topo.zones:
            raise KeyError(f"no zone or link {zone!r} in {tw.topo.name}")
        out = []
        for node, itf in tw.topo.members(zone):
            key = tw._key(itf)
            out.append((node.name, key, tw.port[(node.name, key)], tw.intf[(node.name, key)],
                        itf))
        return out

    # -- applying a state ---------------------------------------------------------------
    def set(self, zone: str, state: str, values: dict | None = None, reason: str = "") -> dict:
        if state not in STATES:
            raise ValueError(f"link state {state!r}: want one of {', '.join(STATES)}")
        values = dict(values or {})
        with self._lock:
            ports = self.ports(zone)
            notes: list[str] = []
            self._carrier(ports, up=state != "down")
            loss = 100.0 if state == "jammed" else float(values.get("loss", -1))
            self._drops(zone, ports, loss if state in ("jammed", "degraded") else None, notes)
            self._relay(ports, values if state == "degraded" else {}, notes)
            self._bandwidth(ports, values.get("bandwidth") if state == "degraded" else None)
            rec = {"t": round(time.time(), 3), "zone": zone, "state": state, "values": values,
                   "reason": reason, "ports": [p[2] for p in ports], "notes": notes}
            self.state[zone] = rec
            with open(self.log_path, "a") as f:
                f.write(json.dumps(rec) + "\n")
        if self.on_change is not None:
            self.on_change(rec)
        return rec

    def _carrier(self, ports, up: bool) -> None:
        """The bridge port and, on a relayed link, the node's own peer (``q<N>``): the node
        sees its carrier go either way."""
        devs = []
        for node, key, port, _dev, _itf in ports:
            devs.append(port)
            if (node, key) in self.twin.relay_ports:
                devs.append(self.twin.relay_ports[(node, key)][0])
        lines = [f"link set dev {d} {'up' if up else 'down'}" for d in devs]
        self._sw(["ip", "-batch", "-"], "\n".join(lines) + "\n", "setting the link state")

    def _drops(self, zone: str, ports, loss: float | None, notes: list[str]) -> None:
        """An nftables drop at each bridge port's ingress: all (jammed), a share (degraded
        loss on a link the relay does not carry), or none."""
        relayed = {p[:2] for p in ports if (p[0], p[1]) in self.twin.relay_ports}
        if not self._table:
            self._sw(["nft", "-f", "-"], f"add table netdev {TABLE}\n", "the DDIL table")
            self._table = True
        script = []
        for node, key, port, _dev, _itf in ports:
            script.append(f"add chain netdev {TABLE} {port} {{ type filter hook ingress device"
                          f" {port} priority -500; }}")
            script.append(f"flush chain netdev {TABLE} {port}")
            if loss is None or loss < 0 or ((node, key) in relayed and loss < 100):
                continue                           # a relayed link's loss is the relay's
            if loss >= 100:
                script.append(f"add rule netdev {TABLE} {port} counter drop")
            elif loss > 0:
                script.append(f"add rule netdev {TABLE} {port} numgen random mod 1000000 < "
                              f"{int(loss * 10_000)} counter drop")
        self._sw(["nft", "-f", "-"], "\n".join(script) + "\n", f"drops on {zone}")

    def _relay(self, ports, values: dict, notes: list[str]) -> None:
        """Delay, jitter and loss of relayed ports: the values given, else the profile's."""
        tw = self.twin
        relayed = [p for p in ports if (p[0], p[1]) in tw.relay_ports]
        wanted = {k for k in ("delay", "jitter") if k in values}
        if wanted and not relayed:
            notes.append(f"{'/'.join(sorted(wanted))} not emulated here (no netem, no relay on "
                         "this link): only loss and bandwidth changed")
        if not relayed:
            return
        path = tw.run_dir / "config" / "linkemu-control.json"
        try:
            body = json.loads(path.read_text())
        except (OSError, ValueError):
            body = {"links": {}}
        for node, key, _port, dev, itf in relayed:
            prof = itf.profile
            body["links"][f"{node}/{dev}"] = {
                "delay_ms": float(values.get("delay", prof.delay_ms)),
                "jitter_ms": float(values.get("jitter", prof.jitter_ms)),
                "loss_pct": float(values.get("loss", prof.loss_pct))}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(body))
        tmp.replace(path)
        tw.relay_proc.send_signal(10)                  # SIGUSR1: read the control file

    def _bandwidth(self, ports, mbit: float | None) -> None:
        from cyberrange.model.topology import LinkProfile
        from cyberrange.twin import shaping
        tw = self.twin
        sw_lines, node_cmds = [], {}
        for node, _key, port, dev, itf in ports:
            base = itf.profile.bandwidth_mbit if itf.profile else None
            rate = mbit if mbit is not None else base
            if rate is None or base is None:
                continue                               # no HTB class to change
            bits = shaping.class_rate_bit(LinkProfile("ddil", rate))
            burst = shaping.burst_bytes(bits)
            change = (f"class change dev {{dev}} parent 1: classid 1:1 htb rate {bits}bit "
                      f"ceil {bits}bit burst {burst} cburst {burst}")
            sw_lines.append(change.format(dev=port))
            node_cmds.setdefault(node, []).append(change.format(dev=dev))
        if sw_lines:
            self._sw(["tc", "-batch", "-"], "\n".join(sw_lines) + "\n", "bandwidth")
        from cyberrange.twin import netns
        for node, lines in node_cmds.items():
            r = netns.run(tw.ns[node], ["tc", "-batch", "-"], input="\n".join(lines) + "\n")
            if r.returncode:
                raise EnvironmentProblem(f"changing the bandwidth on {node}: {r.stderr.strip()}")

    def _sw(self, argv, text: str, what: str) -> None:
        r = self.twin.switch_run(argv, input=text)
        if r.returncode:
            raise EnvironmentProblem(f"DDIL, {what}: {(r.stderr or r.stdout).strip()[:300]}")


def run(control: LinkControl, changes: list[Change], t0: float, stop: threading.Event,
        on_change=None) -> list[dict]:
    """Apply ``changes`` at ``t0 + at`` (monotonic clock) until done or ``stop``; returns the
    records written. Every zone changed is set back up at the end."""
    done, touched = [], set()
    for ch in changes:
        if stop.wait(max(0.0, t0 + ch.at - time.monotonic())):
            break
        rec = control.set(ch.zone, ch.state, ch.values, ch.reason)
        touched.add(ch.zone)
        done.append(rec)
        if on_change:
            on_change(rec)
    for zone in sorted(touched):
        if control.state.get(zone, {}).get("state") != "up":
            done.append(control.set(zone, "up", reason="end of the schedule"))
    return done

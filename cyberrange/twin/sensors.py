"""Sensors: the twin's capture points, and the capture files they leave in a run folder.

Three kinds (``Sensor.kind`` in the model), each writing every frame it sees exactly once:

* ``span``      (zone only): an nftables *netdev ingress* ``dup`` on every switch port of the
                zone copies each frame to a monitor veth ``m<i>a`` where tcpdump listens (all
                of it inside the twin's switch namespace).
                A frame enters a switch through exactly one port, so it is copied exactly once.
                On a shared 802.1Q switch the zone's access ports are copied whole and trunk
                ports only for frames tagged with the zone's VLAN.
* ``ports``     (zone + nodes): frames to or from the listed nodes' ports, each once. Still
                ingress-only (so never twice): every frame entering through a listed port, plus
                frames entering through any other port of the zone whose destination MAC is a
                listed port's, or that are broadcast / multicast (which the switch floods out of
                the listed ports). Unknown-unicast flooding to a listed port is not copied.
* ``interface`` (router node, zone): tcpdump inside the router's namespace on the device that
                carries its address in that zone (``eth1``, ``eth1.20``, or the emulated-VLAN
                veth), both directions: what a tap on that router interface would see.

Rotation: ``rotate_s`` / ``rotate_mb`` (or the ``rotate_s`` given to :class:`Sensors`, used by
live mode) make tcpdump rotate with ``-G`` / ``-C`` and no ``-W`` (unlimited). A rotating sensor
writes ``pcaps/<sensor>/<sensor>-%Y%m%d%H%M%S.pcap`` (``-C`` appends 1, 2, ... to a file of the same
second); a single-file sensor ``pcaps/<sensor>.pcap``. The helpers that read these files back
(``capture_files``, ``join_pcaps``, ``count_frames``) live in ``cyberrange.telemetry.files``:
analysis needs them without a twin.

Counters: tcpdump's own (``captured``, ``received_by_filter``, ``dropped_by_kernel``) are read on
SIGUSR1 while it runs (:meth:`Sensors.sample`) and at exit; the frames of every file are counted
from the file (``count_frames``) when the sensor stops. All go to the run manifest and into
the reconciliation (``cyberrange.score.reconcile``).

Capture mode: monitor-veth sensors use libpcap's TPACKET_V3 ring (blocks of variable-size
packets; far fewer wake-ups than ``--immediate-mode``, which at 20k packets/s is what decides
loss). A block is handed to tcpdump when full or after 1 s, so :meth:`Sensors.stop` first removes
the nftables copies, waits for the last block, then stops tcpdump: nothing is left in the ring.
Interface sensors cannot be cut off from their feed, so they use ``--immediate-mode``.

This module imports nothing of Mininet.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

from cyberrange.errors import EnvironmentProblem
from cyberrange.telemetry.files import count_frames, rotation_key, tcpdump_counters
from cyberrange.twin import netns

__all__ = ["Sensors"]

BUFFER_KIB = 65536            # tcpdump -B: 64 MiB of ring per sensor
V3_BLOCK_TIMEOUT_S = 1.0      # libpcap hands a part-filled TPACKET_V3 block over after to_ms


def _read(path: Path) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


# ---------------------------------------------------------------------------- the sensors
class Sensors:
    """The running captures of one twin (``twin.sensors``).

    ``sensors``: the model's Sensor objects (default: the topology's); ``rotate_s``: rotation
    for sensors that declare none (live mode sets a few seconds); ``table``: the nftables netdev
    table (default: the twin's, which teardown also removes)."""

    def __init__(self, twin, sensors=None, rotate_s: float = 0, table: str | None = None,
                 buffer_kib: int = BUFFER_KIB):
        self.twin = twin
        self.sensors = list(sensors if sensors is not None else twin.topo.sensors.values())
        self.rotate_s = rotate_s
        self.table = table or twin.state.nft_table
        self.buffer_kib = buffer_kib
        self.pcap_dir = twin.run_dir / "pcaps"
        self.log_dir = twin.run_dir / "logs"
        self.procs: dict[str, subprocess.Popen] = {}
        self.devs: dict[str, str] = {}          # sensor -> device tcpdump listens on
        self.mon: dict[str, str] = {}           # sensor -> monitor veth (span / ports)
        self.scope: dict[str, dict] = {}
        self.samples: dict[str, list[dict]] = {}
        self.started: dict[str, float] = {}
        self.final: dict[str, dict] = {}
        self._table_made = False

    # -- where files go ------------------------------------------------------
    def rotation(self, sensor) -> tuple[int, int]:
        rs = int(sensor.rotate_s or 0) or round(self.rotate_s or 0)
        if self.rotate_s and (not rs or self.rotate_s < rs):
            rs = max(1, round(self.rotate_s))
        return rs, int(sensor.rotate_mb or 0)

    def rotating(self, sensor) -> bool:
        return any(self.rotation(sensor))

    def target(self, sensor) -> Path:
        """The ``-w`` argument of a sensor's tcpdump."""
        rs, _mb = self.rotation(sensor)
        if not self.rotating(sensor):
            return self.pcap_dir / f"{sensor.name}.pcap"
        d = self.pcap_dir / sensor.name
        return d / (f"{sensor.name}-%Y%m%d%H%M%S.pcap" if rs else f"{sensor.name}.pcap")

    def files(self, name: str) -> list[Path]:
        """The sensor's capture files so far, in capture order."""
        s = self._by_name(name)
        if not self.rotating(s):
            f = self.pcap_dir / f"{name}.pcap"
            return [f] if f.exists() else []
        d = self.pcap_dir / name
        if not d.is_dir():
            return []
        return sorted((f for f in d.iterdir() if re.search(r"\.pcap\d*$", f.name)), key=rotation_key)

    def closed_files(self, name: str) -> list[Path]:
        """Files tcpdump has finished: all once it stopped, else all but the newest (tcpdump
        closes a file before it opens the next)."""
        files = self.files(name)
        if name in self.procs and self.procs[name].poll() is None:
            return files[:-1]
        return files

    def _by_name(self, name: str):
        for s in self.sensors:
            if s.name == name:
                return s
        raise KeyError(name)

    # -- start ---------------------------------------------------------------
    def start(self) -> Sensors:
        tw = self.twin
        chains, monitors = [], []
        for i, sensor in enumerate(self.sensors, 1):
            self.scope[sensor.name] = self._scope(sensor)
            if sensor.kind == "interface":
                router, zone = sensor.interface
                itf = next((itf for itf in tw.topo.nodes[router].interfaces if itf.zone == zone),
                           None)
                if itf is None:
                    raise EnvironmentProblem(f"sensor {sensor.name}: {router} has no interface "
                                             f"in {zone}")
                self.devs[sensor.name] = tw._dev(router, itf)
                continue
            mon_a, mon_b = f"m{i}a", f"m{i}b"     # in the switch namespace (IPv6 off there)
            monitors += [f"link add {mon_a} type veth peer name {mon_b}",
                         f"link set {mon_a} up", f"link set {mon_b} up"]
            self.mon[sensor.name] = self.devs[sensor.name] = mon_a
            tw.state.kernel_names[f"sensor:{sensor.name}"] = f"{tw.sw_ns}/{mon_a}"
            if sensor.kind == "ports":
                chains += self.port_chains(i, sensor, mon_a)
            else:
                chains += self.span_chains(i, sensor.zone, mon_a)
        if monitors:
            r = tw.switch_run(["ip", "-batch", "-"], input="\n".join(monitors) + "\n")
            if r.returncode:
                raise EnvironmentProblem(f"the sensors' monitor veths: {r.stderr.strip()[:300]}")
        if chains:
            script = f"table netdev {self.table} {{\n" + "\n".join(chains) + "\n}\n"
            (tw.run_dir / "config" / f"sensors-{self.table}.nft").write_text(script)
            r = tw.switch_run(["nft", "-f", "-"], input=script)
            if r.returncode:
                raise EnvironmentProblem(f"nftables rejected the sensor ruleset: {r.stderr.strip()}")
            self._table_made = True
        for sensor in self.sensors:
            self._start_tcpdump(sensor)
        tw.state.save()
        for sensor in self.sensors:
            log = self.log_dir / f"tcpdump-{sensor.name}.log"
            deadline = time.time() + 10
            while "listening on" not in _read(log):
                if self.procs[sensor.name].poll() is not None or time.time() > deadline:
                    raise EnvironmentProblem(f"tcpdump for sensor {sensor.name} did not start: "
                                             f"{_read(log).strip()[-300:]}")
                time.sleep(0.05)
        return self

    def _start_tcpdump(self, sensor) -> None:
        tw = self.twin
        rs, mb = self.rotation(sensor)
        target = self.target(sensor)
        target.parent.mkdir(parents=True, exist_ok=True)
        argv = ["tcpdump", "-i", self.devs[sensor.name], "-n", "-s", "0", "-B",
                str(self.buffer_kib), "-Z", "root", "-w", str(target)]
        if rs:
            argv += ["-G", str(rs)]
        if mb:
            argv += ["-C", str(mb)]
        ns = tw.sw_ns                          # span and port sensors: the switch namespace
        if sensor.kind == "interface":
            argv.insert(1, "--immediate-mode")
            ns = tw.ns[sensor.interface[0]]     # interface sensors: inside the router
        errf = self.log_dir / f"tcpdump-{sensor.name}.log"
        err = open(errf, "w")  # noqa: SIM115 - tcpdump's stderr for its whole life
        proc = netns.popen(ns, argv, stdout=subprocess.DEVNULL, stderr=err,
                           stdin=subprocess.DEVNULL, start_new_session=True)
        err.close()                                  # the child has its own copy
        self.procs[sensor.name] = proc
        self.started[sensor.name] = time.time()

    # -- the nftables copies -------------------------------------------------
    def _zone_ports(self, zone_name: str, nodes=None) -> tuple[list[str], list[str]]:
        """(access ports, trunk ports) of a zone's members (only ``nodes`` when given)."""
        tw = self.twin
        access, trunks = [], []
        for n, itf in tw.topo.members(zone_name):
            if nodes is not None and n.name not in nodes:
                continue
            port = tw.port[(n.name, tw._key(itf))]
            (trunks if (itf.vlan is not None and tw.dot1q) else access).append(port)
        return sorted(set(access)), sorted(set(trunks))

    def _chains(self, name: str, zone_name: str, ports: tuple[list, list], action: list[str]
                ) -> list[str]:
        zone = self.twin.topo.zones[zone_name]
        out = []
        for kind, devs in (("a", ports[0]), ("t", ports[1])):
            if not devs:
                continue
            names = ", ".join(f'"{d}"' for d in devs)
            match = f"vlan id {zone.vlan} " if kind == "t" else ""
            rules = "\n".join(f"    {match}{a}" for a in action)
            out.append(f"  chain {name}{kind} {{\n    type filter hook ingress devices = "
                       f"{{ {names} }} priority 0;\n{rules}\n  }}")
        return out

    def span_chains(self, i: int, zone_name: str, mon: str) -> list[str]:
        """Copy every frame entering the zone's switch ports (VLAN-matched on trunks)."""
        return self._chains(f"span{i}", zone_name, self._zone_ports(zone_name),
                            [f'dup to "{mon}"'])

    def port_chains(self, i: int, sensor, mon: str) -> list[str]:
        """Frames to or from the listed nodes' ports, each copied once at its ingress port."""
        tw = self.twin
        listed = set(sensor.nodes)
        mine = self._zone_ports(sensor.zone, listed)
        everyone = self._zone_ports(sensor.zone)
        others = ([p for p in everyone[0] if p not in mine[0]],
                  [p for p in everyone[1] if p not in mine[1]])
        macs = sorted({tw.port_key_mac[(n.name, tw._key(itf))]
                       for n, itf in tw.topo.members(sensor.zone) if n.name in listed})
        chains = self._chains(f"ports{i}", sensor.zone, mine, [f'dup to "{mon}"'])
        to_listed = [f'meta pkttype {{ broadcast, multicast }} dup to "{mon}"']
        if macs:
            to_listed.insert(0, f'ether daddr {{ {", ".join(macs)} }} dup to "{mon}"')
        chains += self._chains(f"ports{i}o", sensor.zone, others, to_listed)
        return chains

    def _scope(self, sensor) -> dict:
        """What the sensor is certain to see, for the reconciliation: every packet SENT by one
        of ``nodes`` (span: the zone's members; ports: the listed nodes) and, for the benign
        logs, traffic to ``cidrs``."""
        topo = self.twin.topo
        if sensor.kind == "interface":
            router, zone = sensor.interface
            return {"kind": "interface", "zone": zone, "router": router, "nodes": [], "ips": [],
                    "cidrs": [str(topo.zones[zone].subnet)]}
        members = [(n, itf) for n, itf in topo.members(sensor.zone)
                   if sensor.kind == "span" or n.name in sensor.nodes]
        return {"kind": sensor.kind, "zone": sensor.zone,
                "nodes": sorted({n.name for n, _ in members}),
                "ips": sorted({str(itf.ip) for _, itf in members}),
                "cidrs": ([str(topo.zones[sensor.zone].subnet)] if sensor.kind == "span"
                          else [f"{itf.ip}/32" for _, itf in members])}

    # -- counters ------------------------------------------------------------
    def sample(self, name: str, timeout: float = 1.0) -> dict:
        """tcpdump's counters now (SIGUSR1 makes it print them); {} if it is not running."""
        proc = self.procs.get(name)
        if proc is None or proc.poll() is not None:
            return {}
        log = self.log_dir / f"tcpdump-{name}.log"
        before = _read(log).count("dropped by kernel")
        try:
            os.kill(proc.pid, signal.SIGUSR1)
        except ProcessLookupError:
            return {}
        deadline = time.time() + timeout
        while time.time() < deadline:
            text = _read(log)
            if text.count("dropped by kernel") > before:
                c = tcpdump_counters(text)
                c["t"] = time.time()
                self.samples.setdefault(name, []).append(c)
                return c
            time.sleep(0.02)
        return {}

    # -- stop ----------------------------------------------------------------
    def stop(self, drain: float = 0.3) -> dict[str, dict]:
        """Stop feeding the monitors, let the last ring block reach tcpdump, stop tcpdump
        (it flushes and closes its file), and return everything known per sensor.

        No fixed waits: first until no frame has entered the switches for 50 ms (frames still
        queued on shaped ports; at most ``drain`` s), then, with the copies removed, until each
        tcpdump has taken every frame its monitor sent (captured + dropped = the monitor's TX
        count; a part-filled TPACKET_V3 block is handed over within its 1 s timeout)."""
        if not self.procs:
            return self.final
        if self.mon:
            self._wait_quiet(drain)
        if self._table_made:
            self.twin.switch_run(["nft", "delete", "table", "netdev", self.table])
            self._table_made = False
        if self.mon:
            self._wait_drained(V3_BLOCK_TIMEOUT_S + 0.5)
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for sensor in self.sensors:
            self.final[sensor.name] = self.describe(sensor)
        if self.mon:
            self.twin.switch_run(["ip", "-force", "-batch", "-"],
                                 input="".join(f"link del {m}\n" for m in self.mon.values()))
        self.procs = {}
        return self.final

    def _wait_quiet(self, timeout: float, quiet: float = 0.05) -> None:
        """Until the switches' ports received nothing new for ``quiet`` s (or ``timeout``)."""
        deadline = time.monotonic() + timeout
        before = netns.dev_counters(self.twin.sw_ns)
        while time.monotonic() < deadline:
            time.sleep(quiet)
            now = netns.dev_counters(self.twin.sw_ns)
            if now == before:
                return
            before = now

    def _wait_drained(self, timeout: float) -> None:
        """Until every monitor's tcpdump has taken what the monitor sent (or ``timeout``)."""
        sent = netns.dev_counters(self.twin.sw_ns)
        want = {name: sent.get(mon, (0, 0))[1] for name, mon in self.mon.items()}
        deadline = time.monotonic() + timeout
        while want and time.monotonic() < deadline:
            for name in list(want):
                c = self.sample(name, timeout=max(0.05, deadline - time.monotonic()))
                if not c or (c.get("captured") or 0) + (c.get("dropped_by_kernel") or 0) \
                        >= want[name]:
                    del want[name]
            if want:
                time.sleep(0.02)

    def describe(self, sensor) -> dict:
        """Counters, files (with their frames) and scope of one sensor, for the manifest."""
        counters = tcpdump_counters(_read(self.log_dir / f"tcpdump-{sensor.name}.log"))
        files = []
        for f in self.files(sensor.name):
            c = count_frames(f)
            files.append({"file": str(f.relative_to(self.twin.run_dir)), "frames": c["frames"],
                          "bytes": c["bytes"], "truncated": c["truncated"]})
        rs, mb = self.rotation(sensor)
        return {**counters, "kind": sensor.kind, "device": self.devs.get(sensor.name),
                "rotate_s": rs, "rotate_mb": mb, "files": files,
                "pcap_frames": sum(f["frames"] or 0 for f in files),
                "scope": self.scope.get(sensor.name, {}),
                "samples": self.samples.get(sensor.name, [])[-200:]}

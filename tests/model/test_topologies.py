"""The topology library: every file in topologies/ loads, is documented, keeps its own mission
threads open and its forbidden flows closed — statically (no root) and in a live twin (root).

A new topology dropped into topologies/ is picked up by every test here; it must also get an
entry in ``MUST_DENY`` (at least three flows its firewalls exist to stop).
"""
from __future__ import annotations

import ipaddress
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from helpers import ROOT, needs_twin, run_probes
from cyberrange.model import reach
from cyberrange.model.loader import load_topology
from cyberrange.model.topology import Topology
from cyberrange.twin.linkcheck import probe_timeout
from cyberrange.twin.proberun import retry_timeouts

TOPOLOGIES = sorted((ROOT / "topologies").glob("*.yaml"))
IDS = [p.stem for p in TOPOLOGIES]

# Flows each topology's firewalls must stop: (src node, dst node, proto, port). Each names a real
# service on the destination, so a live "not open" means the firewall stopped it, not that
# nothing listened.
MUST_DENY: dict[str, list[tuple[str, str, str, int | None]]] = {
    "fob": [
        ("ops-maint", "c2-server", "tcp", 22),        # rule 4: nothing else from OPS into the CP
        ("dmz-web", "c2-server", "tcp", 8080),        # default deny: the DMZ never reaches the CP
        ("hq-portal", "c2-server", "tcp", 22),        # HQ gets the COP feed only
    ],
    "brigade": [
        ("bn2-fsr", "fires-fdc", "tcp", 8443),        # only the FSOs call for fire
        ("bn2-fsr", "bde-c2", "tcp", 22),             # forward sites: COP web only
        ("bn1-ws1", "intel-srv", "tcp", 443),         # intel products go to the TAC only
        ("fires-ws1", "intel-srv", "tcp", 443),       # fires and intel: need to know
    ],
    "naval-vessel": [
        ("admin-ws2", "engine-plc", "tcp", 502),      # office LAN never reaches OT
        ("admin-ws2", "cms-server", "tcp", 8443),     # nor the combat system
        ("shore-moc", "engine-plc", "tcp", 502),      # nor does the shore
        ("ecdis", "nav-historian", "tcp", 443),       # the OT segment starts nothing
        ("admin-ws1", "nmea-gw", "tcp", 10110),
        ("shore-portal", "cms-server", "tcp", 8443),  # only the MOC, not the unclassified portal
    ],
    "air-base": [
        ("admin-ws2", "fuel-plc1", "tcp", 502),       # only the historian polls the PLCs
        ("admin-ws2", "mps-server", "tcp", 8443),     # offices reach no flight ops system
        ("ops-ws1", "fuel-plc2", "tcp", 502),
        ("aoc-ops", "fuel-hist", "tcp", 443),         # higher command: the ATO only
        ("tower-ws1", "mps-server", "tcp", 22),
        ("aoc-portal", "mps-server", "tcp", 8443),    # the ATO comes from combat plans only
    ],
    "coalition-mpe": [
        ("fra-ws2", "usa-c2", "tcp", 8080),           # enclaves never talk directly
        ("fra-ws2", "gbr-c2", "tcp", 8080),
        ("usa-ws1", "gbr-c2", "tcp", 8080),
        ("mission-portal", "usa-c2", "tcp", 8080),    # the federation zone starts nothing
    ],
    "logistics-depot": [
        ("admin-ws2", "wms-db", "tcp", 22),           # offices reach nothing in the warehouse
        ("admin-ws2", "track-srv", "tcp", 8443),      # nor in tracking
        ("s4-ws1", "wms-app", "tcp", 443),            # the brigade orders through the web app only
        ("supply-web", "track-srv", "tcp", 8443),     # the DMZ starts nothing else
    ],
}


def _load(path: Path) -> Topology:
    return load_topology(path)


@pytest.fixture(scope="module", params=TOPOLOGIES, ids=IDS)
def topo(request) -> Topology:
    return _load(request.param)


def _mission_pairs(topo: Topology):
    for m in topo.missions.values():
        for src in m.src:
            for dst in m.dst:
                if src != dst:
                    yield m, src, dst


# -- static: no root --------------------------------------------------------------------------

def test_library_is_complete():
    names = {p.stem for p in TOPOLOGIES}
    assert {"fob", "brigade", "naval_vessel", "air_base", "coalition_mpe",
            "logistics_depot"} <= names


def test_loads_with_a_sane_size(topo):
    assert topo.version == 2
    assert 12 <= len(topo.nodes) <= 40, len(topo.nodes)
    assert topo.name in MUST_DENY, f"add at least three must-deny flows for {topo.name}"


def test_header_documents_the_topology(topo):
    lines = Path(topo.file).read_text().splitlines()
    header = []
    for line in lines:
        if not line.startswith("#"):
            break
        header.append(line)
    text = "\n".join(header)
    assert len(header) >= 15, "the header comment should describe the network"
    for name in topo.entry_points:
        assert name in text, f"the header should say the red team starts on {name}"
    for name in topo.crown_jewels:       # by node name, or in words ("the C2 server")
        assert name in text or name.replace("-", " ") in text.lower(), \
            f"the header should name crown jewel {name}"
    for link in topo.links:
        assert link in text, f"the header should explain link {link}"
    assert "──" in text, "the header should carry an ASCII sketch"


def test_addressing_is_private_and_distinct_across_the_library():
    owner: list[tuple[ipaddress.IPv4Network, str]] = []
    for path in TOPOLOGIES:
        t = _load(path)
        for z in t.zones.values():
            assert z.subnet.is_private, f"{path.name}: {z.name} {z.subnet} is not RFC 1918"
            for net, other in owner:
                if other != t.name:
                    assert not z.subnet.overlaps(net), f"{t.name} {z.subnet} overlaps {other} {net}"
            owner.append((z.subnet, t.name))


def test_missions_crown_jewels_entry_points(topo):
    assert len(topo.missions) >= 3
    assert topo.crown_jewels and topo.entry_points
    for name in topo.crown_jewels + topo.entry_points:
        assert name in topo.nodes
        assert topo.nodes[name].kind == "host"


def test_every_mission_thread_is_allowed_and_served(topo):
    for m, src, dst in _mission_pairs(topo):
        ok, why = reach.allowed(topo, src, topo.nodes[dst].ip, m.proto, m.port)
        assert ok, f"mission {m.name}: {src} -> {dst} {m.proto}/{m.port} blocked: {why}"
        if m.proto != "icmp":
            assert any(s.port == m.port and s.proto == m.proto for s in topo.nodes[dst].services), \
                f"mission {m.name}: nothing on {dst} serves {m.proto}/{m.port}"


def test_must_deny_flows_are_denied(topo):
    rows = MUST_DENY[topo.name]
    assert len(rows) >= 3
    for src, dst, proto, port in rows:
        ok, why = reach.allowed(topo, src, topo.nodes[dst].ip, proto, port)
        assert not ok, f"{src} -> {dst} {proto}/{port} should be denied: {why}"
        assert any(s.port == port and s.proto == proto for s in topo.nodes[dst].services), \
            f"{dst} runs nothing on {proto}/{port}: a live 'not open' would prove nothing"


def test_sensors_and_markings(topo):
    assert topo.sensors, "every topology needs at least one sensor"
    for s in topo.sensors.values():
        assert s.zone in topo.zones
    for z in topo.zones.values():
        assert z.classification
    firewalls = [n for n in topo.nodes.values() if n.kind == "firewall"]
    assert firewalls and all(fw.default_action == "deny" for fw in firewalls)


# -- live: a real twin per topology (root) -------------------------------------------------------

@needs_twin
@pytest.mark.parametrize("path", TOPOLOGIES, ids=IDS)
def test_twin_keeps_missions_open_and_forbidden_flows_closed(path, tmp_path, record_property):
    """Boot the twin; from inside each source node, every mission flow must connect, every
    must-deny flow must not, and every host-to-service pair must match the static analysis."""
    from cyberrange.twin.build import Twin
    topo = _load(path)
    by_src: dict[str, list[dict]] = {}
    for m, src, dst in _mission_pairs(topo):
        by_src.setdefault(src, []).append({"proto": m.proto, "ip": str(topo.nodes[dst].ip),
                                           "port": m.port, "want": True, "what": f"mission {m.name}",
                                           "dst": dst})
    for src, dst, proto, port in MUST_DENY[topo.name]:
        by_src.setdefault(src, []).append({"proto": proto, "ip": str(topo.nodes[dst].ip),
                                           "port": port, "want": False, "what": "must deny",
                                           "dst": dst})
    # and the whole matrix: every host to every service of every other host, and a ping, live
    # against the static verdict (the twin must do what the model predicts)
    for src in topo.hosts:
        for dst in topo.hosts:
            if dst is src:
                continue
            for proto, port in [("icmp", None)] + [(s.proto, s.port) for s in dst.services]:
                ok, _ = reach.allowed(topo, src.name, dst.ip, proto, port)
                by_src.setdefault(src.name, []).append(
                    {"proto": proto, "ip": str(dst.ip), "port": port, "want": ok,
                     "what": "static " + ("allows" if ok else "denies"), "dst": dst.name})
    t0 = time.monotonic()
    twin = Twin(topo, tmp_path, f"test-topo-{topo.name}", log=lambda m: None)
    try:
        twin.start()
        record_property("boot_s", round(time.monotonic() - t0, 2))
        record_property("stages", twin.timings)
        # links emulate delay and loss (the default, `emulate`): a probe waits for the slowest
        # path and resends within its time-out, as `twin verify`'s probes do
        emulated = bool(twin.netem or twin.relay_ports)
        for rows in by_src.values():
            for r in rows:
                r.update(predicted=r["want"], service=None, why=r["what"])   # service: by port
                if emulated:
                    r.update(timeout=probe_timeout(topo), resend=True)
        # every source probes at once: a denied probe waits out its time-out
        with ThreadPoolExecutor(max_workers=16) as pool:
            results = dict(zip(by_src, pool.map(lambda src: run_probes(twin, src, by_src[src]),
                                                by_src)))
        if emulated:       # a 64 kbit/s radio queues a probe storm: allowed time-outs once more
            flat = [r | {"src": src} for src, rows in results.items() for r in rows]
            retry_timeouts(twin, flat)
            results = {}
            for r in flat:
                results.setdefault(r["src"], []).append(r)
        record_property("probed_s", round(time.monotonic() - t0, 2))
        record_property("probes", sum(len(rows) for rows in results.values()))
        bad = [f"{r['what']}: {src} -> {r['dst']} {r['proto']}/{r['port']}: {r['result']}"
               for src, rows in results.items() for r in rows
               if (r["result"] == "open") != r["want"]]
        assert not bad, "\n".join(bad)
    finally:
        twin.stop()

"""Fidelity: does the twin do what the model says?

``verify(topology)`` boots the twin and measures, then compares with the static analysis:

* reachability: from every host, one real connection attempt per declared service of every
  other host (TCP handshake, or a DNS query for UDP services) and one ICMP echo per host pair
  (``cyberrange.twin.probe``, all sources in parallel); the static prediction is
  ``cyberrange.model.reach.allowed``. Agreement means: predicted allowed <=> the probe got through.
* bandwidth: for every link profile with a bandwidth, one shaped path is measured with iperf3
  between two members of that zone or link (TCP on fast clean links, UDP on slow, lossy or
  long-delay ones: ``bandwidth_method``); within 5 % of the expected goodput counts as
  agreement.
* links: delay, jitter and loss of every profiled zone (``twin/linkcheck.py``).

Every disagreement carries an explanation built from both sides: the rule (or default) the
static analysis applied, and what the probe saw (refused = nothing listening, time-out = dropped).
"""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import time
from pathlib import Path

from cyberrange.model import reach
from cyberrange.twin.proberun import run_plan

BANDWIDTH_TOLERANCE = 0.05
MIN_MEASURED_MBIT = 0.5


def plan_probes(topo) -> dict[str, list[dict]]:
    """Per source host: the probes to run, each with the static prediction and its reason.

    Predictions come from ``reach.ReachIndex`` (address classes: one decision per class pair,
    the same verdict as ``reach.allowed``), so planning stays fast on hundreds of nodes."""
    index = reach.ReachIndex(topo)
    plan: dict[str, list[dict]] = {}
    hosts = sorted(topo.hosts, key=lambda n: n.name)
    for src in hosts:
        probes = []
        for dst in hosts:
            if dst is src:
                continue
            targets = [("icmp", None, None)] + [(s.proto, s.port, s.type) for s in dst.services]
            for proto, port, svc in targets:
                ok, why = index.check(src.name, dst.ip, proto, port)
                probes.append({"proto": proto, "ip": str(dst.ip), "port": port, "dst": dst.name,
                               "service": svc or "icmp", "predicted": bool(ok), "why": why})
        plan[src.name] = probes
    return plan


def explain(r: dict, topo=None) -> str:
    if topo is not None:      # the full reason (path and rule) for the rows that need one
        r["why"] = reach.allowed(topo, r["src"], r["ip"], r["proto"], r.get("port"))[1]
    live = {"open": "got through", "closed": "was refused (reached the host; nothing listens)",
            "filtered": "timed out (dropped on the way)"}.get(r["result"], r["result"])
    side = "allows" if r["predicted"] else "denies"
    return f"model {side} it ({r['why']}) but the probe {live}"


def check_reachability(twin) -> list[dict]:
    results = run_plan(twin, plan_probes(twin.topo))
    for r in results:
        if not r["agree"]:
            r["explanation"] = explain(r, twin.topo)
    return results


def _bandwidth_pairs(topo) -> list[tuple]:
    """(zone, client node, server node, server ip, profile) for each zone/link with a bandwidth."""
    from cyberrange.twin.linkcheck import zone_pairs
    return zone_pairs(topo, lambda p: bool(p.bandwidth_mbit))


def measure_bandwidth(twin, seconds: float = 3.0) -> list[dict]:
    """One iperf3 run per zone/link with a bandwidth (see ``bandwidth_method``)."""
    out = []
    if not shutil.which("iperf3"):
        return [{"zone": "*", "status": "skipped", "explanation": "iperf3 is not installed"}]
    for zone, client, server, server_ip, prof in _bandwidth_pairs(twin.topo):
        row = {"zone": zone, "client": client, "server": server, "profile": prof.name,
               "expected_mbit": prof.bandwidth_mbit}
        method = bandwidth_method(twin, prof, seconds)
        row.update(method=method["proto"], seconds=method["seconds"],
                   expected_mbit=round(method["expected_mbit"], 6))
        srv = twin.popen(server, ["iperf3", "-s", "-1", "-p", "5201"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
        _wait_listening(twin, server, 5201, srv)
        r = twin.run(client, ["iperf3", "-c", str(server_ip), "-p", "5201", *method["args"],
                              "-J"], timeout=method["seconds"] + method["omit"] + 30)
        try:
            srv.wait(timeout=10)
        except subprocess.TimeoutExpired:
            srv.kill()
        try:
            bps = json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"]
        except (ValueError, KeyError):
            row.update(status="error", explanation=(r.stderr or r.stdout).strip()[-200:])
            out.append(row)
            continue
        got = bps / 1e6
        ratio = got / method["expected_mbit"]
        row.update(measured_mbit=round(got, 4), ratio=round(ratio, 4),
                   agree=abs(1 - ratio) <= BANDWIDTH_TOLERANCE, status="measured")
        if not row["agree"]:
            row["explanation"] = (f"measured {got:.4g} Mbit/s is {abs(1 - ratio) * 100:.1f}% off "
                                  f"the {method['expected_mbit']:.4g} Mbit/s expected "
                                  f"({method['why']})")
        out.append(row)
    return out


def bandwidth_method(twin, prof, seconds: float = 3.0) -> dict:
    """How to measure a profile's bandwidth, and the goodput to expect.

    * TCP (``seconds``, first second omitted) on fast, clean, short links: the profile's
      bandwidth is bulk TCP goodput (``twin/shaping.py`` calibrates HTB for it);
    * UDP at twice the rate on slow (< 0.5 Mbit/s), lossy or long-delay links, where TCP
      measures its own congestion control: datagrams of 1460 bytes (200 on slow links, so a
      short test still carries 150 of them), the seconds HTB's burst lasts omitted, and
      the goodput expected from the class rate: rate × payload / frame × (1 - emulated loss).
    """
    from cyberrange.twin import linkemu, shaping
    emulated = twin.netem or (twin.link_emulation == "relay" and linkemu.relay_needed(prof))
    delay = prof.delay_ms if emulated else 0.0
    loss = prof.loss_pct if emulated else 0.0
    if prof.bandwidth_mbit >= MIN_MEASURED_MBIT and not loss and delay < 10:
        return {"proto": "tcp", "seconds": seconds, "omit": 1,
                "args": ["-t", f"{seconds:g}", "-O", "1"],
                "expected_mbit": prof.bandwidth_mbit, "why": "TCP goodput"}
    size = 1460 if prof.bandwidth_mbit >= MIN_MEASURED_MBIT else 200
    rate = shaping.class_rate_bit(prof)
    secs = min(30.0, max(seconds + 1, 150 * (size + 42) * 8 / rate))
    # offered at twice the rate, HTB's burst is spent after burst / rate seconds: left out
    omit = min(20, math.ceil(shaping.burst_bytes(rate) * 8 / rate) + 1)
    expected = rate * size / (size + 42) * (1 - loss / 100) / 1e6
    return {"proto": "udp", "seconds": round(secs, 1), "omit": omit,
            "args": ["-u", "-b", f"{int(2 * rate)}", "-l", str(size), "-t", f"{secs:.1f}",
                     "-O", str(omit)],
            "expected_mbit": expected,
            "why": f"UDP goodput of {size}-byte datagrams"
                   + (f", {loss:g}% loss" if loss else "")}


def _wait_listening(twin, node: str, port: int, proc, timeout: float = 5.0) -> None:
    """Until ``proc`` listens on ``port`` inside ``node`` (or exits, or ``timeout``)."""
    from cyberrange.twin import netns
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if netns.listening(twin.ns[node], port):
            return
        time.sleep(0.01)


def verify(topo, run_dir: Path, bandwidth: bool = True, log=None, stage_cb=None,
           session=None, links: bool = True, link_emulation: str = "emulate",
           accept_unemulated: bool = False, link_probes: int = 1000,
           states: list | None = None) -> dict:
    """Boot, probe, measure, tear down. ``session(twin)``: a context manager that holds the
    twin's life (the CLI passes ``session.TwinSession`` of the run: signals, teardown and the
    manifest as in a drill); without one, the twin is simply stopped at the end. ``states``:
    link states (sets of zone/link names down) to check after everything else
    (``twin/statecheck.py``)."""
    from contextlib import nullcontext

    from cyberrange.twin.build import Twin
    twin = Twin(topo, run_dir, Path(run_dir).name, log=log)
    twin.link_emulation = link_emulation
    t0 = time.monotonic()
    report: dict = {"topology": topo.name, "link_emulation": link_emulation}
    link_opts = {"probes": link_probes, "accept_unemulated": accept_unemulated} if links else None
    with (session(twin) if session is not None else nullcontext()):
        _measure(twin, report, t0, bandwidth, stage_cb, link_opts, states or [], log)
    return _summarise(report)


def _measure(twin, report: dict, t0: float, bandwidth: bool, stage_cb,
             link_opts: dict | None = None, states: list | None = None, log=None) -> None:
    try:
        twin.start(stage_cb=stage_cb)
        report["boot_s"] = round(time.monotonic() - t0, 2)
        report["warnings"] = list(twin.warnings)
        report["link_emulation"] = twin.link_emulation      # the mode used: netem, relay, ...
        if stage_cb:
            stage_cb("reachability probes")
        t1 = time.monotonic()
        report["reachability"] = check_reachability(twin)
        report["reachability_s"] = round(time.monotonic() - t1, 2)
        if bandwidth:
            if stage_cb:
                stage_cb("bandwidth")
            report["bandwidth"] = measure_bandwidth(twin)
        if link_opts is not None:
            from cyberrange.twin.linkcheck import measure_links
            if stage_cb:
                stage_cb("delay, jitter and loss")
            t2 = time.monotonic()
            report["links"] = measure_links(twin, **link_opts)
            report["links_s"] = round(time.monotonic() - t2, 2)
            report["netem"] = twin.netem
        if states:
            from cyberrange.twin.statecheck import verify_states
            if stage_cb:
                stage_cb(f"{len(states)} link state(s)")
            t3 = time.monotonic()
            report["states"] = verify_states(twin, states, log=log)
            report["states_s"] = round(time.monotonic() - t3, 2)
    finally:
        twin.stop()


def _summarise(report: dict) -> dict:
    reach_rows = report["reachability"]
    bw = [b for b in report.get("bandwidth", []) if b.get("status") == "measured"]
    report["summary"] = {
        "probes": len(reach_rows),
        "agree": sum(r["agree"] for r in reach_rows),
        "disagree": sum(not r["agree"] for r in reach_rows),
        "bandwidth_measured": len(bw),
        "bandwidth_agree": sum(b["agree"] for b in bw),
        "links_checked": len(report.get("links", [])),
        "links_agree": sum(bool(r.get("agree")) for r in report.get("links", [])),
        "states_checked": len(report.get("states", [])),
        "states_agree": sum(bool(r.get("agree")) for r in report.get("states", [])),
    }
    report["ok"] = (report["summary"]["disagree"] == 0
                    and report["summary"]["bandwidth_agree"] == len(bw)
                    and report["summary"]["links_agree"] == report["summary"]["links_checked"]
                    and report["summary"]["states_agree"] == report["summary"]["states_checked"])
    return report

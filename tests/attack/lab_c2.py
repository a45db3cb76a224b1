"""The namespace lab of the C2, exfiltration, MitM, impact, ICS and replay technique tests (built
by tests/support/nslab.py)::

    crt-<id>-a   attacker 10.98.0.10 ─┐
    crt-<id>-v1  victim   10.98.0.21 ─┤
    crt-<id>-v2  victim   10.98.0.22 ─┤  br0 in crt-<id>-sw (sensors: tcpdump on a bridge port)
    crt-<id>-c   C2       10.98.0.30 ─┤  HTTP listener :8443, DNS C2 :53 (evil.example)
    crt-<id>-p   PLC      10.98.0.40 ─┘  Modbus/TCP :502

The services start on demand: ``log, out = lab.service("c2-http")`` (or "c2-dns"),
``log = lab.service("plc")``.
"""
from __future__ import annotations

import json

from nslab import LabSpec, Node, Service

NET = "10.98.0"
ATTACKER, V1, V2, C2, PLC = f"{NET}.10", f"{NET}.21", f"{NET}.22", f"{NET}.30", f"{NET}.40"


def c2(mode, port, *extra):
    log, out = f"{{tmp}}/c2-{mode}.jsonl", f"{{tmp}}/c2-{mode}-out"
    return Service(f"c2-{mode}", "c", ("{py}", "-m", "cyberrange.services.c2", "--mode", mode,
                                       "--port", str(port), *extra, "--log", log, "--out", out),
                   port=port, udp=mode == "dns", on_demand=True,
                   outputs=(log, out))


LAB = LabSpec(
    "c2lab",
    nodes=(Node("a", f"{ATTACKER}/24", port="pa", actor="attacker"),
           Node("v1", f"{V1}/24", port="pv1"),
           Node("v2", f"{V2}/24", port="pv2"),
           Node("c", f"{C2}/24", port="pc"),
           Node("p", f"{PLC}/24", port="pp")),
    services=(c2("http", 8443), c2("dns", 53, "--domain", "evil.example"),
              Service("plc", "p", ("{py}", "-m", "cyberrange.services.modbus", "--port", "502",
                                   "--registers", json.dumps({"0": 350, "1": 72, "2": 1}),
                                   "--log", "{tmp}/plc.jsonl"),
                      port=502, on_demand=True, outputs=("{tmp}/plc.jsonl",))))

"""Machinery every technique family shares: the result of a technique and its exact flow
accounting (one entry per 5-tuple), and the reading of targets (``ip``, ``ip:port``, CIDR).

The rest of the shared machinery is in ``layer2`` (routes, ARP, a raw receiver, paced layer-2
sending) and ``tcp`` (kernel TCP connections counted with TCP_INFO, login and SSH dialogues);
see docs/techniques.md.
"""
from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass, field


# --------------------------------------------------------------------------- results and flows
@dataclass
class Result:
    outcome: str = "failed"                 # succeeded | failed | blocked | error
    start: float = 0.0
    end: float = 0.0
    flows: list[dict] = field(default_factory=list)
    facts: dict = field(default_factory=dict)
    error: str | None = None
    log: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"outcome": self.outcome, "start": self.start, "end": self.end,
                "flows": merge_flows(self.flows), "facts": self.facts, "error": self.error,
                "log": self.log}


def conclude(res: Result, found, blocked) -> Result:
    """End ``res``: ``succeeded`` when the technique got what it came for (``found``), else
    ``blocked`` when nothing could be reached (``blocked``), else ``failed``."""
    res.outcome = "succeeded" if found else "blocked" if blocked else "failed"
    res.end = time.time()
    return res


def flow(src, dst, proto, sport, dport, packets, nbytes) -> dict:
    return {"src": str(src), "dst": str(dst), "proto": proto, "sport": int(sport),
            "dport": int(dport), "packets": int(packets), "bytes": int(nbytes)}


def merge_flows(flows: list[dict]) -> list[dict]:
    """One entry per 5-tuple (sums), in first-seen order; drops zero-packet flows."""
    out: dict[tuple, dict] = {}
    for f in flows:
        key = (f["src"], f["dst"], f["proto"], f["sport"], f["dport"])
        if key in out:
            out[key]["packets"] += f["packets"]
            out[key]["bytes"] += f["bytes"]
        else:
            out[key] = dict(f)
    return [f for f in out.values() if f["packets"] > 0]


# --------------------------------------------------------------------------- targets
def _unique_ips(targets: list[str]) -> list[str]:
    """Target strings (ip, ip:port or CIDR) -> unique IPs, in order."""
    out = []
    for t in map(str, targets):
        if "/" in t:
            out.extend(str(a) for a in ipaddress.IPv4Network(t, strict=False).hosts())
        else:
            out.append(str(ipaddress.IPv4Address(t.rsplit(":", 1)[0] if ":" in t else t)))
    return list(dict.fromkeys(out))


def parse_services(targets: list[str], ports: list[int], log: list[str],
                   only_listed_ports: bool = True) -> list[tuple[str, int]]:
    """Targets -> unique (ip, port): ``ip:port`` stays (if its port is in ``ports``, unless
    ``only_listed_ports`` is false), a bare ip or CIDR gets every port in ``ports``."""
    out: list[tuple[str, int]] = []
    for t in map(str, targets):
        if ":" in t and "/" not in t:
            ip, port = t.rsplit(":", 1)
            if int(port) in ports or not only_listed_ports:
                out.append((ip, int(port)))
            else:
                log.append(f"{t}: port not in params.ports {ports}; skipped")
        else:
            out.extend((ip, p) for ip in _unique_ips([t]) for p in ports)
    return list(dict.fromkeys(out))


def _short(items: list[str], n: int = 8) -> str:
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")

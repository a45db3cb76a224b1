"""Detection envelopes: what today's fixed thresholds promise, per family, read from the
detectors' YAML (``detectors/*.yaml``), printed beside the measured envelopes."""
from __future__ import annotations

from pathlib import Path

__all__ = ["TODAY", "today_envelopes"]


def _settings(folder: Path) -> dict:
    """Detector name -> its settings (and enabled flag), from ``folder/*.yaml``."""
    import yaml
    out = {}
    for path in sorted(folder.glob("*.y*ml")):
        for d in (yaml.safe_load(path.read_text()) or {}).get("detectors") or []:
            out[d["name"]] = {**(d.get("settings") or {}), "_enabled": d.get("enabled", True)}
    return out


def _rule(s: dict, name: str, text) -> str:
    d = s.get(name)
    if d is None:
        return f"`{name}`: not configured"
    if not d["_enabled"]:
        return f"`{name}`: disabled"
    try:
        return f"`{name}`: " + text(d)
    except (KeyError, TypeError, ZeroDivisionError):
        return f"`{name}`: settings changed (see its YAML)"


TODAY = {      # family -> [(detector, what its fixed thresholds promise)]
    "scan": [("vertical-portscan", lambda d: f">= {d['threshold']} distinct ports in "
              f"{d['window']} s ({'/'.join(d['transports'])}): >= {d['threshold']} probes at >= "
              f"{d['threshold'] / d['window']:g} probes/s"),
             ("slow-portscan", lambda d: f">= {d['threshold']} distinct (host, port) in "
              f"{d['window']} s, {'/'.join(d['transports'])} only")],
    "sweep": [("horizontal-sweep", lambda d: f">= {d['threshold']} hosts in {d['window']} s "
               f"({'/'.join(d['transports'])}): >= {d['threshold']} addresses at >= "
               f"{d['threshold'] / d['window']:g}/s"),
              ("arp-scan", lambda d: f"on-link only: >= {d['threshold']} ARP requests in "
               f"{d['window']} s")],
    "arp-scan": [("arp-scan", lambda d: f">= {d['threshold']} distinct IPs asked in "
                  f"{d['window']} s: >= {d['threshold'] / d['window']:g} requests/s and >= "
                  f"{d['threshold']} addresses")],
    "guess": [("login-bruteforce", lambda d: f">= {d['threshold']} attempts in {d['window']} s "
               f"at one service (ports {d['ports']}): >= {d['threshold']} guesses at >= "
               f"{d['threshold'] / d['window']:g}/s")],
    "spray": [("password-spray", lambda d: f">= {d['threshold']} attempts in {d['window']} s "
               f"over >= {d['min_targets']} services, at most {d.get('max_share', 0.75):.0%} of them "
               f"at one service; a client that logs in: its own pace (counts as their "
               f"{d.get('pace_confidence', 0):.0%} upper bound) or its /{d.get('peer_prefix', 24)} "
               f"peers' warm-up pace")],
    "udp-flood": [("udp-flood", lambda d: f">= {d['pps']} datagrams/s or {d['bps']} B/s to one "
                   f"host for {d['sustain']} s; trained: >= max({d.get('min_pps', d['pps'])}, "
                   f"{d.get('relative', 0)} x the host's warm-up peak)")],
    "syn-flood": [("syn-flood", lambda d: f">= {d['pps']} SYN/s or {d['flows']} half-open flows/s "
                   f"to one ip:port for {d['sustain']} s")],
    "http-beacon": [("c2-beacon", lambda d: f"score >= {d['threshold']}, >= "
                     f"{d['min_connections']} check-ins, jitter scoring 0 at ±{d['jitter']:.0%}; or the "
                     f"rhythm test: >= {d.get('rhythm_min_connections', '?')} check-ins as regular "
                     f"as a {d.get('rhythm_p', '?')} chance for random arrivals"
                     + (f"; to an address no baseline flow touched (trained): >= "
                        f"{d.get('new_peer_min_connections', 4)} check-ins whose intervals are "
                        f"all as regular as a {d['new_peer_p']} chance"
                        if d.get("new_peer_p") else ""))],
    "dns-beacon": [("dns-c2-txt", lambda d: f">= {d['min_distinct']} new TXT names per domain in "
                    f"{d['window']} s"),
                   ("c2-beacon", lambda d: f"DNS series: >= {d['min_connections']} queries")],
    "dns-exfil": [("dns-tunnel", lambda d: f">= {d['min_distinct']} new names in {d['window']} s "
                   f"(>= {d['min_distinct'] / d['window']:.2g} queries/s) with mean label length "
                   f">= {d['length']} or entropy >= {d['entropy']}")],
    "upload": [("upload-volume", lambda d: f">= {d['min_bytes']} B in {d['window']} s "
                f"(and z >= {d['z']} against the host's baseline)")],
    "modbus-write": [("modbus-allowlist", lambda d: f"any write from a client not in the "
                      f"baseline/allow-list; a hold: {d['hold_writes']} writes in "
                      f"{d['hold_window']} s")],
    "modbus-read": [("modbus-allowlist", lambda d: f"any connection from a client not in the "
                     f"baseline/allow-list (checks: {', '.join(d['checks'])})")],
    "modbus-hold": [("modbus-allowlist", lambda d: f"a hold: >= {d['hold_writes']} writes in "
                     f"{d['hold_window']} s; any write from a client not allowed to write")],
    "arp-poison": [("arp-spoofing", lambda d: f">= {d['threshold']} conflicting IP-to-MAC claim(s) "
                    f"in an episode, or > {d['max_ips_per_mac']} IPs claimed by one MAC")],
    "banner": [("vertical-portscan", lambda d: f">= {d['threshold']} distinct ports in "
                f"{d['window']} s"),
               ("slow-portscan", lambda d: f">= {d['threshold']} distinct (host, port) in "
                f"{d['window']} s, {'/'.join(d['transports'])} only")],
    "replay": [("slow-portscan", lambda d: f"the worm probes 5 TCP ports per victim: >= "
                f"{d['threshold']} distinct (host, port) in {d['window']} s"),
               ("horizontal-sweep", lambda d: f">= {d['threshold']} hosts in {d['window']} s "
                f"(the pcap has 2)")],
    "valid-login": [("lateral-movement", lambda d: f"a session on a new edge only after >= "
                     f"{d['min_probes']} probes or >= {d['min_failures']} failures from the "
                     f"source (require: {d['require']}); or, with the pivot check, when the "
                     f"entered host makes a first contact onward within "
                     f"{d.get('pivot_window', 600)} s: a lone valid login is not flagged")],
}


def today_envelopes(folder: Path) -> dict:
    """Family -> what the shipped detectors' fixed thresholds promise (from the YAML)."""
    s = _settings(Path(folder))
    return {fam: "; ".join(_rule(s, name, text) for name, text in rules)
            for fam, rules in TODAY.items()}

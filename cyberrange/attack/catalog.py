"""The techniques a playbook may name, with their parameters and the facts they produce.

This table is what the playbook loader validates against; the implementations live in
``cyberrange.attack.techniques`` and run inside the actor's namespace (``cyberrange.attack.agent``).
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Param:
    type: type | tuple          # int, float, str, list, bool
    default: object
    help: str


@dataclass(frozen=True)
class Technique:
    id: str                     # ATT&CK technique id
    name: str
    tactic: str
    params: dict[str, Param] = field(default_factory=dict)
    produces: tuple[str, ...] = ()   # fact names: "#{<step>.<fact>}"
    target_kind: str = "host"        # "host": IPs; "service": ip:port


TECHNIQUES: dict[str, Technique] = {t.id: t for t in [
    Technique(
        "T1018", "Remote System Discovery: ICMP ping sweep", "discovery",
        {
            "timeout": Param((int, float), 1.0, "seconds to wait for replies after the last probe"),
            "rate": Param((int, float), 500, "probes per second"),
        },
        produces=("hosts",),
    ),
    Technique(
        "T1046", "Network Service Discovery: TCP SYN scan", "discovery",
        {
            "ports": Param(list, [22, 80, 443], "TCP ports to probe on each target"),
            "rate": Param((int, float), 500, "SYN probes per second"),
            "timeout": Param((int, float), 1.0, "seconds to wait for answers after the last probe"),
        },
        produces=("open", "hosts"),
    ),
    Technique(
        "T1110.001", "Brute Force: Password Guessing against a login service", "credential-access",
        {
            "service": Param(str, "login", "service type to attack (the twin's login service)"),
            "ports": Param(list, [22, 23, 2222], "ports taken as login services from ip:port targets"),
            "usernames": Param(list, ["root", "admin"], "user names to try"),
            "passwords": Param(list, ["password", "123456", "admin"], "passwords to try, in order"),
            "pause": Param((int, float), 0.05, "seconds between attempts"),
            "stop_on_success": Param(bool, True, "stop guessing an account once its password is found"),
        },
        produces=("credentials", "compromised"),
        target_kind="service",
    ),
]}

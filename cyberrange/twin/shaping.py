"""Link shaping with tc: HTB for bandwidth everywhere, netem for delay/jitter/loss where the
kernel has it. Some kernels (this project's CI machines among them) are built without netem;
there the twin warns once, names the links whose delay/loss are not emulated, and goes on."""
from __future__ import annotations

from cyberrange.model.topology import LinkProfile


def htb_commands(dev: str, profile: LinkProfile, netem: bool) -> list[list[str]]:
    """tc commands shaping the egress of ``dev`` to ``profile``."""
    cmds: list[list[str]] = []
    if profile.bandwidth_mbit:
        rate = f"{profile.bandwidth_mbit:g}mbit"
        # burst large enough for the rate at 1 ms timer granularity, never below 15 kB
        burst = max(15_000, int(profile.bandwidth_mbit * 1e6 / 8 / 250))
        cmds.append(["tc", "qdisc", "replace", "dev", dev, "root", "handle", "1:", "htb", "default", "1"])
        cmds.append(["tc", "class", "add", "dev", dev, "parent", "1:", "classid", "1:1", "htb",
                     "rate", rate, "ceil", rate, "burst", str(burst), "cburst", str(burst)])
        parent = ["parent", "1:1", "handle", "10:"]
    else:
        parent = ["root", "handle", "10:"]
    if netem and profile.needs_netem:
        args = []
        if profile.delay_ms or profile.jitter_ms:
            args += ["delay", f"{profile.delay_ms:g}ms"]
            if profile.jitter_ms:
                args += [f"{profile.jitter_ms:g}ms"]
        if profile.loss_pct:
            args += ["loss", f"{profile.loss_pct:g}%"]
        cmds.append(["tc", "qdisc", "add", "dev", dev, *parent, "netem", *args])
    return cmds

"""Link shaping with tc: HTB for bandwidth everywhere, netem for delay/jitter/loss where the
kernel has it. Some kernels (this project's CI machines among them) are built without netem;
there the twin warns once, names the links whose delay/loss are not emulated, and goes on."""
from __future__ import annotations

from cyberrange.model.topology import LinkProfile


# A profile's bandwidth is what a user sees: the goodput of a bulk TCP transfer over 1500-byte
# packets. HTB counts whole Ethernet frames (1514 bytes carry 1448 bytes of TCP payload with
# timestamps), so a class at the nominal rate gave 4.4 % less goodput (measured 3.79 of 4 and
# 95.6 of 100 Mbit/s); the class rate is scaled up by that ratio. A UDP flow of 1460-byte
# datagrams then gets 1.6 % more than nominal, small packets proportionally less.
GOODPUT_CALIBRATION = 1514 / 1448
FRAME = 1514


def class_rate_bit(profile: LinkProfile) -> int:
    """The HTB class rate (bit/s, layer 2) that gives ``profile``'s bandwidth as TCP goodput."""
    return int(round(profile.bandwidth_mbit * 1e6 * GOODPUT_CALIBRATION))


def burst_bytes(rate_bit: int) -> int:
    """Enough for the rate at the kernel's 4 ms timer granularity, never below 15 kB. (On a
    slow radio that lets the first seconds pass at line rate: ``twin verify`` leaves the first
    two seconds out of its measurement of slow links.)"""
    return int(max(15_000, rate_bit / 8 / 250))


def htb_commands(dev: str, profile: LinkProfile, netem: bool) -> list[list[str]]:
    """tc commands shaping the egress of ``dev`` to ``profile``."""
    cmds: list[list[str]] = []
    if profile.bandwidth_mbit:
        bits = class_rate_bit(profile)
        rate = f"{bits}bit"
        burst = burst_bytes(bits)
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
    elif profile.bandwidth_mbit and class_rate_bit(profile) < SLOW_LINK_BIT:
        # a slow radio's modem buffers about a second of traffic, not the 1000 packets of a
        # default queue (80 s at 9.6 kbit/s): excess is dropped, latency stays bounded
        cmds.append(["tc", "qdisc", "add", "dev", dev, *parent, "bfifo", "limit",
                     str(queue_bytes(class_rate_bit(profile)))])
    return cmds


SLOW_LINK_BIT = 1_000_000


def queue_bytes(rate_bit: int) -> int:
    """The queue of a slow link: one second of its rate beyond the burst, at least three
    full frames."""
    return int(max(3 * FRAME, rate_bit / 8))

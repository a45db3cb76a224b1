"""Discovery: T1018 ICMP ping sweep and T1046 TCP SYN scan, crafted with scapy.

Addresses are resolved once (one batched ARP exchange), every frame is built up front and its
bytes are written through ONE reused layer-2 socket, paced at ``rate``; a raw receiver on the same
interface collects the answers. The ledger counts exactly the IPv4 packets that leave the actor,
including the RST its kernel answers each SYN-ACK with.
"""
from __future__ import annotations

import random
import struct
import threading
import time

from cyberrange.attack.spec import Param, technique
from cyberrange.attack.techniques import witness
from cyberrange.attack.techniques.common import (
    Counter,
    Result,
    _short,
    _unique_ips,
    conclude,
    flow,
)
from cyberrange.attack.techniques.layer2 import (
    _frames_for,
    _run_l2,
    isolation_reason,
    resolve_hops,
    route_targets,
)


@technique(
    "T1018",
    "Remote System Discovery: ICMP ping sweep",
    "discovery",
    {
        "timeout": Param((int, float), 1.0, "seconds to wait for replies after the last probe "
                                            "(also the ARP wait)"),
        "rate": Param((int, float), 500, "probes per second"),
    },
    produces=("hosts",),
)
def ping_sweep(targets: list[str], params: dict) -> Result:
    from scapy.layers.inet import ICMP, IP
    from scapy.layers.l2 import Ether
    res = Result(start=time.time())
    timeout = float(params["timeout"])
    rate = float(params["rate"])
    hops = route_targets(_unique_ips(targets), res.log)
    macs = resolve_hops(hops, timeout, res.log)
    icmp_id = random.randint(1, 0xFFFF)

    def build(n, h, src_mac, dst_mac):
        return bytes(Ether(src=src_mac, dst=dst_mac)
                     / IP(src=h.src, dst=h.ip, id=random.randint(0, 0xFFFF), ttl=64)
                     / ICMP(type=8, code=0, id=icmp_id, seq=(n + 1) & 0xFFFF))
    frames = _frames_for(hops, macs, build, res.log)

    wanted = {h.ip for h, _i, _f in frames}
    replied: set[str] = set()

    def on_ip(src, proto, l4):
        # ICMP echo reply (type 0) carrying our identifier
        if proto == 1 and l4[0] == 0 and src in wanted and struct.unpack("!H", l4[4:6])[0] == icmp_id:
            replied.add(src)

    sent = Counter()
    try:
        _run_l2(frames, rate, timeout, on_ip, res.log, sent)
    finally:                    # after a cut too: exactly the probes that left
        res.flows = [flow(h.src, h.ip, "icmp", 8, 0, 1, len(f)) for h, _i, f in frames[:sent.n]]
    res.facts = {"hosts": [h.ip for h in hops if h.ip in replied]}
    via_gw = any(h.gw for h, _i, _f in frames)
    return conclude(res, replied, _silence(via_gw, bool(frames), targets))


def _silence(via_gw: bool, anything_sent: bool, targets) -> str | None:
    """Why a discovery step got no answer at all, if that is the defence's doing: probes that
    went through a gateway and died there (a firewall on the path), or an actor cut off from
    its network (:func:`layer2.isolation_reason`). None: the targets are simply not there."""
    if via_gw and anything_sent:
        return "no probe through the gateway got an answer (a firewall on the path drops them)"
    if targets:
        return isolation_reason()
    return None


# --------------------------------------------------------------------------- T1046 SYN scan
# The actor's kernel has no socket on the scan's source port, so it answers every SYN-ACK with
# one RST (Ether 14 + IP 20 + TCP 20, no options). The ledger counts it: it is the actor's packet.
KERNEL_RST_FRAME_BYTES = 54


@technique(
    "T1046",
    "Network Service Discovery: TCP SYN scan",
    "discovery",
    {
        "ports": Param(list, [22, 80, 443], "TCP ports to probe on each target"),
        "rate": Param((int, float), 500, "SYN probes per second"),
        "timeout": Param((int, float), 1.0, "seconds to wait for answers after the last probe"),
    },
    produces=("open", "hosts"),
)
def syn_scan(targets: list[str], params: dict) -> Result:
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether
    res = Result(start=time.time())
    timeout = float(params["timeout"])
    rate = float(params["rate"])
    ports = [int(p) for p in params["ports"]]
    hops = route_targets(_unique_ips(targets), res.log)
    macs = resolve_hops(hops, timeout, res.log)
    sport = random.randint(40000, 60999)
    probes = [(h, p) for h in hops for p in ports]

    def build(n, hp, src_mac, dst_mac):
        h, port = hp
        return bytes(Ether(src=src_mac, dst=dst_mac)
                     / IP(src=h.src, dst=h.ip, id=random.randint(0, 0xFFFF), ttl=64)
                     / TCP(sport=sport, dport=port, flags="S", seq=random.getrandbits(32),
                           window=1024, options=[("MSS", 1460)]))

    frames = []
    for n, (h, port) in enumerate(probes):
        mac = macs.get(h.iface, {}).get(h.next_hop)
        if mac is None:
            continue
        frames.append((h, port))
    if len(frames) < len(probes):
        missing = sorted({h.ip for h, _p in probes} - {h.ip for h, _p in frames})
        res.log.append(f"{len(missing)} targets did not answer ARP (only ARP sent): {_short(missing)}")
    from scapy.arch import get_if_hwaddr
    my_macs = {i: get_if_hwaddr(i) for i in {h.iface for h, _p in frames}}
    built = [(h, h.iface, build(0, (h, p), my_macs[h.iface], macs[h.iface][h.next_hop]), p)
             for h, p in frames]

    wanted = {h.ip for h, _p in frames}
    synacks: dict[tuple[str, int], int] = {}
    rsts: dict[tuple[str, int], int] = {}
    unreach: set[str] = set()
    lock = threading.Lock()

    def on_ip(src, proto, l4):
        with lock:
            if proto == 6 and src in wanted:
                their_port, our_port = struct.unpack("!HH", l4[0:4])
                if our_port != sport:
                    return
                flags = l4[13]
                if flags & 0x12 == 0x12:
                    synacks[(src, their_port)] = synacks.get((src, their_port), 0) + 1
                elif flags & 0x04:
                    rsts[(src, their_port)] = rsts.get((src, their_port), 0) + 1
            elif proto == 1 and l4[0] == 3:
                unreach.add(src)

    # the kernel's RSTs are the actor's packets too, and a rule in the actor's node may drop
    # them: the witness counts what of each probe's 5-tuple really left
    for h, _i, _f, port in built:
        witness.claim((h.src, h.ip, "tcp", sport, port))
    sent = Counter()
    try:
        _run_l2([(h, i, f) for h, i, f, _p in built], rate, timeout, on_ip, res.log, sent)
    finally:                    # after a cut too: the probes that left (+ estimated RSTs)
        for h, _i, f, port in built[:sent.n]:
            n_synack = synacks.get((h.ip, port), 0)
            res.flows.append(flow(h.src, h.ip, "tcp", sport, port, 1 + n_synack,
                                  len(f) + n_synack * KERNEL_RST_FRAME_BYTES))
    res.log.append(f"source port {sport}; {len(synacks)} SYN-ACK 5-tuples, "
                   f"{len(rsts)} RST, {len(unreach)} ICMP-unreachable senders")
    open_ = [f"{h.ip}:{p}" for h, _i, _f, p in built if (h.ip, p) in synacks]
    res.facts = {"open": open_,
                 "hosts": list(dict.fromkeys(o.rsplit(":", 1)[0] for o in open_))}
    answered = bool(synacks or rsts)
    via_gw = any(h.gw for h, _i, _f, _p in built)
    if answered:
        silent = None
    elif unreach and built:
        silent = "no probe got a TCP answer, only ICMP unreachable (a reject rule)"
    else:
        silent = _silence(via_gw, bool(built), targets)
    return conclude(res, open_, silent)


# --------------------------------------------------------------------------- T1018-arp ARP scan
@technique(
    "T1018-arp",
    "Remote System Discovery: ARP scan",
    "discovery",
    {
        "timeout": Param((int, float), 1.0, "seconds to wait for replies after each round"),
        "rate": Param((int, float), 200, "ARP requests per second"),
        "retries": Param(int, 1, "extra rounds for targets that did not answer"),
    },
    produces=("hosts", "macs", "arp_requests"),
)
def arp_scan(targets: list[str], params: dict) -> Result:
    """ARP requests only (layer 2: no IP packet at all), so only on-link targets can be asked.
    The ledger's flows stay empty; the number of requests is the fact ``arp_requests`` (and the
    record's ``arp_frames``)."""
    from cyberrange.attack.techniques.layer2 import arp_exchange
    res = Result(start=time.time())
    timeout = float(params["timeout"])
    rate = float(params["rate"])
    retries = int(params["retries"])
    hops = route_targets(_unique_ips(targets), res.log)
    off_link = [h.ip for h in hops if h.gw]
    if off_link:
        res.log.append(f"{len(off_link)} targets are behind a router (ARP does not cross it); "
                       f"not asked: {_short(off_link)}")
    found: dict[str, str] = {}

    def facts() -> None:
        hosts = [h.ip for h in hops if h.ip in found]
        res.facts = {"hosts": hosts, "macs": {ip: found[ip] for ip in hosts},
                     "arp_requests": res.arp_frames}

    try:
        for iface in sorted({h.iface for h in hops if not h.gw}):
            on = [h for h in hops if not h.gw and h.iface == iface]
            todo = [h.ip for h in on]
            for _round in range(1 + max(0, retries)):
                if not todo:
                    break
                found.update(arp_exchange(iface, on[0].src, todo, timeout, rate))
                todo = [ip for ip in todo if ip not in found]
    finally:                    # after a cut too: what was asked and found before it
        facts()
    silent = None if found else _silence(False, False, [h for h in hops if not h.gw] or targets)
    facts()                     # the isolation check may have asked the gateway
    res.log.append(f"{res.arp_frames} ARP requests, {len(res.facts['hosts'])} answered")
    return conclude(res, found, silent)


# --------------------------------------------------------------------------- T1046-connect
@technique(
    "T1046-connect",
    "Network Service Discovery: TCP connect scan",
    "discovery",
    {
        "ports": Param(list, [22, 80, 443], "TCP ports to try on each target"),
        "rate": Param((int, float), 200, "connection attempts started per second"),
        "parallel": Param(int, 64, "connection attempts outstanding at once"),
        "settle": Param((int, float), 0.2, "seconds an open connection stays up to take a "
                                           "banner before the abortive close (exact counts)"),
        "timeout": Param((int, float), 1.5, "seconds before an unanswered port is filtered "
                                             "(keep it away from 1 s and 3 s: SYN retransmissions)"),
    },
    produces=("open", "hosts"),
)
def connect_scan(targets: list[str], params: dict) -> Result:
    """Kernel connect() per (target, port), many at once (non-blocking), like ``nmap -sT``.

    Accounting per connection from TCP_INFO at close: open = SYN + ACK (+ any ACK of data the
    service sent at once) + the RST of the abortive close; closed = the SYN(s) (the target's
    RST ends it); filtered = the SYN and every retransmission the kernel made before
    ``timeout`` (1 s initial RTO: 1.5 s gives 2 SYNs), no RST."""
    import errno
    import os
    import select
    import socket

    from cyberrange.attack.techniques.common import NODE_ERRNOS, defence_reason, parse_services
    from cyberrange.attack.techniques.layer2 import alive_for_kernel
    from cyberrange.attack.techniques.tcp import abort_and_count
    res = Result(start=time.time())
    timeout = float(params["timeout"])
    rate = float(params["rate"])
    parallel = max(1, int(params["parallel"]))
    settle = float(params["settle"])
    ports = [int(p) for p in params["ports"]]
    probes = parse_services(targets, ports, res.log, only_listed_ports=False)
    alive = alive_for_kernel(list(dict.fromkeys(ip for ip, _p in probes)), min(timeout, 1.0),
                             res.log)
    probes = [(ip, p) for ip, p in probes if ip in alive]
    interval = 1.0 / rate if rate > 0 else 0.0
    witness.ensure()                      # before the first SYN: it counts what leaves
    pending: dict[int, dict] = {}         # fd -> probe state
    status: dict[tuple[str, int], str] = {}
    poller = select.poll()
    t0 = time.monotonic()
    nxt = 0

    def finish(st, how):
        poller.unregister(st["sock"].fileno())
        del pending[st["sock"].fileno()]
        status[(st["ip"], st["port"])] = how
        res.flows.append(abort_and_count(st["sock"], st["src"], st["sport"], st["ip"],
                                         st["port"], how == "open"))

    def opened(st):
        # Do not abort at once: a service that talks first (SSH, FTP, SMTP banners) would have
        # its banner reach a closed socket, and the kernel would answer it with an uncounted
        # RST. Read what comes for ``settle`` seconds (our kernel ACKs it, and TCP_INFO counts
        # that ACK), then abort.
        st["open"], st["deadline"] = True, time.monotonic() + settle
        poller.modify(st["sock"].fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)

    while nxt < len(probes) or pending:
        now = time.monotonic()
        # start new connects on schedule, up to ``parallel`` at once
        while nxt < len(probes) and len(pending) < parallel and now >= t0 + nxt * interval:
            ip, port = probes[nxt]
            nxt += 1
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            rc = s.connect_ex((ip, port))
            src, sport = s.getsockname()
            witness.claim((src, ip, "tcp", sport, port))
            st = {"sock": s, "ip": ip, "port": port, "src": src, "sport": sport, "open": False,
                  "deadline": time.monotonic() + timeout}
            pending[s.fileno()] = st
            poller.register(s.fileno(), select.POLLOUT | select.POLLERR | select.POLLHUP)
            if rc not in (0, errno.EINPROGRESS):
                finish(st, "unreachable" if rc != errno.ECONNREFUSED else "closed")
                if rc in NODE_ERRNOS:        # the actor itself cannot send: stop here
                    res.cut(defence_reason(OSError(rc, os.strerror(rc)),
                                           f"connect to {ip}:{port}"))
                    probes = probes[:nxt]
            now = time.monotonic()
        wait = 0.05
        if nxt < len(probes) and len(pending) < parallel:
            wait = min(wait, max(0.0, t0 + nxt * interval - now))
        if pending:
            wait = min(wait, max(0.0, min(st["deadline"] for st in pending.values()) - now))
        for fd, _ev in poller.poll(wait * 1000):
            st = pending.get(fd)
            if st is None:
                continue
            if st["open"]:
                try:
                    data = st["sock"].recv(65536)
                except OSError:
                    data = b""
                if not data:        # the server closed (or reset): nothing more will come
                    finish(st, "open")
                continue
            err = st["sock"].getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err == 0:
                opened(st)
            elif err == errno.ECONNREFUSED:
                finish(st, "closed")
            else:
                finish(st, "unreachable")
        now = time.monotonic()
        for st in [st for st in pending.values() if now >= st["deadline"]]:
            finish(st, "open" if st["open"] else "filtered")
    return _connect_result(res, probes, status)


def _connect_result(res: Result, probes: list[tuple[str, int]],
                    status: dict[tuple[str, int], str]) -> Result:
    """A connect scan's facts and outcome from each probe's status (open, closed, filtered,
    unreachable)."""
    open_ = [f"{ip}:{p}" for ip, p in probes if status.get((ip, p)) == "open"]
    counts = {k: sum(1 for v in status.values() if v == k)
              for k in ("open", "closed", "filtered", "unreachable")}
    res.log.append("connect scan: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    res.facts = {"open": open_, "hosts": list(dict.fromkeys(o.rsplit(":", 1)[0] for o in open_))}
    if not probes:              # nothing answered ARP, or no route: is the actor cut off?
        return conclude(res, open_, isolation_reason())
    silent = counts["filtered"] + counts["unreachable"] == len(probes)
    return conclude(res, open_, silent and "every connection attempt timed out or was "
                                           "unreachable (a firewall drops or rejects them)")


# --------------------------------------------------------------------------- T1046-udp
def _udp_payload(port: int) -> bytes:
    if port == 53:      # DNS: "version.bind" TXT CH, as nmap asks; any DNS server answers it
        from scapy.layers.dns import DNS, DNSQR
        return bytes(DNS(id=random.randint(0, 0xFFFF), rd=0,
                         qd=DNSQR(qname="version.bind", qtype="TXT", qclass="CH")))
    return b""


@technique(
    "T1046-udp",
    "Network Service Discovery: UDP scan",
    "discovery",
    {
        "ports": Param(list, [53, 123, 161], "UDP ports to probe (53 gets a DNS query)"),
        "rate": Param((int, float), 100, "probes per second (targets rate-limit their ICMP "
                                          "port-unreachables: about 6 at once, then 1/s)"),
        "retries": Param(int, 1, "extra rounds for ports that gave no answer"),
        "timeout": Param((int, float), 1.5, "seconds to wait for answers after each round"),
    },
    produces=("open", "closed", "open_filtered", "filtered", "hosts"),
)
def udp_scan(targets: list[str], params: dict) -> Result:
    """UDP probes crafted with scapy through one reused layer-2 socket; a kernel UDP socket is
    bound on the scan's source port so the actor's kernel swallows the answers instead of
    sending ICMP port-unreachables back (which would be actor packets)."""
    import socket

    from scapy.arch import get_if_hwaddr
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    res = Result(start=time.time())
    timeout = float(params["timeout"])
    rate = float(params["rate"])
    retries = int(params["retries"])
    ports = [int(p) for p in params["ports"]]
    hops = route_targets(_unique_ips(targets), res.log)
    macs = resolve_hops(hops, min(timeout, 1.0), res.log)
    probes = [(h, p) for h in hops for p in ports if macs.get(h.iface, {}).get(h.next_hop)]
    missing = sorted({h.ip for h in hops} - {h.ip for h, _p in probes})
    if missing:
        res.log.append(f"{len(missing)} targets did not answer ARP (only ARP sent): {_short(missing)}")
    guard = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    guard.bind(("0.0.0.0", 0))
    sport = guard.getsockname()[1]
    wanted = {h.ip for h, _p in probes}
    answered: set[tuple[str, int]] = set()
    closed: set[tuple[str, int]] = set()
    filtered: set[tuple[str, int]] = set()
    unreach_from: set[str] = set()
    lock = threading.Lock()

    def on_ip(src, proto, l4):
        with lock:
            if proto == 17 and src in wanted:
                their, ours = struct.unpack("!HH", l4[0:4])
                if ours == sport:
                    answered.add((src, their))
            elif proto == 1 and l4[0] == 3 and len(l4) >= 36:
                # the quoted datagram: inner IP header (20 bytes, no options) then our UDP header
                inner = l4[8:]
                ihl = (inner[0] & 0x0F) * 4
                dst = ".".join(str(b) for b in inner[16:20])
                if inner[9] == 17 and len(inner) >= ihl + 4:
                    isport, idport = struct.unpack("!HH", inner[ihl:ihl + 4])
                    if isport == sport:
                        (closed if l4[1] == 3 else filtered).add((dst, idport))
                        unreach_from.add(src)

    my_macs = {i: get_if_hwaddr(i) for i in {h.iface for h, _p in probes}}
    try:
        todo = probes
        for _round in range(1 + max(0, retries)):
            if not todo:
                break
            built = []
            for h, port in todo:
                f = bytes(Ether(src=my_macs[h.iface], dst=macs[h.iface][h.next_hop])
                          / IP(src=h.src, dst=h.ip, id=random.randint(0, 0xFFFF), ttl=64)
                          / UDP(sport=sport, dport=port) / _udp_payload(port))
                built.append((h, h.iface, f))
            out = Counter()
            try:
                _run_l2(built, rate, timeout, on_ip, res.log, out)
            finally:            # after a cut too: the probes of this round that left
                for h, _i, f in built[:out.n]:
                    res.flows.append(flow(h.src, h.ip, "udp", sport, f_port(f), 1, len(f)))
            todo = [(h, p) for h, p in todo if (h.ip, p) not in answered | closed | filtered]
    finally:
        guard.close()
    order = [f"{h.ip}:{p}" for h, p in probes]
    key = lambda s: (s.rsplit(":", 1)[0], int(s.rsplit(":", 1)[1]))  # noqa: E731
    open_ = [s for s in order if key(s) in answered]
    closed_ = [s for s in order if key(s) in closed and key(s) not in answered]
    filt = [s for s in order if key(s) in filtered and key(s) not in answered]
    openf = [s for s in order if s not in open_ and s not in closed_ and s not in filt]
    res.facts = {"open": open_, "closed": closed_, "open_filtered": openf, "filtered": filt,
                 "hosts": list(dict.fromkeys(s.rsplit(":", 1)[0] for s in open_ + closed_))}
    res.log.append(f"source port {sport}; {len(open_)} open, {len(closed_)} closed, "
                   f"{len(openf)} open|filtered, {len(filt)} filtered")
    via_gw = any(h.gw for h, _p in probes)
    if closed_ or answered:
        silent = None
    elif probes and filt:
        silent = "every answer was an ICMP 'administratively filtered' (a reject rule)"
    else:
        silent = _silence(via_gw, bool(probes), targets)
    return conclude(res, open_, silent)


def f_port(frame: bytes) -> int:
    """The UDP destination port of an Ethernet/IPv4/UDP frame."""
    ihl = (frame[14] & 0x0F) * 4
    return struct.unpack("!H", frame[14 + ihl + 2:14 + ihl + 4])[0]


# --------------------------------------------------------------------------- T1046-banner


@technique(
    "T1046-banner",
    "Network Service Discovery: banner grab",
    "discovery",
    {
        "ports": Param(list, [21, 22, 23, 25, 80, 2222, 8080], "ports tried on bare-IP targets"),
        "http_ports": Param(list, [80, 8000, 8008, 8080], "ports that get an HTTP HEAD request"),
        "connect_timeout": Param((int, float), 1.5, "seconds to wait for the connection"),
        "timeout": Param((int, float), 3.0, "seconds to wait for the banner / HTTP answer"),
        "quiet": Param((int, float), 0.3, "seconds of silence before closing (exact counts)"),
    },
    produces=("banners", "open"),
    target_kind="service",
)
def banner_grab(targets: list[str], params: dict) -> Result:
    """Connect, read what the service says first (SSH, login, FTP, SMTP banners); on HTTP ports
    send ``HEAD / HTTP/1.0`` and keep the status line and the ``Server`` header.

    Exact accounting: before counting, wait for the server's FIN (HTTP/1.0 closes) or until it
    has been quiet for ``quiet`` seconds, so no segment of its is still in flight."""
    from cyberrange.attack.techniques.common import parse_services
    from cyberrange.attack.techniques.layer2 import alive_for_kernel
    from cyberrange.attack.techniques.common import Blocked
    from cyberrange.attack.techniques.tcp import Conn, quiet_then_abort
    res = Result(start=time.time())
    ports = [int(p) for p in params["ports"]]
    http_ports = [int(p) for p in params["http_ports"]]
    connect_timeout = float(params["connect_timeout"])
    io_timeout = float(params["timeout"])
    quiet = float(params["quiet"])
    services = parse_services(targets, ports, res.log, only_listed_ports=False)
    alive = alive_for_kernel(list(dict.fromkeys(ip for ip, _p in services)),
                             min(connect_timeout, 1.0), res.log)
    services = [(ip, p) for ip, p in services if ip in alive]
    banners: dict[str, str] = {}
    statuses: dict[str, int] = {}
    for ip, port in services:
        try:
            c = Conn(ip, port, connect_timeout, io_timeout)
        except Blocked as exc:      # the actor's own node refuses to send: stop here
            res.cut(exc.reason)
            break
        statuses[c.status] = statuses.get(c.status, 0) + 1
        text = None
        try:
            if c.established and port in http_ports:
                c.send(f"HEAD / HTTP/1.0\r\nHost: {ip}\r\nUser-Agent: curl/7.81.0\r\n"
                       f"Accept: */*\r\n\r\n")
                c.wait_eof()
                lines = c.buf.decode("latin-1").split("\r\n")
                server = [ln.split(":", 1)[1].strip() for ln in lines
                          if ln.lower().startswith("server:")]
                text = lines[0] + (f" ({server[0]})" if server else "") if lines[0] else None
            elif c.established:
                c.read_until(b"\n")
                text = c.buf.split(b"\n", 1)[0].decode("utf-8", "replace").strip() or None
        except OSError:
            pass
        res.flows.append(quiet_then_abort(c, quiet, io_timeout))
        if text:
            banners[f"{ip}:{port}"] = text
    res.facts = {"banners": banners, "open": [s for s in (f"{i}:{p}" for i, p in services)
                                               if s in banners]}
    res.log.append(f"{len(services)} services: " + ", ".join(f"{v} {k}" for k, v in statuses.items())
                   + f"; {len(banners)} banners")
    if not services:            # nothing answered ARP, or no route: is the actor cut off?
        return conclude(res, banners, isolation_reason())
    silent = statuses.get("timeout", 0) + statuses.get("unreachable", 0)
    return conclude(res, banners, services and silent == len(services)
                    and "every connection timed out or was unreachable (a firewall drops or "
                        "rejects them)")

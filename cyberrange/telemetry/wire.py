"""Wire constants shared by the parser's stages: link types, EtherTypes, TCP flag bits, and the
small integer codes the decoder stores per frame (transport, network type, fragment, "no MAC").

Every other telemetry module imports from here and this module imports nothing, so the import
graph stays a chain: ``wire`` <- ``columns`` <- ``decode``, ``app``, ``flows`` <- ``pcap``.
"""
from __future__ import annotations

# ---- pcap link types we understand
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_RAW_OLD = 12     # OpenBSD's DLT_RAW number, seen in some files
LINKTYPE_RAW_OLD2 = 14
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276
SUPPORTED_LINKTYPES = {
    LINKTYPE_ETHERNET: "Ethernet (with 802.1Q / 802.1ad / QinQ tags)",
    LINKTYPE_LINUX_SLL: "Linux cooked capture v1 (tcpdump -i any)",
    LINKTYPE_LINUX_SLL2: "Linux cooked capture v2",
    LINKTYPE_RAW: "raw IP (v4 or v6)",
    LINKTYPE_RAW_OLD: "raw IP (OpenBSD number 12)",
    LINKTYPE_RAW_OLD2: "raw IP (number 14)",
    LINKTYPE_IPV4: "raw IPv4",
    LINKTYPE_IPV6: "raw IPv6",
    LINKTYPE_NULL: "BSD loopback (host byte order family)",
    LINKTYPE_LOOP: "OpenBSD loopback (network byte order family)",
}
RAW_IP_LINKTYPES = (LINKTYPE_RAW, LINKTYPE_RAW_OLD, LINKTYPE_RAW_OLD2, LINKTYPE_IPV4,
                    LINKTYPE_IPV6)

# ---- EtherTypes
ETH_IP = 0x0800
ETH_ARP = 0x0806
ETH_IP6 = 0x86DD
ETH_VLAN = (0x8100, 0x88A8, 0x9100)      # 802.1Q, 802.1ad, the old QinQ number

# ---- per-frame codes: transport (index into TRANSPORTS) and network type (into NTYPES)
T_OTHER, T_TCP, T_UDP, T_ICMP, T_ICMP6, T_ARP = range(6)
TRANSPORTS = ["other", "tcp", "udp", "icmp", "ipv6-icmp", "arp"]
N_OTHER, N_IP4, N_IP6, N_ARP = range(4)
NTYPES = ["other", "ipv4", "ipv6", "arp"]
FRAGS = [None, "first", "more"]
NOMAC = 1 << 48            # "no MAC address" (MACs are stored as 48-bit integers)
V6_BASE = 1 << 32          # address ids: IPv4 = its 32-bit value, IPv6 = V6_BASE + n

# ---- TCP flags
FIN, SYN, RST, PSH, ACK, URG = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
_ORDER = ((SYN, "S"), (ACK, "A"), (FIN, "F"), (RST, "R"), (PSH, "P"), (URG, "U"))
#: FLAG_LETTERS[bits & 0x3f] -> "SA", "AF", ... in the fixed order S A F R P U
FLAG_LETTERS = ["".join(ch for bit, ch in _ORDER if bits & bit) for bits in range(64)]

"""pcap -> packet and flow records (the fast path of telemetry).

``parse_pcap`` reads one capture file of one sensor and returns two Arrow tables whose columns are
``PACKET_RECORD_SCHEMA`` and ``FLOW_RECORD_SCHEMA`` (the core ``PACKET_SCHEMA`` / ``FLOW_SCHEMA``
columns first, then the added ones, see ``schema.py``), plus a small stats dict.

How a capture is read (docs/telemetry.md has the long version):

1. ``capture.read_capture`` loads the file and walks the record headers (classic pcap in either
   byte order, µs or ns; pcapng with any number of interfaces, each with its own link type and
   timestamp resolution). Nothing is decoded yet: the result is one array entry per frame.
2. ``decode.decode_records`` decodes every frame into per-frame columns. **Fast path,
   vectorized** (numpy over all frames at once): Ethernet frames with at most one VLAN tag
   carrying an unfragmented IPv4 packet without options whose lengths are all consistent and
   whose transport is TCP (data offset sane), UDP or ICMP.
3. **Slow path, per frame** (dpkt for the IP layer): everything else - other link types (Linux
   cooked v1/v2, raw IP, BSD loopback), QinQ, IPv6, ARP, fragments, IP options that hide a
   short transport header, truncated and malformed frames. A frame that cannot be decoded is never
   fatal: it is counted in ``stats["skipped"][reason]`` and produces no record.
   ``packets + sum(skipped) == frames`` always holds.
4. ``app.decode_app``: application fields (DNS, HTTP, Modbus/TCP) are read only from the few
   frames whose ports or first payload bytes say so.
5. ``flows.build_flows`` groups the packets into bidirectional flows with numpy sorting
   (see ``flows.py``); this module then writes the packet table (``columns.py`` makes the
   Arrow columns, ``wire.py`` holds the constants every stage shares).

Record conventions:

* Frames that decode but carry no IP (ARP, LLDP, ...) become packet records with null IPs;
  ARP has ``network.transport == "arp"`` (its addresses are in ``cyberrange.arp.*``), anything
  else ``"other"``. They belong to no flow.
* IPv4 fragments: the first fragment carries the transport header and is a normal record of its
  flow. A later fragment ("more") gets the ports of its first fragment (matched by source,
  destination, protocol and IP id) and joins the same flow; its ``tcp.flags`` is null. A later
  fragment whose first fragment was not seen has null ports and no flow.
* IP protocols other than TCP/UDP/ICMP/ICMPv6 are packet records with null ports and no flow.
* ``@timestamp`` is microseconds UTC (nanosecond captures are rounded to the microsecond).
* ``network.bytes`` is the frame length on the wire (pcap ``orig_len``), the same number tcpdump
  prints after ``length`` with ``-e``.
* ``tcp.flags`` spells the flags that are set in the fixed order **S A F R P U**
  (SYN, ACK, FIN, RST, PSH, URG): a SYN-ACK is ``"SA"``, a FIN-ACK ``"AF"``, a RST-ACK ``"AR"``,
  a data segment ``"AP"``. ECE/CWR are not shown.
* For ICMP ``source.port`` is the ICMP type and ``destination.port`` the ICMP code (as Zeek does).
"""
from __future__ import annotations

from collections import Counter
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa

from .app import AppFields, decode_app
from .capture import read_capture
from .columns import const_strings, int_column, ip_strings, mac_strings, table_strings
from .decode import Decoded, decode_records
from .flows import build_flows
from .schema import FLOW_RECORD_SCHEMA, PACKET_RECORD_SCHEMA
from .wire import FLAG_LETTERS, NTYPES, TRANSPORTS

__all__ = ["parse_pcap", "parse_pcaps", "iter_frames", "FLAG_LETTERS", "decode_records"]


# --------------------------------------------------------------------------------------------
# public API


def iter_frames(path: str, skipped: Counter | None = None) -> Iterator[tuple[int, int, bytes, int]]:
    """Yield ``(linktype, ts_us, frame_bytes, wire_len)`` for every usable record of a capture."""
    rec = read_capture(path)
    if skipped is not None:
        skipped.update(rec.skipped)
    raw = rec.raw
    for lt, ts, off, cap, wire in zip(rec.linktype.tolist(), rec.ts.tolist(), rec.off.tolist(),
                                      rec.caplen.tolist(), rec.wirelen.tolist()):
        yield lt, ts, bytes(raw[off:off + cap]), wire


def parse_pcap(path: str, observer: str, run_id: str, *, tcp_timeout: float = 60.0,
               udp_timeout: float = 30.0, icmp_timeout: float = 30.0, fast: bool = True
               ) -> tuple[pa.Table, pa.Table, dict]:
    """Parse one capture file of sensor ``observer`` into ``(packets, flows, stats)``.

    ``stats`` holds ``frames`` (records in the file), ``packets`` (records produced), ``bytes``
    (sum of ``network.bytes``), ``flows``, ``skipped`` (``{reason: count}``), ``linktypes``
    (``{linktype: frames}``), ``format`` (pcap | pcapng) and ``slow_path`` (frames decoded one
    at a time). ``fast=False`` sends every frame through the slow path (for testing).
    """
    rec = read_capture(path)
    d = decode_records(rec, fast=fast)
    skipped = Counter(rec.skipped)
    app = decode_app(d)
    ok_idx = np.flatnonzero(d.ok)
    flows_tbl, pkt_flow, flow_ids, flow_cids = build_flows(
        d, ok_idx, observer, run_id, app, tcp_timeout=tcp_timeout, udp_timeout=udp_timeout,
        icmp_timeout=icmp_timeout)
    packets = _packet_table(d, ok_idx, pkt_flow, flow_ids, flow_cids, app, observer, run_id)
    for _, reason in d.skips:
        skipped[reason] += 1
    lts = Counter(rec.linktype.tolist())
    stats = {
        "frames": rec.frames,
        "packets": int(len(ok_idx)),
        "bytes": int(rec.wirelen[ok_idx].sum()) if len(ok_idx) else 0,
        "flows": flows_tbl.num_rows,
        "skipped": dict(skipped),
        "linktypes": {int(k): v for k, v in lts.items()},
        "format": rec.format,
        "slow_path": int(d.slow_frames),
    }
    return packets, flows_tbl, stats


def parse_pcaps(items: Iterable[tuple[str, str]], run_id: str, **kwargs
                ) -> tuple[pa.Table, pa.Table, dict]:
    """Parse several ``(path, observer)`` captures and concatenate the results.

    Flows are assembled per file (one file = one sensor); stats are summed, with the
    per-file stats kept under ``stats["files"]``.
    """
    pkt_tables, flow_tables, per_file = [], [], {}
    total = {"frames": 0, "packets": 0, "bytes": 0, "flows": 0, "skipped": Counter()}
    for path, observer in items:
        p, f, s = parse_pcap(path, observer, run_id, **kwargs)
        pkt_tables.append(p)
        flow_tables.append(f)
        per_file[str(path)] = s
        for key in ("frames", "packets", "bytes", "flows"):
            total[key] += s[key]
        total["skipped"].update(s["skipped"])
    packets = pa.concat_tables(pkt_tables) if pkt_tables else PACKET_RECORD_SCHEMA.empty_table()
    flows = pa.concat_tables(flow_tables) if flow_tables else FLOW_RECORD_SCHEMA.empty_table()
    total["skipped"] = dict(total["skipped"])
    total["files"] = per_file
    return packets, flows, total


# --------------------------------------------------------------------------------------------
# Arrow output


def _packet_table(d: Decoded, ok: np.ndarray, pkt_flow: np.ndarray, flow_ids: pa.Array,
                  flow_cids: pa.Array, app: AppFields, observer: str, run_id: str) -> pa.Table:
    n = len(ok)
    if n == 0:
        return PACKET_RECORD_SCHEMA.empty_table()
    rec = d.rec
    ts_type = PACKET_RECORD_SCHEMA.field("@timestamp").type
    sport = d.sport[ok]
    dport = d.dport[ok]
    fl = pkt_flow
    flow_idx = pa.array(np.where(fl < 0, 0, fl).astype(np.int32),
                        mask=(fl < 0) if (fl < 0).any() else None)
    if len(flow_ids):
        fid = pa.DictionaryArray.from_arrays(flow_idx, flow_ids).cast(pa.string())
        cid = pa.DictionaryArray.from_arrays(flow_idx, flow_cids).cast(pa.string())
    else:
        fid = pa.nulls(n, pa.string())
        cid = pa.nulls(n, pa.string())
    cols = {
        "@timestamp": pa.array(rec.ts[ok], pa.int64()).cast(ts_type),
        "event.kind": const_strings("event", n),
        "event.dataset": const_strings("cyberrange.packet", n),
        "observer.name": const_strings(observer, n),
        "source.mac": mac_strings(d.smac[ok]),
        "destination.mac": mac_strings(d.dmac[ok]),
        "source.ip": ip_strings(d, d.sip[ok]),
        "destination.ip": ip_strings(d, d.dip[ok]),
        "source.port": int_column(sport, pa.int32()),
        "destination.port": int_column(dport, pa.int32()),
        "network.transport": table_strings(TRANSPORTS, d.tcode[ok].astype(np.int64)),
        "network.type": table_strings(NTYPES, d.ntype[ok].astype(np.int64)),
        "network.bytes": pa.array(rec.wirelen[ok], pa.int64()),
        "network.community_id": cid,
        "tcp.flags": table_strings(FLAG_LETTERS, d.flags[ok]),
        "cyberrange.flow_id": fid,
        "cyberrange.run_id": const_strings(run_id, n),
        "network.vlan.id": int_column(d.vlan[ok], pa.int32()),
        "network.inner.vlan.id": int_column(d.ivlan[ok], pa.int32()),
        "cyberrange.ip.fragment": table_strings(["first", "more"],
                                                d.frag[ok].astype(np.int64) - 1),
    }
    # sparse fields: ARP and application layer, set on few rows
    pos = np.full(len(d.ok), -1, np.int64)
    pos[ok] = np.arange(n)
    sparse = app.packet_columns(d, pos, n)
    cols.update(sparse)
    arrays = [cols[f.name] if f.name in cols else pa.nulls(n, f.type)
              for f in PACKET_RECORD_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=PACKET_RECORD_SCHEMA)

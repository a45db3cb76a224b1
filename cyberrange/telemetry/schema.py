"""Column names and Arrow schemas of the event records, in Elastic Common Schema (ECS) names.

The same records go to DuckDB and to Elasticsearch. Dotted names are kept flat (``"source.ip"``)
in Arrow and DuckDB; the Elasticsearch backend nests them. Project-specific fields live under
``cyberrange.*``.
"""
from __future__ import annotations

import pyarrow as pa

TS = pa.timestamp("us", tz="UTC")

# One row per captured frame, per sensor.
PACKET_SCHEMA = pa.schema([
    ("@timestamp", TS),
    ("event.kind", pa.string()),            # "event"
    ("event.dataset", pa.string()),         # "cyberrange.packet"
    ("observer.name", pa.string()),         # sensor name
    ("source.mac", pa.string()),
    ("destination.mac", pa.string()),
    ("source.ip", pa.string()),             # null for non-IP frames (ARP ...)
    ("destination.ip", pa.string()),
    ("source.port", pa.int32()),            # TCP/UDP port; ICMP: type
    ("destination.port", pa.int32()),       # TCP/UDP port; ICMP: code
    ("network.transport", pa.string()),     # tcp | udp | icmp | arp | other
    ("network.type", pa.string()),          # ipv4 | ipv6 | arp | other
    ("network.bytes", pa.int64()),          # frame length on the wire
    ("network.community_id", pa.string()),
    ("tcp.flags", pa.string()),             # e.g. "S", "SA", "FA", "R"; null if not TCP
    ("cyberrange.flow_id", pa.string()),    # the flow this packet belongs to
    ("cyberrange.run_id", pa.string()),
])

# One row per bidirectional flow, per sensor. "source" is the originator.
FLOW_SCHEMA = pa.schema([
    ("@timestamp", TS),                     # = event.start
    ("event.kind", pa.string()),            # "event"
    ("event.category", pa.string()),        # "network"
    ("event.type", pa.string()),            # "connection"
    ("event.dataset", pa.string()),         # "cyberrange.flow"
    ("event.start", TS),
    ("event.end", TS),
    ("event.duration", pa.int64()),         # nanoseconds (ECS)
    ("observer.name", pa.string()),
    ("source.ip", pa.string()),
    ("source.port", pa.int32()),
    ("source.packets", pa.int64()),
    ("source.bytes", pa.int64()),
    ("destination.ip", pa.string()),
    ("destination.port", pa.int32()),
    ("destination.packets", pa.int64()),
    ("destination.bytes", pa.int64()),
    ("network.transport", pa.string()),
    ("network.packets", pa.int64()),
    ("network.bytes", pa.int64()),
    ("network.community_id", pa.string()),
    ("cyberrange.flow_id", pa.string()),    # stable id: sha1 of observer, 5-tuple, start
    ("cyberrange.tcp_state", pa.string()),  # Zeek conn_state: S0 S1 SF REJ RSTO RSTR RSTOS0 SH OTH
    ("cyberrange.tcp_flags", pa.string()),  # union of flags seen, originator side, e.g. "SAF"
    ("cyberrange.run_id", pa.string()),
])

# One row per alert a detector raised.
ALERT_SCHEMA = pa.schema([
    ("@timestamp", TS),                     # when the detector could have known (event time)
    ("event.kind", pa.string()),            # "alert"
    ("event.dataset", pa.string()),         # "cyberrange.alert"
    ("event.start", TS),                    # evidence window
    ("event.end", TS),
    ("rule.name", pa.string()),             # detector instance name (from detectors/*.yaml)
    ("rule.category", pa.string()),         # detector family: portscan | bruteforce | ...
    ("threat.technique.id", pa.string()),   # what the detector believes it saw (ATT&CK id)
    ("source.ip", pa.string()),
    ("destination.ip", pa.string()),        # one target, or null when many
    ("message", pa.string()),               # the explanation, one line
    ("cyberrange.score", pa.float64()),
    ("cyberrange.evidence", pa.string()),   # JSON: feature, value, threshold, ...
    ("cyberrange.flow_ids", pa.list_(pa.string())),
    ("cyberrange.alert_id", pa.string()),
    ("cyberrange.run_id", pa.string()),
])

# Weak signals (issue 15): sub-threshold observations of detectors, one row each, in the alert
# layout (``event.kind`` "signal", ``event.dataset`` "cyberrange.signal"). Never alerts: they count
# neither as detections nor as false alerts; the incident correlator reads them.
SIGNAL_SCHEMA = ALERT_SCHEMA

# One row per incident: alerts and signals of a run correlated by entity and time
# (``cyberrange.detect.incidents``; docs/incidents.md).
INCIDENT_SCHEMA = pa.schema([
    ("@timestamp", TS),                     # when the combined score reached the threshold
    ("event.kind", pa.string()),            # "alert"
    ("event.dataset", pa.string()),         # "cyberrange.incident"
    ("event.start", TS),                    # first contributing observation
    ("event.end", TS),                      # last contributing observation
    ("event.severity", pa.int32()),         # ECS: 1 low .. 4 critical
    ("cyberrange.severity", pa.string()),   # low | medium | high | critical
    ("cyberrange.incident_id", pa.string()),
    ("cyberrange.score", pa.float64()),     # combined score in [0, 1]
    ("related.ip", pa.list_(pa.string())),  # entities, in order of first appearance
    ("threat.tactic.name", pa.list_(pa.string())),  # kill-chain stages reached, in chain order
    ("cyberrange.stages", pa.string()),     # JSON: stage -> [alert/signal ids]
    ("cyberrange.pivots", pa.string()),     # JSON: [{"host", "from", "to", "at"}]
    ("message", pa.string()),               # one-line summary
    ("cyberrange.explanation", pa.list_(pa.string())),  # one line per contributing observation
    ("cyberrange.alert_ids", pa.list_(pa.string())),
    ("cyberrange.signal_ids", pa.list_(pa.string())),
    ("cyberrange.run_id", pa.string()),
])

SCHEMAS = {"packets": PACKET_SCHEMA, "flows": FLOW_SCHEMA, "alerts": ALERT_SCHEMA,
           "signals": SIGNAL_SCHEMA, "incidents": INCIDENT_SCHEMA}

# ---- added fields (telemetry v2). They follow the core columns above, which never change, so
# code that builds or reads only the core columns keeps working. ``parse_pcap`` returns
# core + added columns; the DuckDB store keeps all of them; ``store.read(kind)`` returns the core
# columns unless the added ones are asked for by name (``columns=[...]``).

# Added to packet records.
PACKET_EXTRA_SCHEMA = pa.schema([
    ("network.vlan.id", pa.int32()),                # outer 802.1Q/802.1ad tag (VLAN id)
    ("network.inner.vlan.id", pa.int32()),          # inner tag of a QinQ frame
    ("cyberrange.ip.fragment", pa.string()),        # null | "first" | "more" (IPv4 fragments)
    ("cyberrange.arp.operation", pa.string()),      # ARP: request | reply | other
    ("cyberrange.arp.sender_ip", pa.string()),      # ARP sender protocol address
    ("cyberrange.arp.sender_mac", pa.string()),     # ARP sender hardware address
    ("cyberrange.arp.target_ip", pa.string()),      # ARP target protocol address
    ("dns.question.name", pa.string()),             # first question of a DNS message
    ("dns.question.type", pa.string()),             # A, AAAA, TXT, ... (number when unknown)
    ("dns.response_code", pa.string()),             # responses only: NOERROR, NXDOMAIN, ...
    ("http.request.method", pa.string()),           # cleartext HTTP requests only
    ("url.domain", pa.string()),                    # Host header (without port)
    ("url.path", pa.string()),                      # request target without the query
    ("cyberrange.modbus.function_code", pa.int32()),  # first ADU of a Modbus/TCP segment
    ("cyberrange.modbus.unit_id", pa.int32()),
])

# Added to flow records.
FLOW_EXTRA_SCHEMA = pa.schema([
    ("network.vlan.id", pa.int32()),                # outer VLAN id of the first packet
    ("cyberrange.iat.mean_us", pa.float64()),       # inter-arrival time between consecutive
    ("cyberrange.iat.std_us", pa.float64()),        #   packets of the flow (both directions,
    ("cyberrange.iat.min_us", pa.float64()),        #   capture order), microseconds; null for
    ("cyberrange.iat.max_us", pa.float64()),        #   a one-packet flow; std is population std
    ("cyberrange.tcp_flags_responder", pa.string()),  # union of flags the responder sent
    ("dns.question.name", pa.string()),             # first DNS question seen in the flow
    ("dns.question.type", pa.string()),
    ("dns.response_code", pa.string()),             # first DNS response code seen in the flow
    ("http.request.method", pa.string()),           # first cleartext HTTP request of the flow
    ("url.domain", pa.string()),
    ("url.path", pa.string()),
    ("cyberrange.modbus.function_codes", pa.list_(pa.int32())),  # sorted, distinct, requests
    ("cyberrange.modbus.unit_id", pa.int32()),      # unit id of the first Modbus request
])

PACKET_RECORD_SCHEMA = pa.schema(list(PACKET_SCHEMA) + list(PACKET_EXTRA_SCHEMA))
FLOW_RECORD_SCHEMA = pa.schema(list(FLOW_SCHEMA) + list(FLOW_EXTRA_SCHEMA))

#: every column a record kind may carry (what the store keeps and what parse_pcap returns)
RECORD_SCHEMAS = {"packets": PACKET_RECORD_SCHEMA, "flows": FLOW_RECORD_SCHEMA,
                  "alerts": ALERT_SCHEMA, "signals": SIGNAL_SCHEMA,
                  "incidents": INCIDENT_SCHEMA}

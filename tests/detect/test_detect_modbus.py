"""modbus family on synthetic flow and packet records: allow-lists, held writes, settings."""
from __future__ import annotations

import hashlib

import pytest
from records import records

from cyberrange.detect.base import SettingError, alerts_to_table
from cyberrange.detect.modbus import ModbusDetector
from cyberrange.detect.registry import load_detector_file
from cyberrange.telemetry.schema import (
    ALERT_SCHEMA,
    FLOW_RECORD_SCHEMA,
    PACKET_RECORD_SCHEMA,
)

T0 = 1_750_000_000.0
HMI, HIST, OFFICE, PLC1, PLC2 = "10.60.5.30", "10.60.4.10", "10.60.3.66", "10.60.5.21", "10.60.5.22"
_seq = iter(range(10**9))


_table = records


def modbus(t, src, dst, codes, writes=0, state="SF", observers=("scada-span",)):
    """One Modbus connection: a flow row per observer, and one request packet per ADU
    (a read per code that is not a write, ``writes`` write packets of the first write code)."""
    n = next(_seq)
    cid = f"1:{n}"
    flows, pkts = [], []
    for obs in observers:
        fid = hashlib.sha1(f"{obs}|{n}".encode()).hexdigest()[:16]
        us = int(round(t * 1e6))
        flows.append({"@timestamp": us, "event.start": us, "event.end": us + 200_000,
                      "event.duration": 200_000_000, "observer.name": obs,
                      "source.ip": src, "source.port": 40000 + n % 20000, "source.packets": 6,
                      "source.bytes": 400, "destination.ip": dst, "destination.port": 502,
                      "destination.packets": 5 if codes else 0,
                      "destination.bytes": 350 if codes else 0,
                      "network.transport": "tcp", "network.packets": 11, "network.bytes": 750,
                      "network.community_id": cid, "cyberrange.flow_id": fid,
                      "cyberrange.tcp_state": state,
                      "cyberrange.tcp_flags": "SAFP" if codes else "S",
                      "cyberrange.modbus.function_codes": sorted(codes) if codes else None,
                      "cyberrange.modbus.unit_id": 1 if codes else None})
        wcodes = [c for c in codes if c in (5, 6, 15, 16, 22, 23)]
        for k in range(writes):
            pkts.append({"@timestamp": us + 10_000 * (k + 1), "observer.name": obs,
                         "source.ip": src, "destination.ip": dst, "source.port": 40000,
                         "destination.port": 502, "network.transport": "tcp",
                         "network.type": "ipv4", "network.bytes": 66,
                         "network.community_id": cid, "cyberrange.flow_id": fid,
                         "cyberrange.modbus.function_code": wcodes[0],
                         "cyberrange.modbus.unit_id": 1})
    return flows, pkts


def build(conns):
    flows, pkts = [], []
    for f, p in conns:
        flows += f
        pkts += p
    return _table(flows, FLOW_RECORD_SCHEMA), _table(pkts, PACKET_RECORD_SCHEMA)


def polls(t0=T0, seconds=20, src=HMI):
    return [modbus(t0 + i, src, PLC1 if i % 2 else PLC2, [3]) for i in range(0, seconds, 1)]


def trained(**settings):
    det = ModbusDetector("modbus-allowlist", **settings)
    det.fit(*build(polls()))
    return det


def test_learned_poller_is_quiet_and_unknown_reader_is_t0861():
    det = trained()
    assert det.detect(*build(polls(T0 + 100, 60))) == []
    flows, pkts = build(polls(T0 + 100, 30) + [modbus(T0 + 110, HIST, PLC1, [3]),
                                                modbus(T0 + 111, HIST, PLC2, [3])])
    alerts = det.detect(flows, pkts)
    assert sorted((a.technique, a.source_ip, a.destination_ip) for a in alerts) == \
        [("T0861", HIST, PLC1), ("T0861", HIST, PLC2)]
    a = alerts[0]
    assert a.evidence["feature"] == "unknown_modbus_client" and a.evidence["value"] == HIST
    assert a.evidence["baseline"]["clients"] == [HMI] and len(a.flow_ids) == 1
    assert "not a known Modbus client" in a.message and "3 (read holding registers)" in a.message


def test_unanswered_connection_from_office_is_t0861():
    det = trained()
    (a,) = det.detect(*build([modbus(T0 + 50, OFFICE, PLC1, [], state="S0")]))
    assert a.technique == "T0861" and a.source_ip == OFFICE and a.evidence["function_codes"] == []
    assert "none answered" in a.message


def test_write_by_non_writer_is_t0855_and_held_writes_t0831():
    det = trained()
    conns = [modbus(T0 + 100, HIST, PLC1, [3, 6], writes=1)]
    conns += [modbus(T0 + 110, HIST, PLC1, [3, 6], writes=5)]      # one connection, 5 writes
    alerts = det.detect(*build(conns))
    by = {a.technique: a for a in alerts}
    assert set(by) == {"T0855", "T0831"}
    w = by["T0855"]
    assert w.evidence["feature"] == "write_by_non_writer" and w.evidence["value"] == [6]
    assert len(w.flow_ids) == 2 and w.source_ip == HIST and w.destination_ip == PLC1
    h = by["T0831"]
    assert h.evidence["feature"] == "write_requests" and h.evidence["value"] == 6
    assert h.evidence["threshold"] == 3 and h.evidence["baseline"] == 0
    assert len(h.flow_ids) == 2 and "6 Modbus write requests" in h.message
    # crossed at the third write: the first of the second connection + 1 more
    assert h.timestamp.timestamp() == pytest.approx(T0 + 110 + 0.02)
    assert len({a.alert_id for a in alerts}) == 2


def test_configured_writer_may_write_but_not_hold():
    det = trained(writers=[HMI])
    assert det.detect(*build([modbus(T0 + 100, HMI, PLC1, [3, 6], writes=1)])) == []
    (a,) = det.detect(*build([modbus(T0 + 100 + i, HMI, PLC1, [6], writes=1) for i in range(4)]))
    assert a.technique == "T0831" and a.evidence["writer_allowed"] is True


def test_untrained_without_lists_checks_only_writes():
    det = ModbusDetector("m")
    assert det.detect(*build(polls(T0, 30) + [modbus(T0 + 5, HIST, PLC1, [3])])) == []
    (a,) = det.detect(*build([modbus(T0 + 5, HIST, PLC1, [16], writes=1)]))
    assert a.technique == "T0855" and "any configured writer" in a.message
    det = ModbusDetector("m", clients=["10.60.5.0/24"])
    (a,) = det.detect(*build(polls(T0, 30) + [modbus(T0 + 5, HIST, PLC1, [3])]))
    assert a.technique == "T0861" and a.source_ip == HIST


def test_writer_learned_in_baseline_and_two_sensors_count_once():
    det = ModbusDetector("m")
    det.fit(*build(polls() + [modbus(T0 + 5, HMI, PLC1, [6], writes=1)]))
    two = ("dmz-span", "scada-span")
    conns = [modbus(T0 + 100, HMI, PLC1, [6], writes=1, observers=two),
             modbus(T0 + 140, HMI, PLC1, [6], writes=1, observers=two)]
    assert det.detect(*build(conns)) == []            # 2 writes, seen twice each: not 4


def test_episodes_split_on_quiet_gaps():
    det = trained(checks=["clients"])
    conns = [modbus(T0 + 100, HIST, PLC1, [3]), modbus(T0 + 130, HIST, PLC1, [3]),
             modbus(T0 + 400, HIST, PLC1, [3])]
    alerts = det.detect(*build(conns))
    assert [len(a.flow_ids) for a in alerts] == [2, 1]


def test_settings_errors():
    for kw, key in [({"clients": ["nope"]}, "clients"), ({"writers": "10.0.0.1"}, "writers"),
                    ({"checks": ["reads"]}, "checks"), ({"write_codes": [0]}, "write_codes"),
                    ({"hold_writes": 1}, "hold_writes"), ({"ports": []}, "ports")]:
        with pytest.raises(SettingError) as e:
            ModbusDetector("x", **kw)
        assert e.value.setting == key


def test_shipped_instance_and_alert_table():
    (det,) = load_detector_file("detectors/modbus.yaml")
    det.fit(*build(polls()))
    alerts = det.detect(*build([modbus(T0 + 100, HIST, PLC1, [3, 6], writes=4)]))
    t = alerts_to_table(alerts, "r1")
    assert t.schema.equals(ALERT_SCHEMA)
    assert sorted(t.column("threat.technique.id").to_pylist()) == ["T0831", "T0855"]

"""Versions that mean something: the behaviour catalogue (services/behaviours.yaml) decides how
the PLC and the login service start, and validate reports what a change switches."""
from __future__ import annotations

import json
import struct
from pathlib import Path

from cyberrange.model.loader import load_topology
from cyberrange.patch.changeset import load_change
from cyberrange.patch.static import static_validate
from cyberrange.services import _behaviours as behaviours
from cyberrange.services import login, modbus
from cyberrange.services.spec import Launch

ROOT = Path(__file__).resolve().parents[2]
AIR = ROOT / "topologies" / "air_base.yaml"
FOB = ROOT / "topologies" / "fob.yaml"
FIRMWARE = ROOT / "topologies" / "changes" / "air_base_plc_firmware.yaml"


def test_versions_compare_part_by_part():
    k = behaviours.version_key
    assert k("3.10") > k("3.9") and k("8.9p1") > k("8.9") and k("4.0.2") >= k("4.0")
    b = behaviours.Behaviour("x", "p", ">=3.0, <4.0", "modbus", {})
    assert b.matches("3.1.4") and not b.matches("4.0") and not b.matches("2.9")


def test_the_catalogue_loads_and_every_entry_names_a_service_type():
    from cyberrange.services.registry import SERVICE_TYPES
    entries = behaviours.catalogue()
    assert len(entries) >= 4 and {e.service for e in entries} <= set(SERVICE_TYPES)


def _launch(topo, node, svc, tmp_path) -> Launch:
    (tmp_path / "config").mkdir(exist_ok=True)
    return Launch(node=node, ip=str(topo.nodes[node].ip), service=svc, topology=topo,
                  run_dir=tmp_path, log=tmp_path / "x.log")


def test_plc_firmware_decides_the_writer_allow_list(tmp_path):
    before = load_topology(AIR)
    after = load_topology(AIR, change=load_change(FIRMWARE))
    svc_b = before.nodes["fuel-plc1"].services[0]
    argv_b = modbus._argv(_launch(before, "fuel-plc1", svc_b, tmp_path))
    argv_a = modbus._argv(_launch(after, "fuel-plc1", after.nodes["fuel-plc1"].services[0],
                                  tmp_path))
    assert "--writers" not in argv_b
    hmi = str(after.nodes["fuel-hmi"].ip)
    assert argv_a[argv_a.index("--writers") + 1] == hmi


def test_a_plc_with_an_allow_list_refuses_other_writers_and_keeps_its_value():
    plc = modbus.PLC({2: 1150}, writers={"10.60.5.10"})
    write = struct.pack("!HH", 2, 9999)
    assert plc.handle(6, write, "10.60.5.40") == bytes([0x86, 1])     # exception 01
    assert plc.holding[2] == 1150
    assert plc.handle(3, struct.pack("!HH", 2, 1), "10.60.5.40")[2:] == struct.pack("!H", 1150)
    assert plc.handle(6, write, "10.60.5.10") == bytes([6]) + write
    assert plc.holding[2] == 9999
    anyone = modbus.PLC({2: 1150})
    assert anyone.handle(6, write, "10.60.5.40") == bytes([6]) + write


def test_an_old_embedded_login_server_gets_its_factory_accounts(tmp_path):
    cs = tmp_path / "c.yaml"
    cs.write_text("version: 1\nname: old-sshd\ntopology: fob\nchanges:\n"
                  "  - {op: set-software, node: ops-files, name: embedded-sshd, version: '1.4'}\n")
    topo = load_topology(FOB, change=load_change(cs))
    svc = topo.nodes["ops-files"].services[0]
    argv = login._argv(_launch(topo, "ops-files", svc, tmp_path))
    accounts = json.loads(Path(argv[argv.index("--accounts-file") + 1]).read_text())
    assert {"user": "root", "password": "root"} in accounts
    assert {a["user"] for a in accounts} >= {"admin", "backup", "root"}
    # validate fails the change: it switches a weakness on
    res = static_validate(FOB, load_change(cs))
    assert res.verdict == "FAIL"
    fail = [c for c in res.checks if c.status == "fail"]
    assert [c.name for c in fail] == ["behaviour ops-files login/22"]
    assert "login-default-credentials" in fail[0].reason

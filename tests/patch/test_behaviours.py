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


def _plc_change(tmp_path, body: str):
    cs = tmp_path / "w.yaml"
    cs.write_text("version: 1\nname: w\ntopology: air-base\nchanges:\n" + body)
    return load_change(cs)


def _writers_arg(topo, node, tmp_path):
    argv = modbus._argv(_launch(topo, node, topo.nodes[node].services[0], tmp_path))
    return argv[argv.index("--writers") + 1].split(",") if "--writers" in argv else None


def test_a_per_service_writers_key_is_enforced_only_by_firmware_that_enforces(tmp_path):
    """`writers:` on a modbus service (hosts, zones, globs): the 4.x firmware enforces it, the
    3.x firmware ignores it (its weakness), a PLC without firmware listed enforces it."""
    set_writers = ("  - {op: modify-service, node: fuel-plc1, port: 502, "
                   "set: {writers: [fuel-hist, 'fuel-h*']}}\n")
    upgrade = "  - {op: set-software, node: fuel-plc1, name: plc-firmware, version: '4.1'}\n"
    old = load_topology(AIR, change=_plc_change(tmp_path, set_writers))
    assert old.nodes["fuel-plc1"].services[0].writers == ["fuel-hist", "fuel-hmi"]
    assert _writers_arg(old, "fuel-plc1", tmp_path) is None          # 3.1.4 ignores it
    new = load_topology(AIR, change=_plc_change(tmp_path, set_writers + upgrade))
    assert _writers_arg(new, "fuel-plc1", tmp_path) == [str(new.nodes["fuel-hist"].ip),
                                                        str(new.nodes["fuel-hmi"].ip)]
    no_fw = load_topology(AIR, change=_plc_change(
        tmp_path, set_writers + "  - {op: remove-software, node: fuel-plc1, name: plc-firmware}\n"))
    assert _writers_arg(no_fw, "fuel-plc1", tmp_path) == _writers_arg(new, "fuel-plc1", tmp_path)
    zone = load_topology(AIR, change=_plc_change(tmp_path, upgrade + (
        "  - {op: modify-service, node: fuel-plc1, port: 502, set: {writers: [fuel-scada]}}\n")))
    assert zone.nodes["fuel-plc1"].services[0].writers == ["fuel-hmi", "fuel-plc1", "fuel-plc2"]
    # without the key, 4.x falls back to the catalogue's roles (the HMI), as before
    assert load_topology(AIR).nodes["fuel-plc1"].services[0].writers is None
    # validate sees the allow-list change (the effect check)
    res = static_validate(AIR, _plc_change(tmp_path, set_writers + upgrade))
    effect = next(c for c in res.checks if c.name == "effect")
    assert effect.status == "pass" and "services" in effect.reason, effect.reason


def test_bad_writers_point_at_their_line(tmp_path):
    import pytest

    from cyberrange.errors import UserError
    for body, words, line in [
        ("  - {op: modify-service, node: fuel-plc1, port: 502, set: {writers: [fuel-hnii]}}\n",
         "unknown host or zone 'fuel-hnii' (did you mean 'fuel-hmi'?)", 5),
        ("  - {op: modify-service, node: fuel-plc1, port: 502, set: {writers: ['zz*']}}\n",
         "'zz*' matches no host", 5),
    ]:
        with pytest.raises(UserError) as e:
            load_topology(AIR, change=_plc_change(tmp_path, body))
        assert words in e.value.message and e.value.line == line, e.value.message
    bad = tmp_path / "t.yaml"
    bad.write_text((ROOT / "topologies" / "fob.yaml").read_text().replace(
        "{type: http, port: 8080, banner: COP-Server/2.1}",
        "{type: http, port: 8080, banner: COP-Server/2.1, writers: [ops-ws1]}"))
    with pytest.raises(UserError) as e:
        load_topology(bad)
    assert "'writers' are only for modbus services" in e.value.message

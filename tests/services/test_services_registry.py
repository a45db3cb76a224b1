"""The service registry (``cyberrange.services``): every module declares its service types, the
topology schema's enum and the model's tables are the registry's, every spec starts a program
that accepts the options it is given, and reading the registry stays cheap (no paramiko, no
twin). No root needed."""
from __future__ import annotations

import pkgutil
import subprocess
import sys

import pytest
from helpers import ROOT

import cyberrange.services as services_pkg
from cyberrange.model.loader import load_topology, topology_schema
from cyberrange.services.registry import (
    SERVICE_TYPES,
    SERVICE_WEIGHT,
    SERVICES,
    UDP_SERVICES,
    Launch,
    ServiceSpec,
)


def test_schema_enum_is_the_registry():
    enum = topology_schema()["$defs"]["service"]["properties"]["type"]["enum"]
    assert tuple(enum) == SERVICE_TYPES, (
        "cyberrange/model/schemas/topology.schema.json: the service type enum must list the "
        f"registry's types in its order: {list(SERVICE_TYPES)}")


def test_the_model_uses_the_registry(tmp_path):
    """A service entry without ``proto`` gets its spec's; attack paths weigh it by its spec;
    the model's list of types is the registry's."""
    from cyberrange.model import paths, topology
    assert topology.SERVICE_TYPES == SERVICE_TYPES
    assert paths.SERVICE_WEIGHT == SERVICE_WEIGHT
    entries = "".join(f"      - {{type: {t}, port: {1000 + i}}}\n" for i, t in enumerate(SERVICES))
    f = tmp_path / "all.yaml"
    f.write_text("version: 1\nname: all-services\nclassification: UNCLASSIFIED\n"
                 "zones:\n  lan: {subnet: 10.60.0.0/24}\n"
                 "nodes:\n  - name: h\n    kind: host\n    zone: lan\n    services:\n"
                 + entries)
    got = {s.type: s.proto for s in load_topology(f).nodes["h"].services}
    assert got == {t: s.proto for t, s in SERVICES.items()}
    assert set(UDP_SERVICES) == {"dns", "c2-dns", "ntp", "syslog"}
    assert (SERVICE_WEIGHT["login"], SERVICE_WEIGHT["http"], SERVICE_WEIGHT["dns"]) == (1, 2, 3)


def test_every_module_declares_a_service():
    declared = {spec.argv.__module__ for spec in SERVICES.values()}
    for mod in pkgutil.iter_modules(services_pkg.__path__):
        if mod.name.startswith("_") or mod.name in ("spec", "registry"):
            continue
        assert f"cyberrange.services.{mod.name}" in declared, \
            f"cyberrange/services/{mod.name}.py declares no ServiceSpec"
    assert all(isinstance(s, ServiceSpec) and s.proto in ("tcp", "udp") for s in SERVICES.values())


def _launch(tmp_path, svc_type, **fields):
    from cyberrange.model.topology import Account, Service
    topo = load_topology(ROOT / "topologies" / "fob.yaml")
    (tmp_path / "config").mkdir(exist_ok=True)
    svc = Service(type=svc_type, port=SERVICES[svc_type].port, proto=SERVICES[svc_type].proto,
                  accounts=[Account("admin", "admin123")], **fields)
    host = topo.hosts[0]
    return Launch(node=host.name, ip=str(host.ip), service=svc, topology=topo, run_dir=tmp_path,
                  log=tmp_path / "logs" / "x.log")


@pytest.mark.parametrize("svc_type", SERVICE_TYPES)
def test_argv_options_are_the_programs(tmp_path, svc_type):
    """The options a spec passes are options its program has (read from its --help)."""
    argv = SERVICES[svc_type].argv(_launch(tmp_path, svc_type, banner="SSH-2.0-x",
                                           domain="c2.example"))
    assert str(SERVICES[svc_type].port) in " ".join(argv)
    if argv[0] != sys.executable:
        assert argv[0] == "dnsmasq" and (tmp_path / "config" / "dns-hosts").read_text()
        return
    assert argv[1:3] == ["-m", f"cyberrange.services.{argv[2].rsplit('.', 1)[-1]}"]
    helptext = subprocess.run(argv[:3] + ["--help"], capture_output=True, text=True,
                              timeout=60).stdout
    for opt in (a for a in argv[3:] if a.startswith("--")):
        assert opt in helptext, f"{svc_type}: {argv[2]} has no option {opt}"


def test_reading_the_registry_is_cheap():
    code = ("import sys, cyberrange.model.loader, cyberrange.model.paths; "
            "print(sorted(m for m in sys.modules if m.startswith(('cyberrange.twin', "
            "'paramiko'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_topology_docs_name_every_type():
    """docs/topology-format.md lists the service types and their default protocol."""
    import re
    text = (ROOT / "docs" / "topology-format.md").read_text(encoding="utf-8")
    types_row = next(line for line in text.splitlines() if line.startswith("| `type` | `http`")
                     or line.startswith("| `type` | `backup`"))
    listed = re.findall(r"`([a-z0-9-]+)`", types_row.split("|")[2])
    assert sorted(listed) == sorted(SERVICE_TYPES), types_row
    proto_row = next(line for line in text.splitlines()
                     if line.startswith("| `proto` | `tcp`, `udp`"))
    udp = re.findall(r"[a-z0-9-]+", proto_row.split("|")[3].split(";")[0].split(" for ", 1)[1])
    assert sorted(udp) == sorted(UDP_SERVICES), proto_row

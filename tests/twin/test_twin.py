"""The twin: built for real with Mininet, probed with real connections, torn down exactly."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from helpers import PY, ROOT, cli, needs_twin, run_probes
from cyberrange.model import reach
from cyberrange.model.loader import load_topology
from cyberrange.twin.build import Twin
from cyberrange.twin.state import leftovers, nothing_left, live_states

REACH = ROOT / "tests" / "data" / "good" / "reach.yaml"
pytestmark = needs_twin


def _expectations(path: Path):
    """The '# reach: allow|deny SRC -> DST PROTO[/PORT]' table at the top of a topology."""
    rows = []
    for m in re.finditer(r"^# reach: (allow|deny)\s+(\S+) -> (\S+) (\w+)(?:/(\d+))?",
                         path.read_text(), flags=re.M):
        rows.append((m[1] == "allow", m[2], m[3], m[4], int(m[5]) if m[5] else None))
    assert len(rows) >= 10
    return rows


@pytest.fixture(scope="module")
def reach_twin(tmp_path_factory):
    topo = load_topology(REACH)
    twin = Twin(topo, tmp_path_factory.mktemp("reach"), "test-reach", log=lambda m: None)
    twin.start()
    yield twin
    twin.stop()


def test_twin_objects_live_in_its_own_namespaces_only(reach_twin):
    st = reach_twin.state
    left = leftovers(st.prefix)
    # one namespace per node and one for the switches, all named after the twin's prefix
    assert sorted(left["namespaces"]) == sorted([*reach_twin.ns.values(), f"{st.prefix}sw"])
    # nothing of the twin is in the host's namespace: no link, no bridge, no nftables table
    assert left["links"] == [] and left["nft_tables"] == []
    host = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert st.prefix not in host
    # in the switch namespace: a bridge per zone, one port per attachment, only ours on them
    sw = reach_twin.switch_run(["ip", "-o", "link", "show"]).stdout
    bridges = re.findall(r"^\d+: (br\d+):", sw, flags=re.M)
    assert len(bridges) == len(reach_twin.topo.zones)
    ports = re.findall(r"^\d+: (p\d+)@\S+ .* master (br\d+)", sw, flags=re.M)
    attachments = sum(len(n.interfaces) for n in reach_twin.topo.nodes.values())
    assert len(ports) == attachments and {b for _, b in ports} == set(bridges)
    # every node: its interfaces named as in the model (eth<K>), its addresses, IPv6 off
    for node in reach_twin.topo.nodes.values():
        out = reach_twin.run(node.name, ["ip", "-o", "addr", "show"]).stdout
        for itf in node.interfaces:
            assert re.search(rf"\d+: {itf.devname}\s+inet {itf.ip}/", out), (node.name, out)
        assert "inet6" not in out, (node.name, out)
    # a Mininet user finds the same network in twin.net
    h = reach_twin.net.get("web")
    assert h.IP() == str(reach_twin.topo.nodes["web"].ip)
    assert str(reach_twin.topo.nodes["web"].ip) in h.cmd("ip -4 -o addr show dev eth0")
    assert len(reach_twin.net.links) == attachments


def test_live_reachability_matches_the_rules(reach_twin):
    topo = reach_twin.topo
    rows = _expectations(REACH)
    by_src: dict[str, list] = {}
    for allowed, src, dst, proto, port in rows:
        static_ok, why = reach.allowed(topo, src, topo.nodes[dst].ip, proto, port)
        assert static_ok == allowed, f"static analysis disagrees on {src}->{dst} {proto}/{port}: {why}"
        by_src.setdefault(src, []).append(
            {"proto": proto, "ip": str(topo.nodes[dst].ip), "port": port, "want": allowed,
             "dst": dst})
    for src, probes in by_src.items():
        for r in run_probes(reach_twin, src, probes):
            got = r["result"] == "open"
            assert got == r["want"], f"{src} -> {r['dst']} {r['proto']}/{r['port']}: {r['result']}"


def test_every_service_pair_agrees_with_static_analysis(reach_twin):
    """Not only the listed pairs: every host x every declared service, live vs static."""
    topo = reach_twin.topo
    checked = 0
    for src in topo.hosts:
        probes = []
        for dst in topo.hosts:
            if dst is src:
                continue
            for svc in dst.services:
                ok, _ = reach.allowed(topo, src.name, dst.ip, svc.proto, svc.port)
                probes.append({"proto": svc.proto, "ip": str(dst.ip), "port": svc.port, "want": ok,
                               "dst": dst.name})
        for r in run_probes(reach_twin, src.name, probes):
            assert (r["result"] == "open") == r["want"], (src.name, r)
            checked += 1
    assert checked >= 10


def test_twin_stop_removes_exactly_its_objects(tmp_path):
    topo = load_topology(REACH)
    before = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    fds_before = len(os.listdir("/proc/self/fd"))
    twin = Twin(topo, tmp_path, "test-stop", log=lambda m: None).start()
    prefix = twin.state.prefix
    assert leftovers(prefix)["namespaces"]
    twin.stop()
    assert nothing_left(prefix), leftovers(prefix)
    # no file descriptor of the twin stays open in this process (node shells' ptys, pipes)
    assert len(os.listdir("/proc/self/fd")) <= fds_before
    after = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    names = lambda t: set(re.findall(r"^\d+: ([^:@]+)", t, flags=re.M))  # noqa: E731
    other_twin = re.compile(r"^c[0-9a-f]{4}[hsm]\d")      # twins of other runs come and go
    # nothing of ours is left, and nothing that is not a twin's was touched
    assert not [n for n in names(after) if n.startswith(prefix)]
    assert {n for n in names(before) if not other_twin.match(n)} <= names(after)
    assert not (Path("/run/cyberrange") / f"{prefix}.json").exists()


def test_exception_during_build_tears_down(tmp_path, monkeypatch):
    topo = load_topology(REACH)
    twin = Twin(topo, tmp_path, "test-crash", log=lambda m: None)

    def boom():
        raise RuntimeError("injected failure while starting services")
    monkeypatch.setattr(twin, "_start_services", boom)
    with pytest.raises(RuntimeError):
        twin.start()
    assert nothing_left(twin.state.prefix), leftovers(twin.state.prefix)


def _wait_up(proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        mine = [s for s in live_states() if s.owner_pid == proc.pid and s.status == "up"]
        if mine:
            return mine[0]
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        time.sleep(0.2)
    raise AssertionError("twin did not come up")


def test_ctrl_c_on_up_removes_the_twin(tmp_path):
    proc = subprocess.Popen([PY, "-m", "cyberrange.cli.main", "up", str(REACH), "--runs-dir",
                             str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    st = _wait_up(proc)
    assert leftovers(st.prefix)["namespaces"]
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    assert nothing_left(st.prefix), leftovers(st.prefix)


def test_down_cleans_up_after_a_killed_owner(tmp_path):
    """SIGKILL leaves no chance to clean up; `cyberrange down` must finish the job."""
    proc = subprocess.Popen([PY, "-m", "cyberrange.cli.main", "up", str(REACH), "--runs-dir",
                             str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    st = _wait_up(proc)
    proc.kill()
    proc.wait()
    assert leftovers(st.prefix)["namespaces"], "the killed twin should still be there"
    r = cli("down", st.prefix)
    assert r.returncode == 0, r.stderr
    assert nothing_left(st.prefix), leftovers(st.prefix)


def test_up_detach_exec_and_down(tmp_path):
    before = {s.prefix for s in live_states()}
    r = cli("up", REACH, "--runs-dir", tmp_path, "--detach")
    assert r.returncode == 0, r.stderr
    (st,) = [s for s in live_states() if s.prefix not in before]
    web = load_topology(REACH).nodes["web"].ip
    r = cli("exec", "--twin", st.prefix, "user1", "--", "ping", "-c1", "-W1", str(web))
    assert r.returncode == 0, r.stdout + r.stderr
    r = cli("down", st.prefix)
    assert r.returncode == 0, r.stderr
    assert nothing_left(st.prefix), leftovers(st.prefix)


def test_missing_netem_gives_one_clear_warning(tmp_path):
    """This kernel has no netem: a profile with delay/loss says once how it is emulated (by
    default the userspace relay), and the twin runs."""
    topo = load_topology(ROOT / "topologies" / "fob.yaml")
    msgs = []
    twin = Twin(topo, tmp_path, "test-netem", log=msgs.append)
    try:
        twin.start()
        if twin.netem:
            pytest.skip("this kernel has netem")
        assert len(msgs) == 1 and "netem is not available" in msgs[0] and "satcom" in msgs[0]
        assert twin.link_emulation == "relay" and twin.relay_proc.poll() is None   # the default
        # bandwidth is still shaped on the SATCOM link: an HTB class at 4 Mbit/s
        port = twin.port[("hq-rtr", topo.nodes["hq-rtr"].interfaces[-1].index)]
        out = twin.switch_run(["tc", "class", "show", "dev", port]).stdout
        assert "htb" in out and "4182Kbit" in out     # 4 Mbit/s of TCP goodput (shaping.py)
    finally:
        twin.stop()


def test_vlan_trunks_and_asymmetric_routes_agree_with_the_model(tmp_path):
    """v2 topology with a shared VLAN switch, a router-on-a-stick trunk, block instances and a
    hand route that sends platoon 7's replies through the wrong firewall: every probe agrees
    with the static model, including the connections the asymmetric route breaks."""
    from cyberrange.twin.verify import verify
    topo = load_topology(ROOT / "tests" / "data" / "v2" / "good" / "full.yaml")
    msgs = []
    rep = verify(topo, tmp_path, bandwidth=False, log=msgs.append)
    assert rep["summary"]["disagree"] == 0, [r for r in rep["reachability"] if not r["agree"]][:3]
    broken = [r for r in rep["reachability"] if "on the way back" in r["why"]]
    assert broken and not any(r["observed"] for r in broken)
    assert any(r["predicted"] for r in rep["reachability"] if r["src"] == "plt1-ws1")


def test_up_cli_is_mininets_own_cli_on_the_twin(tmp_path):
    """`up --cli`: Mininet's CLI over twin.net, nodes named as in the model; exit removes it."""
    r = cli("up", REACH, "--cli", "--runs-dir", tmp_path, timeout=120,
            input="nodes\nuser1 ping -c1 -W1 web\nuser1 ping -c1 -W1 admin\nexit\n")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    nodes = out.split("available nodes are:", 1)[1].split("mininet>", 1)[0].split()
    assert set(load_topology(REACH).nodes) <= set(nodes), nodes
    # the rules hold in the CLI too: users may ping web, not the management zone
    assert "1 received" in out and "0 received" in out, out
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    st = json.loads((run_dir / "manifest.json").read_text())
    assert st["status"] == "done" and st["teardown"]["complete"], st.get("teardown")
    assert nothing_left(st["twin"]["prefix"]), leftovers(st["twin"]["prefix"])

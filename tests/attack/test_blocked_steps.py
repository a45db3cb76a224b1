"""Attack steps meet the defence (issue 14 item 2): ``blocked`` with a one-line reason when a
rule or a down link stops a step, ``error`` with one line and the traceback in the run's logs,
``stopped`` when the operator stops the run, and in every case a ledger that counts exactly
what left the actor (compared with a tcpdump of its switch port). Scoring: a step cut short
before it sent anything is not observable, so not detected.

The namespace lab of tests/attack/lab.py (attacker 10.98.0.10, t1 .21 with login :2222, t2 .22 with
http :80, router .1); every defence here is an nftables table or a link change in the lab's
own namespaces, removed again by the test that made it.
"""
from __future__ import annotations

import ipaddress
import json
import threading
import time

import pyarrow as pa
import pytest
from lab import ATTACKER, LAB, ROUTER, T1, T2, T3
from nslab import actor_flows as _actor_flows
from nslab import assert_exact as _assert_exact
from nslab import lab_fixture, ledger_flows, needs_netns

from cyberrange.attack.runner import _run_agent

LAB_NET = "10.98.0.0/24"


lab = lab_fixture(LAB.without("ssh", "dns"))
ALLOWED = LAB.allowed
needs_lab = needs_netns


def actor_flows(packets, src=ATTACKER):
    return _actor_flows(packets, src)


def assert_exact(res, pkts, src=ATTACKER, bytes_too=True):
    _assert_exact(res, pkts, src, bytes_too)


def run_agent(lab, technique, targets, params):
    """The real agent in the attacker's namespace; (result, stderr), whatever the outcome."""
    result, stderr, _rc = _run_agent(lab.runner(), "attacker",
                                     {"technique": technique, "targets": targets,
                                      "params": params, "allowed": ALLOWED, "step": "t"})
    assert result is not None, stderr
    return result, stderr


def nft(lab, node, script):
    lab.nsx(node, "nft", script)


def arp_requests_from(pkts, ip=ATTACKER, window=None) -> int:
    """ARP requests asked by ``ip`` (within ``window`` = (start, end) if given)."""
    from scapy.layers.l2 import ARP
    lo, hi = window or (0, float("inf"))
    return sum(1 for p in pkts if ARP in p and p[ARP].op == 1 and p[ARP].psrc == ip
               and lo <= float(p.time) <= hi)


def within(pkts, rec):
    """The captured frames of the step's window (the kernel of a lab host may speak later)."""
    return [p for p in pkts if rec["start"] - 0.5 <= float(p.time) <= rec["end"] + 0.5]


def assert_one_line_reason(res, key):
    reason = res[key]
    assert isinstance(reason, str) and reason.strip(), res
    assert "\n" not in reason and "Traceback" not in reason, reason


# --------------------------------------------------------------------------- blocked, live
@needs_lab
def test_egress_filter_in_the_actor_blocks_a_sweep_before_it_sends(lab):
    """A ``netdev egress`` drop on the attacker's own interface (raw frames too): the sweep's
    first ARP request fails, the step is blocked at once and the ledger says nothing left,
    which is what the capture saw."""
    nft(lab, "a", "add table netdev blue; add chain netdev blue out { type filter hook egress "
                  "device eth0 priority 0; policy drop; }")
    try:
        for technique, params in (("T1018", {"timeout": 0.5, "rate": 500}),
                                  ("T1018-arp", {"timeout": 0.5, "rate": 500, "retries": 0})):
            cap = lab.capture(f"egress-{technique}")
            t0 = time.monotonic()
            res, stderr = run_agent(lab, technique, [LAB_NET], params)
            took = time.monotonic() - t0
            pkts = cap.stop_packets()
            assert res["outcome"] == "blocked", (res, stderr[-2000:])
            assert_one_line_reason(res, "blocked_reason")
            assert "ENOBUFS" in res["blocked_reason"] and "egress" in res["blocked_reason"]
            assert res["flows"] == [] and res["arp_frames"] == 0
            assert actor_flows(pkts) == {} and arp_requests_from(pkts) == 0
            assert took < 10, took
    finally:
        lab.nsx("a", "nft", "delete table netdev blue", check=False)


@needs_lab
def test_output_drop_in_the_actor_blocks_kernel_connections_and_counts_what_left(lab):
    """An ``output`` drop in the attacker's node: kernel SYNs die before its interface,
    though TCP_INFO counts them. The connect scan is blocked and its ledger holds no packet;
    a SYN scan (raw frames, which an output rule does not see) still finds the ports, and its
    ledger holds the SYNs but not the kernel's RSTs, which the rule dropped: both as captured."""
    nft(lab, "a", "add table inet blue; add chain inet blue out { type filter hook output "
                  f"priority 0; policy accept; }}; add rule inet blue out ip daddr {LAB_NET} drop")
    try:
        cap = lab.capture("out-connect")
        res, stderr = run_agent(lab, "T1046-connect", [T1, T2],
                                {"ports": [80, 2222], "timeout": 1.5})
        pkts = cap.stop_packets()
        assert res["outcome"] == "blocked", (res, stderr[-2000:])
        assert_one_line_reason(res, "blocked_reason")
        assert "never left the actor" in res["blocked_reason"], res["blocked_reason"]
        assert res["flows"] == [] and actor_flows(pkts) == {}

        cap = lab.capture("out-syn")
        res, stderr = run_agent(lab, "T1046", [T1, T2], {"ports": [80, 2222], "rate": 500,
                                                         "timeout": 1.0})
        pkts = cap.stop_packets()
        assert res["outcome"] == "succeeded", (res, stderr[-2000:])
        assert sorted(res["facts"]["open"]) == [f"{T1}:2222", f"{T2}:80"]
        assert all(f["packets"] == 1 for f in res["flows"]), res["flows"]   # no RST left
        assert_exact(res, pkts)
    finally:
        lab.nsx("a", "nft", "delete table inet blue", check=False)
    # the targets keep the scan's half-open connections and re-send their SYN-ACKs; once the
    # rule is gone the attacker's kernel answers one with a RST: wait for that (a later test
    # would see those RSTs)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(
            lab.nsx(n, "ss", "-Htn", "state", "syn-recv").stdout.strip() for n in ("t1", "t2")):
        time.sleep(0.2)


def _restore_attacker_link(lab):
    lab.nsx("a", "ip", "link", "set", "eth0", "up", check=False)
    lab.nsx("a", "ip", "route", "replace", "default", "via", ROUTER, check=False)
    for _ in range(50):
        if lab.nsx("a", "ip", "route", "show", "default").stdout.strip():
            return
        time.sleep(0.1)


@needs_lab
def test_link_down_mid_arp_scan_is_blocked_with_the_frames_it_sent(lab):
    """The defender downs the attacker's interface while a slow ARP scan runs (the issue's
    253 ARP requests captured, 0 in the ledger): the step is blocked, and the ledger's
    ``arp_frames`` is exactly the number of requests the switch port saw."""
    cap = lab.capture("linkdown")
    out = {}
    th = threading.Thread(target=lambda: out.update(zip(("res", "err"), run_agent(
        lab, "T1018-arp", [LAB_NET], {"rate": 40, "timeout": 0.5, "retries": 0}))))
    th.start()
    try:
        time.sleep(1.5)
        lab.nsx("a", "ip", "link", "set", "eth0", "down")
        th.join(60)
    finally:
        _restore_attacker_link(lab)
    pkts = cap.stop_packets()
    res = out["res"]
    assert res["outcome"] == "blocked", res
    assert_one_line_reason(res, "blocked_reason")
    assert "ENETDOWN" in res["blocked_reason"], res["blocked_reason"]
    sent = arp_requests_from(within(pkts, res))
    assert 20 < sent < 253
    assert res["arp_frames"] == sent == res["facts"]["arp_requests"]
    assert res["flows"] == [] and actor_flows(within(pkts, res)) == {}


@needs_lab
def test_brute_force_cut_by_a_drop_rule_mid_run_is_blocked(lab):
    """The login service answers the first guesses; then a drop rule on t1 (the defender)
    swallows the attacker's packets: the guessing stops, the step is blocked, and the ledger
    still counts every packet that left, the dropped ones included."""
    cap = lab.capture("cut-brute")
    out = {}
    params = {"ports": [2222], "usernames": ["admin"],
              "passwords": [f"wrong{i}" for i in range(400)], "pause": 0.05,
              "connect_timeout": 1.5, "io_timeout": 1.5, "stop_on_success": True}
    th = threading.Thread(target=lambda: out.update(
        zip(("res", "err"), run_agent(lab, "T1110.001", [f"{T1}:2222"], params))))
    th.start()
    try:
        time.sleep(1.5)
        nft(lab, "t1", "add table inet blue; add chain inet blue in { type filter hook input "
                       f"priority 0; policy accept; }}; add rule inet blue in ip saddr {ATTACKER} "
                       "drop")
        th.join(60)
    finally:
        lab.nsx("t1", "nft", "delete table inet blue", check=False)
        # t1's side of the connection the rule cut would retransmit for minutes
        lab.nsx("t1", "ss", "-K", "dst", ATTACKER, check=False)
    pkts = cap.stop_packets()
    res = out["res"]
    assert res["outcome"] == "blocked", res
    assert_one_line_reason(res, "blocked_reason")
    assert "stopped answering" in res["blocked_reason"], res["blocked_reason"]
    assert res["error"] is None
    guesses = [f for f in res["flows"] if f["dport"] == 2222]
    assert 5 < len(guesses) < 400                  # cut well before the end of the list
    assert_exact(res, pkts)                        # ledger == capture, per 5-tuple


# --------------------------------------------------------------------------- the runner
def _topology():
    from cyberrange.model.topology import Interface, Node, Topology, Zone
    net, ip = ipaddress.IPv4Network, ipaddress.ip_address
    topo = Topology(name="crt-lab", classification="UNCLASSIFIED")
    topo.zones = {"lab": Zone("lab", net(LAB_NET), "UNCLASSIFIED"),
                  "far": Zone("far", net("10.98.1.0/24"), "UNCLASSIFIED")}

    def host(name, zone, addr):
        return Node(name, "host", interfaces=[Interface(zone, ip(addr), 24)])
    topo.nodes = {"attacker": host("attacker", "lab", ATTACKER), "t1": host("t1", "lab", T1),
                  "t2": host("t2", "lab", T2), "t3": host("t3", "far", T3),
                  "rtr": Node("rtr", "router", interfaces=[
                      Interface("lab", ip(ROUTER), 24),
                      Interface("far", ip("10.98.1.1"), 24, index=1)])}
    return topo


def _playbook(tmp, text):
    from cyberrange.attack.playbook import load_playbook
    path = tmp / "pb.yaml"
    path.write_text(text)
    return load_playbook(path)


# Inside the agent: the sweep's layer-2 socket breaks after 2 frames (a bug, not the defence)
BREAK_AFTER_2 = """
import sys
from cyberrange.attack.techniques import layer2
_send, _n = layer2.L2Session.send, [0]
def send(self, frame):
    if _n[0] == 2:
        raise RuntimeError("boom after 2 frames\\nsecond line of the message")
    _n[0] += 1
    return _send(self, frame)
layer2.L2Session.send = send
from cyberrange.attack.agent import main
sys.exit(main())
"""


class BreakingRunner:
    """The lab's runner, but the agent runs with BREAK_AFTER_2 patched in."""

    def __init__(self, lab):
        self.inner = lab.runner()

    def popen(self, node, argv, **kw):
        assert argv[1:] == ["-m", "cyberrange.attack.agent"], argv
        return self.inner.popen(node, [argv[0], "-c", BREAK_AFTER_2], **kw)


@needs_lab
def test_a_technique_that_raises_is_an_error_with_one_line_and_exact_counts(lab, tmp_path):
    """A technique that raises mid-send: outcome error, ONE line in the ledger naming the log
    file, the traceback in logs/agent-<step>-<actor>-<repeat>.err, and the 2 probes that left
    are in the ledger (a crash used to lose them)."""
    from cyberrange.attack.ledger import read_ledger
    from cyberrange.attack.runner import run_playbook
    pb = _playbook(tmp_path, f"""
version: 1
name: crash
steps:
  - id: sweep
    technique: T1018
    actor: attacker
    targets: [{T1}, {T2}, {ROUTER}, 10.98.0.23, 10.98.0.24]
    params: {{timeout: 0.5, rate: 200}}
""")
    run_dir = tmp_path / "run"
    cap = lab.capture("crash")
    records = run_playbook(pb, _topology(), BreakingRunner(lab), run_dir / "ledger.jsonl", "r1")
    pkts = cap.stop_packets()
    (rec,) = records
    assert read_ledger(run_dir / "ledger.jsonl") == records
    assert rec["outcome"] == "error", rec
    assert_one_line_reason(rec, "error")
    assert rec["error"].startswith("RuntimeError: boom after 2 frames second line"), rec["error"]
    assert rec["error"].endswith("(traceback in logs/agent-sweep-attacker-0.err)"), rec["error"]
    err = (run_dir / "logs" / "agent-sweep-attacker-0.err").read_text()
    assert "Traceback (most recent call last)" in err and "boom after 2 frames" in err
    assert rec["packets_sent"] == 2 and rec["blocked_reason"] is None
    icmp = {k: v for k, v in actor_flows(within(pkts, rec)).items() if k[2] == "icmp"}
    assert ledger_flows(rec["flows"]) == icmp


@needs_lab
def test_a_stopped_run_records_what_the_running_step_sent(lab, tmp_path):
    """The operator stops the run while a slow ARP scan runs: the agent gets SIGTERM, unwinds,
    and the step's record (outcome ``stopped``) counts exactly the requests that left."""
    from cyberrange.attack.runner import run_playbook
    pb = _playbook(tmp_path, f"""
version: 1
name: stop
steps:
  - id: arp
    technique: T1018-arp
    actor: attacker
    targets: [{LAB_NET}]
    params: {{rate: 40, timeout: 0.5, retries: 0}}
""")
    stop = threading.Event()
    threading.Timer(1.5, stop.set).start()
    cap = lab.capture("stopped")
    t0 = time.monotonic()
    (rec,) = run_playbook(pb, _topology(), lab.runner(), tmp_path / "run" / "ledger.jsonl",
                          "r1", stop_event=stop)
    took = time.monotonic() - t0
    pkts = cap.stop_packets()
    assert rec["outcome"] == "stopped", rec
    assert rec["error"] is None and rec["blocked_reason"] is None
    sent = arp_requests_from(within(pkts, rec))
    assert 20 < sent < 253 and rec["arp_frames"] == sent, (rec["arp_frames"], sent)
    assert took < 5, took


# --------------------------------------------------------------------------- scoring
T0 = 1_750_000_000.0


def _alert(t, rule, fids, src):
    from cyberrange.telemetry.schema import ALERT_SCHEMA
    us = int(round(t * 1e6))
    row = {"@timestamp": us, "event.kind": "alert", "event.dataset": "cyberrange.alert",
           "event.start": us, "event.end": us, "rule.name": rule, "rule.category": "x",
           "threat.technique.id": "T0000", "source.ip": src, "destination.ip": None,
           "message": "m", "cyberrange.score": 0.5, "cyberrange.evidence": "{}",
           "cyberrange.flow_ids": fids, "cyberrange.alert_id": f"{rule}-{t}",
           "cyberrange.run_id": "r1"}
    return row


def _table(rows, schema):
    cols = {}
    for f in schema:
        vals = [r.get(f.name) for r in rows]
        if pa.types.is_timestamp(f.type):
            cols[f.name] = pa.array(vals, pa.int64()).cast(f.type)
        else:
            cols[f.name] = pa.array(vals, f.type)
    return pa.table(cols, schema=schema)


def _flow(t, src, sport, dst, dport):
    us = int(round(t * 1e6))
    return {"@timestamp": us, "event.kind": "event", "event.category": "network",
            "event.type": "connection", "event.dataset": "cyberrange.flow", "event.start": us,
            "event.end": us, "event.duration": 0, "observer.name": "s1", "source.ip": src,
            "source.port": sport, "source.packets": 1, "source.bytes": 60, "destination.ip": dst,
            "destination.port": dport, "destination.packets": 0, "destination.bytes": 0,
            "network.transport": "tcp", "network.packets": 1, "network.bytes": 60,
            "network.community_id": f"1:{src}-{sport}-{dst}-{dport}",
            "cyberrange.flow_id": f"f-{sport}-{dport}", "cyberrange.tcp_state": None,
            "cyberrange.tcp_flags": None, "cyberrange.run_id": "r1"}


def test_a_step_cut_short_before_sending_is_not_observable(tmp_path):
    """A crafted run folder: an errored and a blocked step that sent nothing are not
    detected although an actor alert lies in their windows (that alert is false), and they are
    out of the technique counts; a blocked step that sent packets, or only ARP frames, is
    scored like any other. Reasons reach the scorecard's step rows."""
    from cyberrange.attack.ledger import make_record
    from cyberrange.score.score import load_ledger, score_run
    from cyberrange.telemetry.schema import ALERT_SCHEMA, FLOW_SCHEMA
    att, v = "10.10.2.66", "10.10.2.20"

    def rec(step, technique, start, outcome, flows=(), **kw):
        return make_record(run_id="r1", step_id=step, name=step, technique=technique,
                           actor="ops-maint", actor_ip=att, targets=[v], start=T0 + start,
                           end=T0 + start + 5, outcome=outcome, flows=list(flows), **kw)
    brute_flows = [{"src": att, "dst": v, "proto": "tcp", "sport": 41000 + i, "dport": 22,
                    "packets": 6, "bytes": 400} for i in range(3)]
    ledger = [
        rec("crash", "T1018", 0, "error", error="RuntimeError: boom (traceback in logs/x.err)"),
        rec("fenced", "T1046", 10, "blocked",
            blocked_reason="a frame out of eth0 failed with ENOBUFS for 0.5 s"),
        rec("brute", "T1110.001", 20, "blocked", brute_flows,
            blocked_reason="10.10.2.20:22 stopped answering (timeout) after 3 attempts"),
        rec("arp", "T1018-arp", 30, "blocked", arp_frames=40,
            blocked_reason="the actor's interface eth0 is down"),
    ]
    run = tmp_path / "run"
    run.mkdir()
    (run / "ledger.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ledger))
    ledger = load_ledger(run / "ledger.jsonl")
    flows = _table([_flow(T0 + 20.5 + i, att, 41000 + i, v, 22) for i in range(3)], FLOW_SCHEMA)
    alerts = _table([
        _alert(T0 + 1, "arp-sweep", [], att),                  # in crash's window
        _alert(T0 + 11, "vertical-portscan", [], att),         # in fenced's window
        _alert(T0 + 22, "ssh-bruteforce", [f"f-{41000 + i}-22" for i in range(3)], att),
        _alert(T0 + 31, "arp-sweep", [], att),                 # in arp's window
    ], ALERT_SCHEMA)
    card = score_run(ledger, flows, alerts)
    steps = {s["step_id"]: s for s in card["steps"]}
    for sid in ("crash", "fenced"):
        s = steps[sid]
        assert not s["observable"] and not s["detected"] and s["detected_by"] == [], s
        assert s["time_to_detect_s"] is None and s["packets_sent"] == 0
    assert steps["crash"]["reason"] == "RuntimeError: boom (traceback in logs/x.err)"
    assert steps["fenced"]["reason"].startswith("a frame out of eth0 failed with ENOBUFS")
    assert steps["brute"]["observable"] and steps["brute"]["detected"]
    assert steps["brute"]["detected_by"] == ["ssh-bruteforce"] and steps["brute"]["reason"]
    assert steps["arp"]["observable"] and steps["arp"]["detected_by"] == ["arp-sweep"]
    assert card["techniques"] == {"T1110.001": {"steps": 1, "detected": 1},
                                  "T1018-arp": {"steps": 1, "detected": 1}}
    # the two alerts in the windows of steps that sent nothing are about something else
    assert card["alerts"]["true"] == 2 and card["alerts"]["false"] == 2


def test_scorecard_and_report_show_the_reasons():
    """The terminal's scorecard table and the after-action report show each step's reason."""
    from rich.console import Console

    from cyberrange.report import aar
    from cyberrange.report.terminal import scorecard_table, step_end_suffix
    card = {"steps": [
        {"step_id": "scan", "technique": "T1046", "outcome": "blocked", "observable": True,
         "reason": "a frame out of eth0 failed with ENOBUFS for 0.5 s", "detected": True,
         "time_to_detect_s": 0.4, "detected_by": ["vertical-portscan"], "attack_flows": 3},
        {"step_id": "crash", "technique": "T1018", "outcome": "error", "observable": False,
         "reason": "RuntimeError: boom (traceback in logs/agent-crash-a-0.err)",
         "detected": False, "time_to_detect_s": None, "detected_by": [], "attack_flows": 0}]}
    console = Console(width=200, record=True, color_system=None)
    console.print(scorecard_table(card))
    text = console.export_text()
    assert "ENOBUFS for 0.5 s" in text and "RuntimeError: boom" in text
    assert "not observable" in text

    # the live display: a finished step's line gets its ARP frames and its reason
    line = step_end_suffix({"outcome": "blocked", "arp_frames": 47,
                            "blocked_reason": "listening on eth0 failed with ENETDOWN [x]"})
    assert "+47 ARP frames" in line and "ENETDOWN \\[x]" in line
    assert step_end_suffix({"outcome": "succeeded", "arp_frames": 0}) == ""

    class FakeRun:
        manifest = {"run_id": "r1", "topology": "t", "playbook": "p", "detectors": []}
    md = aar.render(FakeRun(), card)
    assert "RuntimeError: boom (traceback in logs/agent-crash-a-0.err)" in md
    assert "ENOBUFS for 0.5 s" in md

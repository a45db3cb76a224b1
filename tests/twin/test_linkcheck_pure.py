"""The link checks' arithmetic and the relay's argument format, without a twin."""
from __future__ import annotations

import os
import random

import pytest
from helpers import ROOT

from cyberrange.model.topology import LinkProfile
from cyberrange.twin import linkcheck, linkemu


def test_link_spec_round_trips_and_refuses_bad_values():
    spec = linkemu.LinkSpec("hq-rtr/eth1", "q3", "r3", 275, 10, 0.5, 0)
    assert linkemu.LinkSpec.parse(spec.arg()) == spec
    for bad in ("x:q1:r1:1:0:0", "x:q1:r1:-1:0:0:0", "x:q1:r1:1:0:101:0", "x:q1:r1:a:0:0:0"):
        with pytest.raises(ValueError):
            linkemu.LinkSpec.parse(bad)


def test_only_profiles_with_something_to_emulate_are_relayed():
    assert not linkemu.relay_needed(LinkProfile("lan", 1000, 0.1))
    assert linkemu.relay_needed(LinkProfile("wan", 100, 20, 2, 0.01))
    assert linkemu.relay_needed(LinkProfile("lossy", None, 0, 0, 1))
    assert linkemu.relay_needed(LinkProfile("jittery", None, 0.2, 0.5, 0))


def test_loss_alone_is_an_nftables_drop_not_the_relay():
    assert linkemu.loss_only(LinkProfile("lossy", None, 0, 0, 1))
    assert linkemu.loss_only(LinkProfile("lossy-lan", 1000, 0.1, 0, 1))   # 0.1 ms: the veth's
    assert not linkemu.loss_only(LinkProfile("wan", 100, 20, 2, 0.01))
    assert not linkemu.loss_only(LinkProfile("lan", 1000, 0.1))
    lines = linkemu.drop_lines([("p7", 0.5)])
    assert lines[0] == f"add table netdev {linkemu.DROP_TABLE}"
    assert "ingress device p7 priority -400" in lines[1]      # before the SPAN copies (0)
    assert lines[-1].endswith("numgen random mod 1000000 < 5000 counter drop")


def test_the_default_mode_is_emulate_and_the_cli_knows_every_mode(monkeypatch):
    from cyberrange.cli import _params
    from cyberrange.model.loader import load_topology
    from cyberrange.twin import build
    assert _params.LINK_MODES == build.LINK_MODES
    monkeypatch.delenv("CYBERRANGE_LINK_EMULATION", raising=False)
    topo = load_topology(ROOT / "tests" / "data" / "good" / "links.yaml")
    assert build.Twin(topo, "/nonexistent", "x").link_emulation == "emulate"
    monkeypatch.setenv("CYBERRANGE_LINK_EMULATION", "shape")
    assert build.Twin(topo, "/nonexistent", "x").link_emulation == "shape"
    # --link-emulation on a verb sets it for the process (and the workers it starts)
    import click
    from click.testing import CliRunner

    @click.command()
    @_params.link_emulation_option
    def verb():
        click.echo(os.environ["CYBERRANGE_LINK_EMULATION"])
    assert CliRunner().invoke(verb, ["--link-emulation", "relay"]).output == "relay\n"
    assert CliRunner().invoke(verb, ["--link-emulation", "nope"]).exit_code == 2


def test_the_twin_names_what_is_not_emulated_in_shape_and_how_the_rest_is():
    from cyberrange.model.loader import load_topology
    topo = load_topology(ROOT / "tests" / "data" / "good" / "links.yaml")
    itfs = [i for n in topo.nodes.values() for i in n.interfaces
            if i.profile and i.profile.needs_netem]
    shape = linkemu.plan_note("shape", False, itfs)
    assert "NOT emulated" in shape and "sat (sat-test" in shape and "lan (" not in shape
    relay = linkemu.plan_note("relay", False, itfs)
    assert "netem is not available" in relay and "lossy (lossy-test: 5% loss, nftables" in relay
    assert "sat (sat-test: 100±5 ms, 1% loss, userspace relay)" in relay
    assert linkemu.plan_note("relay", False, []) is None


def test_expected_round_trip_crosses_the_profile_twice():
    e = linkcheck.expected(LinkProfile("sat", 8, 550, 20, 0.5))
    assert e["rtt_ms"] == 1100
    assert e["rtt_std_ms"] == pytest.approx(20 * (2 / 3) ** 0.5)
    assert e["loss_pct"] == pytest.approx(100 * (1 - 0.995 ** 2))


def test_probes_are_paced_to_a_tenth_of_a_slow_link_and_cut_to_the_budget():
    count, interval = linkcheck.plan(LinkProfile("hf", 0.0096, 300, 100, 2), 1000, 20)
    assert interval == pytest.approx(98 * 8 * 2 / (9600 * 0.1), rel=1e-3)   # 1.63 s apart
    assert count == 20                                   # never fewer than 20
    count, interval = linkcheck.plan(LinkProfile("sat", 8, 550), 1000, 20)
    assert (count, interval) == (1000, 0.01)


def test_wilson_interval_contains_the_truth_and_narrows_with_more_probes():
    lo1, hi1 = linkcheck.wilson(10, 1000)
    lo2, hi2 = linkcheck.wilson(100, 10000)
    assert lo1 < 1.0 < hi1 and lo2 < 1.0 < hi2
    assert (hi2 - lo2) < (hi1 - lo1) / 2
    assert linkcheck.wilson(0, 0) == (0.0, 100.0)


def _ping_output(rtts, lost_seqs):
    lines = []
    for seq, rtt in enumerate(rtts, 1):
        if seq not in lost_seqs:
            lines.append(f"64 bytes from 10.0.0.2: icmp_seq={seq} ttl=63 time={rtt:.3f} ms")
    return "\n".join(lines)


def test_judge_agrees_with_an_emulated_link_and_names_what_is_off():
    prof = LinkProfile("sat", 8, 550, 20, 0.5)
    rng = random.Random(3)
    rtts = [1100 + rng.uniform(-20, 20) + rng.uniform(-20, 20) for _ in range(2000)]
    lost = set(rng.sample(range(1, 2001), 20))
    got, n_lost = linkcheck.parse_ping(_ping_output(rtts, lost), 2000)
    row = linkcheck.judge(prof, got, n_lost, emulated=True)
    assert row["agree"], row
    assert n_lost == 20 and row["probes"] == 2000
    # a link with no delay at all: the RTT check fails and says so
    flat = linkcheck.judge(prof, [0.05] * 1000, 0, emulated=True)
    assert not flat["agree"] and not flat["checks"]["rtt"]
    assert "RTT 0.1 ms, expected 1100.0 ms" in flat["explanation"]
    # loss far above the promise
    lossy = linkcheck.judge(prof, rtts[:1800], 200, emulated=True)
    assert not lossy["checks"]["loss"] and "loss 10.00 %" in lossy["explanation"]


def test_an_unemulated_profile_is_a_failed_check():
    prof = LinkProfile("sat", 8, 550, 20, 0.5)
    row = linkcheck.judge(prof, [0.05] * 100, 0, emulated=False)
    assert row["status"] == "not emulated" and row["agree"] is False
    assert "not emulated" in row["explanation"]


def test_duplicate_replies_count_once():
    text = ("64 bytes from x: icmp_seq=1 ttl=64 time=1.0 ms\n"
            "64 bytes from x: icmp_seq=1 ttl=64 time=1.2 ms (DUP!)\n"
            "64 bytes from x: icmp_seq=2 ttl=64 time=1.1 ms\n")
    rtts, lost = linkcheck.parse_ping(text, 3)
    assert rtts == [1.0, 1.1] and lost == 1

"""The containment guard refuses every target outside the twin (no root needed)."""
import ipaddress

import pytest

from cyberrange.attack.guard import check_targets, parse_target
from cyberrange.errors import ContainmentError

TWIN = [ipaddress.IPv4Network("10.10.1.0/24"), ipaddress.IPv4Network("10.10.2.0/24"),
        ipaddress.IPv4Network("10.10.0.0/29")]


@pytest.mark.parametrize("target", [
    "10.10.1.10", "10.10.2.20:22", "10.10.1.0/24", "10.10.1.128/25", "10.10.0.1", "10.10.0.5:80",
])
def test_inside_the_twin_is_allowed(target):
    check_targets([target], TWIN)


@pytest.mark.parametrize("target,why", [
    ("8.8.8.8", "outside the twin"),
    ("8.8.8.8:53", "outside the twin"),
    ("127.0.0.1", "loopback"),
    ("10.0.0.0/8", "larger than a /16"),
    ("0.0.0.0/0", "larger than a /16"),
    ("10.10.0.0/16", "outside the twin"),        # a /16 is allowed in size, but not all twin
    ("224.0.0.1", "multicast"),
    ("255.255.255.255", "limited broadcast"),
    ("0.0.0.0", "unspecified"),
    ("10.10.1.255", "broadcast address of 10.10.1.0/24"),
    ("10.10.3.1", "outside the twin"),
    ("10.10.1.0/23", "outside the twin"),         # half of it is outside
    ("fob-fw", "not an IPv4 address"),
    ("10.10.1.10:99999", "not an IPv4 address"),
    ("::1", "not an IPv4 address"),
])
def test_refusals(target, why):
    with pytest.raises(ContainmentError) as exc:
        check_targets(["10.10.1.10", target], TWIN, step="scan")
    msg = str(exc.value)
    assert msg.startswith("step 'scan': target ")
    assert why in msg
    assert msg.endswith("nothing was sent")


def test_message_lists_the_allowed_space():
    with pytest.raises(ContainmentError) as exc:
        check_targets(["8.8.8.8"], TWIN, step="x")
    assert str(exc.value) == ("step 'x': target 8.8.8.8 is outside the twin (allowed: 10.10.1.0/24, "
                              "10.10.2.0/24, 10.10.0.0/29); nothing was sent")


def test_allowed_may_be_strings_and_empty_refuses_all():
    check_targets(["10.99.0.5"], ["10.99.0.0/24"])
    with pytest.raises(ContainmentError):
        check_targets(["10.99.0.5"], [])


def test_an_absurd_address_space_is_refused():
    with pytest.raises(ContainmentError, match="wider than a /8"):
        check_targets(["8.8.8.8"], [ipaddress.IPv4Network("0.0.0.0/0")])


def test_parse_target():
    assert parse_target("10.1.2.3:22") == (ipaddress.IPv4Network("10.1.2.3/32"), 22)
    assert parse_target("10.1.2.0/24")[0].num_addresses == 256
    with pytest.raises(ValueError):
        parse_target("host.example")


def test_agent_refuses_before_sending(tmp_path):
    """The agent's own check (defence in depth): no root, nothing sent, outcome error."""
    from cyberrange.attack.agent import handle
    res = handle({"technique": "T1018", "targets": ["10.99.0.5", "8.8.8.8"], "params": {},
                  "allowed": ["10.99.0.0/24"]})
    assert res["outcome"] == "error" and res["flows"] == []
    assert "8.8.8.8" in res["error"] and "nothing was sent" in res["error"]

"""lateral-movement's pivot check (issue 15): a host entered on a new edge that then makes its
first contact with another host -- the quiet intrusion's hop -- is an alert that lists the
entering sessions; a sprayed workstation doing its owner's routine login on an edge it used
before the spray is not. Synthetic flows (the shapes of tests/detect/test_detect_lateral.py)."""
from __future__ import annotations

import pytest
from records import records as table
from test_detect_lateral import ADMIN, ATT, DB, FILES, T0, WS, baseline, ssh

from cyberrange.detect.base import SettingError
from cyberrange.detect.lateral import LateralDetector
from cyberrange.detect.registry import load_detector_file

LNO = "10.80.4.40"          # a laptop that serves SSH and logs in itself


def shipped() -> LateralDetector:
    det = {d.name: d for d in load_detector_file("detectors/lateral.yaml")}["lateral-movement"]
    det.fit(baseline())
    return det


def quiet_intrusion(t0: float) -> list[dict]:
    """Three guesses 4 s apart, the login that works, then the hop from the server 9 s later;
    none of it crosses a count threshold (3 short sessions < min_failures, no probes)."""
    return (ssh(t0, ATT, FILES, 3, every=4.0) + ssh(t0 + 14, ATT, FILES, 1, long=True)
            + ssh(t0 + 23, FILES, DB))


def test_the_hop_of_a_quiet_intrusion_is_an_alert_listing_the_chain():
    det = shipped()
    assert det.pivot and det.pivot_us == 600 * 10**6
    rows = quiet_intrusion(T0 + 100)
    (a,) = det.detect(table(rows))
    assert (a.source_ip, a.destination_ip) == (FILES, DB) and a.technique == "T1021.004"
    assert a.evidence["corroboration"]["entered_from"] == [ATT]
    assert a.evidence["corroboration"]["entry_sessions"] == 4
    assert a.evidence["threshold"]["pivot_window_s"] == 600
    entry = {r["cyberrange.flow_id"] for r in rows if r["source.ip"] == ATT}
    assert entry <= set(a.flow_ids) and len(a.flow_ids) == 5      # the hop + the 4 entries
    assert a.timestamp.timestamp() == pytest.approx(T0 + 123)
    assert "was itself entered from" in a.message
    off = LateralDetector("x", rate_alpha=1e-4)                     # the old default: pivot off
    off.fit(baseline())
    assert off.detect(table(rows)) == []


def test_a_sprayed_laptop_doing_its_owners_routine_login_is_not_a_chain():
    """The tuning split's false chain: the laptop had logged in to DB before the spray came;
    the spray's failed sessions 'entered' it, then its owner logged in to DB again."""
    det = shipped()
    rows = ssh(T0 + 100, LNO, DB)                                   # its owner, before the spray
    rows += ssh(T0 + 150, ATT, LNO, 3, every=1.0)                   # 3 spray attempts at it
    rows += ssh(T0 + 160, LNO, DB, 2, every=20.0)                   # its owner again
    assert [a for a in det.detect(table(rows)) if a.source_ip == LNO] == []
    # the same laptop contacting a host it never had before, right after being entered: a chain
    (a,) = [a for a in det.detect(table(rows + ssh(T0 + 170, LNO, FILES)))
            if a.source_ip == LNO]
    assert a.destination_ip == FILES and a.evidence["corroboration"]["entered_from"] == [ATT]


def test_the_window_admins_and_the_entering_host_itself():
    det = shipped()
    late = ssh(T0 + 100, ATT, FILES, 1, long=True) + ssh(T0 + 100 + 700, FILES, DB)
    assert det.detect(table(late)) == []                            # 700 s > pivot_window
    back = ssh(T0 + 100, ATT, FILES, 1, long=True) + ssh(T0 + 110, FILES, ATT)
    assert det.detect(table(back)) == []                            # answering back is no hop
    known = ssh(T0 + 100, ADMIN, FILES, 1) + ssh(T0 + 110, FILES, DB)
    assert det.detect(table(known)) == []                           # entered on a baseline edge
    short = LateralDetector("x", pivot=True, pivot_window=5)
    short.fit(baseline())
    assert short.detect(table(quiet_intrusion(T0 + 100))) == []     # the hop came 9 s after
    with pytest.raises(SettingError) as e:
        LateralDetector("x", pivot_window=-1)
    assert e.value.setting == "pivot_window"


def test_operators_chains_need_a_new_entry():
    """A workstation that logs in to two servers in a row is not entered by anyone: no alert."""
    det = shipped()
    rows = ssh(T0 + 100, WS, FILES, 2, every=30.0) + ssh(T0 + 110, WS, LNO)
    assert det.detect(table(rows)) == []

"""How the tests pace the shipped playbooks: only intervals, durations, delays, rates and
counts change, never what is attacked. Shared by tests/attack/test_playbooks.py (every playbook
in its twin), tests/detect/test_detect_drills.py (detectors on real drills) and bench/corpus.py.
"""
from __future__ import annotations

import copy
from pathlib import Path

import yaml

# Overrides merged into the playbook's steps for the test run: {playbook: {step: {"params": {..},
# "timing": {..}}}}. Only pacing changes (intervals, durations, delays, rates, counts), never
# what is attacked.
COMPRESS: dict[str, dict[str, dict]] = {
    "depot-intrusion-exfil": {
        "sweep": {"timing": {"rate": 200}},
        "scan": {"timing": {"delay": 1, "rate": 200}},
        "brute": {"params": {"pause": 0.05}, "timing": {"delay": 1}},
        "pivot": {"timing": {"delay": 1}},
        "probe-inside": {"params": {"rate": 50}, "timing": {"delay": 1}},
        "exfil": {"params": {"rate": 10}, "timing": {"delay": 1}},
    },
    "depot-dns-exfil": {
        "poll": {"params": {"interval": 1.5}},
        "upload": {"timing": {"delay": 1}},
        "tunnel": {"params": {"rate": 40}, "timing": {"delay": 1}},
    },
    "depot-insider-theft": {"upload": {"timing": {"delay": 1}}},
    "airbase-c2-beacon": {
        "beacon": {"params": {"interval": 2}, "timing": {"duration": 16}},
        "dns-poll": {"params": {"interval": 5}, "timing": {"duration": 16, "delay": 1}},
        "sweep": {"timing": {"delay": 1, "rate": 200}},
        "report": {"timing": {"delay": 1}},
    },
    "airbase-fuel-plc": {
        "read": {"timing": {"delay": 1}},
        "alarm": {"timing": {"delay": 1}},
        "hold": {"params": {"repeat": 4, "interval": 1}, "timing": {"delay": 1}},
    },
    "fob-satcom-dos": {
        "link-flood": {"params": {"count": 20000}, "timing": {"delay": 1, "duration": 10}},
        "syn-flood": {"params": {"count": 10000}, "timing": {"delay": 1, "duration": 10}},
    },
    "fob-ops-mitm": {
        "arpscan": {"params": {"rate": 300}},
        "mitm-gw": {"params": {"interval": 1.0}, "timing": {"delay": 1, "duration": 6}},
        "mitm-files": {"params": {"interval": 1.0}, "timing": {"delay": 1, "duration": 6}},
    },
    "fob-pcap-replay": {"replay2": {"timing": {"delay": 1}}},
    "naval-low-slow-scan": {
        "admin": {"timing": {"rate": 20, "repeat": 3, "every": 4}},
        "otdmz": {"timing": {"rate": 20, "delay": 1}},
        "otseg": {"timing": {"rate": 20, "delay": 1}},
    },
    "coalition-password-spray": {
        "sweep": {"timing": {"rate": 200}},
        "scan": {"timing": {"delay": 1}},
        "spray": {"params": {"round_pause": 1, "pause": 0.05}, "timing": {"delay": 1}},
        "spray-usa": {"params": {"pause": 0.05}, "timing": {"delay": 1}},
        "login": {"timing": {"delay": 1}},
    },
}


def _doc(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def compressed_copy(path: Path, out_dir: Path, extra: dict | None = None) -> Path:
    """The playbook with COMPRESS applied, written to ``out_dir`` (file params made absolute).
    ``extra`` (``{step: {"params"|"timing": {...}}}``) is merged over COMPRESS: a caller that
    needs more of a behaviour (the detector corpus, the detector drills) paces it slower."""
    doc = _doc(path)
    over = {k: {kk: dict(vv) for kk, vv in v.items()}
            for k, v in COMPRESS.get(doc["name"], {}).items()}
    for step, parts in (extra or {}).items():
        for part, vals in parts.items():
            over.setdefault(step, {}).setdefault(part, {}).update(vals)
    for step in doc["steps"]:
        params = step.setdefault("params", {}) or {}
        step["params"] = params
        if "pcap" in params and not Path(params["pcap"]).is_absolute():
            params["pcap"] = str((path.parent / params["pcap"]).resolve())
        o = over.get(step["id"], {})
        params.update(copy.deepcopy(o.get("params", {})))
        if o.get("timing"):
            timing = step.setdefault("timing", {}) or {}
            step["timing"] = timing
            timing.update(o["timing"])
            if "rate" in o["timing"]:
                params.pop("rate", None)          # give the rate once
        if not params:
            del step["params"]
    dst = out_dir / path.name
    dst.write_text(yaml.safe_dump(doc, sort_keys=False))
    return dst

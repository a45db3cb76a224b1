"""The detector benchmark corpus: several drills (topologies, playbooks, seeds, benign intensity)
plus a benign-only drill per topology, then the evaluation harness over all of them.

    .venv/bin/python bench/corpus.py build [--out runs/corpus] [--only NAME ...]
    .venv/bin/python bench/corpus.py eval  [--out runs/corpus] [--markdown docs/detection-results.md]

``build`` runs each drill of ``CORPUS`` that is not in ``--out`` yet (a drill whose run finished is
kept: the build can be resumed), each with ``--warmup 20`` so that trainable detectors have 20 s
of benign baseline. Playbooks paced over minutes to an hour as shipped run with the pacing the
playbook tests use (``tests/support/pacing.py`` ``COMPRESS``: only intervals, delays, rates and
counts change, never what is attacked), except where ``PACING`` below keeps them slower -- the
low-and-slow scan keeps its shipped rate of one probe every 2 s. Every drill is a real twin (root, 40-120 s each; about 25 minutes in all on
2 cores). ``eval`` runs ``cyberrange detect eval`` over the folder and writes the tables into the
generated part of ``docs/detection-results.md`` (between the ``<!-- corpus:begin/end -->``
marks), with the date, the machine and the run ids, so anyone can rebuild and compare.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "cyberrange.cli.main"]

# name, topology, playbook (None: benign only), extra drill options
CORPUS = [
    ("fob-recon", "fob", "recon_bruteforce", ["--seed", "1"]),
    ("fob-recon-busy", "fob", "recon_bruteforce", ["--seed", "2", "--intensity", "3"]),
    ("fob-discovery", "fob", "fob_service_discovery", ["--seed", "3", "--intensity", "2"]),
    ("fob-mitm", "fob", "fob_ops_mitm", ["--seed", "4"]),
    ("fob-dos", "fob", "fob_satcom_dos", ["--seed", "5", "--intensity", "2"]),
    ("airbase-beacon", "air_base", "airbase_c2_beacon", ["--seed", "6", "--intensity", "2"]),
    ("airbase-plc", "air_base", "airbase_fuel_plc", ["--seed", "7", "--intensity", "2"]),
    ("coalition-spray", "coalition_mpe", "coalition_password_spray", ["--seed", "8"]),
    ("depot-dns-exfil", "logistics_depot", "depot_dns_exfil", ["--seed", "9", "--intensity", "2"]),
    ("depot-intrusion", "logistics_depot", "depot_intrusion_exfil", ["--seed", "10"]),
    ("depot-insider", "logistics_depot", "depot_insider_theft", ["--seed", "11", "--intensity", "2"]),
    ("naval-slow-scan", "naval_vessel", "naval_low_slow_scan", ["--seed", "12"]),
    ("fob-benign", "fob", None, ["--seed", "21", "--intensity", "3", "--duration", "120"]),
    ("airbase-benign", "air_base", None, ["--seed", "22", "--intensity", "3", "--duration", "120"]),
    ("coalition-benign", "coalition_mpe", None, ["--seed", "23", "--intensity", "3",
                                                 "--duration", "120"]),
    ("depot-benign", "logistics_depot", None, ["--seed", "24", "--intensity", "3",
                                               "--duration", "120"]),
    ("naval-benign", "naval_vessel", None, ["--seed", "25", "--intensity", "3",
                                            "--duration", "120"]),
    ("brigade-benign", "brigade", None, ["--seed", "26", "--intensity", "3", "--duration", "120"]),
]
WARMUP = 20

# Corpus pacing over the test's COMPRESS: {playbook name: {step: {"params"|"timing": {...}}}}
PACING = {
    "naval-low-slow-scan": {
        "admin": {"timing": {"rate": 0.5, "repeat": 2, "every": 60, "jitter": 0.5}},
        "otdmz": {"timing": {"rate": 0.5, "delay": 20, "jitter": 0.5}},
        "otseg": {"timing": {"rate": 0.2, "delay": 20, "jitter": 0.5}},
    },
    "airbase-c2-beacon": {
        "beacon": {"params": {"interval": 5}, "timing": {"duration": 60}},
        "dns-poll": {"params": {"interval": 10}, "timing": {"duration": 60, "delay": 1}},
    },
    "coalition-password-spray": {
        "spray": {"params": {"round_pause": 15, "pause": 0.2}, "timing": {"delay": 2}},
    },
    "airbase-fuel-plc": {"hold": {"params": {"repeat": 6, "interval": 5}}},
}


def paced_copy(pb: str, out_dir: Path) -> Path:
    """The playbook with the test's COMPRESS and then PACING applied."""
    sys.path[:0] = [str(ROOT / "tests" / "support")]
    import pacing
    import yaml
    path = ROOT / "attack_playbooks" / f"{pb}.yaml"
    return pacing.compressed_copy(path, out_dir, PACING.get(yaml.safe_load(path.read_text())["name"]))


def _done(out: Path) -> dict[str, Path]:
    """Corpus entries already built (finished runs), by name."""
    found = {}
    for m in sorted(out.glob("*/manifest.json")):
        man = json.loads(m.read_text())
        if man.get("status") == "done" and man.get("corpus"):
            found[man["corpus"]] = m.parent
    return found


def build(out: Path, only: list[str]) -> int:
    out.mkdir(parents=True, exist_ok=True)
    done = _done(out)
    failed = 0
    for i, (name, topo, pb, extra) in enumerate(CORPUS, 1):
        if only and name not in only:
            continue
        if name in done:
            print(f"[{i}/{len(CORPUS)}] {name}: have {done[name].name}", flush=True)
            continue
        args = CLI + ["drill", "run", f"topologies/{topo}.yaml"]
        if pb:
            pace_dir = out / ".playbooks"
            pace_dir.mkdir(exist_ok=True)
            args.append(str(paced_copy(pb, pace_dir)))
        args += ["--runs-dir", str(out), "--warmup", str(WARMUP), "--json"] + extra
        t0 = time.monotonic()
        before = set(out.iterdir())
        r = subprocess.run(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
        new = [p for p in set(out.iterdir()) - before if (p / "manifest.json").exists()]
        if r.returncode != 0 or len(new) != 1:
            failed += 1
            print(f"[{i}/{len(CORPUS)}] {name}: FAILED (exit {r.returncode})\n"
                  + r.stderr[-2000:])
            continue
        man_path = new[0] / "manifest.json"
        man = json.loads(man_path.read_text())
        man["corpus"] = name
        man_path.write_text(json.dumps(man, indent=2, default=str))
        card = json.loads(r.stdout)
        print(f"[{i}/{len(CORPUS)}] {name}: {new[0].name} in {time.monotonic() - t0:.0f} s, "
              f"{card['flows']['total']} flows, {len(card['steps'])} steps, "
              f"{card['reconciliation']['verdict']}", flush=True)
    return 1 if failed else 0


def evaluate(out: Path, markdown: Path | None) -> int:
    json_path = out / "evaluation.json"
    md_tmp = out / "evaluation.md"
    args = CLI + ["detect", "eval", str(out), "--json", str(json_path), "--markdown", str(md_tmp)]
    env = dict(os.environ, COLUMNS=os.environ.get("COLUMNS", "200"))
    t0 = time.monotonic()
    r = subprocess.run(args, cwd=ROOT, env=env)
    if r.returncode != 0:
        return r.returncode
    if markdown:
        ev = json.loads(json_path.read_text())
        head = (f"Generated by `bench/corpus.py eval` on {datetime.date.today()} "
                f"({platform.node()}, {os.cpu_count()} cores, evaluation took "
                f"{time.monotonic() - t0:.0f} s).\n\n")
        body = head + md_tmp.read_text()
        text = markdown.read_text() if markdown.exists() else \
            "# Detection results\n\n<!-- corpus:begin -->\n<!-- corpus:end -->\n"
        a, b = "<!-- corpus:begin -->", "<!-- corpus:end -->"
        if a not in text or b not in text:
            text += f"\n{a}\n{b}\n"
        pre, rest = text.split(a, 1)
        _, post = rest.split(b, 1)
        markdown.write_text(pre + a + "\n" + body + b + post)
        print(f"wrote {markdown} ({len(ev['runs'])} runs)")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("action", choices=["build", "eval"])
    ap.add_argument("--out", default="runs/corpus", type=Path)
    ap.add_argument("--only", nargs="*", default=[])
    ap.add_argument("--markdown", default=None, type=Path)
    a = ap.parse_args()
    os.chdir(ROOT)
    if a.action == "build":
        return build(a.out, a.only)
    return evaluate(a.out, a.markdown)


if __name__ == "__main__":
    sys.exit(main())

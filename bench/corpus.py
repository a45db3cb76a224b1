"""The detector benchmark corpus: one real drill of every playbook in each of two splits (tuning
and evaluation, disjoint benign seeds), then the evaluation harness over the evaluation split and
the benign evaluation split of bench/benign_fa.py.

    .venv/bin/python bench/corpus.py build --split eval   --out /work/runs-corpus-2026-12-06
    .venv/bin/python bench/corpus.py build --split tuning --out /work/runs-corpus-2026-12-06
    .venv/bin/python bench/corpus.py eval --out /work/runs-corpus-2026-12-06 \
        --benign /work/runs-benign --markdown docs/detection-results.md

``build`` runs each drill of the split (``EVALUATION`` or ``TUNING``) that ``OUT/SPLIT`` does not
hold yet (a drill whose run finished is kept: the build can be resumed), each with
``--warmup 20`` so that trainable detectors have 20 s of benign baseline, and appends its twin
time to ``OUT/SPLIT/twin-time.jsonl``. Playbooks paced over minutes to an hour as shipped run
with the pacing the playbook tests use (``tests/support/pacing.py`` ``COMPRESS``: only
intervals, delays, rates and counts change, never what is attacked), except where ``PACING``
below keeps them slower -- the low-and-slow scan keeps its shipped rate of one probe every 2 s.
Every drill is a real twin (root, 30-210 s each; about 15 min per split on 2 cores).

``eval`` (no twin) runs ``cyberrange detect eval`` over ``OUT/eval`` and the benign evaluation
drills (``BENIGN/eval/*``) together, then ``bench/benign_fa.py measure --split eval``, and writes
the tables into the generated part of ``docs/detection-results.md`` (between the
``<!-- corpus:begin/end -->`` marks) with the date, the machine and the twin time, so anyone
can re-run it after a detector change and compare. It also places every counted step against
the published envelope (``docs/data/envelopes.json``, ``--envelopes``; written by
``bench/envelope.py eval``) with ``cyberrange/score/corpus_envelope.py``: the goal *every
technique recall >= 0.9 inside its published envelope* beside the all-steps one, a table of
steps inside / outside (the bound each misses) / without an envelope, and
``OUT/corpus-envelope.json``. Nothing is tuned on the evaluation split:
the incident correlator is tuned on ``OUT/tuning`` (``bench/incident_tuning.py``).
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
sys.path.insert(0, str(ROOT))       # this checkout's cyberrange, not another installed one
CLI = [sys.executable, "-m", "cyberrange.cli.main"]

# name, topology, playbook (None: benign only), extra drill options. Two splits, one drill of
# every playbook in each, with different benign seeds and intensities: incident thresholds are
# tuned on TUNING only (with the benign and envelope tuning splits); EVALUATION is what
# docs/detection-results.md publishes and what no threshold may be tuned on. False alerts on
# benign traffic come from the benign corpus of bench/benign_fa.py (its evaluation split),
# which holds far more benign flows than benign-only drills here would.
EVALUATION = [
    ("fob-recon", "fob", "recon_bruteforce", ["--seed", "1"]),
    ("fob-recon-busy", "fob", "recon_bruteforce", ["--seed", "2", "--intensity", "3"]),
    ("fob-discovery", "fob", "fob_service_discovery", ["--seed", "3", "--intensity", "2"]),
    ("fob-mitm", "fob", "fob_ops_mitm", ["--seed", "4"]),
    ("fob-dos", "fob", "fob_satcom_dos", ["--seed", "5", "--intensity", "2"]),
    ("fob-replay", "fob", "fob_pcap_replay", ["--seed", "13", "--intensity", "2"]),
    ("airbase-beacon", "air_base", "airbase_c2_beacon", ["--seed", "6", "--intensity", "2"]),
    ("airbase-plc", "air_base", "airbase_fuel_plc", ["--seed", "7", "--intensity", "2"]),
    ("coalition-spray", "coalition_mpe", "coalition_password_spray", ["--seed", "8"]),
    ("coalition-quiet", "coalition_mpe", "coalition_quiet_valid_accounts",
     ["--seed", "14", "--intensity", "2"]),
    ("depot-dns-exfil", "logistics_depot", "depot_dns_exfil", ["--seed", "9", "--intensity", "2"]),
    ("depot-intrusion", "logistics_depot", "depot_intrusion_exfil", ["--seed", "10"]),
    ("depot-insider", "logistics_depot", "depot_insider_theft", ["--seed", "11", "--intensity", "2"]),
    ("naval-slow-scan", "naval_vessel", "naval_low_slow_scan", ["--seed", "12"]),
]
TUNING = [      # the chains that test the correlator most come first (a build cut short has them)
    ("t-coalition-quiet", "coalition_mpe", "coalition_quiet_valid_accounts", ["--seed", "39"]),
    ("t-depot-intrusion", "logistics_depot", "depot_intrusion_exfil",
     ["--seed", "41", "--intensity", "2"]),
    ("t-depot-insider", "logistics_depot", "depot_insider_theft", ["--seed", "42"]),
    ("t-coalition-spray", "coalition_mpe", "coalition_password_spray",
     ["--seed", "38", "--intensity", "2"]),
    ("t-airbase-beacon", "air_base", "airbase_c2_beacon", ["--seed", "36"]),
    ("t-depot-dns-exfil", "logistics_depot", "depot_dns_exfil", ["--seed", "40"]),
    ("t-airbase-plc", "air_base", "airbase_fuel_plc", ["--seed", "37"]),
    ("t-fob-recon", "fob", "recon_bruteforce", ["--seed", "31", "--intensity", "2"]),
    ("t-fob-discovery", "fob", "fob_service_discovery", ["--seed", "32"]),
    ("t-fob-mitm", "fob", "fob_ops_mitm", ["--seed", "33", "--intensity", "2"]),
    ("t-fob-dos", "fob", "fob_satcom_dos", ["--seed", "34"]),
    ("t-fob-replay", "fob", "fob_pcap_replay", ["--seed", "35"]),
    ("t-naval-slow-scan", "naval_vessel", "naval_low_slow_scan", ["--seed", "43", "--intensity", "2"]),
]
SPLITS = {"eval": EVALUATION, "tuning": TUNING}
WARMUP = 20
ENVELOPES = ROOT / "docs" / "data" / "envelopes.json"    # bench/envelope.py eval writes it

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


def build(out: Path, split: str, only: list[str]) -> int:
    """Run the drills of ``split`` that ``out/<split>`` does not hold yet; one line per drill
    (and its twin time) is appended to ``out/<split>/twin-time.jsonl``."""
    corpus = SPLITS[split]
    out = out / split
    out.mkdir(parents=True, exist_ok=True)
    done = _done(out)
    failed = 0
    for i, (name, topo, pb, extra) in enumerate(corpus, 1):
        if only and name not in only:
            continue
        if name in done:
            print(f"[{i}/{len(corpus)}] {name}: have {done[name].name}", flush=True)
            continue
        args = CLI + ["drill", "run", f"topologies/{topo}.yaml"]
        if pb:
            pace_dir = out / ".playbooks"
            pace_dir.mkdir(exist_ok=True)
            args.append(str(paced_copy(pb, pace_dir)))
        args += ["--runs-dir", str(out), "--warmup", str(WARMUP), "--json"] + extra
        t0 = time.monotonic()
        before = set(out.iterdir())
        r = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=False)
        took = time.monotonic() - t0
        new = [p for p in set(out.iterdir()) - before if (p / "manifest.json").exists()]
        with (out / "twin-time.jsonl").open("a") as f:
            f.write(json.dumps({"name": name, "exit": r.returncode, "seconds": round(took, 1),
                                "run": new[0].name if len(new) == 1 else None}) + "\n")
        if r.returncode != 0 or len(new) != 1:
            failed += 1
            print(f"[{i}/{len(corpus)}] {name}: FAILED (exit {r.returncode})\n"
                  + r.stderr[-2000:], flush=True)
            continue
        man_path = new[0] / "manifest.json"
        man = json.loads(man_path.read_text())
        man["corpus"] = name
        man["corpus_split"] = split
        man_path.write_text(json.dumps(man, indent=2, default=str))
        card = json.loads(r.stdout)
        print(f"[{i}/{len(corpus)}] {name}: {new[0].name} in {took:.0f} s, "
              f"{card['flows']['total']} flows, {len(card['steps'])} steps, "
              f"{card['reconciliation']['verdict']}", flush=True)
    return 1 if failed else 0


def _twin_time(out: Path) -> tuple[int, float]:
    """Drills built and their twin time in minutes (the last successful build of each)."""
    done = {}
    f = out / "twin-time.jsonl"
    for line in f.read_text().splitlines() if f.exists() else []:
        rec = json.loads(line)
        if rec.get("exit") == 0 and rec.get("run"):
            done[rec["name"]] = rec["seconds"]
    return len(done), sum(done.values()) / 60


def _benign_fa(benign: Path, out: Path, split: str = "eval") -> tuple[str, dict]:
    """``bench/benign_fa.py measure`` on a benign evaluation split (no twin): a markdown
    table of false alerts per detector with the benign flows behind them, and its JSON."""
    path = out / f"benign-fa-{split}.json"
    path.unlink(missing_ok=True)
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "benign_fa.py"), "measure",
                        "--split", split, "--runs", str(benign), "--json", str(path)],
                       cwd=ROOT, capture_output=True, text=True, check=False)
    if r.returncode not in (0, 1) or not path.exists():     # 1: a goal not met, JSON written
        raise SystemExit(f"benign_fa.py measure failed (exit {r.returncode}):\n{r.stderr[-2000:]}")
    fa = json.loads(path.read_text())
    rows = [("| detector | kind | false alerts | benign flows | per 10k | 95 % upper bound "
             "per 10k | goal per 10k | met |"), "|---|---|---:|---:|---:|---:|---:|---|"]
    for d in fa["detectors"]:
        rows.append(f"| {d['detector']} | {d['kind']} | {d['false_alerts']} | "
                    f"{d['benign_flows']:,} | {d['false_per_10k']:.2f} | "
                    f"{d['upper95_per_10k']:.2f} | {d['goal_per_10k']:g} | "
                    f"{'yes' if d['met'] else '**no**'} |")
    runs = ", ".join(f"{r['topology']} {r['benign_flows']:,}" for r in fa["runs"])
    text = (f"### False alerts on the benign evaluation split ({split})\n\n`bench/benign_fa.py "
            f"measure --split {split}` over {len(fa['runs'])} benign-only drills ({runs} benign flows; "
            f"{fa['benign_flows']:,} in all, deduplicated across sensors, warm-ups left out). "
            "Rule and statistical detectors' goal is 0; learned ones' their "
            "`false_alert_target`.\n\n" + "\n".join(rows) + "\n")
    return text, fa


def _in_envelope(ev: dict, envelopes: Path, out: Path) -> tuple[str, list[str]]:
    """Issue 15's goal on the corpus: every technique's recall inside its published envelope
    (``cyberrange/score/corpus_envelope.py``); the goal line and the per-technique table.
    Writes every step's placement to ``OUT/corpus-envelope.json``."""
    from cyberrange.report.evaluation import goal_mark
    from cyberrange.score import corpus_envelope as ce
    from cyberrange.score import envelope_publish as ep
    from cyberrange.score.evaluate import attack_id
    name = f"every technique recall >= {ce.GOAL_RECALL} inside its published envelope"
    if not envelopes.exists():
        return (f"- {goal_mark(None, rich=False)} {name}: not measured (no published envelope "
                f"file {envelopes}; `bench/envelope.py eval` writes it)"), []
    rows = ce.classify_corpus(ev, ep.load(envelopes))
    techs = ce.by_technique(rows)
    (out / "corpus-envelope.json").write_text(json.dumps({"steps": rows, "techniques": techs},
                                                         indent=1, default=str))
    goal, met, detail = ce.goal(techs, attack_only=lambda t: attack_id(t) is not None)
    rel = os.path.relpath(envelopes, ROOT) if envelopes.is_relative_to(ROOT) else str(envelopes)
    return f"- {goal_mark(met, rich=False)} {goal}: {detail}", ce.markdown(techs, rel)


def _splice_goal(text: str, line: str, table: list[str]) -> str:
    """``text`` (``detect eval --markdown``) with the goal ``line`` after the all-steps recall
    goal and ``table`` before the per-technique table."""
    out, placed = [], False
    for ln in text.splitlines():
        if ln.startswith("### Per technique") and table:
            out += table
        out.append(ln)
        if not placed and ln.startswith("- ") and " every technique recall >= " in ln:
            out.append(line)
            placed = True
    if not placed:
        out += ["", line]
    return "\n".join(out) + "\n"


def evaluate(out: Path, benign: Path, markdown: Path | None,
             envelopes: Path = ENVELOPES, benign_split: str = "eval",
             section: str = "corpus") -> int:
    """``detect eval`` over the evaluation split of the corpus and the benign evaluation split
    together (so precision and false alerts per technique count the benign drills too), then
    ``benign_fa.py measure``; writes the generated part of ``markdown``."""
    ev_dir = out / "eval"
    json_path = out / "evaluation.json"
    md_tmp = out / "evaluation.md"
    benign_runs = sorted(str(p) for p in (benign / benign_split).iterdir() if p.is_dir())
    args = CLI + ["detect", "eval", str(ev_dir), *benign_runs, "--json",
                  "--markdown", str(md_tmp)]
    env = dict(os.environ, COLUMNS=os.environ.get("COLUMNS", "200"))
    t0 = time.monotonic()
    with open(json_path, "w") as js:           # --json: the evaluation on stdout
        r = subprocess.run(args, cwd=ROOT, env=env, check=False, stdout=js)
    if r.returncode != 0:
        return r.returncode
    fa_text, _ = _benign_fa(benign, out, benign_split)
    ev = json.loads(json_path.read_text())
    line, table = _in_envelope(ev, envelopes, out)
    print(line)
    if markdown:
        n, minutes = _twin_time(ev_dir)
        opts = "".join([f" --benign-split {benign_split}" if benign_split != "eval" else "",
                        f" --section {section}" if section != "corpus" else ""])
        head = (f"Generated by `bench/corpus.py eval --out {out} --benign {benign}{opts}` on "
                f"{datetime.date.today()} ({platform.node()}, {os.cpu_count()} cores, took "
                f"{time.monotonic() - t0:.0f} s): the evaluation split of the corpus ({n} "
                f"drills, {minutes:.1f} min of twin time) and the benign evaluation split "
                f"`{benign_split}` ({len(benign_runs)} benign-only drills) with the detectors and incident "
                "settings in the tree.\n\n")
        body = head + _splice_goal(md_tmp.read_text(), line, table) + "\n" + fa_text
        text = markdown.read_text() if markdown.exists() else \
            "# Detection results\n\n<!-- corpus:begin -->\n<!-- corpus:end -->\n"
        a, b = f"<!-- {section}:begin -->", f"<!-- {section}:end -->"
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
    ap.add_argument("--split", choices=sorted(SPLITS), default="eval",
                    help="build: which split (runs go to OUT/SPLIT)")
    ap.add_argument("--only", nargs="*", default=[])
    ap.add_argument("--benign", default=Path("/work/runs-benign"), type=Path,
                    help="eval: root of bench/benign_fa.py's benign corpus (its eval split)")
    ap.add_argument("--benign-split", default="eval",
                    help="eval: which benign evaluation split (eval; eval2: the fresh one, "
                         "built with link emulation)")
    ap.add_argument("--section", default="corpus",
                    help="eval: the marked section of --markdown to write (<!-- NAME:begin -->)")
    ap.add_argument("--markdown", default=None, type=Path)
    ap.add_argument("--envelopes", default=ENVELOPES, type=Path,
                    help="eval: the published envelope file (bench/envelope.py eval writes it)")
    a = ap.parse_args()
    os.chdir(ROOT)
    if a.action == "build":
        return build(a.out, a.split, a.only)
    return evaluate(a.out, a.benign, a.markdown, a.envelopes, a.benign_split, a.section)


if __name__ == "__main__":
    sys.exit(main())

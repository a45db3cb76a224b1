"""Run folders that cannot lie (issue 11): the three readers of a run folder -- ``drill score``,
``drill report`` and ``detect eval`` -- on copies of one real drill, each damaged in one way.

For every corruption and reader: no traceback; the outcome is the one in the table (exit 2 with
one ``error:`` line naming what is wrong, or exit 0 where the damage is recoverable: a missing or
broken store is rebuilt by ``drill score``, a cut-short or deleted capture is re-scored and
flagged in the reconciliation, a reader that does not read the damaged file does not care); and
after a refusal the previous store.duckdb, scorecard.json and report.md are byte-identical (no
silent re-score). The readers run in-process through ``cyberrange.cli.main.main`` (the same
code path as the command line, without a Python start-up per call).
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import traceback
from pathlib import Path

import duckdb
import pytest

from helpers import ROOT, needs_twin

pytestmark = needs_twin

DETECTORS = str(ROOT / "detectors")
OUTPUTS = ("store.duckdb", "scorecard.json", "report.md")


def run_cli(*args) -> tuple[int, str, str]:
    """``cyberrange ARGS`` in this process: (exit code, stdout, stderr). An exception that
    escapes ``main`` is turned into the traceback a user would see."""
    from cyberrange.cli.main import main
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:          # noqa: BLE001 - what a user would see as a traceback
            err.write(traceback.format_exc())
            code = 1
    return code, out.getvalue(), err.getvalue()


READERS = {
    "score": lambda run: ("drill", "score", run, "--detectors", DETECTORS),
    "report": lambda run: ("drill", "report", run),
    "eval": lambda run: ("detect", "eval", run, "--detectors", DETECTORS),
}


# ---------------------------------------------------------------------------------- corruptions
def _manifest(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())


def _set_manifest(run: Path, **changes):
    m = _manifest(run)
    for k, v in changes.items():
        if v is ...:
            m.pop(k, None)
        else:
            m[k] = v
    (run / "manifest.json").write_text(json.dumps(m))


def _ledger(run: Path) -> list[dict]:
    from cyberrange.attack.ledger import legacy_record      # edited and written back: old names
    return [legacy_record(json.loads(x)) for x in (run / "ledger.jsonl").read_text().splitlines()]


def _set_ledger(run: Path, edit):
    recs = _ledger(run)
    edit(recs)
    (run / "ledger.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))


def _pcap(run: Path) -> Path:
    return sorted((run / "pcaps").rglob("*.pcap*"))[0]


def _replace_pcap(run: Path, make):
    p = _pcap(run)
    p.unlink()
    make(p)


def _store_sql(run: Path, sql: str):
    con = duckdb.connect(str(run / "store.duckdb"))
    con.execute(sql)
    con.close()


def _scorecard(run: Path, edit):
    card = json.loads((run / "scorecard.json").read_text())
    card = edit(card) or card
    (run / "scorecard.json").write_text(json.dumps(card))


def _step0(key, value):
    def edit(recs):
        recs[0][key] = value
    return edit


def _flow0(key, value):
    def edit(recs):
        recs[0]["flows"][0][key] = value
    return edit


def _drop_step_id(recs):
    del recs[1]["step_id"]


def _read_only(run: Path):
    r = subprocess.run(["chattr", "+i", str(run)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"chattr +i does not work here: {r.stderr.strip()}")


# name -> (damage, expected exit of (drill score, drill report, detect eval), words the error
# line holds); exit 0: recoverable for that reader, or a file that reader does not read
CORRUPTIONS = {
    "manifest-deleted": (lambda r: (r / "manifest.json").unlink(),
                         (2, 2, 2), "manifest.json"),
    "manifest-empty": (lambda r: (r / "manifest.json").write_text(""),
                       (2, 2, 2), "manifest is empty"),
    "manifest-not-json": (lambda r: (r / "manifest.json").write_text('{"run_id": "x",'),
                          (2, 2, 2), "not valid JSON"),
    "manifest-a-list": (lambda r: (r / "manifest.json").write_text("[1, 2]"),
                        (2, 2, 2), "not a list"),
    "manifest-not-utf8": (lambda r: (r / "manifest.json").write_bytes(
                          b'{"run_id": "\xff\xfe"}'),
                          (2, 2, 2), "not UTF-8"),
    "manifest-a-directory": (lambda r: ((r / "manifest.json").unlink(),
                                        (r / "manifest.json").mkdir()),
                             (2, 2, 2), "a directory"),
    "manifest-without-run_id": (lambda r: _set_manifest(r, run_id=...),
                                (2, 2, 2), "'run_id'"),
    "manifest-run_id-a-number": (lambda r: _set_manifest(r, run_id=42),
                                 (2, 2, 2), "'run_id' must be"),
    "manifest-sensors-a-list": (lambda r: _set_manifest(r, sensors=[]),
                                (2, 2, 2), "'sensors' must be"),
    "manifest-baseline-a-string": (lambda r: _set_manifest(r, baseline_s="ten"),
                                   (2, 2, 2), "'baseline_s'"),
    "manifest-seal-outside-the-run": (
        lambda r: _set_manifest(r, content={"files": {"../../etc/passwd": {
            "sha256": "0" * 64, "size": 1}}}),
        (2, 2, 2), "not a path inside the run folder"),
    # detect eval lists an unfinished run as not evaluable; with nothing else to evaluate it
    # exits 1 (a failed check: no goal measured), never 0 on no evidence (issue 15, item 5)
    "manifest-status-running": (lambda r: _set_manifest(r, status="running"),
                                (2, 2, 1), "'running'"),
    "manifest-status-unknown": (lambda r: _set_manifest(r, status="great"),
                                (2, 2, 2), "unknown status"),
    "ledger-deleted": (lambda r: (r / "ledger.jsonl").unlink(),
                       (2, 0, 2), "ledger is missing"),
    "ledger-empty": (lambda r: (r / "ledger.jsonl").write_text(""),
                     (2, 0, 2), "ledger is empty"),
    "ledger-truncated-mid-line": (
        lambda r: (r / "ledger.jsonl").write_bytes((r / "ledger.jsonl").read_bytes()[:-300]),
        (2, 0, 2), "ends in the middle of a record"),
    "ledger-garbage": (lambda r: (r / "ledger.jsonl").write_bytes(os.urandom(2000)),
                       (2, 0, 2), "ledger.jsonl"),
    "ledger-not-utf8": (lambda r: (r / "ledger.jsonl").write_bytes(
                        (r / "ledger.jsonl").read_bytes() + b'{"step_id": "\xff"}\n'),
                        (2, 0, 2), "not UTF-8"),
    "ledger-a-list-line": (lambda r: (r / "ledger.jsonl").write_text("[1, 2, 3]\n"),
                           (2, 0, 2), "must be a JSON object"),
    "ledger-line-without-step_id": (lambda r: _set_ledger(r, _drop_step_id),
                                    (2, 0, 2), "'step_id'"),
    "ledger-start-a-string": (lambda r: _set_ledger(r, _step0("start", "soon")),
                              (2, 0, 2), "'start' must be a number"),
    "ledger-outcome-unknown": (lambda r: _set_ledger(r, _step0("outcome", "won")),
                               (2, 0, 2), "outcome 'won'"),
    "ledger-flow-port-a-string": (lambda r: _set_ledger(r, _flow0("sport", "x")),
                                  (2, 0, 2), "flows[0]"),
    "ledger-of-another-run": (lambda r: _set_ledger(r, _step0("run_id", "someone-else")),
                              (2, 0, 2), "someone-else"),
    "ledger-a-fifo": (lambda r: ((r / "ledger.jsonl").unlink(), os.mkfifo(r / "ledger.jsonl")),
                      (2, 0, 2), "a FIFO"),
    "pcap-deleted": (lambda r: _pcap(r).unlink(),
                     (0, 0, 0), ""),
    "pcaps-all-deleted": (lambda r: shutil.rmtree(r / "pcaps"),
                          (2, 0, 0), "none of the 3 capture files"),
    "pcap-truncated": (lambda r: _pcap(r).write_bytes(_pcap(r).read_bytes()[:-5]),
                       (0, 0, 0), ""),
    "pcap-zero-bytes": (lambda r: _pcap(r).write_bytes(b""),
                        (0, 0, 0), ""),
    "pcap-garbage": (lambda r: _pcap(r).write_bytes(b"this is no capture" * 100),
                     (2, 0, 0), "not a pcap"),
    "pcap-a-directory": (lambda r: _replace_pcap(r, lambda p: p.mkdir()),
                         (2, 0, 0), "a directory"),
    "pcap-a-fifo": (lambda r: _replace_pcap(r, os.mkfifo),
                    (2, 0, 0), "a FIFO"),
    "pcap-a-dangling-link": (lambda r: _replace_pcap(r, lambda p: p.symlink_to(r / "gone")),
                             (2, 0, 0), "link to nothing"),
    "pcap-a-link-loop": (lambda r: _replace_pcap(r, lambda p: p.symlink_to(p)),
                         (2, 0, 0), "pcaps/"),
    "store-deleted": (lambda r: (r / "store.duckdb").unlink(),
                      (0, 0, 2), "store is missing"),
    "store-garbage": (lambda r: (r / "store.duckdb").write_bytes(os.urandom(50_000)),
                      (0, 0, 2), "not a readable DuckDB store"),
    "store-table-dropped": (lambda r: _store_sql(
                            r, "DROP VIEW flows; DROP TABLE flow_records"),
                            (0, 0, 2), "flows records cannot be read"),
    "store-rows-deleted": (lambda r: _store_sql(r, "DELETE FROM flow_records WHERE rowid % 2 = 0"),
                           (0, 0, 2), "the manifest counted"),
    "scorecard-deleted": (lambda r: (r / "scorecard.json").unlink(),
                          (0, 2, 0), "not scored yet"),
    "scorecard-garbage": (lambda r: (r / "scorecard.json").write_text("<html>oops</html>"),
                          (0, 2, 0), "scorecard is not valid JSON"),
    "scorecard-a-list": (lambda r: (r / "scorecard.json").write_text("[]"),
                         (0, 2, 0), "not a list"),
    "scorecard-steps-a-string": (lambda r: _scorecard(r, lambda c: c.update(steps="all")),
                                 (0, 2, 0), "'steps' must be"),
    "scorecard-ttd-a-string": (
        lambda r: _scorecard(r, lambda c: c["steps"][0].update(time_to_detect_s="fast")),
        (0, 2, 0), "time_to_detect_s"),
    "scorecard-of-another-run": (lambda r: _scorecard(r, lambda c: c.update(run_id="other")),
                                 (0, 2, 0), "of run 'other'"),
    "report-a-directory": (lambda r: ((r / "report.md").unlink(), (r / "report.md").mkdir()),
                           (2, 0, 0), "report.md: is a directory"),
    "run-folder-read-only": (_read_only, (2, 0, 0),
                             "cannot write into the run folder"),
}


def _digests(run: Path) -> dict:
    out = {}
    for name in OUTPUTS:
        p = run / name
        out[name] = hashlib.sha256(p.read_bytes()).hexdigest() \
            if p.is_file() and not p.is_symlink() else None
    return out


@pytest.fixture
def copy_of(drill_run, tmp_path):
    """A fresh copy of the shared drill's run folder per use (made writable again after)."""
    made = []

    def make(label: str) -> Path:
        dst = tmp_path / label / drill_run[0].name
        shutil.copytree(drill_run[0], dst, symlinks=True)
        made.append(dst)
        return dst
    yield make
    for d in made:
        subprocess.run(["chattr", "-i", str(d)], capture_output=True)


RESULTS: list[dict] = []          # every reader call, for the summary test at the end


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_a_damaged_run_folder_is_refused_in_one_line_or_recovered(name, copy_of):
    damage, expected, words = CORRUPTIONS[name]
    for reader, want in zip(READERS, expected):
        run = copy_of(f"{reader}")
        damage(run)
        before = _digests(run)
        code, out, err = run_cli(*READERS[reader](run))
        RESULTS.append({"corruption": name, "reader": reader, "exit": code,
                        "traceback": "Traceback" in err,
                        "silent": code != 0 and _digests(run) != before})
        where = f"{name} / {reader}: exit {code}\n{err[-2000:]}"
        assert "Traceback" not in err, where
        assert code == want, where
        lines = [x for x in err.strip().splitlines() if x.strip()]
        if code == 2:
            errors = [x for x in lines if x.startswith("error: ")]
            assert len(errors) == 1 and lines[-1] == errors[0], where
            assert all(x.startswith(("error: ", "note: ", "warning: ")) for x in lines), where
            assert words in errors[0], where
            assert _digests(run) == before, f"{where}\nthe previous result was changed"
            assert not [p for p in run.glob(".*.new-*")], "temporary files left behind"


def test_tampered_files_are_named_on_rescoring_and_by_drill_verify(copy_of):
    run = copy_of("tampered")
    assert run_cli("drill", "verify", run)[0] == 0
    pcap = _pcap(run)
    pcap.write_bytes(pcap.read_bytes()[:-5])
    (run / "pcaps" / "extra.pcap").write_bytes(pcap.read_bytes()[:24])
    code, out, err = run_cli("drill", "verify", run)
    assert code == 1, err
    assert "changed" in out and "extra" in out and "failed:" in err
    assert "2 of" in err and "1 changed" in err and "1 extra" in err
    code, out, err = run_cli("drill", "verify", run, "--json")
    states = {f["file"]: f["state"] for f in json.loads(out)["files"]}
    assert states[str(pcap.relative_to(run))] == "changed"
    assert states["pcaps/extra.pcap"] == "extra" and states["ledger.jsonl"] == "ok"
    code, out, err = run_cli(*READERS["score"](run))
    assert code == 0, err
    warned = [x for x in err.splitlines() if x.startswith("warning: ")]
    assert len(warned) == 2 and any(pcap.name in w and "changed" in w for w in warned), err
    (run / "ledger.jsonl").unlink()
    code, out, err = run_cli("drill", "verify", run)
    assert code == 1 and "missing" in out


def test_the_drill_sealed_its_ledger_and_captures(drill_run):
    run = drill_run[0]
    content = _manifest(run)["content"]
    files = content["files"]
    assert "ledger.jsonl" in files and any(f.startswith("pcaps/") for f in files)
    for rel, rec in files.items():
        data = (run / rel).read_bytes()
        assert rec == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def test_a_crash_midway_leaves_the_previous_result(copy_of, monkeypatch):
    from cyberrange.detect.registry import load_detectors
    from cyberrange.drill import analyse
    from cyberrange.run import Run
    run_dir = copy_of("crash")
    before = _digests(run_dir)
    manifest = (run_dir / "manifest.json").read_bytes()

    def crash(*a, **k):
        raise RuntimeError("the disk caught fire")
    monkeypatch.setattr("cyberrange.report.aar.render", crash)
    run = Run.open(str(run_dir))
    telemetry = json.dumps(run.manifest["telemetry"])
    with pytest.raises(RuntimeError):
        analyse(run, load_detectors(DETECTORS))
    assert _digests(run_dir) == before
    assert (run_dir / "manifest.json").read_bytes() == manifest
    assert json.dumps(run.manifest["telemetry"]) == telemetry
    assert not list(run_dir.glob(".*.new-*")) and not list(run_dir.glob(".*.wal"))


def test_a_folder_of_runs_skips_what_is_no_drill(copy_of, tmp_path):
    good = copy_of("folder")
    runs = good.parent
    verify = runs / "20990101-000000-fob-verify"
    shutil.copytree(good, verify)
    _set_manifest(verify, run_id=verify.name, kind="verify", status="done")
    (verify / "store.duckdb").unlink()
    twin = runs / "20990101-000001-fob-up"
    (twin / "pcaps").mkdir(parents=True)
    (twin / "manifest.json").write_text(json.dumps({"run_id": twin.name, "kind": "twin",
                                                    "status": "done"}))
    (runs / "notes").mkdir()
    code, out, err = run_cli(*READERS["eval"](runs))
    assert code == 0, err
    notes = [x for x in err.splitlines() if x.startswith("note: skipping")]
    assert len(notes) == 3 and "twin verify" in err and "cyberrange up" in err, err
    code, out, err = run_cli(*READERS["score"](runs))
    assert code == 0 and err.count("note: skipping") == 3, err
    assert not (verify / "store.duckdb").exists() and not (twin / "scorecard.json").exists()
    # the old hint of `detect eval` (score it) no longer turns a verification into a benign run
    for reader in ("score", "report"):
        code, out, err = run_cli(*READERS[reader](verify))
        assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
        assert "not a drill" in err
    code, out, err = run_cli(*READERS["eval"](verify))
    assert code == 2 and "nothing to evaluate" in err
    # 'latest' means the newest drill, not the newest folder
    code, out, err = run_cli("drill", "report", "latest", "--runs-dir", runs)
    assert code == 0, err


def test_summary_of_the_corruption_matrix():
    """The numbers for the closing note: corruptions x readers, outcomes, tracebacks, silent
    re-scores (runs last in this module: it reads what the matrix recorded)."""
    if not RESULTS:
        pytest.skip("the matrix did not run")
    corruptions = {r["corruption"] for r in RESULTS}
    by_exit: dict[int, int] = {}
    for r in RESULTS:
        by_exit[r["exit"]] = by_exit.get(r["exit"], 0) + 1
    print(f"\n{len(corruptions)} corruptions x 3 readers = {len(RESULTS)} reader calls; "
          f"exit codes {dict(sorted(by_exit.items()))}; tracebacks "
          f"{sum(r['traceback'] for r in RESULTS)}; silent re-scores "
          f"{sum(r['silent'] for r in RESULTS)}")
    assert len(corruptions) >= 20
    assert not any(r["traceback"] for r in RESULTS)
    assert not any(r["silent"] for r in RESULTS)

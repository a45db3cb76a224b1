"""A run is a folder ``runs/<run-id>/`` that holds everything one drill produced.

::

    runs/20261127-131502-fob-3fa1/
      manifest.json      inputs (with sha256), versions, seed, timings, warnings, counters
      config/            generated nftables rulesets, DNS hosts file, login accounts
      pcaps/<sensor>.pcap   (or pcaps/<sensor>/… when the sensor rotates its files)
      logs/              service, sensor and traffic-generator logs
      ledger.jsonl       ground truth: one record per attack step (score/ is its only reader)
      store.duckdb       packets, flows and alerts (ECS field names)
      scorecard.json     the score
      report.md          the after-action report

A run can be re-scored and re-reported without the twin (``cyberrange drill score RUN``).

A run folder outlives its drill and may be edited or damaged, so readers check it before they
trust it: ``Run.open`` the manifest, ``Run.ledger``, ``Run.check_captures``, ``Run.open_store``
and ``Run.scorecard`` what they name; each problem is one UserError naming the file. A drill
seals its ledger and captures (``Run.seal``: sha256 and size in ``manifest["content"]``) so
that ``Run.verify_content`` (``drill verify``) tells what changed since; ``Run.staged`` lets
``drill.analyse`` replace store, scorecard and report only once all of them are complete.
"""
from __future__ import annotations

import copy
import hashlib
import ipaddress
import json
import os
import platform
import re
import secrets
import shutil
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from cyberrange import __version__
from cyberrange.errors import UserError
from cyberrange.shapes import (
    NUM,
    file_kind,
    json_type,
    read_json_object,
    want,
    want_list_of_objects,
)

LEDGER = "ledger.jsonl"
SCOREABLE_KINDS = ("drill", "benign", "ingest")
OTHER_KINDS = {"twin": "a twin brought up with `cyberrange up`",
               "verify": "a `cyberrange twin verify` run"}
ANALYSIS_OUTPUTS = ("store.duckdb", "scorecard.json", "report.md")   # what analyse replaces
CAPTURE_MAGICS = (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4",      # pcap, either byte order,
                  b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d",      # microseconds or nanoseconds
                  b"\x0a\x0d\x0d\x0a")                            # pcapng
CAPTURE_NAME = re.compile(r"\.pcap(ng)?\d*$")     # <sensor>.pcap, rotated <sensor>-<t>.pcap3


def file_digest(path) -> dict:
    """``{"sha256", "size"}`` of a file, read in chunks (captures can be large)."""
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return {"sha256": h.hexdigest(), "size": size}


def sha256(path) -> str:
    return file_digest(path)["sha256"]


def _versions() -> dict:
    out = {"cyberrange": __version__, "python": platform.python_version(),
           "kernel": platform.release()}
    for mod in ("mininet", "scapy", "duckdb", "pyarrow", "networkx"):
        try:
            m = __import__(mod)
            out[mod] = getattr(m, "__version__", None) or getattr(m, "VERSION", None)
            if mod == "mininet":
                from mininet.net import VERSION
                out[mod] = VERSION
        except Exception:  # noqa: BLE001 - versions are informative only
            out[mod] = None
    return out


FINAL_STATUSES = ("done", "interrupted", "failed", "killed", "ingested")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
RESERVE = ".reserve"            # room kept free so the manifest can be finalised on a full disk
RESERVE_BYTES = 1 << 20
MIN_FREE_MB = int(os.environ.get("CYBERRANGE_MIN_FREE_MB", "64"))


def probe_runs_dir(runs_dir, min_free_mb: int | None = None) -> Path:
    """Check, before anything is built, that run folders can be written under ``runs_dir``
    and that it has room (a drill writes pcaps and a store); a one-line UserError if not."""
    p = Path(runs_dir)
    need = MIN_FREE_MB if min_free_mb is None else min_free_mb
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = p / f".probe-{os.getpid()}"
        try:
            with open(probe, "wb") as f:
                f.write(b"\0" * 65536)
                f.flush()
                os.fsync(f.fileno())
        finally:
            probe.unlink(missing_ok=True)
        free = shutil.disk_usage(p).free
    except OSError as e:
        raise UserError(f"cannot write run folders in {p}: {e.strerror or e}") from None
    if free < need << 20:
        raise UserError(f"{p}: only {free >> 20} MiB free; a run needs at least {need} MiB "
                        f"(pcaps, store; CYBERRANGE_MIN_FREE_MB sets the floor)")
    return p


STATUSES = ("running",) + FINAL_STATUSES


def _peek_kind(run_dir: Path) -> str | None:
    """A run folder's kind for picking 'latest'; None when its manifest cannot tell (it is
    then a candidate, and opening it says what is wrong)."""
    try:
        return Run(run_dir).kind
    except (UserError, OSError):
        return None


def _check_rel(rel: str, where: str) -> None:
    """A path the manifest names inside the run folder must stay inside it."""
    parts = Path(rel).parts
    if not rel or Path(rel).is_absolute() or ".." in parts:
        raise UserError(f"{where}: {rel!r} is not a path inside the run folder")


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def check_scorecard(card: dict, where: str) -> None:
    """A UserError naming scorecard.json and the field unless the fields the terminal report
    (``report/terminal.py``) prints have the types ``analyse`` writes."""
    want(card, "run_id", (str, None), where, required=False)
    for i, step in enumerate(want_list_of_objects(card, "steps", where, required=True)):
        sw = f"{where}: steps[{i}]"
        want(step, "step_id", (str,), sw)
        for key in ("technique", "outcome", "name"):
            want(step, key, (str, None), sw, required=False)
        want(step, "detected", (bool, None), sw, required=False)
        want(step, "time_to_detect_s", NUM + (None,), sw, required=False)
        want(step, "attack_flows", (int, None), sw, required=False)
        for who in want(step, "detected_by", (list, None), sw, required=False) or []:
            if not isinstance(who, str):
                raise UserError(f"{sw}: detected_by must hold strings, not {json_type(who)}")
    flows = want(card, "flows", (dict,), where)
    for key in ("total", "attack", "benign", "flagged", "flagged_attack", "flagged_benign"):
        want(flows, key, (int, None), f"{where}: flows", required=False)
    for key in ("precision", "recall"):
        want(flows, key, NUM + (None,), f"{where}: flows", required=False)
    alerts = want(card, "alerts", (dict,), where)
    for key in ("total", "true", "false"):
        want(alerts, key, (int, None), f"{where}: alerts", required=False)
    for name, row in (want(alerts, "by_detector", (dict, None), f"{where}: alerts",
                           required=False) or {}).items():
        if not isinstance(row, dict):
            raise UserError(f"{where}: alerts.by_detector[{name!r}] must be an object")
    rec = want(card, "reconciliation", (dict, None), where, required=False) or {}
    rw = f"{where}: reconciliation"
    want(rec, "zero_loss", (bool, None), rw, required=False)
    want(rec, "verdict", (str, None), rw, required=False)
    for i, row in enumerate(want_list_of_objects(rec, "per_sensor", rw)):
        want(row, "sensor", (str,), f"{rw}: per_sensor[{i}]")
        want(row, "kind", (str, None), f"{rw}: per_sensor[{i}]", required=False)
    es = want(rec, "es", (dict, None), rw, required=False) or {}
    for kind, row in (want(es, "per_kind", (dict, None), f"{rw}: es", required=False)
                      or {}).items():
        if not isinstance(row, dict):
            raise UserError(f"{rw}: es.per_kind[{kind!r}] must be an object")
    want(es, "stored", (dict, None), f"{rw}: es", required=False)
    run = want(card, "run", (dict, None), where, required=False) or {}
    want(run, "run_id", (str, None), f"{where}: run", required=False)
    want(run, "warnings", (list, None), f"{where}: run", required=False)
    for key in ("telemetry", "timings"):
        want(run, key, (dict, None), f"{where}: run", required=False)


class Run:
    def __init__(self, path: Path):
        self.dir = Path(path)
        self.id = self.dir.name
        self.manifest_path = self.dir / "manifest.json"
        self.manifest: dict = {}
        if self.manifest_path.exists() or self.manifest_path.is_symlink():
            self.manifest = read_json_object(self.manifest_path, "manifest")
            if isinstance(self.manifest.get("run_id"), str) and self.manifest["run_id"]:
                self.id = self.manifest["run_id"]      # what the ledger and the store say

    @classmethod
    def create(cls, runs_dir, label: str, inputs: dict[str, str], seed: int | None = None) -> "Run":
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        # absolute: services and sensors write into it from other namespaces and working dirs
        run_dir = Path(runs_dir).resolve() / f"{stamp}-{label}-{secrets.token_hex(2)}"
        try:
            run_dir.mkdir(parents=True)
            (run_dir / RESERVE).write_bytes(b"\0" * RESERVE_BYTES)
        except OSError as e:
            raise UserError(f"cannot make a run folder in {runs_dir}: {e.strerror or e}") from None
        run = cls(run_dir)
        run.manifest = {
            "run_id": run.id,
            "created": time.time(),
            "inputs": {k: {"path": str(v), "sha256": sha256(v)} for k, v in inputs.items() if v},
            "versions": _versions(),
            "seed": seed,
            "timings": {},
            "warnings": [],
            "status": "running",
        }
        run.save()
        return run

    @classmethod
    def open(cls, ref: str, runs_dir="runs", kinds: tuple[str, ...] | None = None) -> "Run":
        """A run by folder path, by id, or 'latest' (with ``kinds``: the newest run of one of
        those kinds). Its manifest is checked (``check_manifest``): a damaged one is a
        UserError naming the file, never a KeyError later."""
        p = Path(ref)
        if not p.is_dir():
            if ref == "latest":
                found = [q.parent for q in sorted(Path(runs_dir).glob("*/manifest.json"))]
                if kinds:
                    found = [q for q in found if _peek_kind(q) in kinds + (None,)]
                if not found:
                    what = f"no {' or '.join(kinds)} run" if kinds else "no run"
                    raise UserError(f"latest: {what} in {runs_dir}/")
                p = found[-1]
            else:
                p = Path(runs_dir) / ref
        manifest = p / "manifest.json"
        if not manifest.exists() and not manifest.is_symlink():
            raise UserError(f"no run at {ref} (looked for {manifest})")
        run = cls(p)
        run.check_manifest()
        return run

    def save(self) -> None:
        tmp = self.manifest_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.manifest, indent=2, default=str))
        tmp.replace(self.manifest_path)

    def finish(self, status: str, error: str | None = None) -> None:
        """Put the manifest in its final state (one of FINAL_STATUSES). On a full disk the
        reserve kept since ``create`` is freed first, so this write still succeeds."""
        assert status in FINAL_STATUSES, status
        self.manifest["status"] = status
        self.manifest["finished"] = time.time()
        if error:
            self.manifest["error"] = error
        try:
            self.save()
        except OSError:
            (self.dir / RESERVE).unlink(missing_ok=True)
            self.save()
        (self.dir / RESERVE).unlink(missing_ok=True)
        for hook in getattr(self, "finish_hooks", ()):
            hook()

    @property
    def ledger_path(self) -> Path:
        return self.dir / "ledger.jsonl"

    @property
    def store_path(self) -> Path:
        return self.dir / "store.duckdb"

    @property
    def scorecard_path(self) -> Path:
        return self.dir / "scorecard.json"

    @property
    def report_path(self) -> Path:
        return self.dir / "report.md"

    # ------------------------------------------------------------------ checks of what it holds
    @property
    def kind(self) -> str:
        """drill, benign, ingest (scoreable), twin or verify. Folders made before runs recorded
        their kind: a drill when the manifest names a playbook or the ledger has records."""
        kind = self.manifest.get("kind")
        if kind:
            return kind
        if "playbook" in self.manifest:
            return "drill" if self.manifest["playbook"] else "benign"
        has_ledger = self.ledger_path.is_file() and self.ledger_path.stat().st_size > 0
        return "drill" if has_ledger else "benign"

    def check_manifest(self) -> None:
        """A UserError naming manifest.json and the field, unless every field a reader uses
        has the type it should (required: run_id, status)."""
        m, where = self.manifest, str(self.manifest_path)
        if not want(m, "run_id", (str,), where).strip():
            raise UserError(f"{where}: 'run_id' is empty")
        status = want(m, "status", (str,), where)
        if status not in STATUSES:
            raise UserError(f"{where}: unknown status {status!r} (one of {', '.join(STATUSES)})")
        for key in ("kind", "topology", "playbook", "error"):
            want(m, key, (str, None), where, required=False)
        for key in ("created", "finished", "baseline_s", "baseline_end"):
            want(m, key, NUM + (None,), where, required=False)
        for key in ("seed", "benign_requests"):
            want(m, key, (int, None), where, required=False)
        for key in ("timings", "inputs", "versions", "telemetry", "detectors_stats", "twin",
                    "live"):
            want(m, key, (dict, None), where, required=False)
        for key in ("warnings", "detectors"):
            for i, item in enumerate(want(m, key, (list, None), where, required=False) or []):
                if not isinstance(item, str):
                    raise UserError(f"{where}: {key}[{i}] must be a string, not {json_type(item)}")
        for name, rec in (want(m, "sensors", (dict, None), where, required=False) or {}).items():
            sw = f"{where}: sensor {name!r}"
            if not isinstance(rec, dict):
                raise UserError(f"{sw} must be an object, not {json_type(rec)}")
            for key in ("captured", "received_by_filter", "dropped_by_kernel", "pcap_frames"):
                want(rec, key, (int, None), sw, required=False)
            want(rec, "kind", (str, None), sw, required=False)
            for i, fr in enumerate(want_list_of_objects(rec, "files", sw)):
                _check_rel(want(fr, "file", (str,), f"{sw}: files[{i}]"), f"{sw}: files[{i}]")
                for key in ("frames", "bytes"):
                    want(fr, key, (int, None), f"{sw}: files[{i}]", required=False)
            scope = want(rec, "scope", (dict, None), sw, required=False) or {}
            for key in ("ips", "cidrs", "nodes"):
                for item in want(scope, key, (list, None), f"{sw}: scope", required=False) or []:
                    if not isinstance(item, str):
                        raise UserError(f"{sw}: scope.{key} must hold strings, not "
                                        f"{json_type(item)}")
            for cidr in scope.get("cidrs") or []:
                try:
                    ipaddress.ip_network(cidr, strict=False)
                except ValueError:
                    raise UserError(f"{sw}: scope.cidrs: {cidr!r} is not a network") from None
        content = want(m, "content", (dict, None), where, required=False)
        if content is not None:
            files = want(content, "files", (dict,), f"{where}: content")
            for rel, rec in files.items():
                cw = f"{where}: content {rel!r}"
                _check_rel(rel, f"{where}: content")
                if not isinstance(rec, dict):
                    raise UserError(f"{cw} must be an object, not {json_type(rec)}")
                digest = want(rec, "sha256", (str,), cw)
                if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
                    raise UserError(f"{cw}: 'sha256' is not a sha256 hex digest")
                if want(rec, "size", (int,), cw) < 0:
                    raise UserError(f"{cw}: 'size' is negative")

    def not_a_drill(self) -> str | None:
        """Why the run is no drill to score or evaluate (a twin, a verification), or None."""
        kind = self.kind
        if kind in SCOREABLE_KINDS:
            return None
        what = OTHER_KINDS.get(kind, f"a run of kind {kind!r}")
        return f"{what} (kind {kind}), not a drill: there is nothing to score"

    def not_scoreable(self) -> str | None:
        """Why the run cannot be scored now (``not_a_drill``, or a drill still running), or
        None when it can."""
        if self.manifest.get("status") == "running":
            return ("the manifest says status 'running': the drill has not finished (if its "
                    "process died, `cyberrange down` finalises it)")
        return self.not_a_drill()

    def check_analysable(self) -> list[dict]:
        """Everything ``drill.analyse`` reads and replaces, checked before any work: the folder
        takes new files, the ledger (returned) and the captures are sound."""
        self.check_writable(*ANALYSIS_OUTPUTS)
        ledger = self.ledger()
        self.check_captures()
        return ledger

    def ledger(self) -> list[dict]:
        """The run's ground truth, checked: every record (``attack.ledger.read_ledger``), each of
        this run; and a drill whose manifest names a playbook has one -- a missing or empty
        ledger there is damage, never a benign run (unless the seal recorded it empty)."""
        from cyberrange.attack.ledger import read_ledger
        records = read_ledger(self.ledger_path)
        for n, rec in enumerate(records, 1):
            if rec.get("run_id") not in (None, self.id):
                raise UserError(f"record {n} (step {rec['step_id']!r}) is of run "
                                f"{rec['run_id']!r}, not of this run {self.id!r}",
                                file=str(self.ledger_path))
        playbook = self.manifest.get("playbook")
        if not records and playbook and self.kind == "drill":
            sealed = self.sealed().get(LEDGER)
            if not (sealed and sealed["size"] == 0):
                state = "empty" if self.ledger_path.exists() else "missing"
                raise UserError(
                    f"the ledger is {state}, but the manifest says the drill replayed playbook "
                    f"{playbook!r}: refusing to score its attack as benign traffic (restore "
                    f"ledger.jsonl; `cyberrange drill verify {self.dir}` lists what changed)",
                    file=str(self.ledger_path))
        return records

    def check_captures(self) -> None:
        """Every capture file the analysis reads is a regular, readable file (a directory, FIFO
        or dangling link where a capture should be is a UserError naming it), and some capture
        the manifest lists (a sensor's files, the seal) is left: with none, a re-score would
        find no traffic at all. One cut short, emptied or deleted is no error here: the
        reconciliation reports the frames it lost (``score/reconcile.py``), ``drill verify``
        and the warnings of ``drill score`` the change."""
        pdir = self.dir / "pcaps"
        listed: dict[str, int | None] = {}
        for rec in (self.manifest.get("sensors") or {}).values():
            for fr in rec.get("files") or []:
                listed[fr["file"]] = fr.get("frames")
        for rel in self.sealed():
            if rel.startswith("pcaps/"):
                listed.setdefault(rel, None)
        if (pdir.exists() or pdir.is_symlink()) and not pdir.is_dir():
            raise UserError(f"is {file_kind(pdir)}, not the folder of captures", file=str(pdir))
        gone = [rel for rel in listed
                if not (self.dir / rel).exists() and not (self.dir / rel).is_symlink()]
        if listed and len(gone) == len(listed):
            frames = sum(f or 0 for f in listed.values())
            raise UserError(f"none of the {len(listed)} capture files of the drill is left "
                            f"({frames} frames): there is no traffic to re-score (restore "
                            f"them; `cyberrange drill verify {self.dir}` lists what changed)",
                            file=str(pdir))
        if not pdir.is_dir():
            return
        look = {self.dir / rel for rel in listed if rel not in gone}
        for p in pdir.iterdir():
            if p.name.startswith("."):
                continue
            if CAPTURE_NAME.search(p.name):
                look.add(p)
            elif p.is_dir() and not p.is_symlink():      # a rotating sensor's folder
                look.update(f for f in p.iterdir()
                            if not f.name.startswith(".") and CAPTURE_NAME.search(f.name))
        for p in sorted(look):
            try:
                if not p.is_file():
                    raise UserError(f"is {file_kind(p)}, not a capture file", file=str(p))
                with open(p, "rb") as fh:
                    head = fh.read(4)
            except OSError as exc:
                raise UserError(f"cannot read the capture: {exc.strerror or exc}",
                                file=str(p)) from None
            if head and head not in CAPTURE_MAGICS:       # empty: cut short, reconciled
                raise UserError(f"not a pcap or pcapng file (magic {head.hex()})", file=str(p))

    def check_writable(self, *names: str) -> None:
        """Before a command replaces ``names`` in the run folder: the folder takes a new file (a
        read-only mount, ``chattr +i`` or a full disk fail here, before any work) and no name is
        a directory that a renamed file could not replace."""
        for name in names:
            p = self.dir / name
            if p.is_dir() and not p.is_symlink():
                raise UserError("is a directory, not a file this command can replace",
                                file=str(p))
        probe = self.dir / f".write-probe-{os.getpid()}"
        try:
            probe.write_bytes(b"\0" * 4096)
            probe.unlink()
        except OSError as exc:
            raise UserError(f"cannot write into the run folder ({exc.strerror or exc}); this "
                            f"command replaces {', '.join(names)} there", file=str(self.dir)
                            ) from None

    @contextmanager
    def staged(self, *names: str, manifest_keys: tuple[str, ...] = ()):
        """Temporary files beside ``names`` (a dict name -> path) that replace them only when
        the block ends without an exception: an error or a crash midway leaves the old files as
        they were, and the ``manifest_keys`` the block changed in memory get their old values
        back. Each rename is atomic; they happen one after the other at the end."""
        tmp = {n: self.dir / f".{n}.new-{os.getpid()}" for n in names}
        before = {k: copy.deepcopy(self.manifest[k]) for k in manifest_keys if k in self.manifest}

        def clean():
            for p in tmp.values():
                for q in (p, p.with_name(p.name + ".wal")):       # DuckDB's log beside a store
                    q.unlink(missing_ok=True)
        clean()
        for n in names:                 # what an analysis killed midway (SIGKILL) left behind
            for q in self.dir.glob(f".{n}.new-*"):
                pid = q.name.rsplit("-", 1)[-1].removesuffix(".wal")
                if pid.isdigit() and not _pid_alive(int(pid)):
                    q.unlink(missing_ok=True)
        try:
            yield tmp
        except BaseException:
            clean()
            for k in manifest_keys:
                old, now = before.get(k), self.manifest.get(k)
                if k not in before:
                    self.manifest.pop(k, None)
                elif isinstance(old, dict) and isinstance(now, dict):
                    now.clear()                 # in place: callers may hold the dict (timings)
                    now.update(old)
                else:
                    self.manifest[k] = old
            raise
        for name, p in tmp.items():
            if p.exists():
                os.replace(p, self.dir / name)

    def open_store(self, read_only: bool = True, need: tuple[str, ...] = ("packets", "flows")):
        """The run's DuckDB store, checked: it opens and the records of ``need`` can be read for
        this run, in the numbers the manifest counted (``telemetry``); otherwise one UserError
        naming store.duckdb and how to rebuild it."""
        import duckdb

        from cyberrange.store.duckdb_store import DuckDBStore
        p = self.store_path
        hint = f"rebuild it from the pcaps: cyberrange drill score {self.dir}"
        if not p.exists() and not p.is_symlink():
            raise UserError(f"the store is missing ({hint})", file=str(p))
        if not p.is_file():
            raise UserError(f"is {file_kind(p)}, not a DuckDB store ({hint})", file=str(p))
        try:
            store = DuckDBStore(p, read_only=read_only)
        except duckdb.Error as exc:
            raise UserError(f"not a readable DuckDB store ({_first_line(exc)}; {hint})",
                            file=str(p)) from None
        counted = self.manifest.get("telemetry") or {}
        try:
            for kind in need:
                n = store.count(kind, self.id)
                want_n = counted.get(kind)
                if isinstance(want_n, int) and not isinstance(want_n, bool) and n != want_n:
                    raise UserError(f"holds {n} {kind} records of run {self.id}, the manifest "
                                    f"counted {want_n} ({hint})", file=str(p))
        except duckdb.Error as exc:
            store.close()
            raise UserError(f"the {kind} records cannot be read ({_first_line(exc)}; {hint})",
                            file=str(p)) from None
        except UserError:
            store.close()
            raise
        return store

    def scorecard(self) -> dict:
        """scorecard.json, checked for the fields the terminal report prints, and of this run."""
        p = self.scorecard_path
        if not p.exists() and not p.is_symlink():
            raise UserError(f"{self.dir}: not scored yet (cyberrange drill score {self.dir})")
        card = read_json_object(p, "scorecard")
        check_scorecard(card, str(p))
        for rid in (card.get("run_id"), (card.get("run") or {}).get("run_id")):
            if rid is not None and rid != self.id:
                raise UserError(f"is the scorecard of run {rid!r}, not of this run {self.id!r}",
                                file=str(p))
        return card

    # ------------------------------------------------------------------ the seal
    def content_files(self) -> list[str]:
        """What the seal covers, relative to the run folder: ledger.jsonl and every capture file
        under pcaps/ (hidden files, such as joined streams being written, left out)."""
        out = [LEDGER] if self.ledger_path.is_file() else []
        pdir = self.dir / "pcaps"
        if pdir.is_dir():
            for p in sorted(pdir.rglob("*")):
                rel = p.relative_to(self.dir)
                if not any(part.startswith(".") for part in rel.parts) and p.is_file():
                    out.append(rel.as_posix())
        return out

    def sealed(self) -> dict[str, dict]:
        """The seal's files (``{rel: {sha256, size}}``); {} for a run never sealed."""
        return ((self.manifest.get("content") or {}).get("files")) or {}

    def seal(self) -> dict:
        """Record sha256 and size of the ledger and of every capture into
        ``manifest["content"]`` (and save the manifest): ``verify_content`` then tells any
        later change, which ``drill score`` warns about and ``drill verify`` reports."""
        files = {rel: file_digest(self.dir / rel) for rel in self.content_files()}
        self.manifest["content"] = {"algorithm": "sha256", "sealed": time.time(),
                                    "files": files}
        self.save()
        return self.manifest["content"]

    def verify_content(self, only: tuple[str, ...] | None = None) -> list[dict]:
        """Each sealed file against its hash, and the files that came after the seal:
        ``[{file, state: ok|changed|missing|extra, detail}]`` (``only``: just those files).
        A run without a seal is a UserError: there is nothing to compare with."""
        sealed = self.sealed()
        if not sealed and "content" not in self.manifest:
            raise UserError("no content hashes in the manifest: the run was never sealed (a "
                            "drill seals its ledger and pcaps when it ends; older runs, ingested "
                            "captures and twin runs have no seal)", file=str(self.manifest_path))
        rows = []
        for rel in sorted(set(sealed) | set(self.content_files())):
            if only is not None and rel not in only:
                continue
            p, rec = self.dir / rel, sealed.get(rel)
            if rec is None:
                rows.append({"file": rel, "state": "extra", "detail": "not in the seal"})
            elif not p.exists() and not p.is_symlink():
                rows.append({"file": rel, "state": "missing",
                             "detail": f"sealed with {rec['size']} bytes"})
            elif not p.is_file():
                rows.append({"file": rel, "state": "changed", "detail": f"now {file_kind(p)}"})
            else:
                now = file_digest(p)
                if now["size"] != rec["size"]:
                    detail = f"{rec['size']} bytes sealed, {now['size']} now"
                elif now["sha256"] != rec["sha256"]:
                    detail = f"same size ({now['size']} bytes), different content"
                else:
                    rows.append({"file": rel, "state": "ok", "detail": rec["sha256"][:16]})
                    continue
                rows.append({"file": rel, "state": "changed", "detail": detail})
        return rows

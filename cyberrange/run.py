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
and ``Run.scorecard`` what they name; each problem is one UserError naming the file (the field
checks are in ``run_checks.py``). A drill seals its ledger and captures (``Run.seal``: sha256
and size in ``manifest["content"]``) so that ``Run.verify_content`` (``drill verify``) tells
what changed since; ``Run.staged`` lets ``drill.analyse`` replace store, scorecard and report
only once all of them are complete.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import platform
import secrets
import shutil
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from cyberrange import __version__
from cyberrange.errors import UserError
from cyberrange.run_checks import check_captures, check_manifest, check_scorecard
from cyberrange.shapes import file_kind, read_json_object

LEDGER = "ledger.jsonl"
SEALED_LOGS = ("actions.jsonl", "availability.jsonl")   # the blue score reads them
SCOREABLE_KINDS = ("drill", "benign", "ingest")
OTHER_KINDS = {"twin": "a twin brought up with `cyberrange up`",
               "verify": "a `cyberrange twin verify` run"}
ANALYSIS_OUTPUTS = ("store.duckdb", "scorecard.json", "report.md")   # what analyse replaces


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
    from importlib.metadata import PackageNotFoundError, version
    for mod in ("mininet", "scapy", "duckdb", "pyarrow", "networkx"):
        try:                 # from the package metadata: importing them is slow (scapy), and
            out[mod] = version(mod)     # mininet changes every later logger of the process
        except PackageNotFoundError:
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


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


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
        has the type it should (required: run_id, status); see ``run_checks.check_manifest``."""
        check_manifest(self.manifest, str(self.manifest_path), STATUSES)

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
        """Every capture file the analysis reads is a regular, readable capture, and some
        capture the manifest lists is left (``run_checks.check_captures``)."""
        check_captures(self.dir, self.manifest, self.sealed())

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
        """What the seal covers, relative to the run folder: ledger.jsonl, the defender's action
        log and the mission-availability probes (the blue score is computed from them) when the
        run has them, and every capture file under pcaps/ (hidden files, such as joined streams
        being written, left out)."""
        out = [rel for rel in (LEDGER, *SEALED_LOGS) if (self.dir / rel).is_file()]
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

"""What a run folder must hold before it is trusted: the checks behind ``Run``.

A run folder outlives its drill and may be edited or damaged, so ``Run.open`` checks the
manifest (``check_manifest``), ``Run.check_captures`` the captures (``check_captures``) and
``Run.scorecard`` the scorecard (``check_scorecard``) before any reader uses them: each problem
is one UserError naming the file and the field, never a KeyError or a traceback later.
``tests/drill/test_run_corruption.py`` damages a real drill's folder in 46 ways against them.
"""
from __future__ import annotations

import ipaddress
from pathlib import Path

from cyberrange.errors import UserError
from cyberrange.shapes import NUM, file_kind, json_type, want, want_list_of_objects
from cyberrange.telemetry.files import CAPTURE_MAGICS, CAPTURE_NAME

__all__ = ["check_captures", "check_manifest", "check_scorecard"]


def check_manifest(m: dict, where: str, statuses: tuple[str, ...]) -> None:
    """A UserError naming the manifest (``where``) and the field, unless every field a reader
    uses has the type it should (required: run_id, and status, one of ``statuses``)."""
    if not want(m, "run_id", (str,), where).strip():
        raise UserError(f"{where}: 'run_id' is empty")
    status = want(m, "status", (str,), where)
    if status not in statuses:
        raise UserError(f"{where}: unknown status {status!r} (one of {', '.join(statuses)})")
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


def check_captures(run_dir: Path, manifest: dict, sealed: dict) -> None:
    """Every capture file the analysis reads is a regular, readable file (a directory, FIFO
    or dangling link where a capture should be is a UserError naming it), and some capture
    the manifest lists (a sensor's files, the ``sealed`` files) is left: with none, a re-score
    would find no traffic at all. One cut short, emptied or deleted is no error here: the
    reconciliation reports the frames it lost (``score/reconcile.py``), ``drill verify``
    and the warnings of ``drill score`` the change."""
    pdir = run_dir / "pcaps"
    listed: dict[str, int | None] = {}
    for rec in (manifest.get("sensors") or {}).values():
        for fr in rec.get("files") or []:
            listed[fr["file"]] = fr.get("frames")
    for rel in sealed:
        if rel.startswith("pcaps/"):
            listed.setdefault(rel, None)
    if (pdir.exists() or pdir.is_symlink()) and not pdir.is_dir():
        raise UserError(f"is {file_kind(pdir)}, not the folder of captures", file=str(pdir))
    gone = [rel for rel in listed
            if not (run_dir / rel).exists() and not (run_dir / rel).is_symlink()]
    if listed and len(gone) == len(listed):
        frames = sum(f or 0 for f in listed.values())
        raise UserError(f"none of the {len(listed)} capture files of the drill is left "
                        f"({frames} frames): there is no traffic to re-score (restore "
                        f"them; `cyberrange drill verify {run_dir}` lists what changed)",
                        file=str(pdir))
    if not pdir.is_dir():
        return
    look = {run_dir / rel for rel in listed if rel not in gone}
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


def _check_rel(rel: str, where: str) -> None:
    """A path the manifest names inside the run folder must stay inside it."""
    parts = Path(rel).parts
    if not rel or Path(rel).is_absolute() or ".." in parts:
        raise UserError(f"{where}: {rel!r} is not a path inside the run folder")

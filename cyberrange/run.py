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
"""
from __future__ import annotations

import hashlib
import json
import platform
import secrets
import time
from datetime import datetime, timezone
from pathlib import Path

from cyberrange import __version__
from cyberrange.errors import UserError


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


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


class Run:
    def __init__(self, path: Path):
        self.dir = Path(path)
        self.id = self.dir.name
        self.manifest_path = self.dir / "manifest.json"
        self.manifest: dict = {}
        if self.manifest_path.exists():
            self.manifest = json.loads(self.manifest_path.read_text())

    @classmethod
    def create(cls, runs_dir, label: str, inputs: dict[str, str], seed: int | None = None) -> "Run":
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        # absolute: services and sensors write into it from other namespaces and working dirs
        run_dir = Path(runs_dir).resolve() / f"{stamp}-{label}-{secrets.token_hex(2)}"
        run_dir.mkdir(parents=True)
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
    def open(cls, ref: str, runs_dir="runs") -> "Run":
        """A run by folder path, by id, or 'latest'."""
        p = Path(ref)
        if not p.is_dir():
            candidates = sorted(Path(runs_dir).glob("*/manifest.json"))
            if ref == "latest" and candidates:
                p = candidates[-1].parent
            else:
                p = Path(runs_dir) / ref
        if not (p / "manifest.json").exists():
            raise UserError(f"no run at {ref} (looked for {p}/manifest.json)")
        return cls(p)

    def save(self) -> None:
        tmp = self.manifest_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.manifest, indent=2, default=str))
        tmp.replace(self.manifest_path)

    @property
    def ledger_path(self) -> Path:
        return self.dir / "ledger.jsonl"

    @property
    def store_path(self) -> Path:
        return self.dir / "store.duckdb"

    @property
    def scorecard_path(self) -> Path:
        return self.dir / "scorecard.json"

"""How a service type is declared: its name in topologies, where it listens by default, its
weight on attack paths and how the twin starts it. Each module of ``cyberrange.services``
declares the spec of the type(s) it implements at its top, with these; ``services.registry``
gathers them. Importing this module imports nothing else of cyberrange.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

#: the attack-path cost of a service type that states none (see ``ServiceSpec.weight``)
DEFAULT_WEIGHT = 3


@dataclass(frozen=True)
class Launch:
    """What the twin knows when it starts one service entry of one host."""
    node: str                   # the host's name in the topology
    ip: str                     # the host's first address
    service: Any                # the model's ``Service`` (type, port, proto, banner, accounts, ...)
    topology: Any               # the model's ``Topology`` (its domain, every node's address)
    run_dir: Path               # the run folder; files the service reads go to ``config/``
    log: Path                   # the service's own log file (``logs/<node>-<type>-<port>.log``)

    def serve(self, module: str, *args: str) -> list[str]:
        """``python -m cyberrange.services.<module> --port P --log L args...`` (this
        interpreter; the options of ``ServiceSpec.arguments``)."""
        return [sys.executable, "-m", f"cyberrange.services.{module}",
                "--port", str(self.service.port), "--log", str(self.log), *args]

    def config(self, name: str, text: str) -> Path:
        """Write ``config/<name>`` of the run folder; its path."""
        path = self.run_dir / "config" / name
        path.write_text(text)
        return path

    def accounts_file(self) -> Path:
        """The entry's accounts as the JSON file the login and SSH servers read."""
        svc = self.service
        return self.config(f"{self.node}-{svc.type}-{svc.port}.json", json.dumps(
            [{"user": a.user, "password": a.password} for a in svc.accounts]))


@dataclass(frozen=True)
class ServiceSpec:
    type: str                   # the name a topology writes in ``services: [{type: ...}]``
    port: int                   # where it listens unless the entry says (docs, generated files)
    argv: Callable[[Launch], list[str]]   # the command that starts it in the host's namespace
    proto: str = "tcp"          # the entry's ``proto`` when it gives none
    weight: int = DEFAULT_WEIGHT   # attack paths: cost of a hop through it (lower: easier)
    summary: str = ""           # one line for docs and listings

    def arguments(self, description: str | None = None) -> argparse.ArgumentParser:
        """The options every service program takes: ``--port`` (this spec's port unless given),
        ``--bind`` and ``--log``; the program adds its own."""
        ap = argparse.ArgumentParser(prog=f"python -m {self.argv.__module__}",
                                     description=description)
        ap.add_argument("--port", type=int, default=self.port,
                        help=f"{self.proto.upper()} port to listen on (default {self.port})")
        ap.add_argument("--bind", default="0.0.0.0", help="address to bind")
        ap.add_argument("--log", default=None, help="append one JSON line per request here")
        return ap

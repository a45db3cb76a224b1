"""What a long-running command tells its user while it works: the progress protocol.

Library code (drills, attack runs, twin sessions) calls these methods and never prints
itself; the CLI passes a rich display (``cli/drill.py``'s ``RichUI``), tests and scripts pass
``NullUI`` or a subclass that records what it is told.
"""
from __future__ import annotations

import sys


class NullUI:
    """Says nothing, except warnings (to stderr)."""

    def run_started(self, run, topo, pb):
        """A run folder exists: ``run``; its topology and playbook (``pb`` may be None)."""

    def phase(self, name: str, text: str):
        """A phase began (``twin``, ``benign``, ``attack``, ``teardown``, ...): one line."""

    def attack_event(self, kind: str, payload):
        """``("step_start", {...})`` / ``("step_end", ledger record)`` from the runner."""

    def warn(self, msg: str):
        print(f"warning: {msg}", file=sys.stderr)

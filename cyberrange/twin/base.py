"""What the rest of the engine needs from a running twin: a way to run a program in a node.

The twin implements it by starting the program inside the node's named namespace
(``twin/netns.py``); tests that make their own namespaces implement it with ``ip netns exec``.
"""
from __future__ import annotations

import subprocess
from typing import Protocol


class NodeRunner(Protocol):
    def popen(self, node: str, argv: list[str], **kwargs) -> subprocess.Popen:
        """Start ``argv`` inside ``node``'s network namespace; kwargs go to subprocess.Popen."""
        ...


class NetnsRunner:
    """NodeRunner over named namespaces made with ``ip netns add`` (used by tests)."""

    def __init__(self, mapping: dict[str, str]):
        self.mapping = mapping          # node name -> namespace name

    def popen(self, node: str, argv: list[str], **kwargs) -> subprocess.Popen:
        return subprocess.Popen(["ip", "netns", "exec", self.mapping[node], *argv], **kwargs)

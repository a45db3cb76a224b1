"""One place that makes rich consoles for the commands."""
from __future__ import annotations

from rich.console import Console


def make_console(stderr: bool = False) -> Console:
    """A console; when output is not a terminal (logs, CI) tables get 120 columns, not 80."""
    c = Console(stderr=stderr)
    if not c.is_terminal:
        c = Console(stderr=stderr, width=120)
    return c

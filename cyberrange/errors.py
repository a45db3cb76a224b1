"""Errors that reach the user as one line, never as a traceback.

``UserError`` means bad input (exit 2); ``CheckFailed`` means a check or gate failed (exit 1).
"""
from __future__ import annotations


class UserError(Exception):
    """Bad input from the user: a file, a flag, a reference. The CLI prints it and exits 2."""

    exit_code = 2

    def __init__(self, message: str, file: str | None = None, line: int | None = None,
                 col: int | None = None):
        self.message = message
        self.file = file
        self.line = line
        self.col = col
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.file and self.line:
            return f"{self.file}:{self.line}:{self.col or 1}: {self.message}"
        if self.file:
            return f"{self.file}: {self.message}"
        return self.message


class ContainmentError(UserError):
    """A target lies outside the twin; nothing was sent."""


class CheckFailed(Exception):
    """A check or gate failed; the CLI exits 1."""

    exit_code = 1


class EnvironmentProblem(Exception):
    """The machine lacks something the twin needs (root, mininet, tcpdump, nft). Exit 2."""

    exit_code = 2

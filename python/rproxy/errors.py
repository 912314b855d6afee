"""Exceptions rproxy raises to its users."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["ConfigError", "ConfigIssue", "RproxyError"]


class RproxyError(Exception):
    """Base class of rproxy's own errors."""


@dataclass(frozen=True, order=True)
class ConfigIssue:
    """One problem in a configuration file, with where it is."""

    line: int
    col: int
    file: str
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{self.file}:{self.line}:{self.col}: error: {where}{self.message}"


def _order(issue: ConfigIssue) -> tuple[object, ...]:
    """Issues by place; at one place (problems inside a file the key names),
    by their messages with numbers compared as numbers ("f:9:" before "f:10:")."""
    message = tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", issue.message)
    )
    return (issue.line, issue.col, issue.file, issue.path, message)


class ConfigError(RproxyError):
    """A configuration was rejected; ``issues`` lists every problem found.

    A plugin rejects its table with ``ConfigError("message")``, or
    ``ConfigError("message", key="name")`` to point at one of its keys; rproxy
    adds the file and line.
    """

    def __init__(self, issues: list[ConfigIssue] | str, key: str | None = None) -> None:
        if isinstance(issues, str):
            issues = [ConfigIssue(0, 0, "", key or "", issues)]
        self.issues = sorted(issues, key=_order)
        super().__init__("\n".join(str(i) for i in self.issues))

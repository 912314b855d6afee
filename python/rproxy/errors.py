"""Exceptions rproxy raises to its users."""

from __future__ import annotations

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


class ConfigError(RproxyError):
    """A configuration was rejected; ``issues`` lists every problem found.

    A plugin rejects its table with ``ConfigError("message")``, or
    ``ConfigError("message", key="name")`` to point at one of its keys; rproxy
    adds the file and line.
    """

    def __init__(self, issues: list[ConfigIssue] | str, key: str | None = None) -> None:
        if isinstance(issues, str):
            issues = [ConfigIssue(0, 0, "", key or "", issues)]
        self.issues = sorted(issues)
        super().__init__("\n".join(str(i) for i in self.issues))

"""Hook statistics of a running proxy: where workers write them, and how
``rproxy hooks --stats`` reads and shows them.

Each worker writes its counters every second to ``worker-PID.json`` in a
directory derived from the configuration file and its listen addresses, so
the command can find the workers of a proxy from its configuration alone.
The files are plain JSON, ready to be exported as metrics.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rproxy.config import Config

__all__ = ["StepTotals", "format_stats", "read_stats", "stats_dir"]


def stats_dir(config: Config) -> Path:
    """Where the workers of ``config`` write their statistics."""
    key = f"{config.path.resolve()}|{','.join(str(a) for a in config.server.listen)}"
    digest = hashlib.sha1(key.encode(), usedforsecurity=False).hexdigest()[:12]
    base = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir())
    return base / f"rproxy-{os.getuid()}" / digest


@dataclass
class StepTotals:
    """Counters of one (hook, plugin) step, summed over workers."""

    hook: str
    plugin: str
    calls: int = 0
    errors: int = 0
    total_ns: int = 0
    histogram: list[int] | None = None

    def add(self, step: dict[str, Any]) -> None:
        self.calls += step["calls"]
        self.errors += step["errors"]
        self.total_ns += step["total_ns"]
        hist = step["histogram"]
        self.histogram = [a + b for a, b in zip(self.histogram or [0] * len(hist), hist, strict=True)]

    def quantile_us(self, q: float) -> float:
        """Upper bound, in microseconds, of the bucket holding quantile ``q``."""
        hist = self.histogram or []
        total = sum(hist)
        if not total:
            return 0.0
        seen = 0
        for i, n in enumerate(hist):
            seen += n
            if seen >= q * total:
                return float(2**i)
        return float(2 ** len(hist))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_stats(directory: Path) -> tuple[list[StepTotals], int]:
    """Sum the statistics of the live workers in ``directory``; returns the
    totals and how many workers reported."""
    totals: dict[tuple[str, str], StepTotals] = {}
    workers = 0
    for path in sorted(directory.glob("worker-*.json")):
        try:
            snapshot = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not _alive(int(snapshot.get("pid", 0))):
            continue
        workers += 1
        for step in snapshot["steps"]:
            key = (step["hook"], step["plugin"])
            totals.setdefault(key, StepTotals(*key)).add(step)
    return list(totals.values()), workers


def format_stats(totals: Iterable[StepTotals], workers: int) -> str:
    rows = [
        f"{workers} worker(s) reporting",
        "",
        f"{'hook':<26} {'plugin':<18} {'calls':>10} {'errors':>8} {'mean µs':>9} {'p50 µs':>8} {'p99 µs':>8}",
    ]
    for t in sorted(totals, key=lambda t: (t.hook, t.plugin)):
        mean = t.total_ns / t.calls / 1000 if t.calls else 0.0
        p50 = f"<{t.quantile_us(0.5):g}" if t.calls else "-"
        p99 = f"<{t.quantile_us(0.99):g}" if t.calls else "-"
        rows.append(f"{t.hook:<26} {t.plugin:<18} {t.calls:>10} {t.errors:>8} {mean:>9.1f} {p50:>8} {p99:>8}")
    if len(rows) == 3:
        rows.append("(no hook has run yet)")
    return "\n".join(rows)

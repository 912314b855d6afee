"""Statistics of a running proxy: where workers write them, and how
``rproxy hooks --stats`` (hook steps) and ``rproxy upstreams`` (pools and
their servers) read and show them.

Each worker writes its counters every second to ``worker-PID.json`` in a
directory derived from the configuration file and its listen addresses, so
the commands can find the workers of a proxy from its configuration alone.
The files are plain JSON, ready to be exported as metrics: ``{"pid": ...,
"steps": [...], "upstreams": [...]}``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rproxy.config import Config

__all__ = [
    "PoolTotals",
    "ServerTotals",
    "StepTotals",
    "format_stats",
    "format_upstreams",
    "read_stats",
    "read_upstreams",
    "stats_dir",
]


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


def _snapshots(directory: Path) -> list[dict[str, Any]]:
    """The statistics files of the live workers in ``directory``, by file name."""
    out = []
    for path in sorted(directory.glob("worker-*.json")):
        try:
            snapshot = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(snapshot, dict) and _alive(int(snapshot.get("pid", 0))):
            out.append(snapshot)
    return out


def read_stats(directory: Path) -> tuple[list[StepTotals], int]:
    """Sum the statistics of the live workers in ``directory``; returns the
    totals and how many workers reported."""
    totals: dict[tuple[str, str], StepTotals] = {}
    snapshots = _snapshots(directory)
    for snapshot in snapshots:
        for step in snapshot.get("steps", []):
            key = (step["hook"], step["plugin"])
            totals.setdefault(key, StepTotals(*key)).add(step)
    return list(totals.values()), len(snapshots)


@dataclass
class ServerTotals:
    """One server of a pool, its counters summed over workers; ``states``
    and ``ramps`` are each worker's view, in worker order."""

    address: str
    weight: int = 1
    backup: bool = False
    states: list[str] = field(default_factory=list)
    ramps: list[float] = field(default_factory=list)
    in_flight: int = 0
    requests: int = 0
    failures: int = 0
    ejections: int = 0

    def add(self, server: dict[str, Any]) -> None:
        if not self.states:  # the configuration's, the same in every worker
            self.weight = server.get("weight", self.weight)
            self.backup = server.get("backup", self.backup)
        self.states.append(str(server.get("state", "?")))
        self.ramps.append(float(server.get("ramp", 1.0)))
        self.in_flight += server.get("in_flight", 0)
        self.requests += server.get("requests", 0)
        self.failures += server.get("failures", 0)
        self.ejections += server.get("ejections", 0)

    @property
    def state(self) -> str:
        """``"up"`` when every worker agrees, else each worker's view: ``"up/ejected"``."""
        return self.states[0] if len(set(self.states)) == 1 else "/".join(self.states)


_POOL_COUNTERS = ("requests", "retries", "retries_refused", "overloaded", "in_flight", "pending")


@dataclass
class PoolTotals:
    """One pool's counters and servers, summed over workers."""

    pool: str
    requests: int = 0
    retries: int = 0
    retries_refused: int = 0
    overloaded: int = 0
    in_flight: int = 0
    pending: int = 0
    servers: dict[str, ServerTotals] = field(default_factory=dict)

    def add(self, pool: dict[str, Any]) -> None:
        for name in _POOL_COUNTERS:
            setattr(self, name, getattr(self, name) + pool.get(name, 0))
        for server in pool.get("servers", []):
            address = server["address"]
            self.servers.setdefault(address, ServerTotals(address)).add(server)


def read_upstreams(directory: Path) -> tuple[list[PoolTotals], int]:
    """Sum the pool statistics of the live workers in ``directory``;
    returns the pools (in the order the first worker lists them) and how
    many workers reported."""
    totals: dict[str, PoolTotals] = {}
    snapshots = _snapshots(directory)
    for snapshot in snapshots:
        for pool in snapshot.get("upstreams", []):
            totals.setdefault(pool["pool"], PoolTotals(pool["pool"])).add(pool)
    return list(totals.values()), len(snapshots)


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


def format_upstreams(pools: Iterable[PoolTotals], workers: int) -> str:
    """A table of each pool's servers: state (each worker's view when they
    differ), requests in flight, attempts sent and failed, ejections and the
    slow-start ramp (the lowest of the workers')."""
    rows = [f"{workers} worker(s) reporting"]
    for p in pools:
        rows += [
            "",
            f"pool {p.pool}: {p.requests} requests, {p.retries} retries ({p.retries_refused} refused by the "
            f"budget), {p.overloaded} overloaded, {p.in_flight} in flight, {p.pending} pending",
        ]
        names = [s.address + (" (backup)" if s.backup else "") for s in p.servers.values()]
        wide = max([len("server"), *map(len, names)])
        state = max([len("state"), *(len(s.state) for s in p.servers.values())])
        rows.append(
            f"  {'server':<{wide}}  {'weight':>6}  {'state':<{state}}  {'in flight':>9}  {'requests':>9}  "
            f"{'failures':>8}  {'ejections':>9}  {'ramp':>4}"
        )
        for name, s in zip(names, p.servers.values(), strict=True):
            rows.append(
                f"  {name:<{wide}}  {s.weight:>6}  {s.state:<{state}}  {s.in_flight:>9}  {s.requests:>9}  "
                f"{s.failures:>8}  {s.ejections:>9}  {min(s.ramps, default=1.0):>4.2f}"
            )
    if len(rows) == 1:
        rows += ["", "(no pool has reported yet)"]
    return "\n".join(rows)

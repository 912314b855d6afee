"""The hook plan: which plugin implementations run in each phase, in order.

Built once at start-up from ``pm.hook.<name>.get_hookimpls()``, in exactly
the order pluggy would call them (``tryfirst`` first, ``trylast`` last, the
most recently registered first within each), and handed to the engine,
which calls the functions directly on the request path. A phase with hook
wrappers keeps pluggy's own dispatch for that phase, so wrappers behave as
pluggy defines them.

Also here: the types hooks return (:class:`Route`) and receive
(:class:`ErrorInfo`, :class:`Candidate`), and the :class:`Runtime` the
engine uses to make them, to report a failing hook and to run
``async def`` hooks.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import os
import sys
import textwrap
import threading
import traceback
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rproxy.plugins import LoadedPlugins, where

if TYPE_CHECKING:
    from rproxy._engine import Response

__all__ = ["PHASES", "Candidate", "ErrorInfo", "Plan", "Route", "Runtime", "Step", "build_plan", "native"]

#: The per-request hooks, in the order a request meets them.
PHASES = (
    "rproxy_request_filter",
    "rproxy_cache_key",
    "rproxy_route",
    "rproxy_access",
    "rproxy_select_upstream",
    "rproxy_upstream_request",
    "rproxy_upstream_response",
    "rproxy_response",
    "rproxy_error",
    "rproxy_log",
)

#: Phases whose failing hook fails the request unless its plugin says ``on_error = "continue"``.
FAILS_CLOSED = frozenset(
    {"rproxy_request_filter", "rproxy_route", "rproxy_access", "rproxy_select_upstream", "rproxy_upstream_request"}
)


@dataclass(frozen=True)
class Route:
    """What ``rproxy_route`` returns: forward to the pool ``upstream``
    (optionally with a new ``path`` — path and query — or ``Host``), or
    answer with ``respond``. ``name`` names the route for later hooks
    (``request.route_name``) and header rules (``$route``); the name of a
    configured route also applies that route's header rules and CORS."""

    upstream: str | None = None
    path: str | None = None
    host: str | None = None
    respond: Response | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        if (self.upstream is None) == (self.respond is None):
            raise ValueError("a Route needs exactly one of upstream= or respond=")
        if self.path is not None and not self.path.startswith("/"):
            raise ValueError(f"Route path must start with '/', got {self.path!r}")


@dataclass(frozen=True)
class ErrorInfo:
    """A failed request: what went wrong (``kind``, e.g. ``UpstreamConnect``),
    who caused it (``downstream``, ``upstream``, ``plugin``, ``internal``),
    the status the client gets by default, and a message for logs."""

    kind: str
    source: str
    status: int
    message: str


class Candidate(str):
    """A server ``rproxy_select_upstream`` may choose: the string is its
    address, ``"host:port"`` (``"[::1]:9001"`` for IPv6), so it compares
    equal to that text and may be returned as it is. Read-only attributes:
    ``weight`` (configured, 1 to 100), ``backup``, ``in_flight`` (requests
    this worker has in progress on it now) and ``ramp`` (the slow-start
    factor, in (0, 1]; 1.0 when not ramping)."""

    __slots__ = ("_backup", "_in_flight", "_ramp", "_weight")

    _weight: int
    _backup: bool
    _in_flight: int
    _ramp: float

    def __new__(
        cls, address: str, weight: int = 1, backup: bool = False, in_flight: int = 0, ramp: float = 1.0
    ) -> Candidate:
        self = super().__new__(cls, address)
        self._weight = weight
        self._backup = backup
        self._in_flight = in_flight
        self._ramp = ramp
        return self

    @property
    def weight(self) -> int:
        return self._weight

    @property
    def backup(self) -> bool:
        return self._backup

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def ramp(self) -> float:
        return self._ramp

    def __repr__(self) -> str:
        return (
            f"Candidate({str(self)!r}, weight={self._weight}, backup={self._backup}, "
            f"in_flight={self._in_flight}, ramp={self._ramp})"
        )

    def __getnewargs__(self) -> tuple[str, int, bool, int, float]:  # type: ignore[override]
        return (str(self), self._weight, self._backup, self._in_flight, self._ramp)


def native(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark a built-in's reference implementation: the engine runs its own
    compiled form of ``name`` in its place."""

    def mark(func: Callable[..., Any]) -> Callable[..., Any]:
        func.__rproxy_native__ = name  # type: ignore[attr-defined]
        return func

    return mark


@dataclass(frozen=True)
class Step:
    """One plugin's implementation of one hook, as the engine calls it."""

    hook: str
    plugin: str
    function: Callable[..., Any]
    argnames: tuple[str, ...]
    is_async: bool
    fails_closed: bool
    timeout: float
    native: str | None
    dispatch: bool  # a pluggy hook caller (the phase has wrappers)
    file: str
    line: int


@dataclass
class Plan:
    """Every phase's steps, in call order, and the runtime they need."""

    steps: dict[str, list[Step]]
    runtime: Runtime
    plugins: LoadedPlugins = field(repr=False)

    def python_steps(self) -> int:
        """Steps that run Python on the request path (native ones do not)."""
        return sum(1 for steps in self.steps.values() for s in steps if s.native is None)


def build_plan(loaded: LoadedPlugins, native: bool = True) -> Plan:
    """The plan of ``loaded``, in pluggy's call order. With ``native=False``
    no step is native: the built-ins' Python reference implementations run
    in place of the engine's compiled forms."""
    config = loaded.config
    runtime = Runtime()
    steps: dict[str, list[Step]] = {}
    for hook in PHASES:
        caller = getattr(loaded.pm.hook, hook)
        impls = caller.get_hookimpls()
        if not impls:
            continue
        spec_args = tuple(caller.spec.argnames) if caller.spec else ()
        if any(i.hookwrapper or i.wrapper for i in impls):
            # Wrappers need pluggy's dispatch; the phase becomes one step.
            steps[hook] = [
                Step(
                    hook,
                    "+".join(i.plugin_name for i in reversed(impls)),
                    caller,
                    spec_args,
                    False,
                    hook in FAILS_CLOSED,
                    5.0,
                    None,
                    True,
                    "<pluggy>",
                    0,
                )
            ]
            continue
        out = []
        for impl in reversed(impls):  # pluggy calls the list from its end
            table = config.table(impl.plugin_name)
            fails_closed = hook in FAILS_CLOSED if table.on_error is None else table.on_error == "fail"
            file, line = where(impl.function)
            out.append(
                Step(
                    hook=hook,
                    plugin=impl.plugin_name,
                    function=impl.function,
                    argnames=tuple(impl.argnames),
                    is_async=inspect.iscoroutinefunction(impl.function),
                    fails_closed=fails_closed,
                    timeout=table.timeout,
                    native=getattr(impl.function, "__rproxy_native__", None) if native else None,
                    dispatch=False,
                    file=file,
                    line=line,
                )
            )
        steps[hook] = out
    return Plan(steps, runtime, loaded)


def _plugin_frames(tb: list[traceback.FrameSummary]) -> list[traceback.FrameSummary]:
    """The frames of a traceback that belong to plugins: not rproxy's, pluggy's or the standard library's."""
    skip = (str(Path(__file__).parent), os.path.dirname(inspect.getfile(inspect)))
    pluggy_dir = str(Path(sys.modules["pluggy"].__file__ or "").parent)
    kept = [f for f in tb if not f.filename.startswith((*skip, pluggy_dir))]
    return kept or tb


class Runtime:
    """What the engine needs from Python besides the hooks themselves."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- failures -------------------------------------------------------

    def report(self, plugin: str, hook: str, exc: BaseException) -> None:
        """Log one failure with a traceback trimmed to the plugin's frames."""
        lines = [f"rproxy[{os.getpid()}] error: plugin {plugin!r} failed in {hook}: {type(exc).__name__}: {exc}"]
        frames = _plugin_frames(traceback.extract_tb(exc.__traceback__))
        if exc.__traceback__ is not None and frames:
            lines.append("  Traceback (plugin frames, most recent call last):")
            lines += [textwrap.indent(entry.rstrip("\n"), "  ") for entry in traceback.format_list(frames)]
        print("\n".join(lines), file=sys.stderr, flush=True)

    # -- values the engine hands to hooks -------------------------------

    def error_info(self, kind: str, source: str, status: int, message: str) -> ErrorInfo:
        return ErrorInfo(kind, source, status, message)

    def route_for(self, pool: str | None, name: str | None = None) -> Route | None:
        return Route(upstream=pool, name=name) if pool is not None else None

    def candidates_for(self, pool: str, servers: list[tuple[str, int, bool, int, float]]) -> list[Candidate]:
        """The candidates of one attempt of a request to ``pool``, from
        ``(address, weight, backup, in_flight, ramp)`` tuples, in order."""
        return [Candidate(*server) for server in servers]

    # -- async hooks ----------------------------------------------------

    def loop(self) -> asyncio.AbstractEventLoop:
        """The asyncio loop thread of this process, started on first use."""
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="rproxy-hooks", daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def submit(
        self,
        coro: Coroutine[Any, Any, Any],
        plugin: str,
        hook: str,
        timeout: float,
        done: Callable[[concurrent.futures.Future[Any]], object] | None,
    ) -> concurrent.futures.Future[Any]:
        """Run ``coro`` on the loop thread under ``timeout``; failures are
        reported here; ``done(future)`` is called when it finishes."""

        async def run() -> Any:
            try:
                return await asyncio.wait_for(coro, timeout)
            except TimeoutError:
                raise TimeoutError(f"timed out after {timeout:g}s") from None
            except BaseException as e:
                self.report(plugin, hook, e)
                raise

        future = asyncio.run_coroutine_threadsafe(run(), self.loop())

        def finished(f: concurrent.futures.Future[Any]) -> None:
            if not f.cancelled() and isinstance(f.exception(), TimeoutError):
                self.report(plugin, hook, f.exception())  # type: ignore[arg-type]
            if done is not None:
                done(f)

        future.add_done_callback(finished)
        return future

    def close(self) -> None:
        """Stop the loop thread, if it was started."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=5)
            loop.close()

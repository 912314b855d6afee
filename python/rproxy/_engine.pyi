"""Type stubs for the compiled engine module (rust/src/python/)."""

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, final

__all__ = ["Completion", "Engine", "Headers", "Request", "Response", "_live_views", "check_regex", "version"]

_HeaderSource = Mapping[str, str] | Sequence[tuple[str, str]] | "Headers"

@final
class Engine:
    """An engine built from a validated configuration in JSON form, and a hook plan."""

    def __new__(cls, config_json: str, plan: Any | None = None) -> Engine: ...
    def start(self) -> list[str]:
        """Bind the listeners and serve on a background thread; returns the bound addresses."""
    def stop(self) -> None:
        """Stop accepting, drain in-flight requests, and wait for the engine."""
    def is_running(self) -> bool:
        """Whether a started engine is still serving."""
    def serve(self, on_ready: Callable[[list[str]], object]) -> None:
        """Serve in the foreground until SIGTERM or SIGINT, then drain."""
    def hook_stats(self) -> list[dict[str, Any]]:
        """Counters of every hook step."""
    def upstream_stats(self) -> list[dict[str, Any]]:
        """Every pool's statistics: requests, retries, limits and each server's state."""
    def cache_stats(self) -> dict[str, Any] | None:
        """The cache's figures (``bytes``, ``max_size``, ``keys``), or ``None`` without a cache."""

@final
class Request:
    """A request as hooks see it; valid only during a hook call of its request."""

    @staticmethod
    def _for_testing(
        method: str = "GET",
        target: str = "/",
        headers: _HeaderSource | None = None,
        client: str = "127.0.0.1:40000",
        scheme: str = "http",
        outbound: bool = False,
        *,
        outbound_target: str | None = None,
        outbound_host: str | None = None,
        route_name: str | None = None,
        pool: str | None = None,
        upstream: str | None = None,
        request_id: str | None = None,
    ) -> Request: ...
    def _set_routing_for_testing(
        self, route_name: str | None = None, pool: str | None = None, upstream: str | None = None
    ) -> None: ...
    @property
    def method(self) -> str: ...
    @property
    def path(self) -> str: ...
    @path.setter
    def path(self, value: str) -> None: ...
    @property
    def query(self) -> str | None: ...
    @property
    def scheme(self) -> str: ...
    @property
    def host(self) -> str | None: ...
    @property
    def client(self) -> str | None: ...
    @property
    def client_port(self) -> int | None: ...
    @property
    def version(self) -> str: ...
    @property
    def headers(self) -> Headers: ...
    @property
    def upstream_pool(self) -> str | None: ...
    @property
    def route_name(self) -> str | None: ...
    @property
    def id(self) -> str: ...
    @property
    def uri(self) -> str: ...
    @property
    def remote_addr(self) -> str | None: ...
    @property
    def route(self) -> Any: ...
    @property
    def upstream(self) -> str | None: ...
    @property
    def cache_key(self) -> str | bool | None: ...

@final
class Response:
    """A response: one a hook makes to answer, or the one on its way to the client."""

    def __new__(cls, status: int = 200, headers: _HeaderSource | None = None, body: bytes | str | None = None) -> Response: ...
    @property
    def status(self) -> int: ...
    @status.setter
    def status(self, value: int) -> None: ...
    @property
    def headers(self) -> Headers: ...
    @property
    def body(self) -> bytes | None: ...

@final
class Headers:
    """Header fields: case-insensitive names, several values per name."""

    def get(self, name: str, default: str | None = None) -> str | None: ...
    def get_all(self, name: str) -> list[str]: ...
    def set(self, name: str, value: str) -> None: ...
    def add(self, name: str, value: str) -> None: ...
    def remove(self, name: str) -> bool: ...
    def items(self) -> list[tuple[str, str]]: ...
    def keys(self) -> list[str]: ...
    def __getitem__(self, name: str, /) -> str: ...
    def __setitem__(self, name: str, value: str, /) -> None: ...
    def __delitem__(self, name: str, /) -> None: ...
    def __contains__(self, name: str, /) -> bool: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[str]: ...

@final
class Completion:
    """Delivers the result of an async hook to the engine."""

    def __call__(self, future: Any) -> None: ...

def check_regex(pattern: str) -> str | None:
    """Why the engine cannot compile ``pattern``, or ``None``."""

def version() -> str:
    """The engine's version."""

def _live_views() -> int:
    """How many Request, Response and Headers views are alive (to find leaks)."""

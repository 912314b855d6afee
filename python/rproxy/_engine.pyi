"""Type stubs for the compiled engine module (rust/src/python.rs)."""

from collections.abc import Callable
from typing import final

__all__ = ["Engine", "version"]

@final
class Engine:
    """An engine built from a validated configuration in JSON form."""

    def __new__(cls, config_json: str) -> Engine: ...
    def start(self) -> list[str]:
        """Bind the listeners and serve on a background thread; returns the bound addresses."""
    def stop(self) -> None:
        """Stop accepting, drain in-flight requests, and wait for the engine."""
    def is_running(self) -> bool:
        """Whether a started engine is still serving."""
    def serve(self, on_ready: Callable[[list[str]], object]) -> None:
        """Serve in the foreground until SIGTERM or SIGINT, then drain."""

def version() -> str:
    """The engine's version."""

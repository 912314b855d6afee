"""A scripted origin for the HTTP cache's tests.

Each target has a script: the answers to its successive requests (the last
one repeats). Every answer carries ``X-Served: N`` (the Nth request the
origin saw for that target) and, by default, the body ``#N``, so a test can
tell which response the cache handed out; the conditional fields the origin
received come back as ``X-Saw-If-None-Match`` / ``X-Saw-If-Modified-Since``.
Field values may be :class:`Ago` to send a date relative to the moment of
sending (a ``Date`` in the past makes a response old without sleeping).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.utils import formatdate

from rproxy.testing.origin import Origin, Received, Reply


def http_date(offset: float = 0.0) -> str:
    """An HTTP-date ``offset`` seconds after now (negative: in the past)."""
    return formatdate(time.time() + offset, usegmt=True)


@dataclass(frozen=True)
class Ago:
    """A field value: the HTTP-date ``seconds`` before the answer is sent
    (negative for a date in the future)."""

    seconds: float

    def render(self) -> str:
        return http_date(-self.seconds)


FieldValue = str | Ago


@dataclass(frozen=True)
class Answer:
    """One scripted response. ``body=None`` sends ``#N``; ``chunked``
    sends it without Content-Length, with ``trailers``."""

    status: int = 200
    headers: tuple[tuple[str, FieldValue], ...] = ()
    body: bytes | None = None
    chunked: bool = False
    trailers: tuple[tuple[str, str], ...] = ()
    echo: bool = True


CONDITIONALS = ("If-None-Match", "If-Modified-Since", "If-Match", "If-Unmodified-Since", "If-Range")


class CacheOrigin:
    """The scripted origin: ``script`` maps a target (path and query; ``*``
    for any other) to its answers. It counts requests per target and keeps
    them all (``.requests``, in arrival order)."""

    def __init__(self, script: Mapping[str, Sequence[Answer]] | None = None) -> None:
        self.script = {k: tuple(v) for k, v in (script or {}).items()}
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.down = False
        self.origin = Origin(self._handle)
        self.addr = self.origin.addr

    @property
    def requests(self) -> list[Received]:
        return self.origin.requests

    @property
    def total(self) -> int:
        return len(self.origin.requests)

    def close(self) -> None:
        """Stop listening and drop every connection: the proxy's next
        connection attempt is refused."""
        self.down = True
        self.origin.close()

    def __enter__(self) -> CacheOrigin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.origin.close()

    def answers(self, target: str) -> tuple[Answer, ...]:
        return self.script.get(target) or self.script.get("*") or (Answer(),)

    def _handle(self, req: Received) -> Reply:
        with self._lock:
            self.counts[req.target] += 1
            n = self.counts[req.target]
        answers = self.answers(req.target)
        answer = answers[min(n, len(answers)) - 1]
        return render(answer, req, n)


def render(answer: Answer, req: Received, n: int) -> Reply:
    """The origin's reply for ``answer`` as the ``n``th to ``req.target``."""
    headers = [(k, v.render() if isinstance(v, Ago) else v) for k, v in answer.headers]
    if not any(k.lower() == "content-type" for k, _ in headers):
        headers.append(("Content-Type", "text/plain"))
    headers.append(("X-Served", str(n)))
    if answer.echo:
        for name in CONDITIONALS:
            value = req.header(name)
            if value is not None:
                headers.append((f"X-Saw-{name}", value))
    body = f"#{n}".encode() if answer.body is None else answer.body
    if answer.chunked:
        half = len(body) // 2
        return Reply(answer.status, headers, iter([body[:half], body[half:]]), trailers=list(answer.trailers))
    return Reply(answer.status, headers, body)

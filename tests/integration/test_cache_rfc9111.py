"""The HTTP cache against RFC 9111 (with RFC 5861's stale-if-error and
stale-while-revalidate, and RFC 9211's Cache-Status), through the real
engine, natively and with the Python reference of the key (``native=False``).

One table: each case names the requirement it checks, the origin's scripted
answers, the client's requests and what each response must be, and how many
requests reached the origin (and with which conditional fields). Staleness
comes from a ``Date`` in the past, never from sleeping. Coalescing, the
memory bound, large objects and PURGE have tests of their own below.
"""

from __future__ import annotations

import base64
import socket
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from rproxy.engine import Engine
from rproxy.testing.origin import Origin, Received, Reply, Takeover

from conftest import StartProxy, proxy_config
from support.cache_origin import Ago, Answer, CacheOrigin, FieldValue
from support.client import Reader, Response, build, connect, request

NATIVE = pytest.mark.parametrize("native", [True, False], ids=["native", "reference"])

NAME = "rproxy"  # [cache] name: this cache's member of Cache-Status


def cache_config(
    addr: str, cache: Mapping[str, Any] | None = None, route: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """One pool, one caching route to it, the cache on; PURGE from 127.0.0.1."""
    config = proxy_config(addr, routes=[{"path_prefix": "/", "upstream": "app", "cache": True, **(route or {})}])
    config["cache"] = {"enabled": True, "purge_from": ["127.0.0.1"], **(cache or {})}
    return config


# --- Cache-Status (RFC 9211) -------------------------------------------------


def _members(value: str) -> list[str]:
    """The list members of a Cache-Status value (commas inside quotes kept)."""
    out, current, quoted = [], "", False
    for c in value:
        if c == '"':
            quoted = not quoted
        if c == "," and not quoted:
            out.append(current.strip())
            current = ""
        else:
            current += c
    out.append(current.strip())
    return [m for m in out if m]


def cache_status(resp: Response) -> tuple[list[str], list[str] | None]:
    """The members before this cache's, and this cache's parameters (None
    when it has no member: it must be the last one)."""
    values = resp.header_all("cache-status")
    members = _members(", ".join(values))
    if not members or members[-1].split(";")[0].strip() != NAME:
        return members, None
    return members[:-1], [p.strip() for p in members[-1].split(";")[1:]]


def param(params: list[str], name: str) -> str | None:
    for p in params:
        if p.split("=", 1)[0] == name:
            return p.split("=", 1)[1] if "=" in p else ""
    return None


# --- the table ---------------------------------------------------------------


@dataclass(frozen=True)
class Expect:
    """What one response must be. ``cs``: parameters this cache's
    Cache-Status member must have ("; "-separated; ``name=`` alone: present
    with any value); ``cs_not``: parameters it must not have;
    ``fields``: exact values (None: absent); ``served``: the ``X-Served``
    number (which origin answer it is); ``age``/``ttl``: inclusive ranges."""

    status: int | None = 200
    body: bytes | None = None
    served: int | None = None
    cs: str | None = None
    cs_not: tuple[str, ...] = ()
    cs_before: tuple[str, ...] | None = None
    fields: tuple[tuple[str, str | None], ...] = ()
    present: tuple[str, ...] = ()
    age: tuple[int, int] | None = None
    ttl: tuple[int, int] | None = None


@dataclass(frozen=True)
class Step:
    """One client request (on a new connection) and its expectation.
    ``origin_down`` stops the origin first (connections are refused)."""

    expect: Expect
    method: str = "GET"
    target: str = "/r"
    headers: tuple[tuple[str, str], ...] = ()
    host: str | None = "test.local"
    version: str = "HTTP/1.1"
    body: bytes = b""
    sleep: float = 0.0
    origin_down: bool = False


@dataclass(frozen=True)
class Case:
    """A requirement: the origin's script (target → answers, the last
    repeating), the steps, and the origin's request count at the end;
    ``origin_saw`` maps the origin's Nth request (1-based) to fields it
    must (or, None, must not) have had."""

    id: str
    rfc: str
    answers: Mapping[str, tuple[Answer, ...]]
    steps: tuple[Step, ...]
    origin_count: int
    origin_saw: Mapping[int, Mapping[str, str | None]] = field(default_factory=dict)
    route: Mapping[str, Any] = field(default_factory=dict)
    cache: Mapping[str, Any] = field(default_factory=dict)
    xfail: str | None = None


def ok(cc: str | None, *fields: tuple[str, FieldValue], status: int = 200, body: bytes | None = None) -> Answer:
    """An answer with ``Cache-Control: cc`` (None: none) and ``fields``."""
    head = ((("Cache-Control", cc),) if cc is not None else ()) + fields
    return Answer(status, head, body)


def get(expect: Expect, *headers: tuple[str, str], **kw: Any) -> Step:
    return Step(expect, headers=headers, **kw)


def R(*answers: Answer) -> dict[str, tuple[Answer, ...]]:
    """The script of the one target ``/r``."""
    return {"/r": answers}


ETAG = ("ETag", '"v1"')
LM = "Mon, 01 Jan 2024 00:00:00 GMT"
STALE = ("Date", Ago(120))  # with max-age=60: 60 s stale
NOW = ("Date", Ago(0))
NOT_MODIFIED = Answer(304, (ETAG, NOW, ("Cache-Control", "max-age=60")))
AUTH = ("Authorization", "Basic dTpw")

MISS_STORED = Expect(served=1, body=b"#1", cs="fwd=uri-miss; fwd-status=200; stored", fields=(("Age", None),))


def hit(n: int = 1, **kw: Any) -> Expect:
    """Served from the store: the origin's answer ``n``, with Age."""
    kw.setdefault("present", ("Age",))
    kw.setdefault("cs", "hit; ttl=")
    return Expect(served=n, **kw)


def miss(n: int, why: str | None = None, **kw: Any) -> Expect:
    """Forwarded to the origin (answer ``n``); not stored because ``why``
    (as Cache-Status' detail), or stored when ``why`` is None."""
    fwd = kw.pop("fwd", "uri-miss")
    status = kw.get("status", 200)
    if why is None:
        return Expect(served=n, cs=f"fwd={fwd}; fwd-status={status}; stored", **kw)
    return Expect(served=n, cs=f'fwd={fwd}; fwd-status={status}; detail="{why}"', cs_not=("stored",), **kw)


def revalidated(n: int = 2, status: int = 304, fwd: str = "stale", **kw: Any) -> Expect:
    """Forwarded to revalidate a stored response (``fwd``: "stale", or
    "request" when it was fresh but the request asked); the origin answered
    ``status``."""
    return Expect(served=n, cs=f"fwd={fwd}; fwd-status={status}", **kw)


INM_V1 = {"If-None-Match": '"v1"'}
NO_CC = ("Cache-Control", "no-cache")

CASES: list[Case] = [
    # ---- storing (§3) ----
    Case(
        "store-fresh-and-reuse",
        "RFC 9111 §3, §4 (a fresh stored response is reused; Age §5.1)",
        R(ok("max-age=60")),
        (get(MISS_STORED), get(hit(1, body=b"#1", age=(0, 2), ttl=(58, 60)))),
        1,
    ),
    Case(
        "no-store-response",
        "RFC 9111 §5.2.2.5 no-store (response)",
        R(ok("no-store, max-age=60")),
        (get(miss(1, "no-store")), get(miss(2, "no-store"))),
        2,
    ),
    Case(
        "no-store-request",
        "RFC 9111 §5.2.1.5 no-store (request)",
        R(ok("max-age=60")),
        (get(miss(1, "request no-store"), ("Cache-Control", "no-store")), get(miss(2)), get(hit(2))),
        2,
    ),
    Case(
        "private",
        "RFC 9111 §5.2.2.7 private (unqualified: a shared cache must not store)",
        R(ok("private, max-age=60")),
        (get(miss(1, "private")), get(miss(2, "private"))),
        2,
    ),
    Case(
        "private-fields",
        'RFC 9111 §5.2.2.7 private="field" (stored without the field)',
        R(ok('private="X-Secret", max-age=60', ("X-Secret", "s3"))),
        (get(miss(1, fields=(("X-Secret", "s3"),))), get(hit(1, fields=(("X-Secret", None),)))),
        1,
    ),
    Case(
        "authorization-not-stored",
        "RFC 9111 §3.5 (Authorization: not stored without public/s-maxage/must-revalidate)",
        R(ok("max-age=60")),
        (get(miss(1, "authorization"), AUTH), get(miss(2, "authorization"), AUTH)),
        2,
    ),
    Case(
        "authorization-public",
        "RFC 9111 §3.5 + §5.2.2.9 public",
        R(ok("public, max-age=60")),
        (get(miss(1), AUTH), get(hit(1), AUTH)),
        1,
    ),
    Case(
        "authorization-s-maxage",
        "RFC 9111 §3.5 + §5.2.2.10 s-maxage",
        R(ok("s-maxage=60")),
        (get(miss(1), AUTH), get(hit(1), AUTH)),
        1,
    ),
    Case(
        "authorization-must-revalidate",
        "RFC 9111 §3.5 + §5.2.2.2 must-revalidate",
        R(ok("must-revalidate, max-age=60")),
        (get(miss(1), AUTH), get(hit(1), AUTH)),
        1,
    ),
    Case(
        "authorization-not-served-a-plain-response",
        "RFC 9111 §3.5 (a request with Authorization is not answered by a response without public etc.)",
        R(ok("max-age=60")),
        (
            get(miss(1)),
            get(Expect(served=2, cs="fwd-status=200", cs_not=("hit", "stored")), AUTH),
            get(hit(1)),
        ),
        2,
    ),
    Case(
        "set-cookie-not-stored",
        "RFC 9111 §3 / §7 (rproxy policy: Set-Cookie stored only with public or s-maxage)",
        R(ok("max-age=60", ("Set-Cookie", "s=1"))),
        (get(miss(1, "set-cookie")), get(miss(2, "set-cookie"))),
        2,
    ),
    Case(
        "set-cookie-public",
        "RFC 9111 §3 (rproxy policy: Set-Cookie with public is stored)",
        R(ok("public, max-age=60", ("Set-Cookie", "s=1"))),
        (get(miss(1)), get(hit(1, fields=(("Set-Cookie", "s=1"),)))),
        1,
    ),
    Case(
        "set-cookie-s-maxage",
        "RFC 9111 §3 (rproxy policy: Set-Cookie with s-maxage is stored)",
        R(ok("s-maxage=60", ("Set-Cookie", "s=1"))),
        (get(miss(1)), get(hit(1, fields=(("Set-Cookie", "s=1"),)))),
        1,
    ),
    Case(
        "heuristic-last-modified",
        "RFC 9111 §4.2.2 (heuristic: 10% of Date - Last-Modified)",
        R(ok(None, NOW, ("Last-Modified", Ago(1000)))),
        (get(miss(1)), get(hit(1, ttl=(95, 100)))),
        1,
    ),
    Case(
        "heuristic-capped",
        "RFC 9111 §4.2.2 (heuristic lifetime at most [cache] heuristic_max)",
        R(ok(None, NOW, ("Last-Modified", Ago(100_000)))),
        (get(miss(1)), get(hit(1, ttl=(5, 10)))),
        1,
        cache={"heuristic_max": "10s"},
    ),
    Case(
        "heuristic-status-404",
        "RFC 9111 §4.2.2 + RFC 9110 §15.1 (404 is heuristically cacheable)",
        R(ok(None, NOW, ("Last-Modified", Ago(1000)), status=404)),
        (get(miss(1, status=404)), get(hit(1, status=404))),
        1,
    ),
    Case(
        "heuristic-without-last-modified",
        "RFC 9111 §4.2.2 (no explicit freshness, no Last-Modified: lifetime 0, no validator: not stored)",
        R(ok(None)),
        (get(miss(1, "stale at once")), get(miss(2, "stale at once"))),
        2,
    ),
    Case(
        "non-heuristic-status-without-freshness",
        "RFC 9111 §3 (302 without explicit freshness is not stored)",
        R(ok(None, NOW, ("Last-Modified", Ago(1000)), ("Location", "/x"), status=302)),
        (get(miss(1, "status", status=302)), get(miss(2, "status", status=302))),
        2,
    ),
    Case(
        "non-heuristic-status-with-max-age",
        "RFC 9111 §3 (302 with explicit freshness is stored)",
        R(ok("max-age=60", ("Location", "/x"), status=302)),
        (get(miss(1, status=302)), get(hit(1, status=302, fields=(("Location", "/x"),)))),
        1,
    ),
    Case(
        "route-cache-ttl",
        "RFC 9111 §4.2.2 (the route's cache_ttl stands in for the heuristic)",
        R(ok(None)),
        (get(miss(1)), get(hit(1, ttl=(58, 60)))),
        1,
        route={"cache_ttl": "60s"},
    ),
    Case(
        "route-cache-ttl-does-not-override-max-age",
        "RFC 9111 §4.2.1 (explicit freshness wins over cache_ttl)",
        R(ok("max-age=60")),
        (get(miss(1)), get(hit(1, ttl=(58, 60)))),
        1,
        route={"cache_ttl": "600s"},
    ),
    Case(
        "cache-ttl-not-for-errors",
        "RFC 9111 §4.2.2 (cache_ttl, like a heuristic, applies to heuristically cacheable statuses only)",
        R(ok(None, status=503), ok(None)),
        (get(miss(1, "status", status=503)), get(miss(2)), get(hit(2))),
        2,
        route={"cache_ttl": "600s"},
    ),
    Case(
        "cdn-cache-control-wins",
        "RFC 9213 §2 (CDN-Cache-Control replaces Cache-Control and Expires, when the cache obeys it)",
        R(ok("no-store", ("CDN-Cache-Control", "max-age=60"), ("Expires", "0"))),
        (get(miss(1)), get(hit(1, ttl=(58, 60)))),
        1,
        cache={"cdn_cache_control": True},
    ),
    Case(
        "cdn-cache-control-ignored-by-default",
        "RFC 9213 §2 (a cache not configured for it ignores CDN-Cache-Control)",
        R(ok("no-store", ("CDN-Cache-Control", "max-age=60"))),
        (get(miss(1, "no-store")), get(miss(2, "no-store"))),
        2,
    ),
    Case(
        "revalidate-304-cannot-make-private-shared",
        "RFC 9111 §3 + §4.3.4 (fields a 304 brings that forbid storing — private, a Set-Cookie — are not shared)",
        R(
            ok("max-age=0", ETAG),
            Answer(304, (ETAG, NOW, ("Cache-Control", "private, max-age=600"), ("Set-Cookie", "session=alice"))),
            ok("max-age=60"),
        ),
        (
            get(miss(1)),
            get(Expect(served=2, body=b"#1", cs='fwd=stale; fwd-status=304; detail="private"')),
            get(Expect(served=3, fields=(("Set-Cookie", None),), cs="fwd=uri-miss")),
        ),
        3,
    ),
    Case(
        "vary-on-a-field-the-proxy-sets",
        "RFC 9111 §4.1 (the origin varied on a field the proxy set: the client's value says nothing; not stored)",
        R(ok("max-age=60", ("Vary", "X-User"))),
        (
            get(miss(1, "vary on a field the proxy sets")),
            get(miss(2, "vary on a field the proxy sets"), ("X-User", "someone")),
        ),
        2,
        route={"request_headers": {"set": {"x-user": "$client_ip"}}},
    ),
    Case(
        "swr-respects-request-max-stale",
        "RFC 5861 §3 + RFC 9111 §5.2.1.1 (stale-while-revalidate does not serve staler than the request's max-stale)",
        R(ok("max-age=60, stale-while-revalidate=600", STALE)),
        (get(miss(1)), get(Expect(served=2, cs_not=("hit",)), ("Cache-Control", "max-stale=5"))),
        2,
    ),
    Case(
        "route-cache-false",
        "RFC 9211 §2 (no Cache-Status on a route that does not cache)",
        R(ok("max-age=60")),
        (get(Expect(served=1, fields=(("Cache-Status", None),))), get(Expect(served=2))),
        2,
        route={"cache": False},
    ),
    Case(
        "partial-206-not-stored",
        "RFC 9111 §3.3 (a cache that does not do ranges does not store 206)",
        R(ok("max-age=60", ("Content-Range", "bytes 0-1/10"), status=206)),
        (get(miss(1, "status", status=206)), get(miss(2, "status", status=206))),
        2,
    ),
    Case(
        "vary-star",
        "RFC 9111 §4.1 (Vary: * never matches: not stored)",
        R(ok("max-age=60", ("Vary", "*"))),
        (get(miss(1, "vary *")), get(miss(2, "vary *"))),
        2,
    ),
    Case(
        "must-understand-known-status",
        "RFC 9111 §5.2.2.3 must-understand (understood status: no-store ignored)",
        R(ok("must-understand, no-store, max-age=60")),
        (get(miss(1)), get(hit(1))),
        1,
    ),
    Case(
        "must-understand-unknown-status",
        "RFC 9111 §5.2.2.3 must-understand (status not understood: not stored)",
        R(ok("must-understand, no-store, max-age=60", status=418)),
        (get(miss(1, "must-understand", status=418)), get(miss(2, "must-understand", status=418))),
        2,
    ),
    Case(
        "head-not-stored",
        "RFC 9111 §3 (only GET responses are stored here)",
        R(ok("max-age=60")),
        (get(Expect(served=1, cs="fwd-status=200", cs_not=("stored",)), method="HEAD"), get(miss(2)), get(hit(2))),
        2,
    ),
    Case(
        "trailers-not-stored",
        "RFC 9111 §3 (rproxy: a response with trailers is not stored)",
        R(Answer(200, (("Cache-Control", "max-age=60"),), chunked=True, trailers=(("X-Checksum", "1"),))),
        (get(Expect(served=1, body=b"#1"), ("TE", "trailers")), get(Expect(served=2, cs_not=("hit",)))),
        2,
    ),
    Case(
        "no-host-not-cached",
        "RFC 9111 §4 (the key is the target URI: without a host there is none)",
        R(ok("max-age=60")),
        (
            get(Expect(served=1, cs="fwd=bypass"), host=None, version="HTTP/1.0"),
            get(Expect(served=2, cs="fwd=bypass"), host=None, version="HTTP/1.0"),
        ),
        2,
    ),
    # ---- freshness (§4.2.1) ----
    Case(
        "s-maxage-over-max-age",
        "RFC 9111 §5.2.2.10 s-maxage (wins over max-age in a shared cache)",
        R(ok("max-age=0, s-maxage=60")),
        (get(miss(1)), get(hit(1, ttl=(58, 60)))),
        1,
    ),
    Case(
        "s-maxage-zero-over-max-age",
        "RFC 9111 §5.2.2.10 s-maxage=0 (stale at once although max-age=60)",
        R(ok("max-age=60, s-maxage=0")),
        (get(miss(1, "stale at once")), get(miss(2, "stale at once"))),
        2,
    ),
    Case(
        "max-age-over-expires",
        "RFC 9111 §5.3 (Expires ignored when max-age is present)",
        R(ok("max-age=60", NOW, ("Expires", Ago(100)))),
        (get(miss(1)), get(hit(1, ttl=(58, 60)))),
        1,
    ),
    Case(
        "expires-minus-date",
        "RFC 9111 §4.2.1 (lifetime = Expires - Date, not Expires - now)",
        R(ok(None, ("Date", Ago(-1000)), ("Expires", Ago(-1060)))),
        (get(miss(1)), get(hit(1, ttl=(55, 61)))),
        1,
    ),
    Case(
        "expires-in-the-past",
        "RFC 9111 §5.3 (Expires before Date: stale at once)",
        R(ok(None, NOW, ("Expires", Ago(10)))),
        (get(miss(1, "stale at once")), get(miss(2, "stale at once"))),
        2,
    ),
    Case(
        "expires-invalid-zero",
        'RFC 9111 §5.3 (an invalid Expires such as "0" means already expired)',
        R(ok(None, NOW, ("Expires", "0"), ETAG), NOT_MODIFIED),
        (get(miss(1)), get(revalidated(body=b"#1"))),
        2,
        origin_saw={2: INM_V1},
    ),
    Case(
        "expires-repeated",
        "RFC 9111 §4.2.1 (a repeated Expires: treated as stale)",
        R(ok(None, NOW, ("Expires", Ago(-60)), ("Expires", Ago(-60)), ETAG), NOT_MODIFIED),
        (get(miss(1)), get(revalidated())),
        2,
        origin_saw={2: INM_V1},
    ),
    Case(
        "max-age-repeated",
        "RFC 9111 §4.2.1 (duplicate max-age: treated as stale)",
        R(ok("max-age=60, max-age=120", ETAG), NOT_MODIFIED),
        (get(miss(1)), get(revalidated())),
        2,
        origin_saw={2: INM_V1},
    ),
    Case(
        "max-age-negative",
        "RFC 9111 §1.2.2 delta-seconds (max-age=-1 is invalid: stale)",
        R(ok("max-age=-1", ETAG), NOT_MODIFIED),
        (get(miss(1)), get(revalidated())),
        2,
        origin_saw={2: INM_V1},
    ),
    Case(
        "max-age-overflow",
        "RFC 9111 §1.2.2 (delta-seconds above 2^31 are 2^31)",
        R(ok("max-age=99999999999999999999")),
        (get(miss(1)), get(hit(1, ttl=(2**31 - 2, 2**31)))),
        1,
    ),
    Case(
        "directives-case-insensitive",
        "RFC 9111 §5.2 (directive names compared case-insensitively)",
        R(ok("Max-Age=60")),
        (get(miss(1)), get(hit(1, ttl=(58, 60)))),
        1,
    ),
    Case(
        "directive-quoted-argument",
        "RFC 9111 §5.2 (recipients accept the quoted-string form of an argument)",
        R(ok('max-age="60"')),
        (get(miss(1)), get(hit(1, ttl=(58, 60)))),
        1,
    ),
    Case(
        "cache-control-split-lines",
        "RFC 9110 §5.3 + RFC 9111 §5.2 (Cache-Control field lines combine into one list)",
        R(ok("public", ("Cache-Control", "max-age=60"), ("Set-Cookie", "s=1"))),
        (get(miss(1)), get(hit(1, ttl=(58, 60)))),
        1,
    ),
    # ---- age (§4.2.3) ----
    Case(
        "age-from-upstream",
        "RFC 9111 §4.2.3 (the upstream's Age is part of the current age)",
        R(ok("max-age=60", ("Age", "30"))),
        (get(miss(1, fields=(("Age", "30"),))), get(hit(1, age=(30, 32), ttl=(28, 30)))),
        1,
    ),
    Case(
        "age-list-first-member",
        "RFC 9111 §5.1 (a list-valued Age: the first member is used)",
        R(ok("max-age=60", ("Age", "30, 40"))),
        (get(miss(1)), get(hit(1, age=(30, 32), ttl=(28, 30)))),
        1,
    ),
    Case(
        "age-invalid-ignored",
        "RFC 9111 §5.1 (an invalid Age is ignored)",
        R(ok("max-age=60", ("Age", "soon"))),
        (get(miss(1)), get(hit(1, age=(0, 2), ttl=(58, 60)))),
        1,
    ),
    Case(
        "age-from-upstream-makes-stale",
        "RFC 9111 §4.2.3 + §4.2 (Age 100 > max-age 60: stale)",
        R(ok("max-age=60", ("Age", "100"), ETAG), NOT_MODIFIED),
        (get(miss(1)), get(revalidated())),
        2,
        origin_saw={2: INM_V1},
    ),
    Case(
        "age-from-date",
        "RFC 9111 §4.2.3 (apparent age: response time - Date)",
        R(ok("max-age=60", ("Date", Ago(30)))),
        (get(miss(1)), get(hit(1, age=(30, 32), ttl=(28, 30)))),
        1,
    ),
    Case(
        "age-from-date-makes-stale",
        "RFC 9111 §4.2.3 + §4.2 (Date 120 s ago, max-age 60: stale)",
        R(ok("max-age=60", STALE, ETAG), NOT_MODIFIED),
        (get(miss(1)), get(revalidated())),
        2,
        origin_saw={2: INM_V1},
    ),
    Case(
        "age-grows-while-stored",
        "RFC 9111 §4.2.3 (resident time adds to the age)",
        R(ok("max-age=60")),
        (get(miss(1)), get(hit(1, age=(1, 3)), sleep=1.05)),
        1,
    ),
    # ---- Vary (§4.1) ----
    Case(
        "vary-match",
        "RFC 9111 §4.1 (same Vary field values: reused)",
        R(ok("max-age=60", ("Vary", "Accept-Encoding"))),
        (get(miss(1), ("Accept-Encoding", "gzip")), get(hit(1), ("Accept-Encoding", "gzip"))),
        1,
    ),
    Case(
        "vary-normalised",
        "RFC 9111 §4.1 (values normalised: whitespace, case of Accept-Encoding, lines joined)",
        R(ok("max-age=60", ("Vary", "Accept-Encoding"))),
        (
            get(miss(1), ("Accept-Encoding", "gzip, br")),
            get(hit(1), ("Accept-Encoding", "GZIP,br")),
            get(hit(1), ("Accept-Encoding", "gzip"), ("Accept-Encoding", "br")),
        ),
        1,
    ),
    Case(
        "vary-mismatch",
        "RFC 9111 §4.1 (other Vary field values: vary-miss, a second variant)",
        R(ok("max-age=60", ("Vary", "Accept-Encoding"))),
        (
            get(miss(1), ("Accept-Encoding", "gzip")),
            get(miss(2, fwd="vary-miss"), ("Accept-Encoding", "br")),
            get(hit(1), ("Accept-Encoding", "gzip")),
            get(hit(2), ("Accept-Encoding", "br")),
            get(miss(3, fwd="vary-miss")),
        ),
        3,
    ),
    # ---- request directives (§5.2.1) ----
    Case(
        "request-no-cache",
        "RFC 9111 §5.2.1.4 no-cache (request: revalidate a fresh response)",
        R(ok("max-age=60", ETAG), NOT_MODIFIED),
        (get(miss(1)), get(revalidated(body=b"#1", fwd="request"), NO_CC), get(hit(2))),
        2,
        origin_saw={1: {"If-None-Match": None}, 2: INM_V1},
    ),
    Case(
        "request-no-cache-cache-status",
        "RFC 9211 §2.2 fwd=request (a fresh response the request's directives did not allow)",
        R(ok("max-age=60", ETAG), NOT_MODIFIED),
        (get(miss(1)), get(Expect(served=2, cs="fwd=request; fwd-status=304"), NO_CC)),
        2,
    ),
    Case(
        "request-pragma-no-cache",
        "RFC 9111 §5.4 Pragma: no-cache (only without Cache-Control)",
        R(ok("max-age=60", ETAG), NOT_MODIFIED),
        (
            get(miss(1)),
            get(Expect(served=2, cs="fwd-status=304"), ("Pragma", "no-cache")),
            get(hit(2), ("Pragma", "no-cache"), ("Cache-Control", "max-age=3600")),
        ),
        2,
        origin_saw={2: INM_V1},
    ),
    Case(
        "request-max-age",
        "RFC 9111 §5.2.1.1 max-age (request: an older response is revalidated)",
        R(ok("max-age=60", ("Age", "5"), ETAG), NOT_MODIFIED),
        (
            get(miss(1)),
            get(hit(1, age=(5, 7)), ("Cache-Control", "max-age=10")),
            get(Expect(served=2, cs="fwd-status=304", body=b"#1"), ("Cache-Control", "max-age=0")),
        ),
        2,
        origin_saw={2: INM_V1},
    ),
    Case(
        "request-max-stale-any",
        "RFC 9111 §5.2.1.2 max-stale (no value: any staleness)",
        R(ok("max-age=60", STALE, ETAG)),
        (get(miss(1)), get(hit(1, ttl=(-62, -60)), ("Cache-Control", "max-stale"))),
        1,
    ),
    Case(
        "request-max-stale-within",
        "RFC 9111 §5.2.1.2 max-stale=N (60 s stale, N=100: served)",
        R(ok("max-age=60", STALE, ETAG)),
        (get(miss(1)), get(hit(1, ttl=(-62, -60)), ("Cache-Control", "max-stale=100"))),
        1,
    ),
    Case(
        "request-max-stale-exceeded",
        "RFC 9111 §5.2.1.2 max-stale=N (60 s stale, N=30: revalidated)",
        R(ok("max-age=60", STALE, ETAG), NOT_MODIFIED),
        (get(miss(1)), get(revalidated(), ("Cache-Control", "max-stale=30"))),
        2,
        origin_saw={2: INM_V1},
    ),
    Case(
        "request-max-stale-vs-must-revalidate",
        "RFC 9111 §5.2.2.2 must-revalidate (never served stale, max-stale or not)",
        R(ok("max-age=60, must-revalidate", STALE, ETAG), NOT_MODIFIED),
        (get(miss(1)), get(revalidated(), ("Cache-Control", "max-stale"))),
        2,
        origin_saw={2: INM_V1},
    ),
    Case(
        "request-max-stale-vs-proxy-revalidate",
        "RFC 9111 §5.2.2.8 proxy-revalidate (a shared cache never serves it stale)",
        R(ok("max-age=60, proxy-revalidate", STALE, ETAG), NOT_MODIFIED),
        (get(miss(1)), get(revalidated(), ("Cache-Control", "max-stale"))),
        2,
        origin_saw={2: INM_V1},
    ),
    Case(
        "request-max-stale-vs-s-maxage",
        "RFC 9111 §5.2.2.10 s-maxage (implies proxy-revalidate)",
        R(ok("s-maxage=60", STALE, ETAG), NOT_MODIFIED),
        (get(miss(1)), get(revalidated(), ("Cache-Control", "max-stale"))),
        2,
        origin_saw={2: INM_V1},
    ),
    Case(
        "request-max-stale-vs-response-no-cache",
        "RFC 9111 §5.2.2.4 no-cache (response: never used without revalidation, max-stale or not)",
        R(ok("no-cache, max-age=60", STALE, ETAG), NOT_MODIFIED),
        (get(miss(1)), get(revalidated(), ("Cache-Control", "max-stale"))),
        2,
        origin_saw={2: INM_V1},
    ),
    Case(
        "request-min-fresh",
        "RFC 9111 §5.2.1.3 min-fresh (not fresh for long enough: revalidated)",
        R(ok("max-age=60", ETAG), NOT_MODIFIED),
        (
            get(miss(1)),
            get(hit(1), ("Cache-Control", "min-fresh=10")),
            get(Expect(served=2, cs="fwd-status=304"), ("Cache-Control", "min-fresh=120")),
        ),
        2,
        origin_saw={2: INM_V1},
    ),
    Case(
        "request-only-if-cached-hit",
        "RFC 9111 §5.2.1.7 only-if-cached (a stored response)",
        R(ok("max-age=60")),
        (get(miss(1)), get(hit(1), ("Cache-Control", "only-if-cached"))),
        1,
    ),
    Case(
        "request-only-if-cached-miss",
        "RFC 9111 §5.2.1.7 only-if-cached (nothing stored: 504, origin not contacted)",
        R(ok("max-age=60")),
        (get(Expect(status=504, cs="detail=only-if-cached"), ("Cache-Control", "only-if-cached")),),
        0,
    ),
    Case(
        "request-only-if-cached-stale",
        "RFC 9111 §5.2.1.7 only-if-cached (only a stale response: 504)",
        R(ok("max-age=60", STALE, ETAG)),
        (get(miss(1)), get(Expect(status=504, cs="detail=only-if-cached"), ("Cache-Control", "only-if-cached"))),
        1,
    ),
    # ---- response directives that force revalidation ----
    Case(
        "response-no-cache",
        "RFC 9111 §5.2.2.4 no-cache (response: revalidated on every use)",
        R(ok("no-cache, max-age=60", ETAG), Answer(304, (ETAG, NOW))),
        (get(miss(1)), get(revalidated()), get(revalidated(3))),
        3,
        origin_saw={2: INM_V1, 3: INM_V1},
    ),
    Case(
        "stale-while-revalidate-within",
        "RFC 5861 §3 stale-while-revalidate (within the window: stale now, revalidated in the background)",
        R(ok("max-age=60, stale-while-revalidate=600", STALE, ETAG), NOT_MODIFIED),
        (get(miss(1)), get(hit(1, cs="hit; detail=stale-while-revalidate", ttl=(-62, -60), body=b"#1"))),
        2,
        origin_saw={2: INM_V1},
    ),
    Case(
        "stale-while-revalidate-outside",
        "RFC 5861 §3 stale-while-revalidate (60 s stale, window 30 s: revalidated first)",
        R(ok("max-age=60, stale-while-revalidate=30", STALE, ETAG), NOT_MODIFIED),
        (get(miss(1)), get(revalidated(body=b"#1"))),
        2,
        origin_saw={2: INM_V1},
    ),
    Case(
        "stale-while-revalidate-vs-must-revalidate",
        "RFC 9111 §4.2.4 + §5.2.2.2 (must-revalidate forbids serving it stale while revalidating)",
        R(ok("max-age=60, must-revalidate, stale-while-revalidate=600", STALE, ETAG), NOT_MODIFIED),
        (get(miss(1)), get(revalidated(body=b"#1"))),
        2,
        origin_saw={2: INM_V1},
    ),
    # ---- revalidation (§4.3) ----
    Case(
        "revalidate-etag-304-freshens",
        "RFC 9111 §4.3.1 If-None-Match from ETag; §4.3.4 a 304 freshens and updates the stored fields",
        R(ok("max-age=60", STALE, ETAG, ("X-Version", "a")), Answer(304, (ETAG, NOW, ("X-Version", "b")))),
        (
            get(miss(1, fields=(("X-Version", "a"),))),
            get(revalidated(body=b"#1", fields=(("X-Version", "b"), ("Cache-Control", "max-age=60")))),
            get(hit(2, body=b"#1", fields=(("X-Version", "b"),), age=(0, 2))),
        ),
        2,
        origin_saw={2: {**INM_V1, "If-Modified-Since": None}},
    ),
    Case(
        "revalidate-304-without-date",
        "RFC 9111 §4.3.4 + RFC 9110 §6.6.1 (a 304 without Date is dated on receipt: the response is fresh again)",
        R(ok("max-age=60", STALE, ETAG), Answer(304, (ETAG, ("Cache-Control", "max-age=60")))),
        (get(miss(1)), get(revalidated(body=b"#1", age=(0, 2))), get(hit(2, age=(0, 2)))),
        2,
        origin_saw={2: INM_V1},
    ),
    Case(
        "revalidate-last-modified",
        "RFC 9111 §4.3.1 If-Modified-Since from Last-Modified",
        R(ok("max-age=60", STALE, ("Last-Modified", LM)), Answer(304, (NOW,))),
        (get(miss(1)), get(revalidated(body=b"#1")), get(hit(2))),
        2,
        origin_saw={2: {"If-Modified-Since": LM, "If-None-Match": None}},
    ),
    Case(
        "revalidate-200-replaces",
        "RFC 9111 §4.3.3 (a full response to the revalidation replaces the stored one)",
        R(ok("max-age=60", STALE, ETAG), ok("max-age=60", ("ETag", '"v2"'))),
        (get(miss(1)), get(Expect(served=2, body=b"#2", cs="fwd=stale; fwd-status=200; stored")), get(hit(2))),
        2,
        origin_saw={2: INM_V1},
    ),
    Case(
        "revalidate-304-with-another-etag",
        "RFC 9111 §4.3.4 (a 304 whose validator differs from the stored one updates nothing; asked again without)",
        R(
            ok("max-age=60", STALE, ETAG, ("X-Version", "a")),
            Answer(304, (("ETag", '"v2"'), NOW, ("Cache-Control", "max-age=60"), ("X-Version", "b"))),
            ok("max-age=60", ("ETag", '"v3"'), ("X-Version", "c")),
        ),
        (
            get(miss(1)),
            get(Expect(served=3, cs="fwd=stale; fwd-status=200; stored", fields=(("X-Version", "c"),))),
            get(hit(3, fields=(("X-Version", "c"), ("ETag", '"v3"')))),
        ),
        3,
        origin_saw={2: INM_V1, 3: {"If-None-Match": None}},
    ),
    Case(
        "revalidate-then-client-conditional",
        "RFC 9111 §4.3.2 (after revalidating, the client's own If-None-Match is evaluated: 304)",
        R(ok("max-age=60", STALE, ETAG), NOT_MODIFIED),
        (get(miss(1)), get(Expect(status=304, served=2, cs="fwd=stale; fwd-status=304"), ("If-None-Match", '"v1"'))),
        2,
        origin_saw={2: INM_V1},
    ),
    Case(
        "client-conditional-on-miss-forwarded",
        "RFC 9111 §4.3.2 (no stored response: the client's conditional goes to the origin; 304 not stored)",
        R(Answer(304, (ETAG, ("Cache-Control", "max-age=60"))), ok("max-age=60", ETAG)),
        (get(Expect(status=304, served=1, cs='detail="status"'), ("If-None-Match", '"v1"')), get(miss(2))),
        2,
        origin_saw={1: INM_V1, 2: {"If-None-Match": None}},
    ),
    Case(
        "revalidate-with-own-validators",
        "RFC 9111 §4.3.1/§4.3.2 (the cache's validators are sent, not the client's)",
        R(ok("max-age=60", STALE, ETAG), NOT_MODIFIED),
        (get(miss(1)), get(revalidated(body=b"#1"), ("If-None-Match", '"zzz"'))),
        2,
        origin_saw={2: INM_V1},
    ),
    # ---- stale-if-error (RFC 5861 §4) and disconnected operation ----
    Case(
        "stale-if-error-5xx-within",
        "RFC 5861 §4 stale-if-error (5xx within the window: the stale response)",
        R(ok("max-age=60, stale-if-error=600", STALE, ETAG), Answer(500)),
        (get(miss(1)), get(Expect(served=1, body=b"#1", cs="fwd=stale; fwd-status=500; detail=stale-if-error"))),
        2,
    ),
    Case(
        "stale-if-error-5xx-outside",
        "RFC 5861 §4 stale-if-error (60 s stale, window 30 s: the 5xx)",
        R(ok("max-age=60, stale-if-error=30", STALE, ETAG), Answer(500)),
        (get(miss(1)), get(Expect(status=500, served=2, cs="fwd-status=500", cs_not=("detail=stale-if-error",)))),
        2,
    ),
    Case(
        "stale-if-error-request-directive",
        "RFC 5861 §4 stale-if-error (request directive)",
        R(ok("max-age=60", STALE, ETAG), Answer(502)),
        (
            get(miss(1)),
            get(Expect(served=1, cs="detail=stale-if-error"), ("Cache-Control", "stale-if-error=600")),
        ),
        2,
    ),
    Case(
        "stale-if-error-vs-must-revalidate",
        "RFC 9111 §5.2.2.2 must-revalidate (forbids stale-if-error)",
        R(ok("max-age=60, must-revalidate, stale-if-error=600", STALE, ETAG), Answer(500)),
        (get(miss(1)), get(Expect(status=500, served=2, cs_not=("detail=stale-if-error",)))),
        2,
    ),
    Case(
        "stale-if-error-origin-down",
        "RFC 5861 §4 stale-if-error (upstream unreachable within the window)",
        R(ok("max-age=60, stale-if-error=600", STALE, ETAG)),
        (get(miss(1)), get(Expect(served=1, body=b"#1", cs="detail=stale-if-error"), origin_down=True)),
        1,
    ),
    Case(
        "must-revalidate-origin-down",
        "RFC 9111 §5.2.2.2 must-revalidate (cannot revalidate: 504, never stale)",
        R(ok("max-age=60, must-revalidate", STALE, ETAG)),
        (get(miss(1)), get(Expect(status=504), origin_down=True)),
        1,
    ),
    # ---- invalidation (§4.4) ----
    Case(
        "post-invalidates-target",
        "RFC 9111 §4.4 (an unsafe request with a 2xx invalidates its target)",
        R(ok("max-age=60")),
        (
            get(miss(1)),
            get(hit(1)),
            get(Expect(served=2, cs="fwd=method"), method="POST", body=b"x"),
            get(miss(3)),
        ),
        3,
    ),
    Case(
        "post-invalidates-location",
        "RFC 9111 §4.4 (same-origin Location and Content-Location are invalidated)",
        {
            "/a": (ok("max-age=60"),),
            "/b": (ok("max-age=60"),),
            "/form": (Answer(201, (("Location", "/a"), ("Content-Location", "http://test.local/b"))),),
        },
        (
            get(miss(1), target="/a"),
            get(miss(1), target="/b"),
            get(Expect(status=201, cs="fwd=method"), method="POST", target="/form", body=b"x"),
            get(miss(2), target="/a"),
            get(miss(2), target="/b"),
        ),
        5,
    ),
    Case(
        "post-other-origin-not-invalidated",
        "RFC 9111 §4.4 (a Location on another host is not invalidated)",
        {"/a": (ok("max-age=60"),), "/form": (Answer(201, (("Location", "http://other.example/a"),)),)},
        (
            get(miss(1), target="/a", host="other.example"),
            get(Expect(status=201, cs="fwd=method"), method="POST", target="/form", body=b"x"),
            get(hit(1), target="/a", host="other.example"),
        ),
        2,
    ),
    Case(
        "post-4xx-does-not-invalidate",
        "RFC 9111 §4.4 (only a successful unsafe request invalidates)",
        R(ok("max-age=60"), Answer(404)),
        (get(miss(1)), get(Expect(status=404, cs="fwd=method"), method="POST", body=b"x"), get(hit(1))),
        2,
    ),
    Case(
        "post-303-invalidates-target",
        "RFC 9111 §4.4 (a 3xx to an unsafe request invalidates too)",
        R(ok("max-age=60"), Answer(303, (("Location", "/r"),)), ok("max-age=60")),
        (get(miss(1)), get(Expect(status=303, cs="fwd=method"), method="POST", body=b"x"), get(miss(3))),
        3,
    ),
    Case(
        "delete-invalidates-target",
        "RFC 9111 §4.4 (DELETE is unsafe too)",
        R(ok("max-age=60"), Answer(204), ok("max-age=60")),
        (get(miss(1)), get(Expect(status=204, cs="fwd=method"), method="DELETE"), get(miss(3))),
        3,
    ),
    # ---- serving ----
    Case(
        "head-from-stored-get",
        "RFC 9110 §9.3.2 + RFC 9111 §4 (HEAD answered from a stored GET)",
        R(ok("max-age=60", body=b"hello body")),
        (get(miss(1)), get(hit(1, body=b"", fields=(("Content-Length", "10"),)), method="HEAD")),
        1,
    ),
    Case(
        "range-passes-through",
        "RFC 9111 §3.3/§3.4 (Range forwarded, 206 not stored)",
        R(
            ok("max-age=60", ("Content-Range", "bytes 0-1/10"), status=206),
            ok("max-age=60"),
            ok("max-age=60", ("Content-Range", "bytes 0-1/10"), status=206),
        ),
        (
            get(Expect(status=206, served=1, cs="fwd=bypass; detail=range"), ("Range", "bytes=0-1")),
            get(miss(2)),
            get(Expect(status=206, served=3, cs="fwd=bypass; detail=range"), ("Range", "bytes=0-1")),
        ),
        3,
        origin_saw={1: {"Range": "bytes=0-1"}, 3: {"Range": "bytes=0-1"}},
    ),
    Case(
        "client-if-none-match",
        "RFC 9111 §4.3.2 (a client's If-None-Match matching the stored ETag: 304 from the cache)",
        R(ok("max-age=60", ETAG)),
        (
            get(miss(1)),
            get(hit(1, status=304, body=b"", fields=(ETAG,)), ("If-None-Match", '"v1"')),
            get(hit(1, status=304), ("If-None-Match", 'W/"v1"')),
            get(hit(1, status=304), ("If-None-Match", '"x", "v1"')),
            get(hit(1, status=304), ("If-None-Match", "*")),
            get(hit(1, body=b"#1"), ("If-None-Match", '"v2"')),
        ),
        1,
    ),
    Case(
        "client-if-modified-since",
        "RFC 9111 §4.3.2 (a client's If-Modified-Since: 304 from the cache)",
        R(ok("max-age=60", ("Last-Modified", LM))),
        (
            get(miss(1)),
            get(hit(1, status=304), ("If-Modified-Since", LM)),
            get(hit(1, body=b"#1"), ("If-Modified-Since", "Sun, 01 Jan 2023 00:00:00 GMT")),
        ),
        1,
    ),
    Case(
        "cache-status-appended",
        "RFC 9211 §2 (this cache's member appended after the upstream's)",
        R(ok("max-age=60", ("Cache-Status", "upstream; hit"))),
        (get(Expect(served=1, cs="stored", cs_before=("upstream; hit",))), get(hit(1, cs_before=("upstream; hit",)))),
        1,
    ),
    Case(
        "hop-by-hop-not-stored",
        "RFC 9111 §3.1 + RFC 9110 §7.6.1 (fields named in Connection are neither forwarded nor stored)",
        R(ok("max-age=60", ("Connection", "X-Hop"), ("X-Hop", "1"), ("Keep-Alive", "timeout=5"), ("X-Kept", "1"))),
        (
            get(miss(1, fields=(("X-Hop", None), ("Keep-Alive", None), ("X-Kept", "1")))),
            get(hit(1, fields=(("X-Hop", None), ("Keep-Alive", None), ("X-Kept", "1")))),
        ),
        1,
    ),
    # ---- the key (§4) ----
    Case(
        "key-includes-host",
        "RFC 9111 §2 + §4 (the primary key is the target URI: two hosts, two entries)",
        R(ok("max-age=60")),
        (
            get(miss(1), host="a.example"),
            get(miss(2), host="b.example"),
            get(hit(1), host="A.Example."),
            get(hit(1), host="a.example:80"),
            get(hit(2), host="b.example"),
        ),
        2,
    ),
    Case(
        "key-absolute-form",
        "RFC 9112 §3.2.2 + RFC 9111 §4 (an absolute-form target's authority is the key's, not Host's)",
        {"*": (ok("max-age=60"),)},
        (
            get(Expect(cs="fwd=uri-miss; stored"), target="http://a.example/r", host="b.example"),
            get(hit(1), target="/r", host="a.example"),
            get(Expect(cs="fwd=uri-miss; stored"), target="/r", host="b.example"),
        ),
        2,
    ),
    Case(
        "key-includes-query",
        "RFC 9111 §2 + §4 (the query is part of the key)",
        {"*": (ok("max-age=60"),)},
        (
            get(miss(1), target="/q?x=1"),
            get(miss(1), target="/q?x=2"),
            get(hit(1, body=b"#1"), target="/q?x=1"),
            get(miss(1), target="/q"),
        ),
        3,
    ),
]


def _params() -> list[Any]:
    out = []
    for case in CASES:
        marks = [pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else []
        out.append(pytest.param(case, id=case.id, marks=marks))
    return out


def check(resp: Response, exp: Expect, where: str) -> None:
    cs_head = resp.header_all("cache-status")
    info = f"{where}: {resp.status} {resp.headers} {resp.body[:80]!r}"
    assert exp.status is None or resp.status == exp.status, info
    if exp.body is not None:
        assert resp.body == exp.body, info
    if exp.served is not None:
        assert resp.header("x-served") == str(exp.served), info
    for name, value in exp.fields:
        if value is None:
            assert resp.header(name) is None, f"{name} must be absent; {info}"
        else:
            assert resp.header_all(name) == [value], f"{name}; {info}"
    for name in exp.present:
        assert resp.header(name) is not None, f"{name} must be present; {info}"
    before, params = cache_status(resp)
    if exp.cs is not None or exp.cs_not or exp.ttl is not None or exp.cs_before is not None:
        assert params is not None, f"no {NAME} member in Cache-Status {cs_head}; {info}"
    if params is not None:
        for want in filter(None, (w.strip() for w in (exp.cs or "").split(";"))):
            if want.endswith("="):
                assert param(params, want[:-1]) is not None, f"{want} in {cs_head}; {info}"
            else:
                assert want in params, f"{want!r} in {cs_head}; {info}"
        for unwanted in exp.cs_not:
            assert unwanted not in params, f"{unwanted!r} not in {cs_head}; {info}"
        if exp.cs_before is not None:
            assert before == list(exp.cs_before), f"{cs_head}; {info}"
        if exp.ttl is not None:
            ttl = param(params, "ttl")
            assert ttl is not None, f"ttl in {cs_head}; {info}"
            assert exp.ttl[0] <= int(ttl) <= exp.ttl[1], f"ttl in {exp.ttl}: {cs_head}; {info}"
    if exp.age is not None:
        age = resp.header("age")
        assert age is not None, f"Age; {info}"
        assert exp.age[0] <= int(age) <= exp.age[1], f"Age in {exp.age}; {info}"


@NATIVE
@pytest.mark.parametrize("case", _params())
def test_rfc9111(case: Case, native: bool, start_proxy: StartProxy) -> None:
    assert sum(s.sleep for s in case.steps) <= 1.1, "keep cases fast"
    with CacheOrigin(case.answers) as origin:
        engine = start_proxy(cache_config(origin.addr, case.cache, case.route), native=native)
        addr = engine.addresses[0]
        for i, step in enumerate(case.steps, 1):
            if step.sleep:
                time.sleep(step.sleep)
            if step.origin_down:
                origin.close()
            resp = request(addr, step.method, step.target, list(step.headers), step.body, step.version, step.host)
            check(resp, step.expect, f"[{case.rfc}] step {i}: {step.method} {step.target} {list(step.headers)}")
        origin.origin.wait_requests(case.origin_count, timeout=2.0)  # a background revalidation
        seen = [f"{r.method} {r.target} {r.headers}" for r in origin.requests]
        assert origin.total == case.origin_count, f"origin requests: {seen}"
        for n, fields in case.origin_saw.items():
            req = origin.requests[n - 1]
            for name, value in fields.items():
                assert req.header(name) == value, f"origin request {n}: {name}; {seen[n - 1]}"


# --- coalescing ------------------------------------------------------------------


@NATIVE
def test_concurrent_misses_are_coalesced(native: bool, start_proxy: StartProxy) -> None:
    """RFC 9111 §4 (collapsed requests): 100 concurrent GETs of one uncached
    key while the origin holds the first → one origin request, all 200."""
    clients = 100
    release = threading.Event()
    sent = threading.Semaphore(0)
    arrived = threading.Event()

    def handler(req: Received) -> Reply:
        arrived.set()
        release.wait(10)
        return Reply(200, [("Cache-Control", "max-age=60")], b"the one answer")

    def one(_: int) -> Response:
        with connect(engine.addresses[0], timeout=20) as sock:
            sock.sendall(build("GET", "/slow"))
            sent.release()
            return Reader(sock).response()

    with Origin(handler) as origin:
        engine = start_proxy(cache_config(origin.addr, {"lock_timeout": "30s"}), native=native)
        with ThreadPoolExecutor(clients) as pool:
            futures = [pool.submit(one, i) for i in range(clients)]
            try:
                for _ in range(clients):
                    assert sent.acquire(timeout=10), "every client sent its request"
                assert arrived.wait(10), "the first request reached the origin"
                time.sleep(0.2)  # let the proxy read the last requests (not needed for correctness)
            finally:
                release.set()
            responses = [f.result(timeout=20) for f in futures]
        assert len(origin.requests) == 1, [r.target for r in origin.requests]
    assert [r.status for r in responses] == [200] * clients
    assert all(r.body == b"the one answer" for r in responses)
    members = [cache_status(r)[1] or [] for r in responses]
    assert sum("stored" in m for m in members) == 1, members
    assert sum("hit" in m for m in members) == clients - 1, members


# --- the memory bound and large objects -------------------------------------------


def stats(engine: Engine) -> dict[str, Any]:
    result = engine.cache_stats()
    assert result is not None, "the engine has a cache"
    return result


@NATIVE
def test_store_stays_within_max_size(native: bool, start_proxy: StartProxy) -> None:
    """[cache] max_size bounds the store: 2,000 distinct 8 KiB responses
    into 1 MiB never hold more than 1 MiB."""
    body = b"x" * 8192

    def handler(req: Received) -> Reply:
        return Reply(200, [("Cache-Control", "max-age=600")], body)

    max_size = 1 << 20
    with Origin(handler) as origin:
        engine = start_proxy(cache_config(origin.addr, {"max_size": "1MiB", "max_object_size": "64KiB"}), native=native)
        samples = []
        with connect(engine.addresses[0]) as sock:
            reader = Reader(sock)
            for i in range(2000):
                sock.sendall(build("GET", f"/flood/{i}"))
                resp = reader.response()
                assert resp.status == 200 and len(resp.body) == len(body)
                if i % 100 == 99:
                    samples.append(stats(engine))
        assert len(origin.requests) == 2000
    assert all(s["max_size"] == max_size for s in samples), samples
    assert all(s["bytes"] <= max_size for s in samples), samples
    assert samples[-1]["keys"] < 2000, samples[-1]
    assert samples[-1]["keys"] > 0, "the store still holds the newest responses"


@NATIVE
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_object_above_max_object_size_passes_through(native: bool, chunked: bool, start_proxy: StartProxy) -> None:
    big = bytes(range(256)) * 400  # 100 KiB > 64 KiB

    def handler(req: Received) -> Reply:
        whole = big if req.target == "/big" else big[:1000]
        body = iter([whole[:500], whole[500:]]) if chunked else whole
        return Reply(200, [("Cache-Control", "max-age=600")], body)

    with Origin(handler) as origin:
        engine = start_proxy(cache_config(origin.addr, {"max_object_size": "64KiB"}), native=native)
        addr = engine.addresses[0]
        for _ in range(2):
            resp = request(addr, "GET", "/big")
            assert resp.status == 200
            assert resp.body == big, "the whole body reaches the client"
        assert len(origin.requests) == 2, "not stored"
        assert stats(engine)["keys"] == 0
        small = request(addr, "GET", "/small-enough")  # 1000 bytes: under the bound
        assert small.status == 200 and len(small.body) == 1000
        assert stats(engine)["keys"] == 1, "a response under the bound is stored, chunked or not"


# --- PURGE ------------------------------------------------------------------------


@NATIVE
def test_purge_removes_a_key(native: bool, start_proxy: StartProxy) -> None:
    with CacheOrigin({"*": (ok("max-age=60"),)}) as origin:
        engine = start_proxy(cache_config(origin.addr), native=native)
        addr = engine.addresses[0]
        assert request(addr, "GET", "/p").header("x-served") == "1"
        assert cache_status(request(addr, "GET", "/p"))[1] is not None
        assert origin.total == 1
        resp = request(addr, "PURGE", "/p")
        assert (resp.status, resp.body) == (200, b"purged 1\n")
        again = request(addr, "GET", "/p")
        assert again.header("x-served") == "2", "the next GET goes to the origin"
        assert origin.total == 2
        assert request(addr, "PURGE", "/p").status == 200
        resp = request(addr, "PURGE", "/p")
        assert (resp.status, resp.body) == (404, b"nothing stored\n")
        assert origin.total == 2, "PURGE never reaches the origin"


@NATIVE
def test_purge_prefix_removes_every_key_under_it(native: bool, start_proxy: StartProxy) -> None:
    with CacheOrigin({"*": (ok("max-age=60"),)}) as origin:
        engine = start_proxy(cache_config(origin.addr), native=native)
        addr = engine.addresses[0]
        targets = ["/prefix/a", "/prefix/b", "/prefix/c?x=1", "/other"]
        for t in targets:
            request(addr, "GET", t)
        assert stats(engine)["keys"] == 4
        resp = request(addr, "PURGE", "/prefix*")
        assert (resp.status, resp.body) == (200, b"purged 3\n")
        for t in targets[:3]:
            assert request(addr, "GET", t).header("x-served") == "2", t
        _, params = cache_status(request(addr, "GET", "/other"))
        assert params is not None and "hit" in params
        assert origin.total == 7


@NATIVE
def test_purge_from_a_client_not_allowed_is_403(native: bool, start_proxy: StartProxy) -> None:
    with CacheOrigin({"*": (ok("max-age=60"),)}) as origin:
        engine = start_proxy(cache_config(origin.addr, {"purge_from": ["10.0.0.0/8"]}), native=native)
        addr = engine.addresses[0]
        request(addr, "GET", "/p")
        resp = request(addr, "PURGE", "/p", [("X-Forwarded-For", "10.1.2.3")])
        assert resp.status == 403, "the peer address decides, not X-Forwarded-For"
        _, params = cache_status(request(addr, "GET", "/p"))
        assert params is not None and "hit" in params, "still stored"
        assert origin.total == 1


@NATIVE
def test_routes_with_auth_share_only_what_the_origin_allows(
    native: bool, start_proxy: StartProxy, tmp_path: Path
) -> None:
    """RFC 9111 §3.5: the auth built-in takes Authorization off the request
    before the cache sees it, yet the request was made with credentials:
    without public / s-maxage / must-revalidate, one user's response is
    never another's."""

    def per_user(req: Received) -> Reply:
        cc = "public, max-age=60" if req.target == "/shared" else "max-age=60"
        return Reply(200, [("Cache-Control", cc)], f"for {req.header('authorization')}".encode())

    with Origin(per_user) as origin:
        config = cache_config(origin.addr, route={"auth": "team"})
        config["auth"] = {"team": {"type": "basic"}}
        folder = tmp_path
        lines = [f"{u}:{bcrypt.hashpw(u.encode(), bcrypt.gensalt(4)).decode()}" for u in ("alice", "bob")]
        (folder / "users.htpasswd").write_text("\n".join(lines) + "\n")
        config["auth"]["team"]["htpasswd"] = str(folder / "users.htpasswd")
        config["auth"]["team"]["forward_credentials"] = True
        engine = start_proxy(config, native=native)

        def as_user(user: str, target: str) -> bytes:
            token = base64.b64encode(f"{user}:{user}".encode()).decode()
            resp = request(engine.addresses[0], "GET", target, headers=[("Authorization", f"Basic {token}")])
            assert resp.status == 200
            return resp.body

        alice, bob = as_user("alice", "/mine"), as_user("bob", "/mine")
        assert alice != bob, "bob must not get alice's response"
        assert len(origin.requests) == 2
        assert as_user("alice", "/shared") == as_user("bob", "/shared"), "public: shared"
        assert len(origin.requests) == 3


@NATIVE
def test_an_upgrade_is_never_answered_from_the_cache(native: bool, start_proxy: StartProxy) -> None:
    """A stored 200 for /ws must not answer a WebSocket handshake for /ws."""

    def origin_handler(req: Received) -> Reply:
        if (req.header("upgrade") or "").lower() == "websocket":
            return Reply(426, [("Cache-Control", "no-store")], b"upgrade seen by the origin")
        return Reply(200, [("Cache-Control", "max-age=600")], b"plain page")

    with Origin(origin_handler) as origin:
        engine = start_proxy(cache_config(origin.addr), native=native)
        addr = engine.addresses[0]
        assert request(addr, "GET", "/ws").body == b"plain page"
        assert (request(addr, "GET", "/ws").header("cache-status") or "").startswith(f"{NAME}; hit")
        upgrade = [("Connection", "Upgrade"), ("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13")]
        resp = request(addr, "GET", "/ws", headers=upgrade + [("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")])
        assert resp.body == b"upgrade seen by the origin"
        assert resp.header("cache-status") == f"{NAME}; fwd=bypass; detail=upgrade"
        assert len(origin.requests) == 2


@NATIVE
def test_responses_are_kept_per_route(native: bool, start_proxy: StartProxy) -> None:
    """Two routes to one host and path (one chosen by a header): what one
    stored is not served to the other — the origin cannot Vary on routing."""

    def by_route(req: Received) -> Reply:
        return Reply(200, [("Cache-Control", "max-age=60")], f"route {req.header('x-route')}".encode())

    with Origin(by_route) as origin:
        config = cache_config(origin.addr)
        beta = {
            "path_prefix": "/",
            "headers": {"x-beta": "1"},
            "upstream": "app",
            "cache": True,
            "request_headers": {"set": {"x-route": "beta"}},
        }
        config["routes"][0]["request_headers"] = {"set": {"x-route": "main"}}
        config["routes"].insert(0, beta)
        engine = start_proxy(config, native=native)
        addr = engine.addresses[0]
        assert request(addr, "GET", "/p", headers=[("X-Beta", "1")]).body == b"route beta"
        assert request(addr, "GET", "/p").body == b"route main"
        assert request(addr, "GET", "/p", headers=[("X-Beta", "1")]).body == b"route beta"
        assert len(origin.requests) == 2, "each route's copy, each reused"


@NATIVE
def test_an_invalidation_wins_over_a_fill_in_progress(native: bool, start_proxy: StartProxy) -> None:
    """RFC 9111 §4.4: a POST that succeeds while an older GET response is
    still streaming into the store: that response is not stored."""
    release = threading.Event()
    gets = []

    def handler(req: Received) -> Reply | Takeover:
        if req.method == "POST":
            return Reply(200, [], b"ok")
        gets.append(req)
        if len(gets) > 1:
            return Reply(200, [("Cache-Control", "max-age=600")], b"new")

        def slow(sock: socket.socket, buffered: bytes, r: Received) -> None:
            sock.sendall(b"HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\nContent-Length: 10\r\n\r\nhello")
            release.wait(10)
            sock.sendall(b"world")
            sock.close()

        return Takeover(slow)

    with Origin(handler) as origin:
        engine = start_proxy(cache_config(origin.addr), native=native)
        addr = engine.addresses[0]
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(request, addr, "GET", "/s")
            deadline = time.monotonic() + 5
            while not gets and time.monotonic() < deadline:
                time.sleep(0.01)
            assert request(addr, "POST", "/s", body=b"x").status == 200
            release.set()
            assert first.result(timeout=10).body == b"helloworld"
        assert request(addr, "GET", "/s").body == b"new", "the old response was not stored"
        assert len(gets) == 2

"""The balancer: which of a pool's candidates gets an attempt.

The engine runs its compiled form of this; this reference is what ``rproxy
run --no-native`` and the test kit (``rproxy.testing``) run, and it spells
out docs/load-balancing.md in plain Python. It is ``trylast``, so a
plugin's ``rproxy_select_upstream`` always gets the first say, and it always
chooses (``None`` only for an empty list).

Each pool keeps, per worker process, a ``counter`` for plain round robin,
the ``current`` weights of smooth weighted round robin, and, for ``balance =
"hash"``, a ring of points built from all its servers. A candidate's
effective weight is ``eff(c) = max(1, int(c.weight * 100 * c.ramp))``, and
its load is ``in_flight / eff``, compared by cross-multiplying.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from rproxy._engine import Request
from rproxy.config import Config, HashKey, UpstreamSettings
from rproxy.plan import Candidate, Route, native
from rproxy.plugins import hookimpl

__all__ = [
    "POINTS_PER_WEIGHT",
    "PoolState",
    "Ring",
    "build_ring",
    "choose",
    "cookie_value",
    "eff",
    "request_key",
    "ring_hash",
]

#: Points on the hash ring per unit of a server's weight.
POINTS_PER_WEIGHT = 160

_MASK = (1 << 64) - 1


def ring_hash(data: bytes) -> int:
    """64-bit FNV-1a of ``data``, then murmur3's fmix64 finaliser (which
    spreads FNV's weak high bits over the whole word)."""
    k = 0xCBF29CE484222325
    for byte in data:
        k = ((k ^ byte) * 0x100000001B3) & _MASK
    k ^= k >> 33
    k = (k * 0xFF51AFD7ED558CCD) & _MASK
    k ^= k >> 33
    k = (k * 0xC4CEB93FE53EF863) & _MASK
    k ^= k >> 33
    return k


@dataclass(frozen=True)
class Ring:
    """The points of a pool's hash ring, sorted: ``hashes[i]`` belongs to
    the server whose address is ``servers[i]``."""

    hashes: tuple[int, ...] = ()
    servers: tuple[str, ...] = ()


def build_ring(servers: Sequence[tuple[str, int]]) -> Ring:
    """The ring of ``(address, weight)`` servers, in configured order
    (backups included): server ``j`` at address ``A`` gets the points
    ``ring_hash(f"{A}-{i}")`` for ``i`` below ``160 * weight``, and points
    are sorted by (hash, j)."""
    points = sorted(
        (ring_hash(f"{address}-{i}".encode()), j)
        for j, (address, weight) in enumerate(servers)
        for i in range(POINTS_PER_WEIGHT * weight)
    )
    return Ring(tuple(h for h, _ in points), tuple(servers[j][0] for _, j in points))


@dataclass
class PoolState:
    """What the balancer keeps for one pool in one worker process."""

    balance: str = "round_robin"
    hash_key: HashKey | None = None
    ring: Ring = Ring()
    counter: int = 0
    current: dict[str, int] = field(default_factory=dict)
    rng: random.Random = field(default_factory=random.Random)

    @classmethod
    def of(cls, pool: UpstreamSettings) -> PoolState:
        """The starting state of ``pool``."""
        return cls(
            balance=pool.balance,
            hash_key=pool.hash_key,
            ring=build_ring([(str(s.address), s.weight) for s in pool.servers]) if pool.balance == "hash" else Ring(),
            current={str(s.address): 0 for s in pool.servers},
        )


def eff(c: Candidate) -> int:
    """The effective weight of ``c``: its weight times 100, scaled by its
    slow-start ramp, at least 1."""
    return max(1, int(c.weight * 100 * c.ramp))


def _less_loaded(a: Candidate, b: Candidate) -> bool:
    """``a.in_flight / eff(a) < b.in_flight / eff(b)``, in integers."""
    return a.in_flight * eff(b) < b.in_flight * eff(a)


def _same_load(a: Candidate, b: Candidate) -> bool:
    return a.in_flight * eff(b) == b.in_flight * eff(a)


def _rr(state: PoolState, cs: Sequence[Candidate]) -> Candidate:
    """Round robin over ``cs``: plain (the pool's counter) when their
    effective weights are all equal, else smooth weighted round robin
    (each gains its weight, the greatest — the first on a tie — is chosen
    and loses the total)."""
    weights = [eff(c) for c in cs]
    if all(w == weights[0] for w in weights):
        chosen = cs[state.counter % len(cs)]
        state.counter += 1
        return chosen
    best = 0
    for n, c in enumerate(cs):
        state.current[c] = state.current.get(c, 0) + weights[n]
        if state.current[c] > state.current[cs[best]]:
            best = n
    state.current[cs[best]] -= sum(weights)
    return cs[best]


def _least_conn(state: PoolState, cs: Sequence[Candidate]) -> Candidate:
    least = cs[0]
    for c in cs[1:]:
        if _less_loaded(c, least):
            least = c
    return _rr(state, [c for c in cs if _same_load(c, least)])


def _weighted_pick(rng: random.Random, cs: Sequence[Candidate]) -> int:
    """The index of a candidate drawn with probability proportional to ``eff``."""
    point = rng.randrange(sum(eff(c) for c in cs))
    for n, c in enumerate(cs):
        point -= eff(c)
        if point < 0:
            return n
    raise AssertionError("the point is below the total weight")


def _random_two(state: PoolState, cs: Sequence[Candidate]) -> Candidate:
    if len(cs) == 1:
        return cs[0]
    n = _weighted_pick(state.rng, cs)
    first, rest = cs[n], [*cs[:n], *cs[n + 1 :]]
    second = rest[_weighted_pick(state.rng, rest)]
    return second if _less_loaded(second, first) else first


def _hash(state: PoolState, cs: Sequence[Candidate], key: bytes | None) -> Candidate:
    if key is None:
        return _rr(state, cs)
    by_address = {str(c): c for c in cs}
    ring = state.ring
    if ring.hashes:
        start = bisect.bisect_left(ring.hashes, ring_hash(key))
        for i in range(len(ring.hashes)):
            found = by_address.get(ring.servers[(start + i) % len(ring.hashes)])
            if found is not None:
                return found
    return _rr(state, cs)  # no candidate on the ring: not a server of the pool


def choose(state: PoolState, candidates: Sequence[Candidate], key: bytes | None = None) -> Candidate | None:
    """The candidate ``state``'s balance chooses; ``key`` is the request's
    hash key (``balance = "hash"`` only; ``None``: the request has none)."""
    if not candidates:
        return None
    if len(candidates) == 1:
        return candidates[0]  # at once, leaving the state alone
    if state.balance == "least_conn":
        return _least_conn(state, candidates)
    if state.balance == "random_two":
        return _random_two(state, candidates)
    if state.balance == "first":
        return candidates[0]
    if state.balance == "hash":
        return _hash(state, candidates, key)
    return _rr(state, candidates)


def request_key(request: Request, hash_key: HashKey | None) -> bytes | None:
    """The bytes ``hash_key`` takes from ``request``, or ``None`` when it
    has none: the client address as text; the first value of a header
    field; the value of the first cookie of that name (an empty value is a
    key). Field values are taken as the bytes received (the views show
    bytes above 0x7f as Latin-1 characters)."""
    if hash_key is None:
        return None
    if hash_key.kind == "client_ip":
        return None if request.client is None else request.client.encode()
    name = hash_key.name or ""
    if hash_key.kind == "header":
        lines = request.headers.get_all(name)
        return lines[0].encode("latin-1") if lines else None
    value = cookie_value(request.headers.get_all("cookie"), name)
    return None if value is None else value.encode("latin-1")


def cookie_value(lines: Sequence[str], name: str) -> str | None:
    """The value of the first cookie called ``name`` (case-sensitive) in the
    ``Cookie`` field lines, as it is (not unquoted)."""
    for part in "; ".join(lines).split(";"):
        cookie, equals, value = part.strip(" \t").partition("=")
        if equals and cookie == name:
            return value
    return None


_pools: dict[str, PoolState] = {}


@hookimpl
def rproxy_configure(config: Config, options: dict[str, object]) -> None:
    global _pools
    _pools = {name: PoolState.of(pool) for name, pool in config.upstreams.items()}


@hookimpl(trylast=True)
@native("balancer")
def rproxy_select_upstream(request: Request, route: Route, candidates: list[Candidate]) -> str | None:
    state = _pools.get(route.upstream or "")
    if state is None:
        state = _pools.setdefault(route.upstream or "", PoolState())
    key = request_key(request, state.hash_key) if state.balance == "hash" else None
    return choose(state, candidates, key)

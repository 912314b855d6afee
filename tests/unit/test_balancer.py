"""The built-in balancer's reference (docs/load-balancing.md): each
algorithm's exact choices, the hash and its ring, the keys it hashes, and
the balancer as the test kit runs it."""

from __future__ import annotations

import random
import re
import types
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import rproxy
from rproxy.builtins.balancer import PoolState, Ring, build_ring, choose, request_key, ring_hash
from rproxy.config import HashKey
from rproxy.plan import Candidate, Runtime
from rproxy.testing import Simulator, make_request, proxy_config

ROOT = Path(__file__).resolve().parents[2]

#: Chi-square critical values at p = 0.001, by degrees of freedom.
CHI2_999 = {3: 16.27, 4: 18.47}


def cands(*specs: tuple[str, int] | str, in_flight: Sequence[int] = ()) -> list[Candidate]:
    """Candidates named by address, or (address, weight)."""
    out = []
    for n, spec in enumerate(specs):
        address, weight = (spec, 1) if isinstance(spec, str) else spec
        out.append(Candidate(address, weight, False, in_flight[n] if in_flight else 0, 1.0))
    return out


def picks(state: PoolState, candidates: Sequence[Candidate], n: int, key: bytes | None = None) -> list[str]:
    return [str(choose(state, candidates, key)) for _ in range(n)]


def chi_square(counts: Sequence[int], shares: Sequence[float]) -> float:
    total = sum(counts)
    return sum((c - total * s) ** 2 / (total * s) for c, s in zip(counts, shares, strict=True))


# -- candidates ----------------------------------------------------------------------


def test_a_candidate_is_its_address_with_read_only_attributes() -> None:
    (c,) = Runtime().candidates_for("app", [("[::1]:9001", 3, True, 2, 0.5)])
    assert c == "[::1]:9001" and isinstance(c, str) and str(c) == "[::1]:9001"
    assert (c.weight, c.backup, c.in_flight, c.ramp) == (3, True, 2, 0.5)
    assert {c: 1}["[::1]:9001"] == 1, "hashes as its address"
    with pytest.raises(AttributeError):
        c.weight = 5  # type: ignore[misc]
    assert rproxy.Candidate is Candidate


# -- round robin -----------------------------------------------------------------------


def test_equal_weights_take_turns_in_order() -> None:
    state = PoolState()
    cs = cands("a:1", "b:1", "c:1")
    assert picks(state, cs, 7) == ["a:1", "b:1", "c:1", "a:1", "b:1", "c:1", "a:1"]
    # The counter is the pool's: a shorter list (a server tried already) goes on from it.
    assert picks(state, cs[1:], 2) == ["c:1", "b:1"]


def test_weights_5_1_1_give_nginxs_smooth_sequence() -> None:
    state = PoolState()
    cs = cands(("a:1", 5), ("b:1", 1), ("c:1", 1))
    assert [p[0] for p in picks(state, cs, 14)] == list("aabacaa" * 2)
    assert state.current == {"a:1": 0, "b:1": 0, "c:1": 0}, "a whole cycle brings every current weight back to 0"
    assert state.counter == 0, "smooth weighted round robin leaves the counter alone"


def test_slow_start_scales_the_effective_weight() -> None:
    # eff = max(1, int(weight * 100 * ramp)): a at ramp 0.2 weighs 100, like b.
    state = PoolState()
    ramping = [Candidate("a:1", 5, False, 0, 0.2), Candidate("b:1", 1, False, 0, 1.0)]
    assert picks(state, ramping, 4) == ["a:1", "b:1", "a:1", "b:1"]
    assert state.counter == 4, "equal effective weights: plain round robin"
    # Even a ramp of ~0 keeps a weight of 1 (of 101).
    state = PoolState()
    cold = [Candidate("a:1", 1, False, 0, 0.001), Candidate("b:1", 1, False, 0, 1.0)]
    assert Counter(picks(state, cold, 101)) == {"b:1": 100, "a:1": 1}


# -- least_conn, first, random_two ------------------------------------------------------


def test_least_conn_picks_the_least_loaded_and_takes_turns_on_ties() -> None:
    state = PoolState(balance="least_conn")
    assert picks(state, cands("a:1", "b:1", "c:1", in_flight=[2, 1, 3]), 3) == ["b:1"] * 3
    tied = cands("a:1", "b:1", "c:1", in_flight=[1, 0, 0])
    assert picks(state, tied, 4) == ["c:1", "b:1", "c:1", "b:1"], "the pool's counter, 3 by now, picks among b and c"
    # Load is in flight per unit of weight: 3 on weight 4 is less than 1 on weight 1.
    weighted = cands(("a:1", 1), ("b:1", 4), in_flight=[1, 3])
    assert picks(state, weighted, 2) == ["b:1", "b:1"]
    # 2 on weight 2 ties with 1 on weight 1: smooth weighted round robin between them.
    state = PoolState(balance="least_conn")
    assert picks(state, cands(("a:1", 2), ("b:1", 1), ("c:1", 1), in_flight=[2, 1, 5]), 3) == ["a:1", "b:1", "a:1"]


def test_first_takes_the_first_candidate() -> None:
    state = PoolState(balance="first")
    assert picks(state, cands("a:1", "b:1", in_flight=[50, 0]), 3) == ["a:1"] * 3
    assert choose(state, []) is None


def test_backups_are_left_to_the_candidate_list() -> None:
    # The engine passes backups only when no primary can take the attempt;
    # the balancer chooses among whatever it is given.
    state = PoolState()
    backup = Candidate("z:1", 1, True, 0, 1.0)
    assert picks(state, [backup], 2) == ["z:1", "z:1"]
    sim = Simulator(
        proxy_config(pools={"app": {"servers": ["10.0.0.1:80", {"address": "10.0.0.9:80", "backup": True}]}})
    )
    assert {sim.request("GET", "/").upstream for _ in range(4)} == {"10.0.0.1:80"}


def test_random_two_draws_by_weight_and_the_less_loaded_wins() -> None:
    state = PoolState(balance="random_two", rng=random.Random(5))
    cs = cands(("a:1", 1), ("b:1", 2), ("c:1", 3), ("d:1", 4))
    counts = Counter(picks(state, cs, 20_000))
    # All idle: the first draw wins the tie, so the shares are the weights'.
    observed = [counts[a] for a in ("a:1", "b:1", "c:1", "d:1")]
    assert chi_square(observed, [0.1, 0.2, 0.3, 0.4]) < CHI2_999[3], observed
    # The less loaded of the two drawn wins: never the busiest of three.
    busy = cands("a:1", "b:1", "c:1", in_flight=[9, 0, 1])
    counts = Counter(picks(state, busy, 3000))
    assert "a:1" not in counts and counts["b:1"] > counts["c:1"] > 0
    assert picks(state, cands("only:1"), 2) == ["only:1", "only:1"]


# -- the hash and the ring -----------------------------------------------------------------


def reference_hash(data: bytes) -> int:
    """FNV-1a 64 and murmur3's fmix64, written out on their own."""
    m = 2**64
    h = 14695981039346656037  # 0xcbf29ce484222325
    for b in data:
        h = (h ^ b) * 1099511628211 % m  # 0x100000001b3
    h ^= h >> 33
    h = h * 18397679294719823053 % m  # 0xff51afd7ed558ccd
    h ^= h >> 33
    h = h * 14181475960716458083 % m  # 0xc4ceb93fe53ef863
    return h ^ (h >> 33)


def test_the_hash_is_fnv1a_then_fmix64() -> None:
    def fnv(data: bytes) -> int:
        h = 14695981039346656037
        for b in data:
            h = (h ^ b) * 1099511628211 % 2**64
        return h

    assert fnv(b"a") == 0xAF63DC4C8601EC8C and fnv(b"foobar") == 0x85944171F73967E8  # published FNV-1a vectors
    for data in [b"", b"a", b"foobar", b"127.0.0.1:9001-0", b"[::1]:9001-159", "zoë".encode(), bytes(range(256))]:
        assert ring_hash(data) == reference_hash(data), data
    assert ring_hash(b"") == reference_hash(b"") != 0


def test_the_ring_has_160_points_per_weight_sorted() -> None:
    ring = build_ring([("10.0.0.1:80", 1), ("10.0.0.2:80", 3)])
    assert len(ring.hashes) == 160 * 4
    assert list(ring.hashes) == sorted(ring.hashes)
    assert Counter(ring.servers) == {"10.0.0.1:80": 160, "10.0.0.2:80": 480}
    point = ring.hashes.index(reference_hash(b"10.0.0.2:80-479"))
    assert ring.servers[point] == "10.0.0.2:80"


def hash_state(addresses: Sequence[str]) -> tuple[PoolState, list[Candidate]]:
    return PoolState(balance="hash", ring=build_ring([(a, 1) for a in addresses])), cands(*addresses)


def arc_shares(ring: Ring, addresses: Sequence[str]) -> list[float]:
    """Each server's share of the hash space: a key belongs to the first point at or after it."""
    owned = Counter[str]()
    previous = ring.hashes[-1] - 2**64
    for h, server in zip(ring.hashes, ring.servers, strict=True):
        owned[server] += h - previous
        previous = h
    return [owned[a] / 2**64 for a in addresses]


_RNG = random.Random(7)
KEYS = [_RNG.randbytes(12) for _ in range(10_000)]


def test_a_key_always_gets_the_same_server_and_keys_spread() -> None:
    addresses = [f"10.0.0.{n}:80" for n in range(1, 5)]
    state, cs = hash_state(addresses)
    first = picks(state, cs, 1, b"user-42")
    assert picks(state, cs, 5, b"user-42") == first * 5
    assert state.counter == 0 and set(state.current.values()) <= {0}, "a keyed request leaves round robin alone"
    counts = Counter(str(choose(state, cs, k)) for k in KEYS)
    observed = [counts[a] for a in addresses]
    # The keys follow the ring (the hash is uniform) ...
    assert chi_square(observed, arc_shares(state.ring, addresses)) < CHI2_999[3], observed
    # ... and 160 points a server keep the ring itself within 15% of a fair share.
    assert all(abs(n - 2500) < 375 for n in observed), observed


def test_a_key_walks_the_ring_past_servers_that_are_not_candidates() -> None:
    addresses = [f"10.0.0.{n}:80" for n in range(1, 6)]
    state, cs = hash_state(addresses)
    before = {k: str(choose(state, cs, k)) for k in KEYS}
    gone = addresses[2]
    without = [c for c in cs if c != gone]
    after = {k: str(choose(state, without, k)) for k in KEYS}
    moved = [k for k in KEYS if before[k] != after[k]]
    assert moved and all(before[k] == gone for k in moved), "only the keys of the missing server move"
    assert len(moved) == sum(1 for k in KEYS if before[k] == gone)
    # A pool configured without that server gives the same answers: its points are simply not there.
    rebuilt, rebuilt_cs = hash_state([a for a in addresses if a != gone])
    assert {k: str(choose(rebuilt, rebuilt_cs, k)) for k in KEYS} == after


def test_a_sixth_server_takes_about_a_sixth_of_the_keys_and_no_others_move() -> None:
    five = [f"10.0.0.{n}:80" for n in range(1, 6)]
    state, cs = hash_state(five)
    before = {k: str(choose(state, cs, k)) for k in KEYS}
    state, cs = hash_state([*five, "10.0.0.6:80"])
    after = {k: str(choose(state, cs, k)) for k in KEYS}
    moved = [k for k in KEYS if before[k] != after[k]]
    assert all(after[k] == "10.0.0.6:80" for k in moved)
    assert 0 < len(moved) <= (1 / 6 + 0.03) * len(KEYS), len(moved)


def test_weights_set_a_servers_share_of_the_ring() -> None:
    ring = build_ring([("a:1", 1), ("b:1", 3)])
    share = arc_shares(ring, ["a:1", "b:1"])[1]
    assert 0.68 < share < 0.82, share


def test_a_request_without_a_key_is_balanced_round_robin() -> None:
    state, cs = hash_state(["a:1", "b:1", "c:1"])
    assert picks(state, cs, 4) == ["a:1", "b:1", "c:1", "a:1"]


# -- keys -----------------------------------------------------------------------------------


def test_client_ip_and_header_keys() -> None:
    req = make_request(headers=[("X-User", "alice"), ("x-user", "bob")], client="10.0.0.7:5555")
    assert request_key(req, HashKey("client_ip")) == b"10.0.0.7"
    assert request_key(make_request(client="[::1]:5555"), HashKey("client_ip")) == b"::1"
    assert request_key(req, HashKey("header", "x-user")) == b"alice", "the first field line"
    assert request_key(req, HashKey("header", "x-other")) is None
    assert request_key(req, None) is None


@pytest.mark.parametrize(
    ("fields", "key"),
    [
        (["a=1; sid=abc; sid=def"], b"abc"),
        (["a=1", "sid=abc"], b"abc"),  # every Cookie field, joined
        (["a=1;\tsid=x y ;b=2"], b"x y"),  # parts are stripped of spaces and tabs
        (['sid="quoted"'], b'"quoted"'),  # as is, not unquoted
        (["sid=a=b"], b"a=b"),  # split at the first "="
        (["sid="], b""),  # an empty value is a key
        (["SID=upper; sids=1; sid"], None),  # names are case-sensitive; a part without "=" has no value
        ([], None),
    ],
)
def test_cookie_keys(fields: list[str], key: bytes | None) -> None:
    req = make_request(headers=[("Cookie", f) for f in fields])
    assert request_key(req, HashKey("cookie", "sid")) == key


# -- in the kit, through the hook ------------------------------------------------------------


def simulator(**pool: Any) -> Simulator:
    return Simulator(proxy_config(pools={"app": pool}))


def test_the_hook_balances_each_pool_by_its_config() -> None:
    sim = simulator(servers=[{"address": "10.0.0.1:80", "weight": 5}, "10.0.0.2:80", "10.0.0.3:80"])
    upstreams = [sim.request("GET", "/").upstream for _ in range(7)]
    assert [u[-4] if u else "" for u in upstreams] == list("1121311")
    assert all(type(u) is str for u in upstreams)
    sim = simulator(servers=["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"], balance="hash", hash_key="cookie:sid")
    sticky = {sim.request("GET", "/", {"Cookie": "sid=s1"}).upstream for _ in range(5)}
    assert len(sticky) == 1
    spread = {sim.request("GET", "/", {"Cookie": f"sid=s{n}"}).upstream for n in range(30)}
    assert len(spread) == 3
    sim = simulator(servers=["10.0.0.1:80", "10.0.0.2:80"], balance="first")
    assert {sim.request("GET", "/").upstream for _ in range(3)} == {"10.0.0.1:80"}


def test_a_plugin_chooses_before_the_balancer_and_it_can_be_disabled() -> None:
    class Last:
        @staticmethod
        def rproxy_select_upstream(candidates: list[Candidate]) -> str:
            return str(candidates[-1])

    config = proxy_config(["10.0.0.1:80", "10.0.0.2:80"])
    assert Simulator(config, plugins=[("last", Last)]).request("GET", "/").upstream == "10.0.0.2:80"
    config["plugins"]["disable"] = ["balancer"]
    sim = Simulator(config)
    assert "balancer" not in sim.plugins.plugins
    assert [sim.request("GET", "/").upstream for _ in range(2)] == ["10.0.0.1:80"] * 2


def test_the_example_of_the_guide() -> None:
    (block,) = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "load-balancing.md").read_text(), re.S)
    module = types.ModuleType("nearby")
    exec(compile(block, "nearby", "exec"), module.__dict__)
    servers = ["10.0.2.5:9000", {"address": "10.0.1.6:9000", "weight": 2}, "10.0.1.5:9000"]
    sim = Simulator(proxy_config(servers), plugins=[("nearby", module)])
    assert sim.request("GET", "/").upstream == "10.0.1.6:9000", "of the nearby ones, the first of the least loaded"
    far = Simulator(proxy_config(["10.0.2.5:9000", "10.0.2.6:9000"]), plugins=[("nearby", module)])
    assert [far.request("GET", "/").upstream for _ in range(2)] == ["10.0.2.5:9000", "10.0.2.6:9000"]

"""The router's Python reference (docs/routing.md), through the test kit:
conditions, order, actions, path normalisation, templates and split."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

import rproxy
from rproxy.engine import engine_json
from rproxy.plan import Route, build_plan
from rproxy.plugins import load_plugins
from rproxy.routing import normalise_path, parse_template
from rproxy.testing import Simulator, proxy_config

POOLS = ("a", "b", "c")


def router(*routes: dict[str, Any]) -> Simulator:
    """A simulator whose routes are ``routes``, with pools a, b and c besides app."""
    pools = {name: {"servers": [f"10.0.0.{n}:80"]} for n, name in enumerate(POOLS, 1)}
    return Simulator(proxy_config(pools=pools, routes=list(routes)))


def route(
    sim: Simulator,
    target: str = "/",
    headers: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
    *,
    method: str = "GET",
    host: str = "test.local",
) -> Route | None:
    decided = sim.request(method, target, headers, host=host).route
    # The route's name is checked where it matters (test_route_names_*).
    return None if decided is None else dataclasses.replace(decided, name=None)


def pool(
    sim: Simulator,
    target: str = "/",
    headers: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
    *,
    method: str = "GET",
    host: str = "test.local",
) -> str | None:
    """The pool the request is forwarded to, or None when no route matches."""
    r = route(sim, target, headers, method=method, host=host)
    return None if r is None else r.upstream


def fallback(**conditions: Any) -> Simulator:
    """A route to a with ``conditions``, then a route to b for everything else."""
    return router({**conditions, "upstream": "a"}, {"upstream": "b"})


# -- order -----------------------------------------------------------------------


def test_the_first_matching_route_in_file_order_wins() -> None:
    sim = router(
        {"path_prefix": "/api/users/", "upstream": "a"},
        {"path_prefix": "/api/", "upstream": "b"},
        {"path_prefix": "/", "upstream": "c"},
    )
    assert pool(sim, "/api/users/1") == "a"
    assert pool(sim, "/api/items") == "b"
    assert pool(sim, "/other") == "c"
    # No ranking by specificity: a general route written first shadows the rest.
    shadowed = router({"path_prefix": "/", "upstream": "c"}, {"path": "/api/users/1", "upstream": "a"})
    assert pool(shadowed, "/api/users/1") == "c"


def test_no_match_is_none_and_a_404() -> None:
    sim = router({"path": "/only", "upstream": "a"})
    result = sim.request("GET", "/other")
    assert result.route is None
    assert result.response.status == 404


def test_a_route_without_conditions_matches_everything() -> None:
    sim = router({"upstream": "a"})
    assert pool(sim, "/anything?x=1", method="DELETE", host="") == "a"


# -- host ------------------------------------------------------------------------


def test_exact_host_is_case_insensitive_and_ignores_port_and_trailing_dot() -> None:
    sim = fallback(host="API.example.com")
    assert pool(sim, host="api.example.com") == "a"
    assert pool(sim, host="Api.Example.COM:8443") == "a"
    assert pool(sim, host="api.example.com.") == "a"
    assert pool(sim, host="www.api.example.com") == "b"
    assert pool(sim, host="example.com") == "b"


def test_wildcard_host_needs_at_least_one_label_before_the_suffix() -> None:
    sim = fallback(host="*.example.com")
    assert pool(sim, host="a.example.com") == "a"
    assert pool(sim, host="a.b.example.com") == "a"
    assert pool(sim, host="example.com") == "b"
    assert pool(sim, host="badexample.com") == "b"


def test_an_ipv6_host_is_written_with_or_without_brackets() -> None:
    for written in ["[::1]", "::1"]:
        sim = fallback(host=written)
        assert pool(sim, host="[::1]:8080") == "a"
        assert pool(sim, host="[::2]") == "b"


def test_a_list_of_hosts_matches_any_and_no_host_matches_none() -> None:
    sim = fallback(host=["one.test", "*.two.test"])
    assert pool(sim, host="one.test") == "a"
    assert pool(sim, host="x.two.test") == "a"
    assert pool(sim, host="two.test") == "b"
    assert pool(sim, host="") == "b"


# -- path ------------------------------------------------------------------------


def test_exact_path_prefix_and_regex() -> None:
    exact = fallback(path="/healthz")
    assert pool(exact, "/healthz") == "a"
    assert pool(exact, "/healthz?full=1") == "a"
    assert pool(exact, "/healthz/") == "b"
    prefix = fallback(path_prefix="/api")
    assert pool(prefix, "/api") == "a"
    assert pool(prefix, "/apix") == "a", "a prefix is a string prefix, not a directory"
    regex = fallback(path_regex="^/users/[0-9]+$")
    assert pool(regex, "/users/42") == "a"
    assert pool(regex, "/users/42/x") == "b"
    unanchored = fallback(path_regex="[0-9]+")
    assert pool(unanchored, "/v/7/x") == "a", "the expression may match anywhere"


@pytest.mark.parametrize("target", ["/admin", "/api/../admin", "/%61dmin", "//admin", "/./admin", "/x/%2e%2e/admin"])
def test_paths_are_normalised_before_matching(target: str) -> None:
    assert pool(fallback(path="/admin"), target) == "a"


def test_other_escapes_stay_encoded_with_upper_case_hex() -> None:
    sim = fallback(path_prefix="/a%2F")
    assert pool(sim, "/a%2fb") == "a"
    assert pool(sim, "/a/b") == "b"


def test_a_path_climbing_above_the_root_or_badly_escaped_matches_nothing() -> None:
    sim = router({"upstream": "a"})
    assert route(sim, "/../etc/passwd") is None
    assert route(sim, "/a/%zz") is None


def test_normalise_path() -> None:
    assert normalise_path("/api/../admin") == "/admin"
    assert normalise_path("/%61dmin") == "/admin"
    assert normalise_path("//admin///x") == "/admin/x"
    assert normalise_path("/a%2fb%7E%7e") == "/a%2Fb~~"
    assert normalise_path("/a/b/..") == "/a/"
    assert normalise_path("/a/./b/.") == "/a/b/"
    assert normalise_path("/a/..") == "/"
    assert normalise_path("/") == "/"
    assert normalise_path("/%C3%A9") == "/%C3%A9"
    assert normalise_path("/..") is None
    assert normalise_path("/a/../..") is None
    assert normalise_path("/%2e%2e/x") is None
    assert normalise_path("/%") is None
    assert normalise_path("/%4") is None
    assert normalise_path("/%g1") is None


# -- methods, headers, query -----------------------------------------------------------


def test_methods_are_case_sensitive() -> None:
    sim = fallback(methods=["GET", "HEAD"])
    assert pool(sim, method="GET") == "a"
    assert pool(sim, method="HEAD") == "a"
    assert pool(sim, method="POST") == "b"
    assert pool(sim, method="get") == "b"


def test_header_conditions() -> None:
    present = fallback(headers={"X-Debug": True})
    assert pool(present, headers={"x-debug": ""}) == "a"
    assert pool(present) == "b"
    absent = fallback(headers={"X-Debug": False})
    assert pool(absent) == "a"
    assert pool(absent, headers={"X-DEBUG": "1"}) == "b"
    equal = fallback(headers={"X-Env": "prod"})
    assert pool(equal, headers={"x-env": "prod"}) == "a"
    assert pool(equal, headers={"x-env": "Prod"}) == "b", "values are case-sensitive"
    regex = fallback(headers={"User-Agent": {"regex": "^curl/[0-9]"}})
    assert pool(regex, headers={"User-Agent": "curl/8.5"}) == "a"
    assert pool(regex, headers={"User-Agent": "Mozilla curl/8.5"}) == "b"


def test_each_field_line_is_tested_as_it_is() -> None:
    equal = fallback(headers={"X-Env": "prod"})
    assert pool(equal, headers=[("X-Env", "test"), ("X-Env", "prod")]) == "a", "any line may satisfy it"
    assert pool(equal, headers=[("X-Env", "test, prod")]) == "b", "a line is not split on commas"
    regex = fallback(headers={"X-Env": {"regex": "^prod$"}})
    assert pool(regex, headers=[("X-Env", "test"), ("X-Env", "prod")]) == "a"
    assert pool(regex, headers=[("X-Env", "test, prod")]) == "b"


def test_header_values_are_read_as_utf8() -> None:
    sim = fallback(headers={"X-Name": "José"})
    assert pool(sim, headers={"X-Name": "José"}) == "a"
    assert pool(sim, headers={"X-Name": "Jose"}) == "b"


def test_every_condition_must_hold() -> None:
    sim = fallback(host="api.test", path_prefix="/v1/", methods=["POST"], headers={"X-A": "1"}, query={"q": True})
    good = {"target": "/v1/x?q", "headers": {"X-A": "1"}, "method": "POST", "host": "api.test"}
    assert pool(sim, **good) == "a"
    for change in [{"target": "/v2/x?q"}, {"target": "/v1/x"}, {"headers": {}}, {"method": "GET"}, {"host": "b.test"}]:
        assert pool(sim, **{**good, **change}) == "b", change


def test_query_conditions() -> None:
    present = fallback(query={"debug": True})
    assert pool(present, "/?debug") == "a"
    assert pool(present, "/?debug=") == "a"
    assert pool(present, "/?a=1&debug=0") == "a"
    assert pool(present, "/?debugx=1") == "b"
    assert pool(present, "/") == "b"
    absent = fallback(query={"debug": False})
    assert pool(absent, "/?a=1") == "a"
    assert pool(absent, "/?debug") == "b"
    equal = fallback(query={"v": "2"})
    assert pool(equal, "/?v=1&v=2") == "a", "any occurrence may satisfy it"
    assert pool(equal, "/?v=%32") == "a", "values are percent-decoded"
    assert pool(equal, "/?%76=2") == "a", "names are percent-decoded"
    assert pool(equal, "/?V=2") == "b", "names are case-sensitive"
    assert pool(equal, "/?v=1") == "b"
    plus = fallback(query={"q": "a+b"})
    assert pool(plus, "/?q=a+b") == "a", "+ stays +"
    assert pool(plus, "/?q=a%20b") == "b"
    assert pool(plus, "/?q=a%2Bb") == "a"
    regex = fallback(query={"id": {"regex": "^[0-9]+$"}})
    assert pool(regex, "/?id=42") == "a"
    assert pool(regex, "/?id=42x") == "b"
    assert pool(regex, "/?id=42%0A") == "b", "$ matches only at the very end, as in the engine"
    dollars = fallback(query={"p": {"regex": r"^[$]x\$$"}})
    assert pool(dollars, "/?p=%24x%24") == "a", "a $ in a class or escaped is a literal"


# -- actions -----------------------------------------------------------------------


def test_respond() -> None:
    sim = router({"path": "/healthz", "respond": {"status": 204, "headers": {"X-Check": "1"}, "body": ""}})
    result = sim.request("GET", "/healthz")
    assert result.route is not None and result.route.respond is not None
    assert result.response.status == 204
    assert result.response.headers["x-check"] == "1"
    assert result.upstream is None


def test_redirect_expands_its_location_and_defaults_to_302() -> None:
    sim = router(
        {"host": "old.test", "redirect": {"status": 301, "location": "https://new.test$request_uri"}},
        {"path_regex": "^/u/(?P<id>[0-9]+)$", "redirect": {"location": "/users/${id}"}},
    )
    moved = sim.request("GET", "/a/../b?x=%20", host="old.test")
    assert moved.response.status == 301
    assert moved.response.headers.get_all("location") == ["https://new.test/a/../b?x=%20"]
    assert moved.upstream is None
    found = sim.request("GET", "/u/7")
    assert found.response.status == 302
    assert found.response.headers["location"] == "/users/7"
    assert found.response.body in (b"", None)


def test_upstream_without_rewriting_sends_the_target_as_received() -> None:
    r = route(router({"upstream": "a"}), "/a/../b?x=1")
    assert r == Route(upstream="a")


def test_strip_prefix_keeps_the_query() -> None:
    sim = router({"path_prefix": "/api/", "strip_prefix": True, "upstream": "a"}, {"upstream": "b"})
    assert route(sim, "/api/users?x=1") == Route(upstream="a", path="/users?x=1")
    assert route(sim, "/api/") == Route(upstream="a", path="/")
    assert route(sim, "/api/%61/../b") == Route(upstream="a", path="/b"), "starting from the normalised path"
    no_slash = router({"path_prefix": "/api", "strip_prefix": True, "upstream": "a"})
    assert route(no_slash, "/api") == Route(upstream="a", path="/")
    assert route(no_slash, "/apiv2/x") == Route(upstream="a", path="/v2/x"), "a result gets its leading /"
    assert route(no_slash, "/api/x") == Route(upstream="a", path="/x")


def test_rewrite_keeps_the_query_unless_the_template_has_one() -> None:
    sim = router(
        {"path_regex": "^/search/(.*)$", "rewrite": "/find?q=$1", "upstream": "a"},
        {"path_regex": "^/api/(.*)$", "rewrite": "/v2/$1", "upstream": "a"},
    )
    assert route(sim, "/api/users?page=2") == Route(upstream="a", path="/v2/users?page=2")
    assert route(sim, "/api/users") == Route(upstream="a", path="/v2/users")
    assert route(sim, "/search/cats?page=2") == Route(upstream="a", path="/find?q=cats")


def test_upstream_host_is_sent_upstream() -> None:
    sim = router({"upstream": "a", "upstream_host": "internal.$host"})
    result = sim.request("GET", "/", host="Shop.Test:8080")
    assert result.route == Route(upstream="a", host="internal.shop.test", name="routes[0]")
    assert result.upstream_request is not None
    assert result.upstream_request.headers.get_all("host") == ["internal.shop.test"]


def test_a_plugin_route_decides_first_and_none_hands_on() -> None:
    class Plugin:
        @rproxy.hookimpl
        def rproxy_route(self, request: rproxy.Request) -> Route | None:
            return Route(upstream="c") if request.path == "/plugin" else None

    config = proxy_config(pools={"c": {"servers": ["10.0.0.3:80"]}}, routes=[{"upstream": "app"}])
    sim = Simulator(config, plugins=[("p", Plugin())])
    assert pool(sim, "/plugin") == "c"
    assert pool(sim, "/other") == "app"


# -- templates -----------------------------------------------------------------------


def test_template_variables() -> None:
    sim = router(
        {
            "name": "vars",
            "path_regex": "^/t/([a-z]+)(/(?P<rest>.*))?$",
            "rewrite": "/$1/${rest}/$12/$$/$host/$path/$query/$request_uri/$scheme/$method/$route/x",
            "upstream": "a",
        }
    )
    r = route(sim, "/t/abc/%7Ex?q=%20&b", host="Example.test")
    assert r is not None
    assert r.path == "/abc/~x/abc2/$/example.test//t/abc/~x/q=%20&b//t/abc/%7Ex?q=%20&b/http/GET/vars/x?q=%20&b"
    unmatched = route(sim, "/t/abc")
    assert unmatched is not None and unmatched.path == "/abc//abc2/$/test.local//t/abc///t/abc/http/GET/vars/x"


def test_route_names_default_to_their_index() -> None:
    sim = router({"path": "/a", "respond": {}}, {"upstream": "a", "upstream_host": "$route"})
    assert sim.request("GET", "/b").route == Route(upstream="a", host="routes[1]", name="routes[1]")
    answered = sim.request("GET", "/a").route
    assert answered is not None and answered.name == "routes[0]" and answered.respond is not None
    assert route(sim, "/b") == Route(upstream="a", host="routes[1]")


def test_parse_template() -> None:
    assert parse_template("/v2/$1x${id}$$") == (("/v2/", "1"), ("x", "id"), ("$", ""))
    assert parse_template("$host_name.x") == (("", "host_name"), (".x", ""))
    assert parse_template("$12") == (("", "1"), ("2", ""))
    assert parse_template("plain") == (("plain", ""),)
    assert parse_template("") == (("", ""),)
    for bad in ["$", "a$-", "${", "${}", "${a-b}"]:
        with pytest.raises(ValueError):
            parse_template(bad)


# -- split ----------------------------------------------------------------------------


def split(weights: Sequence[int], **options: Any) -> Simulator:
    shares = [{"upstream": name, "weight": w} for name, w in zip(POOLS, weights, strict=False)]
    return router({"split": shares, **options})


def test_split_is_smooth_weighted_round_robin() -> None:
    sim = split([3, 1])
    assert [pool(sim) for _ in range(8)] == list("aabaaaba")
    sim = split([5, 1, 1])
    assert [pool(sim) for _ in range(14)] == list("aabacaa" * 2), "the sequence nginx documents"
    sim = split([1, 1])
    assert [pool(sim) for _ in range(4)] == list("abab")


def test_each_split_route_keeps_its_own_position() -> None:
    sim = router(
        {"path": "/x", "split": [{"upstream": "a", "weight": 1}, {"upstream": "b", "weight": 1}]},
        {"path": "/y", "split": [{"upstream": "a", "weight": 1}, {"upstream": "b", "weight": 1}]},
    )
    assert [pool(sim, "/x"), pool(sim, "/y"), pool(sim, "/x"), pool(sim, "/y")] == ["a", "a", "b", "b"]


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) % 2**64
    return h


def test_fnv1a64_known_values() -> None:
    assert fnv1a64(b"") == 0xCBF29CE484222325
    assert fnv1a64(b"a") == 0xAF63DC4C8601EC8C
    assert fnv1a64(b"foobar") == 0x85944171F73967E8


def expected_sticky(value: str, weights: Sequence[int]) -> str:
    """The pool owning FNV-1a(value) mod the total weight, pools laid out in order."""
    point = fnv1a64(value.encode()) % sum(weights)
    for name, weight in zip(POOLS, weights, strict=False):
        if point < weight:
            return name
        point -= weight
    raise AssertionError


def test_sticky_header_chooses_by_hash_of_the_first_line() -> None:
    sim = split([3, 1], sticky_header="X-User")
    users = [f"user-{n}" for n in range(50)]
    for user in users:
        chosen = pool(sim, headers=[("x-user", user), ("x-user", "other")])
        assert chosen == expected_sticky(user, [3, 1]), user
        assert pool(sim, headers={"X-User": user}) == chosen, "the same user, the same pool"
    assert {pool(sim, headers={"X-User": u}) for u in users} == {"a", "b"}


def test_sticky_cookie_chooses_by_hash_of_the_cookie_value() -> None:
    sim = split([1, 1, 1], sticky_cookie="uid")
    for n in range(30):
        uid = f"u{n}é"
        want = expected_sticky(uid, [1, 1, 1])
        assert pool(sim, headers={"Cookie": f"theme=dark; uid={uid}; uid=ignored"}) == want
        assert pool(sim, headers=[("Cookie", "theme=dark"), ("Cookie", f"\tuid={uid}")]) == want
    # Only an exact name counts; without the cookie the split turns round robin.
    assert [pool(sim, headers={"Cookie": "UID=1; xuid=2; uid"}) for _ in range(3)] == ["a", "b", "c"]


def test_sticky_values_spread_roughly_by_weight() -> None:
    sim = split([3, 1], sticky_header="X-User")
    counts = Counter(pool(sim, headers={"X-User": f"{n:08x}"}) for n in range(4000))
    assert 0.70 < counts["a"] / 4000 < 0.80


def test_sticky_without_the_value_falls_back_to_round_robin() -> None:
    sim = split([3, 1], sticky_header="X-User")
    assert [pool(sim) for _ in range(4)] == list("aaba")


# -- the engine's form ----------------------------------------------------------------


def test_the_router_runs_natively_unless_told_not_to() -> None:
    config = rproxy.testing._as_config(proxy_config(routes=[{"upstream": "app"}]))
    loaded = load_plugins(config)
    native = build_plan(loaded)
    assert [s.native for s in native.steps["rproxy_route"]] == ["router"]
    assert native.python_steps() == 0
    assert json.loads(engine_json(config, native))["natives"] == ["auth", "balancer", "cache", "headers", "router"]
    reference = build_plan(loaded, native=False)
    assert [s.native for s in reference.steps["rproxy_route"]] == [None]
    # The router's step, the header policy's in access, upstream_request and response, access control's,
    # the balancer's and the cache key's.
    assert reference.python_steps() == 7
    assert json.loads(engine_json(config, reference))["natives"] == []

"""The header policy's Python reference (docs/headers.md), through the test
kit: rule sets and their order, variables, hidden fields, the security
preset and CORS; and the configuration that feeds it."""

from __future__ import annotations

import json
import re
import types
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

import rproxy
from rproxy.builtins import headers as builtin
from rproxy.config import HEADER_VARIABLES, CorsSettings, HeaderRules, HeadersSettings, SecuritySettings
from rproxy.engine import engine_json
from rproxy.errors import ConfigError
from rproxy.plan import Route, build_plan
from rproxy.plugins import load_plugins
from rproxy.testing import Simulated, Simulator, make_response, proxy_config

Fields = Mapping[str, str] | Sequence[tuple[str, str]]
ORIGIN = "https://app.example.com"
PREFLIGHT_VARY = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"


def config(
    headers: dict[str, Any] | None = None,
    *,
    cors: dict[str, Any] | None = None,
    pools: dict[str, dict[str, Any]] | None = None,
    routes: list[dict[str, Any]] | None = None,
    defaults: dict[str, Any] | None = None,
    plugin_tables: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A test configuration: pools a and b (and app), and these tables."""
    all_pools: dict[str, dict[str, Any]] = {"a": {"servers": ["10.0.0.1:80"]}, "b": {"servers": ["10.0.0.2:80"]}}
    for name, settings in (pools or {}).items():
        all_pools[name] = {**all_pools.get(name, {}), **settings}
    doc = proxy_config(pools=all_pools, routes=routes, plugins=plugin_tables)
    if headers is not None:
        doc["headers"] = headers
    if cors is not None:
        doc["cors"] = cors
    if defaults is not None:
        doc["defaults"] = {"upstream": defaults}
    return doc


def simulator(headers: dict[str, Any] | None = None, *, plugins: Sequence[Any] = (), **tables: Any) -> Simulator:
    return Simulator(config(headers, **tables), plugins=plugins)


def send(
    sim: Simulator,
    method: str = "GET",
    target: str = "/",
    fields: Fields | None = None,
    *,
    upstream: rproxy.Response | None = None,
    **options: Any,
) -> Simulated:
    return sim.request(method, target, fields, upstream=upstream, **options)


def sent(result: Simulated, name: str) -> list[str]:
    """The lines of field ``name`` the upstream received."""
    assert result.upstream_request is not None, "the request was not forwarded"
    return result.upstream_request.headers.get_all(name)


def got(result: Simulated, name: str) -> list[str]:
    """The lines of field ``name`` the client received."""
    return result.response.headers.get_all(name)


def upstream_response(fields: Fields | None = None, status: int = 200) -> rproxy.Response:
    return rproxy.Response(status, fields, "from upstream\n")


# -- rule sets ----------------------------------------------------------------------


def test_request_rules_remove_set_and_add() -> None:
    sim = simulator(
        {"request": {"remove": ["X-Debug"], "set": {"X-Real-IP": "$client_ip"}, "add": {"X-Via": "rproxy"}}}
    )
    result = send(sim, fields=[("X-Debug", "1"), ("x-debug", "2"), ("X-Real-IP", "6.6.6.6"), ("X-Via", "client")])
    assert sent(result, "x-debug") == []
    assert sent(result, "x-real-ip") == ["127.0.0.1"], "set replaces every line with one"
    assert sent(result, "x-via") == ["client", "rproxy"], "add keeps the lines already there"


def test_within_a_rule_set_remove_runs_first_then_set_then_add() -> None:
    rules = {"add": {"x-a": "added"}, "set": {"x-a": "set"}, "remove": ["x-a"]}  # written in another order
    sim = simulator({"request": rules, "response": rules})
    result = send(sim, fields={"X-A": "client"}, upstream=upstream_response({"X-A": "upstream"}))
    assert sent(result, "x-a") == ["set", "added"]
    assert got(result, "x-a") == ["set", "added"]


def test_each_kind_runs_in_the_order_written() -> None:
    sim = simulator({"response": {"add": {"x-2": "b", "x-1": "a"}, "set": {"x-z": "1", "x-y": "2"}}})
    names = [name for name, _ in send(sim).response.headers.items() if name.startswith("x-")]
    assert names == ["x-z", "x-y", "x-2", "x-1"]


def test_rule_sets_apply_global_then_pool_then_route() -> None:
    def rules(who: str) -> dict[str, Any]:
        return {"set": {"x-last": who}, "add": {"x-trail": who}}

    sim = simulator(
        {"request": rules("global"), "response": rules("global")},
        pools={"a": {"request_headers": rules("pool"), "response_headers": rules("pool")}},
        routes=[
            {
                "path_prefix": "/a/",
                "upstream": "a",
                "request_headers": rules("route"),
                "response_headers": rules("route"),
            },
            {"path_prefix": "/b/", "upstream": "b"},
            {"upstream": "a"},
        ],
    )
    full = send(sim, target="/a/x")
    for lines in (sent, got):
        assert lines(full, "x-last") == ["route"]
        assert lines(full, "x-trail") == ["global", "pool", "route"]
    other_pool = send(sim, target="/b/x")
    assert sent(other_pool, "x-trail") == got(other_pool, "x-trail") == ["global"]
    same_pool_other_route = send(sim, target="/c")
    assert sent(same_pool_other_route, "x-trail") == got(same_pool_other_route, "x-trail") == ["global", "pool"]


def test_pool_rules_are_inherited_from_defaults_and_replaced_not_merged() -> None:
    sim = simulator(
        defaults={"request_headers": {"set": {"x-default": "1"}}},
        pools={"b": {"servers": ["10.0.0.2:80"], "request_headers": {"set": {"x-own": "1"}}}},
        routes=[{"path_prefix": "/b/", "upstream": "b"}, {"upstream": "a"}],
    )
    inherited = send(sim, target="/a")
    assert (sent(inherited, "x-default"), sent(inherited, "x-own")) == (["1"], [])
    own = send(sim, target="/b/")
    assert (sent(own, "x-default"), sent(own, "x-own")) == ([], ["1"])


def test_request_rules_run_after_routing_and_the_engines_own_fields() -> None:
    sim = simulator(
        {"request": {"set": {"x-forwarded-proto": "https"}, "remove": ["via"]}},
        routes=[
            {"upstream": "a", "upstream_host": "internal.test", "request_headers": {"set": {"host": "$host:8443"}}}
        ],
    )
    result = send(sim, host="shop.test")
    assert sent(result, "host") == ["shop.test:8443"], "a rule overrides the route's upstream_host"
    assert sent(result, "x-forwarded-proto") == ["https"]
    assert sent(result, "via") == []


def test_response_rules_apply_to_every_response() -> None:
    sim = simulator(
        {"response": {"add": {"x-global": "1"}}},
        routes=[
            {"path": "/ok", "respond": {"body": "ok"}, "response_headers": {"add": {"x-route": "1"}}},
            {"path": "/moved", "redirect": {"location": "/ok"}, "response_headers": {"add": {"x-route": "1"}}},
            {"path_prefix": "/up/", "upstream": "a", "response_headers": {"add": {"x-route": "1"}}},
        ],
    )
    for target in ["/ok", "/moved", "/up/x"]:
        result = send(sim, target=target)
        assert (got(result, "x-global"), got(result, "x-route")) == (["1"], ["1"]), target
    unrouted = send(sim, target="/nowhere")
    assert unrouted.response.status == 404
    assert (got(unrouted, "x-global"), got(unrouted, "x-route")) == (["1"], [])


def test_a_plugins_ordinary_hooks_see_the_rules_result() -> None:
    seen: dict[str, list[str]] = {}

    class Plugin:
        @rproxy.hookimpl
        def rproxy_upstream_request(self, request: rproxy.Request) -> None:
            seen["request"] = request.headers.get_all("x-rule")
            request.headers.set("x-rule", "plugin")

        @rproxy.hookimpl
        def rproxy_response(self, response: rproxy.Response) -> None:
            seen["response"] = response.headers.get_all("x-rule")
            response.headers.set("x-rule", "plugin")

    rules = {"set": {"x-rule": "rule"}}
    result = send(simulator({"request": rules, "response": rules}, plugins=[("p", Plugin())]))
    assert seen == {"request": ["rule"], "response": ["rule"]}
    assert sent(result, "x-rule") == got(result, "x-rule") == ["plugin"]


def test_a_plugin_route_naming_a_configured_route_gets_its_rules() -> None:
    class Plugin:
        @rproxy.hookimpl
        def rproxy_route(self, request: rproxy.Request) -> Route | None:
            if request.path == "/named":
                return Route(upstream="b", name="special")
            return Route(upstream="b") if request.path == "/unnamed" else None

    sim = simulator(
        {"response": {"add": {"x-route": "[$route]"}}},
        routes=[
            {"name": "special", "path": "/special", "upstream": "a", "response_headers": {"add": {"x-special": "1"}}},
            {"upstream": "a"},
        ],
        plugins=[("p", Plugin())],
    )
    named = send(sim, target="/named")
    assert (got(named, "x-route"), got(named, "x-special")) == (["[special]"], ["1"])
    unnamed = send(sim, target="/unnamed")
    assert (got(unnamed, "x-route"), got(unnamed, "x-special")) == (["[]"], [])


# -- variables ----------------------------------------------------------------------------

EVERY_VARIABLE = "|".join(f"${name}" for name in builtin.VARIABLES)


def test_the_reference_has_every_variable_the_configuration_accepts() -> None:
    assert tuple(builtin.VARIABLES) == HEADER_VARIABLES


def test_every_variable_in_request_and_response_rules() -> None:
    rules = {"set": {"x-vars": EVERY_VARIABLE, "x-literal": "$$path ${method}s"}}
    sim = simulator(
        {"request": rules, "response": rules},
        routes=[{"name": "api", "path_prefix": "/api/", "strip_prefix": True, "upstream": "a"}],
    )
    result = send(sim, "POST", "/api/%7Ex/./y?q=1&r", host="Shop.Example.TEST:8080", scheme="https")
    assert result.upstream_request is not None and result.upstream_request.path == "/~x/y", "rewritten upstream"
    (request_vars,) = sent(result, "x-vars")
    (response_vars,) = got(result, "x-vars")
    request_id = request_vars.rsplit("|", 1)[1]
    assert re.fullmatch("[0-9a-f]{32}", request_id)
    assert request_vars.split("|") == [
        "127.0.0.1",  # client_ip
        "127.0.0.1",  # remote_addr
        "shop.example.test",  # host
        "https",  # scheme
        "POST",  # method
        "/api/~x/y",  # path: the client's, normalised
        "q=1&r",  # query
        "/api/%7Ex/./y?q=1&r",  # request_uri: as sent
        "api",  # route
        "a",  # upstream
        "10.0.0.1:80",  # upstream_addr
        "",  # auth_user: no policy on this route
        request_id,
    ]
    assert response_vars == request_vars, "the response rules see the same values, the same request id included"
    assert sent(result, "x-literal") == got(result, "x-literal") == ["$path POSTs"]
    assert send(sim, target="/api/").response.headers["x-vars"].rsplit("|", 1)[1] != request_id, "one id per request"


def test_variables_that_can_be_empty() -> None:
    sim = simulator({"response": {"set": {"x-vars": "$route|$upstream|$upstream_addr|$query"}}})
    assert got(send(sim, target="/x"), "x-vars") == ["routes[0]|app|127.0.0.1:9|"]
    only = [{"path": "/only", "upstream": "a"}]
    unrouted = simulator({"response": {"set": {"x-vars": "$route|$upstream|$upstream_addr|$query"}}}, routes=only)
    assert got(send(unrouted, target="/x?"), "x-vars") == ["|||"]


def test_ip_addresses_are_written_without_brackets() -> None:
    sim = simulator({"request": {"set": {"x-ips": "$client_ip $remote_addr"}}})
    assert sent(send(sim, client="[::1]:5000"), "x-ips") == ["::1 ::1"]


def fake_request(**values: Any) -> Any:
    """A request with the properties the variables read, for the cases the
    test views cannot make (a client address from a trusted proxy, a path
    that does not normalise)."""
    base = {
        "client": "203.0.113.7",
        "remote_addr": "10.0.0.9",
        "host": None,
        "scheme": "http",
        "method": "GET",
        "uri": "/",
        "route_name": None,
        "upstream_pool": None,
        "upstream": None,
        "id": "0" * 32,
    }
    return types.SimpleNamespace(**{**base, **values})


def test_variables_of_requests_the_test_views_cannot_make() -> None:
    def expand(text: str, **values: Any) -> str:
        return builtin.expand(rproxy.routing.parse_template(text), fake_request(**values))

    assert expand("$client_ip $remote_addr") == "203.0.113.7 10.0.0.9", "the client named by a trusted proxy"
    assert expand("[$host]") == "[]"
    assert expand("[$path][$query]", uri="/../x?a") == "[][a]", "a path that cannot be normalised is empty"
    assert expand("[$path][$query]", uri="*") == "[*][]"


def test_a_value_that_expands_to_an_invalid_field_value_is_skipped() -> None:
    rules = builtin._rules(HeaderRules(set=(("x-uri", "$request_uri"),), add=(("x-add", "<$request_uri>"),)))
    fields = make_response(200, {"x-uri": "kept"}).headers
    builtin.apply_rules([rules], fields, fake_request(uri="/a\nb"))
    assert fields.items() == [("x-uri", "kept")]


# -- hiding the origin -----------------------------------------------------------------------

ORIGIN_FIELDS = ["server", "x-powered-by", "x-aspnet-version", "x-aspnetmvc-version", "x-runtime", "x-generator"]


def test_hide_removes_the_origins_identifying_fields_by_default() -> None:
    upstream = upstream_response([(name.title(), "secret") for name in ORIGIN_FIELDS] + [("X-Other", "1")])
    result = send(simulator(), upstream=upstream)
    assert [name for name, _ in result.response.headers.items()] == ["x-other"]


def test_hide_can_pass_them_through_or_name_others() -> None:
    upstream = upstream_response([("Server", "nginx"), ("X-Backend", "b1")])
    passed = send(simulator({"hide": []}), upstream=upstream_response([("Server", "nginx"), ("X-Backend", "b1")]))
    assert (got(passed, "server"), got(passed, "x-backend")) == (["nginx"], ["b1"])
    custom = send(simulator({"hide": ["X-Backend"]}), upstream=upstream)
    assert (got(custom, "server"), got(custom, "x-backend")) == (["nginx"], [])


def test_hide_runs_before_the_response_rules() -> None:
    sim = simulator({"response": {"set": {"server": "rproxy"}}})
    assert got(send(sim, upstream=upstream_response({"Server": "nginx"})), "server") == ["rproxy"]


# -- security headers ------------------------------------------------------------------------------

PRESET = {
    "x-content-type-options": ["nosniff"],
    "x-frame-options": ["DENY"],
    "referrer-policy": ["strict-origin-when-cross-origin"],
    "content-security-policy": ["frame-ancestors 'none'"],
}


def security_fields(result: Simulated) -> dict[str, list[str]]:
    names = [*PRESET, "strict-transport-security"]
    return {name: got(result, name) for name in names if got(result, name)}


def test_the_security_preset_is_off_unless_asked_for() -> None:
    assert security_fields(send(simulator(), scheme="https")) == {}
    assert security_fields(send(simulator({"security": False}), scheme="https")) == {}


def test_the_security_preset_sends_hsts_only_over_tls() -> None:
    sim = simulator({"security": True})
    assert security_fields(send(sim, scheme="http")) == PRESET
    assert security_fields(send(sim, scheme="https")) == {**PRESET, "strict-transport-security": ["max-age=31536000"]}


def test_the_security_preset_keeps_the_fields_a_response_has() -> None:
    own = {"X-Frame-Options": "SAMEORIGIN", "Content-Security-Policy": "default-src 'self'"}
    result = send(simulator({"security": True}), upstream=upstream_response(own))
    assert security_fields(result) == {
        **PRESET,
        "x-frame-options": ["SAMEORIGIN"],
        "content-security-policy": ["default-src 'self'"],
    }


def test_the_security_table() -> None:
    same_origin = simulator({"security": {"frame_options": "SAMEORIGIN", "hsts": "max-age=60", "referrer_policy": ""}})
    assert security_fields(send(same_origin, scheme="https")) == {
        "strict-transport-security": ["max-age=60"],
        "x-content-type-options": ["nosniff"],
        "x-frame-options": ["SAMEORIGIN"],
        "content-security-policy": ["frame-ancestors 'self'"],
    }
    with_csp = simulator({"security": {"csp": "default-src 'none'", "content_type_options": ""}})
    assert security_fields(send(with_csp)) == {
        "x-frame-options": ["DENY"],
        "referrer-policy": ["strict-origin-when-cross-origin"],
        "content-security-policy": ["default-src 'none'"],
    }
    no_frames = simulator({"security": {"frame_options": ""}})
    assert "content-security-policy" not in security_fields(send(no_frames))


def test_response_rules_can_override_the_preset() -> None:
    sim = simulator({"security": True, "response": {"set": {"x-frame-options": "SAMEORIGIN"}}})
    assert got(send(sim), "x-frame-options") == ["SAMEORIGIN"]


def test_proxy_made_responses_get_the_preset_too() -> None:
    sim = simulator({"security": True}, routes=[{"path": "/ok", "respond": {}}])
    assert security_fields(send(sim, target="/ok")) == PRESET
    assert security_fields(send(sim, target="/missing")) == PRESET


# -- CORS ------------------------------------------------------------------------------------------


def preflight(
    sim: Simulator, origin: str = ORIGIN, target: str = "/", asked: str | None = None, **options: Any
) -> Simulated:
    fields = [("Origin", origin), ("Access-Control-Request-Method", "PUT")]
    if asked is not None:
        fields.append(("Access-Control-Request-Headers", asked))
    return send(sim, "OPTIONS", target, fields, **options)


def cors_fields(result: Simulated) -> list[tuple[str, str]]:
    return [(k, v) for k, v in result.response.headers.items() if k.startswith("access-control-") or k == "vary"]


def test_an_allowed_preflight_is_answered_by_the_proxy() -> None:
    sim = simulator(cors={"origins": [ORIGIN, "http://localhost:3000"], "headers": ["Content-Type", "x-a"]})
    result = preflight(sim, asked="content-type")
    assert result.response.status == 204
    assert result.upstream is None and result.upstream_request is None, "it never reaches an upstream"
    assert cors_fields(result) == [
        ("access-control-allow-origin", ORIGIN),
        ("access-control-allow-methods", "GET, HEAD, POST"),
        ("access-control-allow-headers", "content-type, x-a"),
        ("vary", PREFLIGHT_VARY),
    ]
    assert result.response.body in (b"", None)


def test_a_preflight_from_another_origin_is_refused() -> None:
    sim = simulator(cors={"origins": [ORIGIN]})
    for origin in ["https://evil.example.com", "https://APP.example.com", ORIGIN + ":443", "null"]:
        result = preflight(sim, origin=origin)
        assert result.response.status == 403, origin
        assert result.response.body == b"CORS origin not allowed\n"
        assert got(result, "content-type") == ["text/plain; charset=utf-8"]
        assert cors_fields(result) == []
        assert result.upstream is None


def test_a_preflight_with_every_option() -> None:
    sim = simulator(cors={"origins": [ORIGIN], "methods": ["GET", "PUT"], "credentials": True, "max_age": "10m59.9s"})
    assert cors_fields(preflight(sim)) == [
        ("access-control-allow-origin", ORIGIN),
        ("access-control-allow-credentials", "true"),
        ("access-control-allow-methods", "GET, PUT"),
        ("access-control-max-age", "659"),
        ("vary", PREFLIGHT_VARY),
    ]


def test_any_origin() -> None:
    anyone = simulator(cors={"origins": ["*"]})
    assert got(preflight(anyone, origin="https://x.test"), "access-control-allow-origin") == ["*"]
    assert got(preflight(anyone, origin="null"), "access-control-allow-origin") == ["*"]
    with pytest.raises(rproxy.ConfigError, match="credentials with origins"):
        simulator(cors={"origins": ["*"], "credentials": True})


def test_allowed_headers_star_repeats_what_the_preflight_asks() -> None:
    sim = simulator(cors={"origins": [ORIGIN], "headers": ["*"]})
    asked = preflight(sim, asked="X-Custom, content-type")
    assert got(asked, "access-control-allow-headers") == ["X-Custom, content-type"]
    assert got(preflight(sim), "access-control-allow-headers") == []
    assert got(preflight(sim, asked=""), "access-control-allow-headers") == []


def test_options_without_request_method_or_origin_is_no_preflight() -> None:
    sim = simulator(cors={"origins": [ORIGIN]})
    plain = send(sim, "OPTIONS", "/", {"Origin": ORIGIN})
    assert plain.upstream is not None, "forwarded"
    assert got(plain, "access-control-allow-origin") == [ORIGIN], "an actual request"
    no_origin = send(sim, "OPTIONS", "/", {"Access-Control-Request-Method": "PUT"})
    assert no_origin.upstream is not None and cors_fields(no_origin) == [("vary", "Origin")]


def test_an_allowed_actual_request_gets_the_allow_fields() -> None:
    sim = simulator(cors={"origins": [ORIGIN], "expose": ["X-Request-Id", "x-b"], "credentials": True})
    own = [("Access-Control-Allow-Origin", "*"), ("Vary", "Accept-Encoding"), ("Access-Control-Expose-Headers", "x")]
    result = send(sim, "POST", "/", {"Origin": ORIGIN}, upstream=upstream_response(own))
    assert result.upstream is not None
    assert sorted(cors_fields(result)) == [
        ("access-control-allow-credentials", "true"),
        ("access-control-allow-origin", ORIGIN),
        ("access-control-expose-headers", "x-request-id, x-b"),
        ("vary", "Accept-Encoding"),
        ("vary", "Origin"),
    ], "the upstream's own fields are replaced"
    assert got(result, "vary") == ["Accept-Encoding", "Origin"], "Vary: Origin is added, not merged"


def test_an_actual_request_allowed_as_any_origin_gets_no_vary() -> None:
    result = send(simulator(cors={"origins": ["*"]}), "GET", "/", {"Origin": ORIGIN})
    assert cors_fields(result) == [("access-control-allow-origin", "*")]


def test_requests_without_an_allowed_origin_get_no_allow_fields_but_vary() -> None:
    sim = simulator(cors={"origins": [ORIGIN]})
    own = {"Access-Control-Allow-Origin": "https://other.test", "Access-Control-Allow-Credentials": "true"}
    for fields in [{}, {"Origin": "https://evil.example.com"}]:
        result = send(sim, "GET", "/", fields, upstream=upstream_response(own))
        assert cors_fields(result) == [("vary", "Origin")], "the upstream's own are removed"


def test_a_route_turns_cors_off_or_has_its_own() -> None:
    sim = simulator(
        cors={"origins": [ORIGIN]},
        routes=[
            {"path_prefix": "/public/", "upstream": "a", "cors": False},
            {"path_prefix": "/partner/", "upstream": "a", "cors": {"origins": ["https://partner.test"]}},
            {"upstream": "a"},
        ],
    )
    off = preflight(sim, target="/public/x")
    assert off.upstream is not None and cors_fields(off) == [], "the preflight goes upstream"
    assert cors_fields(send(sim, "GET", "/public/x", {"Origin": ORIGIN})) == []
    assert preflight(sim, target="/partner/x").response.status == 403, "the route's own origins only"
    assert preflight(sim, target="/partner/x", origin="https://partner.test").response.status == 204
    assert preflight(sim, target="/other").response.status == 204


def test_a_routes_own_cors_without_a_global_one() -> None:
    sim = simulator(routes=[{"path": "/cors", "upstream": "a", "cors": {"origins": ["*"]}}, {"upstream": "a"}])
    assert preflight(sim, target="/cors").response.status == 204
    assert preflight(sim, target="/other").upstream is not None


def test_cors_covers_routes_that_answer_themselves_and_routes_of_plugins() -> None:
    class Plugin:
        @rproxy.hookimpl
        def rproxy_route(self, request: rproxy.Request) -> Route | None:
            return Route(upstream="b") if request.path == "/plugin" else None

    sim = simulator(
        cors={"origins": [ORIGIN]},
        routes=[{"path": "/ok", "respond": {"body": "ok"}}],
        plugins=[("p", Plugin())],
    )
    assert preflight(sim, target="/ok").response.status == 204
    assert got(send(sim, "GET", "/ok", {"Origin": ORIGIN}), "access-control-allow-origin") == [ORIGIN]
    assert preflight(sim, target="/plugin").response.status == 204, "the global [cors] for a plugin's route"
    unrouted = preflight(sim, target="/nowhere")
    assert unrouted.response.status == 404 and cors_fields(unrouted) == [], "no route, no CORS"


def test_cors_runs_before_the_response_rules_and_a_preflight_gets_no_actual_fields() -> None:
    sim = simulator(
        {"response": {"remove": ["access-control-allow-methods"], "add": {"vary": "Accept"}}},
        cors={"origins": [ORIGIN], "expose": ["x-a"]},
    )
    answered = preflight(sim)
    assert got(answered, "vary") == [PREFLIGHT_VARY, "Accept"]
    assert got(answered, "access-control-allow-methods") == []
    assert got(answered, "access-control-expose-headers") == []


def test_the_preflight_is_answered_before_ordinary_access_hooks() -> None:
    class Locked:
        @rproxy.hookimpl
        def rproxy_access(self, request: rproxy.Request) -> rproxy.Response:
            return rproxy.Response(401, body="log in\n")

    sim = simulator(cors={"origins": [ORIGIN]}, plugins=[("locked", Locked())])
    assert preflight(sim).response.status == 204
    assert send(sim, "GET", "/", {"Origin": ORIGIN}).response.status == 401


# -- the plugin -------------------------------------------------------------------------------------


def test_disabling_the_plugin_turns_everything_off() -> None:
    sim = simulator(
        {"security": True, "response": {"add": {"x-a": "1"}}},
        cors={"origins": [ORIGIN]},
        plugin_tables={"disable": ["headers"]},
    )
    result = preflight(sim, upstream=upstream_response({"Server": "nginx"}))
    assert result.upstream is not None
    assert got(result, "server") == ["nginx"]
    assert (security_fields(result), cors_fields(result), got(result, "x-a")) == ({}, [], [])


def test_the_plugin_runs_natively_unless_told_not_to() -> None:
    cfg = rproxy.testing._as_config(config())
    loaded = load_plugins(cfg)
    native = build_plan(loaded)
    hooks = ["rproxy_access", "rproxy_upstream_request", "rproxy_response"]
    # In rproxy_access, CORS preflights are answered before the auth built-in checks credentials.
    assert [[s.native for s in native.steps[h]] for h in hooks] == [["headers", "auth"], ["headers"], ["headers"]]
    assert "headers" in json.loads(engine_json(cfg, native))["natives"]
    reference = build_plan(loaded, native=False)
    assert [[(s.plugin, s.native) for s in reference.steps[h]] for h in hooks] == [
        [("headers", None), ("auth", None)],
        [("headers", None)],
        [("headers", None)],
    ]
    assert json.loads(engine_json(cfg, reference))["natives"] == []


def test_the_plugin_has_no_options() -> None:
    with pytest.raises(ConfigError, match=r"plugins\.headers\.hide: the headers plugin has no options"):
        Simulator(config(plugin_tables={"headers": {"hide": []}}))


# -- configuration ------------------------------------------------------------------------------------


def test_configuration_values() -> None:
    cfg = rproxy.testing._as_config(
        config(
            {"hide": ["X-Powered-By"], "security": {"csp": "default-src 'self'"}, "request": {"remove": ["X-A"]}},
            cors={"origins": ["https://a.test:8443", "http://[::1]:3000"], "headers": ["X-B"], "max_age": "1h"},
            routes=[
                {"path": "/off", "upstream": "a", "cors": False},
                {"path": "/own", "upstream": "a", "cors": {"origins": ["*"]}},
                {"upstream": "a", "response_headers": {"set": {"Cache-Control": "no-store"}}},
            ],
        )
    )
    assert cfg.headers == HeadersSettings(
        hide=("x-powered-by",),
        security=SecuritySettings(csp="default-src 'self'"),
        request=HeaderRules(remove=("x-a",)),
    )
    assert cfg.cors == CorsSettings(
        origins=("https://a.test:8443", "http://[::1]:3000"), headers=("x-b",), max_age=3600.0
    )
    assert [r.cors for r in cfg.routes] == [False, CorsSettings(origins=("*",)), None]
    assert cfg.routes[2].response_headers == HeaderRules(set=(("cache-control", "no-store"),))
    assert cfg.upstreams["a"].request_headers == HeaderRules()
    assert rproxy.testing._as_config(config({"security": True})).headers.security == SecuritySettings()


def test_configuration_defaults() -> None:
    cfg = rproxy.testing._as_config(config())
    assert cfg.headers == HeadersSettings()
    assert cfg.headers.hide == tuple(ORIGIN_FIELDS)
    assert cfg.headers.security is None
    assert cfg.cors is None
    assert [(r.request_headers, r.response_headers, r.cors) for r in cfg.routes] == [
        (HeaderRules(), HeaderRules(), None)
    ]


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        ({"headers": {"security": "yes"}}, "headers.security: expected true, false or a table"),
        ({"headers": 3}, "headers: expected a table, got an integer"),
        ({"cors": False}, "cors: expected a table, got a boolean"),
        ({"cors": {"origins": ["https://a.test:99999"]}}, "port 99999 is out of range"),
        ({"cors": {}}, 'cors: missing required key "origins"'),
        ({"headers": {"response": {"set": {"x-a": "$upstream_adr"}}}}, 'did you mean "$upstream_addr"?'),
        ({"headers": {"request": {"add": {"x-a": "  "}}}}, "starts or ends with white space"),
        ({"headers": {"hide": "server"}}, "headers.hide: expected an array of header field names"),
    ],
)
def test_configuration_errors(tables: dict[str, Any], message: str) -> None:
    doc = {**config(), **tables}
    with pytest.raises(ConfigError) as info:
        rproxy.testing._as_config(doc)
    assert message in str(info.value)

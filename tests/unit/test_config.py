"""Configuration: golden error messages, units, positions, defaults, and the
engine form."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

import rproxy
from rproxy import cli
from rproxy._toml_positions import Positions
from rproxy.config import Address, HashKey, HealthCheck, Server, parse_duration, parse_size
from rproxy.errors import ConfigError

GOLDEN = Path(__file__).parent.parent / "golden" / "config"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


CASES = sorted(p.stem for p in GOLDEN.glob("*.toml"))


@pytest.mark.parametrize("name", CASES)
def test_error_messages_match_golden_files(
    name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`rproxy check` output for each broken file; RPROXY_UPDATE_GOLDEN=1 rewrites them."""
    monkeypatch.chdir(GOLDEN)
    assert cli.main(["check", f"{name}.toml"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "Traceback" not in err
    golden = GOLDEN / f"{name}.err"
    if os.environ.get("RPROXY_UPDATE_GOLDEN"):
        golden.write_text(err)
    assert err == golden.read_text()


def test_debug_shows_a_traceback(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(GOLDEN)
    assert cli.main(["check", "--debug", "invalid_toml.toml"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_all_errors_are_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        rproxy.load(GOLDEN / "bad_values.toml")
    assert len(info.value.issues) >= 10
    first = info.value.issues[0]
    assert (first.line, first.col, first.path) == (2, 11, "server.listen[0]")


def test_durations_and_sizes() -> None:
    assert parse_duration("500ms") == 0.5
    assert parse_duration("1m30s") == 90
    assert parse_duration("2h") == 7200
    assert parse_size("64KiB") == 65536
    assert parse_size("16MiB") == 16 << 20
    assert parse_size("1GB") == 10**9
    assert parse_size("8k") == 8192
    assert parse_size(512) == 512
    for bad in ["10", "s", "", "1.5.5s", "10 s"]:
        with pytest.raises(ValueError):
            parse_duration(bad)
    for bad in ["lots", "1.5MiB", "-1", "MiB"]:
        with pytest.raises(ValueError):
            parse_size(bad)


def test_positions_of_keys_and_values() -> None:
    text = '''# comment
[server]
listen = [ "a:1",
  "b:2" ]  # trailing
"quoted.key" = { x = 1, y = [1, 2] }

[[routes]]
path_prefix = "/"
[[routes]]
a.b = 'lit'
[routes.sub]
k = """multi
line"""
v = 2
'''
    p = Positions(text)
    assert p.values[("server", "listen", 0)] == (3, 12)
    assert p.values[("server", "listen", 1)] == (4, 3)
    assert p.keys[("server", "quoted.key", "y")] == (5, 25)
    assert p.values[("server", "quoted.key", "y", 1)] == (5, 33)
    assert p.keys[("routes", 0)] == (7, 1)
    assert p.values[("routes", 0, "path_prefix")] == (8, 15)
    assert p.values[("routes", 1, "a", "b")] == (10, 7)
    assert p.keys[("routes", 1, "sub")] == (11, 1)
    assert p.values[("routes", 1, "sub", "v")] == (14, 5)
    assert p.locate(("routes", 1, "missing")) == (9, 1)
    assert p.locate(("nowhere",)) == (1, 1)


def test_defaults_and_inheritance() -> None:
    cfg = rproxy.loads("""
[defaults.upstream]
connect_timeout = "250ms"

[upstreams.a]
servers = ["localhost:9000"]

[upstreams.b]
servers = ["[::1]:9001"]
connect_timeout = "1s"

[[routes]]
path_prefix = "/"
upstream = "a"
""")
    assert cfg.server.listen == (Address("127.0.0.1", 8080),)
    assert cfg.server.client_header_timeout == 10
    assert cfg.server.max_body_size == 128 << 20
    assert cfg.server.max_header_bytes == 64 << 10
    assert cfg.upstreams["a"].connect_timeout == 0.25
    assert cfg.upstreams["a"].servers == (Server(Address("127.0.0.1", 9000)),)
    assert cfg.upstreams["b"].connect_timeout == 1
    assert cfg.upstreams["b"].response_timeout == 30
    assert str(cfg.upstreams["b"].servers[0]) == "[::1]:9001"


def test_engine_form(tmp_path: Path) -> None:
    (tmp_path / "keys.txt").write_text("# partners\n\ninitech: k-initech\n")
    sha512_hello = (
        "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"
    )
    (tmp_path / "users.htpasswd").write_text(f"bob:{sha512_hello}\n")
    numbers = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key().public_numbers()
    n = b64url(numbers.n.to_bytes(256, "big"))
    jwks = {
        "keys": [
            {"kty": "RSA", "kid": "r1", "alg": "RS256", "use": "sig", "n": n, "e": "AAEAAQ"},  # e with a leading 0
            {"kty": "oct", "kid": "h1", "k": "c2VjcmV0"},
        ]
    }
    (tmp_path / "jwks.json").write_text(json.dumps(jwks))
    cfg = rproxy.loads(
        """
[server]
listen = [":8080", "127.0.0.1:8081"]
max_connections = 1001

[upstreams.app]
servers = ["127.0.0.1:9000"]

[upstreams.canary]
servers = ["127.0.0.1:9001"]
request_headers = { set = { "X-Pool" = "$upstream" } }
response_headers = { remove = ["X-Internal"] }

[headers]
hide = ["Server"]
security = { hsts = "", frame_options = "SAMEORIGIN" }

[headers.request]
remove = ["X-Debug", "x-trace"]
set = { "X-Real-IP" = "$client_ip", "x-request-id" = "${request_id}" }
add = { "Via" = "rproxy $$1" }

[cors]
origins = ["https://app.example.com", "http://localhost:3000"]
headers = ["Content-Type"]
credentials = true
max_age = "10m30.9s"

[[routes]]
path_prefix = "/ok"
respond = { status = 204, headers = { "X-A" = "1" } }
response_headers = { add = { "Cache-Control" = "no-store" } }
cors = false

[[routes]]
name = "users"
host = ["API.example.com", "*.Example.com."]
path_regex = "^/users/(?P<id>[0-9]+)$"
methods = ["GET", "HEAD"]
headers = { X-Env = "prod", X-Debug = false, X-Trace = true, User-Agent = { regex = "^curl/" } }
query = { V = "2" }
split = [{ upstream = "app", weight = 3 }, { upstream = "canary" }]
sticky_header = "X-User"
rewrite = "/v2/users/${id}"
upstream_host = "internal.$host"

[[routes]]
host = "old.example.com"
redirect = { status = 301, location = "https://new.example.com$request_uri" }
cors = { origins = ["*"], methods = ["GET"], headers = ["*"], expose = ["X-Request-Id"] }
auth = "sso"

[[routes]]
path_prefix = "/"
upstream = "app"
strip_prefix = true
auth = ["partners", "staff"]
allow = ["10.0.0.0/8", "::ffff:192.0.2.0/120", "2001:db8::1"]
deny = ["10.0.0.13"]

[auth.partners]
type = "api_key"
keys = { acme = "k-acme" }
keys_file = "TMP/keys.txt"

[auth.by_query]
type = "api_key"
query = "api_key"
keys = { globex = "k-globex" }
realm = 'Query "keys" \\ here'
forward_credentials = true

[auth.staff]
type = "basic"
htpasswd = "TMP/users.htpasswd"

[auth.tokens]
type = "jwt"
algorithms = ["HS256", "RS256"]
secret = "an HS256 secret"
jwks_file = "TMP/jwks.json"
issuer = "https://id.example"
audience = "api"
leeway = "1.5s"

[auth.sso]
type = "forward"
upstream = "canary"
path = "/check?from=proxy"
send_headers = ["Cookie", "X-Token"]
copy_headers = ["X-User"]
cache = "2m"

[plugins]
dirs = []
""".replace("TMP", str(tmp_path))
    )
    engine = cfg.engine_config(workers=2)
    assert engine["server"]["listen"] == ["0.0.0.0:8080", "127.0.0.1:8081"]
    assert engine["server"]["max_connections"] == 501
    assert engine["server"]["client_header_timeout"] == 10_000
    assert engine["upstreams"]["app"]["connect_timeout"] == 2000
    no_rules = {"remove": [], "set": [], "add": []}
    assert engine["upstreams"]["app"]["request_headers"] == no_rules
    assert engine["upstreams"]["app"]["response_headers"] == no_rules
    assert engine["upstreams"]["canary"]["request_headers"] == {**no_rules, "set": [["x-pool", "$upstream"]]}
    assert engine["upstreams"]["canary"]["response_headers"] == {**no_rules, "remove": ["x-internal"]}
    assert engine["headers"] == {
        "hide": ["server"],
        "security": {
            "hsts": "",
            "content_type_options": "nosniff",
            "frame_options": "SAMEORIGIN",
            "referrer_policy": "strict-origin-when-cross-origin",
            "csp": "",
        },
        "request": {
            "remove": ["x-debug", "x-trace"],
            "set": [["x-real-ip", "$client_ip"], ["x-request-id", "${request_id}"]],
            "add": [["via", "rproxy $$1"]],
        },
        "response": no_rules,
    }
    assert engine["cors"] == {
        "origins": ["https://app.example.com", "http://localhost:3000"],
        "methods": ["GET", "HEAD", "POST"],
        "headers": ["content-type"],
        "expose": [],
        "credentials": True,
        "max_age": 630,
    }
    nothing = {
        "hosts": [], "path": None, "path_prefix": None, "path_regex": None, "methods": [], "headers": [],
        "query": [], "upstream": None, "split": [], "sticky_cookie": None, "sticky_header": None,
        "strip_prefix": False, "rewrite": None, "upstream_host": None, "redirect": None, "respond": None,
        "request_headers": no_rules, "response_headers": no_rules, "cors": None, "auth": [], "allow": [],
        "deny": [], "cache": None, "cache_ttl": None,
    }  # fmt: skip
    assert engine["routes"][0] == {
        **nothing,
        "name": "routes[0]",
        "path_prefix": "/ok",
        "respond": {"status": 204, "body": "", "headers": [["X-A", "1"]]},
        "response_headers": {**no_rules, "add": [["cache-control", "no-store"]]},
        "cors": False,
    }
    assert engine["routes"][1] == {
        **nothing,
        "name": "users",
        "hosts": ["api.example.com", "*.example.com"],
        "path_regex": "^/users/(?P<id>[0-9]+)$",
        "methods": ["GET", "HEAD"],
        "headers": [
            {"name": "x-env", "cond": "equals", "value": "prod"},
            {"name": "x-debug", "cond": "absent", "value": ""},
            {"name": "x-trace", "cond": "present", "value": ""},
            {"name": "user-agent", "cond": "regex", "value": "^curl/"},
        ],
        "query": [{"name": "V", "cond": "equals", "value": "2"}],
        "split": [{"upstream": "app", "weight": 3}, {"upstream": "canary", "weight": 1}],
        "sticky_header": "x-user",
        "rewrite": "/v2/users/${id}",
        "upstream_host": "internal.$host",
    }
    assert engine["routes"][2] == {
        **nothing,
        "name": "routes[2]",
        "hosts": ["old.example.com"],
        "redirect": {"status": 301, "location": "https://new.example.com$request_uri"},
        "cors": {
            "origins": ["*"],
            "methods": ["GET"],
            "headers": ["*"],
            "expose": ["x-request-id"],
            "credentials": False,
            "max_age": None,
        },
        "auth": ["sso"],
    }
    assert engine["routes"][3] == {
        **nothing,
        "name": "routes[3]",
        "path_prefix": "/",
        "upstream": "app",
        "strip_prefix": True,
        "auth": ["partners", "staff"],
        "allow": ["10.0.0.0/8", "192.0.2.0/24", "2001:db8::1/128"],
        "deny": ["10.0.0.13/32"],
    }

    def digest(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()

    assert engine["auth"] == {
        "partners": {
            "type": "api_key",
            "header": "x-api-key",
            "query": None,
            "keys": [["acme", digest("k-acme")], ["initech", digest("k-initech")]],
            "realm": "partners",
            "forward_credentials": False,
        },
        "by_query": {
            "type": "api_key",
            "header": None,
            "query": "api_key",
            "keys": [["globex", digest("k-globex")]],
            "realm": 'Query "keys" \\ here',
            "forward_credentials": True,
        },
        "staff": {"type": "basic", "users": [["bob", sha512_hello]], "realm": "staff", "forward_credentials": False},
        "tokens": {
            "type": "jwt",
            "algorithms": ["HS256", "RS256"],
            "keys": [
                {"kty": "oct", "k": b64url(b"an HS256 secret")},
                {"kty": "RSA", "n": n, "e": "AQAB", "kid": "r1", "alg": "RS256"},
                {"kty": "oct", "k": "c2VjcmV0", "kid": "h1"},
            ],
            "issuer": "https://id.example",
            "audience": ["api"],
            "leeway": 1.5,
            "realm": "tokens",
            "forward_credentials": False,
        },
        "sso": {
            "type": "forward",
            "upstream": "canary",
            "path": "/check?from=proxy",
            "send_headers": ["cookie", "x-token"],
            "copy_headers": ["x-user"],
            "cache": 120_000,
            "forward_credentials": False,
        },
    }
    # Without [headers] and [cors], the defaults: hide the usual fields, nothing else.
    plain = rproxy.loads("""
[upstreams.app]
servers = ["127.0.0.1:9000"]
[[routes]]
upstream = "app"
[plugins]
dirs = []
""")
    assert plain.engine_config()["headers"] == {
        "hide": ["server", "x-powered-by", "x-aspnet-version", "x-aspnetmvc-version", "x-runtime", "x-generator"],
        "security": None,
        "request": no_rules,
        "response": no_rules,
    }
    assert plain.engine_config()["cors"] is None
    assert plain.engine_config()["auth"] == {}
    assert plain.engine_config()["cache"] is None
    assert plain.engine_config()["routes"][0]["auth"] == []
    # The engine accepts exactly this form.
    rproxy.Engine(cfg)
    rproxy.Engine(plain)


def test_unreadable_file() -> None:
    with pytest.raises(ConfigError, match=r"missing\.toml:0:0: error: cannot read: No such file or directory"):
        rproxy.load("missing.toml")


def test_pools_balancing_and_health_keys() -> None:
    cfg = rproxy.loads("""
[defaults.upstream]
balance = "hash"
retries = 1
health_check = { type = "tcp", interval = "1s" }

[upstreams.app]
servers = [
  "127.0.0.1:9001",
  { address = "127.0.0.1:9002", weight = 3 },
  { address = "[::1]:9003", backup = true },
]
hash_key = "header:X-User"
retry_budget = 1
max_requests = 100
max_pending = 10
queue_timeout = "250ms"
fail_on_5xx = true
eject_time = "5s"
eject_time_max = "1m"
max_ejected_percent = 100
slow_start = "30s"

[upstreams.app.health_check]
type = "http"
path = "/health?deep=1"
host = "app.internal"
status = 204

[upstreams.sticky]
servers = ["127.0.0.1:9004"]

[upstreams.plain]
servers = ["127.0.0.1:9005"]
balance = "least_conn"
health_check = { type = "http", status = "200-299" }

[[routes]]
upstream = "app"

[plugins]
dirs = []
""")
    app, sticky, plain = (cfg.upstreams[n] for n in ("app", "sticky", "plain"))
    assert app.servers == (
        Server(Address("127.0.0.1", 9001)),
        Server(Address("127.0.0.1", 9002), weight=3),
        Server(Address("::1", 9003), backup=True),
    )
    assert (app.balance, app.hash_key, app.retries, app.retry_budget) == ("hash", HashKey("header", "x-user"), 1, 1.0)
    assert app.health_check == HealthCheck("http", "/health?deep=1", "app.internal", (204, 204))
    assert (sticky.balance, sticky.hash_key) == ("hash", HashKey("client_ip")), "client_ip by default"
    assert sticky.health_check == HealthCheck("tcp", interval=1.0), "inherited whole"
    assert (plain.balance, plain.hash_key, plain.retries) == ("least_conn", None, 1)
    engine = cfg.engine_config()["upstreams"]
    own = {k: v for k, v in engine["app"].items() if k not in ("request_headers", "response_headers")}
    assert own == {
        "servers": [
            {"addr": "127.0.0.1:9001", "weight": 1, "backup": False},
            {"addr": "127.0.0.1:9002", "weight": 3, "backup": False},
            {"addr": "[::1]:9003", "weight": 1, "backup": True},
        ],
        "balance": "hash",
        "hash_key": {"kind": "header", "name": "x-user"},
        "retries": 1,
        "retry_budget": 1.0,
        "retry_budget_min": 10,
        "max_requests": 100,
        "max_requests_per_server": 0,
        "max_pending": 10,
        "queue_timeout": 250,
        "max_fails": 5,
        "fail_on_5xx": True,
        "eject_time": 5000,
        "eject_time_max": 60_000,
        "max_ejected_percent": 100,
        "slow_start": 30_000,
        "health_check": {
            "type": "http",
            "path": "/health?deep=1",
            "host": "app.internal",
            "status": [204, 204],
            "interval": 5000,
            "timeout": 2000,
            "rise": 2,
            "fall": 3,
        },
        "connect_timeout": 2000,
        "response_timeout": 30_000,
        "body_idle_timeout": 60_000,
        "keepalive": 64,
        "keepalive_timeout": 60_000,
        "keepalive_requests": 1000,
    }
    assert engine["sticky"]["hash_key"] == {"kind": "client_ip"}
    assert engine["sticky"]["health_check"]["type"] == "tcp"
    assert engine["plain"]["hash_key"] is None
    assert engine["plain"]["health_check"]["status"] == [200, 299]
    defaults = rproxy.loads('[upstreams.a]\nservers = ["127.0.0.1:1"]\n[[routes]]\nupstream = "a"\n')
    pool = defaults.engine_config()["upstreams"]["a"]
    assert (pool["balance"], pool["hash_key"], pool["health_check"], pool["retries"]) == ("round_robin", None, None, 2)
    assert (pool["retry_budget"], pool["queue_timeout"], pool["eject_time_max"], pool["slow_start"]) == (
        0.2,
        1000,
        300_000,
        0,
    )
    rproxy.Engine(cfg)


def test_cache_keys() -> None:
    cfg = rproxy.loads("""
[upstreams.app]
servers = ["127.0.0.1:9000"]

[cache]
enabled = true
max_size = "64MiB"
max_object_size = 1048576
lock_timeout = "250ms"
heuristic_max = "0s"
name = "edge-1"
purge_from = ["127.0.0.1", "::ffff:10.0.0.0/104"]

[[routes]]
path_prefix = "/static/"
upstream = "app"
cache_ttl = "1m30.9s"

[[routes]]
path_prefix = "/api/"
upstream = "app"
cache = false

[[routes]]
path = "/healthz"
respond = { status = 200 }
cache = false

[[routes]]
upstream = "app"

[plugins]
dirs = []
""")
    engine = cfg.engine_config()
    assert engine["cache"] == {
        "enabled": True,
        "max_size": 64 << 20,
        "max_object_size": 1 << 20,
        "lock_timeout": 250,
        "heuristic_max": 0,
        "name": "edge-1",
        "purge_from": ["127.0.0.1/32", "10.0.0.0/8"],
        "cdn_cache_control": False,
        "admin": None,
    }
    # Always both keys; null where the route does not say; the lifetime in whole seconds.
    assert [(r["cache"], r["cache_ttl"]) for r in engine["routes"]] == [
        (None, 90_000),
        (False, None),
        (False, None),
        (None, None),
    ]
    # The defaults of an empty table.
    empty = rproxy.loads('[upstreams.a]\nservers = ["127.0.0.1:1"]\n[cache]\n[[routes]]\nupstream = "a"\n')
    assert empty.engine_config()["cache"] == {
        "enabled": False,
        "max_size": 256 << 20,
        "max_object_size": 8 << 20,
        "lock_timeout": 5000,
        "heuristic_max": 86_400_000,
        "name": "rproxy",
        "purge_from": [],
        "cdn_cache_control": False,
        "admin": None,
    }
    # The engine accepts exactly this form.
    with rproxy.Engine(cfg) as running:
        assert running.cache_stats() == {"bytes": 0, "max_size": 64 << 20, "keys": 0}
    plain = rproxy.loads('[upstreams.a]\nservers = ["127.0.0.1:1"]\n[[routes]]\nupstream = "a"\n[plugins]\ndirs = []\n')
    with rproxy.Engine(plain) as running:
        assert running.cache_stats() is None

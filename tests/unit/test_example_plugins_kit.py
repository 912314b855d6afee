"""The example plugins of plugins/, through the test kit (no sockets)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import rproxy
from rproxy.errors import ConfigError
from rproxy.testing import Simulator, call_hook, make_request, proxy_config

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"


def example(name: str) -> ModuleType:
    """A fresh copy of an example plugin module."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", PLUGINS / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def sim(name: str, options: dict[str, Any] | None = None, **kw: Any) -> Simulator:
    config = proxy_config(plugins={name: options} if options else None, **kw)
    return Simulator(config, plugins=[(name, example(name))])


def test_hello() -> None:
    s = sim("hello")
    hello = s.request("GET", "/hello")
    assert (hello.response.status, hello.response.body, hello.upstream) == (200, b"hello from a plugin\n", None)
    assert hello.response.headers["x-hello"] == "plugin"
    other = s.request("GET", "/other")
    assert other.upstream == "127.0.0.1:9"
    assert other.response.headers["x-hello"] == "plugin"


def test_request_id() -> None:
    s = sim("request_id", {"header": "X-Trace", "trust_incoming": True})
    result = s.request("GET", "/", {"X-Trace": "abc-123"})
    assert result.ctx["request_id"] == "abc-123"
    assert result.upstream_request is not None and result.upstream_request.headers["x-trace"] == "abc-123"
    assert result.response.headers["x-trace"] == "abc-123"
    fresh = sim("request_id").request("GET", "/", {"X-Request-Id": "client-chosen"})
    assert fresh.ctx["request_id"] != "client-chosen" and len(fresh.ctx["request_id"]) == 32
    with pytest.raises(ConfigError, match=r"plugins\.request_id\.colour: unknown option"):
        sim("request_id", {"colour": "blue"})


def test_api_key() -> None:
    s = sim("api_key", {"keys": ["k-1", "k-2"], "paths": ["/api/"]})
    denied = s.request("GET", "/api/items")
    assert denied.response.status == 401 and denied.upstream is None
    assert denied.response.headers["www-authenticate"] == 'ApiKey header="X-Api-Key"'
    assert s.request("GET", "/api/items", {"X-Api-Key": "wrong"}).response.status == 401
    ok = s.request("GET", "/api/items", {"X-Api-Key": "k-2"})
    assert ok.response.status == 200
    assert ok.upstream_request is not None and "x-api-key" not in ok.upstream_request.headers
    assert s.request("GET", "/public").response.status == 200
    with pytest.raises(ConfigError, match=r"plugins\.api_key\.keys: needs at least one key"):
        sim("api_key", {"keys": []})


def test_api_key_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "keys.txt").write_text("from-file\n\n")
    module = example("api_key")
    config = rproxy.loads(
        """
[upstreams.app]
servers = ["127.0.0.1:9"]
[[routes]]
path_prefix = "/"
upstream = "app"
[plugins]
dirs = []
[plugins.api_key]
keys_file = "keys.txt"
""",
        str(tmp_path / "proxy.toml"),
    )
    s = Simulator(config, plugins=[("api_key", module)])
    assert s.request("GET", "/", {"X-Api-Key": "from-file"}).response.status == 200


def test_header_route() -> None:
    pools = {"acme_pool": {"servers": ["10.0.0.1:80"]}}
    s = sim("header_route", {"header": "X-Tenant", "pools": {"acme": "acme_pool"}}, pools=pools)
    assert s.request("GET", "/", {"X-Tenant": "acme"}).upstream == "10.0.0.1:80"
    assert s.request("GET", "/", {"X-Tenant": "other"}).upstream == "127.0.0.1:9"
    with pytest.raises(ConfigError, match=r'plugins\.header_route\.pools\.acme: "missing" is not a pool'):
        sim("header_route", {"header": "X-Tenant", "pools": {"acme": "missing"}})


def test_canary_share_is_stable_and_about_right() -> None:
    pools = {"canary": {"servers": ["10.0.0.9:80"]}}
    s = sim("canary", {"pool": "canary", "percent": 10}, pools=pools)
    picks = {}
    for i in range(2000):
        result = s.request("GET", "/", {"Cookie": f"session=user{i}; other=1"})
        picks[i] = result.upstream == "10.0.0.9:80"
    share = sum(picks.values()) / len(picks)
    assert 0.08 < share < 0.12
    again = [s.request("GET", "/", {"Cookie": f"session=user{i}"}).upstream == "10.0.0.9:80" for i in range(200)]
    assert again == [picks[i] for i in range(200)], "the same user always lands on the same side"
    wider = sim("canary", {"pool": "canary", "percent": 30}, pools=pools)
    for i in range(200):
        if picks[i]:
            assert wider.request("GET", "/", {"Cookie": f"session=user{i}"}).upstream == "10.0.0.9:80"


def test_examples_are_inert_or_reject_without_configuration() -> None:
    assert sim("header_route").request("GET", "/").upstream == "127.0.0.1:9"
    assert sim("canary").request("GET", "/").upstream == "127.0.0.1:9"
    with pytest.raises(ConfigError, match="needs at least one key"):
        sim("api_key")


def test_call_one_hook_directly() -> None:
    hello = example("hello")
    assert call_hook(hello, "rproxy_request_filter", request=make_request("GET", "/elsewhere")) is None

"""The cache key built-in's reference (builtins/cache.py): the engine's
default key, its place in the plan, and the test kit with it."""

from __future__ import annotations

import json
import re
import types
from pathlib import Path

import pytest

import rproxy
from rproxy.builtins import cache
from rproxy.engine import engine_json
from rproxy.plan import build_plan
from rproxy.plugins import load_plugins
from rproxy.testing import Simulator, _as_config, call_hook, make_request, proxy_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("scheme", "authority", "target", "key"),
    [
        ("http", "Example.COM", "/a?b=1", "http://example.com:80/a?b=1"),
        ("https", "example.com", "/", "https://example.com:443/"),
        ("https", "example.com:8443", "/x", "https://example.com:8443/x"),
        ("http", "example.com:443", "/x", "http://example.com:443/x"),
        # The port as a number: leading zeros and a sign are read as Rust's i32 reads them.
        ("http", "example.com:0080", "/", "http://example.com:80/"),
        ("http", "example.com:+81", "/", "http://example.com:81/"),
        # Trailing dots of the authority go; a host's dot before a port stays (as the engine does).
        ("http", "example.com.", "/", "http://example.com:80/"),
        ("http", "example.com..", "/", "http://example.com:80/"),
        ("http", "example.com.:81", "/", "http://example.com:81/"),
        ("http", "h:", "/", "http://h:80/"),
        # IPv6 literals keep their brackets.
        ("http", "[::1]", "/", "http://[::1]:80/"),
        ("https", "[2001:DB8::1]:8443", "/", "https://[2001:db8::1]:8443/"),
        # Path and query exactly as received: no normalisation, no decoding.
        ("http", "h", "/a/../b//c?x=%41&&y", "http://h:80/a/../b//c?x=%41&&y"),
        ("http", "h", "/a?", "http://h:80/a?"),
        # No host, or a port that is no number: no key.
        ("http", None, "/", None),
        ("http", "", "/", None),
        ("http", "...", "/", None),
        ("http", "h:x", "/", None),
        ("http", "h:99999999999", "/", None),
        ("http", "h\x7f", "/", None),
    ],
)
def test_key_of(scheme: str, authority: str | None, target: str, key: str | None) -> None:
    assert cache.key_of(scheme, authority, target) == key


def test_the_hook_returns_the_default_key() -> None:
    req = make_request("GET", "/Shop/items?page=2&sort=Asc", host="Shop.Example:8080")
    assert call_hook(cache, "rproxy_cache_key", request=req) == "http://shop.example:8080/Shop/items?page=2&sort=Asc"
    tls = make_request("HEAD", "/", host="shop.example", scheme="https")
    assert call_hook(cache, "rproxy_cache_key", request=tls) == "https://shop.example:443/"
    ipv6 = make_request("GET", "/", host="[::1]:9000")
    assert call_hook(cache, "rproxy_cache_key", request=ipv6) == "http://[::1]:9000/"


def test_no_host_bypasses_the_cache() -> None:
    assert call_hook(cache, "rproxy_cache_key", request=make_request("GET", "/", host="")) is False
    bad_port = make_request("GET", "/", host="shop.example:x")
    assert call_hook(cache, "rproxy_cache_key", request=bad_port) is False


def test_an_absolute_target_names_the_authority() -> None:
    """An absolute-form target's authority wins over Host (RFC 9112 §3.2.2)."""
    other = rproxy.Request._for_testing("GET", "http://other.example/x", [("Host", "shop.example")])
    assert call_hook(cache, "rproxy_cache_key", request=other) == "http://other.example:80/x"
    no_field = rproxy.Request._for_testing("GET", "http://shop.example/x", [])
    assert call_hook(cache, "rproxy_cache_key", request=no_field) == "http://shop.example:80/x"
    same = rproxy.Request._for_testing("GET", "http://Shop.Example/x?y", [("Host", "shop.example")])
    assert call_hook(cache, "rproxy_cache_key", request=same) == "http://shop.example:80/x?y"


def test_the_key_is_native_and_last() -> None:
    config = _as_config(proxy_config(routes=[{"upstream": "app"}]))
    loaded = load_plugins(config)
    steps = build_plan(loaded).steps["rproxy_cache_key"]
    assert [(s.plugin, s.native) for s in steps] == [("cache", "cache")]
    assert "cache" in json.loads(engine_json(config, build_plan(loaded)))["natives"]
    reference = build_plan(loaded, native=False)
    assert [(s.plugin, s.native) for s in reference.steps["rproxy_cache_key"]] == [("cache", None)]
    # A plugin's hook, trylast or not, is called before the built-in.
    plugin = types.SimpleNamespace(rproxy_cache_key=lambda request: None)
    loaded = load_plugins(config, extra=[("mine", plugin)])
    assert [s.plugin for s in build_plan(loaded).steps["rproxy_cache_key"]] == ["mine", "cache"]


def test_the_kit_reports_the_key() -> None:
    sim = Simulator()
    assert sim.request("GET", "/a?b=1", host="Shop.Example").cache_key == "http://shop.example:80/a?b=1"
    assert sim.request("GET", "/", host="").cache_key is False
    # A plugin's answer comes first; None leaves the key to the built-in.
    mine = types.SimpleNamespace(
        rproxy_cache_key=lambda request: False if request.path.startswith("/private/") else None
    )
    sim = Simulator(plugins=[("mine", mine)])
    assert sim.request("GET", "/private/x").cache_key is False
    assert sim.request("GET", "/public/x").cache_key == "http://test.local:80/public/x"
    # Without the built-in, no plugin answers: the engine's default applies.
    config = proxy_config(plugins={"disable": ["cache"]})
    sim = Simulator(config)
    assert "cache" not in sim.plugins.plugins
    assert sim.request("GET", "/x").cache_key is None


def test_the_example_of_the_caching_doc() -> None:
    (block,) = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "caching.md").read_text(), re.S)
    module = types.ModuleType("utm_key")
    exec(compile(block, "utm_key", "exec"), module.__dict__)
    sim = Simulator(plugins=[("utm_key", module)])
    assert sim.request("GET", "/p?utm_source=x&id=7&utm_medium=y").cache_key == "http://test.local:80/p?id=7"
    assert sim.request("GET", "/p?utm_source=x").cache_key == "http://test.local:80/p"
    assert sim.request("GET", "/p?id=7").cache_key == "http://test.local:80/p?id=7", "the built-in's"
    assert sim.request("GET", "/p", {"X-Preview": "1"}).cache_key is False

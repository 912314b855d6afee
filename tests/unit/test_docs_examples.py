"""The code in docs/writing-plugins.md and the README works as shown."""

from __future__ import annotations

import re
import types
from pathlib import Path

import rproxy
from rproxy.testing import Simulator

ROOT = Path(__file__).resolve().parents[2]


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), re.S)


def load(source: str, name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    exec(compile(source, name, "exec"), module.__dict__)
    return module


def check_ten_line_plugin(module: types.ModuleType) -> None:
    sim = Simulator(plugins=[("maintenance", module)])
    refused = sim.request("GET", "/admin/users", client="192.0.2.9:5000")
    assert refused.response.status == 403 and refused.upstream is None
    assert refused.response.headers["x-served-by"] == "rproxy"
    admitted = sim.request("GET", "/admin/users", client="10.0.0.1:5000")
    assert admitted.response.status == 200 and admitted.upstream is not None


def test_the_ten_line_plugin_of_the_guide() -> None:
    first = python_blocks(ROOT / "docs" / "writing-plugins.md")[0]
    assert len(first.strip().splitlines()) <= 10
    check_ten_line_plugin(load(first, "guide_plugin"))


def test_the_readme_plugin() -> None:
    (block,) = python_blocks(ROOT / "README.md")
    check_ten_line_plugin(load(block, "readme_plugin"))


def test_the_route_example() -> None:
    blocks = python_blocks(ROOT / "docs" / "writing-plugins.md")
    route = next(b for b in blocks if "def rproxy_route" in b)
    module = load("import rproxy\n" + route, "route_example")
    config = rproxy.testing.proxy_config(pools={"beta": {"servers": ["10.9.9.9:80"]}})
    result = Simulator(config, plugins=[("beta", module)]).request("GET", "/items", {"X-Beta": "1"})
    assert result.upstream == "10.9.9.9:80"
    assert result.upstream_request is not None and result.upstream_request.path == "/v2/items"

"""Plugin discovery and the hook plan: load order, errors that name file and
line, plugin tables, and the plan's order matching pluggy's."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import tomli_w

import rproxy
from rproxy import cli
from rproxy.errors import ConfigError
from rproxy.plan import build_plan
from rproxy.plugins import hookimpl, load_plugins
from rproxy.testing import proxy_config


def write(folder: Path, name: str, source: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(source))
    return path


def config_in(folder: Path, plugins: dict[str, Any] | None = None) -> Path:
    doc = proxy_config(plugins={"dirs": ["plugins"], **(plugins or {})})
    (folder / "proxy.toml").write_text(tomli_w.dumps(doc))
    return Path("proxy.toml")  # as a user types it: errors name it so


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "plugins").mkdir()
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("rproxy_plugins.")]:
        del sys.modules[name]


def errors(config: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_plugins(rproxy.load(config))
    return [str(i) for i in info.value.issues]


def test_load_order_and_disable(project: Path) -> None:
    write(project / "plugins", "b_second.py", "def rproxy_response(response): pass\n")
    write(project / "plugins", "a_first.py", "def rproxy_response(response): pass\n")
    write(project / "plugins", "_helper.py", "raise RuntimeError('helpers are not plugins')\n")
    loaded = load_plugins(rproxy.load(config_in(project)))
    assert list(loaded.plugins) == ["cache", "balancer", "auth", "headers", "router", "a_first", "b_second"]
    assert loaded.plugins["a_first"].source == "plugins/a_first.py"
    disable = ["a_first", "router", "headers", "auth", "balancer", "cache"]
    loaded = load_plugins(rproxy.load(config_in(project, {"disable": disable})))
    assert list(loaded.plugins) == ["b_second"]


def test_import_error_names_file_and_line(project: Path) -> None:
    write(
        project / "plugins",
        "broken.py",
        """\
        import rproxy

        def helper():
            return undefined_name

        helper()
        """,
    )
    assert errors(config_in(project)) == [
        "plugins/broken.py:4:1: error: plugin \"broken\": cannot load: NameError: name 'undefined_name' is not defined"
    ]


def test_syntax_error_names_its_line(project: Path) -> None:
    write(project / "plugins", "syntax.py", "x = 1\ndef f(:\n")
    (issue,) = errors(config_in(project))
    assert issue.startswith('plugins/syntax.py:2:1: error: plugin "syntax": cannot load: SyntaxError')


def test_misspelt_hook_is_an_error(project: Path) -> None:
    write(
        project / "plugins",
        "typo.py",
        """\
        def rproxy_reqest_filter(request):
            return None
        """,
    )
    assert errors(config_in(project)) == [
        'plugins/typo.py:1:1: error: plugin "typo": unknown hook "rproxy_reqest_filter" '
        '(did you mean "rproxy_request_filter"?)'
    ]


def test_hook_with_an_argument_the_spec_lacks(project: Path) -> None:
    write(
        project / "plugins",
        "args.py",
        """\

        def rproxy_route(request, req_headers):
            return None
        """,
    )
    (issue,) = errors(config_in(project))
    assert issue.startswith("plugins/args.py:2:1: error: plugin \"args\": rproxy_route() takes 'req_headers'")


def test_tables_for_unknown_plugins_and_bad_names(project: Path) -> None:
    write(project / "plugins", "known.py", "def rproxy_response(response): pass\n")
    config = config_in(project, {"knwon": {"x": 1}, "disable": ["nope"]})
    issues = errors(config)
    assert any('plugins.disable[0]: no plugin named "nope"' in i for i in issues), issues
    assert any('plugins.knwon: no plugin named "knwon" is loaded (did you mean "known"?)' in i for i in issues)


def test_plugin_rejects_its_table_with_file_and_line(project: Path) -> None:
    write(
        project / "plugins",
        "strict.py",
        """\
        import rproxy

        def rproxy_configure(options):
            if options.get("level", 0) > 3:
                raise rproxy.ConfigError("must be 3 at most", key="level")
        """,
    )
    config = config_in(project, {"strict": {"level": 7}})
    (issue,) = errors(config)
    line = next(n for n, text in enumerate(config.read_text().splitlines(), 1) if text.startswith("level"))
    assert issue == f"proxy.toml:{line}:9: error: plugins.strict.level: must be 3 at most"


def test_rproxy_keys_of_a_plugin_table_are_checked_and_kept_from_it(project: Path) -> None:
    write(
        project / "plugins",
        "opts.py",
        """\
        seen = {}

        def rproxy_configure(options):
            seen.update(options)
        """,
    )
    config = rproxy.load(config_in(project, {"opts": {"on_error": "continue", "timeout": "250ms", "mine": 1}}))
    loaded = load_plugins(config)
    assert loaded.plugins["opts"].plugin.seen == {"mine": 1}
    assert config.table("opts").on_error == "continue"
    assert config.table("opts").timeout == 0.25
    with pytest.raises(ConfigError) as info:
        rproxy.load(config_in(project, {"bad": {"on_error": "maybe"}}))
    assert 'plugins.bad.on_error: expected "fail" or "continue", got "maybe"' in str(info.value)


def test_entry_point_plugins_load_after_builtins(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = project / "site"
    site.mkdir()
    write(site, "ep_plugin.py", "def rproxy_response(response): response.headers.set('x-ep', '1')\n")
    dist = site / "ep_dist-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-dist\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[rproxy]\nfrom_dist = ep_plugin\n")
    monkeypatch.syspath_prepend(str(site))
    loaded = load_plugins(rproxy.load(config_in(project)))
    assert list(loaded.plugins)[:6] == ["cache", "balancer", "auth", "headers", "router", "from_dist"]
    assert loaded.plugins["from_dist"].source == "entry point ep-dist"


class Ordered:
    """Plugins whose impls record when pluggy calls them."""

    def __init__(self, name: str, log: list[str], **opts: bool) -> None:
        self.name = name
        self.log = log
        marker = hookimpl(**opts) if opts else hookimpl

        @marker
        def rproxy_response(response: object) -> None:
            log.append(name)

        self.rproxy_response = rproxy_response


def test_plan_order_is_pluggys_call_order(project: Path) -> None:
    log: list[str] = []
    plugins = [
        ("first_registered", Ordered("first_registered", log)),
        ("late", Ordered("late", log, trylast=True)),
        ("early", Ordered("early", log, tryfirst=True)),
        ("last_registered", Ordered("last_registered", log)),
    ]
    # Without the built-in headers, whose rproxy_response needs a real request.
    loaded = load_plugins(rproxy.load(config_in(project, {"disable": ["headers"]})), extra=plugins)
    plan = build_plan(loaded)
    loaded.pm.hook.rproxy_response(request=None, response=None, ctx={})
    assert [s.plugin for s in plan.steps["rproxy_response"]] == log
    assert log == ["early", "last_registered", "first_registered", "late"]


def test_wrappers_keep_pluggys_dispatch(project: Path) -> None:
    write(
        project / "plugins",
        "wrap.py",
        """\
        from rproxy import hookimpl

        @hookimpl(wrapper=True)
        def rproxy_response(response):
            yield
        """,
    )
    plan = build_plan(load_plugins(rproxy.load(config_in(project))))
    (step,) = plan.steps["rproxy_response"]
    assert step.dispatch and step.plugin == "wrap+headers", "the built-in's reference runs in pluggy's dispatch"


def test_hooks_command_prints_phases_in_call_order(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(project / "plugins", "a.py", "def rproxy_route(request): pass\n")
    write(
        project / "plugins",
        "b.py",
        """\
        from rproxy import hookimpl

        @hookimpl(tryfirst=True)
        def rproxy_route(request):
            pass

        async def rproxy_log(request):
            pass
        """,
    )
    config_in(project)
    assert cli.main(["hooks", "proxy.toml"]) == 0
    out = capsys.readouterr().out
    route = out.split("rproxy_route (first result wins)\n", 1)[1].split("rproxy_access", 1)[0]
    assert [line.split()[1] for line in route.strip().splitlines()] == ["b", "a", "router"]
    assert "native router" in route
    assert "async, timeout 5s" in out.split("rproxy_log\n", 1)[1]
    assert "rproxy_request_filter (first result wins)\n    (none)" in out


def test_check_reports_plugin_errors_with_status_2(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(project / "plugins", "typo.py", "def rproxy_respons(response): pass\n")
    config_in(project)
    assert cli.main(["check", "proxy.toml"]) == 2
    assert 'plugins/typo.py:1:1: error: plugin "typo": unknown hook "rproxy_respons"' in capsys.readouterr().err

"""Finding, loading and configuring plugins.

Load order (and so registration order, which decides call order among
plugins without ``tryfirst``/``trylast``):

1. built-ins (``rproxy.builtins``);
2. installed distributions with an entry point in the group ``rproxy``;
3. every ``*.py`` in ``[plugins] dirs`` (default ``["plugins"]``, relative
   to the configuration file), by file name; names starting with ``_`` are
   helpers, not plugins;
4. then ``[plugins] disable = [...]`` unregisters plugins by name.

Every problem is reported at once, each naming the file and line at fault,
and is a start-up error (exit status 2): a plugin that does not import, a
function named ``rproxy_*`` that is no hook (a misspelling), a hook taking
an argument its spec does not have, a ``[plugins.NAME]`` table for no loaded
plugin, and a table its plugin rejects in ``rproxy_configure``.
"""

from __future__ import annotations

import difflib
import importlib.util
import inspect
import os
import sys
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from rproxy import hookspecs
from rproxy.config import Config
from rproxy.errors import ConfigError, ConfigIssue

__all__ = ["LoadedPlugins", "PluginInfo", "display_path", "hookimpl", "load_plugins"]

hookimpl = pluggy.HookimplMarker("rproxy")

_IMPL_DEFAULTS: dict[str, Any] = {
    "wrapper": False,
    "hookwrapper": False,
    "optionalhook": False,
    "tryfirst": False,
    "trylast": False,
    "specname": None,
}


class _PluginManager(pluggy.PluginManager):
    """Functions named ``rproxy_*`` are hooks even without ``@hookimpl``, so
    that a misspelt hook name is an error instead of a silent no-op."""

    def parse_hookimpl_opts(self, plugin: Any, name: str) -> Any:
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name.startswith("rproxy_"):
            method = getattr(plugin, name, None)
            if inspect.isroutine(method):
                return dict(_IMPL_DEFAULTS)
        return opts


@dataclass(frozen=True)
class PluginInfo:
    """A loaded plugin: its name, where it came from, and the object."""

    name: str
    source: str  # "builtin", "entry point DIST", or a file path
    plugin: Any


@dataclass
class LoadedPlugins:
    """The plugin manager with every plugin registered and configured."""

    pm: pluggy.PluginManager
    plugins: dict[str, PluginInfo]
    config: Config

    def info(self, plugin: Any) -> PluginInfo:
        name = self.pm.get_name(plugin)
        return self.plugins[name] if name in self.plugins else PluginInfo(str(name), "registered", plugin)


def display_path(path: str | os.PathLike[str]) -> str:
    """``path`` relative to the working directory when it is below it."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


def where(obj: Any) -> tuple[str, int]:
    """File and first line of a function or module."""
    try:
        target = inspect.unwrap(obj)
        file = inspect.getsourcefile(target) or inspect.getfile(target)
        line = target.__code__.co_firstlineno if hasattr(target, "__code__") else 1
        return display_path(file), line
    except (TypeError, OSError):
        return "<unknown>", 1


def _issue(file: str, line: int, name: str, message: str) -> ConfigIssue:
    return ConfigIssue(line, 1, file, f'plugin "{name}"', message)


def _failure_line(exc: BaseException, file: Path) -> int:
    """The line of ``file`` where ``exc`` was raised (the deepest frame in it)."""
    line = 1
    target = str(file.resolve())
    for frame in traceback.extract_tb(exc.__traceback__):
        if str(Path(frame.filename).resolve()) == target:
            line = frame.lineno or 1
    if isinstance(exc, SyntaxError) and exc.lineno:
        line = exc.lineno
    return line


def _import_file(path: Path) -> ModuleType:
    module_name = f"rproxy_plugins.{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def _builtin_plugins() -> list[tuple[str, Any]]:
    """The built-ins, in registration order. Among hooks with the same
    marker pluggy calls the most recently registered first, so a built-in
    listed earlier runs later: ``headers`` answers CORS preflights in
    ``rproxy_access`` before ``auth`` checks credentials (the engine's
    native order, ``["headers", "auth"]``). The ``balancer`` is alone in
    ``rproxy_select_upstream``, and ``cache`` in ``rproxy_cache_key``; both
    are ``trylast`` there, and registered first, so they are called last."""
    from rproxy.builtins import auth, balancer, cache, headers, router

    return [("cache", cache), ("balancer", balancer), ("auth", auth), ("headers", headers), ("router", router)]


def load_plugins(config: Config, extra: Sequence[tuple[str, Any]] = (), *, configure: bool = True) -> LoadedPlugins:
    """Load, register and configure every plugin of ``config``.

    ``extra`` adds ``(name, plugin)`` pairs after the directories (the test
    kit uses it). Raises :class:`ConfigError` listing every problem found.
    """
    pm = _PluginManager("rproxy")
    pm.add_hookspecs(hookspecs)
    issues: list[ConfigIssue] = []
    loaded: dict[str, PluginInfo] = {}

    def register(name: str, plugin: Any, source: str, file: str, line: int) -> None:
        if name in loaded:
            issues.append(
                _issue(file, line, name, f"a plugin of this name is already loaded from {loaded[name].source}")
            )
            return
        try:
            pm.register(plugin, name=name)
        except pluggy.PluginValidationError as e:
            issues.append(_validation_issue(e, name, plugin, file, line))
            return
        loaded[name] = PluginInfo(name, source, plugin)

    for name, plugin in _builtin_plugins():
        register(name, plugin, "builtin", *where(plugin))

    for ep in entry_points(group="rproxy"):
        dist = ep.dist.name if ep.dist else "?"
        try:
            plugin = ep.load()
        except Exception as e:
            issues.append(
                ConfigIssue(
                    1,
                    1,
                    f"entry point {ep.name} ({dist})",
                    f'plugin "{ep.name}"',
                    f"cannot load {ep.value}: {type(e).__name__}: {e}",
                )
            )
            continue
        register(ep.name, plugin, f"entry point {dist}", *where(plugin))

    for directory in config.plugins.dirs:
        if not directory.is_dir():
            if directory in config.plugins.explicit_dirs:
                issues.append(config.issue(("plugins", "dirs"), f'"{display_path(directory)}" is not a directory'))
            continue
        if str(directory) not in sys.path:
            sys.path.insert(0, str(directory))  # plugins may import their own helper modules
        for path in sorted(directory.glob("*.py")):
            if path.name.startswith("_"):
                continue
            file = display_path(path)
            try:
                module = _import_file(path)
            except Exception as e:
                issues.append(_issue(file, _failure_line(e, path), path.stem, f"cannot load: {type(e).__name__}: {e}"))
                continue
            register(path.stem, module, file, file, 1)

    for name, plugin in extra:
        register(name, plugin, "extra", *where(plugin))

    for i, name in enumerate(config.plugins.disable):
        if name in loaded:
            pm.unregister(name=name)
            del loaded[name]
        else:
            issues.append(config.issue(("plugins", "disable", i), f'no plugin named "{name}"{_hint(name, loaded)}'))

    issues += _unknown_hooks(pm, loaded)

    for name in config.plugins.tables:
        if name not in loaded and name not in config.plugins.disable:
            issues.append(
                config.issue(("plugins", name), f'no plugin named "{name}" is loaded{_hint(name, loaded)}', at_key=True)
            )

    if issues:
        raise ConfigError(issues)
    result = LoadedPlugins(pm, loaded, config)
    if configure:
        configure_plugins(result)
    return result


def _hint(name: str, names: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(names), n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


def _unknown_hooks(pm: pluggy.PluginManager, loaded: dict[str, PluginInfo]) -> list[ConfigIssue]:
    """What ``pm.check_pending()`` would reject, as located issues."""
    known = [n for n in dir(hookspecs) if n.startswith("rproxy_")]
    out = []
    for name in sorted(dir(pm.hook)):
        if not name.startswith("rproxy_"):
            continue
        caller = getattr(pm.hook, name)
        if caller.spec is not None:
            continue
        for impl in caller.get_hookimpls():
            if impl.optionalhook:
                continue
            file, line = where(impl.function)
            out.append(_issue(file, line, impl.plugin_name, f'unknown hook "{name}"{_hint(name, known)}'))
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as e:
        if not out:
            out.append(ConfigIssue(1, 1, "<plugins>", "", str(e)))
    return out


def _validation_issue(e: pluggy.PluginValidationError, name: str, plugin: Any, file: str, line: int) -> ConfigIssue:
    message = str(e)
    for hook in dir(hookspecs):
        func = getattr(plugin, hook, None)
        if hook.startswith("rproxy_") and func is not None and f"hook {hook!r}" in message:
            file, line = where(func)
            spec_args = list(inspect.signature(getattr(hookspecs, hook)).parameters)
            impl_args = list(inspect.signature(func).parameters)
            extra = [a for a in impl_args if a not in spec_args and a != "self"]
            if extra:
                message = (
                    f"{hook}() takes {', '.join(repr(a) for a in extra)}, which the hook does not pass "
                    f"(it passes: {', '.join(spec_args)})"
                )
            break
    return _issue(file, line, name, message)


def configure_plugins(loaded: LoadedPlugins) -> None:
    """Call each plugin's ``rproxy_configure`` with its own table."""
    issues: list[ConfigIssue] = []
    config = loaded.config
    for impl in reversed(loaded.pm.hook.rproxy_configure.get_hookimpls()):
        name = impl.plugin_name
        table = config.plugins.tables.get(name)
        options = dict(table.options) if table else {}
        kwargs = {"config": config, "options": options}
        try:
            impl.function(**{k: kwargs[k] for k in impl.argnames})
        except ConfigError as e:
            for issue in e.issues:
                key_path: tuple[str | int, ...] = ("plugins", name)
                if issue.path:
                    key_path += tuple(issue.path.split("."))
                issues.append(config.issue(key_path, issue.message))
        except Exception as e:
            file, line = where(impl.function)
            issues.append(_issue(file, line, name, f"rproxy_configure failed: {type(e).__name__}: {e}"))
    if issues:
        raise ConfigError(issues)

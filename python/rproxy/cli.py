"""The ``rproxy`` command."""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from rproxy import config as config_mod
from rproxy.errors import ConfigError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    from rproxy import __version__

    p = argparse.ArgumentParser(prog="rproxy", description="A reverse proxy with a Rust engine and Python policy.")
    p.add_argument("--version", action="version", version=f"rproxy {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the proxy")
    run.add_argument("config", help="configuration file (proxy.toml)")
    run.add_argument("--workers", type=int, help="override [server] workers")
    run.add_argument(
        "--no-native",
        dest="native",
        action="store_false",
        help="run the built-ins' Python reference implementations instead of the engine's compiled forms",
    )
    run.add_argument("--debug", action="store_true", help="show tracebacks")

    check = sub.add_parser("check", help="validate a configuration without binding sockets")
    check.add_argument("config", help="configuration file (proxy.toml)")
    check.add_argument("--debug", action="store_true", help="show tracebacks")

    hooks = sub.add_parser("hooks", help="show each phase's hook implementations, in call order")
    hooks.add_argument("config", help="configuration file (proxy.toml)")
    hooks.add_argument("--stats", action="store_true", help="show the counters of a running proxy instead")
    hooks.add_argument("--debug", action="store_true", help="show tracebacks")

    upstreams = sub.add_parser(
        "upstreams", help="show the pools of a running proxy: each server's state, load and failures"
    )
    upstreams.add_argument("config", nargs="?", default="proxy.toml", help="configuration file (default: proxy.toml)")
    upstreams.add_argument("--debug", action="store_true", help="show tracebacks")

    init = sub.add_parser("init", help="write a commented starter proxy.toml")
    init.add_argument("path", nargs="?", default="proxy.toml", help="where to write it (default: proxy.toml)")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    return p


def _run(args: argparse.Namespace) -> int:
    from rproxy.master import Master
    from rproxy.plugins import load_plugins

    cfg = config_mod.load(args.config)
    load_plugins(cfg)  # every plugin problem is an error before anything binds
    if args.workers is not None and args.workers < 1:
        print("rproxy: error: --workers must be at least 1", file=sys.stderr)
        return 2
    return Master(cfg, workers=args.workers, native=args.native).run()


def _check(args: argparse.Namespace) -> int:
    from rproxy.plugins import load_plugins

    cfg = config_mod.load(args.config)
    loaded = load_plugins(cfg)
    listen = ", ".join(str(a) for a in cfg.server.listen)
    print(
        f"{args.config}: ok ({len(cfg.routes)} route(s), {len(cfg.upstreams)} upstream pool(s), "
        f"{len(loaded.plugins)} plugin(s), {cfg.server.workers} worker(s), listening on {listen})"
    )
    return 0


def _hooks(args: argparse.Namespace) -> int:
    from rproxy.plan import PHASES, build_plan
    from rproxy.plugins import load_plugins
    from rproxy.stats import format_stats, read_stats, stats_dir

    cfg = config_mod.load(args.config)
    if args.stats:
        totals, workers = read_stats(stats_dir(cfg))
        if not workers:
            print(f"rproxy: error: no running proxy of {args.config} is reporting statistics", file=sys.stderr)
            return 1
        print(format_stats(totals, workers))
        return 0
    loaded = load_plugins(cfg)
    plan = build_plan(loaded)
    for hook in ("rproxy_configure", "rproxy_startup", "rproxy_shutdown"):
        impls = [i.plugin_name for i in reversed(getattr(loaded.pm.hook, hook).get_hookimpls())]
        print(f"{hook}: {', '.join(impls) if impls else '(none)'}")
    print()
    for hook in PHASES:
        caller = getattr(loaded.pm.hook, hook)
        first = " (first result wins)" if caller.spec and caller.spec.opts.get("firstresult") else ""
        print(f"{hook}{first}")
        steps = plan.steps.get(hook, [])
        if not steps:
            print("    (none)")
        for n, step in enumerate(steps, 1):
            notes = [loaded.plugins[step.plugin].source if step.plugin in loaded.plugins else "pluggy"]
            if step.native:
                notes.append(f"native {step.native}")
            if step.is_async:
                notes.append(f"async, timeout {step.timeout:g}s")
            notes.append("fails the request" if step.fails_closed else "skipped on error")
            print(f"    {n}. {step.plugin:<16} {step.file}:{step.line}  ({', '.join(notes)})")
    return 0


def _upstreams(args: argparse.Namespace) -> int:
    from rproxy.stats import format_upstreams, read_upstreams, stats_dir

    cfg = config_mod.load(args.config)
    pools, workers = read_upstreams(stats_dir(cfg))
    if not workers:
        print(f"rproxy: error: no running proxy of {args.config} is reporting statistics", file=sys.stderr)
        return 1
    print(format_upstreams(pools, workers))
    return 0


def _init(args: argparse.Namespace) -> int:
    from rproxy.starter import render_starter

    path = Path(args.path)
    if path.exists() and not args.force:
        print(f"rproxy: error: {path} exists (use --force to overwrite)", file=sys.stderr)
        return 1
    path.write_text(render_starter(), encoding="utf-8")
    print(f"rproxy: wrote {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rproxy`` console script."""
    args = _parser().parse_args(argv)
    debug = getattr(args, "debug", False)
    try:
        return {"run": _run, "check": _check, "hooks": _hooks, "upstreams": _upstreams, "init": _init}[args.command](
            args
        )
    except ConfigError as e:
        if debug:
            traceback.print_exc()
        for issue in e.issues:
            print(issue, file=sys.stderr)
        return 2
    except OSError as e:
        if debug:
            traceback.print_exc()
        message = e.strerror or str(e)
        if e.filename:
            message += f": {e.filename}"
        print(f"rproxy: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

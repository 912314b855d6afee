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
    run.add_argument("--debug", action="store_true", help="show tracebacks")

    check = sub.add_parser("check", help="validate a configuration without binding sockets")
    check.add_argument("config", help="configuration file (proxy.toml)")
    check.add_argument("--debug", action="store_true", help="show tracebacks")

    init = sub.add_parser("init", help="write a commented starter proxy.toml")
    init.add_argument("path", nargs="?", default="proxy.toml", help="where to write it (default: proxy.toml)")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    return p


def _run(args: argparse.Namespace) -> int:
    from rproxy.master import Master

    cfg = config_mod.load(args.config)
    if args.workers is not None and args.workers < 1:
        print("rproxy: error: --workers must be at least 1", file=sys.stderr)
        return 2
    return Master(cfg, workers=args.workers).run()


def _check(args: argparse.Namespace) -> int:
    cfg = config_mod.load(args.config)
    listen = ", ".join(str(a) for a in cfg.server.listen)
    print(
        f"{args.config}: ok ({len(cfg.routes)} route(s), {len(cfg.upstreams)} upstream pool(s), "
        f"{cfg.server.workers} worker(s), listening on {listen})"
    )
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
        return {"run": _run, "check": _check, "init": _init}[args.command](args)
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

"""The rproxy command: check, init, and the generated key reference."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import rproxy
from rproxy import cli
from rproxy.docs import render_hooks
from rproxy.starter import render_reference

ROOT = Path(__file__).resolve().parents[2]


def test_check_accepts_the_repository_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check", str(ROOT / "proxy.toml")]) == 0
    out = capsys.readouterr().out
    assert "proxy.toml: ok (3 route(s), 1 upstream pool(s)," in out
    assert out.endswith("2 worker(s), listening on 127.0.0.1:8080)\n")


def test_init_writes_a_valid_commented_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "proxy.toml"
    assert cli.main(["init", str(target)]) == 0
    text = target.read_text()
    assert text.count("\n# ") > 20, "the starter explains its keys"
    cfg = rproxy.load(target)
    assert [r.path_prefix for r in cfg.routes] == ["/healthz", "/"]
    assert cli.main(["init", str(target)]) == 1
    assert "exists (use --force to overwrite)" in capsys.readouterr().err
    assert cli.main(["init", "--force", str(target)]) == 0


def test_run_can_run_the_reference_implementations() -> None:
    assert cli._parser().parse_args(["run", "proxy.toml"]).native is True
    assert cli._parser().parse_args(["run", "--no-native", "proxy.toml"]).native is False


def test_missing_file_is_a_config_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", "does-not-exist.toml"]) == 2
    assert capsys.readouterr().err == "does-not-exist.toml:0:0: error: cannot read: No such file or directory\n"


def test_generated_docs_are_current() -> None:
    """docs/config.md and docs/hooks.md are generated: `python -m rproxy.docs` rewrites them."""
    assert (ROOT / "docs" / "config.md").read_text() == render_reference()
    assert (ROOT / "docs" / "hooks.md").read_text() == render_hooks()


def test_console_script_runs() -> None:
    out = subprocess.run([sys.executable, "-m", "rproxy", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("rproxy ")

"""The rproxy command: check, init, upstreams, and the generated key reference."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import rproxy
from rproxy import cli
from rproxy.docs import render_hooks
from rproxy.starter import render_reference
from rproxy.stats import stats_dir

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


def _server(address: str, state: str, requests: int, **more: object) -> dict[str, object]:
    counters = {"in_flight": 0, "failures": 0, "ejections": 0, "ramp": 1.0, **more}
    return {"address": address, "weight": 1, "backup": False, "state": state, "requests": requests, **counters}


def test_upstreams_sums_the_live_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    Path("proxy.toml").write_text('[upstreams.app]\nservers = ["127.0.0.1:9001"]\n[[routes]]\nupstream = "app"\n')
    assert cli.main(["upstreams"]) == 1
    assert capsys.readouterr().err == "rproxy: error: no running proxy of proxy.toml is reporting statistics\n"

    directory = stats_dir(rproxy.load("proxy.toml"))
    directory.mkdir(parents=True)
    pool = {"pool": "app", "retries": 1, "retries_refused": 0, "overloaded": 2, "in_flight": 1, "pending": 0}
    one = {
        **pool,
        "requests": 10,
        "servers": [
            _server("127.0.0.1:9001", "up", 6, weight=3, in_flight=1),
            _server("[::1]:9002", "up", 4, failures=1),
            _server("127.0.0.1:9003", "up", 0, backup=True),
        ],
    }
    two = {
        **pool,
        "requests": 7,
        "retries_refused": 1,
        "servers": [
            _server("127.0.0.1:9001", "up", 5, weight=3),
            _server("[::1]:9002", "ejected", 2, failures=5, ejections=1, ramp=0.5),
            _server("127.0.0.1:9003", "up", 0, backup=True),
        ],
    }
    gone = subprocess.Popen([sys.executable, "-c", ""])
    gone.wait()
    for name, pid, pools in [("1", os.getpid(), [one]), ("2", os.getpid(), [two]), ("3", gone.pid, [one])]:
        (directory / f"worker-{name}.json").write_text(json.dumps({"pid": pid, "steps": [], "upstreams": pools}))
    assert cli.main(["upstreams", "proxy.toml"]) == 0
    assert capsys.readouterr().out == (
        "2 worker(s) reporting\n"
        "\n"
        "pool app: 17 requests, 2 retries (1 refused by the budget), 4 overloaded, 2 in flight, 0 pending\n"
        "  server                   weight  state       in flight   requests  failures  ejections  ramp\n"
        "  127.0.0.1:9001                3  up                  1         11         0          0  1.00\n"
        "  [::1]:9002                    1  up/ejected          0          6         6          1  0.50\n"
        "  127.0.0.1:9003 (backup)       1  up                  0          0         0          0  1.00\n"
    )
    # Workers of an engine without pool statistics (or before its first report).
    (directory / "worker-2.json").unlink()
    (directory / "worker-1.json").write_text(json.dumps({"pid": os.getpid(), "steps": []}))
    assert cli.main(["upstreams"]) == 0
    assert capsys.readouterr().out == "1 worker(s) reporting\n\n(no pool has reported yet)\n"

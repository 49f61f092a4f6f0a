"""The `rulegen` command's entry point: Ctrl-C while it loads is no traceback."""

from __future__ import annotations

import builtins
import subprocess
import sys
from pathlib import Path

import pytest

import generator

ROOT = Path(__file__).resolve().parent.parent


def test_the_console_script_goes_through_the_guarded_entry_point():
    scripts = (ROOT / "pyproject.toml").read_text().split("[project.scripts]")[1]
    assert scripts.strip().splitlines()[0] == 'rulegen = "generator:run"'


def test_ctrl_c_while_the_command_line_loads_exits_130(monkeypatch):
    real_import = builtins.__import__

    def interrupted(name, globals=None, locals=None, fromlist=(), level=0):
        if name == "cli" and level == 1:
            raise KeyboardInterrupt
        return real_import(name, globals, locals, fromlist, level)

    monkeypatch.delitem(sys.modules, "generator.cli", raising=False)
    monkeypatch.setattr(builtins, "__import__", interrupted)
    with pytest.raises(SystemExit) as exc:
        generator.run()
    assert exc.value.code == 130


def test_python_dash_m_runs_the_same_entry_point():
    result = subprocess.run(
        [sys.executable, "-m", "generator", "--version"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and result.stdout.startswith("rulegen, version")

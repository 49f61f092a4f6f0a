"""The `rulegen` command's entry point: Ctrl-C while it loads is no traceback."""

from __future__ import annotations

import builtins
import hashlib
import json
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


def test_a_run_ends_with_its_objects_frozen_and_its_exit_handlers_run(tmp_path):
    # The interpreter's last collections are skipped (gc.freeze), nothing else: a
    # handler registered before the run still runs after it, the exit code and the
    # files are the command's.
    script = (
        "import atexit, gc, sys, generator\n"
        "atexit.register(lambda: print('frozen', gc.get_freeze_count() > 0))\n"
        "sys.argv = ['rulegen', *sys.argv[1:]]\n"
        "generator.run()\n"
    )
    out = tmp_path / "out"
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            "generate",
            "profiles/gcp.yaml",
            "--output",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "frozen True"
    manifest = json.loads((out / ".rulegen-manifest.json").read_text())
    for rel, entry in manifest["files"].items():
        text = (out / rel).read_bytes()
        assert hashlib.sha256(text).hexdigest() in entry["sha256"], rel
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = subprocess.run(
        [sys.executable, "-c", script, "generate", "no-such-profile.yaml"],
        cwd=empty,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 1 and bad.stdout.splitlines()[-1] == "frozen True"
    assert "no-such-profile.yaml" in bad.stderr and not list(empty.iterdir())


def test_version_names_the_catalog_it_carries():
    from generator.catalog import load_catalog

    result = subprocess.run(
        [sys.executable, "-m", "generator", "--version"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = result.stdout.splitlines()
    assert lines[0] == f"rulegen, version {generator.__version__}"
    catalog = load_catalog()
    for line, info in catalog.release_lines.items():
        row = next(l for l in lines if l.split()[:1] == [line])
        assert info["versions"][0] in row and info["versions"][-1] in row
        assert row.endswith(f"read from {info['read_from']}")


def test_the_package_is_ready_to_publish():
    import tomllib

    from trove_classifiers import classifiers

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text()
    assert (
        "Apache License\n                           Version 2.0, January 2004" in text
    )
    assert "END OF TERMS AND CONDITIONS" in text and len(text.splitlines()) > 150
    assert project["license-files"] == ["LICENSE"]
    assert project["classifiers"] and set(project["classifiers"]) <= classifiers
    assert not [c for c in project["classifiers"] if c.startswith("License ::")]
    assert project["urls"]["Homepage"].startswith("https://")
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## [{project['version']}]" in changelog and "## [Unreleased]" in changelog

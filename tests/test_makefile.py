"""The Makefile: `make run` sets up the runtime only; `make test` says which Debian
packages it installs and why, and installs only the missing ones."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from conftest import ROOT

pytestmark = pytest.mark.skipif(not shutil.which("make"), reason="needs make")


def make(*args, env=None):
    return subprocess.run(
        ["make", "--no-print-directory", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
    )


def test_run_installs_the_runtime_only(tmp_path):
    # -n -B: print every command the target would run, without running any.
    commands = make("-n", "-B", "run", f"VENV={tmp_path / 'venv'}").stdout
    assert "pip install --quiet --disable-pip-version-check -e ." in commands
    assert "[test]" not in commands and "checkov" not in commands
    assert "apt-get" not in commands
    assert "rulegen plan" in commands and "rulegen generate" in commands


def test_every_debian_package_says_why():
    lines = make("-s", "debian-packages").stdout.splitlines()
    packages = dict(line.split(": ", 1) for line in lines)
    assert {"iptables", "ipset", "iproute2", "shellcheck", "patch"} <= set(packages)
    assert all(len(why.split()) >= 3 for why in packages.values()), packages


def test_tools_prints_what_it_installs_and_why(tmp_path):
    """With fake dpkg and apt-get on PATH: two packages missing, only they install."""
    fake = tmp_path / "bin"
    fake.mkdir()
    log = tmp_path / "apt.log"
    (fake / "dpkg").write_text(
        '#!/bin/sh\ncase "$2" in shellcheck|patch) exit 1;; esac; exit 0\n'
    )
    (fake / "apt-get").write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    for tool in fake.iterdir():
        tool.chmod(0o755)
    checkov = tmp_path / "checkov"
    checkov.mkdir()
    (checkov / ".installed").touch()
    env = dict(os.environ, PATH=f"{fake}:{os.environ['PATH']}")
    result = make("-s", "tools", f"CHECKOV_VENV={checkov}", env=env)
    assert result.returncode == 0, result.stderr
    if os.geteuid() != 0:
        assert "Not root: not installing the Debian packages shellcheck patch" in (
            result.stdout
        )
        assert not log.exists()
        return
    assert result.stdout.splitlines() == [
        "Installing Debian packages the tests use:",
        "  shellcheck: shellcheck lints the generated shell scripts",
        "  patch: patch applies diff --files output to prove it is a real diff",
    ]
    assert log.read_text().splitlines() == [
        "update -qq",
        "install -y -qq shellcheck patch",
    ]


def test_tools_is_silent_when_nothing_is_missing(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "dpkg").write_text("#!/bin/sh\nexit 0\n")
    (fake / "apt-get").write_text("#!/bin/sh\nexit 1\n")
    for tool in fake.iterdir():
        tool.chmod(0o755)
    checkov = tmp_path / "checkov"
    checkov.mkdir()
    (checkov / ".installed").touch()
    env = dict(os.environ, PATH=f"{fake}:{os.environ['PATH']}")
    result = make("-s", "tools", f"CHECKOV_VENV={checkov}", env=env)
    assert result.returncode == 0 and result.stdout == ""

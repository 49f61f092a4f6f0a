"""The Makefile: `make run` sets up the runtime only; `make test` says which Debian
packages it installs and why, and installs only the missing ones; `make check` and
`make test` are the tiers the README documents."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib

import pytest

from conftest import ROOT, TIERS

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


def planned(target: str, tmp_path) -> str:
    """What `make TARGET` would run, with the Makefile's own number of workers."""
    env = {k: v for k, v in os.environ.items() if k != "WORKERS"}
    return make("-n", "-B", target, f"VENV={tmp_path / 'venv'}", env=env).stdout


def pytest_commands(target: str, tmp_path) -> list[str]:
    commands = planned(target, tmp_path)
    return [line for line in commands.splitlines() if " -m pytest " in line]


def test_check_runs_the_fast_tier_without_the_tools(tmp_path):
    commands = planned("check", tmp_path)
    assert "black --check" in commands
    assert "checkov" not in commands and "apt-get" not in commands
    (pytest_line,) = pytest_commands("check", tmp_path)
    assert "--tier check" in pytest_line and " -n auto " in pytest_line


def test_test_runs_every_tier_in_parallel_and_ci_runs_it(tmp_path):
    commands = planned("test", tmp_path)
    assert "black --check" in commands
    (pytest_line,) = pytest_commands("test", tmp_path)
    assert "--tier" not in pytest_line and " -m " not in pytest_line.split("pytest")[1]
    assert " -n auto " in pytest_line and "--dist loadgroup" in pytest_line
    assert "CHECKOV=" in pytest_line
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert [line for line in ci if line.startswith("make")] == ["make test"]


def test_the_tiers_are_the_registered_markers_and_xdist_is_pinned():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    options = project["tool"]["pytest"]["ini_options"]
    assert "--strict-markers" in options["addopts"].split()
    registered = [line.split(":")[0] for line in options["markers"]]
    assert sorted(registered) == sorted(TIERS) + ["xdist_group(name)"]
    tools = project["project"]["optional-dependencies"]["test"]
    assert any(re.fullmatch(r"pytest-xdist==[\d.]+", tool) for tool in tools), tools


def test_readme_quick_start_is_two_commands_and_development_names_the_tiers():
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", quick, re.S).group(1)
    assert [line.split()[:2] for line in block.splitlines()] == [
        ["make", "run"],
        ["make", "test"],
    ]
    development = readme.split("## Development", 1)[1]
    assert "`make check`" in development
    for tier in TIERS:
        assert f"| `{tier}` |" in development, tier


def test_tier_check_leaves_the_marked_tests_out_and_says_why():
    listed = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "--collect-only", "-p", "no:xdist"]
        + ["--tier", "check", "tests/test_wheel.py", "tests/test_templating.py"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    ).stdout
    collected = [line for line in listed.splitlines() if "::" in line]
    assert collected and all("test_templating.py::" in line for line in collected)
    assert "wheel: 3 tests; builds the sdist and the wheel" in listed
    assert "netns: 0 tests; needs root and network namespaces" in listed

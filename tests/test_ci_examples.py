"""Where operators already work: the pre-commit hooks run under pre-commit itself,
and the CircleCI example and the GitHub Action are well formed and their scripts do
what they say (run here with bash, in a git repository shaped like a pull request)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT

VPN = ROOT / "profiles" / "aws-private-vpn.yaml"
CIRCLECI = ROOT / "examples" / "circleci" / "config.yml"
ACTION = ROOT / "action.yml"
needs_git = pytest.mark.skipif(not shutil.which("git"), reason="needs git")


def git(repo, *args):
    done = subprocess.run(
        ["git", "-c", "user.email=ci@example.com", "-c", "user.name=ci", *args],
        cwd=repo,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def tools(tmp_path):
    """An environment with this checkout's `rulegen` on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "rulegen"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} -m generator "$@"\n')
    wrapper.chmod(0o755)
    return {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
    }


@pytest.fixture
def pull_request(tmp_path):
    """A repository whose base branch (origin/main) holds profiles/prod.yaml."""
    repo = tmp_path / "repo"
    (repo / "profiles").mkdir(parents=True)
    shutil.copy(VPN, repo / "profiles" / "prod.yaml")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "base")
    git(repo, "update-ref", "refs/remotes/origin/main", "HEAD")
    return repo


def edit(repo, old: str, new: str) -> None:
    path = repo / "profiles" / "prod.yaml"
    assert old in path.read_text()
    path.write_text(path.read_text().replace(old, new))


UPGRADE = ('server_version: "4.2"', 'server_version: "4.3"')
NARROWED = ("external: [172.16.0.0/12]", "external: [172.16.0.0/16]")


def bash(script: str, cwd, env) -> subprocess.CompletedProcess:
    # How both CI systems run a step: bash, -e and pipefail.
    return subprocess.run(
        ["bash", "-eo", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def shellcheck(script: str) -> None:
    if not shutil.which("shellcheck"):
        return
    done = subprocess.run(
        ["shellcheck", "--shell=bash", "-"],
        input=script,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + script


# --- pre-commit ----------------------------------------------------------------------


def test_pre_commit_hooks_manifest_names_commands_that_exist():
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert {h["id"] for h in hooks} == {
        "rulegen-generate-check",
        "rulegen-snapshot-diff",
    }
    from generator.hooks import main

    for hook in hooks:
        assert {"id", "name", "entry", "language", "files"} <= set(hook)
        program, command = hook["entry"].split()
        assert program == "rulegen-pre-commit" and command in main.commands
        assert hook["language"] == "python"  # installs this package, with its script
    scripts = (ROOT / "pyproject.toml").read_text().split("[project.scripts]")[1]
    assert 'rulegen-pre-commit = "generator.hooks:main"' in scripts


@needs_git
@pytest.mark.wheel  # pre-commit builds and installs this package in a fresh venv
def test_pre_commit_try_repo_runs_the_hooks(tmp_path, tools):
    pytest.importorskip("pre_commit", reason="pre-commit is not installed")
    if not (ROOT / ".git").exists():
        pytest.skip("pre-commit try-repo needs this checkout to be a git repository")
    repo = tmp_path / "infra"
    (repo / "firewall").mkdir(parents=True)
    profile = repo / "firewall" / "prod.yaml"
    shutil.copy(VPN, profile)
    (repo / "deploy.yaml").write_text("apiVersion: v1\nkind: ConfigMap\n")  # not ours
    run = lambda *a: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "generator", *a], cwd=repo, env=tools, check=True
    )
    run("generate", "firewall/prod.yaml", "-o", "out/acme-prod")
    run("snapshot", "firewall/prod.yaml", "-o", "firewall/prod.snapshot.json")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "install")
    env = {**tools, "PRE_COMMIT_HOME": str(tmp_path / "pre-commit")}

    def try_repo() -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "pre_commit", "try-repo", str(ROOT), "--all-files"],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )

    clean = try_repo()
    assert clean.returncode == 0, clean.stdout[-3000:]
    assert re.search(r"rulegen generate --check\.+Passed", clean.stdout)
    assert re.search(
        r"rulegen diff against the committed snapshot\.+Passed", clean.stdout
    )
    # Narrowing the UI: the code is stale, and the diff shows a change no upgrade
    # note expects.
    text = profile.read_text()
    profile.write_text(text.replace(*NARROWED))
    stale = try_repo()
    assert stale.returncode == 1
    assert re.search(r"rulegen generate --check\.+Failed", stale.stdout)
    assert "would change out/acme-prod/terraform-aws/main.tf" in stale.stdout
    assert re.search(r"committed snapshot\.+Failed", stale.stdout)
    assert "narrowed lost: tcp/443 from external" in stale.stdout
    # The upgrade to 4.3, regenerated: its removals are all expected, so the diff
    # hook shows them and passes.
    profile.write_text(text.replace(*UPGRADE))
    run("generate", "firewall/prod.yaml", "-o", "out/acme-prod")
    upgrade = try_repo()
    assert upgrade.returncode == 0, upgrade.stdout[-3000:]
    assert (
        "10 removal(s) expected: the new page's egress tables drop them"
        in upgrade.stdout
    )


# --- CircleCI --------------------------------------------------------------------------


def _circleci_steps(values: dict) -> list[str]:
    config = yaml.safe_load(CIRCLECI.read_text())
    job = config["jobs"]["firewall-review"]
    params = {k: v.get("default") for k, v in job["parameters"].items()} | values
    scripts = []
    for step in job["steps"]:
        if isinstance(step, dict) and "run" in step:
            command = step["run"]["command"]
            for name in re.findall(r"<< parameters\.([\w-]+) >>", command):
                assert name in params, name
            scripts.append(
                re.sub(
                    r"<< parameters\.([\w-]+) >>",
                    lambda m: str(params[m.group(1)]),
                    command,
                )
            )
    return scripts


def test_circleci_example_is_a_valid_2_1_config():
    config = yaml.safe_load(CIRCLECI.read_text())
    assert str(config["version"]) == "2.1"
    assert set(config) <= {"version", "jobs", "workflows", "orbs", "commands"}
    for name, job in config["jobs"].items():
        assert job.get("docker") and all("image" in d for d in job["docker"]), name
        assert job["steps"] and job["steps"][0] == "checkout"
        for param in job["parameters"].values():
            assert param["type"] in ("string", "enum", "boolean", "integer")
            if param["type"] == "enum":
                assert param["default"] in param["enum"]
    for workflow in config["workflows"].values():
        for entry in workflow["jobs"]:
            name = entry if isinstance(entry, str) else next(iter(entry))
            assert name in config["jobs"], name
    scripts = _circleci_steps({})
    text = "\n".join(scripts)
    assert "--format markdown" in text and '--fail-on "unexpected"' in text
    for script in scripts:
        shellcheck(script)


@needs_git
def test_circleci_steps_post_the_diff_and_gate_on_unexpected(pull_request, tools):
    install, diff, post, gate = _circleci_steps({})
    assert install.startswith("pip install")
    env = {k: v for k, v in tools.items() if k not in ("CIRCLE_PULL_REQUEST",)}
    # The upgrade: reviewed, posted where there is a pull request, and let through.
    edit(pull_request, *UPGRADE)
    shown = bash(diff, pull_request, env)
    assert shown.returncode == 0, shown.stderr
    markdown = (pull_request / "review" / "diff.md").read_text()
    assert markdown.startswith("### rulegen diff: acme-prod 4.2")
    assert "expected: the 4.3-4.10 page's egress tables drop it (" in markdown
    assert "nothing posted" in bash(post, pull_request, env).stdout
    assert bash(gate, pull_request, env).returncode == 0
    # The same upgrade with the UI narrowed as well: the gate stops it.
    edit(pull_request, *NARROWED)
    assert bash(diff, pull_request, env).returncode == 0
    stopped = bash(gate, pull_request, env)
    assert stopped.returncode == 1 and "--fail-on unexpected stops" in stopped.stdout
    # --fail-on breaking stops the upgrade alone too.
    *_, strict = _circleci_steps({"fail-on": "breaking"})
    edit(pull_request, *reversed(NARROWED))
    assert bash(strict, pull_request, env).returncode == 1


# --- GitHub Action -----------------------------------------------------------------------


def test_action_is_a_composite_action_that_uses_only_its_inputs():
    action = yaml.safe_load(ACTION.read_text())
    assert {"name", "description", "inputs", "runs"} <= set(action)
    assert action["runs"]["using"] == "composite"
    assert action["inputs"]["profile"]["required"] is True
    assert action["inputs"]["fail-on"]["default"] == "unexpected"
    text = ACTION.read_text()
    for name in re.findall(r"inputs\.([\w-]+)", text):
        assert name in action["inputs"], name
    for output in action.get("outputs", {}).values():
        step = re.search(r"steps\.([\w-]+)\.outputs", output["value"]).group(1)
        assert step in {s.get("id") for s in action["runs"]["steps"]}
    for step in action["runs"]["steps"]:
        assert ("uses" in step) != ("run" in step), step
        if "run" in step:
            assert step["shell"] == "bash"  # composite steps must name their shell
            assert "${{" not in step["run"]  # inputs reach scripts through env only
            shellcheck(step["run"])
    scripts = "\n".join(s.get("run", "") for s in action["runs"]["steps"])
    assert "--format markdown" in scripts and '--fail-on "$FAIL_ON"' in scripts


@needs_git
def test_action_steps_post_the_diff_and_gate_on_unexpected(
    pull_request, tools, tmp_path
):
    steps = {
        s.get("id"): s
        for s in yaml.safe_load(ACTION.read_text())["runs"]["steps"]
        if s.get("id")
    }
    temp = tmp_path / "runner"
    temp.mkdir()
    env = {
        **tools,
        "RUNNER_TEMP": str(temp),
        "GITHUB_OUTPUT": str(tmp_path / "output"),
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
        "PROFILE": "profiles/prod.yaml",
        "BASE_REF": "main",
    }
    edit(pull_request, *UPGRADE)
    shown = bash(steps["diff"]["run"], pull_request, env)
    assert shown.returncode == 0, shown.stderr
    summary = (tmp_path / "summary.md").read_text()
    assert "10 removal(s) expected: the new page's egress tables drop them" in summary
    gate = bash(steps["gate"]["run"], pull_request, {**env, "FAIL_ON": "unexpected"})
    assert gate.returncode == 0
    assert (tmp_path / "output").read_text().splitlines()[-1] == "exit-code=2"
    edit(pull_request, *NARROWED)
    gate = bash(steps["gate"]["run"], pull_request, {**env, "FAIL_ON": "unexpected"})
    assert gate.returncode == 1 and "::error::" in gate.stdout
    assert (tmp_path / "output").read_text().splitlines()[-1] == "exit-code=3"
    # A profile the base branch does not have: nothing to compare, nothing stopped.
    new = bash(
        steps["diff"]["run"], pull_request, {**env, "PROFILE": "profiles/x.yaml"}
    )
    assert new.returncode == 0 and "nothing to compare" in new.stdout


def test_readme_pre_commit_config_uses_the_hooks_and_their_options():
    from click.testing import CliRunner

    from generator.hooks import main

    readme = (ROOT / "README.md").read_text().split("## In CI and pre-commit")[1]
    config = yaml.safe_load(re.search(r"```yaml\n(.*?)```", readme, re.S)[1])
    manifest = {
        h["id"]: h
        for h in yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    }
    for hook in config["repos"][0]["hooks"]:
        command = manifest[hook["id"]]["entry"].split()[1]
        # The args as pre-commit passes them: before the file names (none here).
        result = CliRunner().invoke(main, [command, *hook.get("args", [])])
        assert result.exit_code == 0, result.output

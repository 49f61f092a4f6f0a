"""The README's examples are real: its profile validates, its upgrade diff is current."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess

import pytest
import yaml

from click.testing import CliRunner

from generator.cli import main

from conftest import ROOT, profile_from

README = (ROOT / "README.md").read_text()


def test_profile_reference_is_a_valid_profile():
    section = README.split("## Profile reference", 1)[1]
    text = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    data = yaml.safe_load(text)
    gcp = data.pop("gcp")  # the reference shows it; an aws profile may not have it
    profile = profile_from(yaml.safe_dump(data))
    assert profile.name == "acme-prod" and profile.cloud == "aws"
    data.pop("aws")  # cloud: aws only
    data.update(cloud="gcp", gcp=gcp, load_balancer={"transparent": True})
    assert profile_from(yaml.safe_dump(data)).gcp == gcp


def test_upgrading_example_is_the_real_output():
    result = CliRunner().invoke(
        main,
        [
            "diff",
            str(ROOT / "profiles/aws-private-vpn.yaml"),
            str(ROOT / "profiles/aws-private-vpn.yaml"),
            "--new-version",
            "4.3",
            "--format",
            "markdown",
        ],
    )
    assert result.exit_code == 2
    quoted = "\n".join(
        line[2:] if line.startswith("> ") else ""
        for line in README.split("## Upgrading", 1)[1]
        .split("## Example profiles")[0]
        .splitlines()
        if line.startswith(">")
    )
    assert quoted.strip() == result.stdout.strip()


# --- the command table and --help agree ---------------------------------------------

OPTION = re.compile(
    r"(?<![\w-])(--?[a-z][a-z0-9-]*)(?: ([a-z0-9_.-]+(?:\|[a-z0-9_.-]+)+))?"
)


def _command_rows() -> dict[str, list[str]]:
    section = README.split("## Command line", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, list[str]] = {}
    for line in section.splitlines():
        found = re.match(r"\| `rulegen (\w+)([^`]*)` \|", line)
        if found:
            usage = found.group(2).replace("\\|", "|")
            rows.setdefault(found.group(1), []).append(usage)
    return rows


def test_command_table_lists_every_command_and_option_of_help():
    import click

    rows = _command_rows()
    names = main.list_commands(None)
    assert set(rows) == set(names), "a command missing from the table"
    for name in names:
        command = main.get_command(None, name)
        usage = " ".join(rows[name])
        shown = {opt: values for opt, values in OPTION.findall(usage)}
        known = {}
        for param in command.params:
            if isinstance(param, click.Argument):
                assert param.human_readable_name in usage, (name, param.name)
                continue
            if param.name == "help":
                continue
            opts = param.opts + param.secondary_opts
            assert any(o in shown for o in opts), f"rulegen {name}: {opts} not listed"
            for opt in opts:
                known[opt] = param
            if isinstance(param.type, click.Choice):
                listed = next(shown[o] for o in opts if o in shown)
                assert listed.split("|") == list(param.type.choices), (name, opts)
        assert not set(shown) - set(known), f"rulegen {name}: not in --help"


# --- the examples are real ---------------------------------------------------------


def test_json_contract_example_is_a_real_rule_with_every_field():
    import json

    shown = json.loads(
        re.search(
            r"```json\n(.*?)```", README.split("The JSON matrix is a contract")[1], re.S
        )[1]
    )
    result = CliRunner().invoke(
        main, ["plan", str(ROOT / "profiles/aws-private-vpn.yaml"), "--format", "json"]
    )
    real = json.loads(result.stdout)
    assert list(shown) == list(real)
    by_name = {rule["name"]: rule for rule in real["rules"]}
    (rule,) = shown["rules"]
    assert rule == by_name[rule["name"]]
    # Fields only some rules have are named in the text after the example.
    text = README.split("The JSON matrix is a contract", 1)[1].split("## Targets")[0]
    optional = set()
    for name in ("generic-baremetal", "aws-site-flows"):
        path = ROOT / "profiles" / f"{name}.yaml"
        stateless = path.read_text().replace("stateful: true", "stateful: false")
        out = CliRunner().invoke(
            main, ["plan", "-", "--format", "json"], input=stateless
        )
        optional |= {k for r in json.loads(out.stdout)["rules"] for k in r} - set(rule)
    assert optional and all(
        f"`{key}`" in text or f'"{key}"' in text for key in optional
    )


def test_error_example_is_the_real_output(shell):
    tmp_path, env = shell
    block = README.split("Every bad input is reported", 1)[1].split("```\n", 2)[1]
    vpn = (ROOT / "profiles/aws-private-vpn.yaml").read_text()
    (tmp_path / "prod.yaml").write_text(
        vpn.replace("10.0.16.0/20", "10.0.16.1/20").replace(
            "ssh_admin: [172.16.10.0/24]", "ssh_admin: [172.16.10.1/24]"
        )
    )
    (tmp_path / "typo.yaml").write_text(vpn.replace("  subnets:", "  subnet:"))
    shown = []
    for line in block.splitlines():
        if line.startswith("$ "):
            args = line[2:].split()
            done = subprocess.run(
                [RULEGEN, *args[1:]],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
            )
            assert done.returncode == 1
            shown.append(line)
            shown += done.stderr.splitlines()
    assert shown == block.splitlines()


# --- every shell example runs --------------------------------------------------------

DATA = ROOT / "tests" / "data" / "audit"
# Lines the README shows that other tests run, where they can run.
ELSEWHERE = {
    "make run": "tests/test_makefile.py (the runtime only), tests/test_wheel.py",
    "make test": "tests/test_makefile.py",
    "pipx install .": "tests/test_wheel.py (the wheel in a fresh environment)",
}
# Cloud exports need an account: the hand-made exports of the audit tests stand in.
CLOUD_EXPORTS = {"aws": DATA / "aws-messy.json", "gcloud": DATA / "gcp-messy.json"}
# Host exports run for real, in a network namespace holding the generated rules of
# this profile's role, loaded as "Applying on hosts" says.
HOST = ("generic-baremetal", "kubernetes_nodes")
HOST_TOOLS = {
    "iptables-save": "iptables",
    "ip6tables-save": "iptables",
    "ipset": "iptables",
    "nft": "nftables",
}
RULEGEN = "rulegen"


def _commands(block: str) -> list[str]:
    """The block's commands: continuations joined, comments and `;` split off."""
    text = re.sub(r"\\\n\s*", "", block)
    out = []
    for line in text.splitlines():
        line = re.sub(r"(^|\s+)#(\s.*)?$", "", line).strip()
        out += [part.strip() for part in line.split("; ") if part.strip()]
    return out


def _examples() -> list[list[str]]:
    blocks = [_commands(b) for b in re.findall(r"```sh\n(.*?)```", README, re.S)]
    inline = [
        span
        for span in re.findall(r"`(rulegen [^`]*)`", README)
        if "profiles/" in span or span.startswith("rulegen --")
    ]
    return [b for b in blocks if b] + [[span] for span in inline]


@pytest.fixture
def shell(tmp_path):
    """A folder with the examples' profiles, and `rulegen` on PATH (this checkout)."""
    import sys

    work = tmp_path / "work"
    shutil.copytree(ROOT / "profiles", work / "profiles")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "rulegen"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} -m generator "$@"\n')
    wrapper.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
    }
    return work, env


@contextlib.contextmanager
def _host(engine: str, work, env):
    """A network namespace holding the generated `engine` rules of HOST's role."""
    import secrets

    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("host exports run in network namespaces: needs root and ip")
    tool = "iptables-restore" if engine == "iptables" else "nft"
    if not shutil.which(tool):
        pytest.skip(f"needs {tool}")
    name, role = HOST
    out = work / "host"
    generated = subprocess.run(
        [RULEGEN, "generate", f"profiles/{name}.yaml", "--target", engine, "-o", out],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    assert generated.returncode == 0, generated.stderr
    ns = f"rgr{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=30)
    try:
        loaded = subprocess.run(
            ["ip", "netns", "exec", ns, "sh", "apply.sh", "--yes", role],
            cwd=out / engine,
            env={**env, "RULEGEN_STATE": str(work / f"state-{engine}")},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert loaded.returncode == 0, loaded.stderr
        yield ns
    finally:
        subprocess.run(["ip", "netns", "delete", ns], timeout=30)


def _completion(command: str, env, work) -> None:
    shell = re.search(r"_RULEGEN_COMPLETE=(\w+)_source", command).group(1)
    if shutil.which(shell):
        check = {"bash": "complete -p rulegen", "zsh": "whence -w _rulegen_completion"}
        script = command + "\n" + check.get(shell, "complete -c rulegen")
        done = subprocess.run(
            [shell, "-c", script], cwd=work, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0 and "rulegen" in done.stdout, (command, done)
        return
    # No such shell here: the script it would source is still rulegen's to print.
    done = subprocess.run(
        [RULEGEN],
        cwd=work,
        env={**env, "_RULEGEN_COMPLETE": f"{shell}_source"},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0 and "rulegen" in done.stdout, (command, done.stderr)


@pytest.mark.parametrize(
    "commands",
    [
        # The host exports run in network namespaces: the netns tier.
        (
            pytest.param(c, marks=pytest.mark.netns)
            if any(cmd.split()[0] in HOST_TOOLS for cmd in c)
            else c
        )
        for c in _examples()
    ],
    ids=lambda c: " ".join(c[0].split()[:3])[:40],
)
def test_every_shell_example_runs(commands, shell):
    work, env = shell
    with contextlib.ExitStack() as stack:
        hosts: dict[str, str] = {}
        for command in commands:
            first = command.split()[0]
            if command in ELSEWHERE:
                continue
            if "_RULEGEN_COMPLETE=" in command:
                _completion(command, env, work)
                continue
            if first in CLOUD_EXPORTS:
                target = command.rsplit(">", 1)[1].strip()
                (work / target).write_text(CLOUD_EXPORTS[first].read_text())
                continue
            if first in HOST_TOOLS:
                engine = HOST_TOOLS[first]
                if engine not in hosts:
                    hosts[engine] = stack.enter_context(_host(engine, work, env))
                done = subprocess.run(
                    ["ip", "netns", "exec", hosts[engine], "sh", "-c", command],
                    cwd=work,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                assert done.returncode == 0, (command, done.stderr)
                continue
            assert first == "rulegen", f"README example not run anywhere: {command}"
            if "report" in command.split() and not shutil.which("dot"):
                pytest.skip("rulegen report needs Graphviz's dot")
            done = subprocess.run(
                ["sh", "-c", command],
                cwd=work,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert "Traceback" not in done.stderr, command
            # 0 nothing to report, 2 findings, 4 part of an export not evaluated
            # (audit of the messy stand-in exports): an example is never an error.
            assert done.returncode in (0, 2, 4), (command, done.stderr)
            if "--iptables-save" in command or "--nft" in command:
                assert done.returncode == 0, (command, done.stdout)  # audits clean

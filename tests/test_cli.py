"""The command line: plan formats, schema, init, and errors without tracebacks."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest
import yaml
from click.testing import CliRunner

from generator.cli import main
from generator.matrix import PROTOCOLS, ROLES
from generator.optimizer import optimize

from conftest import ROOT, example_matrix, profile_from

README = (ROOT / "README.md").read_text()


def run(*args, **kwargs):
    result = CliRunner().invoke(
        main, [str(a) for a in args], catch_exceptions=False, **kwargs
    )
    return result


def test_plan_json_is_the_contract_and_pinned(example_name, file_regression):
    path = ROOT / "profiles" / f"{example_name}.yaml"
    result = run("plan", path, "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert {"profile", "server_version", "warnings", "rules"} <= set(data)
    assert data["rules"], "a matrix with no rules"
    for rule in data["rules"]:
        assert rule["role"] in ROLES
        assert rule["direction"] in ("ingress", "egress")
        assert rule["protocol"] in PROTOCOLS
        if rule["protocol"] == "all":
            assert rule["ports"] is None
        else:
            lo, hi = rule["ports"]
            assert 1 <= lo <= hi <= 65535
        peer = rule["peer"]
        assert ("role" in peer) != ("cidrs" in peer)
        assert peer.get("role", ROLES[0]) in ROLES
        assert rule["purpose"] and rule["reference"]
    file_regression.check(
        result.stdout, basename=f"plan-{example_name}", extension=".json"
    )


def test_plan_formats_hold_every_rule(example_name):
    path = ROOT / "profiles" / f"{example_name}.yaml"
    count = len(optimize(example_matrix(example_name))[0].rules)  # plan optimizes
    rows = list(
        csv.DictReader(io.StringIO(run("plan", path, "--format", "csv").stdout))
    )
    assert len(rows) == count
    assert {r["role"] for r in rows} <= set(ROLES)
    markdown = run("plan", path, "--format", "markdown").stdout
    assert (
        sum(
            1
            for line in markdown.splitlines()
            if line.startswith("| ")
            and "---" not in line
            and not line.startswith("| protocol")
        )
        == count
    )
    table = run("plan", path).stdout
    for role in example_matrix(example_name).roles():
        assert role.replace("_", " ").split()[0].capitalize() in table


def test_plan_table_groups_like_the_page(file_regression):
    result = run("plan", ROOT / "profiles" / "aws-private-vpn.yaml")
    assert result.exit_code == 0
    file_regression.check(
        result.stdout, basename="plan-table-aws-private-vpn", extension=".txt"
    )


def test_plan_server_version_override():
    path = ROOT / "profiles" / "aws-private-vpn.yaml"
    data = json.loads(
        run("plan", path, "--format", "json", "--server-version", "4.3").stdout
    )
    assert data["server_version"] == "4.3" and data["release_line"] == "4.3-4.10"
    result = run("plan", path, "--server-version", "5.0")
    assert result.exit_code == 1
    assert "server version '5.0' is not known" in result.stderr


def test_bad_profile_exits_1_with_line_and_no_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    text = (ROOT / "profiles" / "aws-private-vpn.yaml").read_text()
    bad.write_text(text.replace("10.0.16.0/20", "10.0.16.1/20"))
    out = tmp_path / "out"
    for args in (("plan", bad), ("generate", bad, "-o", out)):
        result = run(*args)
        assert result.exit_code == 1
        assert "Traceback" not in result.output
        assert (
            f"error: {bad}:" in result.stderr
            and "did you mean 10.0.16.0/20?" in result.stderr
        )
    assert not out.exists()


def test_missing_profile_file(tmp_path):
    result = run("plan", tmp_path / "nope.yaml")
    assert result.exit_code == 1
    assert "cannot read" in result.stderr


def test_warnings_go_to_stderr(tmp_path):
    path = tmp_path / "p.yaml"
    text = (ROOT / "profiles" / "aws-private-vpn.yaml").read_text()
    path.write_text(
        text.replace("ssh_admin: [172.16.10.0/24]", "ssh_admin: [0.0.0.0/0]")
    )
    result = run("plan", path)
    assert "warning: peers.ssh_admin: administrative SSH is open" in result.stderr
    data = json.loads(run("plan", path, "--format", "json").stdout)
    assert any("ssh_admin" in w for w in data["warnings"])


def test_schema_command_prints_the_profile_schema():
    from jsonschema import Draft202012Validator

    schema = json.loads(run("schema").stdout)
    Draft202012Validator.check_schema(schema)
    assert set(schema["required"]) >= {"name", "server_version", "cloud", "access"}


@pytest.mark.parametrize("cloud", ["aws", "gcp", "generic"])
@pytest.mark.parametrize("access", ["vpn", "public"])
def test_init_writes_a_valid_profile(cloud, access, tmp_path):
    target = tmp_path / "new.yaml"
    result = run(
        "init",
        "--cloud",
        cloud,
        "--access",
        access,
        "--name",
        "new-site",
        "--server-version",
        "4.2",
        "-o",
        target,
    )
    assert result.exit_code == 0, result.output
    profile = profile_from(target.read_text())
    assert (profile.cloud, profile.access, profile.server_version) == (
        cloud,
        access,
        "4.2",
    )
    assert "#" in target.read_text()  # commented for the reader
    again = run("init", "-o", target)
    assert again.exit_code == 1 and "--force" in again.stderr
    assert run("init", "-o", target, "--force").exit_code == 0


def test_init_rejects_a_bad_block():
    result = run("init", "--vpc-cidr", "10.0.0.0/8")
    assert (
        result.exit_code == 1
        and "expected an IPv4 block from /16 to /26 on aws" in result.stderr
    )
    assert run("init", "--server-version", "4.11").exit_code == 1


def test_module_entry_point():
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "generator", "--version"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0 and "rulegen" in result.stdout


# One exit-code table for every command: 0 nothing to report, 1 error (usage
# errors included), 2 findings, 3 findings that match --fail-on.
@pytest.mark.parametrize("command", main.list_commands(None))
def test_usage_errors_exit_1_on_every_command(command):
    result = run(command, "--no-such-option")
    assert result.exit_code == 1, result.output
    assert "No such option" in result.stderr and "Traceback" not in result.output


@pytest.mark.parametrize(
    "args, guess",
    [
        (["diff", "a", "b", "--fail-on", "breakin"], "'breaking'"),
        (["diff", "a", "b", "--formt", "markdown"], "'--format'"),
        (["audit", "p.yaml", "--fail-on", "all"], None),
        (["audit", "p.yaml", "--role", "nomad_client"], "'nomad_clients'"),
        (["plan", "p.yaml", "--format", "tabel"], "'table'"),
        (["generate", "p.yaml", "--target", "terraform-awz"], "'terraform-aws'"),
        (["explain", "p.yaml", "--from", "a", "--to", "b", "--port", "0"], None),
        (["plna"], "'plan'"),
        ([], None),
    ],
)
def test_a_misspelt_value_is_an_error_not_a_finding(args, guess):
    result = run(*args)
    assert result.exit_code == 1, result.output
    if guess:
        assert f"Did you mean {guess}?" in result.stderr


def test_explain_from_a_misspelt_role_says_did_you_mean():
    path = ROOT / "profiles" / "aws-private-vpn.yaml"
    args = ["--to", "external_vms", "--port", "22"]
    result = run("explain", path, "--from", "nomad_client", *args)
    assert result.exit_code == 1
    assert "did you mean 'nomad_clients'?" in result.stderr
    peer = run("explain", path, "--from", "ssh_admn", *args)
    assert peer.exit_code == 1 and "did you mean 'ssh_admin'?" in peer.stderr


def test_the_exit_code_table_is_in_help_and_readme():
    from generator.cli import EXIT_CODES

    assert "Exit codes" in run("--help").stdout
    codes = dict(
        re.findall(r"^\s+(\d+)\s+(\S.*)$", EXIT_CODES, re.M)
    )  # code -> first line of its meaning
    assert set(codes) == {"0", "1", "2", "3", "4", "130"}
    table = README.split("### Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `(\d+)` \| (.+?) \|", table, re.M))
    assert set(rows) == set(codes)
    assert "usage" in rows["1"] and "--fail-on" in rows["3"]
    assert "not evaluated" in rows["4"]


def test_target_and_other_choices_complete_in_the_shell():
    import os
    import subprocess
    import sys

    def complete(words: str) -> list[str]:
        env = {
            **os.environ,
            "_RULEGEN_COMPLETE": "bash_complete",
            "COMP_WORDS": words,
            "COMP_CWORD": str(len(words.split(" ")) - 1),
        }
        done = subprocess.run(
            [sys.executable, "-m", "generator"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return [line.split(",", 1)[1] for line in done.stdout.splitlines()]

    from generator.emitters import TARGETS

    assert complete("rulegen generate p.yaml --target ") == list(TARGETS)
    assert complete("rulegen generate p.yaml --target terraform-") == [
        "terraform-aws",
        "terraform-gcp",
    ]
    assert complete("rulegen diff a b --fail-on ") == ["breaking", "unexpected"]
    assert "generate" in complete("rulegen ")


def test_plan_prints_the_optimizer_line_only_when_it_changed_something():
    quiet = run("plan", ROOT / "profiles" / "aws-private-vpn.yaml")
    assert quiet.exit_code == 0 and "optimized:" not in quiet.stderr
    busy = run("plan", ROOT / "profiles" / "aws-public-ip.yaml")
    assert "optimized: 42 rules -> 40, 47 addresses -> 37" in busy.stderr
    # SSH to the VMs' public range (0.0.0.0/0) covers SSH to the VCS.
    assert "shadowed: kubernetes_nodes_egress_tcp_22_vcs" in busy.stderr
    assert "shadowed: nomad_clients_egress_tcp_22_vcs" in busy.stderr
    raw = run("plan", ROOT / "profiles" / "aws-public-ip.yaml", "--no-optimize")
    assert "optimized:" not in raw.stderr


def test_every_command_module_is_listed_and_holds_its_command():
    import click

    folder = ROOT / "generator" / "commands"
    modules = {p.stem for p in folder.glob("*.py")} - {"__init__"}
    assert set(main.list_commands(None)) == modules
    for name in sorted(modules):
        command = main.get_command(None, name)
        assert isinstance(command, click.Command) and command.name == name
    assert main.get_command(None, "no-such-command") is None


def test_a_command_loads_only_its_own_module():
    import subprocess
    import sys

    code = (
        "import sys\nfrom generator.cli import main\n"
        "try:\n    main(['schema'], prog_name='rulegen')\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('generator.commands.')),"
        " file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0 and json.loads(result.stdout)["type"] == "object"
    assert result.stderr.strip() == "['generator.commands.schema']"


def test_help_lists_every_command_with_its_summary():
    shown = run("--help").stdout.split("Commands:", 1)[1]
    for name in main.list_commands(None):
        summary = main.get_command(None, name).get_short_help_str()
        assert re.search(rf"^  {name} +{re.escape(summary[:30])}", shown, re.M), name

"""--server-version and --old/--new-version: the override is checked like the file's own."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from generator.cli import main

from conftest import ROOT

NAT_ERROR = "assign_public_ip is true: list the cluster's NAT gateway addresses"


@pytest.fixture
def public_ip_45(tmp_path):
    """Valid on 4.5 (the VM rows that need NAT addresses are obsolete there), not on 4.2."""
    text = (ROOT / "profiles" / "aws-public-ip.yaml").read_text()
    text = text.replace('server_version: "4.1"', 'server_version: "4.5"')
    text = text.replace(
        "nat_gateway_ips: [198.51.100.10/32, 198.51.100.11/32]", "nat_gateway_ips: []"
    )
    path = tmp_path / "public-45.yaml"
    path.write_text(text)
    return path


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_the_profile_is_valid_as_written(public_ip_45):
    assert run("plan", public_ip_45).exit_code == 0


@pytest.mark.parametrize(
    "command",
    [
        ["plan", "{p}", "--server-version", "4.2"],
        ["generate", "{p}", "-o", "{out}", "--server-version", "4.2"],
        ["snapshot", "{p}", "-o", "{out}/s.json", "--server-version", "4.2"],
        ["diff", "{p}", "{p}", "--old-version", "4.2"],
        ["diff", "{p}", "{p}", "--new-version", "4.2"],
        ["verify", "{p}", "--server-version", "4.2"],
        [
            "explain",
            "{p}",
            "--from",
            "nomad_clients",
            "--to",
            "external_vms",
            "--port",
            "22",
            "--server-version",
            "4.2",
        ],
    ],
    ids=lambda c: " ".join(a for a in c if not a.startswith("{"))[:40],
)
def test_override_runs_the_version_checks(command, public_ip_45, tmp_path):
    out = tmp_path / "out"
    args = [a.format(p=public_ip_45, out=out) for a in command]
    result = run(*args)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert f"error: {public_ip_45}:" in result.stderr and NAT_ERROR in result.stderr
    assert "checked as server_version '4.2'" in result.stderr
    assert not out.exists()  # nothing written


def test_override_to_a_version_the_profile_suits(public_ip_45):
    result = run("plan", public_ip_45, "--server-version", "4.8", "--format", "json")
    assert result.exit_code == 0 and '"server_version": "4.8"' in result.stdout


def test_unknown_override_names_the_option(public_ip_45):
    result = run("plan", public_ip_45, "--server-version", "4.11")
    assert result.exit_code == 1
    assert "server version '4.11' is not known" in result.stderr

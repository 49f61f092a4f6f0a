"""`rulegen generate`: targets, --check, hand edits, capability errors."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from generator.cli import main
from generator.emitters import TARGETS, EmitError, Target, expressible, targets_for

from conftest import ROOT, example_matrix

GCP = ROOT / "profiles" / "gcp.yaml"


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def generate(out, *extra):
    return run("generate", GCP, "--target", "gcp-firewall", "-o", out, *extra)


def snapshot(folder):
    return {
        p.relative_to(folder): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_generate_is_deterministic_and_idempotent(tmp_path):
    assert generate(tmp_path / "a").exit_code == 0
    assert generate(tmp_path / "b").exit_code == 0
    assert snapshot(tmp_path / "a") == snapshot(tmp_path / "b")
    again = generate(tmp_path / "a")
    assert again.exit_code == 0 and "0 new, 0 changed" in again.stderr


def test_check_writes_nothing_and_lists_changes(tmp_path):
    out = tmp_path / "out"
    result = generate(out, "--check")
    assert result.exit_code == 1
    assert "would write" in result.stdout and "firewalls.json (new)" in result.stdout
    assert not out.exists()
    generate(out)
    assert generate(out, "--check").exit_code == 0


def test_hand_edit_is_not_overwritten_without_force(tmp_path):
    out = tmp_path / "out"
    generate(out)
    edited = out / "gcp-firewall" / "firewalls.json"
    edited.write_text("[]\n")
    result = generate(out)
    assert result.exit_code == 1 and "edited by hand" in result.stderr
    assert edited.read_text() == "[]\n"
    check = generate(out, "--check")
    assert check.exit_code == 1 and "(edited by hand)" in check.stdout
    assert generate(out, "--force").exit_code == 0
    assert edited.read_text() != "[]\n"


def test_unknown_or_foreign_target_is_a_clear_error(tmp_path):
    result = run("generate", GCP, "--target", "pf", "-o", tmp_path)
    assert result.exit_code == 1 and "unknown target 'pf'" in result.stderr
    aws = ROOT / "profiles" / "aws-private-vpn.yaml"
    result = run("generate", aws, "--target", "gcp-firewall", "-o", tmp_path)
    assert result.exit_code == 1 and "does not apply to cloud aws" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_every_cloud_has_default_targets():
    for cloud in ("aws", "gcp", "generic"):
        assert targets_for(cloud)


def test_capability_error_names_the_rule():
    matrix = example_matrix("aws-private-vpn")
    narrow = Target(
        "narrow", "none", clouds=("aws",), protocols=frozenset({"tcp", "all"})
    )
    with pytest.raises(
        EmitError, match=r"cannot express protocol udp: rule \w+ egress udp/53"
    ):
        expressible(narrow, matrix)
    no_lb = TARGETS["gcp-firewall"]
    with pytest.raises(
        EmitError, match="cannot attach rules to load_balancer: rule load_balancer"
    ):
        expressible(no_lb, matrix)


def test_stateful_targets_leave_return_rules_to_the_engine():
    from dataclasses import replace

    from generator.planner import plan
    from conftest import example

    matrix = plan(replace(example("aws-private-vpn"), stateful=False))
    returns = [r for r in matrix.rules if r.is_return]
    assert returns
    stateful = Target("sg", "none", clouds=("aws",))
    assert len(expressible(stateful, matrix)) == len(matrix.rules) - len(returns)
    stateless_without_ports = Target("acl", "none", clouds=("aws",), stateful=False)
    with pytest.raises(EmitError, match="cannot match source ports"):
        expressible(stateless_without_ports, matrix)

"""diff as a reader takes it: what was lost and what remains, release-only file
changes, removals the new page's egress tables expect, and the upgrade's advice."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from generator.cli import main

from conftest import ROOT

VPN = ROOT / "profiles" / "aws-private-vpn.yaml"  # external: [172.16.0.0/12]


def diff(*args):
    return CliRunner().invoke(main, ["diff", *map(str, args)], catch_exceptions=False)


def narrowed_profile(tmp_path):
    path = tmp_path / "narrow.yaml"
    path.write_text(
        VPN.read_text().replace(
            "external: [172.16.0.0/12]", "external: [172.16.0.0/16]"
        )
    )
    return path


def test_narrowed_says_what_was_lost_and_what_remains(tmp_path):
    new = narrowed_profile(tmp_path)
    text = diff(VPN, new).stdout
    lost = "lost: tcp/443 from external: 172.17.0.0/16, 172.18.0.0/15, 172.20.0.0/14, 172.24.0.0/13"
    assert f"  narrowed {lost}  [breaking]" in text
    assert "           remains: tcp/443 from external: 172.16.0.0/16" in text
    data = json.loads(diff(VPN, new, "--format", "json").stdout)
    change = next(c for c in data["changes"] if c["traffic"][0]["ports"] == [443, 443])
    assert change["kind"] == "narrowed"
    assert change["kept"][0]["peer"]["cidrs"] == ["172.16.0.0/16"]
    assert "172.16.0.0/16" not in str(change["traffic"])
    # The other way round: gained, and what was allowed before.
    back = diff(new, VPN).stdout
    assert "  widened  gained: tcp/443 from external: 172.17.0.0/16" in back
    assert "           before: tcp/443 from external: 172.16.0.0/16" in back
    markdown = diff(VPN, new, "--format", "markdown").stdout
    assert "lost: tcp/443 from external: 172.17.0.0/16" in markdown
    assert "<br>remains: tcp/443 from external: 172.16.0.0/16" in markdown


def test_files_changed_only_in_the_release_they_name():
    result = diff(VPN, VPN, "--old-version", "4.0")
    assert "Traffic: no change" in result.stdout
    # The module, its README and its EKS example, and the CloudFormation template.
    assert "7 changed (7 only where they name the server release)" in result.stdout
    assert "  changed terraform-aws/main.tf (only the server release it names)" in (
        result.stdout
    )
    # 4.2 -> 4.3 changes the rules in main.tf: that file is a real change.
    upgrade = diff(VPN, VPN, "--new-version", "4.3")
    assert "  changed terraform-aws/main.tf\n" in upgrade.stdout
    assert "  changed terraform-aws/versions.tf (only the server" in upgrade.stdout
    data = json.loads(diff(VPN, VPN, "--new-version", "4.3", "--format", "json").stdout)
    assert "terraform-aws/main.tf" not in data["files"]["release_only"]
    assert "terraform-aws/versions.tf" in data["files"]["release_only"]


def test_a_snapshot_side_cannot_tell_and_does_not_claim(tmp_path):
    snap = tmp_path / "old.json"
    CliRunner().invoke(
        main, ["snapshot", str(VPN), "-o", str(snap), "--server-version", "4.0"]
    )
    result = diff(snap, VPN)
    assert "  changed terraform-aws/main.tf\n" in result.stdout
    assert "only the server release" not in result.stdout


def test_removals_the_new_pages_egress_tables_drop_are_labelled(tmp_path):
    result = diff(VPN, VPN, "--new-version", "4.3")
    assert (
        "10 removal(s) expected: the new page's egress tables drop them"
        in result.stdout
    )
    assert (
        "  removed  tcp/3000 from Nomad clients  [breaking; expected: the 4.3-4.10"
        " page's egress tables drop it (Nomad clients > Egress: only 22 to the VMs"
        " and 4647 to the load balancer)]" in result.stdout
    )
    # The vm-service pod's rows are the nodes' table's to drop.
    assert (
        "  removed  tcp/2376 to External VMs  [breaking; expected: the 4.3-4.10"
        " page's egress tables drop it (Kubernetes nodes > Egress:" in result.stdout
    )
    assert "upgrade notes call it stale" not in result.stdout
    data = json.loads(diff(VPN, VPN, "--new-version", "4.3", "--format", "json").stdout)
    removed = [c for c in data["changes"] if c["kind"] == "removed"]
    assert len(removed) == 10
    assert all("page's egress tables drop it (" in c["expected"] for c in removed)
    # A removal by a profile edit is not expected by anything.
    edited = tmp_path / "no-admin.yaml"
    edited.write_text(
        VPN.read_text().replace("ssh_admin: [172.16.10.0/24]", "ssh_admin: []")
    )
    result = diff(VPN, edited)
    assert "removed" in result.stdout and "expected" not in result.stdout


ADVICE = "The 4.3 upgrade notes call the upgrade disruptive"


@pytest.mark.parametrize("old, new", [("4.2", "4.3"), ("3", "4.10"), ("4.0", "4.5")])
def test_a_diff_that_crosses_4_3_gives_the_upgrade_advice_once(old, new):
    args = (VPN, VPN, "--old-version", old, "--new-version", new)
    text = diff(*args).stdout
    assert text.count(ADVICE) == 1
    (line,) = [x for x in text.splitlines() if ADVICE in x]
    assert line.startswith("Upgrade advice: ") and "old VMs" not in line
    assert "Clean up the VMs the vm-service left running before upgrading." in line
    markdown = diff(*args, "--format", "markdown").stdout
    assert markdown.count(ADVICE) == 1
    assert f"> **Upgrade advice:** {ADVICE}" in markdown
    data = json.loads(diff(*args, "--format", "json").stdout)
    assert len(data["upgrade_advice"]) == 1 and ADVICE in data["upgrade_advice"][0]


@pytest.mark.parametrize("old, new", [("4.3", "4.10"), ("4.0", "4.2"), ("4.3", "4.2")])
def test_a_diff_that_does_not_enter_4_3_gives_no_advice(old, new):
    args = (VPN, VPN, "--old-version", old, "--new-version", new)
    assert ADVICE not in diff(*args).stdout
    assert ADVICE not in diff(*args, "--format", "markdown").stdout
    assert json.loads(diff(*args, "--format", "json").stdout)["upgrade_advice"] == []

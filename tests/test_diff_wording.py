"""diff as a reader takes it: what was lost and what remains, release-only file
changes, and removals the upgrade notes expect."""

from __future__ import annotations

import json

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


def test_removals_the_upgrade_notes_expect_are_labelled(tmp_path):
    result = diff(VPN, VPN, "--new-version", "4.3")
    assert "10 removal(s) expected by the upgrade notes" in result.stdout
    assert (
        "  removed  tcp/3000 from Nomad clients  [breaking; expected: the 4.3-4.10"
        " page's upgrade notes call it stale]" in result.stdout
    )
    data = json.loads(diff(VPN, VPN, "--new-version", "4.3", "--format", "json").stdout)
    assert all(c["expected"] for c in data["changes"] if c["kind"] == "removed")
    # A removal by a profile edit is not expected by anything.
    edited = tmp_path / "no-admin.yaml"
    edited.write_text(
        VPN.read_text().replace("ssh_admin: [172.16.10.0/24]", "ssh_admin: []")
    )
    result = diff(VPN, edited)
    assert "removed" in result.stdout and "expected" not in result.stdout

"""rulegen init: starters that fit their cloud, read as a table, and messages that
state the rule they enforce."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from generator.cli import main
from generator.profile import ProfileError

from conftest import ROOT, profile_from

AWS_ONLY = ("assign_public_ip", "nat_gateway_ips", "nomad_client_public_ips")


def init(*args):
    return CliRunner().invoke(main, ["init", *map(str, args)], catch_exceptions=False)


@pytest.mark.parametrize("cloud", ["aws", "gcp", "generic"])
def test_comments_start_in_one_column(cloud):
    text = init("--cloud", cloud).stdout
    columns = {
        line.index("  #") + 2
        for line in text.splitlines()
        if "  #" in line
        and not line.lstrip().startswith("#")
        and len(line.split("  #")[0].rstrip()) <= 40
    }
    assert len(columns) == 1, text


@pytest.mark.parametrize("cloud", ["gcp", "generic"])
def test_starters_carry_no_aws_only_keys(cloud):
    text = init("--cloud", cloud).stdout
    assert not [key for key in AWS_ONLY if key in text]
    assert profile_from(text).cloud == cloud


def test_aws_starter_keeps_them():
    text = init("--cloud", "aws").stdout
    assert all(key in text for key in AWS_ONLY)


def test_gcp_starter_has_a_project():
    text = init("--cloud", "gcp").stdout
    assert "  # project: my-project" in text  # a placeholder, not a wrong value
    given = init("--cloud", "gcp", "--project", "acme-ci-123").stdout
    assert profile_from(given).gcp["project"] == "acme-ci-123"
    other = init("--cloud", "aws", "--project", "x")
    assert (
        other.exit_code == 1 and "--project applies to --cloud gcp only" in other.stderr
    )


@pytest.mark.parametrize(
    "cloud, block, ok",
    [
        ("generic", "10.0.0.0/8", True),
        ("generic", "192.168.1.0/24", True),
        ("generic", "192.168.1.0/28", True),
        ("generic", "192.168.1.0/29", False),
        ("gcp", "10.0.0.0/8", True),
        ("gcp", "10.0.0.0/27", True),
        ("gcp", "10.0.0.0/28", False),
        ("aws", "10.0.0.0/16", True),
        ("aws", "10.0.0.0/26", True),
        ("aws", "10.0.0.0/15", False),
        ("aws", "10.0.0.0/27", False),
    ],
)
def test_vpc_block_limits_follow_the_cloud(cloud, block, ok):
    result = init("--cloud", cloud, "--vpc-cidr", block)
    assert (result.exit_code == 0) == ok, result.output
    if ok:
        profile = profile_from(result.stdout)
        assert profile.vpc_cidr == block
    else:
        assert re.search(
            r"expected an IPv4 block from /\d+ to /\d+ on " + cloud, result.stderr
        )
        assert "(" in result.stderr  # and why: the cloud's own limit


def test_vpc_block_with_host_bits_says_the_fix():
    result = init("--vpc-cidr", "10.0.0.1/16")
    assert result.exit_code == 1
    assert "has host bits set; did you mean 10.0.0.0/16?" in result.stderr


@pytest.mark.parametrize("name", ["a", "A1", "acme-", "x" * 33])
def test_bad_names_state_the_rule(name):
    result = init("--name", name)
    assert result.exit_code == 1
    assert "2 to 32 characters" in result.stderr and "Traceback" not in result.output


def test_two_letter_name_is_fine():
    assert profile_from(init("--name", "ab").stdout).name == "ab"


def test_unquoted_version_message_fits_the_number():
    text = (ROOT / "profiles" / "generic-baremetal.yaml").read_text()
    quoted = re.search(r'server_version: "([\d.]+)"', text).group(0)
    for written, shown in (("4.5", '"4.5"'), ("3", '"3"')):
        with pytest.raises(ProfileError) as exc:
            profile_from(text.replace(quoted, f"server_version: {written}"))
        message = str(exc.value)
        assert f"the version must be a quoted string: write {shown}" in message
        assert "4.10" not in message
    with pytest.raises(ProfileError) as exc:
        profile_from(text.replace(quoted, "server_version: 4.10"))
    assert 'if you meant 4.10, write "4.10"' in str(exc.value)


def _uncommented(text: str, first: str) -> str:
    """The starter with the commented block that starts at `first` switched on."""
    lines = text.splitlines()
    start = lines.index(f"# {first}")
    end = start + 1
    while end < len(lines) and lines[end].startswith("#   "):
        end += 1
    lines[start:end] = [line[2:] for line in lines[start:end]]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("cloud", ["aws", "gcp", "generic"])
def test_starter_points_editors_at_the_schema_and_follows_it(cloud, tmp_path):
    from jsonschema import Draft202012Validator
    import yaml

    text = init("--cloud", cloud).stdout
    assert text.splitlines()[0] == "# yaml-language-server: $schema=profile.schema.json"
    # The file it names is what `rulegen schema` prints, and the starter obeys it.
    (tmp_path / "profile.schema.json").write_text(init_schema())
    schema = yaml.safe_load((tmp_path / "profile.schema.json").read_text())
    assert not list(Draft202012Validator(schema).iter_errors(yaml.safe_load(text)))


def init_schema() -> str:
    return CliRunner().invoke(main, ["schema"], catch_exceptions=False).stdout


@pytest.mark.parametrize("cloud", ["aws", "gcp", "generic"])
def test_starter_offers_host_firewall_keys_that_work_when_uncommented(cloud):
    text = init("--cloud", cloud).stdout
    profile = profile_from(_uncommented(text, "host_firewall:"))
    assert profile.host_firewall["icmp_echo"] is True
    assert profile.host_firewall["dhcp"] is False
    if cloud == "generic":
        assert profile.host_firewall["ntp_servers"] == ("10.0.0.123/32",)
        assert not [w for w in profile.warnings if "ntp_servers" in w]
    else:
        assert profile.host_firewall["metadata"] is True


def test_aws_starter_offers_the_eks_cluster_group_commented():
    text = init("--cloud", "aws").stdout
    assert "existing_security_group_ids" in text  # where the group's ID goes
    profile = profile_from(_uncommented(text, "aws:"))
    assert profile.aws["existing_groups"] == {"kubernetes_nodes": "eks_cluster"}
    assert "existing_groups" not in init("--cloud", "gcp").stdout


def test_a_group_id_in_existing_groups_says_where_it_goes():
    text = init("--cloud", "aws").stdout
    for key in ("kubernetes_nodes", "nomad_clients"):
        edited = _uncommented(text, "aws:").replace(
            "    kubernetes_nodes: eks_cluster", f"    {key}: sg-0123456789abcdef0"
        )
        with pytest.raises(ProfileError) as exc:
            profile_from(edited)
        assert f"aws.existing_groups.{key}:" in str(
            exc.value
        ) and "goes to the Terraform module's existing_security_group_ids" in str(
            exc.value
        )

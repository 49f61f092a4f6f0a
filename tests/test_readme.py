"""The README's examples are real: its profile validates, its upgrade diff is current."""

from __future__ import annotations

import re

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

"""`rulegen audit`: a live firewall against what a profile requires."""

from __future__ import annotations

import sys

import click

from ..cli import FILE, Choice, closest, fail, load
from ..matrix import ROLES


@click.command("audit")
@click.argument("profile", type=FILE)
@click.option("--aws", type=FILE, help="aws ec2 describe-security-groups.")
@click.option(
    "--aws-acls",
    type=FILE,
    help="With --aws: aws ec2 describe-network-acls (aws.network_acls).",
)
@click.option(
    "--gcp",
    type=FILE,
    help="gcloud compute firewall-rules list --format=json.",
)
@click.option("--iptables-save", type=FILE, help="iptables-save of a host.")
@click.option(
    "--ip6tables-save",
    type=FILE,
    help="ip6tables-save of the same host.",
)
@click.option("--ipset", type=FILE, help="ipset save of the same host.")
@click.option("--nft", type=FILE, help="nft -j list ruleset of a host.")
@click.option(
    "--role",
    type=Choice(ROLES),
    help="The role of the host (iptables, nft); for a cloud export, audit only it.",
)
@click.option(
    "--group",
    "groups",
    multiple=True,
    metavar="ROLE=ID|NAME",
    help="AWS: a security group of a role (repeatable); default: rulegen's names.",
)
@click.option(
    "--interface", help="iptables/nft: the host's network interface, for -i/-o matches."
)
@click.option(
    "--server-version", help="Audit against another release than the profile's."
)
@click.option(
    "--format",
    "fmt",
    type=Choice(["text", "json", "markdown"]),
    default="text",
    show_default=True,
)
@click.option(
    "--fail-on",
    type=Choice(["missing", "excess", "any"]),
    help="Exit 3 when this kind of difference is found.",
)
def audit(
    profile,
    aws,
    aws_acls,
    gcp,
    iptables_save,
    ip6tables_save,
    ipset,
    nft,
    role,
    groups,
    interface,
    server_version,
    fmt,
    fail_on,
) -> None:
    """Compare a live firewall with what PROFILE requires, flow by flow.

    Lists, per role, the required flows the live rules block (missing, with the
    page reference) and what they allow beyond the matrix (excess, with the live
    rule). Exit codes: 0 nothing to report, 1 error (bad input or usage), 2
    findings, 3 findings that --fail-on names, 4 part of the export not evaluated
    (named in the output; 3 comes first when --fail-on matches).
    """
    from ..audit import audit as make_audit
    from ..audit import render
    from ..readers import Context, ReadError, read_export

    prof = load(profile, server_version)
    host = {"iptables": iptables_save, "ip6tables": ip6tables_save, "ipset": ipset}
    chosen = [
        name
        for name, given in (
            ("aws", aws),
            ("gcp", gcp),
            ("iptables", iptables_save or ip6tables_save),
            ("nft", nft),
        )
        if given
    ]
    problems = []
    if len(chosen) != 1:
        problems.append(
            "give one live source: --aws, --gcp, --iptables-save/--ip6tables-save or --nft"
        )
    elif chosen[0] in ("iptables", "nft") and not role:
        problems.append(
            f"--role is required with {chosen[0]}: which role is this host?"
        )
    if ipset and chosen != ["iptables"]:
        problems.append("--ipset goes with --iptables-save")
    mapping = []
    for item in groups:
        name, _, group = item.partition("=")
        if name not in ROLES or not group:
            guess = None if name in ROLES else closest(name, ROLES)
            problems.append(
                f"--group {item!r}: expected ROLE=ID|NAME, ROLE one of"
                f" {', '.join(ROLES)}" + (f"; did you mean {guess!r}?" if guess else "")
            )
        mapping.append((name, group))
    if groups and chosen != ["aws"]:
        problems.append("--group goes with --aws")
    if aws_acls and chosen != ["aws"]:
        problems.append("--aws-acls goes with --aws")
    if problems:
        fail(problems)
    reader = chosen[0]
    paths = {
        "aws": {"aws": aws, "aws_acls": aws_acls},
        "gcp": {"gcp": gcp},
        "nft": {"nft": nft},
    }.get(reader, host)
    try:
        sources = {
            key: (path, read_export(path)) for key, path in paths.items() if path
        }
        context = Context(prof, role=role, interface=interface, groups=tuple(mapping))
        result = make_audit(reader, sources, context)
    except ReadError as exc:
        fail(exc.problems)
    click.echo(render(result, fmt), nl=False)
    sys.exit(result.exit_code(fail_on))

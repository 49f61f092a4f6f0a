"""`rulegen init`: a commented starter profile."""

from __future__ import annotations

import click

from ..cli import FILE, Choice, fail


@click.command("init")
@click.option("--name", default="circleci", show_default=True, help="Install name.")
@click.option(
    "--cloud",
    type=Choice(["aws", "gcp", "generic"]),
    default="aws",
    show_default=True,
)
@click.option(
    "--access", type=Choice(["vpn", "public"]), default="vpn", show_default=True
)
@click.option("--server-version", default="4.10", show_default=True)
@click.option(
    "--vpc-cidr",
    default="10.0.0.0/16",
    show_default=True,
    help="IPv4 block cut into four subnets: /16-/26 on aws, /8-/27 on gcp, /8-/28 generic.",
)
@click.option("--project", help="GCP project of the network (gcp only).")
@click.option(
    "-o",
    "--output",
    type=FILE,
    help="File to write (default: stdout).",
)
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def init(name, cloud, access, server_version, vpc_cidr, project, output, force):
    """Write a commented starter profile for a new install."""
    from ..profile import ProfileError, check_version, parse_profile
    from ..starter import starter_profile

    if project and cloud != "gcp":
        fail([f"--project applies to --cloud gcp only, not {cloud}"])
    try:
        check_version(server_version)
        text = starter_profile(name, cloud, access, server_version, vpc_cidr, project)
        parse_profile(text, "<init>")
    except (ProfileError, ValueError) as exc:
        fail(getattr(exc, "problems", [str(exc)]))
    if not output:
        click.echo(text, nl=False)
        return
    from ..writer import write_atomic
    from pathlib import Path

    if Path(output).exists() and not force:
        fail([f"{output} exists; pass --force to overwrite it"])
    try:
        write_atomic(Path(output), text)
    except OSError as exc:
        fail([f"{output}: cannot write: {exc.strerror or exc}"])
    click.echo(f"wrote {output}", err=True)

"""`rulegen snapshot`: a profile's matrix and files' hashes, as stable JSON."""

from __future__ import annotations

import click

from ..cli import FILE, fail, warn


@click.command("snapshot")
@click.argument("profile", type=FILE)
@click.option(
    "-o",
    "--output",
    type=FILE,
    help="File to write (default: stdout).",
)
@click.option("--server-version", help="Snapshot another release than the profile's.")
def snapshot(profile: str, output: str | None, server_version: str | None) -> None:
    """Write a stable JSON snapshot of PROFILE's matrix and emitted files' hashes."""
    from ..profile import ProfileError
    from ..snapshot import build, dumps, side_from_profile

    try:
        side = side_from_profile(profile, server_version)
    except ProfileError as exc:
        fail(exc.problems)
    warn(side.matrix.warnings)
    warn(f"{t}: not in the snapshot: {why}" for t, why in side.unavailable.items())
    text = dumps(build(side))
    if not output:
        click.echo(text, nl=False)
        return
    from pathlib import Path

    from ..writer import write_atomic

    try:
        write_atomic(Path(output), text)
    except OSError as exc:
        fail([f"{output}: cannot write: {exc.strerror or exc}"])
    click.echo(f"wrote {output}", err=True)

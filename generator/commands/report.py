"""`rulegen report`: the HTML review page of a profile."""

from __future__ import annotations

import click

from ..cli import FILE, fail, load, warn


@click.command("report")
@click.argument("profile", type=FILE)
@click.option(
    "-o",
    "--output",
    type=FILE,
    help="HTML file to write (default: out/<name>-report.html).",
)
@click.option(
    "--diff",
    "old",
    type=FILE,
    metavar="OLD",
    help="A profile or snapshot to compare with: changes are drawn and listed.",
)
@click.option("--server-version", help="Report another release than the profile's.")
@click.option("--old-version", help="Server version for OLD (a profile).")
def report(profile, output, old, server_version, old_version) -> None:
    """Write a self-contained HTML review page of PROFILE: diagram, rules, changes."""
    from pathlib import Path

    from ..flowgraph import DotError
    from ..htmlreport import render as render_html
    from ..pipeline import shipped_matrix

    prof = load(profile, server_version)
    diff_report = None
    if old:
        from ..diff import diff as make_diff
        from ..optimizer import optimize
        from ..profile import ProfileError
        from ..snapshot import SnapshotError, load_side, side_from_profile

        try:
            before = load_side(old, old_version, "--old-version")
            after = side_from_profile(profile, server_version)
        except (ProfileError, SnapshotError) as exc:
            fail(exc.problems)
        diff_report = make_diff(before, after)
        matrix = optimize(after.matrix)[0]
    else:
        matrix = shipped_matrix(prof)
    warn(matrix.warnings)
    try:
        text = render_html(prof, matrix, diff_report)
    except DotError as exc:
        fail([str(exc)])
    from ..writer import write_atomic

    path = Path(output) if output else Path("out") / f"{prof.name}-report.html"
    write_atomic(path, text)
    click.echo(f"wrote {path}", err=True)

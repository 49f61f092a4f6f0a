"""`rulegen diff`: what changes between two profiles or snapshots."""

from __future__ import annotations

import sys

import click

from ..cli import FILE, Choice, fail, warn


@click.command("diff")
@click.argument("old", type=FILE)
@click.argument("new", type=FILE)
@click.option("--old-version", help="Server version for OLD (a profile).")
@click.option("--new-version", help="Server version for NEW (a profile).")
@click.option(
    "--format",
    "fmt",
    type=Choice(["text", "json", "markdown"]),
    default="text",
    show_default=True,
)
@click.option("--files", is_flag=True, help="Show unified diffs of emitted files.")
@click.option(
    "--fail-on",
    type=Choice(["breaking", "unexpected"]),
    help="Exit 3 when a flow is removed or narrowed (breaking), or only when one"
    " is that the new page's own egress tables do not drop (unexpected).",
)
def diff(old, new, old_version, new_version, fmt, files, fail_on) -> None:
    """Compare the traffic two profiles or snapshots allow, and their emitted files.

    Exit codes: 0 no change, 2 changes, 3 changes that match --fail-on, 1 error.
    """
    from ..diff import diff as make_diff
    from ..diff import render
    from ..profile import ProfileError
    from ..snapshot import SnapshotError, load_side

    try:
        before = load_side(old, old_version, "--old-version")
        after = load_side(new, new_version, "--new-version")
    except (ProfileError, SnapshotError) as exc:
        fail(exc.problems)
    report = make_diff(before, after, unified=files)
    if files and (before.texts is None or after.texts is None) and report.files.any:
        warn(["--files: a snapshot keeps only hashes, so changed files are listed"])
    click.echo(render(report, fmt), nl=False)
    sys.exit(report.exit_code(fail_on))

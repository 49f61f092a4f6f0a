"""`rulegen generate`: every target's files for a profile, written into a folder."""

from __future__ import annotations

import sys

import click

from ..cli import FILE, FOLDER, Choice, fail, load, warn
from ..emitters import TARGETS


@click.command("generate")
@click.argument("profile", type=FILE)
@click.option(
    "-o",
    "--output",
    type=FOLDER,
    help="Folder (default: out/<profile name>).",
)
@click.option(
    "--target",
    "targets",
    multiple=True,
    type=Choice(list(TARGETS)),
    help="Only this target (repeatable).",
)
@click.option(
    "--check",
    is_flag=True,
    help="Write nothing; list what a run would write, change and remove, exit 2 if any.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Overwrite files edited by hand since they were generated.",
)
@click.option(
    "--server-version", help="Generate for another release than the profile's."
)
@click.option(
    "--no-optimize", is_flag=True, help="Emit the raw matrix, without the optimizer."
)
def generate(
    profile, output, targets, check, force, server_version, no_optimize=False
) -> None:
    """Write the firewall code of every target for PROFILE."""
    from pathlib import Path

    from ..emitters import EmitError, targets_for
    from ..pipeline import files_for, shipped_matrix
    from ..writer import WriteError, compare, locked, write_tree

    prof = load(profile, server_version)
    matrix = shipped_matrix(prof, optimized=not no_optimize)
    warn(matrix.warnings)
    try:
        chosen = targets_for(prof.cloud, tuple(targets))
        files = files_for(prof, matrix, chosen)
    except EmitError as exc:
        fail(getattr(exc, "problems", [str(exc)]))
    if any(t.host_firewall for t in chosen):
        from ..hostfw import lockout_warning

        warn(lockout_warning(matrix, prof))
    folder = Path(output) if output else Path("out") / prof.name
    if targets:
        owns = set(targets).__contains__
    else:  # a target this cloud offers on request keeps its files
        extra = {t.name for t in TARGETS.values() if prof.cloud in t.extra_clouds}
        owns = lambda target: target not in extra  # noqa: E731
    try:
        with locked(
            folder,
            create=not check,
            shared=check,
            on_wait=lambda: click.echo(
                f"waiting for another rulegen run in {folder} to finish", err=True
            ),
        ):
            changes = compare(folder, files, owns)
            warn(changes.warnings)
            if changes.problems:
                fail(changes.problems)
            if check:
                _report_check(folder, changes, files)
            if changes.edited and not force:
                fail(
                    [
                        f"{folder / rel} was edited by hand since it was generated"
                        " (or is not rulegen's); keep your copy elsewhere or pass --force"
                        for rel in changes.edited
                    ]
                )
            write_tree(folder, files, changes, force)
    except WriteError as exc:
        fail(exc.problems)
    overwritten = [r for r in changes.edited if r in files] if force else []
    dropped = [r for r in changes.edited if r not in files] if force else []
    click.echo(
        f"{folder}: {len(changes.new)} new, {len(changes.changed) + len(overwritten)}"
        f" changed, {len(changes.unchanged)} unchanged,"
        f" {len(changes.removed) + len(dropped)} removed",
        err=True,
    )


def _report_check(folder, changes, files) -> None:
    """`generate --check`: every write, change and removal a run would make; exit 2
    (findings) if there is any, else one line and exit 0."""
    lines = [f"would write {folder / rel} (new)" for rel in changes.new]
    lines += [f"would change {folder / rel}" for rel in changes.changed]
    lines += [f"would remove {folder / rel}" for rel in changes.removed]
    lines += [
        (
            f"would overwrite {folder / rel} (edited by hand), only with --force"
            if rel in files
            else f"would remove {folder / rel} (edited by hand), only with --force"
        )
        for rel in changes.edited
    ]
    lines += [
        f"would remove {folder / rel} (left by an interrupted run)"
        for rel in changes.leftovers
    ]
    lines.sort(key=lambda line: line.split(" ", 2)[2])
    if changes.recovering:
        lines.append(f"would finish an interrupted run in {folder}")
    for line in lines:
        click.echo(line)
    if not lines:
        click.echo(f"{folder}: all {len(changes.unchanged)} files are up to date")
    sys.exit(2 if lines else 0)

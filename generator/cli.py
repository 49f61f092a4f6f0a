"""The rulegen command line. Heavy modules are imported inside the commands."""

from __future__ import annotations

import sys

import click

from . import __version__

FORMATS = ("table", "json", "markdown", "csv")


def fail(problems) -> None:
    for problem in problems:
        click.echo(f"error: {problem}", err=True)
    sys.exit(1)


def load(path: str, version: str | None = None):
    """Profile from a file, with its problems reported and no traceback."""
    from .profile import ProfileError, load_profile

    try:
        profile = load_profile(path)
        return profile.with_version(version) if version else profile
    except ProfileError as exc:
        fail(exc.problems)


def warn(warnings) -> None:
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rulegen")
def main() -> None:
    """Firewall rules for a self-hosted CircleCI Server install, from a profile."""


@main.command()
@click.argument("profile", type=click.Path(dir_okay=False))
@click.option(
    "--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True
)
@click.option("--server-version", help="Plan for another release than the profile's.")
@click.option(
    "--no-optimize", is_flag=True, help="Show the raw matrix, before the optimizer."
)
@click.option(
    "--verify-equivalence",
    is_flag=True,
    help="Check that the optimized matrix allows exactly the raw one's flows.",
)
def plan(
    profile: str,
    fmt: str,
    server_version: str | None,
    no_optimize: bool = False,
    verify_equivalence: bool = False,
) -> None:
    """Print the complete rule matrix of PROFILE."""
    from .optimizer import optimize
    from .planner import plan as make_plan
    from .report import render

    raw = make_plan(load(profile, server_version))
    matrix, report = (raw, None) if no_optimize else optimize(raw)
    if verify_equivalence:
        from .equivalence import NotEquivalent, check_equivalent

        try:
            check_equivalent(raw, matrix)
        except NotEquivalent as exc:
            fail([f"the optimized matrix differs from the raw one: {exc}"])
        click.echo(
            f"equivalent: {len(matrix.rules)} rules allow exactly the flows"
            f" of the {len(raw.rules)} raw rules",
            err=True,
        )
    if fmt != "json":
        warn(matrix.warnings)
        for line in report.lines() if report else ():
            click.echo(line, err=True)
    click.echo(render(matrix, fmt), nl=False)


@main.command()
def schema() -> None:
    """Print the JSON Schema of a profile (for editors)."""
    from .profile import SCHEMA_PATH

    click.echo(SCHEMA_PATH.read_text(), nl=False)


@main.command()
@click.option("--name", default="circleci", show_default=True, help="Install name.")
@click.option(
    "--cloud",
    type=click.Choice(["aws", "gcp", "generic"]),
    default="aws",
    show_default=True,
)
@click.option(
    "--access", type=click.Choice(["vpn", "public"]), default="vpn", show_default=True
)
@click.option("--server-version", default="4.10", show_default=True)
@click.option(
    "--vpc-cidr", default="10.0.0.0/16", show_default=True, help="A /16 to /20 block."
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    help="File to write (default: stdout).",
)
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def init(name, cloud, access, server_version, vpc_cidr, output, force) -> None:
    """Write a commented starter profile for a new install."""
    from .profile import ProfileError, parse_profile
    from .starter import starter_profile

    try:
        text = starter_profile(name, cloud, access, server_version, vpc_cidr)
        parse_profile(text, "<init>")
    except (ProfileError, ValueError) as exc:
        fail(getattr(exc, "problems", [str(exc)]))
    if not output:
        click.echo(text, nl=False)
        return
    from .writer import write_atomic
    from pathlib import Path

    if Path(output).exists() and not force:
        fail([f"{output} exists; pass --force to overwrite it"])
    write_atomic(Path(output), text)
    click.echo(f"wrote {output}", err=True)


@main.command()
@click.argument("profile", type=click.Path(dir_okay=False))
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False),
    help="Folder (default: out/<profile name>).",
)
@click.option(
    "--target", "targets", multiple=True, help="Only this target (repeatable)."
)
@click.option(
    "--check",
    is_flag=True,
    help="Write nothing; list files that would change, exit 1 if any.",
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

    from .emitters import EmitError, targets_for
    from .pipeline import files_for, shipped_matrix
    from .writer import compare, write_tree

    prof = load(profile, server_version)
    matrix = shipped_matrix(prof, optimized=not no_optimize)
    warn(matrix.warnings)
    try:
        chosen = targets_for(prof.cloud, tuple(targets))
        files = files_for(prof, matrix, chosen)
    except EmitError as exc:
        fail(getattr(exc, "problems", [str(exc)]))
    if any(t.host_firewall for t in chosen):
        from .hostfw import lockout_warning

        warn(lockout_warning(matrix, prof))
    folder = Path(output) if output else Path("out") / prof.name
    changes = compare(folder, files)
    if check:
        for label, paths in (
            ("new", changes.new),
            ("changed", changes.changed),
            ("removed", changes.removed),
            ("edited by hand", changes.edited),
        ):
            for rel in paths:
                click.echo(
                    f"would write {folder / rel} ({label})"
                    if label != "removed"
                    else f"would remove {folder / rel}"
                )
        sys.exit(1 if changes.pending else 0)
    if changes.edited and not force:
        fail(
            [
                f"{folder / rel} was edited by hand since it was generated (or is not rulegen's);"
                " keep your copy elsewhere or pass --force"
                for rel in changes.edited
            ]
        )
    write_tree(folder, files, changes, force)
    click.echo(
        f"{folder}: {len(changes.new)} new, {len(changes.changed) + (len(changes.edited) if force else 0)}"
        f" changed, {len(changes.unchanged)} unchanged, {len(changes.removed)} removed",
        err=True,
    )


@main.command()
@click.argument("profile", type=click.Path(dir_okay=False))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    help="File to write (default: stdout).",
)
@click.option("--server-version", help="Snapshot another release than the profile's.")
def snapshot(profile: str, output: str | None, server_version: str | None) -> None:
    """Write a stable JSON snapshot of PROFILE's matrix and emitted files' hashes."""
    from .profile import ProfileError
    from .snapshot import build, dumps, side_from_profile

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

    from .writer import write_atomic

    write_atomic(Path(output), text)
    click.echo(f"wrote {output}", err=True)


@main.command()
@click.argument("old", type=click.Path(dir_okay=False))
@click.argument("new", type=click.Path(dir_okay=False))
@click.option("--old-version", help="Server version for OLD (a profile).")
@click.option("--new-version", help="Server version for NEW (a profile).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "markdown"]),
    default="text",
    show_default=True,
)
@click.option("--files", is_flag=True, help="Show unified diffs of emitted files.")
@click.option(
    "--fail-on",
    type=click.Choice(["breaking"]),
    help="Exit 3 when a flow is removed or narrowed.",
)
def diff(old, new, old_version, new_version, fmt, files, fail_on) -> None:
    """Compare the traffic two profiles or snapshots allow, and their emitted files.

    Exit codes: 0 no change, 2 changes, 3 breaking changes (with --fail-on
    breaking), 1 error.
    """
    from .diff import diff as make_diff
    from .diff import render
    from .profile import ProfileError
    from .snapshot import SnapshotError, load_side

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


@main.command()
@click.argument("profile", type=click.Path(dir_okay=False))
@click.option("--server-version", help="Verify another release than the profile's.")
@click.option(
    "--drop-rule",
    "drop_rules",
    multiple=True,
    metavar="NAME",
    help="Leave this rule out of the loaded rules (repeatable): verify must then fail.",
)
@click.option(
    "-v", "--verbose", is_flag=True, help="List every probe, not only misses."
)
@click.option(
    "--engine",
    type=click.Choice(["iptables", "nftables"]),
    default="iptables",
    show_default=True,
    help="Which host-firewall target to load.",
)
def verify(profile, server_version, drop_rules, verbose, engine="iptables") -> None:
    """Prove PROFILE's host firewall (iptables or nftables) with real packets (Linux, root).

    Builds throwaway network namespaces (one host per role and per peer), loads each
    role's rules as apply.sh would, probes every required flow and a forbidden set,
    and removes everything again. Exit 1 on any mismatch or error.
    """
    from .emitters import EmitError
    from .verify import VerifyError, report, run

    prof = load(profile, server_version)
    from .pipeline import shipped_matrix

    matrix = shipped_matrix(prof)
    try:
        outcome = run(matrix, prof, drop_rules, engine)
    except (VerifyError, EmitError) as exc:
        fail([str(exc)])
    except KeyboardInterrupt:
        click.echo("verify: interrupted; the test bed was removed", err=True)
        sys.exit(130)
    click.echo(report(outcome, verbose), nl=False)
    sys.exit(0 if outcome.ok else 1)


@main.command()
@click.argument("profile", type=click.Path(dir_okay=False))
@click.option("--from", "source", required=True, help="A role, or an address or CIDR.")
@click.option(
    "--to", "destination", required=True, help="A role, or an address or CIDR."
)
@click.option("--port", type=click.IntRange(1, 65535), required=True)
@click.option(
    "--protocol", type=click.Choice(["tcp", "udp"]), default="tcp", show_default=True
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
)
@click.option(
    "--server-version", help="Explain for another release than the profile's."
)
def explain(profile, source, destination, port, protocol, fmt, server_version) -> None:
    """Is a flow allowed, and by which rule on each end (or which end blocks it)?"""
    import json

    from .explain import ExplainError, endpoint
    from .explain import explain as make_explain
    from .explain import render
    from .pipeline import shipped_matrix

    prof = load(profile, server_version)
    try:
        src, dst = endpoint(source), endpoint(destination)
    except ExplainError as exc:
        fail([str(exc)])
    verdict = make_explain(shipped_matrix(prof), src, dst, port, protocol, prof.subnets)
    if fmt == "json":
        click.echo(json.dumps(verdict.to_dict(), indent=2))
    else:
        click.echo(render(verdict), nl=False)

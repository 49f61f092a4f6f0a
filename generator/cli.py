"""The rulegen command line. Heavy modules are imported inside the commands."""

from __future__ import annotations

import os
import sys

import click

from . import __version__
from .emitters import TARGETS
from .matrix import ROLES

FORMATS = ("table", "json", "markdown", "csv", "dot")

# One table for every command (README, Command line > Exit codes).
EXIT_CODES = """\b
Exit codes, the same for every command:
  0    nothing to report
  1    error: bad input or a usage error (nothing is written)
  2    findings: changes (diff), differences (audit), files a run would
       write (generate --check), a blocked flow (explain), a failed probe
       (verify)
  3    findings that match --fail-on (diff, audit)
  4    audit: part of the export could not be evaluated
  130  interrupted
"""


# One instance of each path type for every option: click.Path looks up its
# translated name when made, a gettext search of the locale folders each time.
FILE = click.Path(dir_okay=False)
FOLDER = click.Path(file_okay=False)


def _guess(value: str, known) -> str | None:
    import difflib

    guess = difflib.get_close_matches(str(value), [str(k) for k in known], n=1)
    return guess[0] if guess else None


class Choice(click.Choice):
    """click.Choice that suggests the closest choice for a misspelt value."""

    def convert(self, value, param, ctx):
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter as exc:
            guess = _guess(value, self.choices)
            if guess:  # click's own wording for a misspelt option
                exc.message += f" Did you mean {guess!r}?"
            raise


class Group(click.Group):
    """Usage errors exit 1, like every other error: 2 and 3 are findings."""

    def make_context(self, *args, **kwargs):
        try:
            return super().make_context(*args, **kwargs)
        except click.UsageError as exc:
            exc.exit_code = 1
            raise

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            exc.exit_code = 1
            raise


def _version(ctx, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from .catalog import load_catalog

    click.echo(f"rulegen, version {__version__}")
    click.echo('catalog: CircleCI Server "Hardening your cluster", by release line:')
    for line in load_catalog().summary():
        click.echo(line)
    ctx.exit()


def fail(problems) -> None:
    """Errors exit 1 (see EXIT_CODES)."""
    for problem in problems:
        click.echo(f"error: {problem}", err=True)
    sys.exit(1)


def load(path: str, version: str | None = None):
    """Profile from a file, with its problems reported and no traceback."""
    from .profile import ProfileError, load_profile

    try:
        return load_profile(path, version)
    except ProfileError as exc:
        fail(exc.problems)


def warn(warnings) -> None:
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)


@click.group(
    cls=Group,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=EXIT_CODES,
)
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=lambda ctx, _, value: _version(ctx, value),
    help="Show the version and the rule catalog it carries, and exit.",
)
def main() -> None:
    """Firewall rules for a self-hosted CircleCI Server install, from a profile."""


@main.command()
@click.argument("profile", type=FILE)
@click.option(
    "--format", "fmt", type=Choice(FORMATS), default="table", show_default=True
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
    """Print the complete rule matrix of PROFILE (dot: a Graphviz graph of the flows)."""
    from .optimizer import optimize
    from .planner import plan as make_plan
    from .report import render

    prof = load(profile, server_version)
    raw = make_plan(prof)
    matrix, report = (raw, None) if no_optimize else optimize(raw)
    layer = None
    if prof.network_acls:  # the ACL stage imported only then
        from .nacl import layer_for

        layer = layer_for(prof, matrix)
    if verify_equivalence and layer:
        _verify_acls(layer, raw)
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
    if layer and fmt == "json":
        import json

        from .report import acl_dict

        data = json.loads(render(matrix, fmt))
        data["network_acls"] = acl_dict(layer)
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(render(matrix, fmt), nl=False)
    if layer and fmt == "table":
        from .report import acl_table

        click.echo(acl_table(layer), nl=False)


def _verify_acls(layer, raw) -> None:
    """The required flows through the ACLs both ways, and what they admit beyond."""
    from .nacl import check_flows, excess

    problems = check_flows(layer, raw)
    if problems:
        fail([f"the network ACLs block a required flow: {p}" for p in problems])
    beyond = excess(layer, raw)
    click.echo(
        "network ACLs: every required flow passes, request and reply;"
        f" {len(beyond)} piece(s) of traffic admitted beyond the matrix"
        " (stateless replies cannot be told from new connections):",
        err=True,
    )
    for line in beyond:
        click.echo(f"  {line}", err=True)


@main.command()
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

    from .flowgraph import DotError
    from .htmlreport import render as render_html
    from .pipeline import shipped_matrix

    prof = load(profile, server_version)
    diff_report = None
    if old:
        from .diff import diff as make_diff
        from .optimizer import optimize
        from .profile import ProfileError
        from .snapshot import SnapshotError, load_side, side_from_profile

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
    from .writer import write_atomic

    path = Path(output) if output else Path("out") / f"{prof.name}-report.html"
    write_atomic(path, text)
    click.echo(f"wrote {path}", err=True)


@main.command()
def schema() -> None:
    """Print the JSON Schema of a profile (for editors)."""
    from .profile import SCHEMA_PATH

    click.echo(SCHEMA_PATH.read_text(), nl=False)


@main.command()
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
    from .profile import ProfileError, check_version, parse_profile
    from .starter import starter_profile

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
    from .writer import write_atomic
    from pathlib import Path

    if Path(output).exists() and not force:
        fail([f"{output} exists; pass --force to overwrite it"])
    try:
        write_atomic(Path(output), text)
    except OSError as exc:
        fail([f"{output}: cannot write: {exc.strerror or exc}"])
    click.echo(f"wrote {output}", err=True)


@main.command()
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

    from .emitters import EmitError, targets_for
    from .pipeline import files_for, shipped_matrix
    from .writer import WriteError, compare, locked, write_tree

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


@main.command()
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

    try:
        write_atomic(Path(output), text)
    except OSError as exc:
        fail([f"{output}: cannot write: {exc.strerror or exc}"])
    click.echo(f"wrote {output}", err=True)


@main.command()
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
@click.argument("profile", type=FILE, required=False)
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
    type=Choice(["iptables", "nftables"]),
    default="iptables",
    show_default=True,
    help="Which host-firewall target to load.",
)
@click.option(
    "--cleanup",
    is_flag=True,
    help="Remove what a killed verify left behind (namespaces rgv<hex>-*), and exit.",
)
def verify(
    profile, server_version, drop_rules, verbose, engine="iptables", cleanup=False
) -> None:
    """Prove PROFILE's host firewall (iptables or nftables) with real packets (Linux, root).

    Builds throwaway network namespaces (one host per role and per peer), loads each
    role's rules as apply.sh would, probes every required flow and a forbidden set,
    and removes everything again, also on SIGINT, SIGTERM or SIGHUP. Exit 2 on any
    mismatch, 1 on an error, 130 when interrupted.
    """
    from .verify import Interrupted, signals_raise

    with signals_raise():
        try:
            _verify(profile, server_version, drop_rules, verbose, engine, cleanup)
        except Interrupted as exc:
            if exc.left:
                click.echo(
                    f"verify: interrupted; {len(exc.left)} namespaces could not be"
                    f" removed ({', '.join(exc.left)}); run rulegen verify --cleanup",
                    err=True,
                )
                sys.exit(130)
            removed = "; the test bed was removed" if exc.started else ""
            click.echo(f"verify: interrupted{removed}", err=True)
            sys.exit(130)
        except KeyboardInterrupt:
            click.echo("verify: interrupted", err=True)
            sys.exit(130)


def _verify(profile, server_version, drop_rules, verbose, engine, cleanup) -> None:
    from .emitters import EmitError
    from .verify import VerifyError, report, run

    if cleanup:
        from .verify import cleanup as remove_left

        if os.geteuid() != 0:
            fail(["verify --cleanup needs root: it deletes network namespaces"])
        removed, alive = remove_left()
        click.echo(
            f"removed {len(removed)} namespaces and folders left by killed runs"
            + (f": {', '.join(removed)}" if removed else ""),
            err=True,
        )
        if alive:
            click.echo(f"kept {len(alive)} namespaces of runs still going", err=True)
        return
    if not profile:
        fail(["verify needs a PROFILE (or --cleanup)"])
    prof = load(profile, server_version)
    from .pipeline import shipped_matrix

    matrix = shipped_matrix(prof)
    # Progress per phase, for a person watching; logs and pipes get the result only.
    tty = click.get_text_stream("stderr").isatty()
    progress = (lambda line: click.echo(line, err=True)) if tty else None
    try:
        outcome = run(matrix, prof, drop_rules, engine, progress)
    except (VerifyError, EmitError) as exc:
        fail([str(exc)])
    click.echo(report(outcome, verbose), nl=False)
    sys.exit(0 if outcome.ok else 2)


@main.command()
@click.argument("profile", type=FILE)
@click.option(
    "--from",
    "source",
    required=True,
    help="A role, a peer list, or an address or CIDR.",
)
@click.option(
    "--to",
    "destination",
    required=True,
    help="A role, a peer list, or an address or CIDR.",
)
@click.option("--port", type=click.IntRange(1, 65535), required=True)
@click.option(
    "--protocol", type=Choice(["tcp", "udp"]), default="tcp", show_default=True
)
@click.option(
    "--format",
    "fmt",
    type=Choice(["text", "json"]),
    default="text",
    show_default=True,
)
@click.option(
    "--server-version", help="Explain for another release than the profile's."
)
def explain(profile, source, destination, port, protocol, fmt, server_version) -> None:
    """Is a flow allowed, and by which rule on each end (or which end blocks it)?

    A CIDR that the rules cover only in part is answered part by part.

    Exit codes: 0 allowed, 2 blocked (wholly or in part), 1 bad input.
    """
    import json

    from .explain import ExplainError, endpoint
    from .explain import explain as make_explain
    from .explain import render
    from .pipeline import shipped_matrix
    from .planner import paths_of

    prof = load(profile, server_version)
    try:
        peers = {**prof.peers, "dns": prof.dns_servers}
        if prof.webhooks:
            peers["webhooks"] = prof.webhooks["cidrs"]
        roles = prof.roles()
        src = endpoint(source, peers, roles)
        dst = endpoint(destination, peers, roles)
    except ExplainError as exc:
        fail([str(exc)])
    warn(e.warning for e in (src, dst) if e.warning)
    verdict = make_explain(
        shipped_matrix(prof),
        src,
        dst,
        port,
        protocol,
        prof.subnets,
        transparent_lb=prof.transparent_lb,
        paths=paths_of(prof),
    )
    if fmt == "json":
        click.echo(json.dumps(verdict.to_dict(), indent=2))
    else:
        click.echo(render(verdict), nl=False)
    sys.exit(0 if verdict.allowed else 2)


@main.command()
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
    from .audit import audit as make_audit
    from .audit import render
    from .readers import Context, ReadError, read_export

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
            guess = None if name in ROLES else _guess(name, ROLES)
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

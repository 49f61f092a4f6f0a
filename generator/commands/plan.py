"""`rulegen plan`: the rule matrix of a profile, as a table, JSON, Markdown, CSV or a graph."""

from __future__ import annotations

import click

from ..cli import FILE, FORMATS, Choice, fail, load, warn


@click.command("plan")
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
    from ..optimizer import optimize
    from ..planner import plan as make_plan
    from ..report import render

    prof = load(profile, server_version)
    raw = make_plan(prof)
    matrix, report = (raw, None) if no_optimize else optimize(raw)
    layer = None
    if prof.network_acls:  # the ACL stage imported only then
        from ..nacl import layer_for

        layer = layer_for(prof, matrix)
    if verify_equivalence and layer:
        _verify_acls(layer, raw)
    if verify_equivalence:
        from ..equivalence import NotEquivalent, check_equivalent

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

        from ..report import acl_dict

        data = json.loads(render(matrix, fmt))
        data["network_acls"] = acl_dict(layer)
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(render(matrix, fmt), nl=False)
    if layer and fmt == "table":
        from ..report import acl_table

        click.echo(acl_table(layer), nl=False)


def _verify_acls(layer, raw) -> None:
    """The required flows through the ACLs both ways, and what they admit beyond."""
    from ..nacl import check_flows, excess

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

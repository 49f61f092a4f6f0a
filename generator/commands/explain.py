"""`rulegen explain`: is one flow allowed, and by which rules."""

from __future__ import annotations

import sys

import click

from ..cli import FILE, Choice, fail, load, warn


@click.command("explain")
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

    from ..explain import ExplainError, endpoint
    from ..explain import explain as make_explain
    from ..explain import render
    from ..pipeline import shipped_matrix
    from ..planner import paths_of

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

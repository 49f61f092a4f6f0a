"""`rulegen verify`: a profile's host firewall proven with real packets."""

from __future__ import annotations

import os
import sys

import click

from ..cli import FILE, Choice, fail, load


@click.command("verify")
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
    from ..verify import Interrupted, signals_raise

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
    from ..emitters import EmitError
    from ..verify import VerifyError, report, run

    if cleanup:
        from ..verify import cleanup as remove_left

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
    from ..pipeline import shipped_matrix

    matrix = shipped_matrix(prof)
    # Progress per phase, for a person watching; logs and pipes get the result only.
    tty = sys.stderr.isatty()
    progress = (lambda line: click.echo(line, err=True)) if tty else None
    try:
        outcome = run(matrix, prof, drop_rules, engine, progress)
    except (VerifyError, EmitError) as exc:
        fail([str(exc)])
    click.echo(report(outcome, verbose), nl=False)
    sys.exit(0 if outcome.ok else 2)

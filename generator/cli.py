"""The rulegen command line: the group, its exit codes and what every command shares.

Each command lives in its own module of generator/commands, imported only when it
runs (or when --help lists them all): building click's options of all of them
costs a run more than its own work does. Heavy modules are imported inside the
commands.
"""

from __future__ import annotations

import importlib
import sys

import click

from . import __version__

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


def closest(value: str, known) -> str | None:
    import difflib

    guess = difflib.get_close_matches(str(value), [str(k) for k in known], n=1)
    return guess[0] if guess else None


class Choice(click.Choice):
    """click.Choice that suggests the closest choice for a misspelt value."""

    def convert(self, value, param, ctx):
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter as exc:
            guess = closest(value, self.choices)
            if guess:  # click's own wording for a misspelt option
                exc.message += f" Did you mean {guess!r}?"
            raise


# Every command: its module in generator/commands holds it under the same name.
COMMANDS = (
    "audit",
    "diff",
    "explain",
    "generate",
    "init",
    "plan",
    "report",
    "schema",
    "snapshot",
    "verify",
)


class Group(click.Group):
    """Commands loaded when they run; usage errors exit 1, like every other error:
    2 and 3 are findings."""

    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module = importlib.import_module(f"{__package__}.commands.{name}")
        return getattr(module, name)

    def resolve_command(self, ctx, args):
        name = str(args[0])
        if name in COMMANDS or name.startswith("-") or ctx.resilient_parsing:
            return super().resolve_command(ctx, args)
        # click suggests from the commands it holds, none of them loaded yet.
        guess = closest(name, COMMANDS)
        message = f"No such command {name!r}." + (
            f" Did you mean {guess!r}?" if guess else ""
        )
        raise click.UsageError(message, ctx)

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

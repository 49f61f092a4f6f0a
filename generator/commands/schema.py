"""`rulegen schema`: the JSON Schema of a profile, for editors."""

from __future__ import annotations

import click


@click.command("schema")
def schema() -> None:
    """Print the JSON Schema of a profile (for editors)."""
    from ..profile import SCHEMA_PATH

    click.echo(SCHEMA_PATH.read_text(), nl=False)

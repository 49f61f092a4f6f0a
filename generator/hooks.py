"""`rulegen-pre-commit`: the hooks of .pre-commit-hooks.yaml.

pre-commit passes the changed files to a hook; a rulegen command takes one profile.
Each hook runs its command once per changed file that is a rulegen profile (other YAML
in the repository is left alone) and fails when any run reports what it is meant to
catch. Exit codes are pre-commit's: 0 passed, 1 failed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click

# The keys every profile has (profile.schema.json's required), so a YAML file that
# has them all is taken for one.
PROFILE_KEYS = {"name", "server_version", "cloud", "access", "network", "peers"}


def is_profile(path: Path) -> bool:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and PROFILE_KEYS <= set(data)


def _rulegen(*args: str) -> int:
    """One rulegen command, its output passed through; its exit code."""
    return subprocess.run([sys.executable, "-m", "generator", *args]).returncode


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Run rulegen on the profiles among FILES (what pre-commit passes a hook)."""


@main.command("generate-check")
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False))
@click.option(
    "--out",
    default="out",
    show_default=True,
    help="Where the generated code is committed: OUT/<profile name>/.",
)
def generate_check(files, out) -> None:
    """Fail when a profile's generated code is not what `generate` would write."""
    import yaml

    failed = False
    for path in map(Path, files):
        if not is_profile(path):
            continue
        name = yaml.safe_load(path.read_text())["name"]
        code = _rulegen("generate", str(path), "-o", str(Path(out) / name), "--check")
        if code:
            click.echo(f"{path}: run `rulegen generate {path} -o {Path(out) / name}`")
            failed = True
    sys.exit(1 if failed else 0)


@main.command("snapshot-diff")
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False))
@click.option(
    "--fail-on",
    type=click.Choice(["breaking", "unexpected"]),
    default="unexpected",
    show_default=True,
    help="Which changes fail the hook (see rulegen diff --fail-on).",
)
def snapshot_diff(files, fail_on) -> None:
    """Print what traffic a profile's edit changes against its committed snapshot
    (PROFILE.snapshot.json beside it), and fail on --fail-on changes."""
    failed = False
    for path in map(Path, files):
        if not is_profile(path):
            continue
        snapshot = path.with_name(f"{path.stem}.snapshot.json")
        if not snapshot.is_file():
            click.echo(
                f"{path}: no snapshot to compare with; commit one:"
                f" rulegen snapshot {path} -o {snapshot}"
            )
            continue
        code = _rulegen("diff", str(snapshot), str(path), "--fail-on", fail_on)
        failed |= code not in (0, 2)  # 2: changes, shown; 3: --fail-on; 1: error
    sys.exit(1 if failed else 0)

"""Instructions, not seconds: `python benchmarks/instructions.py [COMMAND ...]`.

On a shared or busy machine wall times scatter by tens of percent; the number of
instructions a process executes (valgrind --tool=callgrind) barely moves. Counts
each rulegen command of the examples (or the ones given, e.g. "plan
profiles/gcp.yaml") and the bare `python -c "import click, jinja2, yaml"`, and
prints each as a ratio to the bare import. Instructions are not time (cache
misses and system calls cost more than their count), so the wall-time ratios of
plan.py and run.py are the figures of record; these say whether a change helped.
Each run takes 10-60 s under valgrind. Compiled templates are cached before
counting (a second run of a command finds them), as in everyday use.
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BASE = [PYTHON, "-c", "import click, jinja2, yaml"]
EXAMPLES = [
    "plan profiles/aws-private-vpn.yaml --format json",
    "generate profiles/aws-private-vpn.yaml",
    "plan profiles/gcp.yaml --format json",
    "generate profiles/gcp.yaml",
    "generate profiles/generic-baremetal.yaml",
]


def instructions(cmd: list[str], cwd: Path) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        proc = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *cmd],
            cwd=cwd,
            capture_output=True,
            text=True,
        )
    match = re.search(r"Collected : (\d+)", proc.stderr)
    if not match:
        raise SystemExit(f"valgrind failed on {cmd}:\n{proc.stderr[-2000:]}")
    return int(match.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("commands", nargs="*", default=EXAMPLES)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        cwd = Path(work)
        subprocess.run(BASE, cwd=cwd)  # byte code written, as for the commands
        base = instructions(BASE, cwd)
        print(f"{'bare import':<56} {base / 1e6:8.0f} M  1.00x")
        for command in args.commands:
            words = shlex.split(command)
            words = [str(ROOT / w) if w.startswith("profiles/") else w for w in words]
            cmd = [str(Path(PYTHON).parent / "rulegen"), *words]
            subprocess.run(cmd, cwd=cwd, capture_output=True)  # warm the caches
            count = instructions(cmd, cwd)
            print(f"{command:<56} {count / 1e6:8.0f} M  {count / base:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`python benchmarks/plan.py`: wall time of `rulegen plan` on the example profiles,
against a bare `python -c "import click, jinja2, yaml"` measured in the same run.

Best of --repeat runs each, pinned to one core; the ratio is what to watch (the
absolute figures depend on the machine).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = Path(sys.executable)
RULEGEN = PYTHON.parent / "rulegen"


def best(cmd: list[str], repeat: int) -> float:
    times = []
    core = {min(os.sched_getaffinity(0))}
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(
            cmd,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=lambda: os.sched_setaffinity(0, core),
        )
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    base = best([str(PYTHON), "-c", "import click, jinja2, yaml"], args.repeat)
    print(f"baseline (import click, jinja2, yaml): {base:.3f} s")
    for path in sorted((ROOT / "profiles").glob("*.yaml")):
        for extra in ([], ["--no-optimize"]):
            cmd = [str(RULEGEN), "plan", str(path), "--format", "json", *extra]
            seconds = best(cmd, args.repeat)
            label = path.stem + (" --no-optimize" if extra else "")
            print(f"{label:<36} {seconds:.3f} s  {seconds / base:.2f}x baseline")
    return 0


if __name__ == "__main__":
    sys.exit(main())

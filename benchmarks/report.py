"""`python benchmarks/report.py`: wall time of `rulegen report` (target: under 2 s).

On the example profiles, the 4.2 -> 4.3 diff report of the VPN example, and profiles
with 1,000 and 10,000 addresses (benchmarks/workload.py); with the share of Graphviz's
`dot -Tsvg` alone on the same graph. Best of --repeat runs each, pinned to one core.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from plan import PYTHON, RULEGEN, ROOT, timed
from workload import command_env, profile, write_profile


def best(cmd: list[str], repeat: int, env: dict) -> float:
    """Best wall time of `repeat` runs, pinned to one core, caches warm (one run first)."""
    timed(cmd, env, ROOT)
    return min(timed(cmd, env, ROOT)[0] for _ in range(repeat))


def dot_time(path: Path, repeat: int) -> float:
    source = subprocess.run(
        [str(RULEGEN), "plan", str(path), "--format", "dot"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(
            ["dot", "-Tsvg"], input=source, check=True, capture_output=True, text=True
        )
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        env = command_env(folder)
        base = best([str(PYTHON), "-c", "import click, jinja2, yaml"], args.repeat, env)
        print(f"baseline (import click, jinja2, yaml): {base:.3f} s")
        out = folder / "report.html"
        cases = [(p.stem, p, []) for p in sorted((ROOT / "profiles").glob("*.yaml"))]
        vpn = ROOT / "profiles/aws-private-vpn.yaml"
        cases.append(
            (
                "aws-private-vpn 4.2 -> 4.3",
                vpn,
                ["--server-version", "4.3", "--diff", vpn],
            )
        )
        for cloud in ("generic", "aws"):
            for count in (1000, 10000):
                path = write_profile(folder, profile(cloud, count))
                cases.append((f"{cloud}, {count:,} addresses", path, []))
        for label, path, extra in cases:
            cmd = [str(RULEGEN), "report", str(path), "-o", str(out), *extra]
            seconds = best(cmd, args.repeat, env)
            size = out.stat().st_size / 1024
            layout = dot_time(path, args.repeat)
            print(
                f"{label:<32} {seconds:.3f} s  {seconds / base:5.2f}x baseline"
                f"  (dot -Tsvg {layout:.3f} s)  {size:,.0f} KiB"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

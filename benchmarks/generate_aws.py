"""Cost of `rulegen generate` for the AWS targets, as ratios against baselines of the same run.

Baselines: starting Python and importing the CLI (what any rulegen command pays), and
planning plus optimizing the profile (what every emitter needs first). Run:

    .venv/bin/python benchmarks/generate_aws.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from generator.emitters import TARGETS, emit  # noqa: E402
from generator.optimizer import optimize  # noqa: E402
from generator.planner import plan  # noqa: E402
from generator.profile import load_profile  # noqa: E402

PROFILE = ROOT / "profiles" / "aws-public-ip.yaml"
AWS = [TARGETS["terraform-aws"], TARGETS["cloudformation"]]


def wall(argv: list[str], runs: int = 7) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True, cwd=ROOT)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def best(fn, number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number


def main() -> None:
    py = sys.executable
    bare = wall([py, "-c", "import generator.cli"])
    with tempfile.TemporaryDirectory() as out:
        cli = wall(
            [py, "-m", "generator", "generate", str(PROFILE), "-o", out]
            + ["--target", "terraform-aws", "--target", "cloudformation"]
        )
    profile = load_profile(PROFILE)
    matrix = optimize(plan(profile))[0]
    emit(matrix, profile, AWS)  # warm the template cache
    planned = best(lambda: optimize(plan(profile)), 20)
    emitted = best(lambda: emit(matrix, profile, AWS), 20)
    print(f"profile {PROFILE.name}: {len(matrix.rules)} rules after optimizing")
    print(f"bare import of the CLI     {bare * 1000:8.1f} ms  (baseline)")
    print(f"generate, both AWS targets {cli * 1000:8.1f} ms  {cli / bare:5.2f}x bare")
    print(f"plan + optimize in-process {planned * 1000:8.2f} ms  (baseline)")
    print(
        f"emit both AWS targets      {emitted * 1000:8.2f} ms"
        f"  {emitted / planned:5.2f}x plan + optimize"
    )


if __name__ == "__main__":
    main()

"""Cost of `rulegen verify`, as ratios against a baseline measured in the same run.

Baseline: the bare test bed (namespaces, veth pairs, bridge and one agent per
namespace, up and down again) with no rules loaded and nothing probed: what any
namespace-based check pays. Needs root (Linux network namespaces). Run:

    .venv/bin/python benchmarks/bench_verify.py
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from generator.optimizer import optimize  # noqa: E402
from generator.planner import plan  # noqa: E402
from generator.profile import load_profile  # noqa: E402
from generator.verify import NamespaceBed, make_plan, run  # noqa: E402

REPEAT = 3


def best(fn) -> float:
    times = []
    for _ in range(REPEAT):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    if os.geteuid() != 0:
        print("bench_verify: needs root (network namespaces); skipped")
        return
    for path in sorted((ROOT / "profiles").glob("*.yaml")):
        profile = load_profile(path)
        matrix = optimize(plan(profile))[0]
        test_plan = make_plan(matrix, profile.subnets)

        def bare():
            with NamespaceBed(make_plan(matrix, profile.subnets).hosts):
                pass

        t_bed = best(bare)
        outcome = None

        def verify():
            nonlocal outcome
            outcome = run(matrix, profile)

        t_verify = best(verify)
        assert outcome is not None and outcome.ok, path.name
        print(
            f"{path.stem:22s} {len(test_plan.hosts):3d} hosts {len(test_plan.probes):4d}"
            f" probes  verify / bare bed = {t_verify / t_bed:5.2f}"
            f"  (verify {t_verify:5.2f} s)"
        )


if __name__ == "__main__":
    main()

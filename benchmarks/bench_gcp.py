"""Cost of the GCP emitters, as ratios against baselines measured in the same run.

In process: emitting each GCP target against planning + optimizing the same profile
(which every generate pays anyway), for the shipped GCP profile and for one with a
long address list that is cut into chunks. As a command: `rulegen generate` of the
GCP profile (both targets) against the bare start-up `rulegen --version`. Run:

    .venv/bin/python benchmarks/bench_gcp.py
"""

from __future__ import annotations

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
from generator.profile import load_profile, parse_profile  # noqa: E402

PROFILE = ROOT / "profiles" / "gcp.yaml"


def best(fn, number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number


def wall(args: list[str]) -> float:
    times = []
    for _ in range(5):
        start = time.perf_counter()
        subprocess.run(args, check=True, capture_output=True, cwd=ROOT)
        times.append(time.perf_counter() - start)
    return min(times)


def long_list_profile():
    text = PROFILE.read_text()
    many = ", ".join(f"198.18.{i // 128}.{i % 128 * 2}/32" for i in range(2000))
    return parse_profile(
        text.replace("ssh_admin: [35.235.240.0/20]", f"ssh_admin: [{many}]"),
        "bench.yaml",
    )


def in_process(label: str, profile) -> None:
    def planned():
        return optimize(plan(profile))[0]

    matrix = planned()
    base = best(planned, 5)
    print(f"{label}: plan + optimize {base * 1e3:.2f} ms (baseline)")
    for name in ("gcp-firewall", "terraform-gcp"):
        cost = best(lambda: emit(matrix, profile, [TARGETS[name]]), 5)
        print(f"  {name:14} {cost * 1e3:8.2f} ms  x{cost / base:.2f}")


def main() -> None:
    in_process("acme-gcp", load_profile(PROFILE))
    in_process("2000 ssh_admin addresses", long_list_profile())
    rulegen = str(ROOT / ".venv" / "bin" / "rulegen")
    with tempfile.TemporaryDirectory() as out:
        base = wall([rulegen, "--version"])
        cost = wall([rulegen, "generate", str(PROFILE), "-o", out])
    print(f"command: rulegen --version {base * 1e3:.0f} ms (baseline)")
    print(
        f"  rulegen generate (both GCP targets) {cost * 1e3:.0f} ms  x{cost / base:.2f}"
    )


if __name__ == "__main__":
    main()

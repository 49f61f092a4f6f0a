"""`python benchmarks/goals.py [FOLDER]`: the speed goals, each against its figure.

Reads what `make bench` wrote into FOLDER (default out/bench): plan.json
(benchmarks/plan.py, the example profiles), run.json (benchmarks/run.py, 10 to 10,000
addresses and Aerleon) and stages.json (benchmarks/stages.py --linearity), and prints
one line per goal: the figure measured, the goal, the figure before the work on it,
and whether it is met. Ratios are of CPU time to the bare `python -c "import click,
jinja2, yaml"` of the same run (the same as wall time on a quiet machine, far
steadier on a busy one). A file that is missing leaves its goals unmeasured.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (goal, at most, before): the before figures are those the speed issue started from.
TYPICAL = ("every typical generate (example profiles)", 1.3, "1.41-1.93x")
LARGE = ("every generate at 10,000 addresses", 3.0, "3.4x generic, 4.0x GCP")
OVER_QUOTA = ("AWS over-quota stop at 10,000 addresses", 2.0, "13.3x")
LINEAR = ("each stage's growth against linear", 1.2, "")
AERLEON_BEFORE = {10: "4.7x", 1000: "10.2x"}


def _read(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _cpu_ratio(run: dict, base: dict) -> float:
    return run["cpu_seconds"] / base["cpu_seconds"]


def _worst(rows: list[tuple[str, float]]) -> tuple[str, float] | None:
    return max(rows, key=lambda row: row[1], default=None)


def goals(plan: dict | None, run: dict | None, stages: dict | None) -> list[dict]:
    """One row per goal: name, measured (text), goal (text), before, met (None when
    not measured)."""
    rows = []

    def add(goal, figure: tuple[str, float] | None, detail: str = "") -> None:
        name, limit, before = goal
        if figure is None:
            rows.append(dict(goal=name, measured="not measured", limit=limit))
            rows[-1].update(before=before, met=None)
            return
        where, value = figure
        measured = f"{value:.2f}x ({where})" + (f"; {detail}" if detail else "")
        rows.append(
            dict(goal=name, measured=measured, limit=limit, before=before)
            | dict(met=value <= limit)
        )

    if plan:
        typical = [
            (r["command"], _cpu_ratio(r, plan["baseline"]))
            for r in plan["runs"]
            if " generate " in r["command"]
        ]
        within = sum(value <= TYPICAL[1] for _, value in typical)
        add(TYPICAL, _worst(typical), f"{within} of {len(typical)} within")
    else:
        add(TYPICAL, None)
    if run:
        base = run["baseline"]
        at_10k = [r for r in run["runs"] if r["size"] == 10000]
        done = [
            (f"{r['cloud']} {r['step']}", _cpu_ratio(r, base))
            for r in at_10k
            if r["step"].startswith("generate") and r["exit"] == 0
        ]
        add(LARGE, _worst(done), f"{len(done)} targets")
        stops = [
            (f"{r['step'].split()[-1]}, exit {r['exit']}", _cpu_ratio(r, base))
            for r in at_10k
            if r["cloud"] == "aws" and r["exit"] == 1
        ]
        add(OVER_QUOTA, _worst(stops))
    else:
        add(LARGE, None)
        add(OVER_QUOTA, None)
    if stages:
        growth = [
            (f"{r['cloud']} {r['stage']}", r["worst"])
            for r in stages["rows"]
            if r["worst"] is not None
        ]
        over = sum(value > LINEAR[1] for _, value in growth)
        add(LINEAR, _worst(growth), f"{len(growth) - over} of {len(growth)} within")
    else:
        add(LINEAR, None)
    return rows


def aerleon_lines(run: dict | None) -> list[str]:
    if not run or not run.get("aerleon"):
        return ["Aerleon: not measured (run.py found no .venv-bench)"]
    lines = []
    for r in run["aerleon"]:
        if not r.get("rulegen_cpu"):
            continue
        faster = r["cpu_seconds"] / r["rulegen_cpu"]
        before = AERLEON_BEFORE.get(r["size"])
        lines.append(
            f"  {r['size']:>6,} addresses: rulegen {faster:.1f}x faster than Aerleon 1.18"
            f" in CPU time ({r['rulegen_cpu']:.3f} s against {r['cpu_seconds']:.3f} s)"
            + (f"; before: {before}" if before else "")
        )
    return lines


def main() -> int:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "out" / "bench"
    plan, run, stages = (
        _read(folder / name) for name in ("plan.json", "run.json", "stages.json")
    )
    rows = goals(plan, run, stages)
    print(f"speed goals (CPU time against the bare import of the same run; {folder}):")
    print(f"{'goal':<42} {'at most':>7}  {'met':<4} {'before':<22} measured")
    for row in rows:
        met = {True: "yes", False: "NO", None: "-"}[row["met"]]
        print(
            f"{row['goal']:<42} {row['limit']:>6}x  {met:<4} {row['before']:<22}"
            f" {row['measured']}"
        )
    print("\nAerleon, the same policy (iptables and GCE targets, one process):")
    print("\n".join(aerleon_lines(run)))
    met = sum(row["met"] is True for row in rows)
    missed = [row["goal"] for row in rows if row["met"] is False]
    print(
        f"\n{met} of {len(rows)} goals met"
        + (f"; missed: {', '.join(missed)}" if missed else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

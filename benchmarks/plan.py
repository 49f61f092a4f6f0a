"""`python benchmarks/plan.py`: `rulegen plan` and `rulegen generate --target T` of
every example profile, against a bare `python -c "import click, jinja2, yaml"`
measured in the same run; the target is at most 1.3x.

Best of --repeat runs each, pinned to one core, after one untimed run that fills
the byte-code and compiled-template caches (as any second run finds them; the
first run's time is shown apart). The ratio is what to watch: the absolute figures
depend on the machine, and on a busy one the best of more runs (--repeat 15)
settles them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from generator.emitters import targets_for  # noqa: E402
from generator.profile import load_profile  # noqa: E402
from workload import command_env  # noqa: E402

PYTHON = Path(sys.executable)
RULEGEN = PYTHON.parent / "rulegen"
LIMIT = 1.3


def timed(cmd: list[str], env: dict, cwd: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of one run. CPU time (user + system) leaves out the time
    spent waiting for a core, which on a busy machine dwarfs the rest."""
    core = {min(os.sched_getaffinity(0))}
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=lambda: os.sched_setaffinity(0, core),
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return wall, usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--json", type=Path, help="Also write the figures here.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rulegen-plan-bench-") as tmp:
        work = Path(tmp)
        env = command_env(work)
        runs = [("baseline", [str(PYTHON), "-c", "import click, jinja2, yaml"])]
        for path in sorted((ROOT / "profiles").glob("*.yaml")):
            runs.append((f"{path.stem} plan", [str(RULEGEN), "plan", str(path)]))
            for target in targets_for(load_profile(path).cloud):
                # Into out/<name>/ of the working folder, as most users run it (-o
                # would add click's import of difflib: it tries "-o" as a long option
                # first, and its "no such option" error looks for close matches).
                cmd = [str(RULEGEN), "generate", str(path), "--target", target.name]
                runs.append((f"{path.stem} generate {target.name}", cmd))
        # Interleaved rounds: a burst of load on a shared machine hits every
        # command alike instead of the few measured while it lasted.
        first = {name: timed(cmd, env, work)[0] for name, cmd in runs}
        walls = {name: [] for name, _ in runs}
        cpus = {name: [] for name, _ in runs}
        for _ in range(args.repeat):
            for name, cmd in runs:
                wall, cpu = timed(cmd, env, work)
                walls[name].append(wall)
                cpus[name].append(cpu)
        base, base_cpu = min(walls["baseline"]), min(cpus["baseline"])
        print(
            f"baseline (import click, jinja2, yaml): {base:.3f} s wall, {base_cpu:.3f} s"
            f" CPU; best of {args.repeat}; target {LIMIT}x, judged on CPU time (the"
            " same as wall time on a quiet machine, far steadier on a busy one)\n"
        )
        print(
            f"{'command':<48} {'wall':>6} {'x base':>7} {'CPU':>6} {'x base':>7}  first run"
        )
        over = []
        for name, _ in runs[1:]:
            wall, cpu = min(walls[name]), min(cpus[name])
            verdict = "" if cpu / base_cpu <= LIMIT else "  over"
            if verdict:
                over.append(name)
            print(
                f"{name:<48} {wall:6.3f} {wall / base:6.2f}x {cpu:6.3f}"
                f" {cpu / base_cpu:6.2f}x  {first[name]:.3f} s{verdict}"
            )
        print(
            f"\n{len(runs) - 1 - len(over)} of {len(runs) - 1} within {LIMIT}x"
            + (f"; over: {', '.join(over)}" if over else "")
        )
        if args.json:
            figures = {
                "repeat": args.repeat,
                "limit": LIMIT,
                "baseline": {"seconds": base, "cpu_seconds": base_cpu},
                "runs": [
                    {
                        "command": name,
                        "seconds": min(walls[name]),
                        "cpu_seconds": min(cpus[name]),
                        "first_seconds": first[name],
                    }
                    for name, _ in runs[1:]
                ],
            }
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

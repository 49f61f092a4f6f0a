"""Where `rulegen generate` spends its time: `python benchmarks/stages.py`.

In one process, per bench profile (benchmarks/workload.py) and target: the best CPU
time of --repeat runs of each stage (read the profile, plan, optimize, fit the quotas,
emit, write), then the peak memory of the whole pipeline under tracemalloc. The
import cost of the command is measured apart, in a fresh process per run
(`python -X importtime`), as the sum of the modules rulegen itself adds to a bare
`import click, jinja2, yaml`. With --cprofile CLOUD-SIZE-TARGET, prints the
functions that take the most time in that run instead.

With --linearity, each stage per cloud at 1,000, 10,000 and 100,000 addresses
(read the profile, plan, optimize, the fit check of the cloud's targets, each
emitter, write them all) and its growth against linear: time(10x size) / (10 x
time(size)); a stage over 1.2x of linear is flagged. The AWS emitters run with
their quotas lifted (in this process only): no real quota holds these lists, and
the fit check's stop is measured as a stage of its own.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import gc
import json
import pstats
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from workload import profile, write_profile  # noqa: E402

PYTHON = sys.executable
CLOUD_TARGETS = {
    "aws": ("terraform-aws", "cloudformation", "iptables"),
    "gcp": ("terraform-gcp", "gcp-firewall", "iptables"),
    "generic": ("iptables",),
}


def fresh_caches() -> None:
    """What a new process starts with: no address list parsed, no AWS split made."""
    from generator import addresses, optimizer, quotas
    from generator.emitters import aws

    addresses._PLAIN.clear()
    optimizer._COLLAPSED.clear()
    optimizer._SPANS.clear()
    optimizer.parse_cidr.cache_clear()
    aws.split.cache_clear()
    quotas._CHUNKS.clear()


def pipeline(path: Path, target_name: str, out: Path) -> dict[str, float]:
    """One `generate --target` as the command runs it, stage by stage (CPU seconds:
    on a busy machine, wall time mostly measures the wait for a core)."""
    from generator.emitters import EmitError, emit, targets_for
    from generator.optimizer import optimize
    from generator.planner import plan
    from generator.profile import load_profile
    from generator.emitters.aws import check_fit
    from generator.quotas import quotas_for
    from generator.writer import compare, write_tree

    fresh_caches()
    times = {}
    start = time.process_time()

    def lap(name: str) -> None:
        nonlocal start
        now = time.process_time()
        times[name] = now - start
        start = now

    prof = load_profile(path)
    lap("read profile")
    raw = plan(prof)
    lap("plan")
    matrix = optimize(raw)[0]
    lap("optimize")
    targets = targets_for(prof.cloud, (target_name,))
    try:
        check_fit(matrix, targets, quotas_for(prof))
    except EmitError:
        lap("fit (fails)")
        return times
    lap("fit")
    files = emit(matrix, prof, targets)
    lap("emit")
    write_tree(out, files, compare(out, files), False)
    lap("write")
    return times


def stages(args) -> None:
    work = Path(tempfile.mkdtemp(prefix="rulegen-stages-"))
    print(f"best of {args.repeat} runs each, in one process (CPU seconds)\n")
    for cloud, targets in CLOUD_TARGETS.items():
        for size in args.sizes:
            path = write_profile(work, profile(cloud, size))
            for target in targets:
                best: dict[str, float] = {}
                for i in range(args.repeat):
                    run = pipeline(path, target, work / f"out-{i}")
                    for name, seconds in run.items():
                        best[name] = min(best.get(name, seconds), seconds)
                gc.collect()
                tracemalloc.start()
                pipeline(path, target, work / "out-mem")
                peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
                parts = "  ".join(f"{k} {v:.3f}" for k, v in best.items())
                print(
                    f"{cloud:<8} {size:>6} {target:<15} total {sum(best.values()):.3f}"
                    f"  peak {peak / 2**20:5.1f} MiB  |  {parts}"
                )


# Over this, a stage grows faster than linear (time(10x size) / (10 x time(size))).
LINEAR_LIMIT = 1.2
# Under this (CPU seconds), a stage's time at the smaller size is mostly fixed cost
# and clock noise: no growth figure.
LINEAR_FLOOR = 0.002
LIFTED = {  # AWS quotas no list reaches (set in this process only, never validated)
    "aws": {
        "inbound_rules_per_group": 10**9,
        "outbound_rules_per_group": 10**9,
        "groups_per_interface": 10**9,
    }
}


def stage_times(path: Path, names: tuple[str, ...], out: Path) -> dict[str, float]:
    """CPU seconds of each stage of one `generate` of the targets `names`."""
    from generator.emitters import EmitError, emit, targets_for
    from generator.emitters.aws import check_fit, split
    from generator.optimizer import optimize
    from generator.planner import plan
    from generator.profile import load_profile
    from generator.quotas import quotas_for
    from generator.writer import compare, write_tree

    fresh_caches()
    times: dict[str, float] = {}
    start = time.process_time()

    def lap(name: str) -> None:
        nonlocal start
        now = time.process_time()
        times[name] = now - start
        start = now

    prof = load_profile(path)
    lap("read profile")
    raw = plan(prof)
    lap("plan")
    matrix = optimize(raw)[0]
    lap("optimize")
    targets = targets_for(prof.cloud, names)
    try:
        check_fit(matrix, targets, quotas_for(prof))
        lap("fit check")
    except EmitError:
        lap("fit check (stops)")
    lifted = dataclasses.replace(prof, quotas=LIFTED)
    files: dict[str, str] = {}
    for target in targets:
        split.cache_clear()  # each makes its own AWS split, as when the only target
        start = time.process_time()
        files.update(emit(matrix, lifted if "aws" in target.clouds else prof, [target]))
        lap(f"emit {target.name}")
    write_tree(out, files, compare(out, files), False)
    lap("write")
    return times


def linearity(args) -> dict:
    """Each stage's best CPU time per cloud and size, and its growth against linear."""
    work = Path(tempfile.mkdtemp(prefix="rulegen-linearity-"))
    best: dict[tuple[str, str], dict[int, float]] = {}
    try:
        for cloud, names in CLOUD_TARGETS.items():
            for size in args.sizes:
                path = write_profile(work, profile(cloud, size))
                for i in range(args.repeat):
                    out = work / f"out-{i}"
                    for stage, seconds in stage_times(path, names, out).items():
                        slot = best.setdefault((cloud, stage), {})
                        slot[size] = min(slot.get(size, seconds), seconds)
                    shutil.rmtree(out)
                    gc.collect()
                path.unlink()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    sizes = sorted(args.sizes)
    steps = [(a, b) for a, b in zip(sizes, sizes[1:])]
    print(
        f"stage linearity: best CPU seconds of {args.repeat} runs in one process;"
        f" growth = time(next size) / (size ratio x time): linear is 1.00x, over"
        f" {LINEAR_LIMIT}x flagged (no figure under {LINEAR_FLOOR * 1000:.0f} ms)\n"
    )
    head = "".join(f"{s:>9,}" for s in sizes)
    grow = "".join(f"{f'{a // 1000}k->{b // 1000}k':>11}" for a, b in steps)
    print(f"{'cloud':<8} {'stage':<24}{head}{grow}")
    rows = []
    for (cloud, stage), by_size in best.items():
        growth = {}
        for a, b in steps:
            if a in by_size and b in by_size and by_size[a] >= LINEAR_FLOOR:
                growth[f"{a}-{b}"] = by_size[b] / (by_size[a] * b / a)
        worst = max(growth.values(), default=None)
        over = worst is not None and worst > LINEAR_LIMIT
        rows.append(
            {
                "cloud": cloud,
                "stage": stage,
                "seconds": {str(s): by_size.get(s) for s in sizes},
                "growth": growth,
                "worst": worst,
                "over": over,
            }
        )
        cells = "".join(
            f"{by_size[s]:9.3f}" if s in by_size else f"{'-':>9}" for s in sizes
        )
        cells += "".join(
            (f"{growth[f'{a}-{b}']:10.2f}x" if f"{a}-{b}" in growth else f"{'-':>11}")
            for a, b in steps
        )
        print(f"{cloud:<8} {stage:<24}{cells}{'  over' if over else ''}")
    flagged = [f"{r['cloud']} {r['stage']}" for r in rows if r["over"]]
    print(
        f"\n{len(rows) - len(flagged)} of {len(rows)} stages within {LINEAR_LIMIT}x"
        " of linear" + (f"; over: {', '.join(flagged)}" if flagged else "")
    )
    return {"sizes": sizes, "repeat": args.repeat, "limit": LINEAR_LIMIT, "rows": rows}


def imports(args) -> None:
    """Import time rulegen adds to the bare baseline, per module (best of runs)."""
    code = "import click, jinja2, yaml"
    commands = {
        "baseline": ["-c", code],
        "plan": ["-c", f"{code}; import generator.cli; {PLAN_IMPORTS}"],
        "generate": ["-c", f"{code}; import generator.cli; {GENERATE_IMPORTS}"],
    }
    best: dict[str, dict[str, int]] = {}
    for name, cmd in commands.items():
        for _ in range(args.repeat):
            err = subprocess.run(
                [PYTHON, "-X", "importtime", *cmd],
                capture_output=True,
                text=True,
                cwd=ROOT,
            ).stderr
            own = {}
            for line in err.splitlines():
                m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
                if m:
                    own[m.group(4)] = int(m.group(1))
            prev = best.setdefault(name, own)
            for module, micros in own.items():
                prev[module] = min(prev.get(module, micros), micros)
    base = best["baseline"]
    for name in ("plan", "generate"):
        extra = {m: t for m, t in best[name].items() if m not in base}
        total = sum(extra.values())
        top = sorted(extra.items(), key=lambda kv: -kv[1])[:12]
        print(
            f"{name}: {len(extra)} modules beyond the baseline, {total / 1000:.1f} ms"
            " (self time, best of runs)"
        )
        for module, micros in top:
            print(f"  {micros / 1000:6.1f} ms  {module}")


# What the commands import before their first line of work.
PLAN_IMPORTS = (
    "import generator.profile, generator.planner, generator.optimizer,"
    " generator.report, generator.catalog"
)
GENERATE_IMPORTS = (
    "import generator.profile, generator.pipeline, generator.planner,"
    " generator.optimizer, generator.quotas, generator.emitters, generator.writer,"
    " generator.templating, generator.emitters.aws, generator.emitters.terraform_aws,"
    " generator.emitters.cloudformation"
)


def hotspots(args) -> None:
    cloud, size, target = args.cprofile.split("-", 2)
    work = Path(tempfile.mkdtemp(prefix="rulegen-stages-"))
    path = write_profile(work, profile(cloud, int(size)))
    pipeline(path, target, work / "warm")  # imports and caches out of the way
    prof = cProfile.Profile(time.process_time)
    prof.runcall(pipeline, path, target, work / "out")
    pstats.Stats(prof).sort_stats("tottime").print_stats(args.top)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="*")
    parser.add_argument(
        "--linearity", action="store_true", help="Each stage's growth with the size."
    )
    parser.add_argument("--json", type=Path, help="Also write the figures here.")
    parser.add_argument("--cprofile", metavar="CLOUD-SIZE-TARGET")
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--imports", action="store_true", help="Only the imports.")
    args = parser.parse_args()
    # The collector's thresholds of the command (generator.run): with Python's
    # defaults, the collections of 100,000 addresses' objects alone would double
    # the time of reading the profile.
    from generator import GC_YOUNG

    gc.set_threshold(GC_YOUNG, 10, 10)
    if args.linearity:
        args.sizes = args.sizes or [1000, 10000, 100000]
        figures = linearity(args)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(figures, indent=2) + "\n")
        return 0
    args.sizes = args.sizes or [1000, 10000]
    if args.cprofile:
        hotspots(args)
    elif args.imports:
        imports(args)
    else:
        imports(args)
        print()
        stages(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

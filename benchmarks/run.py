"""Scale benchmark: `python benchmarks/run.py` (not part of the test suite).

For profiles with 10, 1,000 and 10,000 addresses in one peer list plus 1,000
VCS/admin ranges, per cloud: wall time and peak memory of `rulegen plan` and of
`rulegen generate` per target (every registered target whose emitter exists), the
rules each target gets from the raw and the optimized matrix, and Aerleon doing
the same work (its iptables and GCE targets) if .venv-bench has it. Every time is
also given as a ratio to a bare `python -c "import click, jinja2, yaml"` measured
in the same run. Processes are pinned to one core.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from generator.emitters import TARGETS  # noqa: E402
from generator.optimizer import optimize  # noqa: E402
from generator.planner import plan  # noqa: E402
from generator.profile import load_profile  # noqa: E402
from generator.emitters import EmitError  # noqa: E402
from generator.emitters.aws import split  # noqa: E402
from generator.quotas import chunk_addresses, quotas_for, use_ipset  # noqa: E402
from workload import (  # noqa: E402
    aerleon_policy,
    command_env,
    launched,
    profile,
    write_profile,
)

PYTHON = Path(sys.executable)
RULEGEN = PYTHON.parent / "rulegen"
AERLEON = ROOT / ".venv-bench" / "bin" / "aclgen"
SIZES = (10, 1000, 10000)
CLOUDS = ("aws", "gcp", "generic")


def measure(cmd: list[str], repeat: int, env: dict, cwd=None) -> dict:
    """Best wall time of `repeat` runs after an untimed one (which fills the caches),
    the peak RSS and exit code of that run, and the best CPU time of all."""
    runs = []
    for _ in range(repeat + 1):
        proc = subprocess.run(launched(cmd), cwd=cwd, capture_output=True, env=env)
        wall, cpu, peak, status = proc.stdout.split()
        err = proc.stderr.decode()
        run = {
            "seconds": float(wall),
            # Without the time spent waiting for a core: on a busy machine, the
            # figure closest to what a quiet one would show.
            "cpu_seconds": float(cpu),
            "peak_mib": int(peak) / 1024,
            "exit": int(status),
            "error": next((l for l in err.splitlines() if l.startswith("error:")), ""),
        }
        runs.append(run)
    best = min(runs[1:], key=lambda r: r["seconds"])
    return {**best, "cpu_seconds": min(r["cpu_seconds"] for r in runs[1:])}


def available_targets(cloud: str) -> list[str]:
    return [
        t.name
        for t in TARGETS.values()
        if cloud in t.clouds + t.extra_clouds
        and importlib.util.find_spec(f"generator.emitters.{t.module}") is not None
    ]


def target_rules(matrix, target, quotas) -> tuple[int, str]:
    """How many rules the target's engine holds for this matrix, once split, and
    (AWS) the most security groups any role needs, from the emitters' own split."""
    if target.name in ("terraform-aws", "cloudformation"):
        try:
            by_role = split(target, matrix, quotas)
        except EmitError as exc:
            return 0, f"{exc}"[:60]
        groups = max(len(gs) for gs in by_role.values())
        rules = sum(len(g) for gs in by_role.values() for g in gs)
        fits = "fits" if groups <= quotas.aws_groups_per_interface else "too many"
        return rules, f"{groups} groups per role at most ({fits})"
    total = 0
    for rule in matrix.rules:
        if rule.role not in target.roles or (rule.is_return and target.stateful):
            continue
        if target.name == "iptables":
            big = use_ipset(rule.peer.cidrs, quotas)
            total += 1 if rule.peer.role or big else len(rule.peer.cidrs)
        elif target.name == "nftables":  # addresses in a set: one rule
            total += 1
        else:  # GCP: one rule per chunk of 256 ranges
            size = quotas.gcp_ranges_per_rule
            total += (
                1
                if rule.peer.role
                else len(chunk_addresses(rule.peer.cidrs, size, True))
            )
    return total, ""


def ratio(seconds: float, base: float) -> str:
    return f"{seconds / base:.1f}x"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="*", default=list(SIZES))
    parser.add_argument("--json", type=Path, help="Also write the figures here.")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="rulegen-bench-"))
    results = {"sizes": args.sizes, "runs": [], "aerleon": []}
    env = command_env(work)
    try:
        base = measure(
            [str(PYTHON), "-c", "import click, jinja2, yaml"],
            max(args.repeat, 5),
            env,
        )
        results["baseline"] = base
        print(
            f"baseline: python -c 'import click, jinja2, yaml': {base['seconds']:.3f} s,"
            f" {base['peak_mib']:.0f} MiB\n"
        )
        print(
            f"{'profile':<20} {'step':<28} {'seconds':>8} {'x base':>7} {'CPU s':>6} {'MiB':>5}"
            f" {'raw':>7} {'opt':>7}  note"
        )
        for cloud in CLOUDS:
            for size in args.sizes:
                path = write_profile(work, profile(cloud, size))
                prof = load_profile(path)
                raw = plan(prof)
                optimized, _ = optimize(raw)
                quotas = quotas_for(prof)
                steps = [
                    (
                        "plan",
                        [str(RULEGEN), "plan", str(path), "--format", "json"],
                        None,
                    )
                ]
                for name in available_targets(cloud):
                    out = work / "out" / f"{cloud}-{size}-{name}"
                    cmd = [
                        str(RULEGEN),
                        "generate",
                        str(path),
                        "--target",
                        name,
                        "-o",
                        str(out),
                    ]
                    steps.append((f"generate {name}", cmd, TARGETS[name]))
                for step, cmd, target in steps:
                    run = measure(cmd, args.repeat, env)
                    groups = ""
                    if target is None:
                        counts = (len(raw.rules), len(optimized.rules))
                    else:
                        counts = (
                            target_rules(raw, target, quotas)[0],
                            target_rules(optimized, target, quotas)[0],
                        )
                        groups = target_rules(optimized, target, quotas)[1]
                    note = (
                        groups
                        if run["exit"] == 0
                        else f"exit {run['exit']}: {run['error'][:110]}"
                    )
                    print(
                        f"{prof.name:<20} {step:<28} {run['seconds']:8.3f}"
                        f" {ratio(run['seconds'], base['seconds']):>7} {run['cpu_seconds']:6.3f}"
                        f" {run['peak_mib']:5.0f}"
                        f" {counts[0]:7d} {counts[1]:7d}  {note}"
                    )
                    results["runs"].append(
                        {
                            "profile": prof.name,
                            "cloud": cloud,
                            "size": size,
                            "step": step,
                            **run,
                            "raw_rules": counts[0],
                            "optimized_rules": counts[1],
                            "groups": groups,
                        }
                    )
                    for old in (work / "out").glob("*"):
                        shutil.rmtree(old)
        print()
        growth(results)
        targets(results)
        aerleon(work, args, base, results)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=2) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def growth(results) -> None:
    """CPU time from 1,000 to 10,000 addresses, per step: linear would be 10x at most."""
    by = {(r["cloud"], r["step"], r["size"]): r for r in results["runs"]}
    base = results["baseline"]["cpu_seconds"]
    print("growth 1,000 -> 10,000 addresses (CPU time; and above the bare import's):")
    for (cloud, step, size), run in sorted(by.items()):
        if size != 10000 or (cloud, step, 1000) not in by or run["exit"] != 0:
            continue
        total = by[(cloud, step, 1000)]["cpu_seconds"]
        small, large = total - base, run["cpu_seconds"] - base
        print(
            f"  {cloud:<8} {step:<28} {total:.3f} s -> {run['cpu_seconds']:.3f} s"
            f" (x{run['cpu_seconds'] / total:.2f} total, x{large / max(small, 1e-3):.2f} above baseline)"
        )
    print()


# At 10,000 addresses, every target's generate (see the README of benchmarks/).
MAX_SECONDS = 0.4
MAX_GROWTH = 3.0  # over the 1,000-address time
MAX_MIB = 60


def targets(results) -> None:
    """Each 10,000-address generate against the targets: time, growth, peak memory."""
    by = {(r["cloud"], r["step"], r["size"]): r for r in results["runs"]}
    base = results["baseline"]["seconds"]
    print(
        f"targets at 10,000 addresses: at most {MAX_SECONDS} s, {MAX_GROWTH}x the 1,000"
        f"-address time, {MAX_MIB} MiB (peak RSS); exit 1 = stopped by a quota."
        " Judged on CPU time (the same as wall time on a quiet machine, far steadier"
        " on a busy one):"
    )
    missed = 0
    for (cloud, step, size), run in sorted(by.items()):
        small = by.get((cloud, step, 1000))
        if size != 10000 or not step.startswith("generate") or small is None:
            continue
        growth = run["cpu_seconds"] / small["cpu_seconds"]
        seconds = run["cpu_seconds"]
        over = [
            what
            for what, bad in (
                ("time", seconds > MAX_SECONDS),
                ("growth", growth > MAX_GROWTH),
                ("memory", run["peak_mib"] > MAX_MIB),
            )
            if bad
        ]
        missed += bool(over)
        print(
            f"  {cloud:<8} {step:<28} {run['seconds']:.3f} s wall {run['cpu_seconds']:.3f} s"
            f" CPU ({run['seconds'] / base:.1f}x base) x{growth:.2f}"
            f" {run['peak_mib']:3.0f} MiB exit {run['exit']}"
            f"  {'over: ' + ', '.join(over) if over else 'ok'}"
        )
    print(f"  {missed} over a target\n")


def aerleon(work: Path, args, base, results) -> None:
    """The same rules through Aerleon's iptables and GCE targets, side by side."""
    if not AERLEON.exists():
        print(f"aerleon: not installed ({AERLEON} missing); install it with:")
        print(
            "  python3 -m venv .venv-bench && .venv-bench/bin/pip install aerleon==1.18.0"
        )
        return
    print(
        "aerleon 1.18 (iptables + GCE targets from the aws profile's raw matrix, one"
        " process, --max_renderers=1) against rulegen (iptables on the aws profile +"
        " gcp-firewall on the gcp profile, two processes):"
    )
    by = {(r["cloud"], r["step"], r["size"]): r for r in results["runs"]}
    for size in args.sizes:
        prof = load_profile(write_profile(work, profile("aws", size)))
        folder = work / f"aerleon-{size}"
        policies, defs = aerleon_policy(plan(prof), prof.subnets, folder)
        cmd = [
            str(AERLEON),
            f"--base_directory={policies}",
            f"--definitions_directory={defs}",
            f"--output_directory={folder / 'out'}",
            "--max_renderers=1",
        ]
        run = measure(cmd, args.repeat, command_env(work))
        ours = [by.get(("aws", "generate iptables", size))]
        ours += [by.get(("gcp", "generate gcp-firewall", size))]  # GCE: API JSON too
        ours = [r for r in ours if r and r["exit"] == 0]
        total = sum(r["seconds"] for r in ours)
        cpu = sum(r["cpu_seconds"] for r in ours)
        speed = (
            f"rulegen {run['seconds'] / total:.1f}x faster"
            f" ({run['cpu_seconds'] / cpu:.1f}x in CPU time)"
            if total
            else "no rulegen run"
        )
        note = "" if run["exit"] == 0 else f" (exit {run['exit']})"
        print(
            f"  {size:>6} addresses: aerleon {run['seconds']:.3f} s, {run['cpu_seconds']:.3f}"
            f" s CPU ({ratio(run['seconds'], base['seconds'])} base, {run['peak_mib']:.0f}"
            f" MiB){note}; rulegen {total:.3f} s, {cpu:.3f} s CPU over {len(ours)}"
            f" targets; {speed}"
        )
        results["aerleon"].append(
            {"size": size, **run, "rulegen_seconds": total, "rulegen_cpu": cpu}
        )


if __name__ == "__main__":
    sys.exit(main())

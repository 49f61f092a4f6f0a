"""kill -9 in a loop: `generate` of two large profiles into one folder, killed at random
moments; after every kill the next complete run (of either profile) must succeed with
nothing "edited by hand" and leave no temporary file or journal. Run:

    .venv/bin/python benchmarks/kill_generate.py [LOOPS] [ADDRESSES]

Prints the number of kills, how many landed while files were being replaced, and any
refusal (there must be none).
"""

from __future__ import annotations

import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from workload import profile, write_profile  # noqa: E402
from generator.writer import JOURNAL  # noqa: E402

RULEGEN = [sys.executable, "-m", "generator", "generate"]


def run(path: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        RULEGEN + [str(path), "-o", str(out)], capture_output=True, text=True, cwd=ROOT
    )


def main(loops: int = 40, addresses: int = 10_000) -> int:
    rng = random.Random(9)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        a = profile("generic", addresses)
        b = profile("generic", addresses - 1000)
        b["name"] = a["name"]
        (tmp / "a").mkdir()
        (tmp / "b").mkdir()
        paths = [write_profile(tmp / "a", a), write_profile(tmp / "b", b)]
        out = tmp / "out"
        start = time.perf_counter()
        first = run(paths[0], out)
        took = time.perf_counter() - start
        assert first.returncode == 0, first.stderr
        print(f"one run: {took:.2f} s", flush=True)
        mid_write = refused = 0
        for i in range(loops):
            path = rng.choice(paths)
            proc = subprocess.Popen(
                RULEGEN + [str(path), "-o", str(out)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=ROOT,
            )
            if i % 2:  # at a random moment
                time.sleep(took * rng.uniform(0.3, 1.1))
            else:  # while files are being replaced: once the journal is there
                deadline = time.perf_counter() + took * 3
                while time.perf_counter() < deadline and proc.poll() is None:
                    if (out / JOURNAL).exists():
                        time.sleep(rng.uniform(0, 0.03))
                        break
                    time.sleep(0.0005)
            proc.kill()
            proc.wait()
            if (out / JOURNAL).exists():
                mid_write += 1
            if rng.random() < 0.5:
                continue  # let the next kill land on an unfinished tree
            check = run(rng.choice(paths), out)
            leftovers = [
                p for p in out.rglob(".rulegen-*") if p.name != ".rulegen-manifest.json"
            ]
            if check.returncode != 0 or "edited by hand" in check.stderr or leftovers:
                refused += 1
                print(
                    f"loop {i}: {check.returncode} {check.stderr.strip()} {leftovers}"
                )
        print(
            f"{loops} kills, {mid_write} left a journal (killed while replacing files),"
            f" {refused} refused or unclean next runs"
        )
        return 1 if refused else 0


if __name__ == "__main__":
    sys.exit(main(*(int(a) for a in sys.argv[1:])))

"""Time to read and validate large profiles (YAML, schema, addresses); CPU time
is the steadier figure on a shared machine. Run:

.venv/bin/python benchmarks/load_profile.py [ADDRESSES ...]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from generator.profile import load_profile  # noqa: E402
from workload import profile, write_profile  # noqa: E402


def main(counts: list[int]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for count in counts:
            path = write_profile(Path(tmp), profile("generic", count))
            load_profile(path)  # imports and caches out of the figure
            wall, cpu = [], []
            for _ in range(7):
                w, c = time.perf_counter(), time.process_time()
                load_profile(path)
                wall.append(time.perf_counter() - w)
                cpu.append(time.process_time() - c)
            print(
                f"{count:>6} addresses, {path.stat().st_size:>8} bytes:"
                f" {min(wall):.3f} s wall, {min(cpu):.3f} s CPU (best of 7)"
            )


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [10_000, 70_000])

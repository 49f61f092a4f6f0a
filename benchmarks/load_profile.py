"""Time to read and validate large profiles (YAML, schema, addresses). Run:

.venv/bin/python benchmarks/load_profile.py [ADDRESSES ...]
"""

from __future__ import annotations

import sys
import tempfile
import timeit
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
            best = min(timeit.repeat(lambda: load_profile(path), number=1, repeat=5))
            print(f"{count:>6} addresses, {path.stat().st_size:>8} bytes: {best:.3f} s")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [10_000, 70_000])

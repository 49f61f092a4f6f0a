"""A site flow of many ports: `python benchmarks/site_ports.py`.

Plans, optimizes and emits (iptables, nftables) generic-baremetal with one site flow
of 1,000 to 10,000 single ports, in process, best of 3: the work grows linearly with
the ports (the optimizer's shadow search was rule against rule: 2,000 ports took 6 s
and 10,000 did not finish in 120 s).
"""

from __future__ import annotations

import sys
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from generator.emitters import TARGETS, emit  # noqa: E402
from generator.optimizer import optimize  # noqa: E402
from generator.planner import plan  # noqa: E402
from generator.profile import parse_profile  # noqa: E402


def profile_text(ports: int) -> str:
    base = (ROOT / "profiles" / "generic-baremetal.yaml").read_text()
    listed = ", ".join(str(1000 + 2 * i) for i in range(ports))
    return base + (
        "site_flows:\n  - {from: ssh_admin, to: nomad_clients, protocol: tcp,"
        f" ports: [{listed}], purpose: many ports}}\n"
    )


def best(fn) -> float:
    return min(timeit.repeat(fn, number=1, repeat=3))


def main() -> None:
    targets = [TARGETS["iptables"], TARGETS["nftables"]]
    for ports in (1_000, 2_000, 10_000):
        text = profile_text(ports)
        profile = parse_profile(text, "bench.yaml")
        matrix = plan(profile)
        optimized, _ = optimize(matrix)
        times = {
            "read": best(lambda: parse_profile(text, "bench.yaml")),
            "plan": best(lambda: plan(profile)),
            "optimize": best(lambda: optimize(matrix)),
            "emit": best(lambda: emit(optimized, profile, targets)),
        }
        shown = ", ".join(f"{k} {v:.3f} s" for k, v in times.items())
        print(f"{ports:>6,} ports: {shown}")


if __name__ == "__main__":
    main()

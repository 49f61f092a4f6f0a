"""Cost of the semantic diff, as ratios against baselines measured in the same run.

Baselines: planning the same profile (what every diff of a profile pays anyway), and
a naive rule-by-rule set comparison (what a text diff would cost). Run:

    .venv/bin/python benchmarks/bench_diff.py
"""

from __future__ import annotations

import ipaddress
import random
import sys
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from generator.diff import compare  # noqa: E402
from generator.matrix import DIRECTIONS, ROLES, Matrix, Peer, Rule  # noqa: E402
from generator.planner import plan  # noqa: E402
from generator.profile import load_profile  # noqa: E402


def naive(old: Matrix, new: Matrix) -> int:
    a = {r.traffic_key() for r in old.rules}
    b = {r.traffic_key() for r in new.rules}
    return len(a ^ b)


def best(fn, number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number


def synthetic(n: int, seed: int) -> Matrix:
    rnd = random.Random(seed)
    nets = list(ipaddress.ip_network("10.0.0.0/16").subnets(new_prefix=24))
    rules = []
    for i in range(n):
        lo = rnd.randrange(1, 60000)
        peer = (
            Peer(role=rnd.choice(ROLES))
            if rnd.random() < 0.3
            else Peer(cidrs=tuple(str(x) for x in rnd.sample(nets, 3)), name="p")
        )
        rules.append(
            Rule(
                role=rnd.choice(ROLES),
                direction=rnd.choice(DIRECTIONS),
                protocol=rnd.choice(["tcp", "udp"]),
                ports=(lo, lo + rnd.randrange(0, 50)),
                peer=peer,
                purpose=f"rule {i}",
                reference="bench",
                flow=f"f{i}",
            )
        )
    return Matrix("bench", "4.10", "4.3-4.10", "aws", True, tuple(rules))


def main() -> None:
    old = load_profile(ROOT / "profiles" / "aws-private-vpn.yaml")
    new = old.with_version("4.3")
    m_old, m_new = plan(old), plan(new)
    t_plan = best(lambda: plan(new), 50)
    t_diff = best(lambda: compare(m_old, m_new), 50)
    t_naive = best(lambda: naive(m_old, m_new), 500)
    print(f"shipped 4.2 -> 4.3 ({len(m_old.rules)} -> {len(m_new.rules)} rules):")
    print(f"  diff / plan  = {t_diff / t_plan:8.2f}")
    print(f"  diff / naive = {t_diff / t_naive:8.1f}")
    for n in (100, 400, 1600):
        a, b = synthetic(n, 1), synthetic(n, 1)
        b = Matrix(**{**b.__dict__, "rules": b.rules[:-1]})  # one rule fewer
        number = 3 if n < 1600 else 1
        t_diff = best(lambda: compare(a, b), number)
        t_naive = best(lambda: naive(a, b), 50)
        print(f"synthetic {n:5d} rules: diff / naive = {t_diff / t_naive:10.1f}")


if __name__ == "__main__":
    main()

"""The report of a run: the hosts, a grid of expected and observed connections per
source and destination, the mismatches (every probe with --verbose), and the totals.
"""

from __future__ import annotations

from .model import Outcome


def report(outcome: Outcome, verbose: bool = False) -> str:
    plan, matrix = outcome.plan, outcome.matrix
    lines = [
        f"verify {matrix.profile}: CircleCI Server {matrix.server_version},"
        f" {outcome.engine}, {'stateful' if matrix.stateful else 'stateless'}"
    ]
    for rule in outcome.dropped:
        lines.append(f"dropped from the loaded rules: {rule.name}")
    lines.append("hosts:")
    for host in plan.hosts:
        what = host.role or ", ".join(host.labels)
        note = "  (stand-in for 0.0.0.0/0)" if host.stand_in else ""
        note += f"  (public {host.public})" if host.public else ""
        if host.snat_from:
            note += "  (NAT gateway: SNAT)"
        if host.dnat:
            keeps = (
                "SNAT to " + str(host.snat_to) if host.snat_to else "keeps the client"
            )
            note += f"  (DNAT to {host.front_of.key}, {keeps})"
        if host.parent and not host.masquerade:
            note += "  (own address, routed through its node)"
        lines.append(f"  {host.key:<24} {str(host.address):<16} {what}{note}")
    lines += _grid(outcome)
    for note in plan.skipped:
        lines.append(f"skipped: {note}")
    for probe in plan.probes:
        observed = outcome.observed.get(probe.id, "not run")
        good = outcome.passed(probe) == probe.expect
        if good and not verbose:
            continue
        lines.append(
            f"{'ok      ' if good else 'MISMATCH'} {probe.text()}:"
            f" expected {'connect' if probe.expect else 'blocked'}, observed {observed};"
            f" {'; '.join(probe.why)}"
        )
    must = sum(p.expect for p in plan.probes)
    bad = len(outcome.mismatches)
    lines.append(
        f"{matrix.profile}: {len(plan.probes)} probes ({must} must connect,"
        f" {len(plan.probes) - must} must fail), {len(plan.probes) - bad} as expected,"
        f" {bad} mismatch{'es' if bad != 1 else ''}, {outcome.seconds:.1f} s"
    )
    return "\n".join(lines) + "\n"


def _grid(outcome: Outcome) -> list[str]:
    """Rows: sources; columns: destinations; cells: expected/observed connects of n."""
    hosts = outcome.plan.hosts
    cells: dict[tuple, list[int]] = {}
    for probe in outcome.plan.probes:
        cell = cells.setdefault((probe.src.key, probe.dst.key), [0, 0, 0, 0])
        cell[0] += probe.expect
        cell[1] += outcome.passed(probe)
        cell[2] += 1
        cell[3] += outcome.passed(probe) != probe.expect
    names = [f"h{i}" for i in range(len(hosts))]
    width = 9
    out = [
        "expected/observed connections of n probes, per source (row) and destination;"
        " ! marks a difference:",
        " " * 6 + "".join(f"{n:>{width}}" for n in names),
    ]
    for i, src in enumerate(hosts):
        row = f"{names[i]:<6}"
        for dst in hosts:
            cell = cells.get((src.key, dst.key))
            text = "." if not cell else f"{cell[0]}/{cell[1]}/{cell[2]}"
            if cell and cell[3]:
                text += "!"
            row += f"{text:>{width}}"
        out.append(row + f"  {src.key}")
    return out

"""Do two matrices allow exactly the same flows?

A flow is (role, direction, protocol, port, source port, address); the address is an
IP address or, for a role peer, the role itself (a reference, never an address).
Both matrices are cut into cells along every port boundary either of them uses;
inside a cell every rule either applies fully or not at all, so comparing the
union of addresses per cell compares every flow. This module shares no code with
the optimizer on purpose: it parses addresses with ipaddress, the optimizer does not.
"""

from __future__ import annotations

import ipaddress
from bisect import bisect_right

from .matrix import Matrix, Rule
from .records import dataclass

FULL = (0, 65535)


@dataclass(frozen=True)
class Flow:
    role: str
    direction: str
    protocol: str  # tcp, udp, or "other" (any protocol but tcp and udp)
    port: int | None
    source_port: int | None
    address: str  # an IP address, or "role:<name>"
    allowed_by: str  # which of the two matrices allows it

    def __str__(self) -> str:
        if self.protocol == "other":
            what = "any protocol but tcp/udp"
        else:
            what = f"{self.protocol}/{self.port}"
            if self.source_port is not None:
                what += f" from port {self.source_port}"
        side = "from" if self.direction == "ingress" else "to"
        return (
            f"{self.role} {self.direction} {what} {side} {self.address}:"
            f" allowed only by the {self.allowed_by} matrix"
        )


class NotEquivalent(Exception):
    def __init__(self, flow: Flow):
        super().__init__(str(flow))
        self.flow = flow


def _dimensions(rule: Rule):
    """(protocol classes, port range, source port range) the rule allows."""
    if rule.protocol == "all":
        return ("tcp", "udp", "other"), FULL, FULL
    return (rule.protocol,), rule.ports or FULL, rule.source_ports or FULL


def _address_space(rule: Rule):
    if rule.peer.role:
        return rule.peer.role, None
    nets = [ipaddress.ip_network(c) for c in rule.peer.cidrs]
    return None, nets


def _cuts(ranges) -> list[int]:
    points = {0, 65536}
    for lo, hi in ranges:
        points.update((lo, hi + 1))
    return sorted(points)


def _cells(cuts: list[int], lo: int, hi: int) -> range:
    return range(bisect_right(cuts, lo) - 1, bisect_right(cuts, hi))


def _normal(spans) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for first, last in sorted(spans):
        if out and first <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], last)
        else:
            out.append([first, last])
    return [tuple(s) for s in out]


def _contains(spans, point) -> bool:
    i = bisect_right(spans, (point, float("inf"))) - 1
    return i >= 0 and spans[i][0] <= point <= spans[i][1]


def _first_difference(a, b) -> tuple[int, bool] | None:
    """Smallest point in exactly one of two normal span lists, and whether in a."""
    if a == b:
        return None
    candidates = sorted({p for s in a + b for p in (s[0], s[1] + 1)})
    for point in candidates:
        in_a, in_b = _contains(a, point), _contains(b, point)
        if in_a != in_b:
            return point, in_a
    return None


def _table(matrix: Matrix, groups: dict, side: int) -> None:
    for rule in matrix.rules:
        protocols, ports, sports = _dimensions(rule)
        role, nets = _address_space(rule)
        for protocol in protocols:
            entry = groups.setdefault(
                (rule.role, rule.direction, protocol), ([], ([], []))
            )
            entry[1][side].append((ports, sports, role, nets))


def first_difference(a: Matrix, b: Matrix) -> Flow | None:
    """A flow allowed by exactly one of the matrices (the smallest), or None."""
    groups: dict = {}
    _table(a, groups, 0)
    _table(b, groups, 1)
    names = ("first", "second")
    for (role, direction, protocol), (_, sides) in sorted(groups.items()):
        entries = sides[0] + sides[1]
        dcuts = _cuts(e[0] for e in entries)
        scuts = _cuts(e[1] for e in entries)
        # cell -> per side: (roles, IPv4 spans, IPv6 spans)
        cells: dict[tuple[int, int], list] = {}
        for side, side_entries in enumerate(sides):
            for ports, sports, peer_role, nets in side_entries:
                for i in _cells(dcuts, *ports):
                    for j in _cells(scuts, *sports):
                        cell = cells.setdefault(
                            (i, j), [(set(), [], []), (set(), [], [])]
                        )[side]
                        if peer_role:
                            cell[0].add(peer_role)
                            continue
                        for net in nets:
                            span = (
                                int(net.network_address),
                                int(net.broadcast_address),
                            )
                            cell[1 if net.version == 4 else 2].append(span)
        for (i, j), (first, second) in sorted(cells.items()):
            port = None if protocol == "other" else dcuts[i]
            # Source ports matter only where some rule names them.
            sport = None if protocol == "other" or len(scuts) == 2 else scuts[j]
            flow = dict(role=role, direction=direction, protocol=protocol)
            only = sorted(first[0] ^ second[0])
            if only:
                side = names[0] if only[0] in first[0] else names[1]
                return Flow(
                    **flow,
                    port=port,
                    source_port=sport,
                    address=f"role:{only[0]}",
                    allowed_by=side,
                )
            for index, version in ((1, 4), (2, 6)):
                found = _first_difference(_normal(first[index]), _normal(second[index]))
                if found:
                    point, in_first = found
                    address = (
                        ipaddress.ip_address(point)
                        if version == 4
                        else ipaddress.IPv6Address(point)
                    )
                    return Flow(
                        **flow,
                        port=port,
                        source_port=sport,
                        address=str(address),
                        allowed_by=names[0] if in_first else names[1],
                    )
    return None


def check_equivalent(raw: Matrix, optimized: Matrix) -> None:
    """Raise NotEquivalent naming the first flow the two matrices disagree on."""
    flow = first_difference(raw, optimized)
    if flow is not None:
        side = {"first": "raw", "second": "optimized"}[flow.allowed_by]
        raise NotEquivalent(Flow(**{**flow.__dict__, "allowed_by": side}))

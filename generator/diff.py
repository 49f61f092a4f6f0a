"""Semantic diff of two matrices: what traffic is opened, closed, widened or narrowed.

Rules are never compared as text. Each (role, direction) pair becomes a set of boxes
in a four-dimensional space (peer, protocol, source port, destination port); two
matrices allow the same traffic exactly when the canonical forms of these sets are
equal, however their rules are split, merged, ordered or worded. Rules are only used
afterwards, to say why a changed piece of traffic existed (purpose, page reference)
and whether the rule behind it went entirely (removed/added) or in part
(narrowed/widened).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from .matrix import DIRECTIONS, ROLES, Matrix, Peer, Rule

# Peer axis: roles are isolated points (a gap between them keeps them from merging),
# then every IPv4 address, then every IPv6 address, each family behind a gap too.
_V4 = 2 * len(ROLES) + 2
_V6 = _V4 + (1 << 32) + 2
PORTS = (0, 65535)
_PROTOCOLS = ("tcp", "udp", "other")  # "other": anything "all" allows beyond tcp/udp
_PROTOCOL_AXIS = {"tcp": (0, 0), "udp": (1, 1), "all": (0, 2)}

KINDS = ("removed", "narrowed", "added", "widened")
BREAKING = frozenset({"removed", "narrowed"})

Box = tuple[tuple[int, int], ...]


# --- the box algebra ------------------------------------------------------------


def _canon(items: list[tuple[Box, object]], dim: int, leaf) -> tuple | None:
    """Canonical form of a union of boxes, each point labelled by leaf(tags).

    items are (box, tag); leaf gets the tags of the boxes holding a point and
    returns its label, or None to leave the point out. The form is a tuple of
    (lo, hi, sub) runs, maximal along each axis, so equal labelled sets give
    equal forms however the boxes were cut.
    """
    if dim == 4:
        return leaf({tag for _, tag in items})
    cuts = sorted({b[dim][0] for b, _ in items} | {b[dim][1] + 1 for b, _ in items})
    runs: list[tuple[int, int, object]] = []
    for lo, nxt in zip(cuts, cuts[1:]):
        inside = [(b, t) for b, t in items if b[dim][0] <= lo and b[dim][1] >= nxt - 1]
        if not inside:
            continue
        sub = _canon(inside, dim + 1, leaf)
        if sub is None:
            continue
        if runs and runs[-1][1] == lo - 1 and runs[-1][2] == sub:
            runs[-1] = (runs[-1][0], nxt - 1, sub)
        else:
            runs.append((lo, nxt - 1, sub))
    return tuple(runs) or None


def region(old: list[Box], new: list[Box], keep) -> tuple | None:
    """The points for which keep(in_old, in_new) holds, in canonical form."""

    def leaf(tags):
        return True if keep(0 in tags, 1 in tags) else None

    return _canon([(b, 0) for b in old] + [(b, 1) for b in new], 0, leaf)


def boxes_of(form: tuple | None) -> list[tuple[Box, object]]:
    """The disjoint boxes of a canonical form with their labels, in axis order."""
    if form is None:
        return []
    out = []
    for lo, hi, sub in form:
        if isinstance(sub, tuple):
            out.extend((((lo, hi),) + box, label) for box, label in boxes_of(sub))
        else:
            out.append((((lo, hi),), sub))
    return out


# --- rules as boxes -------------------------------------------------------------


def peer_intervals(peer: Peer) -> list[tuple[int, int]]:
    if peer.role:
        return [(2 * ROLES.index(peer.role), 2 * ROLES.index(peer.role))]
    out = []
    for text in peer.cidrs:
        net = ipaddress.ip_network(text, strict=False)
        base = _V4 if net.version == 4 else _V6
        out.append((base + int(net.network_address), base + int(net.broadcast_address)))
    return out


def rule_boxes(rule: Rule) -> list[Box]:
    proto = _PROTOCOL_AXIS[rule.protocol]
    if rule.protocol == "all":
        sports = ports = PORTS
    else:
        ports = tuple(rule.ports) if rule.ports else PORTS
        sports = tuple(rule.source_ports) if rule.source_ports else PORTS
    return [(peer, proto, sports, ports) for peer in peer_intervals(rule.peer)]


def _groups(matrix: Matrix) -> dict[tuple[str, str], list[Rule]]:
    groups: dict[tuple[str, str], list[Rule]] = {}
    for rule in matrix.rules:
        groups.setdefault((rule.role, rule.direction), []).append(rule)
    return groups


def traffic(matrix: Matrix) -> dict[tuple[str, str], tuple]:
    """The allowed traffic of each (role, direction), in canonical form."""
    out = {}
    for key, rules in _groups(matrix).items():
        form = region([b for r in rules for b in rule_boxes(r)], [], lambda a, _: a)
        if form is not None:
            out[key] = form
    return out


# --- decoding boxes back into words ---------------------------------------------


@dataclass(frozen=True)
class Piece:
    """Changed traffic: protocol, ports, and the peer at the other end."""

    protocol: str  # tcp, udp, all, or other (what "all" allows beyond TCP and UDP)
    ports: tuple[int, int] | None  # None: every port
    source_ports: tuple[int, int] | None
    peer: Peer

    def to_dict(self) -> dict:
        data = {
            "protocol": self.protocol,
            "ports": list(self.ports) if self.ports else None,
            "peer": self.peer.to_dict(),
        }
        if self.source_ports:
            data["source_ports"] = list(self.source_ports)
        return data


def _merge_intervals(intervals) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(intervals):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(hi, out[-1][1]))
        else:
            out.append((lo, hi))
    return out


def _cidrs(intervals: list[tuple[int, int]]) -> tuple[str, ...]:
    out = []
    for lo, hi in intervals:
        base, cls = (
            (_V4, ipaddress.IPv4Address) if lo < _V6 else (_V6, ipaddress.IPv6Address)
        )
        nets = ipaddress.summarize_address_range(cls(lo - base), cls(hi - base))
        out.extend(str(n) for n in nets)
    return tuple(out)


def _pieces(boxes: list[Box], names: list[str]) -> list[Piece]:
    """Boxes as pieces: one per role, and one for all addresses, per protocol and ports."""
    by_ports: dict[tuple, list[tuple[int, int]]] = {}
    for peer, proto, sports, ports in boxes:
        by_ports.setdefault((proto, sports, ports), []).append(peer)
    out = []
    for (proto, sports, ports), peers in by_ports.items():
        if proto == (0, 2):
            protocols = ["all"]
        else:
            protocols = [_PROTOCOLS[i] for i in range(proto[0], proto[1] + 1)]
        merged = _merge_intervals(peers)
        ends = [Peer(role=ROLES[lo // 2]) for lo, _ in merged if lo < _V4]
        addresses = [iv for iv in merged if iv[0] >= _V4]
        if addresses:
            ends.append(Peer(cidrs=_cidrs(addresses), name="/".join(names) or None))
        for protocol in protocols:
            whole = protocol in ("all", "other")
            for peer in ends:
                out.append(
                    Piece(
                        protocol=protocol,
                        ports=None if whole or ports == PORTS else ports,
                        source_ports=None if whole or sports == PORTS else sports,
                        peer=peer,
                    )
                )
    return sorted(out, key=_piece_order)


def _piece_order(piece: Piece) -> tuple:
    return (
        piece.peer.sort_key(),
        piece.ports or PORTS,
        _PROTOCOLS.index(piece.protocol) if piece.protocol in _PROTOCOLS else -1,
        piece.source_ports or PORTS,
    )


# --- the report -----------------------------------------------------------------


@dataclass
class Change:
    role: str
    direction: str
    kind: str  # removed, narrowed, added, widened
    traffic: list[Piece]
    purposes: list[str]
    references: list[str]
    flows: list[str]

    @property
    def breaking(self) -> bool:
        return self.kind in BREAKING

    def to_dict(self) -> dict:
        return {
            "role": self.role,
            "direction": self.direction,
            "kind": self.kind,
            "breaking": self.breaking,
            "traffic": [p.to_dict() for p in self.traffic],
            "purposes": self.purposes,
            "references": self.references,
            "flows": self.flows,
        }


@dataclass
class Reworded:
    """A rule whose traffic is unchanged but whose purpose or page wording is."""

    old: Rule
    new: Rule


@dataclass
class TrafficDiff:
    changes: list[Change] = field(default_factory=list)
    reworded: list[Reworded] = field(default_factory=list)
    notes_added: list[str] = field(default_factory=list)
    notes_removed: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    @property
    def breaking(self) -> list[Change]:
        return [c for c in self.changes if c.breaking]

    def count(self, kind: str) -> int:
        return sum(1 for c in self.changes if c.kind == kind)


def _unique(values) -> list[str]:
    out: list[str] = []
    for value in values:
        for part in value.split("; "):
            if part and part not in out:
                out.append(part)
    return out


def _explain(
    role: str,
    direction: str,
    kind: str,
    rules: list[Rule],
    other: list[Box],
) -> list[Change]:
    """The traffic `rules` allow and `other` does not, grouped by why it was allowed."""
    boxed = [rule_boxes(r) for r in rules]
    items = [(b, ("rule", i)) for i, bs in enumerate(boxed) for b in bs]
    items += [(b, ("other", 0)) for b in other]

    def leaf(tags):
        if ("other", 0) in tags:
            return None
        return frozenset(i for side, i in tags if side == "rule")

    pieces: dict[frozenset, list[Box]] = {}
    for box, covering in boxes_of(_canon(items, 0, leaf)):
        pieces.setdefault(covering, []).append(box)
    merged: dict[tuple, Change] = {}
    for covering, boxes in pieces.items():
        cover = [rules[i] for i in sorted(covering)]
        # A rule still partly allowed on the other side was cut down (or grown),
        # not dropped (or created).
        partial = any(
            region(boxed[i], other, lambda a, b: a and b) is not None for i in covering
        )
        here = {"removed": "narrowed", "added": "widened"}[kind] if partial else kind
        names = _unique(r.peer.name for r in cover if r.peer.name)
        change = Change(
            role=role,
            direction=direction,
            kind=here,
            traffic=_pieces(boxes, names),
            purposes=_unique(r.purpose for r in cover),
            references=_unique(r.reference for r in cover),
            flows=_unique(f for r in cover for f in r.flow.split("+")),
        )
        # Equal reasons read as one change (a flow's tcp and udp rules, say).
        key = (here, tuple(change.purposes), tuple(change.references))
        if key in merged:
            merged[key].traffic = sorted(
                merged[key].traffic + change.traffic, key=_piece_order
            )
        else:
            merged[key] = change
    return list(merged.values())


def _order(change: Change) -> tuple:
    return (
        ROLES.index(change.role),
        DIRECTIONS.index(change.direction),
        KINDS.index(change.kind),
        _piece_order(change.traffic[0]),
        change.purposes,
    )


def compare(old: Matrix, new: Matrix) -> TrafficDiff:
    """What traffic `new` allows that `old` does not, and the other way round."""
    result = TrafficDiff()
    old_groups, new_groups = _groups(old), _groups(new)
    for role in ROLES:
        for direction in DIRECTIONS:
            before = old_groups.get((role, direction), [])
            after = new_groups.get((role, direction), [])
            old_boxes = [b for r in before for b in rule_boxes(r)]
            new_boxes = [b for r in after for b in rule_boxes(r)]
            result.changes += _explain(role, direction, "removed", before, new_boxes)
            result.changes += _explain(role, direction, "added", after, old_boxes)
    result.changes.sort(key=_order)
    new_by_key = {r.traffic_key(): r for r in new.rules}
    for rule in old.rules:
        twin = new_by_key.get(rule.traffic_key())
        if twin and (twin.purpose, twin.reference) != (rule.purpose, rule.reference):
            result.reworded.append(Reworded(rule, twin))
    result.notes_added = [n for n in new.notes if n not in old.notes]
    result.notes_removed = [n for n in old.notes if n not in new.notes]
    return result

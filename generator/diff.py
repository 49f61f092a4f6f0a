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
from dataclasses import field
from functools import lru_cache

from .matrix import DIRECTIONS, ROLE_TITLES, ROLES, Matrix, Peer, Rule
from .filediff import FileDiff, Side, compare_files  # noqa: F401 (diff.Side is public)
from .optimizer import cidrs_of, merged_intervals
from .records import dataclass

# Peer axis: roles are isolated points (a gap between them keeps them from merging),
# then every IPv4 address, then every IPv6 address, each family behind a gap too.
_V4 = 2 * len(ROLES) + 2
_V6 = _V4 + (1 << 32) + 2
PORTS = (0, 65535)
_PROTOCOLS = ("tcp", "udp", "other")  # "other": anything "all" allows beyond tcp/udp
# "other" is what a live firewall allows beyond TCP and UDP without allowing them too.
_PROTOCOL_AXIS = {"tcp": (0, 0), "udp": (1, 1), "all": (0, 2), "other": (2, 2)}
ADDRESS_BASE = {4: _V4, 6: _V6}  # where each family starts on the peer axis

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
    by_start = sorted(items, key=lambda item: item[0][dim][0])
    runs: list[tuple[int, int, object]] = []
    active: list[tuple[Box, object]] = []
    following = 0
    # A sweep along the axis: every start and end is a cut, so a box that holds a
    # segment's first point holds the whole segment.
    for lo, nxt in zip(cuts, cuts[1:]):
        while following < len(by_start) and by_start[following][0][dim][0] <= lo:
            active.append(by_start[following])
            following += 1
        active = [(b, t) for b, t in active if b[dim][1] >= lo]
        if not active:
            continue
        sub = _canon(active, dim + 1, leaf)
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


def labelled(items: list[tuple[Box, object]], leaf) -> list[tuple[Box, object]]:
    """Disjoint boxes of a union of tagged boxes, each labelled leaf(tags) (None: out)."""
    return boxes_of(_canon(items, 0, leaf))


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
    return [_cidr_interval(text) for text in peer.cidrs]


@lru_cache(maxsize=65536)
def _cidr_interval(text: str) -> tuple[int, int]:
    net = ipaddress.ip_network(text, strict=False)
    base = _V4 if net.version == 4 else _V6
    return (base + int(net.network_address), base + int(net.broadcast_address))


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


def _cidrs(intervals: list[tuple[int, int]]) -> tuple[str, ...]:
    out = []
    for lo, hi in intervals:
        base, version = (_V4, 4) if lo < _V6 else (_V6, 6)
        out.extend(cidrs_of(lo - base, hi - base, version))
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
        merged = merged_intervals(peers)
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


def pieces(boxes: list[Box], names=()) -> list[Piece]:
    """Disjoint boxes as pieces of traffic (the network ACLs' admitted traffic)."""
    return _pieces(boxes, list(names))


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
    # Narrowed/widened: what the same rules allow on both sides (what remains, or
    # what was already allowed); `traffic` is only what was lost or gained.
    kept: list[Piece] = field(default_factory=list)
    # Why a removal is expected (the new page's egress tables drop it), or "".
    expected: str = ""
    site: bool = False  # every rule behind it comes from the profile's site_flows
    paths: list[str] = field(default_factory=list)  # the hops behind its peers

    @property
    def breaking(self) -> bool:
        return self.kind in BREAKING

    def to_dict(self) -> dict:
        return {
            "role": self.role,
            "direction": self.direction,
            "kind": self.kind,
            "breaking": self.breaking,
            "expected": self.expected or None,
            "traffic": [p.to_dict() for p in self.traffic],
            "kept": [p.to_dict() for p in self.kept],
            "purposes": self.purposes,
            "references": self.references,
            "flows": self.flows,
            "site": self.site,
            "paths": self.paths,
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
    # What the upgrade notes of each release line the diff crosses ask for.
    advice: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    @property
    def breaking(self) -> list[Change]:
        return [c for c in self.changes if c.breaking]

    def count(self, kind: str) -> int:
        return sum(1 for c in self.changes if c.kind == kind)

    @property
    def expected(self) -> list[Change]:
        return [c for c in self.changes if c.expected]

    @property
    def unexpected(self) -> list[Change]:
        """Breaking changes the new page's egress tables do not call for."""
        return [c for c in self.breaking if not c.expected]


def _unique(values) -> list[str]:
    out: list[str] = []
    for value in values:
        if value and value not in out:
            out.append(value)
    return out


def _overlap(a: list[Box], b: list[Box]) -> bool:
    """Do two unions of boxes share a point? (Two boxes do when every axis overlaps.)"""
    return any(
        all(x[0] <= y[1] and y[0] <= x[1] for x, y in zip(p, q)) for p in a for q in b
    )


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
        partial = any(_overlap(boxed[i], other) for i in covering)
        both = (
            region([b for i in covering for b in boxed[i]], other, lambda a, b: a and b)
            if partial
            else []
        )
        here = {"removed": "narrowed", "added": "widened"}[kind] if both else kind
        names = _unique(r.peer.name for r in cover if r.peer.name)
        change = Change(
            role=role,
            direction=direction,
            kind=here,
            traffic=_pieces(boxes, names),
            purposes=_unique(r.purpose for r in cover),
            references=_unique(r.reference for r in cover),
            flows=_unique(f for r in cover for f in r.flow.split("+")),
            kept=_pieces([b for b, _ in boxes_of(both)], names),
            site=all(r.site for r in cover),
            paths=_unique(r.via for r in cover if r.via),
        )
        # Equal reasons read as one change (a flow's tcp and udp rules, say).
        key = (here, tuple(change.purposes), tuple(change.references), change.site)
        if key in merged:
            same = merged[key]
            same.traffic = sorted(same.traffic + change.traffic, key=_piece_order)
            same.kept = sorted(
                same.kept + [p for p in change.kept if p not in same.kept],
                key=_piece_order,
            )
        else:
            merged[key] = change
    return list(merged.values())


def merged(missing_from: TrafficDiff, excess_from: TrafficDiff) -> TrafficDiff:
    """The missing traffic of one diff with the excess of another (each compares
    the same old side with a different new one)."""
    changes = [c for c in missing_from.changes if c.kind in ("removed", "narrowed")]
    changes += [c for c in excess_from.changes if c.kind in ("added", "widened")]
    return TrafficDiff(changes=sorted(changes, key=_order))


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
    # Rows the new page's own egress tables drop: their removal is expected.
    stale = {n.split(":")[0] for n in result.notes_added if ": left out," in n}
    for change in result.changes:
        if change.kind == "removed" and change.flows and set(change.flows) <= stale:
            change.expected = _dropped_by(change.flows, new.release_line)
    result.advice = upgrade_advice(old.server_version, new.server_version)
    return result


def _dropped_by(flows: list[str], line: str) -> str:
    from .catalog import load_catalog

    by_id = {f.id: f for f in load_catalog().flows}
    tables = _unique(
        by_id[f].dropped_by(line) for f in flows if f in by_id and by_id[f].obsolete
    )
    where = f" ({'; '.join(tables)})" if tables else ""
    return f"the {line} page's egress tables drop it{where}"


def upgrade_advice(old_version: str, new_version: str) -> list[str]:
    """The upgrade notes' advice of every release line an upgrade enters."""
    from .catalog import load_catalog, version_key

    catalog = load_catalog()
    try:
        start, end = version_key(old_version), version_key(new_version)
    except ValueError:
        return []
    out = []
    for info in catalog.release_lines.values():
        first = version_key(min(info["versions"], key=version_key))
        if info.get("upgrade_advice") and start < first <= end:
            out.append(info["upgrade_advice"])
    return out


# --- both sides: traffic and emitted files --------------------------------------


@dataclass
class Report:
    old: Side
    new: Side
    traffic: TrafficDiff
    files: FileDiff
    acls: TrafficDiff | None = None  # both sides with network ACLs

    @property
    def changed(self) -> bool:
        return (
            self.traffic.changed
            or self.files.any
            or bool(self.acls and self.acls.changed)
        )

    def exit_code(self, fail_on: str | None = None) -> int:
        """terraform plan -detailed-exitcode style: 0 same, 2 changes, 3 when
        --fail-on matches (breaking: any; unexpected: what the page does not expect)."""
        breaking = self.traffic.breaking or (self.acls and self.acls.breaking)
        if fail_on == "breaking" and breaking:
            return 3
        if fail_on == "unexpected" and self.traffic.unexpected:
            return 3
        return 2 if self.changed else 0


def diff(old: Side, new: Side, unified: bool = False) -> Report:
    acls = None
    if old.acls is not None and new.acls is not None:
        acls = compare(old.acls, new.acls)
    return Report(
        old,
        new,
        compare(old.matrix, new.matrix),
        compare_files(old, new, unified),
        acls,
    )


def _acl_text(report: Report) -> list[str]:
    """The network ACLs' changes, as traffic each ACL admits (first match applied)."""
    old, new = report.old.acls is not None, report.new.acls is not None
    if not (old or new):
        return []
    if report.acls is None:
        return ["", f"Network ACLs: only on the {'old' if old else 'new'} side"]
    out = ["", f"Network ACLs: {_summary(report.acls)}"]
    for (role, direction), changes in _grouped(report.acls.changes):
        side = "inbound" if direction == "ingress" else "outbound"
        out.append(f"  {role} {side}")
        for change in changes:
            lines = _traffic_lines(change)
            out.append(f"    {change.kind:<9}{lines[0]}")
            out += [f"    {'':<9}{line}" for line in lines[1:]]
            out += [f"    {'':<11}entry: {p}" for p in change.purposes]
    return out


# --- rendering ------------------------------------------------------------------


def _family_text(intervals: list[tuple[int, int]], base: int, bits: int) -> str:
    """Addresses of one family; a long list reads better as 'everything except'."""
    cidrs = _cidrs(intervals)
    top = base + (1 << bits) - 1
    gaps, at = [], base
    for lo, hi in intervals:
        if lo > at:
            gaps.append((at, lo - 1))
        at = hi + 1
    if at <= top:
        gaps.append((at, top))
    everything = "0.0.0.0/0" if bits == 32 else "::/0"
    if len(cidrs) > 3 and gaps and len(_cidrs(gaps)) < len(cidrs):
        return f"{everything} except {', '.join(_cidrs(gaps))}"
    return ", ".join(cidrs)


def peer_text(peer: Peer) -> str:
    if peer.role:
        return ROLE_TITLES.get(peer.role, peer.role)
    intervals = merged_intervals(peer_intervals(peer))
    parts = []
    v4 = [iv for iv in intervals if iv[0] < _V6]
    v6 = [iv for iv in intervals if iv[0] >= _V6]
    if v4:
        parts.append(_family_text(v4, _V4, 32))
    if v6:
        parts.append(_family_text(v6, _V6, 128))
    addresses = ", ".join(parts)
    return f"{peer.name}: {addresses}" if peer.name else addresses


def piece_text(piece: Piece, direction: str) -> str:
    from .matrix import port_text

    if piece.protocol == "all":
        what = "all traffic"
    elif piece.protocol == "other":
        what = "protocols other than tcp/udp"
    else:
        what = f"{piece.protocol}/{port_text(piece.ports)}"
        if piece.source_ports:
            what += f" (from port {port_text(piece.source_ports)})"
    return (
        f"{what} {'from' if direction == 'ingress' else 'to'} {peer_text(piece.peer)}"
    )


def _grouped(changes: list[Change]):
    groups: dict[tuple[str, str], list[Change]] = {}
    for change in changes:
        groups.setdefault((change.role, change.direction), []).append(change)
    return groups.items()


def _summary(t: TrafficDiff) -> str:
    if not t.changed:
        return "no change: both sides allow exactly the same traffic"
    counts = ", ".join(f"{t.count(k)} {k}" for k in KINDS)
    n = len(t.changes)
    out = f"{n} change{'s' if n != 1 else ''}, {len(t.breaking)} breaking ({counts})"
    site = sum(c.site for c in t.changes)
    if site:
        out += f"; {site} of them site flow changes"
    if t.expected:
        out += (
            f"; {len(t.expected)} removal(s) expected: the new page's egress tables"
            " drop them"
        )
    return out


# How the two halves of a narrowed or widened change are introduced.
_HALVES = {"narrowed": ("lost", "remains"), "widened": ("gained", "before")}


def _traffic_lines(change: Change) -> list[str]:
    """What changed; for a narrowed or widened rule, also what stays the same."""
    lines = [piece_text(p, change.direction) for p in change.traffic]
    if change.kind not in _HALVES:
        return lines
    lost, kept = _HALVES[change.kind]
    out = [f"{lost}: {line}" for line in lines]
    out += [f"{kept}: {piece_text(p, change.direction)}" for p in change.kept]
    return out


def _mark(change: Change) -> str:
    words = ["breaking"] if change.breaking else []
    if change.expected:
        words.append(f"expected: {change.expected}")
    return "; ".join(words)


def _rewordings(t: TrafficDiff) -> tuple[list[Reworded], int]:
    """Rules whose purpose changed, and how many changed only their page reference."""
    purpose = [r for r in t.reworded if r.old.purpose != r.new.purpose]
    return purpose, len(t.reworded) - len(purpose)


def _engine_note(report: Report) -> str:
    old, new = report.old.matrix.stateful, report.new.matrix.stateful
    if old == new:
        return ""
    words = {True: "stateful", False: "stateless"}
    return (
        f"Rule engine: {words[old]} -> {words[new]}; the stateless side lists its"
        " return rules as traffic of their own."
    )


def _refs_only(count: int, more: bool) -> str:
    return f"{'and ' if more else ''}{count} rule(s) with only a new page reference"


def _rule_text(rule: Rule) -> str:
    from .matrix import port_text

    what = (
        "all traffic"
        if rule.protocol == "all"
        else (f"{rule.protocol}/{port_text(rule.ports)}")
    )
    if rule.source_ports:
        what += f" (from port {port_text(rule.source_ports)})"
    side = "from" if rule.direction == "ingress" else "to"
    return f"{rule.role} {rule.direction} {what} {side} {peer_text(rule.peer)}"


def render_text(report: Report) -> str:
    from .matrix import ROLE_TITLES

    t, f = report.traffic, report.files
    out = [
        f"rulegen diff: {report.old.title} -> {report.new.title}",
        f"  old: {report.old.label}",
        f"  new: {report.new.label}",
        "",
        f"Traffic: {_summary(t)}",
    ]
    if _engine_note(report):
        out.append(_engine_note(report))
    out += [f"Upgrade advice: {advice}" for advice in t.advice]
    for (role, direction), changes in _grouped(t.changes):
        out += ["", f"{ROLE_TITLES[role]} - {direction}"]
        for change in changes:
            mark = "  [site]" if change.site else ""
            mark += f"  [{_mark(change)}]" if _mark(change) else ""
            lines = _traffic_lines(change)
            out.append(f"  {change.kind:<9}{lines[0]}{mark}")
            out += [f"  {'':<9}{line}" for line in lines[1:]]
            out += [f"  {'':<11}why: {p}" for p in change.purposes]
            out += [f"  {'':<11}ref: {r}" for r in change.references]
            out += [f"  {'':<11}path: {v}" for v in change.paths]
    purpose, refs_only = _rewordings(t)
    if purpose or refs_only:
        out += ["", f"Same traffic, new wording: {len(t.reworded)} rule(s)"]
        for item in purpose:
            out.append(f"  {_rule_text(item.new)}")
            out.append(f"    was: {item.old.purpose}")
            out.append(f"    now: {item.new.purpose}")
        if refs_only:
            out.append(f"  {_refs_only(refs_only, bool(purpose))}")
    if t.notes_added or t.notes_removed:
        out += ["", "Notes:"]
        out += [f"  + {n}" for n in t.notes_added]
        out += [f"  - {n}" for n in t.notes_removed]
    out += _acl_text(report)
    out += ["", _files_summary(f)]
    for label, paths in (
        ("added", f.added),
        ("removed", f.removed),
        ("changed", f.changed),
    ):
        out += [f"  {label:<8}{p}{_release_mark(f, p)}" for p in paths]
    out += [
        f"  not compared: {target} ({why})" for target, why in sorted(f.skipped.items())
    ]
    for path, text in f.diffs.items():
        out += ["", text.rstrip("\n")]
    return "\n".join(out) + "\n"


def _files_summary(f: FileDiff) -> str:
    if not (f.any or f.unchanged):
        return "Emitted files: none compared"
    if not f.any:
        return f"Emitted files: no change ({f.unchanged} identical)"
    only = (
        f" ({len(f.release_only)} only where they name the server release)"
        if f.release_only
        else ""
    )
    return (
        f"Emitted files: {len(f.changed)} changed{only}, {len(f.added)} added,"
        f" {len(f.removed)} removed, {f.unchanged} identical"
    )


def _release_mark(f: FileDiff, path: str) -> str:
    return " (only the server release it names)" if path in f.release_only else ""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(report: Report) -> str:
    from .matrix import ROLE_TITLES

    t, f = report.traffic, report.files
    out = [
        f"### rulegen diff: {report.old.title} -> {report.new.title}",
        "",
        f"**Traffic: {_summary(t)}**",
    ]
    if _engine_note(report):
        out += ["", _engine_note(report)]
    for advice in t.advice:
        out += ["", f"> **Upgrade advice:** {_cell(advice)}"]
    for (role, direction), changes in _grouped(t.changes):
        out += ["", f"#### {ROLE_TITLES[role]} - {direction}", ""]
        out += ["| change | traffic | purpose | page reference |", "|---|---|---|---|"]
        for change in changes:
            kind = f"**{change.kind}**" if change.breaking else change.kind
            if _mark(change):
                kind += f" ({_mark(change)})"
            kind += " (site)" if change.site else ""
            cells = [
                kind,
                "<br>".join(_cell(line) for line in _traffic_lines(change)),
                "<br>".join(
                    [_cell(p) for p in change.purposes]
                    + [_cell(f"path: {v}") for v in change.paths]
                ),
                "<br>".join(_cell(r) for r in change.references),
            ]
            out.append("| " + " | ".join(cells) + " |")
    purpose, refs_only = _rewordings(t)
    if purpose or refs_only:
        out += [
            "",
            "<details><summary>Same traffic, new wording:"
            f" {len(t.reworded)} rule(s)</summary>",
            "",
        ]
        for item in purpose:
            out.append(
                f'- {_cell(_rule_text(item.new))}: was "{_cell(item.old.purpose)}",'
                f' now "{_cell(item.new.purpose)}"'
            )
        if refs_only:
            out.append(f"- {_refs_only(refs_only, bool(purpose))}")
        out += ["", "</details>"]
    if t.notes_added or t.notes_removed:
        out += ["", "Notes:", ""]
        out += [f"- new: {n}" for n in t.notes_added]
        out += [f"- gone: {n}" for n in t.notes_removed]
    out += ["", f"**{_files_summary(f)}**"]
    if f.any or f.skipped:
        out.append("")
    for label, paths in (
        ("added", f.added),
        ("removed", f.removed),
        ("changed", f.changed),
    ):
        out += [f"- {label}: `{p}`{_release_mark(f, p)}" for p in paths]
    out += [
        f"- not compared: {target} ({why})" for target, why in sorted(f.skipped.items())
    ]
    for path, text in f.diffs.items():
        out += ["", f"<details><summary><code>{path}</code></summary>", ""]
        out += ["```diff", text.rstrip("\n"), "```", "", "</details>"]
    return "\n".join(out) + "\n"


def report_dict(report: Report) -> dict:
    t, f = report.traffic, report.files

    def side(s: Side) -> dict:
        m = s.matrix
        return {
            "label": s.label,
            "kind": s.kind,
            "profile": m.profile,
            "server_version": m.server_version,
            "release_line": m.release_line,
            "stateful": m.stateful,
        }

    return {
        "format": 1,
        "old": side(report.old),
        "new": side(report.new),
        "traffic_changed": t.changed,
        "breaking": bool(t.breaking),
        "counts": {k: t.count(k) for k in KINDS},
        "changes": [c.to_dict() for c in t.changes],
        "reworded": [
            {"old": r.old.to_dict(), "new": r.new.to_dict()} for r in t.reworded
        ],
        "notes": {"added": t.notes_added, "removed": t.notes_removed},
        "upgrade_advice": t.advice,
        "network_acls": (
            [c.to_dict() for c in report.acls.changes] if report.acls else None
        ),
        "files": {
            "added": f.added,
            "removed": f.removed,
            "changed": f.changed,
            "release_only": f.release_only,
            "unchanged": f.unchanged,
            "not_compared": dict(sorted(f.skipped.items())),
            "diffs": f.diffs,
        },
    }


def render(report: Report, fmt: str) -> str:
    if fmt == "json":
        import json

        return json.dumps(report_dict(report), indent=2) + "\n"
    return {"text": render_text, "markdown": render_markdown}[fmt](report)

"""Ordered rule lists evaluated over the diff's flow space, and read back as rules.

A match is a product of interval lists along the diff's four axes (peer address,
protocol, source port, destination port). The protocol axis is the diff's (0 tcp,
1 udp, 2 anything else) plus 3 for ICMP, which the page has no flows for: on the
ICMP protocol the destination port axis holds the ICMP type (0-255), and ICMP is
compared by type apart from the matrix (audit: against the host essentials and the
profile's all-protocol rules). Evaluation is one sweep (`diff.labelled`): every
point of the space gets the set of rules that match it, and a platform's
`decide(tags)` says which rule's verdict wins there.
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from functools import lru_cache

from ..diff import ADDRESS_BASE, labelled
from ..matrix import Peer, Rule
from ..optimizer import cidrs_of, merged_intervals
from ..records import dataclass

TCP, UDP, OTHER, ICMP = 0, 1, 2, 3
PROTOCOLS = [(TCP, ICMP)]
PORTS = [(0, 65535)]
ICMP_TYPES = [(0, 255)]  # on the ICMP protocol, the destination port axis: the type
# ICMP types by name (iptables', nftables' and rulegen's spellings), per family.
ICMP_NAMES = {
    4: {
        "echo-reply": 0,
        "pong": 0,
        "destination-unreachable": 3,
        "source-quench": 4,
        "redirect": 5,
        "echo-request": 8,
        "ping": 8,
        "router-advertisement": 9,
        "router-solicitation": 10,
        "time-exceeded": 11,
        "ttl-exceeded": 11,
        "parameter-problem": 12,
        "timestamp-request": 13,
        "timestamp-reply": 14,
        "info-request": 15,
        "info-reply": 16,
        "address-mask-request": 17,
        "address-mask-reply": 18,
    },
    6: {
        "destination-unreachable": 1,
        "packet-too-big": 2,
        "time-exceeded": 3,
        "ttl-exceeded": 3,
        "parameter-problem": 4,
        "echo-request": 128,
        "ping": 128,
        "echo-reply": 129,
        "pong": 129,
        "mld-listener-query": 130,
        "mld-listener-report": 131,
        "mld-listener-done": 132,
        "mld-listener-reduction": 132,
        "router-solicitation": 133,
        "nd-router-solicit": 133,
        "router-advertisement": 134,
        "nd-router-advert": 134,
        "neighbour-solicitation": 135,
        "neighbor-solicitation": 135,
        "nd-neighbor-solicit": 135,
        "neighbour-advertisement": 136,
        "neighbor-advertisement": 136,
        "nd-neighbor-advert": 136,
        "redirect": 137,
        "nd-redirect": 137,
        "router-renumbering": 138,
        "mld2-listener-report": 143,
    },
}
FAMILY_SPACE = {
    4: (ADDRESS_BASE[4], ADDRESS_BASE[4] + (1 << 32) - 1),
    6: (ADDRESS_BASE[6], ADDRESS_BASE[6] + (1 << 128) - 1),
}
# Loopback never reaches the network: left out of every comparison.
LOOPBACK = ("127.0.0.0/8", "::1/128")

Intervals = list[tuple[int, int]]


def family_space(families) -> Intervals:
    return [FAMILY_SPACE[f] for f in sorted(families)]


def address_intervals(text: str) -> Intervals:
    """One address, CIDR or netmask form as an interval of the peer axis."""
    return list(_interval(text.strip()))


@lru_cache(maxsize=65536)
def _interval(text: str) -> tuple:
    net = ipaddress.ip_network(text, strict=False)
    base = ADDRESS_BASE[net.version]
    return ((base + int(net.network_address), base + int(net.broadcast_address)),)


def range_intervals(first: str, last: str) -> Intervals:
    a, b = ipaddress.ip_address(first.strip()), ipaddress.ip_address(last.strip())
    if a.version != b.version or int(a) > int(b):
        raise ValueError(f"{first}-{last} is not an address range")
    base = ADDRESS_BASE[a.version]
    return [(base + int(a), base + int(b))]


def icmp_type(text, family: int) -> int:
    """An ICMP type by number or name; Unknown when it is neither."""
    word = str(text).strip().lower()
    if word.isdigit() and int(word) <= 255:
        return int(word)
    if word in ICMP_NAMES[family]:
        return ICMP_NAMES[family][word]
    raise Unknown(f"ICMP type {str(text)[:40]!r} is not known")


def icmp_type_text(types: tuple[int, int], family: int) -> str:
    """An interval of ICMP types in words: a name where there is one."""
    if tuple(types) == ICMP_TYPES[0]:
        return "every type"
    names = {}
    for name, number in ICMP_NAMES[family].items():
        names.setdefault(number, name)  # the first spelling listed
    lo, hi = types
    if lo == hi:
        return names.get(lo, f"type {lo}")
    return f"types {lo}-{hi}"


def intersect(a: Intervals, b: Intervals) -> Intervals:
    a, b = merged_intervals(a), merged_intervals(b)
    out, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if lo <= hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def subtract(a: Intervals, b: Intervals) -> Intervals:
    out = []
    b = merged_intervals(b)
    for lo, hi in merged_intervals(a):
        at = lo
        for blo, bhi in b:
            if bhi < at or blo > hi:
                continue
            if blo > at:
                out.append((at, blo - 1))
            at = max(at, bhi + 1)
        if at <= hi:
            out.append((at, hi))
    return out


@dataclass
class Match:
    """Per axis, the intervals a rule matches; never=True when it matches nothing."""

    peer: Intervals
    proto: Intervals
    sport: Intervals
    dport: Intervals

    def restrict(self, axis: str, values: Intervals, negate: bool = False) -> None:
        current = getattr(self, axis)
        setattr(
            self,
            axis,
            subtract(current, values) if negate else intersect(current, values),
        )

    @property
    def empty(self) -> bool:
        return not (self.peer and self.proto and self.sport and self.dport)

    def boxes(self) -> list[tuple]:
        if self.empty:
            return []
        return [
            (p, q, s, d)
            for p in merged_intervals(self.peer)
            for q in merged_intervals(self.proto)
            for s in merged_intervals(self.sport)
            for d in merged_intervals(self.dport)
        ]


def full_match(families) -> Match:
    return Match(family_space(families), list(PROTOCOLS), list(PORTS), list(PORTS))


def evaluate(
    matches: list[Match], decide, families=(4, 6)
) -> list[tuple[tuple, object]]:
    """Disjoint boxes where decide(frozenset of matching rule indices) gives a label.

    Labels are ints or strings, never tuples (the canonical form nests tuples).

    Points no rule matches are decided too (with an empty set), so a policy or an
    implied rule can allow them.
    """
    items = [(box, i) for i, m in enumerate(matches) for box in m.boxes()]
    items += [(box, -1) for box in full_match(families).boxes()]  # the whole space
    cache: dict = {}

    def leaf(tags):
        key = frozenset(t for t in tags if t >= 0)
        if key not in cache:
            cache[key] = decide(key)
        return cache[key]

    return labelled(items, leaf)


def _peer(intervals: Intervals) -> Peer:
    cidrs = []
    for lo, hi in merged_intervals(intervals):
        version = 4 if lo < ADDRESS_BASE[6] else 6
        base = ADDRESS_BASE[version]
        cidrs += cidrs_of(lo - base, hi - base, version)
    return Peer(cidrs=tuple(cidrs))


LOOPBACK_SPACE = [iv for text in LOOPBACK for iv in address_intervals(text)]


def to_rules(
    role: str,
    direction: str,
    boxes: list[tuple[tuple, object]],
    describe,
    families=(4, 6),
) -> tuple[list[Rule], dict[object, Intervals]]:
    """Allowed boxes as matrix rules, one per live rule and ports, and by label the
    ICMP allowed: (peer interval, type interval) boxes.

    describe(label) -> (purpose, reference): the live rule that allows the box.
    Loopback and families the export does not cover are left out.
    """
    space = subtract(family_space(families), LOOPBACK_SPACE)
    grouped: dict[tuple, Intervals] = {}
    icmp: dict[object, list] = {}
    for (peer, proto, sport, dport), label in boxes:
        peers = intersect([peer], space)
        if not peers:
            continue
        for protocol in range(proto[0], proto[1] + 1):
            if protocol == ICMP:
                for types in intersect([dport], ICMP_TYPES):
                    icmp.setdefault(label, []).extend((p, types) for p in peers)
                continue
            whole = protocol == OTHER
            key = (
                label,
                ("tcp", "udp", "other")[protocol],
                None if whole or dport == PORTS[0] else dport,
                None if whole or sport == PORTS[0] else sport,
            )
            grouped.setdefault(key, []).extend(peers)
    rules = []
    for (label, protocol, ports, sports), peers in grouped.items():
        purpose, reference = describe(label)
        rules.append(
            Rule(
                role=role,
                direction=direction,
                protocol=protocol,
                ports=ports,
                source_ports=sports,
                peer=_peer(peers),
                purpose=purpose,
                reference=reference,
                flow="",
            )
        )
    return rules, icmp


def cidrs(intervals: Intervals) -> tuple[str, ...]:
    return _peer(intervals).cidrs


def peer_text(intervals: Intervals, name: str | None = None) -> str:
    """Addresses for people: a long list reads as 'everything except'. Loopback,
    left out of every comparison, is no exception worth printing when the
    addresses on both sides of it are in the list."""
    from ..diff import peer_text as text

    intervals = list(intervals)
    for lo, hi in LOOPBACK_SPACE:
        if intersect(intervals, [(lo - 1, lo - 1)]) and intersect(
            intervals, [(hi + 1, hi + 1)]
        ):
            intervals.append((lo, hi))
    return text(Peer(cidrs=_peer(intervals).cidrs, name=name))


def run_chain(entries, chain, ordered):
    """(verdict, label) of one chain for a point matched by the `ordered` entries.

    entries[i] has .chain, .action (accept, drop, return, jump, goto, continue) and
    .target; the verdict is accept or drop with the deciding entry's index, or
    return (the chain ran out, or RETURN) for the caller or the policy to decide,
    with the index of the last RETURN taken (None if none): when the policy then
    accepts, that RETURN is the rule that let the packet through.

    Chains nest as deep as the export makes them (iptables-legacy loads a chain
    nested hundreds deep): a stack of frames, not recursion, and no depth limit, so
    an ACCEPT at the end of the deepest chain is found. The readers refuse jumps in
    a loop before anything is evaluated.
    """
    by_chain: dict[str, list[int]] = {}
    for index in ordered:
        by_chain.setdefault(entries[index].chain, []).append(index)
    stack = [[chain, 0]]  # each frame: its chain, and where it is in that chain
    last = None
    while stack:
        frame = stack[-1]
        name, at = frame
        mine = by_chain.get(name, ())
        called = False
        while at < len(mine):
            index = mine[at]
            at += 1
            entry = entries[index]
            if entry.action in ("accept", "drop"):
                return entry.action, index
            if entry.action == "return":
                last = index
                break
            if entry.action == "jump":
                frame[1] = at
                stack.append([entry.target, 0])
                called = True
                break
            if entry.action == "goto":  # its chain returns for this one's caller
                stack[-1] = [entry.target, 0]
                called = True
                break
        if not called:
            stack.pop()  # ran out, or RETURN: back to the caller, after its jump
    return "return", last


def reachable_chains(entries, roots, where: str) -> set[str]:
    """The chains a packet can reach from `roots` through jumps and gotos; ReadError
    on a loop (which neither iptables nor nft loads), naming its chains."""
    from . import ReadError

    targets: dict[str, list[str]] = {}
    for e in entries:
        if e.target:
            targets.setdefault(e.chain, []).append(e.target)
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in roots:
        if root in state:
            continue
        path, stack = [root], [iter(targets.get(root, ()))]
        state[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                loop = path[path.index(nxt) :] + [nxt]
                raise ReadError(
                    [f"{where}: chains jump in a loop: {' -> '.join(loop)}"]
                )
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(targets.get(nxt, ())))
    return set(state)


def icmp_finding(role, direction, where, what, boxes):
    """ICMP a live rule allows: (peer interval, type interval) boxes, which audit
    compares by type with what the profile allows."""
    from . import Finding

    side = "from" if direction == "ingress" else "to"
    boxes = tuple(sorted(set(boxes)))
    return Finding(
        role,
        where,
        what,
        f"ICMP {side} {peer_text([peer for peer, _ in boxes])}",
        direction=direction,
        icmp=boxes,
    )


def icmp_beyond(boxes, covered) -> list[tuple[tuple[int, int], Intervals]]:
    """(type interval, peer intervals) of the ICMP `boxes` allow and `covered` does
    not; both are (peer interval, type interval) boxes."""
    edges = {0, 256}
    for _, (lo, hi) in list(boxes) + list(covered):
        edges.update((lo, hi + 1))
    cuts = sorted(e for e in edges if 0 <= e <= 256)
    out: list[tuple[tuple[int, int], Intervals]] = []
    for lo, nxt in zip(cuts, cuts[1:]):
        hi = nxt - 1

        def peers(items):
            return [p for p, (a, b) in items if a <= lo and hi <= b]

        left = subtract(peers(boxes), peers(covered))
        if not left:
            continue
        if out and out[-1][0][1] == lo - 1 and out[-1][1] == left:
            out[-1] = ((out[-1][0][0], hi), left)
        else:
            out.append(((lo, hi), left))
    return out


class Unknown(Exception):
    """A construct a reader cannot evaluate; its rule is reported and not matched."""


def local_match(local: Intervals, values: Intervals, negate: bool) -> bool:
    """Does a match on the host's own address (the role's subnets: `local`) hold?

    Loopback addresses never are the address of a flow from or to the network.
    """
    if values and not subtract(values, LOOPBACK_SPACE):
        return negate
    inside = intersect(local, values)
    if local and inside == merged_intervals(local):
        return not negate
    if local and not inside:
        return negate
    raise Unknown(
        "depends on this host's address, which the role's subnets do not settle"
    )


def subnet_space(profile, role: str) -> Intervals:
    """A role's subnets as intervals of the peer axis (empty when none are listed)."""
    return [iv for c in profile.subnets.get(role, ()) for iv in address_intervals(c)]


def profile_ipv6(profile) -> bool:
    return any(":" in c for nets in profile.subnets.values() for c in nets)


class Assembly:
    """The model a reader assembles from its records: rules, findings and notes."""

    def __init__(self):
        self.rules: list[Rule] = []
        self.also: list[Rule] = []  # what passes only for INVALID/UNTRACKED packets
        self.unknown: list = []
        self.icmp: list = []  # Findings: the ICMP each live rule allows
        self.notes: list[str] = []

    def unknown_once(self, finding) -> None:
        if finding not in self.unknown:
            self.unknown.append(finding)

    def allowed(self, role, direction, boxes, describe, families, odd=False) -> None:
        """The allowed boxes as rules of the matrix; ICMP apart, compared by audit.
        `odd`: what passes for a packet conntrack calls INVALID or UNTRACKED (see
        ChainEntry), which only adds to the excess."""
        rules, icmp = to_rules(role, direction, boxes, describe, families)
        (self.also if odd else self.rules).extend(rules)
        for label, found in icmp.items():
            what, at = describe(label)
            self.icmp.append(icmp_finding(role, direction, at, what, found))

    def live(self, profile, cloud: str, roles, families, stateful: bool = True):
        from . import Live
        from ..matrix import Matrix

        matrix = Matrix(
            profile=profile.name,
            server_version=profile.server_version,
            release_line="live",
            cloud=cloud,
            stateful=stateful,
            rules=tuple(self.rules),
        )
        return Live(
            matrix=matrix,
            also=replace(matrix, rules=tuple(self.also)) if self.also else None,
            roles=tuple(roles),
            families=tuple(families),
            stateful=stateful,
            unknown=self.unknown,
            icmp=self.icmp,
            notes=self.notes,
        )


# --- host firewalls (iptables, nftables): chains of entries -------------------


@dataclass
class ChainEntry:
    """One rule of a host firewall's chain, with the match it makes in the flow space."""

    chain: str
    where: str  # file:line, or file: table ... handle
    text: str
    match: Match
    action: str = "continue"  # accept, drop, return, jump, goto, continue
    target: str | None = None
    replies: bool = False  # an ESTABLISHED packet of any flow matches it
    state_new: bool = True  # conntrack state NEW passes its state match
    state_reply: bool = True  # ESTABLISHED passes its state match
    # INVALID or UNTRACKED passes its state match: a packet of no known connection
    # (an out-of-window TCP segment, one the raw table exempts from tracking), which
    # any flow can send; odd_match is what the entry matches of such packets.
    state_odd: bool = True
    odd_match: Match | None = None
    unknown: str | None = None


def never() -> Match:
    return Match([], [], [], [])


def settle(entry: ChainEntry, family: int, read_matches) -> ChainEntry:
    """The entry once read_matches() has read its matches into entry.match.

    A new connection's packet is matched only when every match holds and its state
    match lets NEW through; a rule that matches every ESTABLISHED packet carries
    replies. A construct that cannot be evaluated makes the entry match nothing.
    """
    try:
        holds = read_matches()
        entry.replies = (
            holds and entry.state_reply and entry.match == full_match((family,))
        )
        entry.odd_match = entry.match if holds and entry.state_odd else never()
        if not (holds and entry.state_new):
            entry.match = never()
    except Unknown as exc:
        entry.unknown = str(exc)
        entry.match = entry.odd_match = never()
    return entry


def odd_matches(entries, reachable) -> list[Match] | None:
    """The entries' matches for INVALID/UNTRACKED packets, where any entry of a
    reachable chain treats them apart from a new connection's; else None."""
    odd = [e.odd_match if e.chain in reachable else never() for e in entries]
    new = [e.match if e.chain in reachable else never() for e in entries]
    return odd if odd != new else None


def odd_only(new: list[Match], odd: list[Match], decide, families):
    """Boxes allowed for an INVALID/UNTRACKED packet where a new connection's is
    not: both evaluated in one sweep (the odd matches after the new ones)."""
    count = len(new)

    def only(tags):
        if decide(frozenset(t for t in tags if t < count)) is not None:
            return None
        return decide(frozenset(t - count for t in tags if t >= count))

    return evaluate(new + odd, only, families)


def odd_describe(describe):
    """What allows a packet conntrack calls INVALID or UNTRACKED, said so."""

    def said(label):
        purpose, reference = describe(label)
        return f"{purpose} (a packet of no connection: INVALID or UNTRACKED)", reference

    return said


class HostSide:
    """What a host firewall's matches say of a packet at one hook: the peer's
    address, the host's own (settled from the role's subnets) and its interface.

    Direction "forward" is a new connection reaching a container through DNAT,
    from the peer, by its original destination port: where it lands (the
    container's address and port, its bridge) is not known, so a match on them is
    `uncertain`: it holds for a rule that lets the packet on (accept, return, a
    jump), never for a drop, so that what may be let through is reported."""

    def __init__(self, direction: str, family: int, local: Intervals, interface):
        self.direction, self.family = direction, family
        self.local = local  # the role's own addresses, intervals of this family
        self.interface = interface
        self.uncertain = False

    @property
    def forward(self) -> bool:
        return self.direction == "forward"

    def landing(self) -> bool:
        """A match on where a DNAT'd packet lands: uncertain, see the class."""
        return self.unsure()

    def unsure(self) -> bool:
        """A match that may or may not hold: held for a rule that lets the packet
        on, never for a drop (see finish)."""
        self.uncertain = True
        return True

    def finish(self, entry: ChainEntry) -> ChainEntry:
        """A drop whose match is uncertain is taken as never matching."""
        if self.uncertain and entry.action == "drop":
            entry.match = entry.odd_match = never()
        self.uncertain = False
        return entry

    def states(self, entry: ChainEntry, states: set[str], negate: bool) -> bool:
        """A conntrack state match (upper-case names): which packets pass it."""
        if not self.forward and not negate and states & {"DNAT", "SNAT"}:
            raise Unknown(
                f"state {','.join(sorted(states & {'DNAT', 'SNAT'}))}: which"
                " connections the nat table redirects to this host is not evaluated"
            )
        new = {"NEW", "DNAT"} if self.forward else {"NEW"}
        entry.state_new &= bool(new & states) != negate
        entry.state_reply &= ("ESTABLISHED" in states) != negate
        entry.state_odd &= bool({"INVALID", "UNTRACKED"} & states) != negate
        return True

    def address(self, m: Match, peer: bool, values: Intervals, negate) -> bool:
        if peer:
            m.restrict("peer", values, negate)
            return True
        if self.forward:
            return self.landing()
        return local_match(self.local, values, negate)

    def interface_match(self, names: list[str], wildcard: str, negate) -> bool:
        if names == ["lo"]:
            return negate  # traffic from the network never comes over loopback
        if self.interface is None and self.forward:
            return self.landing()  # the uplink it came in by is not known either
        if self.interface is None:
            raise Unknown(
                f"interface {','.join(names)}: pass --interface to say which one the host uses"
            )
        hit = any(
            (
                self.interface.startswith(n[:-1])
                if n.endswith(wildcard)
                else self.interface == n
            )
            for n in names
        )
        return hit != negate


def chain_findings(out: Assembly, role, entries, reachable) -> None:
    """Entries of chains a packet reaches that the reader could not evaluate."""
    from . import Finding

    for e in entries:
        if e.unknown and e.chain in reachable:
            out.unknown_once(
                Finding(role, e.where, e.text, e.unknown + "; assumed not to match")
            )


def replies_pass(entries, reachable, decide) -> bool:
    """Replies: an ESTABLISHED packet, of any flow, through the rules that match
    every such packet (a state match, or none, and nothing else)."""
    ordered = frozenset(
        i for i, e in enumerate(entries) if e.replies and e.chain in reachable
    )
    return decide(ordered) is not None

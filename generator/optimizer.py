"""Optimizer: the smallest rule matrix that allows exactly the same traffic.

Between planner and emitters. Four rewrites, the last three repeated while they
change anything (at most eight passes):

- collapse the CIDRs of every peer (overlapping and adjacent blocks become one);
- drop a rule that another rule of the same role and direction covers entirely
  (reported as shadowed);
- merge the port ranges of rules that differ only in adjacent or overlapping ports;
- drop a CIDR that another rule of the same traffic already allows (peers keep
  their names, so rule names stay stable).

A role peer and a CIDR peer are never merged nor compared: a role is addressed by
reference (an AWS security group), which no list of addresses replaces. A site rule
(from the profile's site_flows) never merges with a page rule nor thins or shadows
one, so the page's rules keep their names whatever site flows are added.
`generator.equivalence` checks the result independently.
"""

from __future__ import annotations

import ipaddress
from bisect import bisect_left, bisect_right
from dataclasses import field, replace
from functools import lru_cache
from itertools import accumulate, compress, count, islice, repeat
from operator import add, gt, itemgetter, le, sub

from .addresses import LONG, plain_v4
from .matrix import Matrix, Peer, Rule
from .paths import join_via
from .records import dataclass

FULL = (0, 65535)
ALL_PROTOCOLS = frozenset({"tcp", "udp", "other"})


@dataclass
class OptimizeReport:
    """What the optimizer did: rules and addresses before and after, and why."""

    raw_rules: int
    rules: int = 0
    addresses_before: int = 0
    addresses_after: int = 0
    shadowed: list[tuple[str, str]] = field(default_factory=list)
    merged: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    deduplicated: list[tuple[str, int]] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return (self.raw_rules, self.addresses_before) != (
            self.rules,
            self.addresses_after,
        ) or bool(self.shadowed or self.merged or self.deduplicated)

    def lines(self) -> list[str]:
        """What the optimizer did; nothing when it changed nothing."""
        if not self.changed:
            return []
        out = [
            f"optimized: {self.raw_rules} rules -> {self.rules},"
            f" {self.addresses_before} addresses -> {self.addresses_after}"
        ]
        out += [f"shadowed: {name} (covered by {by})" for name, by in self.shadowed]
        out += [f"merged: {', '.join(old)} -> {new}" for new, old in self.merged]
        out += [
            f"deduplicated: {name} (-{n} addresses allowed by another rule)"
            for name, n in self.deduplicated
        ]
        return out


def optimize(matrix: Matrix) -> tuple[Matrix, OptimizeReport]:
    report = OptimizeReport(raw_rules=len(matrix.rules))
    report.addresses_before = _address_count(matrix.rules)
    cache: dict[tuple[str, ...], tuple[tuple[str, ...], tuple]] = {}
    # A total order first, so that of two rules allowing the same traffic the same
    # one survives whatever order the matrix came in.
    rules = sorted(
        (_collapsed(r, cache) for r in matrix.rules),
        key=lambda r: (r.sort_key(), r.flow, r.purpose, r.reference, r.obsolete),
    )
    # Each pass only removes rules or addresses; a pass that thins a rule's addresses
    # may let the next one find it shadowed, so stop only when nothing changed.
    for _ in range(8):
        before = sorted(rules, key=Rule.sort_key)
        rules = _drop_shadowed(rules, cache, report)
        rules = _merge_ports(rules, report)
        rules = _dedupe_addresses(rules, cache, report)
        if sorted(rules, key=Rule.sort_key) == before:
            break
    rules.sort(key=Rule.sort_key)
    names = [r.name for r in rules]
    if len(set(names)) != len(names):  # emitters key resources by name
        raise AssertionError(f"optimizer made duplicate rule names: {names}")
    report.rules = len(rules)
    report.addresses_after = _address_count(rules)
    return replace(matrix, rules=tuple(rules)), report


def _address_count(rules) -> int:
    return sum(len(r.peer.cidrs) for r in rules)


# --- addresses as integer intervals -------------------------------------------
# ipaddress.collapse_addresses is exact but slow on 10,000 entries; the same
# result from sorted integer intervals takes a fraction of the time (tests
# compare the two).


# Each pass of the optimizer reads the same blocks again: each is parsed once.
@lru_cache(maxsize=1 << 16)
def parse_cidr(text: str) -> tuple[int, int, int]:
    """(version, first, last) of a CIDR block."""
    if ":" not in text:
        addr, _, plen = text.partition("/")
        a, b, c, d = addr.split(".")
        first = (int(a) << 24) | (int(b) << 16) | (int(c) << 8) | int(d)
        size = 1 << (32 - int(plen or 32))
        return 4, first, first + size - 1
    net = ipaddress.ip_network(text)
    return 6, int(net.network_address), int(net.broadcast_address)


def merged_intervals(spans) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for first, last in sorted(spans):
        if out and first <= out[-1][1] + 1:
            if last > out[-1][1]:
                out[-1][1] = last
        else:
            out.append([first, last])
    return [(a, b) for a, b in out]


def cidrs_of(first: int, last: int, version: int) -> list[str]:
    return [
        cidr_text(start, plen, version) for start, plen in blocks(first, last, version)
    ]


def blocks(first: int, last: int, version: int) -> list[tuple[int, int]]:
    """(first address, prefix length) of the fewest CIDR blocks that make up first-last."""
    bits = 32 if version == 4 else 128
    out = []
    while first <= last:
        # The largest aligned block starting at first that stays within last.
        size = min(
            first & -first or 1 << bits, 1 << (last - first + 1).bit_length() - 1
        )
        out.append((first, bits - size.bit_length() + 1))
        first += size
    return out


def cidr_text(first: int, plen: int, version: int) -> str:
    if version == 4:
        return f"{first >> 24}.{(first >> 16) & 255}.{(first >> 8) & 255}.{first & 255}/{plen}"
    return f"{ipaddress.IPv6Address(first)}/{plen}"


# The optimizer, the quota chunking and the emitters collapse the same long lists:
# each is parsed once per process. Bounded, as a long-lived process sees many lists.
_COLLAPSED: dict[tuple[str, ...], tuple] = {}
_COLLAPSED_MAX = 256
# The same lists' blocks, as (first, last, position) per family (see _spans).
_SPANS: dict[tuple[str, ...], tuple[list, list]] = {}


def collapse(cidrs) -> tuple[tuple[str, ...], tuple]:
    """Collapsed CIDRs (IPv4 first, each sorted) and their intervals per version."""
    key = tuple(cidrs)
    found = _COLLAPSED.get(key)
    if found is None:
        *found, spans = _collapse(key)
        found = tuple(found)
        if len(_COLLAPSED) >= _COLLAPSED_MAX:
            _COLLAPSED.clear()
            _SPANS.clear()
        # Collapsing a collapsed list changes nothing: remember both.
        _COLLAPSED[key] = _COLLAPSED[found[0]] = found
        _SPANS[found[0]] = spans
    return found


def _collapse(cidrs: tuple[str, ...]) -> tuple[tuple[str, ...], tuple, tuple]:
    """(collapsed CIDRs, their intervals per version, their blocks per version as
    sorted (first, last, position) lists)."""
    if len(cidrs) >= LONG:
        found = _collapse_plain_v4(cidrs)
        if found is not None:
            return found
    spans: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
    for text in cidrs:
        version, first, last = parse_cidr(text)
        spans[version].append((first, last))
    merged = (tuple(merged_intervals(spans[4])), tuple(merged_intervals(spans[6])))
    out: list[str] = []
    blocks_of: tuple[list, list] = ([], [])
    for version, intervals, found in zip((4, 6), merged, blocks_of):
        bits = 32 if version == 4 else 128
        for first, last in intervals:
            for start, plen in blocks(first, last, version):
                found.append((start, start + (1 << bits - plen) - 1, len(out)))
                out.append(cidr_text(start, plen, version))
    return tuple(out), merged, blocks_of


def _collapse_plain_v4(cidrs: tuple[str, ...]) -> tuple | None:
    """What _collapse returns, when every CIDR is an IPv4 block written as cidr_text
    writes it; None otherwise. Blocks that touch no other stay as they were written
    (the text cidr_text would write), only the runs that join are written anew."""
    plain = _plain_v4(cidrs)
    if plain is None:
        return None
    firsts, lasts, texts = plain
    reach = list(accumulate(lasts, max))  # the last address of the blocks so far
    # Block k joins the blocks before it when it starts at most one past them.
    joins = compress(
        range(1, len(firsts)), map(le, firsts[1:], map(add, reach, repeat(1)))
    )
    runs: list[list[int]] = []  # [first block, last block] of each run that joins
    for k in joins:
        if runs and runs[-1][1] == k - 1:
            runs[-1][1] = k
        else:
            runs.append([k - 1, k])
    out: list[str] = []
    intervals: list[tuple[int, int]] = []
    spans: list[tuple[int, int, int]] = []

    def alone(start: int, end: int) -> None:
        here = len(out)
        out.extend(texts[start:end])
        intervals.extend(zip(firsts[start:end], lasts[start:end]))
        spans.extend(zip(firsts[start:end], lasts[start:end], count(here)))

    done = 0
    for start, end in runs:
        alone(done, start)
        first, last = firsts[start], reach[end]
        intervals.append((first, last))
        for block, plen in blocks(first, last, 4):
            spans.append((block, block + (1 << 32 - plen) - 1, len(out)))
            out.append(cidr_text(block, plen, 4))
        done = end + 1
    alone(done, len(texts))
    return tuple(out), (tuple(intervals), ()), (spans, [])


def _plain_v4(cidrs: tuple[str, ...]) -> tuple[list, list, list] | None:
    """(firsts, lasts, texts) in address order when every CIDR is an IPv4 block
    written as cidr_text writes it; None otherwise."""
    found = plain_v4(cidrs)
    if found is None:
        return None
    firsts, sizes = found
    if any(map(gt, firsts, islice(firsts, 1, None))):  # not already in order
        order = sorted(range(len(firsts)), key=firsts.__getitem__)
        firsts = list(map(firsts.__getitem__, order))
        sizes = list(map(sizes.__getitem__, order))
        cidrs = tuple(map(cidrs.__getitem__, order))
    lasts = list(map(sub, map(add, firsts, sizes), repeat(1)))
    return firsts, lasts, list(cidrs)


def _covers(outer: list, inner: list) -> bool:
    """Every interval of inner lies inside one of outer (both sorted, disjoint)."""
    if inner is outer or inner == outer:  # one peer list in two rules
        return True
    if len(outer) * len(inner).bit_length() < len(inner):
        # Many intervals inside a few (a long list against 0.0.0.0/0): count, by
        # bisection, the intervals of inner that each interval of outer holds.
        held = 0
        for first, last in outer:
            lo = bisect_left(inner, first, key=_first)
            held += max(0, bisect_right(inner, last, lo, key=_last) - lo)
        return held == len(inner)
    if len(inner) * len(outer).bit_length() < len(outer):
        # A few intervals against many (a short list against a long one, once per
        # pair of rules): each by bisection, not by a walk along the long list.
        for first, last in inner:
            i = bisect_left(outer, first, key=_last)  # the first that reaches first
            if i == len(outer) or outer[i][0] > first or outer[i][1] < last:
                return False
        return True
    i = 0
    for first, last in inner:
        while i < len(outer) and outer[i][1] < first:
            i += 1
        if i == len(outer) or outer[i][0] > first or outer[i][1] < last:
            return False
    return True


_first, _last = itemgetter(0), itemgetter(1)


def _collapsed(rule: Rule, cache: dict) -> Rule:
    if rule.peer.role:
        return rule
    cidrs, intervals = collapse(rule.peer.cidrs)
    cache[cidrs] = (cidrs, intervals)
    if cidrs == rule.peer.cidrs:
        return rule
    return replace(rule, peer=replace(rule.peer, cidrs=cidrs))


def _intervals(peer: Peer, cache: dict) -> tuple:
    # One lookup: a tuple's hash is not kept, and a long list's takes 10,000 steps.
    found = cache.get(peer.cidrs)
    if found is None:
        found = cache[peer.cidrs] = collapse(peer.cidrs)
    return found[1]


# --- what a rule allows -------------------------------------------------------


def protocols(rule: Rule) -> frozenset:
    return ALL_PROTOCOLS if rule.protocol == "all" else frozenset({rule.protocol})


def ports(rule: Rule) -> tuple[int, int]:
    # "all" ignores ports (IpProtocol -1); no ports means every port.
    return FULL if rule.protocol == "all" or rule.ports is None else rule.ports


def source_ports(rule: Rule) -> tuple[int, int]:
    if rule.protocol == "all" or rule.source_ports is None:
        return FULL
    return rule.source_ports


def _inside(inner: tuple[int, int], outer: tuple[int, int]) -> bool:
    return outer[0] <= inner[0] and inner[1] <= outer[1]


def covers(outer: Rule, inner: Rule, cache: dict, with_ports: bool = True) -> bool:
    """outer allows every flow that inner allows (apart from the ports: with every
    port on both sides)."""
    if (outer.role, outer.direction) != (inner.role, inner.direction):
        return False
    if not protocols(inner) <= protocols(outer):
        return False
    if with_ports and not _inside(ports(inner), ports(outer)):
        return False
    if not _inside(source_ports(inner), source_ports(outer)):
        return False
    if outer.peer.role or inner.peer.role:
        return outer.peer.role == inner.peer.role
    o4, o6 = _intervals(outer.peer, cache)
    i4, i6 = _intervals(inner.peer, cache)
    return _covers(o4, i4) and _covers(o6, i6)


# --- the rewrites -------------------------------------------------------------


def _drop_shadowed(rules: list[Rule], cache: dict, report) -> list[Rule]:
    """Drop each rule that another live rule covers, in sort order; the first such
    rule in that order is the one reported.

    Rules that differ only in ports (a site flow's 10,000 ports) would make a pairwise
    search quadratic: rules are grouped by everything but their ports, a group's
    rules are in port order, and a tree of their last ports finds the first live
    rule whose ports hold another's in logarithmic time."""
    groups: dict[tuple, list[Rule]] = {}
    for rule in sorted(rules, key=Rule.sort_key):
        groups.setdefault((rule.role, rule.direction), []).append(rule)
    kept: list[Rule] = []
    for group in groups.values():
        found = _shadowed_in(group, cache, report)
        # The rule that stays carries the flows it now allows too, so descriptions
        # and explain credit it (a site flow never rewords a page rule).
        credit: dict[int, list[int]] = {}
        for i, j in found.items():
            while j in found:
                j = found[j]
            if group[j].site == group[i].site:
                credit.setdefault(j, []).append(i)
        kept.extend(
            _combined([r] + [group[k] for k in credit[i]]) if i in credit else r
            for i, r in enumerate(group)
            if i not in found
        )
    return kept


def _shadowed_in(group: list[Rule], cache: dict, report) -> dict[int, int]:
    """The rules another rule of the group shadows: index -> the covering rule's."""
    buckets: dict[tuple, _PortIndex] = {}
    for i, rule in enumerate(group):
        peer = (rule.peer.role, None if rule.peer.role else rule.peer.cidrs)
        key = (rule.protocol, source_ports(rule), peer, rule.site)
        buckets.setdefault(key, _PortIndex(rule)).add(i, ports(rule))
    outers: dict[tuple, list[_PortIndex]] = {}  # the buckets that may cover a bucket
    for key, bucket in buckets.items():
        outers[key] = [
            b
            for b in buckets.values()
            if not (b.sample.site and not bucket.sample.site)  # a page rule stays
            and covers(b.sample, bucket.sample, cache, with_ports=False)
        ]
    bucket_of = {i: key for key, b in buckets.items() for i in b.indices}
    dead: dict[int, int] = {}
    for i, rule in enumerate(group):
        found = None
        for bucket in outers[bucket_of[i]]:
            for j in bucket.holding(ports(rule), below=found):
                other = group[j]
                # Of two equal rules the later one in sort order goes (site last).
                if j != i and (j < i or rule.site or not covers(rule, other, cache)):
                    found = j
                    break
        if found is not None:
            dead[i] = found
            buckets[bucket_of[i]].remove(i)
            report.shadowed.append((rule.name, group[found].name))
    return dead


class _PortIndex:
    """The live rules of one bucket in port order, with a max-tree of their last
    ports: which live rules hold a port range, first in order first."""

    def __init__(self, sample: Rule):
        self.sample = sample
        self.indices: list[int] = []
        self.firsts: list[int] = []
        self.lasts: list[int] = []
        self.tree: list[int] | None = None

    def add(self, index: int, span: tuple[int, int]) -> None:
        self.indices.append(index)
        self.firsts.append(span[0])
        self.lasts.append(span[1])

    def _build(self) -> None:
        size = 1
        while size < len(self.lasts):
            size *= 2
        self.size, self.tree = size, [-1] * (2 * size)
        self.tree[size : size + len(self.lasts)] = self.lasts
        for node in range(size - 1, 0, -1):
            self.tree[node] = max(self.tree[2 * node], self.tree[2 * node + 1])
        self.position = {index: n for n, index in enumerate(self.indices)}
        # In sort order a bucket's rules are in port order; if not (a rule of
        # protocol all with ports written), search them one by one.
        self.ordered = all(a <= b for a, b in zip(self.firsts, self.firsts[1:]))

    def remove(self, index: int) -> None:
        if self.tree is None:
            self._build()
        node = self.size + self.position[index]
        self.tree[node] = -1
        while node > 1:
            node //= 2
            self.tree[node] = max(self.tree[2 * node], self.tree[2 * node + 1])

    def holding(self, span: tuple[int, int], below=None):
        """Group indices of live rules whose ports hold span, in order (and below
        `below`, an index already found elsewhere)."""
        if self.tree is None:
            self._build()
        import bisect

        if not self.ordered:
            for n, index in enumerate(self.indices):
                if below is not None and index > below:
                    return
                if self.firsts[n] <= span[0] and self.tree[self.size + n] >= span[1]:
                    yield index
            return
        end = bisect.bisect_right(self.firsts, span[0])  # first port <= span's
        start = 0
        while start < end:
            n = self._first_reaching(span[1], start, end)
            if n is None or (below is not None and self.indices[n] > below):
                return
            yield self.indices[n]
            start = n + 1

    def _first_reaching(self, last: int, start: int, end: int) -> int | None:
        """The first position in [start, end) whose last port is at least `last`:
        right from start's leaf to the first subtree that reaches, then down it."""
        tree, size = self.tree, self.size
        node = start + size
        while tree[node] < last:
            while node & 1:  # a right child: its parent's right is done too
                node >>= 1
            if node == 0:
                return None
            node += 1
        while node < size:
            node = 2 * node if tree[2 * node] >= last else 2 * node + 1
        return node - size if node - size < end else None


def _combined(rules: list[Rule], **changes) -> Rule:
    def joined(values, sep):
        out: list[str] = []
        for value in values:
            for part in value.split(sep):
                if part and part not in out:
                    out.append(part)
        return sep.join(out)

    first = rules[0]
    return replace(
        first,
        purpose=joined((r.purpose for r in rules), "; "),
        reference=joined((r.reference for r in rules), "; "),
        flow=joined((r.flow for r in rules), "+"),
        via=join_via(r.via for r in rules),
        obsolete=all(r.obsolete for r in rules),
        **changes,
    )


def _merge_ports(rules: list[Rule], report) -> list[Rule]:
    groups: dict[tuple, list[Rule]] = {}
    for rule in sorted(rules, key=Rule.sort_key):
        key = (rule.role, rule.direction, rule.protocol, rule.peer, rule.source_ports)
        groups.setdefault(key + (rule.site,), []).append(rule)
    out: list[Rule] = []
    for group in groups.values():
        if len(group) == 1 or group[0].protocol == "all":
            out.extend(group)
            continue
        runs: list[list[Rule]] = []
        for rule in sorted(group, key=ports):
            if runs and ports(rule)[0] <= max(ports(r)[1] for r in runs[-1]) + 1:
                runs[-1].append(rule)
            else:
                runs.append([rule])
        for run in runs:
            if len(run) == 1:
                out.append(run[0])
                continue
            lo, hi = ports(run[0])[0], max(ports(r)[1] for r in run)
            merged = _combined(run, ports=None if (lo, hi) == FULL else (lo, hi))
            report.merged.append((merged.name, tuple(r.name for r in run)))
            out.append(merged)
    return out


def _dedupe_addresses(rules: list[Rule], cache: dict, report) -> list[Rule]:
    """Drop a CIDR that another rule of the same traffic already allows.

    Peers are never merged into one: a merged peer would rename its rules whenever a
    list became (non-)empty, and renamed rules are replaced at apply time. Dropping
    duplicates is enough to keep AWS from refusing two identical rules. CIDR blocks
    either nest or are disjoint, so each block is tested against single blocks.
    """
    groups: dict[tuple, list[Rule]] = {}
    out: list[Rule] = []
    for rule in sorted(rules, key=Rule.sort_key):
        if rule.peer.role:
            out.append(rule)
            continue
        key = (rule.role, rule.direction, rule.protocol, rule.ports, rule.source_ports)
        groups.setdefault(key, []).append(rule)
    for group in groups.values():
        group = _same_names_merged(group, cache, report)
        if len(group) == 1:
            out.extend(group)
            continue
        # Page rules first: a site rule may lose addresses to a page rule, never
        # the other way round.
        page = [r for r in group if not r.site]
        group = page + [r for r in group if r.site]
        covered = _covered_elsewhere(page)
        if len(page) < len(group):
            covered |= {(i, j) for i, j in _covered_elsewhere(group) if i >= len(page)}
        by_rule: dict[int, set[int]] = {}
        for i, j in covered:
            by_rule.setdefault(i, set()).add(j)
        for i, rule in enumerate(group):
            if i not in by_rule:
                out.append(rule)
                continue
            gone = by_rule[i]
            keep = [c for j, c in enumerate(rule.peer.cidrs) if j not in gone]
            if keep:
                kept = tuple(keep)
                cache[kept] = collapse(kept)
                out.append(replace(rule, peer=replace(rule.peer, cidrs=kept)))
                report.deduplicated.append(
                    (rule.name, len(rule.peer.cidrs) - len(keep))
                )
            else:
                report.shadowed.append(
                    (rule.name, "the other rules of the same traffic")
                )
    return out


def _covered_elsewhere(group: list[Rule]) -> set[tuple[int, int]]:
    """(rule, cidr) positions whose block another rule's block already holds.

    One sweep in address order per family: blocks nest or are disjoint, and each
    rule's own blocks are disjoint (collapsed), so a block is held by another rule
    exactly when an earlier block in (start, larger first, rule order) reaches as far
    as it does. Of equal blocks the first rule keeps its own. The blocks come from
    the lists' cached spans, already in address order, so the sort merges runs.
    """
    covered: set[tuple[int, int]] = set()
    spans = [_spans(rule.peer.cidrs) for rule in group]
    for family in (0, 1):
        lists = [found[family] for found in spans]
        blocks = sorted(
            (first, -last, i, j)
            for i, found in _nested(lists)
            for first, last, j in found
        )
        reach = -1
        for first, neg_last, i, j in blocks:
            if reach >= -neg_last:
                covered.add((i, j))
            else:
                reach = -neg_last
    return covered


def _nested(lists: list[list]) -> list[tuple[int, list]]:
    """(rule, blocks) pairs to sweep: every block of every rule, or, when one rule's
    list is far longer than the others together (10,000 addresses beside a few
    hundred), only the blocks of that list that nest with another rule's. A block
    is held by another exactly when it nests in one, and the long list's own
    blocks are disjoint: the rest of them are held by nothing."""
    long = max(range(len(lists)), key=lambda i: len(lists[i]))
    others = [(i, found) for i, found in enumerate(lists) if i != long]
    if sum(len(found) for _, found in others) * 8 >= len(lists[long]):
        return list(enumerate(lists))
    blocks, near = lists[long], set()
    for _, found in others:
        for first, last, _ in found:
            k = bisect_left(blocks, first, key=_first)
            if k and blocks[k - 1][1] >= last:  # a block around it, from before it
                near.add(k - 1)
            # Those starting inside it: inside it, or around it from its first address.
            near.update(range(k, bisect_right(blocks, last, k, key=_first)))
    return others + [(long, [blocks[k] for k in sorted(near)])]


def _spans(cidrs: tuple[str, ...]) -> tuple[list, list]:
    """(first, last, position) of each block, per family (IPv4, IPv6), sorted."""
    found = _SPANS.get(cidrs)
    if found is None:
        found = ([], [])
        for j, text in enumerate(cidrs):
            version, first, last = parse_cidr(text)
            found[version == 6].append((first, last, j))
        found[0].sort()
        found[1].sort()
        if len(_SPANS) >= _COLLAPSED_MAX:
            _SPANS.clear()
        _SPANS[cidrs] = found
    return found


def _same_names_merged(group: list[Rule], cache: dict, report) -> list[Rule]:
    """Rules of one traffic whose peers share a name become one rule of that name."""
    by_name: dict[tuple, list[Rule]] = {}
    for rule in group:
        by_name.setdefault((rule.peer.name, rule.site), []).append(rule)
    out = []
    for (name, _), rules in by_name.items():
        if len(rules) == 1:
            out.append(rules[0])
            continue
        cidrs, intervals = collapse(c for r in rules for c in r.peer.cidrs)
        cache[cidrs] = (cidrs, intervals)
        merged = _combined(rules, peer=Peer(cidrs=cidrs, name=name))
        report.merged.append((merged.name, tuple(r.name for r in rules)))
        out.append(merged)
    return sorted(out, key=Rule.sort_key)

"""The targets' quotas, and how a matrix is cut to fit them.

Providers' defaults, overridable in the profile's `quotas:` section:

- AWS: 60 inbound and 60 outbound rules per security group (IPv4 and IPv6 counted
  apart; a rule that references a group counts once for each), 5 groups per network
  interface, and rules-per-group x groups-per-interface at most 1,000 however the
  quotas are raised. A role whose rules do not fit one group is split across extra
  groups attached to the same instances (split_aws_group). Managed prefix lists
  would not help: a rule that references one counts as the list's maximum entries.
  Network ACLs (aws.network_acls): 20 entries per ACL and direction, 40 at most
  once raised; their fit check lives with them (nacl.check_fit).
- GCP: 256 source (or destination) ranges per firewall rule, the safe bound; longer
  lists are cut into rules `name-<n>` (see chunk_addresses).
- iptables: above a small number of addresses a rule matches an ipset (hash:net)
  instead of one rule per address, so a packet does not walk the list.

Pure data and arithmetic: emitters call these functions. The AWS fit check, which
counts the groups the AWS emitters' split fills, lives with them
(emitters.aws.check_fit).
"""

from __future__ import annotations

from bisect import bisect_left

from .optimizer import blocks, cidr_text, collapse
from .problems import EmitError, ProblemError
from .records import dataclass

AWS_RULES_PER_INTERFACE = 1000  # hard: rules per group x groups per interface


class QuotaError(EmitError, ProblemError):
    """The matrix cannot fit a target's quotas; str() gives the numbers and choices."""


@dataclass(frozen=True)
class Quotas:
    """The targets' quotas: the providers' defaults, or a profile's `quotas:`."""

    aws_inbound_rules_per_group: int = 60
    aws_outbound_rules_per_group: int = 60
    aws_groups_per_interface: int = 5
    gcp_ranges_per_rule: int = 256
    iptables_ipset_threshold: int = 8
    aws_network_acl_entries: int = 20  # per ACL and direction; AWS raises it to 40

    def aws_rules_per_group(self, direction: str) -> int:
        if direction == "ingress":
            return self.aws_inbound_rules_per_group
        return self.aws_outbound_rules_per_group


# profile key path -> Quotas field
PROFILE_KEYS = {
    ("aws", "inbound_rules_per_group"): "aws_inbound_rules_per_group",
    ("aws", "outbound_rules_per_group"): "aws_outbound_rules_per_group",
    ("aws", "groups_per_interface"): "aws_groups_per_interface",
    ("aws", "network_acl_entries"): "aws_network_acl_entries",
    ("gcp", "ranges_per_rule"): "gcp_ranges_per_rule",
    ("iptables", "ipset_threshold"): "iptables_ipset_threshold",
}


def _from_section(section: dict) -> Quotas:
    values = {}
    for (provider, key), attr in PROFILE_KEYS.items():
        if key in section.get(provider, {}):
            values[attr] = section[provider][key]
    return Quotas(**values)


def quotas_for(profile) -> Quotas:
    """The profile's quotas: the providers' defaults with its overrides."""
    return _from_section(getattr(profile, "quotas", None) or {})


def profile_problems(section: dict) -> list[tuple[tuple, str]]:
    """What the schema cannot say about a `quotas:` section: (key path, message)."""
    quotas = _from_section(section)
    problems = []
    for direction, key in (("ingress", "inbound"), ("egress", "outbound")):
        per_group = quotas.aws_rules_per_group(direction)
        product = per_group * quotas.aws_groups_per_interface
        if product > AWS_RULES_PER_INTERFACE:
            problems.append(
                (
                    ("aws", f"{key}_rules_per_group"),
                    f"{per_group} rules per group x {quotas.aws_groups_per_interface}"
                    f" groups per interface = {product}; AWS allows at most"
                    f" {AWS_RULES_PER_INTERFACE} (lower one of them)",
                )
            )
    return problems


# --- stable chunks of address lists ------------------------------------------
#
# A chunk is a block of the address space, numbered by its place in a binary tree:
# 1 is every address, 2 all of IPv4, 3 all of IPv6, and block n splits into 2n and
# 2n+1 (its lower and upper halves). A block is split only while it holds more than
# `size` entries. Adding an address changes only the block it falls in (which keeps
# its number, or splits into its two halves); every other chunk keeps its name and
# its addresses. Cutting the sorted list every `size` entries would pack tighter,
# but one insertion would shift every later chunk. The price: chunks are not full,
# so there can be up to about twice as many as the packed minimum (more for lists
# crowded into a few small blocks), and the numbers have gaps.


def _entries(cidrs) -> list[tuple[int, int, int]]:
    """(version, first address, prefix length) of the collapsed blocks."""
    out = []
    for version, intervals in zip((4, 6), collapse(cidrs)[1]):
        bits = 32 if version == 4 else 128
        for first, last in intervals:
            if first == last:  # one address, most of a long list
                out.append((version, first, bits))
            else:
                out.extend((version, *block) for block in blocks(first, last, version))
    return out


# A list is cut into the same chunks for every rule that carries it (a GCP build
# asks for each peer list once per role and direction). Bounded, as _COLLAPSED is.
_CHUNKS: dict[tuple, tuple] = {}
_CHUNKS_MAX = 64


def chunk_addresses(
    cidrs, size: int, split_families: bool = False
) -> list[tuple[int, tuple[str, ...]]]:
    """(chunk number, CIDRs) pairs, each chunk at most `size` collapsed CIDRs.

    split_families: never put IPv4 and IPv6 in one chunk (for rules that cannot mix).
    """
    if size < 1:
        raise ValueError("chunk size must be at least 1")
    key = (tuple(cidrs), size, split_families)
    found = _CHUNKS.get(key)
    if found is None:
        if len(_CHUNKS) >= _CHUNKS_MAX:
            _CHUNKS.clear()
        found = _CHUNKS[key] = tuple(_chunks(key[0], size, split_families))
    return list(found)


def _chunks(cidrs, size: int, split_families: bool) -> list:
    entries = _entries(cidrs)
    if not entries:
        return []
    out: list[tuple[int, list]] = []
    mixed = len({e[0] for e in entries}) > 1
    if len(entries) <= size and not (split_families and mixed):
        out.append((1, entries))
    else:
        # (number, entries, bits already fixed)
        stack = [
            (2 if version == 4 else 3, [e for e in entries if e[0] == version], 0)
            for version in (6, 4)
        ]
        while stack:
            number, items, depth = stack.pop()
            if not items:
                continue
            if len(items) <= size:
                out.append((number, items))
                continue
            bits = 32 if items[0][0] == 4 else 128
            # Collapsed blocks do not nest, so a crowded block is longer than depth.
            shift = bits - depth - 1
            # Sorted blocks that share the bits above shift: the lower half first.
            cut = bisect_left(items, 1, key=lambda e: (e[1] >> shift) & 1)
            low, high = items[:cut], items[cut:]
            stack.append((2 * number + 1, high, depth + 1))
            stack.append((2 * number, low, depth + 1))
    out.sort(key=lambda chunk: (chunk[1][0][0], chunk[1][0][1]))
    return [
        (n, tuple(cidr_text(first, plen, version) for version, first, plen in items))
        for n, items in out
    ]


def use_ipset(cidrs, quotas: Quotas = Quotas()) -> bool:
    """iptables: match a set instead of one rule per address."""
    return len(cidrs) > quotas.iptables_ipset_threshold


# --- AWS security groups -------------------------------------------------------


def aws_units(rule) -> tuple[int, int]:
    """(IPv4, IPv6) quota units of one AWS rule (exactly one peer).

    A group reference counts for both families. Matrix rules are not counted here:
    emitters.aws.split expands them first, so the fit check and the emitters count
    the very rules that are written.
    """
    if rule.peer_role:
        return 1, 1
    return (1, 0) if rule.cidr_ipv4 else (0, 1)


def no_fit_message(direction: str, limit: int, fixed) -> str:
    """A rule fits no group: the fixed rules alone fill the quota."""
    key = "inbound" if direction == "ingress" else "outbound"
    held = ", ".join(getattr(r, "label", "a rule") for r in fixed)
    return (
        f"no {key} rule fits any security group: every group holds"
        f" {held}, which already fills the quota of {limit} {key}"
        f" rules per group; raise quotas.aws.{key}_rules_per_group"
    )


def split_aws_group(rules, quotas: Quotas = Quotas(), fixed=()) -> list[list]:
    """One role's AWS rules cut into groups that each fit the per-group quotas.

    rules: one-peer AWS rules (with direction, cidr_ipv4, cidr_ipv6, peer_role), in
    the emitter's stable order. fixed: rules every group holds besides these (the
    CloudFormation placeholder egress), counted in each group.

    Groups are filled in that order, as tightly as the quotas allow: groups per
    interface are scarce (5 by default), so packing beats stable slots that would
    leave groups half empty. The price is bounded: per direction and family, the
    groups fill one after the other, so a rule inserted (or removed) moves one
    rule across each later group boundary, at most groups - 1 rules, and a rule
    that moves is replaced (AWS cannot move a rule between groups). Every other
    rule stays where it was. Group 1 is the role's own group; the others are
    attached to the same instances.
    """
    base: dict = {}
    for rule in fixed:
        for family, units in zip((4, 6), aws_units(rule)):
            key = (rule.direction, family)
            base[key] = base.get(key, 0) + units
    groups: list[list] = []
    used: list[dict] = []
    # Groups before first[key] are full for that kind of rule (they never empty),
    # so the first fit is found without rescanning them: linear in the rules.
    first: dict = {}
    kinds: dict = {}  # (direction, units): (limit, wanted), worked out once each
    for rule in rules:
        kind = (rule.direction, aws_units(rule))
        if kind not in kinds:
            wanted = tuple(
                ((rule.direction, family), units)
                for family, units in zip((4, 6), kind[1])
                if units
            )
            kinds[kind] = (quotas.aws_rules_per_group(rule.direction), wanted)
        limit, wanted = kinds[kind]
        start = max(first.get(key, 0) for key, _ in wanted)
        for i in range(start, len(used)):
            count = used[i]
            if all(count.get(key, 0) + units <= limit for key, units in wanted):
                break
        else:
            if any(base.get(key, 0) + units > limit for key, units in wanted):
                raise QuotaError([no_fit_message(rule.direction, limit, fixed)])
            groups.append([])
            used.append(dict(base))
            i = len(groups) - 1
        groups[i].append(rule)
        for key, units in wanted:
            used[i][key] = used[i].get(key, 0) + units
            n = first.get(key, 0)
            while n < len(used) and used[n].get(key, 0) >= limit:
                n += 1
            first[key] = n
    return groups

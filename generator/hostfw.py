"""The host firewall of a role, free of any syntax: iptables and nftables lay it out.

Per role and address family: chains (one per hook: traffic to the host, from the
host), each an ordered list of entries that say what they match (protocol, addresses
or a named address set, ports, conntrack state, ICMP type, interface) and what happens
to it (allow or drop), with the name, purpose and page reference of the rules behind
them. The first entry that matches decides. Nothing here knows a command-line flag.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from .matrix import Rule
from .quotas import Quotas, use_ipset

DIRECTIONS = ("ingress", "egress")
ICMPV6_NEIGHBOUR = (
    "router-solicitation",
    "router-advertisement",
    "neighbour-solicitation",
    "neighbour-advertisement",
)


class HostFirewallError(Exception):
    """The matrix cannot become a host firewall; str() says which rule and why."""


@dataclass(frozen=True)
class AddressSet:
    """A named list of networks of one family (an ipset, an nftables set)."""

    label: str  # the peer's label; layouts derive their names from it
    family: int
    cidrs: tuple[str, ...]


@dataclass(frozen=True)
class Entry:
    """One match and its verdict. Empty fields match anything.

    `addresses` are alternatives (any one matches), on the side `side` names ("src"
    for traffic to the host, "dst" for traffic from it); `set` replaces them with a
    named set. `dports`/`sports` are alternatives too; a stateless return rule has
    several `sports` and exactly one `dports` range.
    """

    action: str  # "allow" | "drop"
    protocol: str | None = None  # "tcp", "udp", "icmpv6"; None: any
    iface: str | None = None  # "lo": the loopback interface
    side: str | None = None
    addresses: tuple[str, ...] = ()
    set: AddressSet | None = None
    dports: tuple[tuple[int, int], ...] = ()
    sports: tuple[tuple[int, int], ...] = ()
    icmp_type: str | None = None
    ctstate: tuple[str, ...] = ()
    flows: tuple[str, ...] = ()  # the rules' flow names (the comment in the ruleset)
    notes: tuple[str, ...] = ()  # a line each: name, purpose, reference


@dataclass
class Chain:
    direction: str  # "ingress" (to the host) | "egress" (from the host)
    entries: list[Entry] = field(default_factory=list)


@dataclass
class FamilyRules:
    """The chains and address sets of one role for one address family."""

    family: int
    chains: dict[str, Chain] = field(default_factory=dict)
    sets: dict[str, AddressSet] = field(default_factory=dict)


@dataclass
class HostFirewall:
    role: str
    stateful: bool
    families: dict[int, FamilyRules] = field(default_factory=dict)

    @property
    def sets(self) -> list[AddressSet]:
        return [s for fr in self.families.values() for s in fr.sets.values()]


def family_of(cidr: str) -> int:
    return ipaddress.ip_network(cidr, strict=False).version


def peer_cidrs(rule: Rule, subnets: dict, what: str = "a host firewall") -> tuple:
    if rule.peer.role:
        nets = subnets.get(rule.peer.role, ())
        if not nets:
            from .emitters import describe

            raise HostFirewallError(
                f"{what} addresses a role by its subnets, and network.subnets."
                f"{rule.peer.role} is empty: rule {describe(rule)}"
            )
        return tuple(nets)
    return rule.peer.cidrs


def group_rules(rules: list[Rule]) -> list[tuple[tuple, list[Rule]]]:
    """Rules that differ only in one port list share an entry.

    Forward rules merge destination ports; stateless return rules (one ephemeral
    destination range) merge their source ports.
    """
    groups: dict[tuple, list[Rule]] = {}
    for rule in rules:
        # protocol all has no ports: nothing to merge on
        alone = rule.name if rule.ports is None else ""
        if rule.is_return:
            key = (rule.direction, rule.protocol, rule.peer, "sport", rule.ports, alone)
        else:
            key = (rule.direction, rule.protocol, rule.peer, "dport", None, alone)
        groups.setdefault(key, []).append(rule)
    return list(groups.items())


def flow_names(rules: list[Rule]) -> tuple[str, ...]:
    flows: list[str] = []
    for rule in rules:
        for flow in rule.flow.split("+"):
            if flow not in flows:
                flows.append(flow)
    return tuple(flows)


def rule_note(rule: Rule) -> str:
    return f"{rule.name}: {rule.purpose} [{rule.reference}]" + (
        " (obsolete, kept by include_obsolete)" if rule.obsolete else ""
    )


def _head(family: int, direction: str, stateful: bool) -> list[Entry]:
    """What every chain starts with: loopback, neighbour discovery, replies."""
    entries = [Entry("allow", iface="lo", notes=("Loopback",))]
    if family == 6:
        for kind in ICMPV6_NEIGHBOUR:
            notes = ("IPv6 neighbour discovery",) if kind == ICMPV6_NEIGHBOUR[0] else ()
            entries.append(Entry("allow", "icmpv6", icmp_type=kind, notes=notes))
    if stateful:
        entries.append(
            Entry(
                "allow",
                ctstate=("ESTABLISHED", "RELATED"),
                notes=("Replies to allowed connections",),
            )
        )
    return entries


def build(
    role: str,
    rules: list[Rule],
    subnets: dict,
    stateful: bool,
    families: list[int],
    quotas: Quotas = Quotas(),
) -> HostFirewall:
    """The host firewall of one role from its rules of the matrix."""
    fw = HostFirewall(role, stateful)
    for family in families:
        fr = FamilyRules(family)
        for direction in DIRECTIONS:
            fr.chains[direction] = Chain(direction, _head(family, direction, stateful))
        fw.families[family] = fr
    for (direction, protocol, peer, flag, _, _), group in group_rules(rules):
        cidrs = peer_cidrs(group[0], subnets)
        side = "src" if direction == "ingress" else "dst"
        notes = tuple(rule_note(r) for r in group)
        if group[0].ports is None:
            dports: tuple = ()
            sports: tuple = ()
        elif flag == "sport":
            dports = (group[0].ports,)
            sports = tuple(r.source_ports for r in group)
        else:
            dports = tuple(r.ports for r in group)
            sports = ()
        for family, fr in fw.families.items():
            mine = [c for c in cidrs if family_of(c) == family]
            if any(c.endswith("/0") for c in mine):
                mine = [c for c in mine if c.endswith("/0")][:1]  # covers the rest
            if not mine:  # every address is of the other family
                continue
            entry = Entry(
                "allow",
                None if protocol == "all" else protocol,
                side=side,
                dports=dports,
                sports=sports,
                flows=flow_names(group),
                notes=notes,
            )
            if use_ipset(mine, quotas):
                aset = AddressSet(peer.label, family, tuple(mine))
                fr.sets[aset.label] = aset
                entry = _replace(entry, set=aset)
            else:
                entry = _replace(entry, addresses=tuple(mine))
            fr.chains[direction].entries.append(entry)
    for fr in fw.families.values():
        for chain in fr.chains.values():
            chain.entries.append(Entry("drop", notes=("Everything else",)))
    return fw


def _replace(entry: Entry, **changes) -> Entry:
    from dataclasses import replace

    return replace(entry, **changes)


def families_of(matrix, profile) -> list[int]:
    """IPv6 rules only when IPv6 appears; then every role gets them, so none is left open."""
    addresses = [c for r in matrix.rules for c in r.peer.cidrs]
    addresses += [c for nets in profile.subnets.values() for c in nets]
    return [4, 6] if any(family_of(c) == 6 for c in addresses) else [4]

"""iptables: one iptables-restore file per role, in chains of our own.

The rules live in RULEGEN-IN and RULEGEN-OUT, which INPUT and OUTPUT jump to. Loading
with `iptables-restore --noflush` flushes only those two chains (declaring a chain
flushes it), so kube-proxy, Docker and Nomad chains on the same host are left alone.
A restore file cannot add a jump idempotently (`-D` of a missing rule aborts the
load), so apply.sh adds each jump only when `iptables -C` finds none.
Role peers become the role's subnets; long address lists become ipsets.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from ..addresses import version
from ..matrix import ROLES, Matrix, Rule
from ..quotas import Quotas, quotas_for, use_ipset
from ..templating import render
from . import EmitError, Target, describe, expressible, header

CHAINS = {"ingress": "RULEGEN-IN", "egress": "RULEGEN-OUT"}
HOOKS = {"ingress": "INPUT", "egress": "OUTPUT"}
MULTIPORT_MAX = 15  # multiport slots per rule; a range takes two
SET_NAME_MAX = 31  # the kernel's limit
SET_TEMP_SUFFIX = "-new"  # apply fills a temporary set and swaps it in
COMMENT_MAX = 255
ICMPV6_NEIGHBOUR = (
    "router-solicitation",
    "router-advertisement",
    "neighbour-solicitation",
    "neighbour-advertisement",
)


@dataclass(frozen=True)
class IpSet:
    name: str
    family: int
    cidrs: tuple[str, ...]

    @property
    def temp(self) -> str:
        return self.name + SET_TEMP_SUFFIX

    @property
    def inet(self) -> str:
        return "inet" if self.family == 4 else "inet6"


@dataclass
class Line:
    """One rule line of a chain and the comment lines above it."""

    spec: str
    notes: list[str] = field(default_factory=list)


@dataclass
class Chain:
    name: str
    hook: str
    lines: list[Line] = field(default_factory=list)


def set_name(label: str, family: int) -> str:
    """A stable ipset name; short enough to take the temporary suffix too."""
    base = "rg-" + label.replace("_", "-") + ("-v6" if family == 6 else "")
    room = SET_NAME_MAX - len(SET_TEMP_SUFFIX)
    if len(base) <= room:
        return base
    digest = hashlib.sha256(base.encode()).hexdigest()[:6]
    return f"{base[: room - 7]}-{digest}"


def family_of(cidr: str) -> int:
    return version(cidr)


def peer_cidrs(rule: Rule, subnets: dict) -> tuple[str, ...]:
    if rule.peer.role:
        nets = subnets.get(rule.peer.role, ())
        if not nets:
            raise EmitError(
                f"iptables addresses a role by its subnets, and network.subnets."
                f"{rule.peer.role} is empty: rule {describe(rule)}"
            )
        return tuple(nets)
    return rule.peer.cidrs


def port_slots(ports: tuple[int, int]) -> int:
    return 1 if ports[0] == ports[1] else 2


def port_arg(ports: tuple[int, int], sep: str) -> str:
    lo, hi = ports
    return str(lo) if lo == hi else f"{lo}{sep}{hi}"


def chunk_ports(port_list: list[tuple[int, int]]) -> list[list[tuple[int, int]]]:
    """Split a port list into multiport-sized pieces, in order."""
    chunks: list[list[tuple[int, int]]] = [[]]
    used = 0
    for ports in port_list:
        slots = port_slots(ports)
        if used + slots > MULTIPORT_MAX:
            chunks.append([])
            used = 0
        chunks[-1].append(ports)
        used += slots
    return chunks


def port_match(port_list: list[tuple[int, int]], flag: str, protocol: str) -> str:
    """`-m tcp --dport 22`, `-m tcp --dport 1:2` or `-m multiport --dports 80,443`.

    The match module is named each time: after `-m multiport`, a bare `--dport`
    would be read as a multiport option and clash with `--sports`.
    """
    if len(port_list) == 1:
        return f"-m {protocol} --{flag} {port_arg(port_list[0], ':')}"
    joined = ",".join(port_arg(p, ":") for p in port_list)
    return f"-m multiport --{flag}s {joined}"


def comment(rules: list[Rule]) -> str:
    flows: list[str] = []
    for rule in rules:
        for flow in rule.flow.split("+"):
            flow = f"site {flow}" if rule.site else flow
            if flow not in flows:
                flows.append(flow)
    text = "rulegen: " + ",".join(flows)
    if len(text) > COMMENT_MAX:
        text = text[: COMMENT_MAX - 3] + "..."
    return text


class RoleRules:
    """The chains and ipsets of one role, for one address family."""

    def __init__(self, family: int):
        self.family = family
        self.chains = {d: Chain(CHAINS[d], HOOKS[d]) for d in ("ingress", "egress")}
        self.sets: dict[str, IpSet] = {}


def _group(rules: list[Rule]) -> list[tuple[tuple, list[Rule]]]:
    """Rules that differ only in one port list share a line (multiport).

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


def build_role(
    rules: list[Rule],
    subnets: dict,
    stateful: bool,
    families: list[int],
    quotas: Quotas = Quotas(),
) -> dict[int, RoleRules]:
    out = {family: RoleRules(family) for family in families}
    for rr in out.values():
        for direction, chain in rr.chains.items():
            iface = "-i lo" if direction == "ingress" else "-o lo"
            chain.lines.append(Line(f"{iface} -j ACCEPT", ["Loopback"]))
            if rr.family == 6:
                for kind in ICMPV6_NEIGHBOUR:
                    chain.lines.append(
                        Line(
                            f"-p ipv6-icmp -m icmp6 --icmpv6-type {kind} -j ACCEPT",
                            (
                                ["IPv6 neighbour discovery"]
                                if kind == "router-solicitation"
                                else []
                            ),
                        )
                    )
            if stateful:
                chain.lines.append(
                    Line(
                        "-m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
                        ["Replies to allowed connections"],
                    )
                )
    for (direction, protocol, peer, flag, _, _), group in _group(rules):
        cidrs = peer_cidrs(group[0], subnets)
        side = "-s" if direction == "ingress" else "-d"
        match_dir = "src" if direction == "ingress" else "dst"
        notes = [
            f"{r.name}: {r.purpose} [{r.reference}]"
            + (" (obsolete, kept by include_obsolete)" if r.obsolete else "")
            for r in group
        ]
        if group[0].ports is None:
            port_chunks: list[list[tuple[int, int]]] = [[]]
        else:
            wanted = [r.source_ports if flag == "sport" else r.ports for r in group]
            port_chunks = chunk_ports(wanted)
        proto = "" if protocol == "all" else f"-p {protocol} "
        fixed = ""
        if flag == "sport":
            fixed = f" -m {protocol} --dport {port_arg(group[0].ports, ':')}"
        for family, rr in out.items():
            mine = [c for c in cidrs if family_of(c) == family]
            if any(c.endswith("/0") for c in mine):
                mine = [c for c in mine if c.endswith("/0")][:1]  # covers the rest
            if not mine:  # every address is of the other family
                continue
            chain = rr.chains[direction]
            if use_ipset(mine, quotas):
                ipset = IpSet(set_name(peer.label, family), family, tuple(mine))
                rr.sets[ipset.name] = ipset
                addresses = [f"-m set --match-set {ipset.name} {match_dir}"]
            else:
                addresses = [f"{side} {c}" for c in mine]
            first = True
            for address in addresses:
                for chunk in port_chunks:
                    ports = f" {port_match(chunk, flag, protocol)}" if chunk else ""
                    spec = (
                        f"{proto}{address}{fixed}{ports}"
                        f' -m comment --comment "{comment(group)}" -j ACCEPT'
                    )
                    chain.lines.append(Line(spec, notes if first else []))
                    first = False
    for rr in out.values():
        for chain in rr.chains.values():
            chain.lines.append(Line("-j DROP", ["Everything else"]))
    return out


def _families(matrix: Matrix, profile) -> list[int]:
    """IPv6 rules only when IPv6 appears; then every role gets them, so none is left open."""
    addresses = [c for r in matrix.rules for c in r.peer.cidrs]
    addresses += [c for nets in profile.subnets.values() for c in nets]
    return [4, 6] if any(family_of(c) == 6 for c in addresses) else [4]


def emit(matrix: Matrix, profile, target: Target) -> dict[str, str]:
    rules = expressible(target, matrix)
    families = _families(matrix, profile)
    head = header(matrix, target.name)
    files: dict[str, str] = {}
    roles = [role for role in ROLES if any(r.role == role for r in rules)]
    for role in roles:
        mine = [r for r in rules if r.role == role]
        built = build_role(
            mine, profile.subnets, matrix.stateful, families, quotas_for(profile)
        )
        sets = [s for rr in built.values() for s in rr.sets.values()]
        for family, rr in built.items():
            name = f"{role}.{'iptables' if family == 4 else 'ip6tables'}"
            files[name] = render(
                "iptables/rules.j2",
                header=head,
                role=role,
                family=family,
                stateful=matrix.stateful,
                has_sets=bool(sets),
                chains=list(rr.chains.values()),
            )
        if sets:
            files[f"{role}.ipset"] = render(
                "iptables/ipset.j2", header=head, role=role, sets=sets
            )
    files["apply.sh"] = render(
        "iptables/apply.sh.j2",
        header=head,
        roles=roles,
        hooks=[(HOOKS[d], CHAINS[d]) for d in ("ingress", "egress")],
    )
    return files

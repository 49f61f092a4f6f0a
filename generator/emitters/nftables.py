"""nftables: one `nft -f` file per role, its own `table inet rulegen` (IPv4 and IPv6).

The nftables layout of the host firewall model (generator/hostfw.py), with the same
semantics as the iptables layout. Base chains on the input, output and forward hooks,
at a priority before iptables' (filter - 10), dispatch by family to one regular chain
per family and hook, which holds the model's entries in order. "allow" is `accept`:
in a table of our own it only ends rulegen's chain, so the other tables' chains
(iptables-nft's kube-proxy, Docker, the operator's) still see the packet; `drop` is
final everywhere. Address lists past the ipset threshold become named interval sets.

The file replaces its own table in one transaction (declare, delete, define: the
documented idiom), never `flush ruleset`, so loading it again leaves one copy and
every other table is untouched.
"""

from __future__ import annotations

from dataclasses import field, replace

from .. import hostfw
from ..hostfw import Entry, HostFirewall
from ..matrix import Matrix
from ..quotas import quotas_for
from ..templating import render
from . import EmitError, Line, Target, expressible, header
from ..records import dataclass

TABLE = "rulegen"
PRIORITY = "filter - 10"  # before iptables' chains (priority filter, 0)
HOOKS = {"ingress": "input", "egress": "output", "forward": "forward"}
# Chains no hook calls: the forward chain goes on (goto) to them.
REGULAR = {"jobs": "what job containers may reach (from Docker's bridges)"}
REPLY = "tcp flags & (fin | syn | rst | ack) != syn"  # iptables' ! --syn
FAMILY = {4: ("ip", "ipv4", "v4"), 6: ("ip6", "ipv6", "v6")}
COMMENT_MAX = 128  # the kernel keeps rule comments of up to 128 bytes
ICMP_NAMES = {
    "router-solicitation": "nd-router-solicit",
    "router-advertisement": "nd-router-advert",
    "neighbour-solicitation": "nd-neighbor-solicit",
    "neighbour-advertisement": "nd-neighbor-advert",
}


@dataclass
class Chain:
    """One regular chain of the table and the lines it holds."""

    name: str
    lines: list[Line] = field(default_factory=list)
    title: str = ""


@dataclass
class BaseChain:
    """A chain on a netfilter hook, which jumps to a regular chain per family."""

    name: str
    hook: str
    dispatch: dict[str, str]  # nfproto -> regular chain
    attach: str  # where the iptables layout attaches (FORWARD or DOCKER-USER)


@dataclass(frozen=True)
class NftSet:
    """A named set of one family's addresses."""

    name: str
    family: int
    cidrs: tuple[str, ...]

    @property
    def type(self) -> str:
        return "ipv4_addr" if self.family == 4 else "ipv6_addr"


def set_name(label: str, family: int) -> str:
    return f"{label.replace('-', '_')}_{FAMILY[family][2]}"


def comment(flows: tuple[str, ...]) -> str:
    text = "rulegen: " + ",".join(flows)
    if len(text) > COMMENT_MAX:
        text = text[: COMMENT_MAX - 3] + "..."
    return text


def _ports(ranges) -> str:
    items = [str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ranges]
    return items[0] if len(items) == 1 else "{ " + ", ".join(items) + " }"


def _addresses(family: int, side: str, cidrs, aset) -> str:
    prefix = f"{FAMILY[family][0]} {side}"
    if aset is not None:
        return f"{prefix} @{set_name(aset.label, aset.family)}"
    if not cidrs:
        return ""
    if len(cidrs) == 1:
        return f"{prefix} {cidrs[0]}"
    return f"{prefix} {{ {', '.join(cidrs)} }}"


def entry_lines(entry: Entry, direction: str, family: int) -> list[Line]:
    """One entry as nftables rules: one, with lists as anonymous sets; the port before
    DNAT takes one rule per range (nft 1.0 cannot list a set of them back)."""
    if entry.original and len(entry.dports) > 1:
        # The notes go with the first rule alone (not copied to each and dropped).
        return [
            entry_line(
                replace(entry, dports=(p,), notes=entry.notes if i == 0 else ()),
                direction,
                family,
            )
            for i, p in enumerate(entry.dports)
        ]
    return [entry_line(entry, direction, family)]


def entry_line(entry: Entry, direction: str, family: int) -> Line:
    """One entry as one nftables rule (lists become anonymous sets)."""
    words = []
    if entry.iface:
        words.append(f'{"iifname" if direction == "ingress" else "oifname"} "lo"')
    if entry.bridge:
        words.append(f'iifname "{entry.bridge}*"')
    words.append(_addresses(family, "saddr", entry.src, entry.src_set))
    words.append(_addresses(family, "daddr", entry.dst, entry.dst_set))
    if entry.icmp_type:
        kind = ICMP_NAMES.get(entry.icmp_type, entry.icmp_type)
        words.append(f"{entry.protocol} type {kind}")
    elif entry.protocol and not (entry.dports or entry.sports) or entry.original:
        words.append(f"meta l4proto {entry.protocol}" if entry.protocol else "")
    if entry.ctstate == ("DNAT",):
        words.append("ct status dnat")
    elif entry.ctstate:
        words.append(f"ct state {','.join(s.lower() for s in entry.ctstate)}")
    if entry.original:
        if entry.dports:
            words.append(f"ct original proto-dst {_ports(entry.dports)}")
    else:
        if entry.sports:
            words.append(f"{entry.protocol} sport {_ports(entry.sports)}")
        if entry.dports:
            words.append(f"{entry.protocol} dport {_ports(entry.dports)}")
    if entry.reply:
        words.append(REPLY)
    if entry.action == "goto":
        words.append(f"goto {entry.goto}_{FAMILY[family][2]}")
    else:
        words.append("accept" if entry.action == "allow" else "drop")
    if entry.flows:
        words.append(f'comment "{comment(entry.flows)}"')
    return Line(" ".join(w for w in words if w), list(entry.notes))


def layout(fw: HostFirewall) -> tuple[list[BaseChain], list[Chain], list[NftSet]]:
    bases: dict[str, BaseChain] = {}
    chains: list[Chain] = []
    sets: list[NftSet] = []
    for family, fr in fw.families.items():
        for direction, model in fr.chains.items():
            hook = HOOKS.get(direction)
            name = f"{hook or direction}_{FAMILY[family][2]}"
            chain = Chain(
                name,
                [x for e in model.entries for x in entry_lines(e, direction, family)],
                REGULAR.get(direction, ""),
            )
            chains.append(chain)
            if hook:
                base = bases.setdefault(hook, BaseChain(hook, hook, {}, model.attach))
                base.dispatch[FAMILY[family][1]] = name
        for aset in fr.sets.values():
            sets.append(NftSet(set_name(aset.label, family), family, aset.cidrs))
    return list(bases.values()), chains, sets


def emit(matrix: Matrix, profile, target: Target) -> dict[str, str]:
    rules = expressible(target, matrix)
    head = header(matrix, target.name)
    try:
        fws = hostfw.for_profile(rules, matrix, profile, quotas_for(profile))
    except hostfw.HostFirewallError as exc:
        raise EmitError(str(exc).replace("a host firewall", "nftables")) from None
    files: dict[str, str] = {}
    for role, fw in fws.items():
        bases, chains, sets = layout(fw)
        files[f"{role}.nft"] = render(
            "nftables/rules.nft.j2",
            header=head,
            role=role,
            table=TABLE,
            priority=PRIORITY,
            stateful=matrix.stateful,
            bases=bases,
            chains=chains,
            sets=sets,
        )
    files["apply.sh"] = render(
        "nftables/apply.sh.j2", header=head, roles=list(fws), table=TABLE
    )
    files["rulegen-nft@.service"] = render(
        "nftables/rulegen-nft@.service.j2", header=head
    )
    return files

"""iptables: one iptables-restore file per role, in chains of our own.

The rules live in RULEGEN-IN and RULEGEN-OUT, which INPUT and OUTPUT jump to. Loading
with `iptables-restore --noflush` flushes only those two chains (declaring a chain
flushes it), so kube-proxy, Docker and Nomad chains on the same host are left alone.
A restore file cannot add a jump idempotently (`-D` of a missing rule aborts the
load), so apply.sh adds each jump only when `iptables -C` finds none.
This module is the iptables layout of the host firewall model (generator/hostfw.py):
role peers become the role's subnets; long address lists become ipsets.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from .. import hostfw
from ..hostfw import Entry, HostFirewall
from ..matrix import ROLES, Matrix
from ..quotas import quotas_for
from ..templating import render
from . import EmitError, Target, expressible, header

CHAINS = {"ingress": "RULEGEN-IN", "egress": "RULEGEN-OUT"}
HOOKS = {"ingress": "INPUT", "egress": "OUTPUT"}
MULTIPORT_MAX = 15  # multiport slots per rule; a range takes two
SET_NAME_MAX = 31  # the kernel's limit
SET_TEMP_SUFFIX = "-new"  # apply fills a temporary set and swaps it in
COMMENT_MAX = 255


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


def comment(flows: tuple[str, ...]) -> str:
    text = "rulegen: " + ",".join(flows)
    if len(text) > COMMENT_MAX:
        text = text[: COMMENT_MAX - 3] + "..."
    return text


PROTOCOLS = {"icmpv6": "ipv6-icmp"}
ACTIONS = {"allow": "ACCEPT", "drop": "DROP"}


def entry_lines(entry: Entry, direction: str, family: int) -> list[Line]:
    """One entry as iptables lines: one per address and per multiport chunk."""
    target = f"-j {ACTIONS[entry.action]}"
    head = ""
    if entry.iface:
        head += f"{'-i' if direction == 'ingress' else '-o'} {entry.iface} "
    if entry.protocol:
        head += f"-p {PROTOCOLS.get(entry.protocol, entry.protocol)} "
    if entry.icmp_type:
        module = "icmp6 --icmpv6-type" if family == 6 else "icmp --icmp-type"
        head += f"-m {module} {entry.icmp_type} "
    if entry.ctstate:
        head += f"-m conntrack --ctstate {','.join(entry.ctstate)} "
    if entry.set is not None:
        name = set_name(entry.set.label, entry.set.family)
        addresses = [f"-m set --match-set {name} {entry.side}"]
    else:
        flag = "-s" if entry.side == "src" else "-d"
        addresses = [f"{flag} {a}" for a in entry.addresses] or [""]
    fixed = ""
    if entry.sports:
        fixed = f" -m {entry.protocol} --dport {port_arg(entry.dports[0], ':')}"
        flag, port_chunks = "sport", chunk_ports(list(entry.sports))
    elif entry.dports:
        flag, port_chunks = "dport", chunk_ports(list(entry.dports))
    else:
        flag, port_chunks = "", [[]]
    tail = f' -m comment --comment "{comment(entry.flows)}"' if entry.flows else ""
    lines = []
    for address in addresses:
        for chunk in port_chunks:
            ports = f" {port_match(chunk, flag, entry.protocol)}" if chunk else ""
            spec = " ".join(
                filter(None, [f"{head}{address}{fixed}{ports}{tail}".strip(), target])
            )
            lines.append(Line(spec, list(entry.notes) if not lines else []))
    return lines


def layout(fw: HostFirewall, family: int) -> list[Chain]:
    """The chains of one family of a role's host firewall, as iptables lines."""
    fr = fw.families[family]
    chains = []
    for direction, model in fr.chains.items():
        chain = Chain(CHAINS[direction], HOOKS[direction])
        for entry in model.entries:
            chain.lines += entry_lines(entry, direction, family)
        chains.append(chain)
    return chains


def ipsets(fw: HostFirewall) -> list[IpSet]:
    return [IpSet(set_name(s.label, s.family), s.family, s.cidrs) for s in fw.sets]


def emit(matrix: Matrix, profile, target: Target) -> dict[str, str]:
    rules = expressible(target, matrix)
    families = hostfw.families_of(matrix, profile)
    head = header(matrix, target.name)
    files: dict[str, str] = {}
    roles = [role for role in ROLES if any(r.role == role for r in rules)]
    for role in roles:
        mine = [r for r in rules if r.role == role]
        try:
            fw = hostfw.build(
                role,
                mine,
                profile.subnets,
                matrix.stateful,
                families,
                quotas_for(profile),
            )
        except hostfw.HostFirewallError as exc:
            raise EmitError(str(exc).replace("a host firewall", "iptables")) from None
        sets = ipsets(fw)
        for family in fw.families:
            name = f"{role}.{'iptables' if family == 4 else 'ip6tables'}"
            files[name] = render(
                "iptables/rules.j2",
                header=head,
                role=role,
                family=family,
                stateful=matrix.stateful,
                has_sets=bool(sets),
                chains=layout(fw, family),
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

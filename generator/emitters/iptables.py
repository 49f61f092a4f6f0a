"""iptables: one iptables-restore file per role and family, in chains of our own.

The iptables layout of the host firewall model (generator/hostfw.py). The rules live
in RULEGEN-IN, RULEGEN-OUT and RULEGEN-FWD, which INPUT, OUTPUT and the forward path
(FORWARD, or Docker's DOCKER-USER on Docker hosts) jump to first; on Docker hosts
RULEGEN-FWD goes on (-g) to RULEGEN-JOBS for what leaves Docker's bridges, so that
its RETURN goes back to the hook as the others' does. Allowed traffic
RETURNs to the chain that jumped, so kube-proxy's, Docker's, a CNI's and the
operator's later rules still apply; the rest is dropped. Loading with
`iptables-restore --noflush` flushes only our chains (declaring a chain flushes it).
A restore file cannot add a jump idempotently, so apply.sh adds each one.
Role peers become the role's subnets; long address lists become ipsets.
"""

from __future__ import annotations

import hashlib
from dataclasses import field

from .. import hostfw
from ..hostfw import Entry, HostFirewall
from ..matrix import Matrix
from ..quotas import quotas_for
from ..templating import render
from . import EmitError, Line, Target, expressible, header
from ..records import dataclass

CHAINS = {
    "ingress": "RULEGEN-IN",
    "egress": "RULEGEN-OUT",
    "forward": "RULEGEN-FWD",
    "jobs": "RULEGEN-JOBS",
}
TITLES = {
    "ingress": "traffic to this host",
    "egress": "traffic from this host",
    "forward": "traffic forwarded to and from containers",
    "jobs": "what job containers may reach, from RULEGEN-FWD (Docker's bridges)",
}
HOOKS = {
    "input": "INPUT",
    "output": "OUTPUT",
    "forward": "FORWARD",
    "docker-user": "DOCKER-USER",
}
# More hooks that jump to a chain first, by role. Nomad's bridge networking (the CNI
# firewall plugin) inserts a jump to its CNI-FORWARD first in FORWARD, above DOCKER-USER,
# and CNI-FORWARD accepts the allocations' traffic: the forward chain is first there too.
# apply.sh makes CNI-FORWARD as the plugin does, so the plugin keeps it.
ALSO_HOOKED = {"nomad_clients": {"RULEGEN-FWD": ("CNI-FORWARD",)}}
MULTIPORT_MAX = 15  # multiport slots per rule; a range takes two
SET_NAME_MAX = 31  # the kernel's limit
SET_TEMP_SUFFIX = "-new"  # apply fills a temporary set and swaps it in
COMMENT_MAX = 255
SET_HASHSIZE_MIN = 64
SET_MAXELEM_MIN = 65536


@dataclass(frozen=True)
class IpSet:
    """An ipset (hash:net) of one family, loaded before the rules that match it."""

    name: str
    family: int
    cidrs: tuple[str, ...]

    @property
    def temp(self) -> str:
        return self.name + SET_TEMP_SUFFIX

    @property
    def inet(self) -> str:
        return "inet" if self.family == 4 else "inet6"

    @property
    def maxelem(self) -> int:
        """Room for the members and as many again (a later, longer list)."""
        return max(SET_MAXELEM_MIN, _pow2(2 * len(self.cidrs)))

    @property
    def hashsize(self) -> int:
        return max(SET_HASHSIZE_MIN, _pow2(len(self.cidrs) // 4))


def _pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


@dataclass
class Chain:
    """One chain of the layout and the lines it holds."""

    name: str
    hook: str | None  # None: reached from another of our chains
    title: str = ""
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
    """The flows of an entry, as the kernel keeps them (at most 255 bytes)."""
    text = "rulegen: " + ",".join(flows)
    if len(text) > COMMENT_MAX:
        text = text[: COMMENT_MAX - 3] + "..."
    return text


PROTOCOLS = {"icmpv6": "ipv6-icmp"}
ACTIONS = {"allow": "RETURN", "drop": "DROP"}
ICMP_MODULE = {"icmp": "icmp --icmp-type", "icmpv6": "icmp6 --icmpv6-type"}


def _addresses(flag: str, cidrs: tuple, aset, where: str) -> list[str]:
    if aset is not None:
        return [f"-m set --match-set {set_name(aset.label, aset.family)} {where}"]
    return [f"{flag} {c}" for c in cidrs] or [""]


def entry_lines(entry: Entry, direction: str) -> list[Line]:
    """One entry as iptables lines: one per address pair and per port chunk."""
    head = []
    if entry.iface:
        head.append(f"{'-i' if direction == 'ingress' else '-o'} {entry.iface}")
    if entry.bridge:
        head.append(f"-i {entry.bridge}+")
    if entry.protocol:
        head.append(f"-p {PROTOCOLS.get(entry.protocol, entry.protocol)}")
    if entry.icmp_type:
        head.append(f"-m {ICMP_MODULE[entry.protocol]} {entry.icmp_type}")
    state = f"-m conntrack --ctstate {','.join(entry.ctstate)}" if entry.ctstate else ""
    pairs = [
        [a for a in (s, d) if a]
        for s in _addresses("-s", entry.src, entry.src_set, "src")
        for d in _addresses("-d", entry.dst, entry.dst_set, "dst")
    ]
    if entry.original:  # one conntrack match per range: it takes no list
        chunks = [f"{state} --ctorigdstport {port_arg(p, ':')}" for p in entry.dports]
        before, after = chunks or [state], [""]
    else:
        before = [state]
        if entry.sports:
            fixed = f"-m {entry.protocol} --dport {port_arg(entry.dports[0], ':')} "
            fixed += "! --syn " if entry.reply else ""
            after = [
                fixed + port_match(c, "sport", entry.protocol)
                for c in chunk_ports(list(entry.sports))
            ]
        elif entry.dports:
            after = [
                port_match(c, "dport", entry.protocol)
                for c in chunk_ports(list(entry.dports))
            ]
        else:
            after = [""]
    tail = f'-m comment --comment "{comment(entry.flows)}"' if entry.flows else ""
    if entry.action == "goto":
        verdict = f"-g {CHAINS[entry.goto]}"
    else:
        verdict = f"-j {ACTIONS[entry.action]}"
    lines = []
    for pair in pairs:
        for one in before:
            for ports in after:
                words = head + [one] + pair + [ports, tail, verdict]
                spec = " ".join(w for w in words if w)
                lines.append(Line(spec, list(entry.notes) if not lines else []))
    return lines


def layout(fw: HostFirewall, family: int) -> list[Chain]:
    """The chains of one family of a role's host firewall, as iptables lines."""
    fr = fw.families[family]
    chains = []
    for direction, model in fr.chains.items():
        hook = HOOKS[model.attach] if model.attach else None
        chain = Chain(CHAINS[direction], hook, TITLES[direction])
        for entry in model.entries:
            chain.lines += entry_lines(entry, direction)
        chains.append(chain)
    return chains


def ipsets(fw: HostFirewall) -> list[IpSet]:
    return [IpSet(set_name(s.label, s.family), s.family, s.cidrs) for s in fw.sets]


def emit(matrix: Matrix, profile, target: Target) -> dict[str, str]:
    rules = expressible(target, matrix)
    head = header(matrix, target.name)
    try:
        fws = hostfw.for_profile(rules, matrix, profile, quotas_for(profile))
    except hostfw.HostFirewallError as exc:
        raise EmitError(str(exc).replace("a host firewall", "iptables")) from None
    files: dict[str, str] = {}
    hooks = {}
    sets = {}
    for role, fw in fws.items():
        sets[role] = ipsets(fw)
        for family in fw.families:
            chains = layout(fw, family)
            hooks[role] = [(c.hook, c.name) for c in chains if c.hook] + [
                (hook, c.name)
                for c in chains
                for hook in ALSO_HOOKED.get(role, {}).get(c.name, ())
            ]
            name = f"{role}.{'iptables' if family == 4 else 'ip6tables'}"
            files[name] = render(
                "iptables/rules.j2",
                header=head,
                role=role,
                family=family,
                stateful=matrix.stateful,
                has_sets=bool(sets[role]),
                chains=chains,
                hooks=hooks[role],
            )
        if sets[role]:
            files[f"{role}.ipset"] = render(
                "iptables/ipset.j2", header=head, role=role, sets=sets[role]
            )
    files["apply.sh"] = render(
        "iptables/apply.sh.j2",
        header=head,
        roles=list(fws),
        hooks=hooks,
        sets={role: [s.name for s in found] for role, found in sets.items()},
        chains=list(CHAINS.values()),
    )
    files["rulegen@.service"] = render("iptables/rulegen@.service.j2", header=head)
    return files

"""The host firewall of a role, free of any syntax: iptables and nftables lay it out.

Per role and address family: three chains (traffic to the host, from the host, and
forwarded through it to and from its containers), each an ordered list of entries
that say what they match (protocol, source and destination addresses or named address
sets, ports, conntrack state, ICMP type, interface) and what happens to it, with the
name, purpose and reference of the rules behind them. The first entry that matches
decides. Nothing here knows a command-line flag.

Restrict, never widen: "allow" means "rulegen has no objection" and hands the packet
back to the host's own chains (iptables RETURN, an nftables accept in a table of its
own), so kube-proxy's, Docker's, a CNI's and the operator's rules still see it; only
"drop" is final.

Besides the matrix's rules each chain carries the host essentials, each a visible
entry whose reference is "host essentials" (not the page): loopback, IPv6 neighbour
discovery, replies, the ICMP errors path MTU discovery needs (also when stateless),
echo requests from the admin sources, NTP, the cloud's metadata service, DHCP where
the profile says the host uses it, admin SSH on a load balancer that is a host, and
on Kubernetes nodes the pod and service ranges.

The forward chain sees container traffic: what reaches a container through DNAT (a
NodePort, a Docker-published port) obeys the role's ingress rules by its original
destination port; what containers send obeys the role's egress rules. It is always
stateful: NAT needs connection tracking whatever the profile says.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .addresses import version
from .matrix import Rule
from .quotas import Quotas, use_ipset

DIRECTIONS = ("ingress", "egress", "forward")
FAMILIES = (4, 6)  # every role gets both: a dual-stack host is never left open
ESSENTIALS = "host essentials"
ICMPV6_NEIGHBOUR = (
    "router-solicitation",
    "router-advertisement",
    "neighbour-solicitation",
    "neighbour-advertisement",
)
# The ICMP errors a host needs, also without connection tracking: unreachable
# (with fragmentation-needed), time exceeded, parameter problem; IPv6's packet too big.
ICMP_ERRORS = {
    4: ("destination-unreachable", "time-exceeded", "parameter-problem"),
    6: (
        "destination-unreachable",
        "packet-too-big",
        "time-exceeded",
        "parameter-problem",
    ),
}
ICMP = {4: "icmp", 6: "icmpv6"}
# Where each role's forward chain is attached: Docker's documented DOCKER-USER chain
# on Docker hosts (Nomad clients, the VMs' Docker), FORWARD elsewhere.
FORWARD_ATTACH = {
    "load_balancer": "forward",
    "kubernetes_nodes": "forward",
    "nomad_clients": "docker-user",
    "nomad_servers": "forward",
    "external_vms": "docker-user",
}
# The cloud's link-local services (AWS: Amazon Time Sync and IMDS; GCP: the metadata
# server answers both).
CLOUD_NTP = {
    "aws": ("169.254.169.123/32", "fd00:ec2::123/128"),
    "gcp": ("169.254.169.254/32",),
}
CLOUD_METADATA = {
    "aws": ("169.254.169.254/32", "fd00:ec2::254/128"),
    "gcp": ("169.254.169.254/32",),
}
DHCP = {4: ((68, 67), "udp"), 6: ((546, 547), "udp")}
# ipset's hash:net counts members in 32 bits; nftables sets too.
SET_MAX = 2**32 - 1


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

    `src` and `dst` list alternatives (any one matches); `src_set`/`dst_set` replace
    them with a named set. `dports`/`sports` are alternatives too; a stateless return
    rule has several `sports` and one `dports` range. `original` makes `dports` match
    the destination port before DNAT (with `ctstate` DNAT).
    """

    action: str  # "allow" | "drop"
    protocol: str | None = None  # "tcp", "udp", "icmp", "icmpv6"; None: any
    iface: str | None = None  # "lo": the loopback interface
    src: tuple[str, ...] = ()
    dst: tuple[str, ...] = ()
    src_set: AddressSet | None = None
    dst_set: AddressSet | None = None
    dports: tuple[tuple[int, int], ...] = ()
    sports: tuple[tuple[int, int], ...] = ()
    original: bool = False
    icmp_type: str | None = None
    ctstate: tuple[str, ...] = ()
    flows: tuple[str, ...] = ()  # the flow names (the comment in the ruleset)
    notes: tuple[str, ...] = ()  # a line each: name, purpose, reference


@dataclass
class Chain:
    direction: str  # "ingress" (to the host), "egress" (from it), "forward"
    attach: str  # "input", "output", "forward" or "docker-user"
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


@dataclass(frozen=True)
class Essentials:
    """The profile's host essentials for one role (addresses as CIDRs)."""

    ntp: tuple[str, ...] = ()
    metadata: tuple[str, ...] = ()
    echo_from: tuple[str, ...] = ()
    dhcp: bool = False
    admin_ssh: tuple[str, ...] = ()  # the load balancer's, where it is a host
    pods: tuple[str, ...] = ()
    services: tuple[str, ...] = ()
    ephemeral: tuple[int, int] = (1024, 65535)


def essentials_for(profile, role: str) -> Essentials:
    host = getattr(profile, "host_firewall", None) or {}
    cloud = profile.cloud
    ntp = tuple(host.get("ntp_servers") or ()) or CLOUD_NTP.get(cloud, ())
    metadata = CLOUD_METADATA.get(cloud, ()) if host.get("metadata", True) else ()
    admin = tuple(profile.peers.get("ssh_admin", ()))
    k8s = role == "kubernetes_nodes"
    return Essentials(
        ntp=tuple(_cidr(c) for c in ntp),
        metadata=metadata,
        echo_from=admin if host.get("icmp_echo", True) else (),
        dhcp=bool(host.get("dhcp", False)),
        admin_ssh=admin if role == "load_balancer" else (),
        pods=tuple(getattr(profile, "pod_cidrs", ()) or ()) if k8s else (),
        services=tuple(getattr(profile, "service_cidrs", ()) or ()) if k8s else (),
        ephemeral=tuple(profile.ephemeral_ports),
    )


def _cidr(text: str) -> str:
    import ipaddress

    return str(ipaddress.ip_network(text, strict=False))


def family_of(cidr: str) -> int:
    return version(cidr)


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
            flow = f"site {flow}" if rule.site else flow
            if flow not in flows:
                flows.append(flow)
    return tuple(flows)


def rule_note(rule: Rule) -> str:
    return f"{rule.name}: {rule.purpose} [{rule.reference}]" + (
        " (obsolete, kept by include_obsolete)" if rule.obsolete else ""
    )


def _note(what: str) -> tuple[str, ...]:
    return (f"{what} [{ESSENTIALS}]",)


def _essential(action: str, protocol=None, *, flow: str, what: str, **match) -> Entry:
    """A host essential: its own flow name (host-...) and reference."""
    return Entry(action, protocol, flows=(f"host-{flow}",), notes=_note(what), **match)


def _v(cidrs, family: int) -> tuple[str, ...]:
    return tuple(c for c in cidrs if family_of(c) == family)


def _head(family: int, direction: str, stateful: bool) -> list[Entry]:
    """What every chain starts with: loopback, neighbour discovery, replies."""
    entries = []
    if direction != "forward":
        entries.append(Entry("allow", iface="lo", notes=("Loopback",)))
        if family == 6:
            for kind in ICMPV6_NEIGHBOUR:
                first = kind == ICMPV6_NEIGHBOUR[0]
                notes = ("IPv6 neighbour discovery",) if first else ()
                entries.append(Entry("allow", "icmpv6", icmp_type=kind, notes=notes))
    if stateful or direction == "forward":
        notes = ("Replies to allowed connections",)
        if direction == "forward":
            notes = _note("Replies to allowed connections (NAT needs conntrack)")
        entries.append(Entry("allow", ctstate=("ESTABLISHED", "RELATED"), notes=notes))
    return entries


def _essentials(family: int, direction: str, ess: Essentials, stateful: bool):
    """The host essentials of one chain, before the matrix's rules."""
    icmp = ICMP[family]
    out: list[Entry] = []
    pods = _v(ess.pods, family)
    if direction == "forward":
        if pods:
            out.append(
                _essential(
                    "allow",
                    flow="pods",
                    what="Pods to pods and to services (network.pod_cidrs, service_cidrs)",
                    src=pods,
                    dst=pods + _v(ess.services, family),
                )
            )
        return out
    inbound = direction == "ingress"
    here, there = ("src", "dst") if inbound else ("dst", "src")

    def reply(what: str, protocol: str, port: int, addresses) -> Entry:
        """The stateless return rule of a host essential."""
        return _essential(
            "allow",
            protocol,
            flow=what[0],
            what="Return traffic: " + what[1],
            **{here: addresses},
            dports=(ess.ephemeral,),
            sports=((port, port),),
        )

    for i, kind in enumerate(ICMP_ERRORS[family]):
        out.append(
            _essential(
                "allow",
                icmp,
                flow="icmp-errors",
                what="ICMP errors: unreachable, fragmentation needed, time exceeded"
                " (path MTU discovery, also without conntrack)",
                icmp_type=kind,
            )
        )
        if i:
            out[-1] = replace(out[-1], notes=())
    echo = _v(ess.echo_from, family)
    if echo and (inbound or not stateful):
        out.append(
            _essential(
                "allow",
                icmp,
                flow="echo",
                what="Echo (ping) from the admin sources (peers.ssh_admin;"
                " host_firewall.icmp_echo)",
                **{here: echo},
                icmp_type="echo-request" if inbound else "echo-reply",
            )
        )
    ssh = _v(ess.admin_ssh, family)
    what = (
        "admin-ssh",
        "Administrative SSH to the load balancer host (peers.ssh_admin)",
    )
    if ssh and inbound:
        out.append(
            _essential(
                "allow", "tcp", flow=what[0], what=what[1], src=ssh, dports=((22, 22),)
            )
        )
    elif ssh and not stateful:
        out.append(
            _essential(
                "allow",
                "tcp",
                flow=what[0],
                what="Return traffic: " + what[1],
                dst=ssh,
                dports=(ess.ephemeral,),
                sports=((22, 22),),
            )
        )
    services = (
        (
            _v(ess.ntp, family),
            "udp",
            123,
            ("ntp", "NTP time sync (host_firewall.ntp_servers)"),
        ),
        (
            _v(ess.metadata, family),
            "tcp",
            80,
            (
                "metadata",
                "The cloud's instance metadata service (host_firewall.metadata)",
            ),
        ),
    )
    for addresses, protocol, port, what in services:
        if addresses and not inbound:
            out.append(
                _essential(
                    "allow",
                    protocol,
                    flow=what[0],
                    what=what[1],
                    dst=addresses,
                    dports=((port, port),),
                )
            )
        elif addresses and not stateful:
            out.append(reply(what, protocol, port, addresses))
    if ess.dhcp:
        (client, server), protocol = DHCP[family]
        local, remote = (client, server) if inbound else (server, client)
        out.append(
            _essential(
                "allow",
                protocol,
                flow="dhcp",
                what="DHCP (host_firewall.dhcp)",
                dports=((local, local),),
                sports=((remote, remote),),
            )
        )
    cluster = pods + (() if inbound else _v(ess.services, family))
    if cluster:
        what = (
            "Pods to their node (network.pod_cidrs)"
            if inbound
            else "The node to pods and services (network.pod_cidrs, service_cidrs)"
        )
        out.append(_essential("allow", flow="pods", what=what, **{here: cluster}))
    return out


def build(
    role: str,
    rules: list[Rule],
    subnets: dict,
    stateful: bool,
    families=FAMILIES,
    quotas: Quotas = Quotas(),
    essentials: Essentials | None = None,
) -> HostFirewall:
    """The host firewall of one role from its rules of the matrix."""
    ess = essentials or Essentials()
    fw = HostFirewall(role, stateful)
    attach = {"ingress": "input", "egress": "output", "forward": FORWARD_ATTACH[role]}
    for family in families:
        fr = FamilyRules(family)
        for direction in DIRECTIONS:
            entries = _head(family, direction, stateful)
            entries += _essentials(family, direction, ess, stateful)
            fr.chains[direction] = Chain(direction, attach[direction], entries)
        fw.families[family] = fr
    for (direction, protocol, peer, flag, _, _), group in group_rules(rules):
        cidrs = peer_cidrs(group[0], subnets)
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
            side = "src" if direction == "ingress" else "dst"
            entry = Entry(
                "allow",
                None if protocol == "all" else protocol,
                dports=dports,
                sports=sports,
                flows=flow_names(group),
                notes=notes,
            )
            if use_ipset(mine, quotas):
                if len(mine) > SET_MAX:
                    raise HostFirewallError(
                        f"{len(mine)} addresses in {peer.label}: more than a kernel"
                        f" set holds ({SET_MAX}); rule {group[0].name}"
                    )
                aset = AddressSet(peer.label, family, tuple(mine))
                fr.sets[aset.label] = aset
                entry = replace(entry, **{f"{side}_set": aset})
            else:
                entry = replace(entry, **{side: tuple(mine)})
            fr.chains[direction].entries.append(entry)
            if not sports:
                _forward(fr, direction, entry, _v(ess.pods, family))
    for fr in fw.families.values():
        for chain in fr.chains.values():
            chain.entries.append(Entry("drop", notes=("Everything else",)))
    return fw


def _forward(fr: FamilyRules, direction: str, entry: Entry, pods) -> None:
    """The rule's counterpart on the forward path (container traffic)."""
    chain = fr.chains["forward"].entries
    if direction == "ingress":
        # Reached through DNAT (a NodePort, a published port): by the original port.
        chain.append(replace(entry, ctstate=("DNAT",), original=True))
        if pods:  # routed to a pod directly (another node's masqueraded NodePort)
            chain.append(replace(entry, dst=pods, notes=()))
    else:
        chain.append(replace(entry, src=pods) if pods else entry)


def for_profile(rules: list[Rule], matrix, profile, quotas: Quotas) -> dict:
    """Every role's host firewall: role -> HostFirewall, in the matrix's role order."""
    from .matrix import ROLES

    out = {}
    for role in ROLES:
        mine = [r for r in rules if r.role == role]
        if mine:
            out[role] = build(
                role,
                mine,
                profile.subnets,
                matrix.stateful,
                FAMILIES,
                quotas,
                essentials_for(profile, role),
            )
    return out


def lockout_roles(matrix, profile) -> list[str]:
    """Roles whose host firewall lets no operator in over SSH (tcp 22): SSH from
    another role of the install (Nomad clients to the VMs) is no way in for a person."""
    locked = []
    for role in matrix.roles():
        opens = any(
            not r.is_return
            and not r.peer.role
            and r.protocol in ("tcp", "all")
            and (r.ports is None or r.ports[0] <= 22 <= r.ports[1])
            for r in matrix.for_role(role, "ingress")
        )
        if not opens and not essentials_for(profile, role).admin_ssh:
            locked.append(role)
    return locked


def lockout_warning(matrix, profile) -> list[str]:
    locked = lockout_roles(matrix, profile)
    if not locked:
        return []
    return [
        f"host firewall: {', '.join(locked)} will refuse all SSH from operators"
        " (peers.ssh_admin is empty; SSH from another role is no way in); keep a"
        " console at hand, and load with apply.sh's rollback guard"
    ]

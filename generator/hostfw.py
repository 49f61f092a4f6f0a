"""The host firewall of a role, free of any syntax: iptables and nftables lay it out.

Per role and address family: three chains (traffic to the host, from the host, and
forwarded through it to and from its containers), and on hosts that run jobs in
Docker containers a fourth (what those jobs may reach). Each is an ordered list of
entries that say what they match (protocol, source and destination addresses or named
address sets, ports, conntrack state, ICMP type, interface) and what happens to it,
with the name, purpose and reference of the rules behind them. The first entry that
matches decides. Nothing here knows a command-line flag.

Restrict, never widen: "allow" means "rulegen has no objection" and hands the packet
back to the host's own chains (iptables RETURN, an nftables accept in a table of its
own), so kube-proxy's, Docker's, a CNI's and the operator's rules still see it; only
"drop" is final.

Besides the matrix's rules each chain carries the host essentials, each a visible
entry whose reference is "host essentials" (not the page): loopback, IPv6 neighbour
discovery, replies, the ICMP errors path MTU discovery needs (also when stateless),
echo requests from the admin sources, NTP, the cloud's metadata service, DHCP where
the profile says the host uses it, admin SSH on a load balancer that is a host, and
on Kubernetes nodes the pod and service ranges. Without conntrack, a TCP return rule
takes replies only (no SYN without ACK); UDP has no such mark.

The forward chain sees container traffic by direction. What reaches a container
through DNAT (a NodePort, a Docker-published port) obeys the role's ingress rules by
its original destination port, and is dropped otherwise, whatever port it was sent
to. What containers send obeys the role's egress rules: on Kubernetes nodes from the
pod ranges; on Nomad clients and VMs from Docker's bridges, through the jobs chain,
which keeps jobs off the metadata service, the link-local range, the install's own
ranges and the host agents' flows (CircleCI's Nomad client bootstrap drops the same
from docker+ and br-+ in DOCKER-USER). The forward chain is always stateful: NAT needs
connection tracking whatever the profile says.
"""

from __future__ import annotations

from dataclasses import field, replace

from .matrix import Rule
from .quotas import Quotas, use_ipset
from .records import dataclass

DIRECTIONS = ("ingress", "egress", "forward", "jobs")
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
# Jobs are not the host: on the roles that run them in Docker containers, what leaves
# Docker's bridges (docker0, br-<network>) meets a policy of its own.
JOB_HOSTS = ("nomad_clients", "external_vms")
JOB_BRIDGES = ("docker", "br-")  # interface name prefixes
# Podman on the Nomad clients (nomad.container_runtime): its bridges (netavark's
# podman0, podman1...; CNI's cni-podman0) are seen in FORWARD, there is no DOCKER-USER.
PODMAN_BRIDGES = ("podman", "cni-podman")
JOBS = (
    "jobs policy, as CircleCI's Nomad client bootstrap (server-terraform nomad-aws)"
    " drops 169.254.0.0/16 and blocked_cidrs from docker+ and br-+ in DOCKER-USER"
)
JOB_METADATA = {  # the instance's credentials; 169.254.169.254 on most clouds
    "aws": ("169.254.169.254/32", "fd00:ec2::254/128"),
    "gcp": ("169.254.169.254/32", "fd20:ce::254/128"),
}
LINK_LOCAL = ("169.254.0.0/16", "fe80::/10")
UDP_NOTE = (
    "UDP carries no connection state: any datagram from this port passes"
    " (stateful: true takes replies only)"
)
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

    action: str  # "allow" | "drop" | "goto"
    protocol: str | None = None  # "tcp", "udp", "icmp", "icmpv6"; None: any
    iface: str | None = None  # "lo": the loopback interface
    src: tuple[str, ...] = ()
    dst: tuple[str, ...] = ()
    src_set: AddressSet | None = None
    dst_set: AddressSet | None = None
    dports: tuple[tuple[int, int], ...] = ()
    sports: tuple[tuple[int, int], ...] = ()
    original: bool = False
    reply: bool = False  # TCP that opens no connection (no SYN without ACK)
    bridge: str | None = None  # input interface by name prefix (a container bridge)
    goto: str | None = None  # action "goto": the chain (a direction) that decides
    icmp_type: str | None = None
    ctstate: tuple[str, ...] = ()
    flows: tuple[str, ...] = ()  # the flow names (the comment in the ruleset)
    notes: tuple[str, ...] = ()  # a line each: name, purpose, reference


@dataclass
class Chain:
    """The entries of one direction of a host, and where they attach."""

    direction: str  # "ingress" (to the host), "egress" (from it), "forward"
    attach: str | None  # "input", "output", "forward", "docker-user"; jobs: None
    entries: list[Entry] = field(default_factory=list)


@dataclass
class FamilyRules:
    """The chains and address sets of one role for one address family."""

    family: int
    chains: dict[str, Chain] = field(default_factory=dict)
    sets: dict[str, AddressSet] = field(default_factory=dict)


@dataclass
class HostFirewall:
    """One role's host firewall: its chains and sets per address family."""

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


@dataclass(frozen=True)
class Jobs:
    """What job containers may reach on a role that runs them (host_firewall.jobs).

    A flow is known by (site, id). Jobs make the `named` flows, which may name
    addresses inside the blocked ranges (a DNS server in a role's subnet, the VMs);
    `host_only` flows are the host's own agents' (the Nomad client's RPC), never a
    job's. Every other flow of the role's egress is a job's too, outside those ranges.
    """

    metadata: tuple[str, ...] = ()  # dropped unless a job's flow names the address
    link_local: tuple[str, ...] = ()
    internal: tuple[str, ...] = ()  # the compute roles' subnets, pods, services
    blocked: tuple[str, ...] = ()  # host_firewall.jobs.blocked_cidrs
    named: frozenset = frozenset()
    host_only: frozenset = frozenset()
    bridges: tuple[str, ...] = JOB_BRIDGES  # the runtime's, as interface prefixes
    attach: str = "docker-user"  # where the forward chain is attached

    def kind(self, rule: Rule) -> str:
        """ "named", "host" or "inherited": what jobs make of the rule."""
        flows = {(rule.site, flow) for flow in rule.flow.split("+")}
        if flows & self.named:
            return "named"
        return "host" if flows <= self.host_only else "inherited"


def jobs_for(profile, role: str) -> Jobs | None:
    """The jobs policy of a role that runs jobs in Docker containers (else None)."""
    if role not in JOB_HOSTS:
        return None
    from .catalog import load_catalog

    conf = (getattr(profile, "host_firewall", None) or {}).get("jobs") or {}
    flows = [(False, f) for f in load_catalog().flows]
    flows += [(True, f) for f in getattr(profile, "site_flows", ())]
    internal: list[str] = []
    # The balancer is kept from jobs by its internal ports (host-only flows): its UI
    # and API, on 80 and 443, are the jobs' too (the API, dynamic config).
    ranges = [nets for r, nets in profile.subnets.items() if r != "load_balancer"]
    ranges += [getattr(profile, key, ()) for key in ("pod_cidrs", "service_cidrs")]
    for cidr in (_cidr(c) for nets in ranges for c in nets or ()):
        if cidr not in internal:
            internal.append(cidr)
    reach = conf.get("metadata", False)
    podman = (
        role == "nomad_clients"
        and getattr(profile, "container_runtime", "docker") == "podman"
    )
    return Jobs(
        bridges=PODMAN_BRIDGES if podman else JOB_BRIDGES,
        attach="forward" if podman else FORWARD_ATTACH[role],
        metadata=(
            () if reach else JOB_METADATA.get(profile.cloud, ("169.254.169.254/32",))
        ),
        link_local=() if reach else LINK_LOCAL,
        internal=() if conf.get("internal", False) else tuple(internal),
        blocked=tuple(_cidr(c) for c in conf.get("blocked_cidrs") or ()),
        named=frozenset((s, f.id) for s, f in flows if getattr(f, "jobs", None)),
        host_only=frozenset(
            (s, f.id) for s, f in flows if getattr(f, "jobs", None) is False
        ),
    )


def of_family(cidrs, family: int) -> list[str]:
    """The blocks of one family, in order. Every block here was checked (by the
    profile reader or written by the optimizer): IPv6 is the one with a colon."""
    v6 = family == 6
    return [c for c in cidrs if (":" in c) is v6]


def peer_cidrs(rule: Rule, subnets: dict, what: str = "a host firewall") -> tuple:
    if rule.peer.role:
        nets = subnets.get(rule.peer.role, ())
        if not nets:
            from .matrix import describe

            raise HostFirewallError(
                f"{what} addresses a role by its subnets, and network.subnets."
                f"{rule.peer.role} is empty: rule {describe(rule)}"
            )
        return tuple(nets)
    return rule.peer.cidrs


def group_rules(rules: list[Rule], split=None) -> list[tuple[tuple, list[Rule]]]:
    """Rules that differ only in one port list share an entry.

    Forward rules merge destination ports; stateless return rules (one ephemeral
    destination range) merge their source ports. `split(rule)` keeps apart rules
    that must not share an entry.
    """
    groups: dict[tuple, list[Rule]] = {}
    for rule in rules:
        # protocol all has no ports: nothing to merge on
        alone = rule.name if rule.ports is None else ""
        ports = rule.ports if rule.is_return else None
        key = (rule.direction, rule.protocol, rule.peer, rule.is_return, ports, alone)
        groups.setdefault(key + ((split(rule),) if split else ()), []).append(rule)
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


def _note(what: str, reference: str = ESSENTIALS) -> tuple[str, ...]:
    return (f"{what} [{reference}]",)


def _essential(action: str, protocol=None, *, flow: str, what: str, **match) -> Entry:
    """A host essential: its own flow name (host-...) and reference."""
    return Entry(action, protocol, flows=(f"host-{flow}",), notes=_note(what), **match)


def _v(cidrs, family: int) -> tuple[str, ...]:
    return tuple(of_family(cidrs, family))


def _head(family: int, direction: str, stateful: bool) -> list[Entry]:
    """What every chain starts with: loopback, neighbour discovery, replies."""
    entries = []
    if direction in ("ingress", "egress"):
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
    """The host essentials of the ingress or egress chain, before the matrix's rules."""
    inbound = direction == "ingress"
    here = "src" if inbound else "dst"
    out = _icmp_errors(family)
    echo = _v(ess.echo_from, family)
    if echo and (inbound or not stateful):
        out.append(
            _essential(
                "allow",
                ICMP[family],
                flow="echo",
                what="Echo (ping) from the admin sources (peers.ssh_admin;"
                " host_firewall.icmp_echo)",
                **{here: echo},
                icmp_type="echo-request" if inbound else "echo-reply",
            )
        )
    ssh = _v(ess.admin_ssh, family)
    if ssh and (inbound or not stateful):
        what = "Administrative SSH to the load balancer host (peers.ssh_admin)"
        out.append(_service("admin-ssh", what, "tcp", 22, ssh, not inbound, ess))
    services = (
        (ess.ntp, "udp", 123, "ntp", "NTP time sync (host_firewall.ntp_servers)"),
        (
            ess.metadata,
            "tcp",
            80,
            "metadata",
            "The cloud's instance metadata service (host_firewall.metadata)",
        ),
    )
    for addresses, protocol, port, flow, what in services:
        addresses = _v(addresses, family)
        if addresses and (not inbound or not stateful):
            out.append(_service(flow, what, protocol, port, addresses, inbound, ess))
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
    cluster = _v(ess.pods, family) + (() if inbound else _v(ess.services, family))
    if cluster:
        what = (
            "Pods to their node (network.pod_cidrs)"
            if inbound
            else "The node to pods and services (network.pod_cidrs, service_cidrs)"
        )
        out.append(_essential("allow", flow="pods", what=what, **{here: cluster}))
    return out


def _icmp_errors(family: int) -> list[Entry]:
    what = (
        "ICMP errors: unreachable, fragmentation needed, time exceeded"
        " (path MTU discovery, also without conntrack)"
    )
    return [
        (
            _essential(
                "allow", ICMP[family], flow="icmp-errors", what=what, icmp_type=kind
            )
            if not i
            else Entry(
                "allow", ICMP[family], icmp_type=kind, flows=("host-icmp-errors",)
            )
        )
        for i, kind in enumerate(ICMP_ERRORS[family])
    ]


def _service(flow, what, protocol, port, addresses, back: bool, ess) -> Entry:
    """A host essential on one service port; `back`: its stateless return rule
    (replies only, where the protocol tells them)."""
    if not back:
        side = "src" if flow == "admin-ssh" else "dst"
        match = {side: addresses, "dports": ((port, port),)}
        return _essential("allow", protocol, flow=flow, what=what, **match)
    side = "dst" if flow == "admin-ssh" else "src"
    entry = _essential(
        "allow",
        protocol,
        flow=flow,
        what="Return traffic: " + what,
        **{side: addresses},
        dports=(ess.ephemeral,),
        sports=((port, port),),
        reply=protocol == "tcp",
    )
    if protocol == "udp":
        entry = replace(entry, notes=entry.notes + (UDP_NOTE,))
    return entry


def _addressed(entry, side, cidrs, label, fr: FamilyRules, quotas, why) -> Entry:
    """The entry matching `cidrs` on one side: a list, or a named set when long."""
    if not use_ipset(cidrs, quotas):
        return replace(entry, **{side: tuple(cidrs)})
    if len(cidrs) > SET_MAX:
        raise HostFirewallError(
            f"{len(cidrs)} addresses in {label}: more than a kernel set holds"
            f" ({SET_MAX}); {why}"
        )
    aset = AddressSet(label, fr.family, tuple(cidrs))
    fr.sets[aset.label] = aset
    return replace(entry, **{f"{side}_set": aset})


def _group_entries(group, subnets, quotas, fw: HostFirewall):
    """One entry per family for rules that share one: (family, entry) pairs."""
    first = group[0]
    cidrs = peer_cidrs(first, subnets)
    if first.ports is None:
        dports, sports = (), ()
    elif first.is_return:
        dports, sports = (first.ports,), tuple(r.source_ports for r in group)
    else:
        dports, sports = tuple(r.ports for r in group), ()
    notes = tuple(rule_note(r) for r in group)
    if sports and first.protocol == "udp":
        notes += (UDP_NOTE,)
    for family, fr in fw.families.items():
        mine = of_family(cidrs, family)
        if any(c.endswith("/0") for c in mine):
            mine = [c for c in mine if c.endswith("/0")][:1]  # covers the rest
        if not mine:  # every address is of the other family
            continue
        entry = Entry(
            "allow",
            None if first.protocol == "all" else first.protocol,
            dports=dports,
            sports=sports,
            reply=bool(sports) and first.protocol == "tcp",
            flows=flow_names(group),
            notes=notes,
        )
        side = "src" if first.direction == "ingress" else "dst"
        why = f"rule {first.name}"
        yield family, _addressed(entry, side, mine, first.peer.label, fr, quotas, why)


def build(
    role: str,
    rules: list[Rule],
    subnets: dict,
    stateful: bool,
    families=FAMILIES,
    quotas: Quotas = Quotas(),
    essentials: Essentials | None = None,
    jobs: Jobs | None = None,
) -> HostFirewall:
    """The host firewall of one role from its rules of the matrix."""
    ess = essentials or Essentials()
    fw = HostFirewall(role, stateful)
    attach = {"ingress": "input", "egress": "output"}
    for family in families:
        fr = FamilyRules(family)
        for direction, hook in attach.items():
            entries = _head(family, direction, stateful)
            entries += _essentials(family, direction, ess, stateful)
            fr.chains[direction] = Chain(direction, hook, entries)
        fw.families[family] = fr
    passing: dict = {(f, d): [] for f in families for d in attach}
    for _, group in group_rules(rules):
        for family, entry in _group_entries(group, subnets, quotas, fw):
            fw.families[family].chains[group[0].direction].entries.append(entry)
            if not entry.sports:  # containers have no stateless return rules
                passing[family, group[0].direction].append(entry)
    for family, fr in fw.families.items():
        inbound, outbound = passing[family, "ingress"], passing[family, "egress"]
        fr.chains["forward"] = _forward(role, family, ess, inbound, outbound, jobs)
        if jobs is not None:
            egress = [r for r in rules if r.direction == "egress" and not r.is_return]
            fr.chains["jobs"] = _jobs(fr, egress, subnets, quotas, jobs)
        for chain in fr.chains.values():
            chain.entries.append(Entry("drop", notes=("Everything else",)))
    return fw


def _forward(role, family, ess, inbound, outbound, jobs) -> Chain:
    """Container traffic by direction: in through DNAT by the ingress rules on the
    original port, out by the egress rules from the pods or through the jobs chain."""
    pods = _v(ess.pods, family)
    entries = _head(family, "forward", True)
    if pods:
        entries.append(
            _essential(
                "allow",
                flow="pods",
                what="Pods to pods and to services (network.pod_cidrs, service_cidrs)",
                src=pods,
                dst=pods + _v(ess.services, family),
            )
        )
    entries += [replace(e, ctstate=("DNAT",), original=True) for e in inbound]
    what = (
        "Reached through DNAT (a published port, a NodePort) and let in by no"
        " ingress rule above, whatever port it was sent to"
    )
    entries.append(_essential("drop", flow="dnat", what=what, ctstate=("DNAT",)))
    if jobs is not None:
        runtime = "Podman" if jobs.bridges == PODMAN_BRIDGES else "Docker"
        what = f"Job containers ({runtime}'s bridges): the jobs chain decides"
        for i, bridge in enumerate(jobs.bridges):
            notes = _note(what, JOBS) if not i else ()
            entries.append(Entry("goto", bridge=bridge, goto="jobs", notes=notes))
    else:
        entries += [replace(e, src=pods) if pods else e for e in outbound]
        # routed to a pod directly (another node's masqueraded NodePort)
        entries += [replace(e, dst=pods) for e in inbound] if pods else []
    return Chain("forward", jobs.attach if jobs else FORWARD_ATTACH[role], entries)


def _jobs(fr: FamilyRules, egress, subnets, quotas, jobs: Jobs) -> Chain:
    """What job containers may reach: never the host agents' flows; the metadata
    service, link-local addresses and the install's own ranges only where a job's
    flow names them; the rest of the role's egress."""
    family, made = fr.family, []
    fw = HostFirewall("", True, {family: fr})
    for _, group in group_rules(egress, jobs.kind):
        for _, entry in _group_entries(group, subnets, quotas, fw):
            made.append((jobs.kind(group[0]), entry))
    host = _note("Not for jobs: the host's own agent makes this flow", JOBS)
    entries = [
        replace(e, action="drop", flows=("jobs-host-only",), notes=e.notes + host)
        for k, e in made
        if k == "host"
    ]

    def drop(flow, what, cidrs) -> list[Entry]:
        cidrs = _v(cidrs, family)
        if not cidrs:
            return []
        entry = Entry("drop", flows=(f"jobs-{flow}",), notes=_note(what, JOBS))
        label = f"jobs_{flow.replace('-', '_')}"
        return [_addressed(entry, "dst", cidrs, label, fr, quotas, what)]

    # A job's flow to a named address passes first (the DNS server in a role's
    # subnet, GCP's at 169.254.169.254); one to anywhere meets the drops first.
    wide = [k == "named" and any(c.endswith("/0") for c in e.dst) for k, e in made]
    entries += [e for (k, e), w in zip(made, wide) if k == "named" and not w]
    entries += drop(
        "metadata",
        "Jobs to the instance metadata service: it hands out the instance's"
        " credentials (host_firewall.jobs.metadata)",
        jobs.metadata,
    )
    entries += drop(
        "link-local",
        "Jobs to link-local addresses (host_firewall.jobs.metadata)",
        jobs.link_local,
    )
    entries += drop(
        "internal",
        "Jobs to the install's own ranges (network.subnets but the balancer's,"
        " pod_cidrs, service_cidrs), unless a job's flow above names them"
        " (host_firewall.jobs.internal)",
        jobs.internal,
    )
    entries += drop("blocked", "Jobs to host_firewall.jobs.blocked_cidrs", jobs.blocked)
    entries += [e for (k, e), w in zip(made, wide) if k == "inherited" or w]
    return Chain("jobs", None, entries)


def for_profile(rules: list[Rule], matrix, profile, quotas: Quotas) -> dict:
    """Every role's host firewall: role -> HostFirewall, in the matrix's role order.

    A pure function of its arguments, which the iptables and nftables emitters of one
    generate pass alike: the last answer is kept (the emitters only read it)."""
    key = (tuple(rules), quotas)
    last = _last_built
    if last and last[0] is matrix and last[1] is profile and last[2] == key:
        return last[3]
    out = _for_profile(rules, matrix, profile, quotas)
    _last_built[:] = [matrix, profile, key, out]
    return out


_last_built: list = []  # [matrix, profile, (rules, quotas), answer] of the last call


def _for_profile(rules: list[Rule], matrix, profile, quotas: Quotas) -> dict:
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
                jobs_for(profile, role),
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

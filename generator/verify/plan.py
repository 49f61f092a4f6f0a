"""The plan of probes, a pure function of the matrix (and the profile): where each host
of the bed stands (two hosts per compute role in its subnet, one per peer inside its
CIDRs, a stand-in from 198.18.0.0/15 for 0.0.0.0/0, IPv6 addresses from a ULA), which
properties are probed and in which order (each property's probes are in probes.py),
the order the probes run in, and the ports each host serves.
"""

from __future__ import annotations

import ipaddress

from ..matrix import Matrix
from .hops import packet_paths
from .model import (  # noqa: F401 (STAND_IN_RANGE: a public name)
    STAND_IN_RANGE,
    Draft,
    Host,
    Probe,
    ProbePlan,
    VerifyError,
    _pick,
    _v4,
)
from .probes import (
    flows,
    host_firewall,
    isolation,
    outsiders,
    served,
    settle_ipv6,
    unlisted_between_roles,
)

HOSTS_PER_ROLE = {
    "load_balancer": 1,
    "kubernetes_nodes": 2,
    "nomad_clients": 2,
    "nomad_servers": 2,
    "external_vms": 2,
}
UNLISTED_CANDIDATES = (9, 7, 13, 19, 37, 79, 119, 9999, 12345, 23456)
STAND_IN6 = ipaddress.ip_network("fd72:6765:6e00::/64")  # a ULA no profile uses


def unlisted_port(matrix: Matrix) -> int:
    named = [r.ports for r in matrix.rules if r.ports and not r.is_return]
    named += [r.source_ports for r in matrix.rules if r.source_ports]
    for port in UNLISTED_CANDIDATES:
        if not any(lo <= port <= hi for lo, hi in named):
            return port
    raise VerifyError("every candidate port is named by a rule; none left to probe")


def stand_in(profile_nets: list) -> ipaddress.IPv4Address:
    for block in STAND_IN_RANGE.subnets(new_prefix=24):
        address = block[10]
        if not any(address in n for n in profile_nets if n.prefixlen):
            return address
    raise VerifyError("no stand-in address for 0.0.0.0/0 outside the profile's")


def make_plan(matrix: Matrix, subnets: dict, profile=None) -> ProbePlan:
    """Hosts and probes; with the profile, also the host-firewall test bed."""
    draft = Draft(matrix, subnets, unlisted_port(matrix))
    if profile is not None:
        from ..planner import paths_of

        draft.paths = paths_of(profile)
    profile_nets = [n for nets in subnets.values() for n in _v4(nets)]
    profile_nets += [n for r in matrix.rules for n in _v4(r.peer.cidrs)]
    _place_roles(draft)
    _place_peers(draft, profile_nets)

    # The properties, in this order (a probe asked for twice keeps its first place).
    flows(draft)
    draft.serves = served(draft)
    isolation(draft)
    unlisted_between_roles(draft)
    outsiders(draft)
    if profile is not None:
        host_firewall(draft, profile)
        packet_paths(draft, profile)
        for i, host in enumerate(h for h in draft.hosts if not h.parent):
            host.address6 = STAND_IN6[i + 10]
        settle_ipv6(draft)

    hosts = draft.hosts
    ordered = sorted(
        draft.probes.values(),
        key=lambda p: (
            hosts.index(p.src),
            hosts.index(p.dst),
            p.protocol,
            p.port,
            p.kind,
        ),
    )
    _listen(hosts, ordered)
    return ProbePlan(hosts, ordered, draft.unlisted, draft.skipped)


def _place_roles(draft: Draft) -> None:
    """Role hosts in their role's subnet, around the single-address peers."""
    matrix, used = draft.matrix, draft.used
    used |= {n[0] for r in matrix.rules for n in _v4(r.peer.cidrs) if n.prefixlen == 32}
    for role in matrix.roles():
        nets = _v4(draft.subnets.get(role, ()))
        if not nets:
            raise VerifyError(
                f"verify places a host of {role} in its subnet, and network.subnets.{role}"
                " has no IPv4 network"
            )
        for i in range(HOSTS_PER_ROLE[role]):
            address = _pick(nets[0], used)
            if address is None:
                raise VerifyError(f"no free address for a {role} host in {nets[0]}")
            used.add(address)
            host = Host(f"{role}#{i + 1}", address, role=role)
            draft.hosts.append(host)
            draft.role_hosts.setdefault(role, []).append(host)
        if HOSTS_PER_ROLE[role] == 1:
            draft.role_hosts[role][0].key = role


def _place_peers(draft: Draft, profile_nets: list) -> None:
    """One host per peer, inside the peer's CIDRs (peers at one address share it);
    0.0.0.0/0 gets the stand-in."""
    by_address: dict = {}
    anywhere = stand_in(profile_nets)
    for rule in draft.matrix.rules:
        if rule.peer.role:
            continue
        nets = _v4(rule.peer.cidrs)
        if not nets:
            note = f"{rule.name}: no IPv4 address in its peer; not probed"
            if note not in draft.skipped:
                draft.skipped.append(note)
            continue
        key = tuple(nets)
        host = draft.peer_host.get(key)
        if host is None:
            first = nets[0]
            if first.prefixlen == 0:
                address = anywhere
            elif first.num_addresses == 1:
                address = first[0]
            else:
                address = _pick(first, draft.used) or first[0]
            host = by_address.get(address)
            if host is None:
                host = Host("", address, stand_in=first.prefixlen == 0)
                draft.used.add(address)
                by_address[address] = host
                draft.hosts.append(host)
            draft.peer_host[key] = host
        name = rule.peer.name or "cidrs"
        if name not in host.labels:
            host.labels.append(name)
    for i, host in enumerate(h for h in draft.hosts if not h.role):
        host.key = f"peer{i + 1}:{'+'.join(host.labels)}"


def _listen(hosts: list[Host], ordered: list[Probe]) -> None:
    """The ports each host's agent serves: what its probes reach (the kernel answers
    ICMP); a container serves what its host publishes."""
    for probe in ordered:
        if probe.protocol == "icmp":
            continue  # the kernel answers
        (probe.dst.tcp if probe.protocol == "tcp" else probe.dst.udp).add(probe.port)
    for host in hosts:
        if host.parent:  # the container serves what its host publishes
            for probe in ordered:
                if probe.dst is host.parent and probe.protocol == "tcp":
                    if any(lo <= probe.port <= hi for lo, hi in host.published):
                        host.tcp.add(host.container_port or probe.port)

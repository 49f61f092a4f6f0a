"""verify: load the generated iptables rules into a test bed of network namespaces
and send real packets, to prove the flows that must connect do and the rest do not.

The test bed: one namespace per host, each joined by a veth pair to a bridge that lives
in a namespace of its own (never the host's). Every host has one /32 address and an
on-link default route, so every address is reachable on the one segment whatever
subnet it belongs to. Role hosts (two per compute role, so that Nomad-to-Nomad and
VM-to-VM can be tried) get an address from the role's subnet and load their role's
rules with the generated apply.sh, as an operator would. Peer hosts (external, VCS,
DNS, admin, ...) get an address from the peer's own CIDRs and no firewall. A peer of
0.0.0.0/0 needs a stand-in: 198.18.0.10 (198.18.0.0/15 is the benchmarking range,
never routed), or the .10 of the next /24 there if the profile uses it, so that
only an "anywhere" rule can let it through. One agent per namespace
(generator.netprobe) serves the host's ports and runs its probes in parallel; a
probe gives up after 0.3 s, and a surprise is tried once more at 1 s.

With the profile, the bed is shaped like real hosts (see _host_firewall_probes):
containers behind a bridge with MASQUERADE and DNAT, IPv6 addresses on every host,
the host essentials' servers, an operator's DROP after rulegen's jump, and the
rollback guard proved with a ruleset that cuts the admin's SSH.

What is probed (expectations come from the rules and the page, not from `explain`):
- must connect: every rule of the matrix, from a host inside its peer (the low,
  middle and high port of a range; protocol all: a TCP and a UDP probe on a port no
  rule names); UDP must get an answer;
- must fail: between two hosts of an isolated role (Nomad clients, external VMs) on
  every port they serve that no acknowledged site flow opens; a port no rule names between every pair of roles not joined
  by an all-protocol rule; the external host, and every source of a site flow, to
  every port a role serves that no ingress rule publishes to it.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .matrix import Matrix, Rule

STAND_IN_RANGE = ipaddress.ip_network("198.18.0.0/15")
ISOLATED = ("nomad_clients", "external_vms")  # the page: no traffic between two of them
HOSTS_PER_ROLE = {
    "load_balancer": 1,
    "kubernetes_nodes": 2,
    "nomad_clients": 2,
    "nomad_servers": 2,
    "external_vms": 2,
}
UNLISTED_CANDIDATES = (9, 7, 13, 19, 37, 79, 119, 9999, 12345, 23456)
TIMEOUT = 0.3  # a probe on one bridge answers in well under a millisecond
RETRY_TIMEOUT = 1.0  # a surprise is tried once more, slowly, before it is reported
READY_TIMEOUT = 15.0
COMMAND_TIMEOUT = 60
# Every namespace of a bed is named <prefix>-br or <prefix>-h<N>, the prefix being
# rgv and 6 hex digits; a live run holds RUN_DIR/<prefix>.lock (cleanup skips it).
BED_NAME = re.compile(r"^(rgv[0-9a-f]{6})-(?:br|h[0-9]+)$")
RUN_DIR = Path("/run/rulegen")
CAUGHT = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
TMP_PREFIX = "rulegen-verify-"  # + the bed's prefix: the rules a run loads


class Interrupted(KeyboardInterrupt):
    """A signal stopped verify; `left` names the namespaces that could not go."""

    def __init__(self, started: bool, left: list[str]):
        super().__init__("interrupted")
        self.started, self.left = started, left


class _deferred_signals:
    """Hold SIGINT, SIGTERM and SIGHUP until the block is done (then they arrive),
    so that a step that must finish (creating and recording a namespace, removing
    the bed) is never cut in half."""

    def __enter__(self):
        self.old = (
            signal.pthread_sigmask(signal.SIG_BLOCK, CAUGHT) if _main_thread() else None
        )

    def __exit__(self, *exc) -> None:
        if self.old is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, self.old)


class VerifyError(Exception):
    """The test bed cannot be built or run; str() says why."""


@dataclass
class Host:
    key: str
    address: ipaddress.IPv4Address
    role: str | None = None
    labels: list[str] = field(default_factory=list)
    stand_in: bool = False
    tcp: set = field(default_factory=set)
    udp: set = field(default_factory=set)
    ns: str = ""
    address6: ipaddress.IPv6Address | None = None
    # A container behind this host (a bridge, MASQUERADE out, DNAT in for `published`).
    parent: Host | None = None
    published: list = field(default_factory=list)  # port ranges DNAT'd to the container
    drops: list = field(default_factory=list)  # (source, port): the operator's DROPs

    @property
    def title(self) -> str:
        return self.key if self.role else "+".join(self.labels)

    @property
    def acting_role(self) -> str | None:
        """The role whose rules the host's traffic meets (a container: its host's)."""
        return self.parent.role if self.parent else self.role

    @property
    def seen_as(self) -> ipaddress.IPv4Address:
        """The address others see (a container is masqueraded behind its host)."""
        return self.parent.address if self.parent else self.address


@dataclass
class Probe:
    src: Host
    dst: Host
    protocol: str
    port: int
    expect: bool
    why: list[str] = field(default_factory=list)
    # "matrix" (the page's flows), "essential", "ipv6", "forward", "operator",
    # "rollback": all but the first go beyond what `explain` answers.
    kind: str = "matrix"
    tag: str = ""

    @property
    def six(self) -> bool:
        return self.kind == "ipv6"

    @property
    def id(self) -> str:
        tag = f"#{self.tag}" if self.tag else ""
        v6 = "/v6" if self.six else ""
        return f"{self.src.key}>{self.dst.key}>{self.protocol}/{self.port}{v6}{tag}"

    @property
    def target(self) -> str:
        return str(self.dst.address6 if self.six else self.dst.address)

    def text(self) -> str:
        src = self.src.address6 if self.six else self.src.address
        what = (
            "icmp echo" if self.protocol == "icmp" else f"{self.protocol}/{self.port}"
        )
        return (
            f"{what} {self.src.title} ({src}) -> {self.dst.title} ({self.target})"
            + (f" [{self.tag}]" if self.tag else "")
        )


@dataclass
class ProbePlan:
    hosts: list[Host]
    probes: list[Probe]
    unlisted: int
    skipped: list[str] = field(default_factory=list)


# --- the plan: hosts and probes, a pure function of the matrix -------------------


def _v4(cidrs) -> list[ipaddress.IPv4Network]:
    nets = [ipaddress.ip_network(c, strict=False) for c in cidrs]
    return [n for n in nets if n.version == 4]


def _pick(net: ipaddress.IPv4Network, used: set, start: int = 10):
    """A host address inside `net` that is not taken yet (None if all are)."""
    size = net.num_addresses
    if size <= 4:
        offsets = range(size)
    else:
        offsets = range(start if size > start + 2 else 1, size - 1)
    for offset in offsets:
        address = net[offset]
        if address not in used:
            return address
    return None


def sample_ports(ports: tuple[int, int] | None, unlisted: int) -> list[int]:
    if ports is None:
        return [unlisted]
    lo, hi = ports
    return [lo] if lo == hi else sorted({lo, (lo + hi) // 2, hi})


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
    """Hosts and probes; with the profile, also the host-firewall test bed (below)."""
    unlisted = unlisted_port(matrix)
    used: set = set()
    hosts: list[Host] = []
    role_hosts: dict[str, list[Host]] = {}
    skipped: list[str] = []
    profile_nets = [n for nets in subnets.values() for n in _v4(nets)]
    profile_nets += [n for r in matrix.rules for n in _v4(r.peer.cidrs)]

    # Single-address peers keep their address: role hosts go around them.
    used |= {n[0] for r in matrix.rules for n in _v4(r.peer.cidrs) if n.prefixlen == 32}
    for role in matrix.roles():
        nets = _v4(subnets.get(role, ()))
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
            hosts.append(host)
            role_hosts.setdefault(role, []).append(host)
        if HOSTS_PER_ROLE[role] == 1:
            role_hosts[role][0].key = role

    peer_host: dict[tuple, Host] = {}
    by_address: dict = {}
    anywhere = stand_in(profile_nets)
    for rule in matrix.rules:
        if rule.peer.role:
            continue
        nets = _v4(rule.peer.cidrs)
        if not nets:
            note = f"{rule.name}: no IPv4 address in its peer; not probed"
            if note not in skipped:
                skipped.append(note)
            continue
        key = tuple(nets)
        host = peer_host.get(key)
        if host is None:
            first = nets[0]
            if first.prefixlen == 0:
                address = anywhere
            elif first.num_addresses == 1:
                address = first[0]
            else:
                address = _pick(first, used) or first[0]
            host = by_address.get(address)
            if host is None:
                host = Host("", address, stand_in=first.prefixlen == 0)
                used.add(address)
                by_address[address] = host
                hosts.append(host)
            peer_host[key] = host
        name = rule.peer.name or "cidrs"
        if name not in host.labels:
            host.labels.append(name)
    for i, host in enumerate(h for h in hosts if not h.role):
        host.key = f"peer{i + 1}:{'+'.join(host.labels)}"

    probes: dict[tuple, Probe] = {}

    def add(src, dst, protocol, port, expect, why, kind="matrix") -> None:
        key = (src.key, dst.key, protocol, port, kind == "ipv6")
        probe = probes.get(key)
        if probe is None:
            probes[key] = Probe(src, dst, protocol, port, expect, [why], kind)
            return
        if probe.expect != expect:
            raise VerifyError(
                f"the plan both requires and forbids {probe.text()}:"
                f" {'; '.join(probe.why)} / {why}"
            )
        if why not in probe.why:
            probe.why.append(why)

    def representative(rule: Rule, own: Host) -> Host | None:
        if rule.peer.role:
            others = [h for h in role_hosts.get(rule.peer.role, ()) if h is not own]
            return others[0] if others else None
        nets = _v4(rule.peer.cidrs)
        return peer_host.get(tuple(nets)) if nets else None

    # Must connect: every rule, from (or to) a host inside its peer.
    for rule in matrix.rules:
        if rule.is_return:
            continue  # a stateless reply is proved by its request's probe
        own = role_hosts[rule.role][0]
        other = representative(rule, own)
        if other is None:
            continue
        src, dst = (other, own) if rule.direction == "ingress" else (own, other)
        protocols = ("tcp", "udp") if rule.protocol == "all" else (rule.protocol,)
        why = f"flow {rule.flow} ({rule.name}{_replies(matrix, rule)})"
        for protocol in protocols:
            for port in sample_ports(rule.ports, unlisted):
                add(src, dst, protocol, port, True, why)

    # What each role serves: the ports its ingress rules open (sampled).
    serves: dict[str, set] = {}
    for role in role_hosts:
        found = {("tcp", unlisted)}
        for rule in matrix.for_role(role, "ingress"):
            if rule.is_return:
                continue
            protocols = ("tcp", "udp") if rule.protocol == "all" else (rule.protocol,)
            for protocol in protocols:
                found |= {(protocol, p) for p in sample_ports(rule.ports, unlisted)}
        serves[role] = found

    # Must fail: two hosts of an isolated role, on everything they serve.
    for role in ISOLATED:
        pair = role_hosts.get(role, [])
        if len(pair) < 2:
            continue
        # A site flow may open some of it, acknowledged: the rest stays shut.
        opened = [
            r
            for r in matrix.for_role(role, "ingress")
            if r.peer.role == role and not r.is_return
        ]
        for src, dst in ((pair[0], pair[1]), (pair[1], pair[0])):
            for protocol, port in sorted(serves[role]):
                if any(_allows(r, protocol, port) for r in opened):
                    continue
                add(src, dst, protocol, port, False, f"no traffic between two {role}")

    # Must fail: a port no rule names, between roles no all-protocol rule joins.
    def joined(a: str, b: str) -> bool:
        out = any(
            r.protocol == "all" and r.peer.role == b
            for r in matrix.for_role(a, "egress")
        )
        into = any(
            r.protocol == "all" and r.peer.role == a
            for r in matrix.for_role(b, "ingress")
        )
        return out or into

    role_list = [h for h in hosts if h.role]
    for src in role_list:
        for dst in role_list:
            if src is dst or src.role == dst.role or joined(src.role, dst.role):
                continue
            add(src, dst, "tcp", unlisted, False, f"port {unlisted} is in no rule")

    # Must fail: the external host, and the sources of site flows, to whatever a role
    # serves but does not publish to them.
    site_sources = {
        r.peer.name
        for r in matrix.rules
        if r.site and r.direction == "ingress" and not r.peer.role
    }

    def external(host: Host) -> bool:
        return any("external" in label.split("_and_") for label in host.labels)

    outsiders = [
        (h, "external" if external(h) else "site flow source")
        for h in hosts
        if external(h) or site_sources & set(h.labels)
    ]
    for src, who in outsiders:
        for dst in role_list:
            for protocol, port in sorted(serves[dst.role]):
                if not _published(
                    matrix, dst.role, src.address, protocol, port, subnets
                ):
                    add(src, dst, protocol, port, False, f"{who}, not published")

    if profile is not None:
        _host_firewall_probes(
            matrix,
            subnets,
            profile,
            hosts,
            role_hosts,
            serves,
            used,
            add,
            probes,
            unlisted,
        )
        for i, host in enumerate(h for h in hosts if not h.parent):
            host.address6 = STAND_IN6[i + 10]
        for probe in probes.values():
            if probe.kind == "ipv6":
                probe.expect = _expect(
                    matrix, subnets, probe.src, probe.dst, "tcp", probe.port, six=True
                )

    ordered = sorted(
        probes.values(),
        key=lambda p: (
            hosts.index(p.src),
            hosts.index(p.dst),
            p.protocol,
            p.port,
            p.kind,
        ),
    )
    for probe in ordered:
        if probe.protocol == "icmp":
            continue  # the kernel answers
        (probe.dst.tcp if probe.protocol == "tcp" else probe.dst.udp).add(probe.port)
    for host in hosts:
        if host.parent:  # the container serves what its host publishes
            for probe in ordered:
                if probe.dst is host.parent and probe.protocol == "tcp":
                    if any(lo <= probe.port <= hi for lo, hi in host.published):
                        host.tcp.add(probe.port)
    return ProbePlan(hosts, ordered, unlisted, skipped)


# --- the host-firewall test bed: containers, essentials, IPv6, operator rules ------

PUBLISHED_FLOWS = ("nodeports", "rerun")  # reached through DNAT on real hosts
CONTAINER_POOL = ipaddress.ip_network("100.64.0.0/10")  # shared address space
STAND_IN6 = ipaddress.ip_network("fd72:6765:6e00::/64")  # a ULA no profile uses


def allows(matrix, subnets, role, direction, address, protocol, port) -> bool:
    """Does a rule of `role` let this traffic through its end (by the rules alone)?"""
    if role is None:
        return True  # no firewall of ours there
    for rule in matrix.for_role(role, direction):
        if rule.is_return or rule.protocol not in ("all", protocol):
            continue
        if rule.ports and not rule.ports[0] <= port <= rule.ports[1]:
            continue
        cidrs = subnets.get(rule.peer.role, ()) if rule.peer.role else rule.peer.cidrs
        nets = [ipaddress.ip_network(c, strict=False) for c in cidrs]
        if any(n.version == address.version and address in n for n in nets):
            return True
    return False


def _expect(matrix, subnets, src: Host, dst: Host, protocol, port, six=False) -> bool:
    if six:
        a, b = src.address6, dst.address6
    else:
        a, b = src.seen_as, dst.address
    out = allows(matrix, subnets, src.acting_role, "egress", b, protocol, port)
    into = allows(matrix, subnets, dst.role, "ingress", a, protocol, port)
    return out and into


def _container_net(profile, role: str, taken: list):
    pods = [
        n for n in _v4(getattr(profile, "pod_cidrs", ())) if role == "kubernetes_nodes"
    ]
    if pods:
        return next(pods[0].subnets(new_prefix=max(24, pods[0].prefixlen)))
    for block in CONTAINER_POOL.subnets(new_prefix=24):
        if not any(block.overlaps(n) for n in taken):
            return block
    raise VerifyError("no container range outside the profile's addresses")


def _host_firewall_probes(
    matrix, subnets, profile, hosts, role_hosts, serves, used, add, probes, unlisted
) -> None:
    """Containers with DNAT and MASQUERADE, the host essentials, IPv6 addresses and
    the operator's own rules: what a real Kubernetes, Nomad or Docker host adds."""
    from .hostfw import essentials_for

    taken = [n for nets in subnets.values() for n in _v4(nets)]
    taken += [n for r in matrix.rules for n in _v4(r.peer.cidrs) if n.prefixlen]
    peers = [h for h in hosts if not h.role]
    firsts = [pair[0] for pair in role_hosts.values()]

    def service_host(cidrs, label, protocol, port) -> Host | None:
        nets = _v4(cidrs)
        if not nets:
            return None
        address = nets[0][0] if nets[0].num_addresses == 1 else _pick(nets[0], used)
        host = next((h for h in hosts if h.address == address), None)
        if host is None:
            host = Host(f"peer{len(peers) + 1}:{label}", address, labels=[label])
            used.add(address)
            hosts.append(host)
            peers.append(host)
        elif label not in host.labels:
            host.labels.append(label)
        return host

    # Host essentials: NTP, the metadata service, echo from admins, LB admin SSH.
    for role, pair in role_hosts.items():
        own = pair[0]
        ess = essentials_for(profile, role)
        for cidrs, label, protocol, port in (
            (ess.ntp, "ntp", "udp", 123),
            (ess.metadata, "metadata", "tcp", 80),
        ):
            server = service_host(cidrs, label, protocol, port)
            if server is not None:
                add(
                    own,
                    server,
                    protocol,
                    port,
                    True,
                    f"host essential: {label}",
                    "essential",
                )
        admins = [h for h in peers if any(h.address in n for n in _v4(ess.echo_from))]
        if admins:
            add(
                admins[0],
                own,
                "icmp",
                1,
                True,
                "host essential: echo from admins",
                "essential",
            )
            others = [h for h in peers if h not in admins and not h.labels == ["ntp"]]
            if others:
                add(
                    others[0],
                    own,
                    "icmp",
                    1,
                    False,
                    "echo only from admins",
                    "essential",
                )
        ssh = [h for h in peers if any(h.address in n for n in _v4(ess.admin_ssh))]
        if ssh:
            add(
                ssh[0],
                own,
                "tcp",
                22,
                True,
                "host essential: admin SSH (host LB)",
                "essential",
            )

    # A container behind the first host of each compute role; its published ports.
    for role, pair in role_hosts.items():
        if role == "load_balancer":
            continue
        own = pair[0]
        net = _container_net(profile, role, taken)
        box = Host(f"{own.key}/container", net[2], labels=[f"container on {own.key}"])
        box.parent = own
        hosts.insert(hosts.index(own) + 1, box)
        published = [
            r
            for r in matrix.for_role(role, "ingress")
            if not r.is_return
            and r.protocol == "tcp"
            and r.ports
            and any(f in r.flow for f in PUBLISHED_FLOWS)
        ]
        box.published = sorted({r.ports for r in published})
        for rule in published:
            port = rule.ports[0]
            for src in peers + [h for h in firsts if h.role != role]:
                expect = _expect(matrix, subnets, src, own, "tcp", port)
                why = f"published port through DNAT ({rule.flow})"
                add(src, own, "tcp", port, expect, why, "forward")
        # Container egress: the role's egress rules, and nothing else.
        for rule in matrix.for_role(role, "egress"):
            if rule.is_return:
                continue
            if rule.peer.role:
                found = [h for h in role_hosts.get(rule.peer.role, ()) if h is not own]
            else:
                found = [h for h in peers if (rule.peer.name or "cidrs") in h.labels]
            if not found:
                continue
            dst = found[0]
            protocol = "tcp" if rule.protocol == "all" else rule.protocol
            port = rule.ports[0] if rule.ports else unlisted
            why = f"container egress ({rule.flow})"
            expect = _expect(matrix, subnets, box, dst, protocol, port)
            add(box, dst, protocol, port, expect, why, "forward")
        for dst in firsts + peers:
            if dst is own or dst.parent:
                continue
            expect = _expect(matrix, subnets, box, dst, "tcp", unlisted)
            add(
                box,
                dst,
                "tcp",
                unlisted,
                expect,
                "container egress, unlisted port",
                "forward",
            )

    # IPv6: every role host is blocked unless a rule allows the address.
    for dst in firsts:
        # a port the role opens over IPv4, so that only the IPv6 rules can block it
        opened = [p for proto, p in serves[dst.role] if proto == "tcp"]
        port = min([p for p in opened if p != unlisted] or opened)
        for src in [h for h in hosts if not h.parent and h is not dst]:
            if src.role == dst.role:
                continue
            add(
                src,
                dst,
                "tcp",
                port,
                None,
                "IPv6: blocked unless a rule allows it",
                "ipv6",
            )

    # The operator's own DROP after rulegen's jump still drops (restrict, never shadow).
    for role, pair in role_hosts.items():
        if len(pair) < 2:
            continue
        target = pair[1]
        for rule in matrix.for_role(role, "ingress"):
            if rule.is_return or rule.protocol != "tcp" or not rule.ports:
                continue
            if rule.peer.role:
                src = next(
                    (h for h in role_hosts.get(rule.peer.role, ()) if h is not target),
                    None,
                )
            else:
                src = next(
                    (
                        h
                        for h in peers
                        if any(h.address in n for n in _v4(rule.peer.cidrs))
                    ),
                    None,
                )
            port = rule.ports[0]
            if src is None or (src.key, target.key, "tcp", port, False) in probes:
                continue
            target.drops.append((src.address, port))
            add(
                src,
                target,
                "tcp",
                port,
                False,
                "the operator's DROP after rulegen's jump",
                "operator",
            )
            break


def _replies(matrix: Matrix, rule: Rule) -> str:
    """The stateless return rule that lets the rule's replies back, if any."""
    back = "ingress" if rule.direction == "egress" else "egress"
    names = [
        r.name
        for r in matrix.for_role(rule.role, back)
        if r.is_return
        and r.source_ports == rule.ports
        and r.peer == rule.peer
        and r.protocol == rule.protocol
    ]
    return "".join(f", reply: {name}" for name in names)


def _allows(rule: Rule, protocol: str, port: int) -> bool:
    if rule.protocol not in ("all", protocol):
        return False
    return not rule.ports or rule.ports[0] <= port <= rule.ports[1]


def _published(matrix, role, address, protocol, port, subnets) -> bool:
    """Does an ingress rule of the role let this address reach the port?"""
    for rule in matrix.for_role(role, "ingress"):
        if rule.is_return or rule.protocol not in ("all", protocol):
            continue
        if rule.ports and not rule.ports[0] <= port <= rule.ports[1]:
            continue
        cidrs = subnets.get(rule.peer.role, ()) if rule.peer.role else rule.peer.cidrs
        if any(address in n for n in _v4(cidrs)):
            return True
    return False


# --- the test bed ---------------------------------------------------------------


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(
        args, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, **kwargs
    )
    if result.returncode != 0:
        raise VerifyError(f"{' '.join(args)}: {result.stderr.strip() or 'failed'}")
    return result


def preflight(needs_ipset: bool = False, engine: str = "iptables") -> None:
    if sys.platform != "linux":
        raise VerifyError("verify needs Linux network namespaces")
    if os.geteuid() != 0:
        raise VerifyError("verify needs root: it creates network namespaces")
    # iptables also for the test bed's NAT and the operator's rule
    tools = ["ip", "iptables", "iptables-restore"] + (["ipset"] if needs_ipset else [])
    tools += ["nft"] if engine == "nftables" else []
    missing = [t for t in tools if not shutil.which(t)]
    if missing:
        raise VerifyError(
            f"verify needs {', '.join(missing)}:"
            " apt-get install iproute2 iptables ipset nftables"
        )


class NamespaceBed:
    """Namespaces, bridge and agents for a plan's hosts; removed on exit, always."""

    def __init__(self, hosts: list[Host], prefix: str | None = None):
        self.hosts = hosts
        self.prefix = prefix or f"rgv{secrets.token_hex(3)}"
        self.bridge = f"{self.prefix}-br"
        self.namespaces: list[str] = []
        self.agents: dict[str, subprocess.Popen] = {}
        self.claim: int | None = None
        self.started = False
        self.release_on_close = True  # unless the caller claimed the prefix first
        self.state_root = ""

    def __enter__(self) -> NamespaceBed:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _netns(self, name: str) -> None:
        with _deferred_signals():
            _run(["ip", "netns", "add", name])
            self.namespaces.append(name)

    def _claim(self) -> None:
        """Hold a lock named by the prefix while the bed lives: `verify --cleanup`
        leaves a bed alone while its run holds the lock."""
        import fcntl

        if self.claim is not None:
            return
        with _deferred_signals():
            RUN_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(RUN_DIR / f"{self.prefix}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            self.claim = fd

    def start(self) -> None:
        self.started = True
        self.release_on_close = self.claim is None
        self._claim()
        self._netns(self.bridge)
        _run(["ip", "-n", self.bridge, "link", "add", "br0", "type", "bridge"])
        _run(["ip", "-n", self.bridge, "link", "set", "br0", "up"])
        for i, host in enumerate(self.hosts):
            host.ns = f"{self.prefix}-h{i}"
            self._netns(host.ns)
            if host.parent:
                self._container(host)
                continue
            port = f"p{i}"
            _run(
                ["ip", "link", "add", "eth0", "netns", host.ns, "type", "veth"]
                + ["peer", "name", port, "netns", self.bridge]
            )
            batch = (
                f"addr add {host.address}/32 dev eth0\n"
                "link set lo up\nlink set eth0 up\n"
                "route add default dev eth0\n"
            )
            if host.address6:
                batch += f"addr add {host.address6}/64 dev eth0 nodad\n"
            _run(["ip", "-n", host.ns, "-batch", "-"], input=batch)
            _run(["ip", "-n", self.bridge, "link", "set", port, "master", "br0", "up"])
        self._start_agents()

    def _container(self, box: Host) -> None:
        """A container behind its host: a bridge there, MASQUERADE out, DNAT in."""
        host = box.parent
        gateway = box.address - 1
        net = ipaddress.ip_network(f"{box.address}/24", strict=False)
        _run(
            ["ip", "link", "add", "eth0", "netns", box.ns, "type", "veth"]
            + ["peer", "name", "ctr0", "netns", host.ns]
        )
        _run(
            ["ip", "-n", host.ns, "-batch", "-"],
            input=(
                "link add cbr0 type bridge\n"
                f"addr add {gateway}/24 dev cbr0\n"
                "link set cbr0 up\nlink set ctr0 master cbr0 up\n"
            ),
        )
        _run(
            ["ip", "-n", box.ns, "-batch", "-"],
            input=(
                f"addr add {box.address}/24 dev eth0\n"
                "link set lo up\nlink set eth0 up\n"
                f"route add default via {gateway}\n"
            ),
        )
        nat = [f"-t nat -A POSTROUTING -s {net} -o eth0 -j MASQUERADE"]
        for lo, hi in box.published:
            nat.append(
                f"-t nat -A PREROUTING -i eth0 -p tcp --dport {lo}:{hi}"
                f" -j DNAT --to-destination {box.address}"
            )
        inside = ["ip", "netns", "exec", host.ns]
        _run(inside + ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        for rule in nat:
            _run(inside + ["iptables", "--wait"] + rule.split())

    def _start_agents(self) -> None:
        """One agent per namespace: it serves the host's ports and runs its probes."""
        sel = selectors.DefaultSelector()
        for host in self.hosts:
            args = ["ip", "netns", "exec", host.ns, sys.executable, "-m"]
            args += ["generator.netprobe", "serve"]
            args += ["--tcp", ",".join(map(str, sorted(host.tcp)))]
            args += ["--udp", ",".join(map(str, sorted(host.udp)))]
            proc = subprocess.Popen(
                args,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=Path(__file__).resolve().parent.parent,
                text=True,
            )
            self.agents[host.key] = proc
            sel.register(proc.stdout, selectors.EVENT_READ, host)
        self._answers(sel, READY_TIMEOUT, "start", lambda host, line: line == "ready")

    def _answers(self, sel, limit: float, what: str, accept) -> dict:
        """One line from each registered agent within `limit` seconds."""
        lines = {}
        deadline = time.monotonic() + limit
        while sel.get_map():
            left = deadline - time.monotonic()
            events = sel.select(timeout=left) if left > 0 else []
            if not events:
                raise VerifyError(f"agents did not {what} in time")
            for key, _ in events:
                host = key.data
                line = key.fileobj.readline().strip()
                if not accept(host, line):
                    proc = self.agents[host.key]
                    proc.kill()
                    error = proc.stderr.read().strip().splitlines()
                    raise VerifyError(
                        f"agent on {host.title} failed: {error[-1] if error else line}"
                    )
                sel.unregister(key.fileobj)
                lines[host.key] = line
        return lines

    def state(self, host: Host) -> str:
        """apply.sh's state folder (its rollback backups) for one host."""
        if not self.state_root:
            self.state_root = tempfile.mkdtemp(
                prefix=f"{TMP_PREFIX}{self.prefix}-state-"
            )
        return os.path.join(self.state_root, host.ns)

    def apply(self, host: Host, *args: str) -> list[str]:
        """apply.sh as root on `host` would run it, with the host's own state folder."""
        env = ["env", f"RULEGEN_STATE={self.state(host)}"]
        return [
            "ip",
            "netns",
            "exec",
            host.ns,
            *env,
            "sh",
            "apply.sh",
            *args,
            host.role,
        ]

    def load(self, folder: Path, roles: list[str] | None = None) -> None:
        """Run the generated apply.sh in every host of the given roles (default: all),
        then add the operator's own rules after rulegen's jump."""
        for host in self.hosts:
            if host.role and (roles is None or host.role in roles):
                _run(self.apply(host, "--yes"), cwd=folder)
                for source, port in host.drops:
                    _run(
                        ["ip", "netns", "exec", host.ns, "iptables", "--wait", "-A"]
                        + ["INPUT", "-s", str(source), "-p", "tcp"]
                        + ["--dport", str(port), "-j", "DROP"]
                    )

    def observe(
        self,
        probes: list[Probe],
        timeout: float = TIMEOUT,
        client_ports: tuple[int, int] | None = None,
        reserved: str = "",
    ) -> dict[str, str]:
        """Run the probes, every source at once; probe id -> observed outcome."""
        by_source: dict[str, list[Probe]] = {}
        for probe in probes:
            by_source.setdefault(probe.src.key, []).append(probe)
        sel = selectors.DefaultSelector()
        hosts = {h.key: h for h in self.hosts}
        for key, items in by_source.items():
            job = {
                "timeout": timeout,
                "client_ports": list(client_ports) if client_ports else None,
                "reserved": reserved,
                "probes": [
                    {
                        "id": p.id,
                        "protocol": p.protocol,
                        "address": p.target,
                        "port": p.port,
                    }
                    for p in items
                ],
            }
            agent = self.agents[key]
            agent.stdin.write(json.dumps(job) + "\n")
            agent.stdin.flush()
            sel.register(agent.stdout, selectors.EVENT_READ, hosts[key])
        rounds = (
            max(len(items) for items in by_source.values()) // 64 + 1 if probes else 0
        )
        answers = self._answers(
            sel, timeout * rounds * 2 + 10, "answer", lambda host, line: line[:1] == "{"
        )
        results: dict[str, str] = {}
        for line in answers.values():
            results.update(json.loads(line))
        return results

    def close(self) -> None:
        """Stop the agents and delete every namespace of this bed; signals wait."""
        with _deferred_signals():
            self._stop_agents()
            # By prefix, so that one created just before an interrupt goes too; an
            # `ip netns add` killed by the interrupt may still finish a moment later,
            # so look again a few times (bounded).
            names = set(self.namespaces)
            for attempt in range(5):
                names |= self._left_behind()
                if not names:
                    break
                for name in sorted(names, reverse=True):
                    subprocess.run(
                        ["ip", "netns", "delete", name],
                        capture_output=True,
                        timeout=30,
                    )
                names = set()
                time.sleep(0.1 * (attempt + 1))
            self.namespaces = []
            if self.state_root:
                shutil.rmtree(self.state_root, ignore_errors=True)
                self.state_root = ""
            if self.release_on_close:
                self.release()

    def release(self) -> None:
        """Give up the bed's lock (after the bed and its files are gone)."""
        if self.claim is not None:
            if not self._left_behind():
                (RUN_DIR / f"{self.prefix}.lock").unlink(missing_ok=True)
            os.close(self.claim)
            self.claim = None

    def _left_behind(self) -> set[str]:
        try:
            return {
                n for n in os.listdir("/run/netns") if n.startswith(self.prefix + "-")
            }
        except OSError:
            return set()

    def _stop_agents(self) -> None:
        agents = list(self.agents.values())
        for proc in agents:  # all at once: each takes a moment to notice
            try:
                proc.stdin.close()
            except (OSError, ValueError):
                pass
        for proc in agents:
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
            for stream in (proc.stdout, proc.stderr):
                if stream:
                    stream.close()
        self.agents = {}


# --- one run --------------------------------------------------------------------


@dataclass
class Outcome:
    matrix: Matrix
    plan: ProbePlan
    observed: dict[str, str]
    seconds: float
    dropped: list[Rule] = field(default_factory=list)
    engine: str = "iptables"

    @property
    def mismatches(self) -> list[Probe]:
        return [p for p in self.plan.probes if self.passed(p) != p.expect]

    def passed(self, probe: Probe) -> bool:
        return self.observed.get(probe.id) == "connected"

    @property
    def ok(self) -> bool:
        return not self.mismatches


ENGINES = ("iptables", "nftables")  # host-firewall targets verify can load


def ruleset(
    matrix: Matrix, profile, drop: list[Rule] = (), engine: str = "iptables"
) -> dict[str, str]:
    """The files `rulegen generate` writes for the engine, less any dropped rule."""
    from dataclasses import replace

    from .emitters import TARGETS
    from .pipeline import files_for

    if drop:
        matrix = replace(matrix, rules=tuple(r for r in matrix.rules if r not in drop))
    files = files_for(profile, matrix, [TARGETS[engine]])
    return {path.split("/", 1)[1]: text for path, text in files.items()}


def write_files(folder: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (folder / rel).write_text(text)


def client_ports(matrix: Matrix) -> tuple[tuple[int, int] | None, str]:
    """Stateless rulesets let replies reach the ephemeral range: use it, minus listed ports."""
    if matrix.stateful:
        return None, ""
    ephemeral = next((r.ports for r in matrix.rules if r.is_return), None)
    listed = sorted(
        {r.ports for r in matrix.rules if r.ports and not r.is_return}
        | {r.source_ports for r in matrix.rules if r.source_ports}
    )
    reserved = ",".join(f"{lo}-{hi}" if lo != hi else str(lo) for lo, hi in listed)
    return ephemeral, reserved


def find_rules(matrix: Matrix, names) -> list[Rule]:
    import difflib

    by_name = {r.name: r for r in matrix.rules}
    found = []
    for name in names:
        if name not in by_name:
            guess = difflib.get_close_matches(name, list(by_name), n=3)
            hint = f"; did you mean {', '.join(guess)}?" if guess else ""
            raise VerifyError(f"no rule named {name!r} in the matrix{hint}")
        found.append(by_name[name])
    return found


def observe_with_retry(
    bed: NamespaceBed, probes: list[Probe], matrix: Matrix, retry: float = RETRY_TIMEOUT
) -> dict:
    """Observe; a surprise is tried once more with a longer timeout before it counts."""
    ports, reserved = client_ports(matrix)
    observed = bed.observe(probes, TIMEOUT, ports, reserved)
    surprises = [p for p in probes if (observed.get(p.id) == "connected") != p.expect]
    if surprises:
        observed.update(bed.observe(surprises, retry, ports, reserved))
    return observed


GUARD_SECONDS = 2  # apply.sh --timeout in the rollback proof


def rollback(
    bed: NamespaceBed,
    plan: ProbePlan,
    matrix,
    profile,
    folder: Path,
    change=None,
    engine: str = "iptables",
):
    """The rollback guard, proved: a ruleset without admin SSH, loaded through
    apply.sh's guard by a session that is then cut, gives way to the previous
    rules by itself. Returns the two probes (cut, restored) and what was observed.
    `change` edits the files first (the tests take the guard out to see this fail)."""
    admin = next(
        (
            p
            for p in plan.probes
            if p.kind == "matrix"
            and p.expect
            and (p.protocol, p.port) == ("tcp", 22)
            and p.dst.role
            and "ssh_admin" in p.src.labels
        ),
        None,
    )
    if admin is None:
        return [], {}
    host = admin.dst
    rule = next(
        r
        for r in matrix.for_role(host.role, "ingress")
        if r.peer.name == "ssh_admin" and not r.is_return
    )
    bad = folder / "rollback"
    bad.mkdir()
    files = ruleset(matrix, profile, [rule], engine)
    write_files(bad, change(files) if change else files)
    cut = Probe(
        admin.src,
        host,
        "tcp",
        22,
        False,
        [f"a bad ruleset (without {rule.name}) cuts the admin's SSH"],
        "rollback",
        "cut",
    )
    back = Probe(
        admin.src,
        host,
        "tcp",
        22,
        True,
        ["apply.sh's rollback guard brings the previous rules back"],
        "rollback",
        "restored",
    )
    proc = subprocess.Popen(
        bed.apply(host, "--timeout", str(GUARD_SECONDS)),
        cwd=bad,
        stdin=subprocess.PIPE,  # the admin's session: never answers
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        sel = selectors.DefaultSelector()
        sel.register(proc.stderr, selectors.EVENT_READ)
        if not sel.select(timeout=COMMAND_TIMEOUT) or "loaded" not in (
            proc.stderr.readline()
        ):
            raise VerifyError(f"apply.sh on {host.title} did not load the bad ruleset")
        observed = bed.observe([cut], TIMEOUT)
    finally:
        proc.kill()  # the session is cut: only the guard is left
        proc.wait(timeout=10)
        proc.stdin.close()
        proc.stderr.close()
    deadline = time.monotonic() + GUARD_SECONDS + 10
    while True:
        seen = bed.observe([back], TIMEOUT)
        if seen.get(back.id) == "connected" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    observed.update(seen)
    return [cut, back], observed


def run(matrix: Matrix, profile, drop_names=(), engine: str = "iptables") -> Outcome:
    """Build the bed, load the (possibly thinned) rules, probe, and clean up."""
    started = time.monotonic()
    dropped = find_rules(matrix, drop_names)
    plan = make_plan(matrix, profile.subnets, profile)
    files = ruleset(matrix, profile, dropped, engine)
    preflight(any(rel.endswith(".ipset") for rel in files), engine)
    bed = NamespaceBed(plan.hosts)
    root = None
    try:
        with signals_raise():
            bed._claim()  # before the first file: --cleanup tells a live run by it
            # Named by the bed's prefix, so --cleanup can find it after a SIGKILL.
            with _deferred_signals():
                root = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{bed.prefix}-"))
            folder = root / "rules"
            folder.mkdir()
            write_files(folder, files)
            with bed:
                bed.load(folder)
                observed = observe_with_retry(bed, plan.probes, matrix)
                if not dropped:
                    extra, seen = rollback(
                        bed, plan, matrix, profile, root, engine=engine
                    )
                    plan.probes.extend(extra)
                    observed.update(seen)
    except KeyboardInterrupt:
        raise Interrupted(bed.started, sorted(bed._left_behind())) from None
    finally:
        with _deferred_signals():  # a signal now waits until all is gone
            if root is not None:
                shutil.rmtree(root, ignore_errors=True)
            bed.release()
    outcome = Outcome(matrix, plan, observed, time.monotonic() - started, dropped)
    outcome.engine = engine
    return outcome


def cleanup(only=None, unclaimed_age: float = 300.0) -> tuple[list[str], list[str]]:
    """Remove what runs killed with SIGKILL left behind: namespaces and rules
    folders named by rulegen's own pattern (and by the prefixes in `only`, when
    given), never those of a live run. A live run holds its prefix's lock; a bed
    without a lock file (made by an older rulegen) is removed only when no process
    is left in it and it is older than `unclaimed_age` seconds.
    Returns (removed, namespaces kept because their run may be alive)."""
    import fcntl

    try:
        names = sorted(n for n in os.listdir("/run/netns") if BED_NAME.match(n))
    except OSError:
        names = []
    removed, alive = [], []
    for prefix in sorted({BED_NAME.match(n).group(1) for n in names}):
        if only is not None and prefix not in only:
            continue
        mine = [n for n in names if n.startswith(prefix + "-")]
        lock = RUN_DIR / f"{prefix}.lock"
        try:
            fd = os.open(lock, os.O_RDWR)
        except OSError:
            fd = None
        try:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            elif _busy_or_young(mine, unclaimed_age):
                alive += mine
                continue
        except BlockingIOError:
            alive += mine
            os.close(fd)
            continue
        for name in sorted(mine, reverse=True):  # hosts first, then the bridge
            for pid in _pids(name):  # a left agent keeps its namespace alive
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            result = subprocess.run(
                ["ip", "netns", "delete", name], capture_output=True, timeout=30
            )
            if result.returncode == 0:
                removed.append(name)
        lock.unlink(missing_ok=True)
        if fd is not None:
            os.close(fd)
    dead = {n.split("-")[0] for n in removed}
    removed += _left_files(only, unclaimed_age, dead)
    return removed, alive


def _left_files(only, age: float, dead: set[str]) -> list[str]:
    """The rules folders (and free locks) of runs that are gone: those of `dead`
    prefixes, or whose prefix's lock is free, or that have no lock and are older
    than `age` seconds."""
    import fcntl

    removed = []
    base = Path(tempfile.gettempdir())
    pattern = re.compile(rf"^{TMP_PREFIX}(rgv[0-9a-f]{{6}})-")
    folders: dict[str, list[Path]] = {}
    for path in base.glob(f"{TMP_PREFIX}rgv*"):
        match = pattern.match(path.name)
        if match and path.is_dir() and not path.is_symlink():
            folders.setdefault(match.group(1), []).append(path)
    try:
        locks = {p.stem for p in RUN_DIR.glob("rgv*.lock")}
    except OSError:
        locks = set()
    for prefix in sorted(set(folders) | locks):
        if only is not None and prefix not in only:
            continue
        lock = RUN_DIR / f"{prefix}.lock"
        try:
            fd = os.open(lock, os.O_RDWR)
        except OSError:
            fd = None
        try:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            elif prefix not in dead and any(
                time.time() - p.stat().st_mtime < age for p in folders[prefix]
            ):
                continue
        except OSError:  # busy (a live run), or gone meanwhile
            continue
        finally:
            if fd is not None:
                os.close(fd)
        for path in folders.get(prefix, []):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(str(path))
        if fd is not None:
            lock.unlink(missing_ok=True)
    return removed


def _pids(name: str) -> list[int]:
    out = subprocess.run(
        ["ip", "netns", "pids", name], capture_output=True, text=True, timeout=30
    ).stdout.split()
    return [int(pid) for pid in out if pid.isdigit()]


def _busy_or_young(names: list[str], age: float) -> bool:
    for name in names:
        try:
            made = os.stat(f"/run/netns/{name}").st_mtime
        except OSError:
            continue
        if time.time() - made < age or _pids(name):
            return True
    return False


class signals_raise:
    """SIGTERM and SIGHUP unwind like Ctrl-C, so every finally block still runs."""

    SIGNALS = (signal.SIGTERM, signal.SIGHUP)

    def __enter__(self):
        self.old = {}
        if _main_thread():
            for sig in self.SIGNALS:
                self.old[sig] = signal.signal(sig, self._raise)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.old.items():
            signal.signal(sig, handler)

    @staticmethod
    def _raise(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


# --- report ---------------------------------------------------------------------


def report(outcome: Outcome, verbose: bool = False) -> str:
    plan, matrix = outcome.plan, outcome.matrix
    lines = [
        f"verify {matrix.profile}: CircleCI Server {matrix.server_version},"
        f" {outcome.engine}, {'stateful' if matrix.stateful else 'stateless'}"
    ]
    for rule in outcome.dropped:
        lines.append(f"dropped from the loaded rules: {rule.name}")
    lines.append("hosts:")
    for host in plan.hosts:
        what = host.role or ", ".join(host.labels)
        note = "  (stand-in for 0.0.0.0/0)" if host.stand_in else ""
        lines.append(f"  {host.key:<24} {str(host.address):<16} {what}{note}")
    lines += _grid(outcome)
    for note in plan.skipped:
        lines.append(f"skipped: {note}")
    for probe in plan.probes:
        observed = outcome.observed.get(probe.id, "not run")
        good = outcome.passed(probe) == probe.expect
        if good and not verbose:
            continue
        lines.append(
            f"{'ok      ' if good else 'MISMATCH'} {probe.text()}:"
            f" expected {'connect' if probe.expect else 'blocked'}, observed {observed};"
            f" {'; '.join(probe.why)}"
        )
    must = sum(p.expect for p in plan.probes)
    bad = len(outcome.mismatches)
    lines.append(
        f"{matrix.profile}: {len(plan.probes)} probes ({must} must connect,"
        f" {len(plan.probes) - must} must fail), {len(plan.probes) - bad} as expected,"
        f" {bad} mismatch{'es' if bad != 1 else ''}, {outcome.seconds:.1f} s"
    )
    return "\n".join(lines) + "\n"


def _grid(outcome: Outcome) -> list[str]:
    """Rows: sources; columns: destinations; cells: expected/observed connects of n."""
    hosts = outcome.plan.hosts
    cells: dict[tuple, list[int]] = {}
    for probe in outcome.plan.probes:
        cell = cells.setdefault((probe.src.key, probe.dst.key), [0, 0, 0, 0])
        cell[0] += probe.expect
        cell[1] += outcome.passed(probe)
        cell[2] += 1
        cell[3] += outcome.passed(probe) != probe.expect
    names = [f"h{i}" for i in range(len(hosts))]
    width = 9
    out = [
        "expected/observed connections of n probes, per source (row) and destination;"
        " ! marks a difference:",
        " " * 6 + "".join(f"{n:>{width}}" for n in names),
    ]
    for i, src in enumerate(hosts):
        row = f"{names[i]:<6}"
        for dst in hosts:
            cell = cells.get((src.key, dst.key))
            text = "." if not cell else f"{cell[0]}/{cell[1]}/{cell[2]}"
            if cell and cell[3]:
                text += "!"
            row += f"{text:>{width}}"
        out.append(row + f"  {src.key}")
    return out

"""What verify's layers hand to each other: the hosts of a test bed, the probes, the plan
while it is drawn (Draft) and once drawn (ProbePlan), a run's Outcome, and VerifyError,
the one error every layer raises. Also the IPv4 helpers that place a host in a network.
"""

from __future__ import annotations

import ipaddress
from dataclasses import field

from ..matrix import Matrix, Rule
from ..records import dataclass

# 198.18.0.0/15, the benchmarking range (never routed): stand-ins for 0.0.0.0/0 and
# for public addresses a profile does not list.
STAND_IN_RANGE = ipaddress.ip_network("198.18.0.0/15")


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
    container_port: int | None = None  # where published ports land (None: the same)
    bridge: str = "cbr0"  # the container's bridge on its host (Docker's: docker0, br-*)
    drops: list = field(default_factory=list)  # (source, port): the operator's DROPs
    # Packet paths (generator/paths.py): a pod keeps its own address (no MASQUERADE,
    # the others route its range through its node); a public address the host is
    # also reached at; routes of its own ((address, via, source)); a hop's NAT.
    masquerade: bool = True
    public: ipaddress.IPv4Address | None = None
    routes: list = field(default_factory=list)
    snat_from: list = field(default_factory=list)  # NAT gateway: SNAT these to itself
    dnat: list = field(default_factory=list)  # balancer: (port, to address, to port)
    snat_to: ipaddress.IPv4Address | None = None  # balancer: not keeping the client
    stands_for: str | None = None  # the role a hop host is reached as (a balancer)
    front_of: Host | None = None  # the host a hop forwards to

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
        return self.parent.address if self.parent and self.masquerade else self.address

    @property
    def hop(self) -> bool:
        """A translation on the way (a NAT gateway, a balancer), no firewall of ours."""
        return bool(self.snat_from or self.dnat)


@dataclass
class Probe:
    src: Host
    dst: Host
    protocol: str
    port: int
    expect: bool
    why: list[str] = field(default_factory=list)
    # "matrix" (the page's flows), "essential", "ipv6", "forward" (pods' and
    # containers' egress), "dnat" (published ports), "jobs" (job containers), "replies"
    # (stateless return rules), "operator", "rollback": all but the first go beyond
    # what `explain` answers.
    kind: str = "matrix"
    tag: str = ""
    sport: int | None = None  # TCP from this source port (else the kernel's choice)
    to: ipaddress.IPv4Address | None = None  # "path": the address the source uses

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
        return str(self.dst.address6 if self.six else self.to or self.dst.address)

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


@dataclass
class Draft:
    """A plan while it is drawn: the hosts placed so far and the probes by key."""

    matrix: Matrix
    subnets: dict
    unlisted: int
    hosts: list[Host] = field(default_factory=list)
    role_hosts: dict[str, list[Host]] = field(default_factory=dict)
    peer_host: dict[tuple, Host] = field(default_factory=dict)  # by the peer's nets
    used: set = field(default_factory=set)  # addresses taken
    skipped: list[str] = field(default_factory=list)
    probes: dict[tuple, Probe] = field(default_factory=dict)
    serves: dict[str, set] = field(default_factory=dict)  # role -> (protocol, port)
    paths: object = None  # generator.paths.Paths of the profile, when given

    def add(
        self,
        src,
        dst,
        protocol,
        port,
        expect,
        why,
        kind="matrix",
        tag="",
        sport=None,
        to=None,
    ) -> None:
        """One probe; the same probe asked for again gains a reason, never a
        contradiction. A source port, or an address to send to (a path probe),
        makes a probe of its own."""
        key = (src.key, dst.key, protocol, port, kind == "ipv6")
        key += ((sport,) if sport else ()) + ((to,) if to else ())
        probe = self.probes.get(key)
        if probe is None:
            self.probes[key] = Probe(
                src,
                dst,
                protocol,
                port,
                expect,
                [why],
                kind,
                tag or ("path" if to else ""),
                sport,
                to,
            )
            return
        if probe.expect != expect:
            raise VerifyError(
                f"the plan both requires and forbids {probe.text()}:"
                f" {'; '.join(probe.why)} / {why}"
            )
        if why not in probe.why:
            probe.why.append(why)


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

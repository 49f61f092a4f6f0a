"""Network ACLs (aws.network_acls): the matrix as stateless entries on each role's subnets.

An AWS network ACL sits on subnets, not instances: numbered entries (1-32766), the
lowest number first, the first match decides, no match is a deny, and no connection
state, so every flow needs its request and its reply opened on both ends. An entry
matches the protocol, one CIDR and the destination port only: a reply cannot be told
from a new connection to the same port. Hence:

- every matrix rule opens its request (its ports) and its reply (the profile's
  `ephemeral_ports`) on both ends' ACLs; a role peer becomes its subnets' CIDRs, and
  traffic inside one subnet needs no entry (ACLs never see it);
- the role whose subnets carry the NAT gateways (aws.nat_gateways_in) passes the
  other roles' traffic to addresses outside the private ranges, and its replies,
  which reach the gateways on their own ports (1024-65535);
- addresses no ACL filters (the VPC's DNS resolver, metadata, time sync) get none;
- a reply entry opens its ports to its peers for new connections too: where a port
  the role listens on lies in the reply range, an explicit deny (after the requests
  that name their peers, before the broad reply allows) keeps it to those peers;
  replies that land on that port are then dropped, so it is kept out of the hosts'
  ephemeral range (`reserved`);
- each direction holds 20 entries by default (quotas.aws.network_acl_entries, 40 at
  most): past it, entries are merged (coarsened) where that widens them least, and
  every entry says which matrix rules it covers and how much wider it is.

`derive` is a pure function of the matrix and the settings; the emitters only lay its
entries out. `Acl.decide` applies entries as AWS does; `check_flows` walks every
required flow through it, and `admitted`/`as_matrix` give what an ACL lets through
in the matrix's own terms, which `excess`, `audit` and `diff` compare.
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from .matrix import Matrix, Peer, Rule, port_text
from .records import dataclass

FIRST_NUMBER = 100
STEP = 10
MAX_NUMBER = 32766
HARD_LIMIT = 40  # entries per direction with the quota raised as far as AWS goes
NAT_PORTS = (1024, 65535)  # a NAT gateway's source ports
ANYWHERE = {4: "0.0.0.0/0", 6: "::/0"}
DIRECTIONS = ("inbound", "outbound")
MATRIX_DIRECTION = {"inbound": "ingress", "outbound": "egress"}
KINDS = ("request", "deny", "reply")  # the order of the entries in each direction
# Traffic to and from these never meets a network ACL (Amazon DNS, instance
# metadata, Amazon Time Sync); the VPC's own resolver (its base + 2) is added.
UNFILTERED = (
    "169.254.169.253/32",
    "169.254.169.254/32",
    "169.254.169.123/32",
    "fd00:ec2::253/128",
    "fd00:ec2::254/128",
    "fd00:ec2::123/128",
)
# Addresses reached without a NAT gateway (the VPC, peered and VPN networks).
PRIVATE = tuple(
    ipaddress.ip_network(c)
    for c in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10")
) + (ipaddress.ip_network("fc00::/7"),)
PROTOCOL_NUMBERS = {"tcp": "6", "udp": "17", "all": "-1"}


@dataclass(frozen=True)
class Settings:
    """What the profile decides for the ACLs beyond the matrix."""

    subnets: tuple[tuple[str, tuple[str, ...]], ...]  # (role, CIDRs), roles in order
    ephemeral: tuple[int, int]
    nat_role: str | None = None
    vpc_cidr: str | None = None
    limit: int = 20

    def of(self, role: str | None) -> tuple[str, ...]:
        return dict(self.subnets).get(role, ())

    @property
    def roles(self) -> list[str]:
        return [role for role, cidrs in self.subnets if cidrs]


def settings(profile) -> Settings | None:
    """The profile's ACL settings, or None when aws.network_acls is off."""
    if not getattr(profile, "network_acls", False):
        return None
    from .quotas import quotas_for

    return Settings(
        subnets=tuple((r, tuple(profile.subnets.get(r, ()))) for r in profile.roles()),
        ephemeral=tuple(profile.ephemeral_ports),
        nat_role=profile.nat_gateways_in,
        vpc_cidr=profile.vpc_cidr,
        limit=quotas_for(profile).aws_network_acl_entries,
    )


@dataclass(frozen=True)
class Entry:
    """One ACL entry. number 0: not numbered yet."""

    direction: str  # inbound or outbound
    kind: str  # request, deny or reply
    protocol: str  # tcp, udp or all
    ports: tuple[int, int] | None  # destination ports; None: every port
    cidr: str
    purpose: str
    covers: tuple[str, ...] = ()  # names of the matrix rules it serves
    wider: str = ""  # how much more than those rules it opens, when coarsened
    number: int = 0

    @property
    def label(self) -> str:
        """Its purpose, as people read it."""
        return ("replies: " if self.kind == "reply" else "") + self.purpose

    @property
    def action(self) -> str:
        return "deny" if self.kind == "deny" else "allow"

    @property
    def egress(self) -> bool:
        return self.direction == "outbound"

    @property
    def network(self):
        return _net(self.cidr)

    def matches(self, protocol: str, address, port: int | None) -> bool:
        """protocol: tcp, udp or another protocol's name; address: an ip_address."""
        if self.protocol != "all" and self.protocol != protocol:
            return False
        if self.ports is not None and (port is None or not _inside(port, self.ports)):
            return False
        net = self.network
        return address.version == net.version and address in net

    def text(self) -> str:
        side = "from" if self.direction == "inbound" else "to"
        return (
            f"{self.number} {self.action} {self.protocol}/{port_text(self.ports)}"
            f" {side} {self.cidr}"
        )


@dataclass(frozen=True)
class Acl:
    role: str
    subnets: tuple[str, ...]
    inbound: tuple[Entry, ...]
    outbound: tuple[Entry, ...]

    def entries(self, direction: str) -> tuple[Entry, ...]:
        return self.inbound if direction == "inbound" else self.outbound

    def decide(self, direction: str, protocol: str, address, port) -> Entry | None:
        """The entry that decides a packet (None: the default deny). address: the
        far end's (the source inbound, the destination outbound)."""
        address = ipaddress.ip_address(address)
        for entry in self.entries(direction):  # numbered in order
            if entry.matches(protocol, address, port):
                return entry
        return None

    def admits(self, direction: str, protocol: str, address, port) -> bool:
        entry = self.decide(direction, protocol, address, port)
        return entry is not None and entry.action == "allow"

    def holds(self, address) -> bool:
        address = ipaddress.ip_address(address)
        return any(
            address in _net(c)
            for c in self.subnets
            if _net(c).version == address.version
        )

    def reserved(self) -> list[tuple[str, tuple[int, int]]]:
        """(protocol, ports) of the inbound denies: replies landing there are dropped,
        so the role's hosts keep them out of their ephemeral range."""
        return [(e.protocol, e.ports) for e in self.inbound if e.kind == "deny"]


@dataclass(frozen=True)
class Layer:
    settings: Settings
    acls: tuple[Acl, ...]

    def acl(self, role: str) -> Acl | None:
        return next((a for a in self.acls if a.role == role), None)

    def holder(self, address) -> Acl | None:
        return next((a for a in self.acls if a.holds(address)), None)


# --- helpers ----------------------------------------------------------------------


def _net(text: str):
    return ipaddress.ip_network(text, strict=False)


def _inside(port: int, ports: tuple[int, int]) -> bool:
    return ports[0] <= port <= ports[1]


def _span(ports) -> int:
    return 65536 if ports is None else ports[1] - ports[0] + 1


def _port_cover(outer, inner) -> bool:
    if outer is None:
        return True
    return inner is not None and outer[0] <= inner[0] and inner[1] <= outer[1]


def unfiltered(cidr: str, s: Settings) -> bool:
    """An address (block) that no ACL filters: AWS's own services in the VPC."""
    net = _net(cidr)
    fixed = list(UNFILTERED)
    if s.vpc_cidr and _net(s.vpc_cidr).version == 4:
        vpc = _net(s.vpc_cidr)
        fixed.append(f"{vpc.network_address + 2}/32")
    return any(net.version == _net(c).version and net.subnet_of(_net(c)) for c in fixed)


def via_nat(cidr: str) -> bool:
    """Reached through a NAT gateway: anything not inside the private ranges."""
    net = _net(cidr)
    return not any(net.version == p.version and net.subnet_of(p) for p in PRIVATE)


# --- what each ACL must pass ---------------------------------------------------


def _side(out, role, sends, protocol, ports, cidrs, rule, purpose, reply_ports):
    """One end of a flow: its request leaves (sends) or arrives, its reply the other way."""
    there, back = ("outbound", "inbound") if sends else ("inbound", "outbound")
    replies = None if protocol == "all" else reply_ports
    for cidr in cidrs:
        out.setdefault(role, []).append(
            Entry(there, "request", protocol, ports, cidr, purpose, (rule,))
        )
        out[role].append(
            Entry(back, "reply", protocol, replies, cidr, purpose, (rule,))
        )


def wants(matrix: Matrix, s: Settings) -> dict[str, list[Entry]]:
    """Every entry each role's ACL needs, one per (rule, end, address), unmerged."""
    out: dict[str, list[Entry]] = {}
    roles = set(s.roles)
    for rule in matrix.rules:
        if rule.is_return or rule.role not in roles:
            continue  # replies are derived here; a transparent balancer has no subnets
        ports = None if rule.protocol == "all" else (rule.ports or (0, 65535))
        here, other = s.of(rule.role), rule.peer.role
        if other:
            far = s.of(other)
            if other == rule.role and len(far) < 2:
                continue  # inside one subnet: no ACL sees it
        else:
            far = tuple(c for c in rule.peer.cidrs if not unfiltered(c, s))
        egress = rule.direction == "egress"
        args = (rule.protocol, ports)
        _side(out, rule.role, egress, *args, far, rule.name, rule.purpose, s.ephemeral)
        if other in roles:
            _side(
                out,
                other,
                not egress,
                *args,
                here,
                rule.name,
                rule.purpose,
                s.ephemeral,
            )
        nat = s.nat_role
        if egress and not other and nat in roles and nat != rule.role:
            through = [c for c in far if via_nat(c)]
            if through:
                _nat(out, nat, args, here, through, rule, s)
    return out


def _nat(out, nat, args, sources, targets, rule: Rule, s: Settings) -> None:
    """What passes the NAT gateways' subnets: in from the role, out to the peer,
    the reply in on the gateways' ports and out to the role."""
    protocol, ports = args
    purpose = f"through the NAT gateways: {rule.purpose}"
    mine = out.setdefault(nat, [])
    for cidr in sources:
        mine.append(
            Entry("inbound", "request", protocol, ports, cidr, purpose, (rule.name,))
        )
        replies = None if protocol == "all" else s.ephemeral
        mine.append(
            Entry(
                "outbound",
                "reply",
                protocol,
                replies,
                cidr,
                purpose,
                (rule.name,),
            )
        )
    for cidr in targets:
        mine.append(
            Entry("outbound", "request", protocol, ports, cidr, purpose, (rule.name,))
        )
        replies = None if protocol == "all" else NAT_PORTS
        mine.append(
            Entry(
                "inbound",
                "reply",
                protocol,
                replies,
                cidr,
                purpose,
                (rule.name,),
            )
        )


# --- merging: exact first, then coarsening to fit the quota ---------------------


def _joined(a: Entry, b: Entry, **changes) -> Entry:
    purposes = list(dict.fromkeys(a.purpose.split("; ") + b.purpose.split("; ")))
    return replace(
        a,
        purpose="; ".join(purposes),
        covers=tuple(dict.fromkeys(a.covers + b.covers)),
        wider=changes.pop("wider", a.wider or b.wider),
        **changes,
    )


def _covers(outer: Entry, inner: Entry) -> bool:
    """Does outer allow every packet inner allows (and decide them no later)?"""
    return (
        KINDS.index(outer.kind) <= KINDS.index(inner.kind)
        and outer.action == inner.action
        and outer.direction == inner.direction
        and (outer.protocol == "all" or outer.protocol == inner.protocol)
        and _port_cover(outer.ports, inner.ports)
        and outer.network.version == inner.network.version
        and inner.network.subnet_of(outer.network)
    )


def _exact(entries: list[Entry]) -> list[Entry]:
    """The same packets in fewer entries: duplicates, adjacent ports and blocks, and
    entries another one covers."""
    changed = True
    while changed:
        changed = False
        out: list[Entry] = []
        for entry in sorted(entries, key=_order):
            for i, kept in enumerate(out):
                merged = _exact_pair(kept, entry)
                if merged is not None:
                    out[i] = merged
                    changed = True
                    break
            else:
                out.append(entry)
        entries = out
    return entries


def _exact_pair(a: Entry, b: Entry) -> Entry | None:
    if _covers(a, b):
        return _joined(a, b)
    if _covers(b, a):
        return _joined(b, a)
    same = (a.direction, a.kind, a.protocol) == (b.direction, b.kind, b.protocol)
    if not same:
        return None
    if a.cidr == b.cidr and a.ports and b.ports:
        lo, hi = sorted((a.ports, b.ports))
        if hi[0] <= lo[1] + 1:
            return _joined(a, b, ports=(lo[0], max(lo[1], hi[1])))
    if a.ports == b.ports and a.network.version == b.network.version:
        both = list(ipaddress.collapse_addresses([a.network, b.network]))
        if len(both) == 1:
            return _joined(a, b, cidr=str(both[0]))
    return None


def _order(entry: Entry) -> tuple:
    net = entry.network
    return (
        DIRECTIONS.index(entry.direction),
        KINDS.index(entry.kind),
        entry.ports or (0, 65535),
        ("tcp", "udp", "all").index(entry.protocol),
        net.version,
        int(net.network_address),
        net.prefixlen,
    )


def _coarse_pair(a: Entry, b: Entry) -> tuple[int, Entry] | None:
    """a and b as one wider entry, with the packets it adds (addresses x ports)."""
    if (a.direction, a.kind, a.protocol) != (b.direction, b.kind, b.protocol):
        return None
    if a.network.version != b.network.version:
        return None
    if a.cidr == b.cidr and a.ports and b.ports:
        lo, hi = min(a.ports[0], b.ports[0]), max(a.ports[1], b.ports[1])
        extra = (hi - lo + 1) - _span(a.ports) - _span(b.ports)
        wider = f"{extra + _extra_ports(a) + _extra_ports(b):,} more ports"
        return extra * a.network.num_addresses, _joined(
            a, b, ports=(lo, hi), wider=wider
        )
    if a.ports == b.ports:
        net = a.network
        while not b.network.subnet_of(net):
            net = net.supernet()
        extra = net.num_addresses - a.network.num_addresses - b.network.num_addresses
        wider = f"{net} for {a.cidr} and {b.cidr} ({extra:,} more addresses)"
        return extra * _span(a.ports), _joined(a, b, cidr=str(net), wider=wider)
    return None


def _extra_ports(entry: Entry) -> int:
    if not entry.wider.endswith("more ports"):
        return 0
    return int(entry.wider.split()[0].replace(",", ""))


def _coarsen_once(entries: list[Entry], direction: str) -> list[Entry] | None:
    """The entries with the one merge that widens them least, or None if none can."""
    mine = [e for e in entries if e.direction == direction and e.kind != "deny"]
    best = None
    for i, a in enumerate(mine):
        for b in mine[i + 1 :]:
            found = _coarse_pair(a, b)
            # Wider ports for the same peers before more peers on the same ports: a
            # supernet of two far-apart blocks can be the whole internet.
            if found:
                cost = (a.cidr != b.cidr, found[0])
                if best is None or cost < best[0]:
                    best = (cost, a, b, found[1])
    if best is None:
        return None
    _, a, b, merged = best
    return _exact([e for e in entries if e is not a and e is not b] + [merged])


# --- denies: the reply range kept from opening the role's listeners --------------


def denies(entries: list[Entry], role: str, s: Settings) -> list[Entry]:
    """Inbound denies for the role's request ports that a broader reply entry would
    open to peers the matrix does not name.

    Not for requests on every port (a deny would drop every reply), nor on the NAT
    gateways' subnets where the gateways' own replies land (1024-65535)."""
    requests = [e for e in entries if e.direction == "inbound" and e.kind == "request"]
    replies = [e for e in entries if e.direction == "inbound" and e.kind == "reply"]
    found: list[Entry] = []
    for request in requests:
        if request.ports is None or request.purpose.startswith("through the NAT"):
            continue
        for reply in replies:
            if reply.protocol not in (request.protocol, "all") or reply.ports is None:
                continue
            if reply.network.version != request.network.version:
                continue
            lo = max(request.ports[0], reply.ports[0])
            hi = min(request.ports[1], reply.ports[1])
            if lo > hi:
                continue
            if reply.network.subnet_of(request.network):
                continue  # the reply's peers are the request's own
            if (lo, hi) == reply.ports or (
                role == s.nat_role and reply.ports == NAT_PORTS
            ):
                continue
            found.append(
                Entry(
                    "inbound",
                    "deny",
                    request.protocol,
                    (lo, hi),
                    ANYWHERE[request.network.version],
                    f"keeps the reply range {port_text(reply.ports)} from opening"
                    f" {request.protocol}/{port_text((lo, hi))} ({request.purpose}) to"
                    " peers the matrix does not name; replies to it are dropped, so"
                    " keep it out of the hosts' ephemeral range",
                    request.covers,
                )
            )
    return _exact(found)


# --- the layer ----------------------------------------------------------------


def derive(matrix: Matrix, s: Settings) -> Layer:
    """Every role's ACL, entries numbered in order; coarsened where over s.limit."""
    acls = []
    needed = wants(matrix, s)
    for role in s.roles:
        entries = _exact(needed.get(role, []))
        entries = _exact(entries + denies(entries, role, s))
        for direction in DIRECTIONS:
            while _count(entries, direction) > s.limit:
                coarser = _coarsen_once(entries, direction)
                if coarser is None:
                    break
                allows = [e for e in coarser if e.kind != "deny"]
                entries = _exact(allows + denies(allows, role, s))
        acls.append(
            Acl(
                role,
                s.of(role),
                _numbered(entries, "inbound"),
                _numbered(entries, "outbound"),
            )
        )
    return Layer(s, tuple(acls))


def _count(entries: list[Entry], direction: str) -> int:
    return sum(e.direction == direction for e in entries)


def _numbered(entries: list[Entry], direction: str) -> tuple[Entry, ...]:
    mine = sorted((e for e in entries if e.direction == direction), key=_order)
    return tuple(replace(e, number=FIRST_NUMBER + STEP * i) for i, e in enumerate(mine))


def layer_for(profile, matrix: Matrix) -> Layer | None:
    s = settings(profile)
    return derive(matrix, s) if s else None


def fit_problems(layer: Layer, targets=()) -> list[str]:
    """One message per ACL direction over the quota (the emitters' fit check)."""
    s = layer.settings
    names = ", ".join(t.name for t in targets if "aws" in t.clouds) or "network ACLs"
    out = []
    for acl in layer.acls:
        for direction in DIRECTIONS:
            count = len(acl.entries(direction))
            if count <= s.limit:
                continue
            raise_it = (
                f"raise the quota with AWS and set quotas.aws.network_acl_entries"
                f" (at most {HARD_LIMIT})"
                if s.limit < HARD_LIMIT
                else f"AWS allows at most {HARD_LIMIT}"
            )
            out.append(
                f"{names}: the network ACL of {acl.role} needs {count} {direction}"
                f" entries, even with its entries merged as far as they go; it holds"
                f" {s.limit} per direction. Choices: {raise_it}; list fewer or larger"
                " address blocks; or set aws.network_acls: false"
            )
    return out


# --- proof: the required flows through the entries, as AWS applies them -------------


def _sample(cidr: str):
    """A host address of a block (its first usable one)."""
    net = _net(cidr)
    return net.network_address + (1 if net.num_addresses > 2 else 0)


def _hop(acl: Acl | None, direction: str, protocol, address, port) -> str | None:
    if acl is None:
        return None
    if acl.admits(direction, protocol, address, port):
        return None
    entry = acl.decide(direction, protocol, address, port)
    by = f"entry {entry.number} denies it" if entry else "no entry allows it"
    return f"{acl.role} {direction} {protocol}/{port} {address}: {by}"


def packet(layer: Layer, src, dst, protocol: str, port) -> str | None:
    """Why a packet from src to dst (addresses) is dropped, or None if it passes."""
    src, dst = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    s = layer.settings
    if unfiltered(f"{src}/{src.max_prefixlen}", s) or unfiltered(
        f"{dst}/{dst.max_prefixlen}", s
    ):
        return None
    here, there = layer.holder(src), layer.holder(dst)
    if here is not None and here is there and _same_subnet(here, src, dst):
        return None
    return _hop(here, "outbound", protocol, dst, port) or _hop(
        there, "inbound", protocol, src, port
    )


def through_nat(layer: Layer, client, server, protocol, port, cport) -> str | None:
    """Why a connection from client (in a role's subnets) to server (outside, through
    the NAT gateways) fails, request or reply, or None if both pass."""
    client, server = ipaddress.ip_address(client), ipaddress.ip_address(server)
    mine, nat = layer.holder(client), layer.acl(layer.settings.nat_role)
    hops = [
        (mine, "outbound", server, port),
        (nat, "inbound", client, port),
        (nat, "outbound", server, port),
    ]
    hops += [(nat, "inbound", server, p) for p in NAT_PORTS]  # the gateway's ports
    hops += [(nat, "outbound", client, cport), (mine, "inbound", server, cport)]
    for acl, direction, address, at in hops:
        why = _hop(acl, direction, protocol, address, at)
        if why:
            return why
    return None


def _same_subnet(acl: Acl, a, b) -> bool:
    return any(
        a in _net(c) and b in _net(c)
        for c in acl.subnets
        if _net(c).version == a.version
    )


def _client_ports(layer: Layer, role: str | None) -> list[int]:
    """Ephemeral ports a client of `role` may use: the range's ends, skipping the
    ports its ACL keeps for listeners."""
    lo, hi = layer.settings.ephemeral
    acl = layer.acl(role) if role else None
    kept = sorted(p for _, p in acl.reserved()) if acl else []

    def free(port: int, step: int) -> int | None:
        while lo <= port <= hi:
            inside = [k for k in kept if _inside(port, k)]
            if not inside:
                return port
            port = inside[0][1] + 1 if step > 0 else inside[0][0] - 1
        return None

    ends = {free(lo, 1), free(hi, -1)} - {None}
    return sorted(ends)


def check_flows(layer: Layer, matrix: Matrix) -> list[str]:
    """Every required flow of the matrix, request and reply, through the ACLs: the
    problems (an empty list when all pass). Each flow is tried from the first
    address of each source block to the first of each destination block, at the
    ends of its port range, from the ends of the client's ephemeral range."""
    s = layer.settings
    problems = []
    for rule in matrix.rules:
        if rule.is_return or rule.role not in s.roles:
            continue
        for client, server, client_role, server_role in _ends(rule, s):
            protocol = "tcp" if rule.protocol == "all" else rule.protocol
            ports = (rule.ports or (1, 65535)) if rule.protocol != "all" else (443, 443)
            nat = _uses_nat(layer, rule, server)
            for port in sorted(set(ports)):
                for cport in _client_ports(layer, client_role):
                    if nat:
                        why = through_nat(layer, client, server, protocol, port, cport)
                    else:
                        why = packet(layer, client, server, protocol, port)
                        why = why or packet(layer, server, client, protocol, cport)
                    if why:
                        problems.append(
                            f"{rule.name} ({rule.purpose}): {client}:{cport} ->"
                            f" {server}:{port}: {why}"
                        )
    return problems


def _uses_nat(layer: Layer, rule: Rule, server) -> bool:
    nat = layer.settings.nat_role
    if not nat or rule.peer.role or rule.role == nat or rule.direction != "egress":
        return False
    return via_nat(f"{server}/{server.max_prefixlen}") and layer.acl(nat) is not None


def _ends(rule: Rule, s: Settings):
    """(client address, server address, client role, server role) to try."""
    here = [_sample(c) for c in s.of(rule.role)]
    if rule.peer.role:
        there = [_sample(c) for c in s.of(rule.peer.role)]
        if rule.peer.role == rule.role:
            there = there[1:]  # from another subnet: inside one, nothing filters
    else:
        there = [_sample(c) for c in rule.peer.cidrs if not unfiltered(c, s)]
    peer_role = rule.peer.role
    for a in here:
        for b in there:
            if rule.direction == "egress":
                yield a, b, rule.role, peer_role
            else:
                yield b, a, peer_role, rule.role


# --- what an ACL lets through, in the matrix's terms -----------------------------


def _entry_rule(acl: Acl, entry: Entry) -> Rule:
    return Rule(
        role=acl.role,
        direction=MATRIX_DIRECTION[entry.direction],
        protocol=entry.protocol,
        ports=entry.ports,
        peer=Peer(cidrs=(entry.cidr,)),
        purpose=entry.label,
        reference=f"network ACL entry {entry.number}",
        flow="",
    )


def admitted(acl: Acl, direction: str) -> list[Rule]:
    """What the ACL lets through in one direction, as matrix rules (peers as
    addresses, ports as destination ports), each with the entry that decides it:
    first match, denies included."""
    from .diff import labelled, pieces, rule_boxes

    entries = acl.entries(direction)
    items = [
        (box, i)
        for i, e in enumerate(entries)
        for box in rule_boxes(_entry_rule(acl, e))
    ]

    def leaf(tags):
        first = entries[min(tags)]
        return min(tags) if first.action == "allow" else None

    by_entry: dict[int, list] = {}
    for box, index in labelled(items, leaf):
        by_entry.setdefault(index, []).append(box)
    out = []
    for index in sorted(by_entry):
        entry = entries[index]
        for piece in pieces(by_entry[index]):
            out.append(
                Rule(
                    role=acl.role,
                    direction=MATRIX_DIRECTION[direction],
                    protocol=piece.protocol if piece.protocol != "other" else "all",
                    ports=piece.ports,
                    peer=piece.peer,
                    purpose=entry.label,
                    reference=f"network ACL entry {entry.number}",
                    flow=f"acl-{acl.role}-{direction}-{entry.number}",
                )
            )
    return out


def as_matrix(layer: Layer, like: Matrix) -> Matrix:
    """The ACL layer's admitted traffic as a matrix (ingress: inbound), for diff."""
    rules = [r for acl in layer.acls for d in DIRECTIONS for r in admitted(acl, d)]
    return replace(like, rules=tuple(rules), warnings=(), notes=())


def requests(layer: Layer, matrix: Matrix) -> Matrix:
    """What the matrix asks each ACL to admit as new connections (requests), peers
    as addresses: the yardstick of `excess`."""
    needed = wants(matrix, layer.settings)
    rules = []
    for acl in layer.acls:
        for e in needed.get(acl.role, []):
            if e.kind == "request":
                rules.append(_entry_rule(acl, e))
    return replace(matrix, rules=tuple(rules), warnings=(), notes=())


def excess(layer: Layer, matrix: Matrix) -> list[str]:
    """What the ACL layer admits beyond the matrix's requests, one line a piece of
    traffic, with the entries that admit it (mostly the reply ranges, which a
    stateless ACL cannot tell from new connections), and any request it blocks."""
    from .diff import compare, piece_text

    found = compare(requests(layer, matrix), as_matrix(layer, matrix))
    lines = []
    for change in found.changes:
        direction = "inbound" if change.direction == "ingress" else "outbound"
        what = (
            "admits beyond the matrix"
            if change.kind in ("added", "widened")
            else "blocks"
        )
        for piece in change.traffic:
            lines.append(
                f"{change.role} {direction} {what}: {piece_text(piece, change.direction)}"
                f" ({'; '.join(change.references)})"
            )
    return lines

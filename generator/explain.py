"""Explain one flow: is it allowed, and by which rule on each end (or which end blocks it).

A pure function of the matrix and the roles' subnets, with the meaning the host
firewalls give the rules: a role peer matches the addresses of that role's subnets,
a CIDR peer its addresses; protocol `all` matches every port. On a stateless matrix a
connection also needs its replies allowed, by return rules (or by `all` rules).
"""

from __future__ import annotations

import ipaddress
from dataclasses import field

from .matrix import ROLES, Matrix, Rule
from .records import dataclass


class ExplainError(ValueError):
    """A query that cannot be answered; str() says why."""


@dataclass(frozen=True)
class Endpoint:
    """One end of a flow: a role (optionally one host address of it) or addresses."""

    role: str | None = None
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    given: str = field(default="", compare=False)  # as typed, when it had host bits
    peer: str | None = None  # the profile's peer list it was named by
    more: tuple = ()  # further networks: a translated end is a list (NAT gateways)
    pod: bool = False  # a pod on a host of the role, with an address of its own
    # A role's host at an address the application reaches it on (its public IP,
    # the balancer's): the path's translations apply. A role's host at its own
    # private address is reached directly; a role without an address, by its path.
    routed: bool = False

    @property
    def nets(self) -> tuple:
        return ((self.network,) if self.network is not None else ()) + self.more

    @property
    def warning(self) -> str | None:
        if not self.given:
            return None
        return f"{self.given} has host bits set; explaining {self.network}"

    @property
    def label(self) -> str:
        if self.role and self.network:
            what = f"a pod on {self.role}" if self.pod else self.role
            return f"{what} ({self.network.network_address})"
        if self.more:
            return f"{self.peer or 'cidrs'} ({', '.join(map(str, self.nets))})"
        if self.peer:
            return f"{self.peer} ({self.network})"
        return self.role or str(self.network)


def endpoint(text: str, peers: dict | None = None, roles=ROLES) -> Endpoint:
    """A role name (one of the install's `roles`), a peer list's name (its first
    block stands for it), or an address or CIDR; bad input gives ExplainError."""
    if text in ROLES and text not in roles:
        raise ExplainError(
            f"{text} is not a role of this install: its Nomad servers run in the"
            " cluster, as pods on the Kubernetes nodes (nomad.servers: in_cluster)"
        )
    if text in ROLES:
        return Endpoint(role=text)
    if peers and text in peers:
        if not peers[text]:
            raise ExplainError(f"the peer list {text!r} is empty")
        net = ipaddress.ip_network(peers[text][0], strict=False)
        return Endpoint(network=net, peer=text)
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        import difflib

        names = f", a peer list ({', '.join(sorted(peers))})" if peers else ""
        guess = difflib.get_close_matches(text, [*ROLES, *sorted(peers or ())], n=1)
        hint = f"; did you mean {guess[0]!r}?" if guess else ""
        raise ExplainError(
            f"{text!r} is neither a role ({', '.join(ROLES)}){names} nor an address"
            f" or CIDR{hint}"
        ) from None
    strict = str(net) == text or str(net.network_address) == text
    return Endpoint(network=net, given="" if strict else text)


@dataclass
class Check:
    """One firewall a packet crosses, and the rules there that let it through."""

    role: str
    direction: str
    packet: str  # "request" or "reply"
    other: Endpoint  # the peer as this firewall sees it
    rules: list[Rule] = field(default_factory=list)
    port: int = 0  # the destination port here (a NodePort behind a balancer, say)

    @property
    def passes(self) -> bool:
        return bool(self.rules)

    @property
    def where(self) -> str:
        return f"{self.direction} on {self.role}" + (
            " (reply)" if self.packet == "reply" else ""
        )


@dataclass
class Verdict:
    source: Endpoint
    destination: Endpoint
    protocol: str
    port: int
    checks: list[Check]
    hints: list[str] = field(default_factory=list)
    # A CIDR end only partly covered: one verdict per part, allowed parts first.
    parts: list[Verdict] = field(default_factory=list)
    hops: list = field(default_factory=list)  # generator.paths.Hop, in order

    @property
    def allowed(self) -> bool:
        if self.parts:
            return all(part.allowed for part in self.parts)
        return all(check.passes for check in self.checks)

    @property
    def status(self) -> str:
        if self.allowed:
            return "allowed"
        return "partly allowed" if any(p.allowed for p in self.parts) else "blocked"

    @property
    def blocked_by(self) -> list[Check]:
        return [check for check in self.checks if not check.passes]

    @property
    def flows(self) -> list[str]:
        out: list[str] = []
        for check in self.checks:
            for rule in check.rules:
                for flow in rule.flow.split("+"):
                    if flow not in out:
                        out.append(flow)
        return out

    def to_dict(self) -> dict:
        return {
            "from": self.source.label,
            "to": self.destination.label,
            "protocol": self.protocol,
            "port": self.port,
            "allowed": self.allowed,
            "status": self.status,
            "warnings": [
                e.warning for e in (self.source, self.destination) if e.warning
            ],
            "parts": [part.to_dict() for part in self.parts],
            "hops": [
                {"kind": h.kind, "side": h.side, "text": h.step} for h in self.hops
            ],
            "checks": [
                {
                    "role": c.role,
                    "direction": c.direction,
                    "packet": c.packet,
                    "sees": c.other.label,
                    "port": c.port,
                    "passes": c.passes,
                    "rules": [
                        {
                            "name": r.name,
                            "purpose": r.purpose,
                            "reference": r.reference,
                            "flow": r.flow,
                        }
                        for r in c.rules
                    ],
                }
                for c in self.checks
            ],
            "hints": list(self.hints),
        }


def _networks(cidrs) -> list:
    return [ipaddress.ip_network(c, strict=False) for c in cidrs]


def _inside(net, nets) -> bool:
    return any(net.version == n.version and net.subnet_of(n) for n in nets)


def peer_matches(rule: Rule, end: Endpoint, subnets: dict) -> bool:
    """Does the rule's peer take in every address the endpoint may have?"""
    peer = rule.peer
    if end.network is not None:
        nets = _networks(subnets.get(peer.role, ())) if peer.role else None
        if peer.role and end.role == peer.role and not nets and not end.pod:
            return True
        allowed = nets if peer.role else _networks(peer.cidrs)
        return all(_inside(net, allowed) for net in end.nets)
    # A whole role: by name, or by its subnets all lying inside the peer's CIDRs.
    if peer.role:
        return peer.role == end.role
    mine = _networks(subnets.get(end.role, ()))
    allowed = _networks(peer.cidrs)
    if not mine:
        return any(n.prefixlen == 0 for n in allowed)
    return all(_inside(n, allowed) for n in mine)


def _protocol(rule: Rule, protocol: str) -> bool:
    return rule.protocol in ("all", protocol)


def _in(port: int, ports: tuple[int, int] | None) -> bool:
    return ports is None or ports[0] <= port <= ports[1]


def _request(rule: Rule, protocol: str, port: int) -> bool:
    """Client port -> service port: rules without a source port, covering the port."""
    return _protocol(rule, protocol) and not rule.is_return and _in(port, rule.ports)


def _reply(rule: Rule, protocol: str, port: int) -> bool:
    """Service port -> client port: return rules from the port, or all-port rules."""
    if not _protocol(rule, protocol):
        return False
    if rule.is_return:
        return _in(port, rule.source_ports)
    return rule.ports is None


def explain(
    matrix: Matrix,
    source: Endpoint,
    destination: Endpoint,
    port: int,
    protocol: str = "tcp",
    subnets: dict | None = None,
    transparent_lb: bool = False,
    paths=None,
) -> Verdict:
    """Which rules let `source` open `protocol/port` on `destination`, end by end.

    With the profile's paths (generator.paths.Paths), each firewall is asked about
    the addresses it really sees on the way (after NAT gateways, public IPs, the
    balancer, pod addresses, the egress proxy); without, about the ends as given.
    When one end is a CIDR that the rules cover only in part, the verdict has one
    part per piece of it, each explained on its own.
    """
    args = (matrix, source, destination, port, protocol, subnets or {}, paths)
    verdict = _explain(*args)
    if not verdict.allowed:
        verdict.parts = _parts(matrix, verdict, subnets or {}, paths)
        if paths is None:
            verdict.hints += _moved_hints(verdict, transparent_lb)
        verdict.hints += _obsolete_hints(matrix, verdict, transparent_lb)
    return verdict


def allowed(matrix, source, destination, port, protocol, subnets, paths) -> bool:
    """The one answer to "is this allowed": explain's, which verify expects."""
    return _explain(matrix, source, destination, port, protocol, subnets, paths).allowed


def _seen(end, original: Endpoint) -> Endpoint:
    """A path's end (generator.paths.End) as explain's endpoint."""
    if end is None:
        return original
    if end.hop is None and end.peer.role and end.peer.role == original.role:
        return original  # seen as itself
    if end.hop is None and not end.peer.role and end.peer.name == original.peer:
        return original  # a peer list, asked for by its name
    if end.peer.role:
        return Endpoint(role=end.peer.role)
    nets = _networks(end.peer.cidrs)
    return Endpoint(network=nets[0], more=tuple(nets[1:]), peer=end.peer.name)


def _steps(source, destination, port, protocol, paths):
    """(role, direction, the other end as seen there, port there) per firewall on
    the request's way, and the hops in between."""
    direct = destination.role and destination.network and not destination.routed
    if paths is None or direct:
        steps = []
        if source.role:
            steps.append((source.role, "egress", destination, port))
        if destination.role:
            steps.append((destination.role, "ingress", source, port))
        return steps, []
    src = source.role or source.peer
    dst = destination.role or destination.peer
    flow = paths.sender_flow(source.role, destination.role, protocol, port)
    steps, hops = [], []
    for route in paths.route(src, dst, port, flow, pod=source.pod):
        for step in route.steps:
            if step.role not in ROLES:
                continue  # a peer list: no firewall of ours
            original = destination if step.direction == "egress" else source
            item = (step.role, step.direction, _seen(step.other, original), step.port)
            if item not in steps:
                steps.append(item)
        hops += [h for h in route.hops if h not in hops]
    return steps, hops


def _explain(matrix, source, destination, port, protocol, subnets, paths) -> Verdict:
    checks: list[Check] = []

    def check(role, direction, packet, other, port, match) -> None:
        rules = [
            r
            for r in matrix.for_role(role, direction)
            if match(r, protocol, port) and peer_matches(r, other, subnets)
        ]
        checks.append(Check(role, direction, packet, other, rules, port))

    steps, hops = _steps(source, destination, port, protocol, paths)
    for role, direction, other, at in steps:
        check(role, direction, "request", other, at, _request)
    if not matrix.stateful:
        back = {"egress": "ingress", "ingress": "egress"}
        for role, direction, other, at in reversed(steps):
            check(role, back[direction], "reply", other, at, _reply)
    verdict = Verdict(source, destination, protocol, port, checks, hops=list(hops))
    verdict.hints = _hints(matrix, verdict)
    return verdict


def _parts(matrix: Matrix, verdict: Verdict, subnets: dict, paths) -> list[Verdict]:
    """A CIDR end split into what every check lets through and the rest."""
    ends = [e for e in (verdict.source, verdict.destination) if e.network is not None]
    if len(ends) != 1 or ends[0].role or ends[0].more or not verdict.checks:
        return []
    end = ends[0]
    allowed = [end.network]
    for check in verdict.checks:
        if check.other != end:  # seen through a hop: the same for every part
            if not check.passes:
                return []
            continue
        match = _request if check.packet == "request" else _reply
        covered = []
        for rule in matrix.for_role(check.role, check.direction):
            if match(rule, verdict.protocol, check.port):
                peer = subnets.get(rule.peer.role, ()) if rule.peer.role else ()
                for net in _networks(rule.peer.cidrs or peer):
                    covered += [n for a in allowed if (n := _overlap(a, net))]
        allowed = list(_collapse(covered))
    if not allowed:
        return []
    blocked = [end.network]
    for net in allowed:
        blocked = [piece for b in blocked for piece in _minus(b, net)]

    def part(net) -> Verdict:
        piece = Endpoint(network=net)
        src = piece if end is verdict.source else verdict.source
        dst = piece if end is verdict.destination else verdict.destination
        return _explain(
            matrix, src, dst, verdict.port, verdict.protocol, subnets, paths
        )

    return [part(net) for net in allowed + _collapse(blocked)]


def _overlap(a, b):
    if a.version != b.version:
        return None
    if a.subnet_of(b):
        return a
    return b if b.subnet_of(a) else None


def _minus(net, cut) -> list:
    if net.version != cut.version or not net.overlaps(cut):
        return [net]
    if net.subnet_of(cut):
        return []
    return list(net.address_exclude(cut))


def _collapse(nets) -> list:
    out = []
    for version in (4, 6):
        out += ipaddress.collapse_addresses(n for n in nets if n.version == version)
    return out


def _moved_hints(verdict: Verdict, transparent_lb: bool) -> list[str]:
    ends = (verdict.source.role, verdict.destination.role)
    if not transparent_lb or "load_balancer" not in ends:
        return []
    return [
        "the load balancer is transparent in this profile: it has no firewall of its"
        " own, its ingress rules are on the Kubernetes nodes; ask again with"
        " kubernetes_nodes in place of load_balancer"
    ]


def _obsolete_hints(matrix: Matrix, verdict: Verdict, transparent_lb: bool):
    """Flows the planner left out as obsolete that would carry this traffic."""
    from .catalog import load_catalog

    left_out = {n.split(":")[0] for n in matrix.notes if ": left out," in n}
    if not left_out:
        return []

    def ends(names, endpoint) -> bool:
        if endpoint.role:
            roles = {
                "kubernetes_nodes" if transparent_lb and n == "load_balancer" else n
                for n in names
            }
            return endpoint.role in roles
        return any(n not in ROLES for n in names)

    hints = []
    for flow in load_catalog().flows:
        if flow.id not in left_out or verdict.protocol not in flow.protocols:
            continue
        ports = flow.ports_for(matrix.release_line)
        if ports is not None and not any(lo <= verdict.port <= hi for lo, hi in ports):
            continue
        if ends(flow.sources, verdict.source) and ends(
            flow.destinations, verdict.destination
        ):
            hints.append(
                f"flow {flow.id} ({flow.purpose}) would allow this: the"
                f" {matrix.release_line} page still prints one end, but its own egress"
                f" tables drop it ({flow.dropped_by(matrix.release_line)}), so it is"
                " left out (include_obsolete: true keeps it)"
            )
    return hints


def _hints(matrix: Matrix, verdict: Verdict) -> list[str]:
    """Where a blocked end expects the same flow from other addresses (a NAT, say)."""
    flows = set(verdict.flows)
    hints = []
    for check in verdict.blocked_by:
        match = _request if check.packet == "request" else _reply
        for rule in matrix.for_role(check.role, check.direction):
            if set(rule.flow.split("+")) & flows and match(
                rule, verdict.protocol, check.port
            ):
                peer = (
                    rule.peer.role or f"{rule.peer.name} {', '.join(rule.peer.cidrs)}"
                )
                hints.append(
                    f"{check.where} allows flow {rule.flow} only"
                    f" {'to' if check.direction == 'egress' else 'from'} {peer}"
                    f" ({rule.name})"
                )
    return hints


def render(verdict: Verdict) -> str:
    if not verdict.parts:
        return _render(verdict)
    lines = [
        f"{verdict.source.label} -> {verdict.destination.label}"
        f" {verdict.protocol}/{verdict.port}: {verdict.status}, part by part:"
    ]
    # Pieces with the same answer (the rest of 0.0.0.0/0, say) read as one, written
    # as diff and audit write addresses ("0.0.0.0/0 except ...").
    from .diff import peer_text
    from .matrix import Peer

    groups: dict[tuple, list[Endpoint]] = {}
    for part in verdict.parts:
        piece = part.source if part.source.network else part.destination
        body = _render(part).splitlines()[1:]
        key = (part.status, tuple(line.replace(piece.label, "{}") for line in body))
        groups.setdefault(key, []).append(piece)
    side = "from" if verdict.source.network else "to"
    for (status, body), pieces in groups.items():
        labels = [p.label for p in pieces]
        if all(p.network and not (p.role or p.peer) for p in pieces):
            labels = [peer_text(Peer(cidrs=tuple(str(p.network) for p in pieces)))]
        lines.append(f"  {status} {side} {', '.join(labels)}:")
        these = labels[0] if len(pieces) == 1 else "these"
        lines += ["  " + line.replace("{}", these) for line in body]
    lines += [f"  note: {hint}" for hint in verdict.hints]
    return "\n".join(lines) + "\n"


def _render(verdict: Verdict) -> str:
    head = (
        f"{verdict.source.label} -> {verdict.destination.label}"
        f" {verdict.protocol}/{verdict.port}: {verdict.status}"
    )
    lines = [head]
    if not verdict.checks:
        lines.append("  neither end is a role: no rulegen firewall on the way")
    # The translations sit between the source's egress and the destination's ingress.
    hops = [f"  on the way: {hop.step}" for hop in verdict.hops]
    first = verdict.checks[0] if verdict.checks else None
    if first is None or first.direction != "egress" or first.packet != "request":
        lines += hops
        hops = []
    for check in verdict.checks:
        if not check.passes:
            lines.append(
                f"  blocked by {check.where}: no rule allows"
                f" {verdict.protocol}/{check.port or verdict.port}"
                f" {'to' if check.direction == 'egress' else 'from'} {check.other.label}"
            )
        else:
            lines.append(f"  {check.where}" + _seen_text(check, verdict) + ":")
            for rule in check.rules:
                lines.append(f"    {rule.name}: {rule.purpose}")
                lines.append(f"      flow {rule.flow}; {rule.reference}")
        if check is first:
            lines += hops
    lines += [f"  note: {hint}" for hint in verdict.hints]
    return "\n".join(lines) + "\n"


def _seen_text(check: Check, verdict: Verdict) -> str:
    """What this firewall sees, when the path changed it."""
    asked = verdict.destination if check.direction == "egress" else verdict.source
    if check.packet == "reply":
        asked = verdict.source if check.direction == "egress" else verdict.destination
    words = []
    if check.other != asked:
        side = "to" if check.direction == "egress" else "from"
        if check.packet == "reply":
            side = "to" if side == "from" else "from"
        words.append(f"{side} {check.other.label}")
    if check.port and check.port != verdict.port:
        words.append(f"port {check.port}")
    return f" ({', '.join(words)})" if words else ""

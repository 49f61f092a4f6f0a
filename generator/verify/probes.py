"""The probes per property, added to a Draft of the plan. Each probe's expectation is
explain's answer (`expected`: the one semantics of the matrix, through the profile's
packet paths); where a page property asks for the probe, the rules must agree with
it, or the plan stops with a VerifyError naming both:

- flows: every rule of the matrix must connect, from a host inside its peer;
- isolation: two hosts of an isolated role (Nomad clients, external VMs) must not
  reach each other on anything they serve that no acknowledged site flow opens;
- unlisted_between_roles: a port no rule names, between roles no all-protocol rule
  joins, must fail;
- outsiders: the external host and the sources of site flows must not reach what a
  role serves but does not publish to them;
- host_firewall (with the profile): the host essentials, a container behind its host
  (published ports through DNAT, egress through MASQUERADE), IPv6, and the operator's
  DROP after rulegen's jump.

plan.py decides where the hosts stand and in which order the properties are asked.
"""

from __future__ import annotations

import ipaddress

from ..matrix import Matrix, Rule
from .model import Draft, Host, VerifyError, _pick, _v4

ISOLATED = ("nomad_clients", "external_vms")  # the page: no traffic between two of them
PUBLISHED_FLOWS = ("nodeports", "rerun")  # reached through DNAT on real hosts
CONTAINER_POOL = ipaddress.ip_network("100.64.0.0/10")  # shared address space


def sample_ports(ports: tuple[int, int] | None, unlisted: int) -> list[int]:
    if ports is None:
        return [unlisted]
    lo, hi = ports
    return [lo] if lo == hi else sorted({lo, (lo + hi) // 2, hi})


def endpoint(host: Host, six: bool = False, to=None):
    """A bed host as explain asks about it: its role and its one address (a
    masqueraded container: its host's; a pod: its own, as a pod of its node's role;
    a balancer's host: the role it stands for, reached through the path)."""
    from ..explain import Endpoint

    if host.parent and host.masquerade:
        host = host.parent
    address = host.address6 if six else to or host.address
    net = ipaddress.ip_network(address)
    if host.parent:  # a pod with its own address
        return Endpoint(role=host.parent.role, network=net, pod=True)
    # A hop (a balancer's host) is the role it stands for only as the destination
    # of a path probe; as a source it is an address without a firewall of ours.
    role = host.role or (host.stands_for if to is not None else None)
    return Endpoint(role=role, network=net, routed=to is not None)


def expected(draft: Draft, src: Host, dst: Host, protocol, port, six=False, to=None):
    """Will the probe connect? explain's answer (the one semantics of the matrix),
    through the paths of the profile when verify has it."""
    return _verdict(draft, src, dst, protocol, port, six, to).allowed


def _verdict(draft: Draft, src, dst, protocol, port, six=False, to=None):
    from ..explain import explain

    return explain(
        draft.matrix,
        endpoint(src, six),
        endpoint(dst, six, to),
        port,
        protocol,
        draft.subnets,
        paths=draft.paths,
    )


def _settled(draft: Draft, src, dst, protocol, port, page: bool, why: str) -> bool:
    """explain's answer for a probe a page property asks for; a matrix that breaks
    the property cannot be verified (its rules and the page disagree)."""
    found = expected(draft, src, dst, protocol, port)
    if found != page:
        raise VerifyError(
            f"{protocol}/{port} {src.title} -> {dst.title}: the rules"
            f" {'allow' if found else 'block'} it, but {why}"
        )
    return found


def _container_net(profile, role: str, taken: list, used: set):
    pods = [
        n for n in _v4(getattr(profile, "pod_cidrs", ())) if role == "kubernetes_nodes"
    ]
    if pods:
        # A block of the pod range no other host of the bed stands in (the pods
        # peer list's host is a pod on another node).
        for i, block in enumerate(
            pods[0].subnets(new_prefix=max(24, pods[0].prefixlen))
        ):
            if i > 64:
                break
            if not any(a in block for a in used):
                return block
    for block in CONTAINER_POOL.subnets(new_prefix=24):
        if not any(block.overlaps(n) for n in taken):
            return block
    raise VerifyError("no container range outside the profile's addresses")


def _opens(rule: Rule, protocol: str, port: int) -> bool:
    """An acknowledged site rule between two hosts of a role covers this port."""
    if rule.protocol not in ("all", protocol):
        return False
    return not rule.ports or rule.ports[0] <= port <= rule.ports[1]


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


# --- the page's properties, from the matrix alone --------------------------------


def flows(draft: Draft) -> None:
    """Must connect: every rule, from (or to) a host inside its peer."""
    matrix = draft.matrix
    for rule in matrix.rules:
        if rule.is_return:
            continue  # a stateless reply is proved by its request's probe
        own = draft.role_hosts[rule.role][0]
        other = _representative(draft, rule, own)
        if other is None:
            continue
        src, dst = (other, own) if rule.direction == "ingress" else (own, other)
        protocols = ("tcp", "udp") if rule.protocol == "all" else (rule.protocol,)
        why = f"flow {rule.flow} ({rule.name}{_replies(matrix, rule)})"
        for protocol in protocols:
            for port in sample_ports(rule.ports, draft.unlisted):
                verdict = _verdict(draft, src, dst, protocol, port)
                # The rule lets its traffic through its own end; the other end may
                # expect it through a hop (a balancer that delivers to a NodePort).
                here = [
                    c.passes
                    for c in verdict.checks
                    if (c.role, c.direction, c.packet)
                    == (rule.role, rule.direction, "request")
                ]
                if not all(here):
                    raise VerifyError(
                        f"{protocol}/{port} {src.title} -> {dst.title}: the rules"
                        f" block it at {rule.role}'s {rule.direction}, but {why}"
                    )
                draft.add(src, dst, protocol, port, verdict.allowed, why)


def _representative(draft: Draft, rule: Rule, own: Host) -> Host | None:
    if rule.peer.role:
        others = [h for h in draft.role_hosts.get(rule.peer.role, ()) if h is not own]
        return others[0] if others else None
    nets = _v4(rule.peer.cidrs)
    return draft.peer_host.get(tuple(nets)) if nets else None


def served(draft: Draft) -> dict[str, set]:
    """What each role serves: the ports its ingress rules open (sampled)."""
    serves: dict[str, set] = {}
    for role in draft.role_hosts:
        found = {("tcp", draft.unlisted)}
        for rule in draft.matrix.for_role(role, "ingress"):
            if rule.is_return:
                continue
            protocols = ("tcp", "udp") if rule.protocol == "all" else (rule.protocol,)
            for protocol in protocols:
                found |= {
                    (protocol, p) for p in sample_ports(rule.ports, draft.unlisted)
                }
        serves[role] = found
    return serves


def isolation(draft: Draft) -> None:
    """Must fail: two hosts of an isolated role, on everything they serve."""
    for role in ISOLATED:
        pair = draft.role_hosts.get(role, [])
        if len(pair) < 2:
            continue
        # A site flow may open some of it, acknowledged: the rest stays shut.
        opened = [
            r
            for r in draft.matrix.for_role(role, "ingress")
            if r.peer.role == role and not r.is_return and r.site
        ]
        for src, dst in ((pair[0], pair[1]), (pair[1], pair[0])):
            for protocol, port in sorted(draft.serves[role]):
                if any(_opens(r, protocol, port) for r in opened):
                    continue
                why = f"no traffic between two {role}"
                ok = _settled(draft, src, dst, protocol, port, False, why)
                draft.add(src, dst, protocol, port, ok, why)


def unlisted_between_roles(draft: Draft) -> None:
    """Must fail: a port no rule names, between roles no all-protocol rule joins."""
    matrix, unlisted = draft.matrix, draft.unlisted

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

    role_list = [h for h in draft.hosts if h.role]
    for src in role_list:
        for dst in role_list:
            if src is dst or src.role == dst.role or joined(src.role, dst.role):
                continue
            why = f"port {unlisted} is in no rule"
            ok = _settled(draft, src, dst, "tcp", unlisted, False, why)
            draft.add(src, dst, "tcp", unlisted, ok, why)


def outsiders(draft: Draft) -> None:
    """Must fail: the external host, and the sources of site flows, to whatever a
    role serves but does not publish to them."""
    matrix = draft.matrix
    site_sources = {
        r.peer.name
        for r in matrix.rules
        if r.site and r.direction == "ingress" and not r.peer.role
    }

    def external(host: Host) -> bool:
        return any("external" in label.split("_and_") for label in host.labels)

    found = [
        (h, "external" if external(h) else "site flow source")
        for h in draft.hosts
        if external(h) or site_sources & set(h.labels)
    ]
    role_list = [h for h in draft.hosts if h.role]
    for src, who in found:
        for dst in role_list:
            for protocol, port in sorted(draft.serves[dst.role]):
                if not expected(draft, src, dst, protocol, port):
                    draft.add(src, dst, protocol, port, False, f"{who}, not published")


# --- the host-firewall test bed: containers, essentials, IPv6, operator rules ------


def host_firewall(draft: Draft, profile) -> None:
    """Containers with DNAT and MASQUERADE, the host essentials, IPv6 addresses and
    the operator's own rules: what a real Kubernetes, Nomad or Docker host adds."""
    matrix, subnets = draft.matrix, draft.subnets
    taken = [n for nets in subnets.values() for n in _v4(nets)]
    taken += [n for r in matrix.rules for n in _v4(r.peer.cidrs) if n.prefixlen]
    peers = [h for h in draft.hosts if not h.role]
    firsts = [pair[0] for pair in draft.role_hosts.values()]
    essentials(draft, profile, peers)
    containers(draft, profile, peers, firsts, taken)
    ipv6(draft, firsts)
    operator_drops(draft, peers)


def _service_host(draft: Draft, peers: list[Host], cidrs, label) -> Host | None:
    """The host that stands for a service's CIDRs (a peer already there, or a new one)."""
    nets = _v4(cidrs)
    if not nets:
        return None
    address = nets[0][0] if nets[0].num_addresses == 1 else _pick(nets[0], draft.used)
    host = next((h for h in draft.hosts if h.address == address), None)
    if host is None:
        host = Host(f"peer{len(peers) + 1}:{label}", address, labels=[label])
        draft.used.add(address)
        draft.hosts.append(host)
        peers.append(host)
    elif label not in host.labels:
        host.labels.append(label)
    return host


def essentials(draft: Draft, profile, peers: list[Host]) -> None:
    """Host essentials: NTP, the metadata service, echo from admins, LB admin SSH."""
    from ..hostfw import essentials_for

    add = draft.add
    for role, pair in draft.role_hosts.items():
        own = pair[0]
        ess = essentials_for(profile, role)
        for cidrs, label, protocol, port in (
            (ess.ntp, "ntp", "udp", 123),
            (ess.metadata, "metadata", "tcp", 80),
        ):
            server = _service_host(draft, peers, cidrs, label)
            if server is not None:
                why = f"host essential: {label}"
                add(own, server, protocol, port, True, why, "essential")
        admins = [h for h in peers if any(h.address in n for n in _v4(ess.echo_from))]
        if admins:
            why = "host essential: echo from admins"
            add(admins[0], own, "icmp", 1, True, why, "essential")
            # Not the NTP server, nor a pod (pods reach their node: an essential).
            others = [
                h
                for h in peers
                if h not in admins and h.labels not in (["ntp"], ["pods"])
            ]
            if others:
                why = "echo only from admins"
                add(others[0], own, "icmp", 1, False, why, "essential")
        ssh = [h for h in peers if any(h.address in n for n in _v4(ess.admin_ssh))]
        if ssh:
            why = "host essential: admin SSH (host LB)"
            add(ssh[0], own, "tcp", 22, True, why, "essential")


def containers(draft: Draft, profile, peers, firsts, taken) -> None:
    """A container behind the first host of each compute role: its published ports
    (DNAT in) and its egress (MASQUERADE out), by the role's rules and nothing else."""
    matrix, subnets, hosts = draft.matrix, draft.subnets, draft.hosts
    for role, pair in draft.role_hosts.items():
        if role == "load_balancer":
            continue
        own = pair[0]
        net = _container_net(profile, role, taken, draft.used)
        routed = role == "kubernetes_nodes" and draft.paths and draft.paths.pods
        what = "pod" if routed else "container"
        box = Host(f"{own.key}/{what}", net[2], labels=[f"{what} on {own.key}"])
        box.parent = own
        hosts.insert(hosts.index(own) + 1, box)
        # A pod keeps its address (VPC-native): the bed routes its range through
        # its node, as the VPC routes an alias range.
        box.masquerade = not routed
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
                expect = expected(draft, src, own, "tcp", port)
                why = f"published port through DNAT ({rule.flow})"
                draft.add(src, own, "tcp", port, expect, why, "forward")
        _container_egress(draft, role, own, box, peers, firsts)


def _container_egress(draft: Draft, role, own, box, peers, firsts) -> None:
    """Container egress: the role's egress rules, and nothing else."""
    matrix, subnets, unlisted = draft.matrix, draft.subnets, draft.unlisted
    for rule in matrix.for_role(role, "egress"):
        if rule.is_return:
            continue
        if rule.peer.role:
            found = [
                h for h in draft.role_hosts.get(rule.peer.role, ()) if h is not own
            ]
        else:
            found = [h for h in peers if (rule.peer.name or "cidrs") in h.labels]
        if not found:
            continue
        dst = found[0]
        protocol = "tcp" if rule.protocol == "all" else rule.protocol
        port = rule.ports[0] if rule.ports else unlisted
        why = f"container egress ({rule.flow})"
        expect = expected(draft, box, dst, protocol, port)
        draft.add(box, dst, protocol, port, expect, why, "forward")
    for dst in firsts + peers:
        if dst is own or dst.parent:
            continue
        expect = expected(draft, box, dst, "tcp", unlisted)
        why = "container egress, unlisted port"
        draft.add(box, dst, "tcp", unlisted, expect, why, "forward")


def ipv6(draft: Draft, firsts: list[Host]) -> None:
    """IPv6: every role host is blocked unless a rule allows the address (the
    expectation is settled once the hosts have their IPv6 addresses)."""
    for dst in firsts:
        # a port the role opens over IPv4, so that only the IPv6 rules can block it
        opened = [p for proto, p in draft.serves[dst.role] if proto == "tcp"]
        port = min([p for p in opened if p != draft.unlisted] or opened)
        for src in [h for h in draft.hosts if not h.parent and h is not dst]:
            if src.role == dst.role:
                continue
            why = "IPv6: blocked unless a rule allows it"
            draft.add(src, dst, "tcp", port, None, why, "ipv6")


def settle_ipv6(draft: Draft) -> None:
    """The IPv6 probes' expectations, by the rules, from the hosts' IPv6 addresses."""
    for probe in draft.probes.values():
        if probe.kind == "ipv6":
            probe.expect = expected(
                draft, probe.src, probe.dst, "tcp", probe.port, six=True
            )


def operator_drops(draft: Draft, peers: list[Host]) -> None:
    """The operator's own DROP after rulegen's jump still drops (restrict, never
    shadow): on the second host of a role, for one port an ingress rule opens."""
    for role, pair in draft.role_hosts.items():
        if len(pair) < 2:
            continue
        target = pair[1]
        for rule in draft.matrix.for_role(role, "ingress"):
            if rule.is_return or rule.protocol != "tcp" or not rule.ports:
                continue
            if rule.peer.role:
                src = next(
                    (
                        h
                        for h in draft.role_hosts.get(rule.peer.role, ())
                        if h is not target
                    ),
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
            key = (src.key, target.key, "tcp", port, False, None)
            if src is None or key in draft.probes:
                continue
            target.drops.append((src.address, port))
            why = "the operator's DROP after rulegen's jump"
            draft.add(src, target, "tcp", port, False, why, "operator")
            break

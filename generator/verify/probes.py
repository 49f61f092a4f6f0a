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
  (published ports through DNAT to its port 80, egress through MASQUERADE), on Nomad
  clients and VMs a job's container behind Docker's bridge (the jobs policy: the
  metadata service, the balancer's internal ports, the install's own ranges and
  blocked_cidrs kept out, the internet on 443 open), stateless return rules taking
  replies only, IPv6, and the operator's DROP after rulegen's jump.

plan.py decides where the hosts stand and in which order the properties are asked.
"""

from __future__ import annotations

import ipaddress

from ..matrix import Matrix, Rule
from .model import Draft, Host, VerifyError, _pick, _v4

ISOLATED = ("nomad_clients", "external_vms")  # the page: no traffic between two of them
PUBLISHED_FLOWS = ("nodeports", "rerun")  # reached through DNAT on real hosts
CONTAINER_POOL = ipaddress.ip_network("100.64.0.0/10")  # shared address space
# Published ports land on the container's port 80 (docker run -p 8000:80), the port
# a container's own egress rules name too; one more is published that no rule opens.
CONTAINER_PORT = 80
UNOPENED = (8000, 8080, 8888, 18000)
# Docker's bridges, named as Docker names them: the default one and a network's.
JOB_BRIDGES = {"nomad_clients": "docker0", "external_vms": "br-5f1e0c3a9b7d"}
METADATA = "169.254.169.254/32"
KUBELET = 10250  # a new connection from a service port must not reach it (stateless)


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


def end_allows(draft: Draft, src: Host, dst: Host, protocol, port) -> bool:
    """explain's answer at the destination's end alone (its ingress rules), for a
    probe whose other end a policy beyond the matrix decides (a job's egress)."""
    verdict = _verdict(draft, src, dst, protocol, port)
    return all(
        c.passes
        for c in verdict.checks
        if (c.direction, c.packet) == ("ingress", "request")
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
    if not matrix.stateful:
        replies(draft)
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
    (DNAT in, to its port 80) and its egress (MASQUERADE out), by the role's rules
    and, on the roles that run jobs, the jobs policy; nothing else."""
    from ..hostfw import jobs_for

    matrix, subnets, hosts = draft.matrix, draft.subnets, draft.hosts
    for role, pair in draft.role_hosts.items():
        if role == "load_balancer":
            continue
        own = pair[0]
        net = _container_net(profile, role, taken, draft.used)
        routed = role == "kubernetes_nodes" and draft.paths and draft.paths.pods
        what = "pod" if routed else "container"
        box = Host(f"{own.key}/{what}", net[2], labels=[f"{what} on {own.key}"])
        box.parent, box.container_port = own, CONTAINER_PORT
        box.bridge = JOB_BRIDGES.get(role, box.bridge)
        if role == "nomad_clients" and profile.container_runtime == "podman":
            box.bridge = "podman0"  # netavark's default network
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
        ingress = matrix.for_role(role, "ingress")
        spare = next(
            (
                p
                for p in UNOPENED
                if not any(_opens(r, "tcp", p) for r in ingress if not r.is_return)
            ),
            None,
        )
        ports = [(r.ports[0], r.flow) for r in published]
        box.published = sorted({r.ports for r in published})
        if spare:
            ports.append((spare, None))
            box.published.append((spare, spare))
        for port, flow in ports:
            why = (
                f"published port {port} through DNAT to the container's"
                f" {CONTAINER_PORT}, "
                + (f"by its ingress rule ({flow})" if flow else "opened by no rule")
            )
            for src in peers + [h for h in firsts if h.role != role]:
                expect = expected(draft, src, own, "tcp", port)
                tag = "" if flow else "unopened"
                draft.add(src, own, "tcp", port, expect, why, "dnat", tag)
        jobs = jobs_for(profile, role)
        if jobs is not None:
            _jobs_probes(draft, role, own, box, peers, jobs)
        _container_egress(draft, role, own, box, peers, firsts, jobs)


def job_allows(matrix, subnets, jobs, role, address, protocol, port) -> bool:
    """The jobs policy, on the rules: the host agents' flows never; a job's flow to the
    addresses it names; the metadata service, link-local addresses, the install's own
    ranges and blocked_cidrs never; the rest of the role's egress."""

    def nets(rule):
        cidrs = subnets.get(rule.peer.role, ()) if rule.peer.role else rule.peer.cidrs
        return [ipaddress.ip_network(c, strict=False) for c in cidrs]

    hits = [
        r
        for r in matrix.for_role(role, "egress")
        if not r.is_return
        and _opens(r, protocol, port)
        and any(n.version == address.version and address in n for n in nets(r))
    ]
    kinds = [(jobs.kind(r), any(n.prefixlen == 0 for n in nets(r))) for r in hits]
    if any(kind == "host" for kind, _ in kinds):
        return False
    if any(kind == "named" and not wide for kind, wide in kinds):
        return True
    kept = jobs.metadata + jobs.link_local + jobs.internal + jobs.blocked
    if any(address in n for n in _v4(kept)):
        return False
    return bool(kinds)


def _container_expect(draft, box, dst, protocol, port, jobs) -> bool:
    """A container's probe: explain's answer, or on a role that runs jobs the jobs
    policy on the way out (a host-firewall policy beyond the matrix) and explain's
    answer for the destination's end."""
    if jobs is None:
        return expected(draft, box, dst, protocol, port)
    matrix, subnets = draft.matrix, draft.subnets
    role = box.acting_role
    out = job_allows(matrix, subnets, jobs, role, dst.address, protocol, port)
    return out and end_allows(draft, box, dst, protocol, port)


def _jobs_probes(draft: Draft, role, own, box, peers, jobs) -> None:
    """The jobs policy's own probes, each tagged: the metadata service on 80, each of
    the host agents' flows, the install's own ranges and blocked_cidrs on a port the
    role's egress opens to anywhere, and the internet on 443."""

    def probe(dst, port, tag, why) -> None:
        expect = _container_expect(draft, box, dst, "tcp", port, jobs)
        draft.add(box, dst, "tcp", port, expect, f"jobs: {why}", "jobs", tag)

    probe(
        _service_host(draft, peers, (METADATA,), "metadata"),
        80,
        "metadata",
        "the instance metadata service",
    )
    egress = [r for r in draft.matrix.for_role(role, "egress") if not r.is_return]
    for rule in egress:
        dst = _egress_target(draft, rule, own, peers)
        if jobs.kind(rule) == "host" and rule.ports and dst is not None:
            probe(dst, rule.ports[0], "host-only", f"the host agents' flow {rule.flow}")
    wide = [
        r.ports[0]
        for r in egress
        if r.protocol == "tcp"
        and r.ports
        and "0.0.0.0/0" in r.peer.cidrs
        and jobs.kind(r) != "host"
    ]
    port = 443 if 443 in wide else (wide[0] if wide else None)
    for tag, cidrs, what in (
        ("internal", jobs.internal, "the install's own ranges"),
        ("blocked", jobs.blocked, "host_firewall.jobs.blocked_cidrs"),
    ):
        inside = [h for h in peers if any(h.address in n for n in _v4(cidrs))]
        if port and inside:
            probe(inside[0], port, tag, f"{what}, on a port open to anywhere")
    internet = [h for h in peers if "internet" in h.labels]
    if internet and any(
        r.peer.name == "internet" and _opens(r, "tcp", 443) for r in egress
    ):
        probe(internet[0], 443, "internet", "the internet on 443")


def _egress_target(draft: Draft, rule: Rule, own: Host, peers) -> Host | None:
    if rule.peer.role:
        found = [h for h in draft.role_hosts.get(rule.peer.role, ()) if h is not own]
    else:
        found = [h for h in peers if (rule.peer.name or "cidrs") in h.labels]
    return found[0] if found else None


def _container_egress(draft: Draft, role, own, box, peers, firsts, jobs) -> None:
    """Container egress: the role's egress rules (through the jobs policy on the roles
    that run jobs), and nothing else."""
    unlisted = draft.unlisted
    kind = "forward" if jobs is None else "jobs"
    for rule in draft.matrix.for_role(role, "egress"):
        if rule.is_return:
            continue
        dst = _egress_target(draft, rule, own, peers)
        if dst is None:
            continue
        protocol = "tcp" if rule.protocol == "all" else rule.protocol
        port = rule.ports[0] if rule.ports else unlisted
        why = f"container egress ({rule.flow})"
        expect = _container_expect(draft, box, dst, protocol, port, jobs)
        draft.add(box, dst, protocol, port, expect, why, kind)
    for dst in firsts + peers:
        if dst is own or dst.parent:
            continue
        expect = _container_expect(draft, box, dst, "tcp", unlisted, jobs)
        why = "container egress, unlisted port"
        draft.add(box, dst, "tcp", unlisted, expect, why, kind)


def replies(draft: Draft) -> None:
    """Stateless: a return rule takes replies only. From a peer a return rule lets
    in, a SYN from the rule's service port (443 where it has it) to a port of the
    ephemeral range (the kubelet's 10250 where it lies there) opens nothing, while
    the host's own connections to that peer still get their replies."""
    matrix = draft.matrix
    for role, pair in draft.role_hosts.items():
        own = pair[0]
        returns = [
            r
            for r in matrix.for_role(role, "ingress")
            if r.is_return
            and r.protocol == "tcp"
            and not r.peer.role
            and draft.peer_host.get(tuple(_v4(r.peer.cidrs)))
        ]
        returns.sort(key=lambda r: not _inside(443, r.source_ports))
        if not returns:
            continue
        rule = returns[0]
        src = draft.peer_host[tuple(_v4(rule.peer.cidrs))]
        sport = 443 if _inside(443, rule.source_ports) else rule.source_ports[0]
        named = [r.ports for r in matrix.rules if r.ports and not r.is_return]
        free = [
            p
            for p in (KUBELET, *range(rule.ports[0], rule.ports[0] + 100))
            if _inside(p, rule.ports) and not any(_inside(p, n) for n in named)
        ]
        if not free:
            continue
        expect = end_allows(draft, src, own, "tcp", free[0])
        why = f"stateless: a SYN from port {sport} opens nothing through {rule.name}"
        draft.add(src, own, "tcp", free[0], expect, why, "replies", "syn", sport)
        why = f"stateless: replies from port {sport} still flow ({rule.name})"
        draft.add(own, src, "tcp", sport, True, why, "replies")


def _inside(port: int, ports) -> bool:
    return ports is not None and ports[0] <= port <= ports[1]


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

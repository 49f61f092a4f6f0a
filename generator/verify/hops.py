"""Probes along the packet's real path (generator/paths.py): from a source role's host to
the address the application reaches the destination on, through the hops between.

The bed gains, where the profile has them: a NAT gateway (a peer host that SNATs the
private hosts' packets to its own address), public addresses (the VMs', the Nomad
clients', a balancer with a firewall of its own: a second address on the host, which
the internet gateway's 1:1 translation amounts to), and a balancer without a firewall
of its own (a host of its own that DNATs its listeners to the first node, on their
port or a NodePort, and SNATs to its own private address when it does not keep the
client's). A pod with its own range is set up with the containers (probes.py).
Expectations are explain's, as everywhere (probes.expected).
"""

from __future__ import annotations

import ipaddress

from ..paths import nodeport
from .model import STAND_IN_RANGE, Draft, Host, _pick, _v4
from .probes import _verdict


def packet_paths(draft: Draft, profile) -> None:
    """The hops a profile's paths need, and a probe through them per port served."""
    paths = draft.paths
    if paths is None:
        return
    hops = _Hops(draft, profile)
    if profile.assign_public_ip and "external_vms" in draft.role_hosts:
        vm = draft.role_hosts["external_vms"][0]
        vm.public = hops.public(profile.peers.get("vm_public_ips") or ())
        for role in ("nomad_clients", "kubernetes_nodes"):
            if role in draft.role_hosts:
                src = draft.role_hosts[role][0]
                hops.leave(src, "external_vms", vm.public)
                hops.probe(src, vm, vm.public, "external_vms")
    target = _balancer_address(draft, profile, hops)
    if target is None:
        return
    dst = _balancer_host(draft, profile, hops, target)
    sources = (
        [draft.role_hosts["nomad_clients"][0]]
        if "nomad_clients" in (draft.role_hosts)
        else []
    )
    sources += [h for h in draft.hosts if not h.role and _is_client(h)]
    for src in sources:
        if src.role:
            hops.leave(src, "load_balancer", target)
        hops.probe(src, dst, target, "load_balancer")
        if dst.dnat and not dst.snat_to:
            # The target answers the client's own address: back through the hop,
            # which keeps the client's address only with its help.
            seen = ipaddress.ip_network(hops.seen.get(src.key, src.address))
            if seen not in [r[0] for r in dst.front_of.routes]:
                dst.front_of.routes.append((seen, dst.address, None))


def _is_client(host: Host) -> bool:
    names = {n for label in host.labels for n in label.split("_and_")}
    return bool(names & {"external", "webhooks"})


class _Hops:
    """The hop hosts and addresses of one plan, made as the probes need them."""

    def __init__(self, draft: Draft, profile):
        self.draft, self.profile = draft, profile
        self.paths = draft.paths
        self.nat: Host | None = None
        self.seen: dict[str, ipaddress.IPv4Address] = {}  # out of the VPC, as

    def public(self, cidrs) -> ipaddress.IPv4Address:
        """An address for a public IP: inside the listed range, else a stand-in."""
        nets = _v4(cidrs)
        pool = nets[0] if nets and nets[0].prefixlen else None
        address = _pick(pool, self.draft.used) if pool else None
        if address is None:
            for block in STAND_IN_RANGE.subnets(new_prefix=24):
                address = _pick(block, self.draft.used, start=20)
                if address is not None:
                    break
        self.draft.used.add(address)
        return address

    def gateway(self) -> Host:
        """The NAT gateway: the nat_gateway peer's host, or one at its first address."""
        if self.nat is not None:
            return self.nat
        nats = _v4(self.profile.nat_gateway_ips)
        host = next(
            (
                h
                for h in self.draft.hosts
                if not h.role and any(h.address in n for n in nats)
            ),
            None,
        )
        if host is None:
            host = Host("peer:nat_gateway", nats[0][0], labels=["nat_gateway"])
            self.draft.used.add(host.address)
            self.draft.hosts.append(host)
        for nets in self.draft.subnets.values():
            host.snat_from += [n for n in _v4(nets) if n not in host.snat_from]
        self.nat = host
        return host

    def leave(self, src: Host, destination: str, address) -> None:
        """Route the source's packets for `address` the way the path says: from its
        own public address, through the NAT gateway, or straight."""
        route = self.paths.route(src.role, destination, 0)[0]
        kinds = {h.kind for h in route.hops if h.side == "source"}
        target = ipaddress.ip_network(address)
        if "nat_gateway" in kinds:
            src.routes.append((target, self.gateway().address, None))
            self.seen[src.key] = self.gateway().address
        elif "public_ip" in kinds:
            if src.public is None:
                src.public = self.public(
                    self.profile.peers.get("nomad_client_public_ips") or ()
                )
            src.routes.append((target, None, src.public))
            self.seen[src.key] = src.public

    def probe(self, src: Host, dst: Host, address, destination: str) -> None:
        """One probe per port the destination serves, to the address it is reached on."""
        if dst.dnat:  # a hop: what it forwards, nothing else
            ports = [("tcp", port) for port, _, _ in dst.dnat]
        else:
            ports = sorted(self.draft.serves.get(dst.role, ()))
        for protocol, port in ports:
            if protocol != "tcp":
                continue
            verdict = _verdict(self.draft, src, dst, protocol, port, to=address)
            names = [r.name for c in verdict.checks for r in c.rules]
            why = f"the path to {destination} on {address}" + (
                f" ({', '.join(dict.fromkeys(names))})" if names else ""
            )
            self.draft.add(
                src, dst, protocol, port, verdict.allowed, why, "path", to=address
            )


def _balancer_address(draft: Draft, profile, hops: _Hops):
    """Where clients reach the balancer, when that is a hop: its public address, or a
    balancer without a firewall that has addresses of its own."""
    bal = draft.paths.balancer
    if profile.lb_internet_facing:
        # The nomad clients' egress peer stands at its listed address already.
        peer = draft.peer_host.get(tuple(_v4(profile.lb_public_ips)))
        return peer.address if peer else hops.public(profile.lb_public_ips)
    if not bal.firewall and bal.own.cidrs and "kubernetes_nodes" in draft.role_hosts:
        nets = _v4(bal.own.cidrs)
        address = _pick(nets[0], draft.used) if nets else None
        if address is not None:
            draft.used.add(address)
        return address
    return None


def _balancer_host(draft: Draft, profile, hops: _Hops, target) -> Host:
    """The host a balancer's clients reach: a hop that DNATs its listeners to the
    first node (a balancer without a firewall), or the balancer's own host (with
    one) at a second address. A peer host already at that address (the balancer's
    listed public IP, say) becomes the hop."""
    bal = draft.paths.balancer
    found = next((h for h in draft.hosts if not h.role and h.address == target), None)
    if bal.firewall and "load_balancer" in draft.role_hosts:
        lb = draft.role_hosts["load_balancer"][0]
        if found is None:
            lb.public = target
            return lb
        # The internet gateway's 1:1 translation, in front of the balancer's host.
        ports = sorted(
            p for proto, p in draft.serves["load_balancer"] if proto == "tcp"
        )
        found.dnat = [(port, lb.address, port) for port in ports]
        found.stands_for = "load_balancer"
        found.front_of = lb
        return found
    node = draft.role_hosts["kubernetes_nodes"][0]
    host = found or Host(
        "balancer", target, labels=["load balancer"], stands_for="load_balancer"
    )
    host.stands_for = "load_balancer"
    for port in _listeners(draft):
        to_port = nodeport(port) if bal.nodeports else port
        host.dnat.append((port, node.address, to_port))
        node.tcp.add(to_port)
    if not bal.keeps_client:
        nets = _v4(bal.own.cidrs)
        own = _pick(nets[0], draft.used) if nets else None
        if own is not None:
            draft.used.add(own)
            host.snat_to = own
            host.public = own
        else:
            host.snat_to = target
    host.front_of = node
    if found is None:
        draft.hosts.append(host)
    return host


def _listeners(draft: Draft) -> list[int]:
    """The balancer's listener ports: the catalog's flows to it that the matrix has."""
    from ..catalog import load_catalog

    flows = {f for r in draft.matrix.rules for f in r.flow.split("+")}
    ports = set()
    for flow in load_catalog().flows:
        if flow.id in flows and "load_balancer" in flow.destinations:
            ports |= {lo for lo, hi in flow.ports or () if lo == hi}
    if "webhooks" in flows:
        ports.add(443)
    return sorted(ports)

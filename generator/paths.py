"""Packet paths: the addresses each firewall really sees.

The catalog's flows go role to role. On the platform a packet may leave through a NAT
gateway, cross a public IP (the internet gateway's 1:1 translation), pass a balancer
that keeps the client's address or not and delivers to a NodePort or not, leave a node
with a pod's own address, or go through an egress proxy. This stage resolves both ends
of a flow to what the other end's firewall has to name: the source address at the
destination's firewall and the destination address at the source's firewall, and says
which hop decided each. The planner builds its rules from `legs`; `explain` (and so
`verify`, whose expectations come from it) walk the same `route`.
"""

from __future__ import annotations

import functools
from dataclasses import replace

from .matrix import ROLE_TITLES, ROLES, Peer
from .records import dataclass

ANYWHERE = ("0.0.0.0/0",)
NODEPORTS = (30000, 32767)
# Google Front Ends: where a GCP proxy load balancer's connections to its backends
# come from ("Firewall rules" of the external Application / proxy Network LB docs).
GFE_RANGES = ("35.191.0.0/16", "130.211.0.0/22")
# Flows a pod sends (the Nomad server and the vm-service run as pods), and k8s-internal,
# which both nodes and pods send. With pod addresses of their own (GKE alias ranges, EKS
# custom pod networking) they arrive from the pod range.
POD_SENDERS = {
    "nomad-rpc": "the Nomad server runs as a pod",
    "k8s-vm-ssh": "the vm-service runs as a pod",
    "k8s-vm-docker": "the vm-service runs as a pod",
    "k8s-internal": "pods on one node reach pods on the others",
}
TRANSPARENT = " (transparent load balancer: applied to the Kubernetes nodes)"
PUBLIC_LB = " (internet-facing load balancer: reached on its public address)"


@dataclass(frozen=True)
class Hop:
    """A translation on the way, and who the next firewall sees because of it."""

    kind: str  # nat_gateway, public_ip, balancer, pods, proxy
    what: str  # "the NAT gateways (198.51.100.10/32, 198.51.100.11/32)"
    because: str
    # On a route: "destination" (what the source addresses), "source" (who the
    # destination sees) or "delivery" (the balancer, between the two).
    side: str = ""

    @property
    def text(self) -> str:
        return f"{self.what} because {self.because}"

    @property
    def step(self) -> str:
        """The hop as a line of a route."""
        if self.side == "destination":
            return f"sent to {self.text}"
        if self.side == "source":
            return f"arrives from {self.text}"
        return f"{self.what}: {self.because}"


@dataclass(frozen=True)
class End:
    """One end of a flow as the other end's firewall sees it."""

    peer: Peer
    hop: Hop | None = None

    def via(self, side: str) -> str:
        return f"{side} {self.hop.text}" if self.hop else ""


@dataclass(frozen=True)
class Leg:
    """One firewall's share of a flow: the rule the planner writes for it."""

    role: str
    direction: str
    peer: Peer
    ports: tuple[int, int] | None
    via: str = ""
    suffix: str = ""  # added to the page reference (where the rule was moved, why)


@dataclass(frozen=True)
class Step:
    """One firewall a packet meets on its route, and what it sees there."""

    role: str
    direction: str
    other: End  # the far end, as this firewall sees it
    port: int  # the destination port at this firewall (a NodePort, a proxy's port)


@dataclass(frozen=True)
class Route:
    """The request's way from source to destination: firewalls and hops in order."""

    steps: tuple[Step, ...]
    hops: tuple[Hop, ...]


@dataclass(frozen=True)
class Balancer:
    """What the load balancer's kind means for the packets it carries."""

    kind: str
    title: str
    firewall: bool  # has rules of its own (the load_balancer role)
    keeps_client: bool  # its targets see the client's address
    nodeports: bool  # delivers to the nodes' NodePorts, else to the listener's port
    own: Peer  # who the targets see when the client's address is not kept
    health: Peer | None = None  # health checks' source, when not `own` already


def _list(cidrs) -> str:
    cidrs = tuple(cidrs)
    shown = ", ".join(cidrs[:3]) + (", ..." if len(cidrs) > 3 else "")
    return f"({shown})"


def balancer(profile) -> Balancer:
    """The balancer's kind (load_balancer.kind), or today's reading of `transparent`."""
    lb = getattr(profile, "lb", None) or {}
    kind = lb.get("kind")
    subnets = tuple(profile.subnets.get("load_balancer", ()))
    addresses = Peer(cidrs=subnets, name="load_balancer_addresses")
    role = Peer(role="load_balancer")
    if kind == "nlb":
        targets = lb.get("targets", "instance")
        keep = lb.get("preserve_client_ip", targets == "instance")
        group = bool(lb.get("security_group", False))
        title = (
            f"the Network Load Balancer ({targets} targets,"
            f" {'with' if group else 'without'} a security group,"
            f" client IP preservation {'on' if keep else 'off'})"
        )
        if group:
            # Targets that reference the NLB's group accept its traffic whether it
            # keeps the client's address or not (AWS: "Update the security groups
            # for your Network Load Balancer").
            return Balancer("nlb", title, True, False, targets == "instance", role)
        return Balancer(
            "nlb",
            title,
            False,
            keep,
            targets == "instance",
            addresses,
            health=addresses if keep else None,
        )
    if kind == "clb":
        return Balancer("clb", "the Classic Load Balancer", True, False, True, role)
    if kind == "proxy":
        ranges = tuple(lb.get("proxy_ranges", GFE_RANGES))
        return Balancer(
            "proxy",
            "the proxy load balancer",
            False,
            False,
            False,
            Peer(cidrs=ranges, name="load_balancer_proxies"),
        )
    if kind == "passthrough" or profile.transparent_lb:
        title = (
            "the passthrough network load balancer"
            if kind == "passthrough"
            else "the transparent load balancer"
        )
        return Balancer(kind or "transparent", title, False, True, False, role)
    return Balancer("own", "the load balancer", True, False, True, role)


class Paths:
    """Every path of one profile; a pure function of it."""

    def __init__(self, profile):
        self.profile = profile
        self.balancer = balancer(profile)
        self.warnings: list[str] = []

    # --- what each firewall sees ----------------------------------------------

    @functools.cached_property
    def pods(self) -> tuple[str, ...]:
        """Pod ranges that other firewalls see as such (not masqueraded to the node)."""
        p = self.profile
        cidrs = tuple(getattr(p, "pod_cidrs", ()) or ())
        if p.cloud == "gcp":
            return cidrs  # VPC-native clusters: pods have alias IPs of their own
        if p.cloud == "aws" and (p.aws or {}).get("custom_pod_networking"):
            return cidrs  # ENIConfig subnets: pods are not in the nodes' subnets
        return ()  # the CNI masquerades pods behind their node

    def _pod_end(self, flow: str) -> End:
        where = (
            "GKE pods have alias IPs of their own"
            if self.profile.cloud == "gcp"
            else "EKS custom pod networking gives pods addresses of their own"
        )
        hop = Hop(
            "pods",
            f"the pod range {_list(self.pods)}",
            f"{POD_SENDERS[flow]} and {where}",
        )
        return End(Peer(cidrs=self.pods, name="pods"), hop)

    def _public_vm(self, source: str) -> bool:
        return self.profile.assign_public_ip and source in (
            "kubernetes_nodes",
            "nomad_clients",
        )

    def _nomad_public(self, why: str) -> End:
        """The Nomad clients' address on the internet: their own or the NAT's."""
        p = self.profile
        ips = p.peers["nomad_client_public_ips"]
        if ips:
            return End(
                Peer(cidrs=tuple(ips), name="nomad_client_public_ips"),
                Hop("public_ip", f"the Nomad clients' public IPs {_list(ips)}", why),
            )
        if p.nat_gateway_ips:
            return End(
                Peer(cidrs=p.nat_gateway_ips, name="nat_gateway"),
                Hop(
                    "nat_gateway",
                    f"the NAT gateways {_list(p.nat_gateway_ips)}",
                    "the Nomad clients have no public IPs",
                ),
            )
        return End(
            Peer(cidrs=ANYWHERE, name="nomad_client_public_ips"),
            Hop(
                "public_ip",
                f"the Nomad clients' public IPs {_list(ANYWHERE)}",
                "they are not known in advance"
                " (peers.nomad_client_public_ips and network.nat_gateway_ips are"
                f" empty) and {why}",
            ),
        )

    def sources(self, source: str, destination: str, flow: str = "") -> list[End]:
        """The source of a flow as the destination's firewall sees it (a pod sender
        adds the pod range beside its node)."""
        p = self.profile
        if source not in ROLES:
            return [End(self._named(source))]
        if destination == "external_vms" and self._public_vm(source):
            why = "the VMs are reached on their public addresses (assign_public_ip)"
            if source == "nomad_clients":
                return [self._nomad_public(why)]
            return [
                End(
                    Peer(cidrs=p.nat_gateway_ips, name="nat_gateway"),
                    Hop(
                        "nat_gateway",
                        f"the NAT gateways {_list(p.nat_gateway_ips)}",
                        "the vm-service pod reaches the VMs' public addresses"
                        " through them (assign_public_ip)",
                    ),
                )
            ]
        if (
            destination == "load_balancer"
            and source == "nomad_clients"
            and p.lb_internet_facing
        ):
            return [
                self._nomad_public(
                    "they reach the internet-facing load balancer on its public address"
                )
            ]
        ends = [End(Peer(role=source))]
        if source == "kubernetes_nodes" and self.pods and flow in POD_SENDERS:
            ends.append(self._pod_end(flow))
        return ends

    def destinations(self, source: str, destination: str, flow: str = "") -> list[End]:
        """The destination of a flow as the source's firewall sees it."""
        p = self.profile
        if destination not in ROLES:
            if destination == "internet" and self.proxy:
                return [self._proxy_end()]
            return [End(self._named(destination))]
        if destination == "external_vms" and self._public_vm(source):
            ips = p.peers.get("vm_public_ips") or ()
            what = f"the VMs' public IPs {_list(ips or ANYWHERE)}"
            why = "the VMs have public IPs (assign_public_ip)" + (
                "" if ips else " and peers.vm_public_ips does not list them"
            )
            return [
                End(
                    Peer(cidrs=tuple(ips) or ANYWHERE, name="vm_public_ips"),
                    Hop("public_ip", what, why),
                )
            ]
        if destination == "load_balancer":
            return [self._balancer_address(source)]
        ends = [End(Peer(role=destination))]
        if (
            source == destination == "kubernetes_nodes"
            and self.pods
            and flow in POD_SENDERS
        ):
            ends.append(self._pod_end(flow))
        return ends

    def _balancer_address(self, source: str) -> End:
        """The balancer's address as its clients' firewalls see it."""
        p, bal = self.profile, self.balancer
        if p.lb_internet_facing and source in ROLES:
            ips = tuple(p.lb_public_ips)
            return End(
                Peer(cidrs=ips or ANYWHERE, name="load_balancer_public_ips"),
                Hop(
                    "balancer",
                    f"the load balancer's public IPs {_list(ips or ANYWHERE)}",
                    "the load balancer is internet-facing"
                    + (
                        ""
                        if ips
                        else " and load_balancer.public_ips does not list them"
                    ),
                ),
            )
        if bal.firewall:
            return End(Peer(role="load_balancer"))
        if bal.kind == "nlb" and bal.own.cidrs:
            return End(
                bal.own,
                Hop(
                    "balancer",
                    f"the load balancer's private addresses {_list(bal.own.cidrs)}",
                    f"{bal.title} has no security group to reference",
                ),
            )
        # Today's transparent reading: the balancer's address is the nodes'.
        return End(Peer(role="kubernetes_nodes"))

    @functools.cached_property
    def proxy(self) -> dict:
        return dict(getattr(self.profile, "egress_proxy", None) or {})

    def _proxy_end(self) -> End:
        cidrs = tuple(self.proxy["addresses"])
        return End(
            Peer(cidrs=cidrs, name="egress_proxy"),
            Hop(
                "proxy",
                f"the egress proxy {_list(cidrs)} on port {self.proxy['port']}",
                "egress_proxy carries all HTTP and HTTPS to the internet",
            ),
        )

    def _named(self, name: str) -> Peer:
        p = self.profile
        if name == "dns":
            return Peer(cidrs=p.dns_servers, name="dns")
        if name == "webhooks":
            return Peer(cidrs=tuple(p.webhooks["cidrs"]), name="webhooks")
        return Peer(cidrs=tuple(p.peers.get(name, ())), name=name)

    def notes(self) -> list[str]:
        """What the matrix should say about the paths it was built for."""
        p, bal, out = self.profile, self.balancer, []
        if bal.kind not in ("own", "transparent"):
            seen = (
                "the clients' addresses"
                if bal.keeps_client
                else f"its own addresses {_list(bal.own.cidrs)}"
            )
            where = "NodePorts" if bal.nodeports else "listeners' ports"
            out.append(
                f"load_balancer.kind: {bal.title}"
                + (
                    " has a firewall of its own; the nodes take its traffic by"
                    " reference to it"
                    if bal.firewall
                    else f" has no firewall of its own; the nodes see {seen} on"
                    f" their {where}"
                )
            )
        if not getattr(p, "webhooks", None):
            from .profile_paths import uncovered

            missing = uncovered(p.peers["vcs"], p.peers["external"])
            if missing:
                out.append(
                    "webhooks: not set, and peers.external does not cover peers.vcs"
                    f" {_list(missing)}: if the VCS sends its webhooks (which trigger"
                    " builds) from there, they cannot reach 443 on the load"
                    " balancer; say where they come from under webhooks"
                )
        return out

    def webhooks_flow(self):
        """The webhooks' way in to 443 on the load balancer, when peers.external
        does not already let them in (a flow of the profile's own, like a site flow)."""
        from .catalog import Flow
        from .profile_paths import uncovered

        hooks = getattr(self.profile, "webhooks", None) or {}
        if not hooks or not uncovered(hooks["cidrs"], self.profile.peers["external"]):
            return None
        what = (
            "the VCS's published hook ranges"
            if hooks["from"] == "vcs"
            else "the webhook relay"
        )
        return Flow(
            id="webhooks",
            sources=("webhooks",),
            destinations=("load_balancer",),
            protocols=("tcp",),
            ports=((443, 443),),
            purpose=f"VCS webhooks that trigger builds, from {what}",
            purpose_by_line={},
            lines=(),
            obsolete=(),
            when={},
            public_ip=None,
            refs={},
            caution={},
            notes={},
            site=True,
            reference=f"webhooks.from: {hooks['from']}",
            key="webhooks",
        )

    # --- the planner's legs ---------------------------------------------------

    def legs(self, flow, source: str, destination: str, ports) -> list[Leg]:
        """The rules a flow needs on each firewall it crosses."""
        fid = flow.id
        if source == "load_balancer" and destination == "kubernetes_nodes":
            if not flow.site and not self.balancer.nodeports:
                return []  # the balancer delivers to the listeners' ports instead
        out: list[Leg] = []
        if destination == "load_balancer":
            out += self._balancer_legs(flow, source, ports)
        elif destination in ROLES:
            for end in self.sources(source, destination, fid):
                out.append(
                    Leg(destination, "ingress", end.peer, ports, end.via("from"))
                )
        if source in ROLES:
            public_lb = destination == "load_balancer" and self._public_lb(source)
            for end in self.destinations(source, destination, fid):
                port_at = ports
                if end.hop and end.hop.kind == "proxy":
                    port_at = (self.proxy["port"],) * 2
                out.append(
                    Leg(
                        source,
                        "egress",
                        end.peer,
                        port_at,
                        end.via("to"),
                        PUBLIC_LB if public_lb else "",
                    )
                )
        return out

    def _public_lb(self, source: str) -> bool:
        return self.profile.lb_internet_facing and source == "nomad_clients"

    def _balancer_legs(self, flow, source: str, ports) -> list[Leg]:
        bal = self.balancer
        suffix = PUBLIC_LB if self._public_lb(source) else ""
        clients = self.sources(source, "load_balancer", flow.id)
        if bal.firewall:
            out = [
                Leg("load_balancer", "ingress", e.peer, ports, e.via("from"), suffix)
                for e in clients
            ]
            if not bal.nodeports:  # IP targets: the pods' own port, from the LB
                why = f"from {bal.title}, which delivers to the pods' own port"
                out.append(
                    Leg("load_balancer", "egress", Peer(role="kubernetes_nodes"), ports)
                )
                out.append(Leg("kubernetes_nodes", "ingress", bal.own, ports, why))
            return out
        at = NODEPORTS if bal.nodeports else ports
        moved = TRANSPARENT + suffix
        delivery = " and delivers to a NodePort" if bal.nodeports else ""
        if bal.keeps_client:
            out = []
            for end in clients:
                via = end.via("from")
                if bal.kind not in ("transparent",):
                    keeps = f"{bal.title} keeps the client's address{delivery}"
                    via = f"{via}; {keeps}" if via else f"from the client: {keeps}"
                out.append(Leg("kubernetes_nodes", "ingress", end.peer, at, via, moved))
        else:
            self._unenforced(source, clients)
            via = (
                f"from {bal.title} {_list(bal.own.cidrs)} because it does not keep"
                f" the client's address{delivery}"
            )
            out = [Leg("kubernetes_nodes", "ingress", bal.own, at, via, moved)]
        if bal.health is not None and bal.health.cidrs:
            via = f"from {bal.title}'s health checks {_list(bal.health.cidrs)}"
            out.append(Leg("kubernetes_nodes", "ingress", bal.health, at, via, moved))
        return out

    def _unenforced(self, source: str, clients: list[End]) -> None:
        if all(e.peer.cidrs in (ANYWHERE, ("0.0.0.0/0", "::/0")) for e in clients):
            return
        who = f"peers.{source}" if source not in ROLES else ROLE_TITLES[source]
        fix = (
            "restrict it with a Cloud Armor policy on the balancer"
            if self.balancer.kind == "proxy"
            else "an NLB takes a security group only when created: create it with"
            " one (load_balancer.security_group: true), or keep the client's address"
        )
        warning = (
            f"load_balancer.kind: {self.balancer.title} does not keep the client's"
            f" address, so no firewall of the nodes can tell {who} from anyone"
            f" else; {fix}"
        )
        if warning not in self.warnings:
            self.warnings.append(warning)

    # --- explain's route ------------------------------------------------------

    def enforcer(self, destination: str) -> str:
        """The role whose firewall takes a destination's ingress."""
        if destination == "load_balancer" and not self.balancer.firewall:
            return "kubernetes_nodes"
        return destination

    def sender_flow(self, source, destination, protocol: str, port: int) -> str:
        """The page flow a pod sends between these roles on this port, if any."""
        if source != "kubernetes_nodes" or not destination:
            return ""
        from .catalog import load_catalog

        for flow in load_catalog().flows:
            if flow.id not in POD_SENDERS or protocol not in flow.protocols + ("all",):
                continue
            if source in flow.sources and destination in flow.destinations:
                if flow.ports is None or any(lo <= port <= hi for lo, hi in flow.ports):
                    return flow.id
        return ""

    def route(
        self,
        source: str | None,
        destination: str | None,
        port: int,
        flow: str = "",
        pod: bool = False,
    ) -> list[Route]:
        """The request's route from a source (a role, a peer list's name, or None for
        an address) to a destination; one route per address the source may send
        from (a node and its pods). `pod`: the source is a pod on a host of the role."""
        both = bool(source and destination)
        dst_end = self.destinations(source, destination, flow)[0] if both else None
        src_ends = self.sources(source, destination, flow) if both else [None]
        if source == "kubernetes_nodes" and self.pods and both:
            if pod and flow not in POD_SENDERS:
                src_ends = [self._pod_end(flow or "k8s-internal")]
            elif pod or (flow in POD_SENDERS and flow != "k8s-internal"):
                src_ends = src_ends[-1:]  # the sender is the pod
        routes = []
        for src_end in src_ends:
            steps, hops = [], []
            if source:
                port_at = port
                if dst_end and dst_end.hop and dst_end.hop.kind == "proxy":
                    port_at = self.proxy["port"]
                steps.append(Step(source, "egress", dst_end, port_at))
                if dst_end and dst_end.hop:
                    hops.append(replace(dst_end.hop, side="destination"))
            if src_end and src_end.hop:
                hops.append(replace(src_end.hop, side="source"))
            if destination:
                where, port_at, seen = self._arrival(destination, src_end, port, hops)
                steps.append(Step(where, "ingress", seen, port_at))
            routes.append(Route(tuple(steps), tuple(dict.fromkeys(hops))))
        return routes

    def _arrival(self, destination, src_end, port, hops):
        """Where a request to `destination` is checked, on which port, from whom."""
        if destination != "load_balancer" or self.balancer.firewall:
            return destination, port, src_end
        bal = self.balancer
        at = nodeport(port) if bal.nodeports else port
        if bal.keeps_client:
            if bal.kind != "transparent":
                hops.append(
                    Hop(
                        "balancer",
                        bal.title,
                        "it keeps the client's address"
                        + (f" and delivers to NodePort {at}" if bal.nodeports else ""),
                        "delivery",
                    )
                )
            return "kubernetes_nodes", at, src_end
        hops.append(
            Hop(
                "balancer",
                f"{bal.title} {_list(bal.own.cidrs)}",
                "it does not keep the client's address"
                + (f" and delivers to NodePort {at}" if bal.nodeports else ""),
                "delivery",
            )
        )
        return "kubernetes_nodes", at, End(bal.own)


def join_via(vias) -> str:
    """The hops of rules merged into one: one "what" once, its reasons joined."""
    reasons: dict[str, list[str]] = {}
    for via in vias:
        for part in via.split("; ") if via else ():
            what, _, why = part.partition(" because ")
            found = reasons.setdefault(what, [])
            if why and why not in found:
                found.append(why)
    return "; ".join(
        what + (f" because {' and '.join(whys)}" if whys else "")
        for what, whys in reasons.items()
    )


def nodeport(port: int) -> int:
    """The NodePort that stands for a listener port (Kubernetes picks one in the
    range; any will do for the rules, which open the whole range)."""
    lo, hi = NODEPORTS
    return lo + port % (hi - lo + 1)

"""A profile's sections read into the parts of its model, and the checks across them.

Each `read_*` reads one section (its addresses, its names) and returns its part of the
model with its Findings; each `check_*` looks at a combination of settings once every
part has been read, and returns its Findings. profile._build runs them in a fixed
order, which is the order of the messages. Every message names its key path and line.
"""

from __future__ import annotations

import ipaddress
from dataclasses import field

from .addresses import network_text, networks_text
from .matrix import ROLES
from .problems import shorten
from .profile_yaml import dotted, type_name, where
from .records import dataclass

# The peer lists the page's flows use, with their defaults; any other name under
# peers: is a named list for site flows.
PEER_DEFAULTS = {
    "external": ["0.0.0.0/0"],
    "internet": ["0.0.0.0/0"],
    "vcs": [],
    "ssh_admin": [],
    "ssh_rerun": ["0.0.0.0/0"],
    "nomad_client_public_ips": [],
    "vm_public_ips": [],
    "nomad_server_balancer": [],
    "nomad_server_health_checks": [],
}
ANYWHERE = ("0.0.0.0/0", "::/0")


def open_to_all(cidrs) -> bool:
    """Whether a list of blocks holds 0.0.0.0/0 or ::/0 (one C-level pass)."""
    return not frozenset(ANYWHERE).isdisjoint(cidrs)


@dataclass(frozen=True)
class Source:
    """Where a profile was read from: its name and the line of each key path."""

    name: str
    lines: dict

    def findings(self) -> Findings:
        return Findings(self)


@dataclass
class Findings:
    """The problems (errors) and warnings of one reader or check, as messages."""

    source: Source
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def error(self, path, message, near=None) -> None:
        # A key that is absent has no line: point at the one that asked for it.
        lines = self.source.lines
        line_path = path if path in lines or near is None else near
        self.problems.append(
            f"{where(self.source.name, lines, line_path)}: {dotted(path)}: {message}"
        )

    def warn(self, path, message) -> None:
        text = f"{dotted(path)}: {message}"
        if text not in self.warnings:
            self.warnings.append(text)

    def merge(self, other: Findings) -> None:
        self.problems.extend(other.problems)
        for text in other.warnings:
            if text not in self.warnings:
                self.warnings.append(text)

    def take(self, result: tuple):
        """The part of a (part, findings) pair, its findings merged into these."""
        part, found = result
        self.merge(found)
        return part

    def cidr(self, path, value) -> str | None:
        """`value` as a CIDR block, or None with the problem reported."""
        if not isinstance(value, str):
            self.error(
                path,
                f"expected an address or CIDR as a string, got {type_name(value)} {shorten(value)}",
            )
            return None
        if "%" in value:  # fe80::1%eth0: a zone means nothing in a firewall rule
            self.error(
                path,
                f"{shorten(value)}: a zone index (%...) is not allowed; write the address alone",
            )
            return None
        try:
            return network_text(value)
        except ValueError:
            pass
        try:
            fixed = ipaddress.ip_network(value, strict=False)
        except ValueError:
            self.error(
                path,
                f"{shorten(value)} is not a valid IPv4 or IPv6 address or CIDR block",
            )
            return None
        self.error(path, f"{shorten(value)} has host bits set; did you mean {fixed}?")
        return None

    def cidrs(self, path, values) -> tuple[str, ...]:
        plain = networks_text(values)  # a long list of IPv4, read in C
        if plain is not None:
            return plain
        out = []
        for i, value in enumerate(values):
            net = self.cidr(path + (i,), value)
            if net is not None:
                out.append(str(net))
        return tuple(out)


# --- network ---------------------------------------------------------------------


@dataclass(frozen=True)
class Network:
    """The network section's addresses, each a CIDR block as ipaddress writes it."""

    vpc: str | None
    subnets: dict[str, tuple[str, ...]]
    dns: tuple[str, ...]
    nat: tuple[str, ...]
    pods: tuple[str, ...]
    services: tuple[str, ...]


def read_network(data, source: Source) -> tuple[Network, Findings]:
    found = source.findings()
    network = data["network"]
    vpc = None
    if "vpc_cidr" in network:
        parsed = found.cidr(("network", "vpc_cidr"), network["vpc_cidr"])
        vpc = str(parsed) if parsed else None

    subnets = {
        role: found.cidrs(
            ("network", "subnets", role), network.get("subnets", {}).get(role, [])
        )
        for role in ROLES
    }
    dns = found.cidrs(("network", "dns_servers"), network["dns_servers"])
    nat = found.cidrs(
        ("network", "nat_gateway_ips"), network.get("nat_gateway_ips", [])
    )
    pods = found.cidrs(("network", "pod_cidrs"), network.get("pod_cidrs", []))
    services = found.cidrs(
        ("network", "service_cidrs"), network.get("service_cidrs", [])
    )
    return Network(vpc, subnets, dns, nat, pods, services), found


def check_network(network: Network, source: Source) -> Findings:
    """Roles' subnets apart from each other and inside the VPC, DNS servers in it."""
    found = source.findings()
    for role, nets in network.subnets.items():
        _refuse_everywhere(("network", "subnets", role), nets, "a role's", found)
    _check_overlaps(network.subnets, found)
    vpc = network.vpc
    if not vpc:
        return found
    vpc_net = ipaddress.ip_network(vpc)
    for role, nets in network.subnets.items():
        for i, net in enumerate(nets):
            n = ipaddress.ip_network(net)
            if n.version != vpc_net.version or not n.subnet_of(vpc_net):
                found.warn(
                    ("network", "subnets", role, i),
                    f"{net} is outside vpc_cidr {vpc}",
                )
    for i, net in enumerate(network.dns):
        n = ipaddress.ip_network(net)
        outside = n.version != vpc_net.version or not n.subnet_of(vpc_net)
        if outside and not n.network_address.is_link_local:
            found.warn(
                ("network", "dns_servers", i),
                f"{net} is outside vpc_cidr {vpc}; the page asks for the DNS servers in the VPC",
            )
    return found


def _refuse_everywhere(path, nets, whose: str, found: Findings) -> None:
    """0.0.0.0/0 or ::/0 as a role's or the cluster's own range: every rule about
    that range would be about every address (explain would allow anything)."""
    for i, net in enumerate(nets):
        if net in ANYWHERE:
            family = "IPv4" if "." in net else "IPv6"
            found.error(
                path + (i,),
                f"{net} is every {family} address, not {whose} own range; list the"
                " subnets it really uses",
            )


def _check_overlaps(subnets, found: Findings) -> None:
    seen: list[tuple[ipaddress._BaseNetwork, str, int]] = []
    for role in ROLES:
        for i, net in enumerate(subnets[role]):
            if net in ANYWHERE:
                continue  # refused on its own
            n = ipaddress.ip_network(net)
            for other, other_role, j in seen:
                if (
                    other_role != role
                    and n.version == other.version
                    and n.overlaps(other)
                ):
                    found.error(
                        ("network", "subnets", role, i),
                        f"{n} overlaps {other} of {other_role}; roles need distinct subnets"
                        " so that rules can tell them apart",
                    )
            seen.append((n, role, i))


def check_cluster_ranges(network: Network, source: Source) -> Findings:
    """Pod and service ranges apart from every role's subnets and from each other."""
    found = source.findings()
    ranges = (("pod_cidrs", network.pods), ("service_cidrs", network.services))
    for key, nets in ranges:
        _refuse_everywhere(("network", key), nets, "the cluster's", found)
    pods = [ipaddress.ip_network(o) for o in network.pods if o not in ANYWHERE]
    for key, nets in ranges:
        for i, net in enumerate(nets):
            if net in ANYWHERE:
                continue
            n = ipaddress.ip_network(net)
            for role, role_nets in network.subnets.items():
                if any(n.overlaps(ipaddress.ip_network(o)) for o in role_nets):
                    found.error(
                        ("network", key, i),
                        f"{n} overlaps the {role} subnets; pod and service ranges"
                        " are the cluster's own",
                    )
            clash = [p for p in pods if key == "service_cidrs" and n.overlaps(p)]
            if clash:
                found.error(
                    ("network", key, i),
                    f"{n} {'is' if clash[0] == n else 'overlaps'} the pod range"
                    f" {clash[0]} (network.pod_cidrs); Kubernetes gives services and"
                    " pods distinct ranges",
                )
    return found


# --- host firewall -----------------------------------------------------------------


def read_host_firewall(data, source: Source) -> tuple[dict, Findings]:
    found = source.findings()
    host_fw = dict(data.get("host_firewall", {}))
    if "ntp_servers" in host_fw:
        host_fw["ntp_servers"] = found.cidrs(
            ("host_firewall", "ntp_servers"), host_fw["ntp_servers"]
        )
    if "jobs" in host_fw:
        jobs = host_fw["jobs"] = dict(host_fw["jobs"])
        if "blocked_cidrs" in jobs:
            path = ("host_firewall", "jobs", "blocked_cidrs")
            jobs["blocked_cidrs"] = found.cidrs(path, jobs["blocked_cidrs"])
    return host_fw, found


def check_host_firewall(data, host_fw: dict, source: Source) -> Findings:
    found = source.findings()
    if data["cloud"] == "generic" and not host_fw.get("ntp_servers"):
        found.warn(
            ("host_firewall", "ntp_servers"),
            "empty: the host firewalls let no NTP through; list your time servers",
        )
    if (host_fw.get("jobs") or {}).get("metadata"):
        found.warn(
            ("host_firewall", "jobs", "metadata"),
            "true: every job on the Nomad clients and VMs may reach the metadata"
            " service, and with it the instance's credentials",
        )
    return found


# --- peers ---------------------------------------------------------------------------


def read_peers(data, source: Source) -> tuple[dict[str, tuple[str, ...]], Findings]:
    """The page's peer lists (with their defaults), then the named ones in file order."""
    found = source.findings()
    peers_in = data["peers"]
    peers = {}
    for key in PEER_DEFAULTS:
        peers[key] = found.cidrs(("peers", key), peers_in.get(key, PEER_DEFAULTS[key]))
    for key in [k for k in peers_in if k not in PEER_DEFAULTS]:  # in file order
        if key in ROLES or key == "dns":
            what = "a role" if key in ROLES else "the DNS servers (network.dns_servers)"
            found.error(
                ("peers", key), f"{key!r} already names {what}; choose another name"
            )
        peers[key] = found.cidrs(("peers", key), peers_in[key])
    return peers, found


def check_peer_names(data, site_flows, source: Source) -> Findings:
    """A named peer list that no site flow uses: a misspelt page peer, or unused."""
    found = source.findings()
    used = {end for f in site_flows for end in f.sources + f.destinations}
    for key in [k for k in data["peers"] if k not in PEER_DEFAULTS]:
        if key in used:
            continue
        import difflib  # only for an unused peer list

        guess = difflib.get_close_matches(key, list(PEER_DEFAULTS), n=1, cutoff=0.8)
        if guess:
            # Most likely a misspelt page peer, whose default would apply silently.
            found.error(
                ("peers", key),
                f"unknown key {key!r}; did you mean {guess[0]!r}? (no site flow uses"
                " it as a named peer list)",
            )
        else:
            found.warn(("peers", key), "a named peer list that no site flow uses")
    return found


def check_ssh_and_ui_exposure(data, peers, source: Source) -> Findings:
    """SSH open to the whole internet, or a VPN install's UI open to it."""
    found = source.findings()
    for key in ("ssh_admin", "ssh_rerun"):
        if open_to_all(peers[key]):
            what = (
                "administrative SSH" if key == "ssh_admin" else "SSH into re-run jobs"
            )
            found.warn(
                ("peers", key),
                f"{what} is open to the whole internet; narrow it to your users' ranges",
            )
    if data["access"] == "vpn" and open_to_all(peers["external"]):
        found.warn(
            ("peers", "external"),
            "access is vpn but the UI is open to 0.0.0.0/0; narrow it to the VPN's range",
        )
    return found


# --- site flows ------------------------------------------------------------------


def read_site_flows(data, peers, source: Source) -> tuple[list, Findings]:
    """The site_flows section, read by the catalog's flow parser."""
    found = source.findings()
    raw_flows = data.get("site_flows", [])
    if not raw_flows:
        return [], found
    from .catalog import PEERS, load_catalog, read_flow

    catalog = load_catalog()
    page_ids = {f.id for f in catalog.flows}
    known = (*ROLES, *PEERS, *peers)
    transparent = data.get("load_balancer", {}).get("transparent", False)
    flows, ids = [], {}
    for i, raw in enumerate(raw_flows):
        base = ("site_flows", i)
        flow = read_flow(
            raw,
            dict.fromkeys(known),
            lambda path, message, base=base: found.error(base + path, message),
            site=True,
            isolated=catalog.isolated_roles,
            key=f"site_flows[{i}]",
        )
        if "id" in raw:
            if flow.id in page_ids:
                found.error(
                    base + ("id",), f"{flow.id!r} is a page flow's id; choose another"
                )
            elif flow.id in ids:
                found.error(
                    base + ("id",),
                    f"{flow.id!r} is already the id of site_flows[{ids[flow.id]}]",
                )
            ids.setdefault(flow.id, i)
        if transparent and "load_balancer" in flow.sources:
            found.error(
                base + ("from",),
                "the load balancer is transparent: traffic leaves from the Kubernetes"
                " nodes; write kubernetes_nodes",
            )
        flows.append(flow)
    return flows, found


def check_site_flows(site_flows, peers, source: Source) -> Findings:
    """Warnings for site flows that open SSH or a whole role to anywhere."""
    from .matrix import ROLE_TITLES

    found = source.findings()
    for i, flow in enumerate(site_flows):  # one flow per entry, in order
        path = ("site_flows", i)
        ports = flow.ports or ((1, 65535),)
        tcp = any(p in ("tcp", "all") for p in flow.protocols)
        ssh = tcp and any(lo <= 22 <= hi for lo, hi in ports)
        whole = "all" in flow.protocols or any(
            lo <= 1 and hi >= 65535 for lo, hi in ports
        )
        for src in flow.sources:
            for dst in flow.destinations:
                role, peer = (dst, src) if dst in ROLES else (src, dst)
                if peer in ROLES or peer == "dns":
                    continue
                if not open_to_all(peers.get(peer, ())):
                    continue
                side = "from" if peer == src else "to"
                if whole:
                    found.warn(
                        path,
                        f"opens every port of {ROLE_TITLES[role]} {side} 0.0.0.0/0"
                        f" (peers.{peer}); narrow the peer list or the ports",
                    )
                elif ssh and peer == src:
                    found.warn(
                        path,
                        f"opens SSH (tcp/22) on {ROLE_TITLES[role]} to the whole"
                        f" internet (peers.{peer}); narrow it to your users' ranges",
                    )
    return found


# --- load balancer -----------------------------------------------------------------


def read_load_balancer(data, source: Source) -> tuple[tuple[str, ...], Findings]:
    """The balancer's public addresses."""
    found = source.findings()
    section = data.get("load_balancer", {})
    return (
        found.cidrs(("load_balancer", "public_ips"), section.get("public_ips", [])),
        found,
    )


def read_internet_facing(
    data, network: Network, peers, lb_ips, source: Source
) -> tuple[bool, Findings]:
    """Whether the balancer is internet-facing (said, or the access's default), with
    what that asks of the network: Nomad clients reach it on its public address."""
    found = source.findings()
    section = data.get("load_balancer", {})
    cloud, version = data["cloud"], data["server_version"]
    # An NLB without a security group is transparent but needs its own subnets: its
    # address and its health checks' source (profile_paths.py).
    nlb = section.get("kind") == "nlb"
    if (
        section.get("transparent", False)
        and network.subnets["load_balancer"]
        and not nlb
    ):
        found.warn(
            ("network", "subnets", "load_balancer"),
            "ignored: the load balancer is transparent",
        )
    # 3.x's nomad, vm-service and output-processor balancers are internal by default.
    facing = section.get(
        "internet_facing",
        data["access"] == "public" and cloud in ("aws", "gcp") and version != "3",
    )
    if not facing:
        if lb_ips:
            found.warn(
                ("load_balancer", "public_ips"),
                "ignored: the load balancer is internal",
            )
        return facing, found
    said = "internet_facing" in section
    why = (
        ""
        if said
        else " (the default with access: public; set load_balancer.internet_facing:"
        " false for an internal one)"
    )
    if not network.nat and not peers["nomad_client_public_ips"]:
        found.error(
            ("network", "nat_gateway_ips"),
            f"the load balancer is internet-facing{why}: Nomad clients reach it on"
            " its public address, through the NAT gateways or their own public IPs;"
            " list network.nat_gateway_ips or peers.nomad_client_public_ips",
            near=("load_balancer", "internet_facing") if said else ("access",),
        )
    if not lb_ips:
        found.warn(
            ("load_balancer", "public_ips"),
            "empty with an internet-facing load balancer: the Nomad clients' egress"
            " to it goes to 0.0.0.0/0; list its public addresses to narrow it",
        )
    return facing, found


# --- vm service ------------------------------------------------------------------


def check_vm_service(data, network: Network, peers, source: Source) -> Findings:
    """assign_public_ip: where it applies, and the addresses it then needs."""
    found = source.findings()
    cloud, version = data["cloud"], data["server_version"]
    # The VM rows that assign_public_ip rewrites exist on 4.0-4.2 (and 4.3+ when kept).
    vm_rows = version in ("4.0", "4.1", "4.2") or data.get("include_obsolete", False)
    if not data.get("vm_service", {}).get("assign_public_ip", False):
        for key in ("nomad_client_public_ips", "vm_public_ips"):
            if peers[key]:
                found.warn(("peers", key), "ignored: assign_public_ip is false")
        return found
    path = ("vm_service", "assign_public_ip")
    if cloud != "aws":
        found.error(
            path,
            f"assign_public_ip is an AWS EC2 setting; it cannot be true with cloud: {cloud}",
        )
    elif version == "3":
        found.error(
            path,
            "assign_public_ip has no rules on the 3.x page; it is documented from 4.0",
        )
    elif not network.nat and vm_rows:
        found.error(
            ("network", "nat_gateway_ips"),
            "assign_public_ip is true: list the cluster's NAT gateway addresses (the vm-service pod reaches VMs through them)",
            near=path,
        )
    # Nomad clients -> VMs on 22 is current on every 4.x line. Behind the NAT
    # gateways, the VMs see those (generator/paths.py).
    ports = "22 and 2376" if vm_rows else "22"
    if not peers["nomad_client_public_ips"] and not network.nat and version != "3":
        found.warn(
            ("peers", "nomad_client_public_ips"),
            f"empty with assign_public_ip and no network.nat_gateway_ips: VMs accept {ports} from 0.0.0.0/0; list the Nomad clients' public IPs, or the NAT gateways they leave through, to narrow it",
        )
    if not peers["vm_public_ips"] and version != "3":
        found.warn(
            ("peers", "vm_public_ips"),
            f"empty with assign_public_ip: the egress to the VMs on {ports} goes to 0.0.0.0/0; list the VMs' public range (an Elastic IP pool, the region's EC2 ranges) to narrow it",
        )
    return found


# --- cloud sections: aws, gcp ------------------------------------------------------


def check_cloud_sections(data, network: Network, source: Source) -> Findings:
    """The aws and gcp sections only with their cloud, and how each cloud addresses
    a role: GCP by tag or service account and its subnets, others by subnets."""
    found = source.findings()
    cloud = data["cloud"]
    transparent = data.get("load_balancer", {}).get("transparent", False)
    external = nomad_servers(data) == "external"
    needed = [
        r
        for r in ROLES
        if not (r == "load_balancer" and transparent)
        and not (r == "nomad_servers" and not external)
    ]
    if "aws" in data and cloud != "aws":
        found.error(
            ("aws",), f"the aws section only applies to cloud: aws, not {cloud}"
        )
    if cloud == "gcp":
        _check_gcp(data, transparent, needed, network, found)
        return found
    if "gcp" in data:
        found.error(
            ("gcp",), f"the gcp section only applies to cloud: gcp, not {cloud}"
        )
    # AWS targets address roles by security group: a subnet is needed only by a
    # target that addresses roles by address (iptables), checked when it is chosen.
    for role in needed if cloud != "aws" else ():
        if not network.subnets[role]:
            found.error(
                ("network", "subnets", role),
                f"missing: on {cloud}, a role is addressed through its subnets",
                near=("network", "subnets"),
            )
    return found


def _check_gcp(data, transparent, needed, network: Network, found: Findings) -> None:
    if not transparent:
        found.error(
            ("load_balancer", "transparent"),
            "GCP load balancers have no firewall of their own: set transparent: true so their rules apply to the Kubernetes nodes",
            near=("cloud",),
        )
    gcp = data.get("gcp", {})
    network_path = gcp.get("network", "").split("/")
    if "project" in gcp and "projects" in network_path:
        owner = network_path[network_path.index("projects") + 1]
        if owner != gcp["project"]:
            found.error(
                ("gcp", "network"),
                f"the network is project {owner}'s but the rules are made in"
                f" gcp.project {gcp['project']}: a firewall rule belongs to its"
                f" network's project; set gcp.project to {owner} or name a network"
                f" of {gcp['project']}",
            )
    tags, accounts = gcp.get("tags", {}), gcp.get("service_accounts", {})
    for role in needed:
        if role == "load_balancer":
            continue
        if role in tags and role in accounts:
            found.error(
                ("gcp", "tags", role),
                "a role is addressed by a tag or a service account, not both (GCP rules cannot mix them)",
            )
        if not network.subnets[role]:
            found.error(
                ("network", "subnets", role),
                "missing: GCP egress rules reach a role only through its CIDR ranges",
                near=("network", "subnets"),
            )


# --- nomad: servers outside the cluster, the clients' container runtime -----------

# The first release whose CircleCI Terraform deploys Nomad servers of their own
# (deploy_nomad_server_instances; the installation docs say so from 4.9), and the
# one whose Nomad client modules run Podman (use_podman).
EXTERNAL_SERVERS_FROM = "4.8"
PODMAN_FROM = "4.10"


def nomad_servers(data) -> str:
    return data.get("nomad", {}).get("servers", "in_cluster")


def container_runtime(data) -> str:
    return data.get("nomad", {}).get("container_runtime", "docker")


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def read_nomad(data, network: Network, peers, source: Source) -> tuple[dict, Findings]:
    """The Nomad topology, with the peer lists it asks for; returns the peers with
    the health checks' default (the balancer's addresses) filled in."""
    found = source.findings()
    version = _version_key(data["server_version"])
    balancer, checks = (
        peers["nomad_server_balancer"],
        peers["nomad_server_health_checks"],
    )
    if nomad_servers(data) != "external":
        for path, given in (
            (("peers", "nomad_server_balancer"), balancer),
            (("peers", "nomad_server_health_checks"), checks),
            (("network", "subnets", "nomad_servers"), network.subnets["nomad_servers"]),
        ):
            if given:
                found.warn(path, "ignored: nomad.servers is in_cluster")
    else:
        if version < _version_key(EXTERNAL_SERVERS_FROM):
            found.error(
                ("nomad", "servers"),
                f"external: Nomad servers outside the cluster come with"
                f" {EXTERNAL_SERVERS_FROM} (CircleCI's Terraform"
                " deploy_nomad_server_instances); server_version is"
                f" {data['server_version']}",
            )
        if not balancer:
            found.error(
                ("peers", "nomad_server_balancer"),
                "missing: with nomad.servers: external, list where the servers'"
                " balancer is reached (an internal NLB's subnets, a forwarding"
                " rule's address)",
                near=("nomad", "servers"),
            )
        if not checks:
            peers = {**peers, "nomad_server_health_checks": balancer}
            if data["cloud"] == "gcp":
                found.warn(
                    ("peers", "nomad_server_health_checks"),
                    "empty: the servers' balancer's health checks are taken to come"
                    " from peers.nomad_server_balancer; GCP sends them from its own"
                    " ranges (35.191.0.0/16, 130.211.0.0/22): list them",
                )
    if container_runtime(data) == "podman" and version < _version_key(PODMAN_FROM):
        found.error(
            ("nomad", "container_runtime"),
            f"podman: CircleCI's Nomad client modules run Podman from {PODMAN_FROM}"
            f" (use_podman); server_version is {data['server_version']}",
        )
    return peers, found


def check_network_acls(data, network: Network, source: Source) -> Findings:
    """aws.network_acls: every role's subnets, which the ACLs attach to and name."""
    found = source.findings()
    aws = data.get("aws", {})
    transparent = data.get("load_balancer", {}).get("transparent", False)
    nat = aws.get("nat_gateways_in")
    if not aws.get("network_acls", False):
        if nat:
            found.warn(("aws", "nat_gateways_in"), "ignored: aws.network_acls is false")
        return found
    for role in ROLES:
        if role == "load_balancer" and transparent:
            continue
        if role == "nomad_servers" and nomad_servers(data) != "external":
            continue
        if not network.subnets[role]:
            found.error(
                ("network", "subnets", role),
                "missing: aws.network_acls attaches an ACL to each role's subnets"
                " and names the other roles by them",
                near=("aws", "network_acls"),
            )
    if nat == "load_balancer" and transparent:
        found.error(
            ("aws", "nat_gateways_in"),
            "the load balancer is transparent: it has no subnets of its own",
        )
    return found


# --- top level: name, ephemeral ports, quotas ----------------------------------------


def check_quotas(data, source: Source) -> Findings:
    from .quotas import profile_problems

    found = source.findings()
    for path, message in profile_problems(data.get("quotas", {})):
        found.error(("quotas",) + path, message)
    return found


def check_ephemeral_ports(data, source: Source) -> Findings:
    found = source.findings()
    low, high = data.get("ephemeral_ports", (1024, 65535))
    if low > high:
        found.error(
            ("ephemeral_ports",),
            f"[{low}, {high}] is reversed; write the lower port first: [{high}, {low}]",
        )
    return found


def check_name(data, source: Source) -> Findings:
    found = source.findings()
    if data["cloud"] == "aws" and data["name"].startswith("sg-"):
        found.error(
            ("name",),
            f"{data['name']!r} starts with 'sg-': AWS refuses security group names that"
            " start with sg- (they would read as group IDs); choose another name",
        )
    return found

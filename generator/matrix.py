"""The rule matrix: what each role lets in and out, and to whom."""

from __future__ import annotations

from .records import dataclass

# nomad_servers: Nomad servers run outside the cluster (nomad.servers: external), 4.8+.
ROLES = (
    "load_balancer",
    "kubernetes_nodes",
    "nomad_clients",
    "nomad_servers",
    "external_vms",
)
DIRECTIONS = ("ingress", "egress")
PROTOCOLS = ("tcp", "udp", "all")

ROLE_TITLES = {
    "load_balancer": "Load balancer (circleci-proxy)",
    "kubernetes_nodes": "Kubernetes nodes",
    "nomad_clients": "Nomad clients",
    "nomad_servers": "Nomad servers",
    "external_vms": "External VMs",
}


@dataclass(frozen=True)
class Peer:
    """The other end of a rule: a role, or a named list of CIDRs."""

    role: str | None = None
    cidrs: tuple[str, ...] = ()
    name: str | None = None

    @property
    def label(self) -> str:
        return self.role or self.name or "cidrs"

    def to_dict(self) -> dict:
        if self.role:
            return {"role": self.role}
        return {"cidrs": list(self.cidrs), "name": self.name}

    @classmethod
    def from_dict(cls, data: dict) -> Peer:
        if "role" in data:
            return cls(role=data["role"])
        return cls(cidrs=tuple(data["cidrs"]), name=data.get("name"))

    def sort_key(self) -> tuple:
        return (
            0 if self.role else 1,
            ROLES.index(self.role) if self.role else 0,
            self.name or "",
            self.cidrs,
        )


@dataclass(frozen=True)
class Rule:
    """One allowed flow on one end: a role's ingress or egress, to or from a peer."""

    role: str
    direction: str
    protocol: str
    ports: tuple[int, int] | None
    peer: Peer
    purpose: str
    reference: str
    flow: str
    source_ports: tuple[int, int] | None = None
    obsolete: bool = False
    site: bool = False  # from the profile's site_flows, not from the page
    # The hop that decided the peer (generator/paths.py): "from the NAT gateways
    # (...) because ..."; empty when the peer is the other end itself.
    via: str = ""

    @property
    def is_return(self) -> bool:
        return self.source_ports is not None

    def traffic_key(self) -> tuple:
        """What the rule allows, without why: two rules with equal keys are one rule."""
        return (
            self.role,
            self.direction,
            self.protocol,
            self.ports,
            self.peer,
            self.source_ports,
        )

    def sort_key(self) -> tuple:
        return (
            ROLES.index(self.role),
            DIRECTIONS.index(self.direction),
            self.source_ports is not None,
            self.ports or (0, 0),
            PROTOCOLS.index(self.protocol),
            self.peer.sort_key(),
            self.source_ports or (0, 0),
            self.site,
        )

    @property
    def name(self) -> str:
        """A stable name from what the rule means, never from its position."""
        ports = "all" if self.ports is None else _port_text(self.ports, "-")
        parts = [self.role, self.direction, self.protocol, ports, self.peer.label]
        if self.site:
            parts.insert(4, "site")
        if self.source_ports:
            parts.insert(4, "from" + _port_text(self.source_ports, "-"))
        return "_".join(parts).replace("-", "_")

    def to_dict(self) -> dict:
        data = {
            "name": self.name,
            "role": self.role,
            "direction": self.direction,
            "protocol": self.protocol,
            "ports": list(self.ports) if self.ports else None,
            "peer": self.peer.to_dict(),
            "purpose": self.purpose,
            "reference": self.reference,
            "flow": self.flow,
        }
        if self.source_ports:
            data["source_ports"] = list(self.source_ports)
        if self.obsolete:
            data["obsolete"] = True
        if self.site:
            data["site"] = True
        if self.via:
            data["via"] = self.via
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Rule:
        return cls(
            role=data["role"],
            direction=data["direction"],
            protocol=data["protocol"],
            ports=tuple(data["ports"]) if data.get("ports") else None,
            peer=Peer.from_dict(data["peer"]),
            purpose=data.get("purpose", ""),
            reference=data.get("reference", ""),
            flow=data.get("flow", ""),
            source_ports=(
                tuple(data["source_ports"]) if data.get("source_ports") else None
            ),
            obsolete=bool(data.get("obsolete", False)),
            site=bool(data.get("site", False)),
            via=data.get("via", ""),
        )


@dataclass(frozen=True)
class Matrix:
    """Every rule of one install on one release, with what the planner has to say."""

    profile: str
    server_version: str
    release_line: str
    cloud: str
    stateful: bool
    rules: tuple[Rule, ...]
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def for_role(self, role: str, direction: str | None = None) -> list[Rule]:
        return [
            r
            for r in self.rules
            if r.role == role and (direction is None or r.direction == direction)
        ]

    def roles(self) -> list[str]:
        present = {r.role for r in self.rules}
        return [role for role in ROLES if role in present]

    def to_dict(self) -> dict:
        return {
            "profile": self.profile,
            "server_version": self.server_version,
            "release_line": self.release_line,
            "cloud": self.cloud,
            "stateful": self.stateful,
            "warnings": list(self.warnings),
            "notes": list(self.notes),
            "rules": [r.to_dict() for r in self.rules],
        }

    @classmethod
    def from_dict(cls, data: dict) -> Matrix:
        return cls(
            profile=data["profile"],
            server_version=data["server_version"],
            release_line=data.get("release_line", ""),
            cloud=data.get("cloud", ""),
            stateful=data.get("stateful", True),
            rules=tuple(Rule.from_dict(r) for r in data["rules"]),
            warnings=tuple(data.get("warnings", ())),
            notes=tuple(data.get("notes", ())),
        )


def _port_text(ports: tuple[int, int], sep: str) -> str:
    lo, hi = ports
    return str(lo) if lo == hi else f"{lo}{sep}{hi}"


def port_text(ports: tuple[int, int] | None) -> str:
    return "all" if ports is None else _port_text(ports, "-")


def describe(rule: Rule) -> str:
    """A rule in one line, for the messages of every layer that refuses one."""
    peer = rule.peer.role or f"{rule.peer.name} {','.join(rule.peer.cidrs)}"
    return (
        f"{rule.role} {rule.direction} {rule.protocol}/{port_text(rule.ports)}"
        f" {'from' if rule.direction == 'ingress' else 'to'} {peer} ({rule.purpose})"
    )

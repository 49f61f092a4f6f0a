"""gcp-firewall: VPC firewall rules as Compute API bodies and a gcloud script.

The rule list is built once here (`build`) and laid out three ways: API JSON bodies and
a gcloud script (this module), and google_compute_firewall resources (terraform_gcp).
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex

from ..matrix import Matrix, Rule
from ..quotas import chunk_addresses, quotas_for
from . import EmitError, Target, describe, expressible, header
from ..records import dataclass

ALLOW_PRIORITY = 1000
# Below every allow rule, above the implied allow-all egress (65535).
DENY_PRIORITY = 65534
# Below every allow rule, above the rules GCP pre-populates in a network (the default
# network's default-allow-internal and default-allow-ssh, at 65534), which would
# otherwise let every instance reach every other one and SSH in from anywhere.
INGRESS_DENY_PRIORITY = 65000
NAME_RE = re.compile(r"^[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?$")
ACCOUNT_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
SHORT = {
    "load_balancer": "lb",
    "kubernetes_nodes": "k8s",
    "nomad_clients": "nomad",
    "nomad_servers": "nomadsrv",
    "external_vms": "vm",
}
ANYWHERE = ("0.0.0.0/0", "::/0")
# checkov checks on google_compute_firewall that flag one port open to the internet.
OPEN_PORT_CHECKS = (
    ("CKV_GCP_2", 22, "SSH"),
    ("CKV_GCP_3", 3389, "RDP"),
    ("CKV_GCP_106", 80, "HTTP"),
)


@dataclass(frozen=True)
class Address:
    """How a role is addressed: a network tag or a service account."""

    kind: str  # "tag" or "account"
    value: str


@dataclass(frozen=True)
class GcpRule:
    """One GCP firewall rule, as the API takes it."""

    name: str
    description: str
    direction: str  # INGRESS or EGRESS
    priority: int
    action: str  # allow or deny
    protocol: str  # tcp, udp or all
    ports: tuple[str, ...]
    # sourceRanges on ingress, destinationRanges on egress: the one list that a
    # split at the per-rule limit (256) has to cut.
    ranges: tuple[str, ...] = ()
    source_tags: tuple[str, ...] = ()
    source_accounts: tuple[str, ...] = ()
    target: Address | None = None
    logging: bool = False
    skips: tuple[tuple[str, str], ...] = ()

    @property
    def source_ranges(self) -> tuple[str, ...]:
        return self.ranges if self.direction == "INGRESS" else ()

    @property
    def destination_ranges(self) -> tuple[str, ...]:
        return self.ranges if self.direction == "EGRESS" else ()

    @property
    def target_tags(self) -> tuple[str, ...]:
        return (self.target.value,) if self.target.kind == "tag" else ()

    @property
    def target_accounts(self) -> tuple[str, ...]:
        return (self.target.value,) if self.target.kind == "account" else ()


@dataclass(frozen=True)
class GcpPlan:
    """Every rule of one network, and the addresses they name."""

    profile: str
    network: str
    project: str | None
    addresses: dict[str, Address]
    rules: tuple[GcpRule, ...]


def rule_name(*parts: str, suffix: str = "") -> str:
    """A valid, stable name from what the rule means; hash-shortened when too long.

    The suffix (address family, chunk number) is kept whole after any shortening.
    """
    text = re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")
    text = re.sub(r"-{2,}", "-", text)
    room = 63 - (len(suffix) + 1 if suffix else 0)
    if len(text) > room:
        digest = hashlib.sha256(text.encode()).hexdigest()[:8]
        text = f"{text[:room - 9].rstrip('-')}-{digest}"
    return f"{text}-{suffix}" if suffix else text


def addresses(profile, roles: list[str]) -> dict[str, Address]:
    gcp = profile.gcp or {}
    tags, accounts = gcp.get("tags", {}), gcp.get("service_accounts", {})
    out = {}
    for role in roles:
        if role in accounts:
            value = accounts[role]
            if not ACCOUNT_RE.match(value):
                raise EmitError(
                    f"gcp.service_accounts.{role}: {value!r} is not a service account"
                    " e-mail address (name@project.iam.gserviceaccount.com)"
                )
            out[role] = Address("account", value)
            continue
        value = tags.get(role, f"{profile.name}-{role.replace('_', '-')}")
        if not NAME_RE.match(value):
            raise EmitError(
                f"gcp.tags.{role}: {value!r} is not a valid GCP network tag: 1-63"
                " lowercase letters, digits and dashes, starting with a letter"
            )
        out[role] = Address("tag", value)
    owners: dict[Address, str] = {}
    for role, address in out.items():
        if address in owners:
            section = "tags" if address.kind == "tag" else "service_accounts"
            raise EmitError(
                f"gcp.{section}.{role}: {address.value!r} also addresses"
                f" {owners[address]}; each role needs its own, or rules meant for one"
                " role would apply to both"
            )
        owners[address] = role
    return out


def _families(cidrs) -> list[tuple[str, tuple[str, ...]]]:
    """Ranges split by IP version (a GCP rule cannot mix them), IPv4 first."""
    # CIDRs arrive validated and normalized: only IPv6 ones hold a colon.
    v4 = tuple(c for c in cidrs if ":" not in c)
    v6 = tuple(c for c in cidrs if ":" in c)
    return [(suffix, part) for suffix, part in (("", v4), ("v6", v6)) if part]


def _range_parts(cidrs, size: int) -> list[tuple[str, tuple[str, ...]]]:
    """(name suffix, ranges) of each GCP rule that one address list becomes.

    Within the per-rule bound: one rule per address family (IPv6 suffixed v6).
    Above it: the quota module's stable chunks, suffixed with their numbers.
    """
    parts = _families(cidrs)
    if all(len(part) <= size for _, part in parts):
        return parts
    return [
        (str(number), chunk)
        for number, chunk in chunk_addresses(cidrs, size, split_families=True)
    ]


def _ports(rule: Rule) -> tuple[str, ...]:
    if rule.ports is None or rule.protocol == "all":
        return ()
    lo, hi = rule.ports
    return (str(lo) if lo == hi else f"{lo}-{hi}",)


def _skips(rule: Rule, ranges: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """Inline checkov skips for ports the page requires open to the internet."""
    if rule.direction != "ingress" or not any(r in ANYWHERE for r in ranges):
        return ()
    if rule.site:
        return ()  # the page does not require it: let checkov say so
    out = []
    lo, hi = rule.ports or (0, 65535)
    for check, port, what in OPEN_PORT_CHECKS:
        if rule.protocol in ("tcp", "all") and lo <= port <= hi:
            out.append(
                (
                    check,
                    f"{what} ({port}) from {rule.peer.label} {','.join(ranges)} as the"
                    f" profile asks; the page requires it: {rule.purpose}",
                )
            )
    return tuple(out)


def _description(rule: Rule) -> str:
    path = f". Path: {rule.via}" if rule.via else ""
    return f"{rule.purpose}. Source: {rule.reference}{path}"


def build(matrix: Matrix, profile, target: Target) -> GcpPlan:
    """The firewall rules of a GCP profile, in a stable order."""
    rules = expressible(target, matrix)
    gcp = profile.gcp or {}
    logging = bool(gcp.get("logging", False))
    roles = [r for r in matrix.roles() if r in target.roles]
    addr = addresses(profile, roles)
    size = quotas_for(profile).gcp_ranges_per_rule
    out: list[GcpRule] = []
    for rule in rules:
        out += _allow_rules(rule, profile, addr, size, logging)
    families = [""]
    if any(":" in c for r in out for c in r.ranges) or any(
        ":" in c for role in roles for c in profile.subnets[role]
    ):
        families.append("v6")
    out += _deny_rules(profile, roles, addr, families, logging)
    _check_names(out)
    return GcpPlan(
        profile=profile.name,
        network=gcp.get("network", "default"),
        project=gcp.get("project"),
        addresses=addr,
        rules=tuple(out),
    )


def _allow_rules(rule: Rule, profile, addr, size: int, logging: bool) -> list[GcpRule]:
    """The GCP allow rules of one matrix rule: by tag or account, else by ranges."""
    me = addr[rule.role]
    ingress = rule.direction == "ingress"
    peer = rule.peer.role
    base = [
        profile.name,
        SHORT[rule.role],
        "in" if ingress else "out",
        rule.protocol,
        *(() if rule.ports is None else _ports(rule)),
        *(("site",) if rule.site else ()),
        SHORT[peer] if peer else rule.peer.label.replace("_", "-"),
    ]
    common = dict(
        description=_description(rule),
        direction="INGRESS" if ingress else "EGRESS",
        priority=ALLOW_PRIORITY,
        action="allow",
        protocol=rule.protocol,
        ports=_ports(rule),
        target=me,
        logging=logging,
    )
    if peer and ingress and addr[peer].kind == me.kind:
        field = "source_tags" if me.kind == "tag" else "source_accounts"
        return [
            GcpRule(name=rule_name(*base), **common, **{field: (addr[peer].value,)})
        ]
    # Egress (GCP cannot aim it at tags) and ingress from a role addressed the
    # other way (tags and service accounts do not mix): the role's subnets.
    cidrs = profile.subnets[peer] if peer else rule.peer.cidrs
    if not cidrs:  # GCP reads a rule without ranges as "anywhere"
        raise EmitError(f"no addresses for rule {describe(rule)}")
    return [
        GcpRule(
            name=rule_name(*base, suffix=suffix),
            ranges=part,
            skips=_skips(rule, part),
            **common,
        )
        for suffix, part in _range_parts(cidrs, size)
    ]


def _deny_rules(profile, roles, addr, families, logging: bool) -> list[GcpRule]:
    """The deny-all rules under the allow rules, per role and address family."""
    gcp = profile.gcp or {}
    denies = (
        ("restrict_egress", "out-deny-all", "EGRESS", DENY_PRIORITY, "egress", ""),
        (
            "deny_ingress",
            "in-deny-all",
            "INGRESS",
            INGRESS_DENY_PRIORITY,
            "ingress",
            ", and the network's pre-populated rules (default-allow-internal,"
            " default-allow-ssh, at 65534) yield to it",
        ),
    )
    out = []
    for key, label, direction, priority, what, extra in denies:
        if not gcp.get(key, True):
            continue
        for role in roles:
            for suffix in families:
                out.append(
                    GcpRule(
                        name=rule_name(profile.name, SHORT[role], label, suffix),
                        description=f"Deny all other {what} (gcp.{key}); the allow"
                        f" rules at priority {ALLOW_PRIORITY} take precedence{extra}",
                        direction=direction,
                        priority=priority,
                        action="deny",
                        protocol="all",
                        ports=(),
                        ranges=(ANYWHERE[1] if suffix else ANYWHERE[0],),
                        target=addr[role],
                        logging=logging,
                    )
                )
    return out


def _check_names(rules: list[GcpRule]) -> None:
    seen: set[str] = set()
    for r in rules:
        if r.name in seen:
            raise EmitError(
                f"two GCP firewall rules would both be named {r.name}; give the peer"
                " lists distinct names"
            )
        seen.add(r.name)


# --- layout: Compute API bodies ---------------------------------------------


def network_url(plan: GcpPlan) -> str:
    if "/" in plan.network:
        return plan.network
    if plan.project:
        return f"projects/{plan.project}/global/networks/{plan.network}"
    return f"global/networks/{plan.network}"


def api_body(rule: GcpRule, plan: GcpPlan) -> dict:
    entry = {"IPProtocol": rule.protocol}
    if rule.ports:
        entry["ports"] = list(rule.ports)
    body = {
        "name": rule.name,
        "description": rule.description,
        "network": network_url(plan),
        "direction": rule.direction,
        "priority": rule.priority,
        "allowed" if rule.action == "allow" else "denied": [entry],
    }
    for key, value in (
        ("sourceRanges", rule.source_ranges),
        ("destinationRanges", rule.destination_ranges),
        ("sourceTags", rule.source_tags),
        ("sourceServiceAccounts", rule.source_accounts),
        ("targetTags", rule.target_tags),
        ("targetServiceAccounts", rule.target_accounts),
    ):
        if value:
            body[key] = list(value)
    if rule.logging:
        body["logConfig"] = {"enable": True, "metadata": "INCLUDE_ALL_METADATA"}
    return body


# --- layout: gcloud ----------------------------------------------------------


def gcloud_args(rule: GcpRule, plan: GcpPlan) -> list[str]:
    """The arguments after `gcloud compute firewall-rules create`, each shell-quoted."""
    spec = rule.protocol
    if rule.ports:
        spec += ":" + ",".join(rule.ports)
    pairs = [("project", plan.project)] if plan.project else []
    pairs += [
        ("network", plan.network),
        ("description", rule.description),
        ("direction", rule.direction),
        ("priority", str(rule.priority)),
        ("action", rule.action.upper()),
        ("rules", spec),
    ]
    for key, value in (
        ("source-ranges", rule.source_ranges),
        ("destination-ranges", rule.destination_ranges),
        ("source-tags", rule.source_tags),
        ("source-service-accounts", rule.source_accounts),
        ("target-tags", rule.target_tags),
        ("target-service-accounts", rule.target_accounts),
    ):
        if value:
            pairs.append((key, ",".join(value)))
    args = [shlex.quote(rule.name)]
    args += [f"--{key}={shlex.quote(value)}" for key, value in pairs]
    if rule.logging:
        args += ["--enable-logging", "--logging-metadata=include-all"]
    return args


def indented_json(value, indent: str = "") -> str:
    """json.dumps(value, indent=2, ensure_ascii=False), character for character.

    With an indent, json takes its pure-Python encoder, item by item; here a list
    of strings (a body's 10,000 source ranges) is one pass of json's C encoder."""
    if type(value) is str:
        return _string(value)
    if type(value) is int:
        return int.__repr__(value)
    inner = indent + "  "
    if isinstance(value, dict) and all(type(k) is str for k in value):
        if not value:
            return "{}"
        items = (
            f"{inner}{_string(k)}: {indented_json(v, inner)}" for k, v in value.items()
        )
        return "{\n" + ",\n".join(items) + f"\n{indent}}}"
    if isinstance(value, (list, tuple)):
        if not value:
            return "[]"
        glue = ",\n" + inner
        try:  # a list of strings (source ranges): one C-level pass
            body = glue.join(map(_string, value))
        except (TypeError, AttributeError):
            body = glue.join(indented_json(v, inner) for v in value)
        return f"[\n{inner}{body}\n{indent}]"
    # A scalar, or a mapping with keys other than strings: json's own, indented.
    return json.dumps(value, indent=2, ensure_ascii=False).replace("\n", "\n" + indent)


_string = json.encoder.encode_basestring  # json's own, in C where it can be


def emit(matrix: Matrix, profile, target: Target) -> dict[str, str]:
    from ..templating import render

    plan = build(matrix, profile, target)
    bodies = [api_body(r, plan) for r in plan.rules]
    script = render(
        "gcp-firewall/create-firewall-rules.sh.j2",
        header=header(matrix, target.name),
        commands=[(r.name, gcloud_args(r, plan)) for r in plan.rules],
    )
    return {
        "firewalls.json": indented_json(bodies) + "\n",
        "create-firewall-rules.sh": script,
    }

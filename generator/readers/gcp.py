"""GCP VPC firewall rules (`gcloud compute firewall-rules list --format=json`).

GCP's semantics, per instance: of the enabled rules of its network that target it
(its network tag, its service account, or every instance when a rule names no
target), the one with the lowest priority number decides; at equal priority a deny
beats an allow. Below them all sit the implied rules: deny all ingress and allow all
egress (priority 65535), which no export lists. The default network's pre-populated
rules (default-allow-internal, -ssh, -rdp, -icmp at 65534) are ordinary rules of the
export. A source tag or service account stands for the instances of the role that
carries it, addressed by the role's subnets. The Compute API bodies that the
gcp-firewall target writes (firewalls.json) have the same shape and read the same.
"""

from __future__ import annotations

import json

from . import Finding, Live, ReadError, load_json
from .engine import (
    ICMP,
    TCP,
    UDP,
    Assembly,
    Match,
    address_intervals,
    evaluate,
    full_match,
    profile_ipv6,
    subnet_space,
)

IMPLIED = "implied"
DEFAULT_PRIORITY = 1000
PROTOCOLS = {
    "tcp": TCP,
    "6": TCP,
    "udp": UDP,
    "17": UDP,
    "icmp": ICMP,
    "1": ICMP,
    "58": ICMP,
    "ipv6-icmp": ICMP,
}
# Keys that only describe a rule.
METADATA = frozenset(
    "kind id creationTimestamp name description network selfLink logConfig".split()
)
READ = frozenset(
    "disabled priority direction allowed denied sourceRanges destinationRanges"
    " sourceTags targetTags sourceServiceAccounts targetServiceAccounts".split()
)


def _strings(rule: dict, key: str, where: str, problems: list) -> list[str]:
    value = rule.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.append(f"{where}.{key}: expected a list of strings")
        return []
    return value


def _check(rules, path: str) -> None:
    problems: list[str] = []
    if not isinstance(rules, list):
        raise ReadError(
            [
                f"{path}: expected a JSON list of firewall rules (gcloud ... --format=json)"
            ]
        )
    for i, rule in enumerate(rules):
        where = f"{path}: [{i}]"
        if not isinstance(rule, dict):
            problems.append(f"{where}: expected a firewall rule object")
            continue
        where += f" {rule.get('name', '?')}"
        if not isinstance(rule.get("name"), str):
            problems.append(f"{where}: no name")
        if rule.get("direction", "INGRESS") not in ("INGRESS", "EGRESS"):
            problems.append(f"{where}.direction: {rule.get('direction')!r}")
        priority = rule.get("priority", DEFAULT_PRIORITY)
        if (
            not isinstance(priority, int)
            or isinstance(priority, bool)
            or not 0 <= priority <= 65535
        ):
            problems.append(f"{where}.priority: {str(priority)[:40]} is not 0..65535")
        disabled = rule.get("disabled", False)
        if not isinstance(disabled, bool):
            problems.append(
                f"{where}.disabled: {json.dumps(disabled)[:40]} is not true or false"
                " (a string is not a boolean: GCP's export says false, unquoted)"
            )
        actions = [k for k in ("allowed", "denied") if k in rule]
        if len(actions) != 1:
            problems.append(f"{where}: needs exactly one of allowed/denied")
            continue
        entries = rule[actions[0]]
        if not isinstance(entries, list) or not all(
            isinstance(e, dict) and isinstance(e.get("IPProtocol"), str)
            for e in entries
        ):
            problems.append(f"{where}.{actions[0]}: expected [{{IPProtocol, ports}}]")
            continue
        for j, entry in enumerate(entries):
            for k, port in enumerate(entry.get("ports", [])):
                if _port_range(port) is None:
                    problems.append(
                        f"{where}.{actions[0]}[{j}].ports[{k}]: {port!r} is not a port"
                    )
        for key in (
            "sourceRanges",
            "destinationRanges",
            "sourceTags",
            "targetTags",
            "sourceServiceAccounts",
            "targetServiceAccounts",
        ):
            for value in _strings(rule, key, where, problems):
                if key.endswith("Ranges"):
                    try:
                        address_intervals(value)
                    except ValueError:
                        problems.append(f"{where}.{key}: {value!r} is not a CIDR")
    if problems:
        raise ReadError(problems)


def _port_range(text):
    if not isinstance(text, str):
        return None
    lo, _, hi = text.partition("-")
    try:
        a, b = int(lo), int(hi or lo)
    except ValueError:
        return None
    return (a, b) if 0 <= a <= b <= 65535 else None


def _network(rule: dict, default: str) -> str:
    """The network's name (a rule that names none is taken as the profile's)."""
    if not rule.get("network"):
        return default
    return str(rule["network"]).rstrip("/").rsplit("/", 1)[-1]


def _scope(rules, network: str, profile, notes: list):
    """The enabled rules of the profile's network, and the address families."""
    others = sorted({_network(r, network) for r in rules} - {network})
    if others:
        notes.append(
            f"rules of other networks left out: {', '.join(others)} (the profile's is {network})"
        )
    mine = [(i, r) for i, r in enumerate(rules) if _network(r, network) == network]
    disabled = [r["name"] for _, r in mine if r.get("disabled")]
    if disabled:
        notes.append(f"disabled rules, which GCP does not apply: {', '.join(disabled)}")
    enabled = [(i, r) for i, r in mine if not r.get("disabled")]
    # The implied IPv6 rules exist only on a network with IPv6 subnets.
    ipv6 = profile_ipv6(profile) or any(
        ":" in c
        for _, r in mine
        for k in ("sourceRanges", "destinationRanges")
        for c in r.get(k, [])
    )
    if not ipv6:
        notes.append("no IPv6 in the profile's subnets nor in the rules: IPv4 only")
    return enabled, (4, 6) if ipv6 else (4,)


class Export:
    """The network's rules as the profile addresses its roles: reads one rule at
    a time, for one role; what it cannot evaluate goes to out.unknown."""

    def __init__(self, path: str, profile, addr, out: Assembly):
        self.path, self.profile, self.addr, self.out = path, profile, addr, out
        self.by_tag = {a.value: r for r, a in addr.items() if a.kind == "tag"}
        self.by_account = {a.value: r for r, a in addr.items() if a.kind == "account"}

    def where(self, i, rule) -> str:
        return f"{self.path}: [{i}] {rule['name']}"

    def targets(self, rule, role) -> bool:
        tags = rule.get("targetTags", [])
        accounts = rule.get("targetServiceAccounts", [])
        if not (tags or accounts):
            return True
        a = self.addr[role]
        return a.value in (tags if a.kind == "tag" else accounts)

    def matches(self, i, rule, direction: str, role) -> list[Match]:
        """The matches of one rule's entries (allowed or denied) in the flow space."""
        for key in sorted(set(rule) - METADATA - READ):
            self.out.unknown_once(
                Finding(
                    None,
                    self.where(i, rule),
                    f"{key}: {json.dumps(rule[key])[:80]}",
                    f"{key} is not evaluated; the rule is read without it",
                )
            )
        space = self._peers(i, rule, direction, role)
        action = "allowed" if "allowed" in rule else "denied"
        out = []
        for entry in rule[action]:
            match = _entry_match(entry, space)
            if match is None:
                self.out.unknown_once(
                    Finding(
                        None,
                        self.where(i, rule),
                        f"{action} {json.dumps(entry)}",
                        f"protocol {entry['IPProtocol']}: the matrix speaks of tcp,"
                        " udp and all only; not evaluated",
                    )
                )
                continue
            out.append(match)
        return out

    def _role_space(self, role, i, rule, what):
        space = subnet_space(self.profile, role)
        if not space:
            raise ReadError(
                [
                    f"{self.where(i, rule)}: {what} stands for the {role} instances, and"
                    f" network.subnets.{role} is empty: list the role's subnets"
                ]
            )
        return space

    def _peers(self, i, rule, direction, role):
        """The peer addresses (intervals) a rule matches, as far as they are known."""
        # A rule that names peers some other way (FQDNs, address groups, ...) does
        # not fall back to 0.0.0.0/0: those peers are reported, not guessed.
        other = any(k.startswith(("source", "destination")) for k in set(rule) - READ)
        if direction == "EGRESS":
            ranges = rule.get("destinationRanges") or ([] if other else ["0.0.0.0/0"])
            return [iv for c in ranges for iv in address_intervals(c)]
        ranges = rule.get("sourceRanges", [])
        tags = rule.get("sourceTags", [])
        accounts = rule.get("sourceServiceAccounts", [])
        if not (ranges or tags or accounts or other):
            ranges = ["0.0.0.0/0"]  # what GCP applies when a rule names no source
        out = [iv for c in ranges for iv in address_intervals(c)]
        for kind, values, owners in (
            ("source tag", tags, self.by_tag),
            ("source service account", accounts, self.by_account),
        ):
            for value in values:
                if value in owners:
                    out += self._role_space(owners[value], i, rule, f"{kind} {value}")
                else:
                    self.out.unknown_once(
                        Finding(
                            role,
                            self.where(i, rule),
                            f"{kind} {value}",
                            f"{kind} {value} is on no role of the profile: its instances'"
                            " addresses are unknown; that source is not evaluated",
                        )
                    )
        return out


def _direction(out, export: Export, enabled, role, direction, families) -> None:
    """One role's rules in one direction, by priority, above the implied rules."""
    gcp_direction = direction.upper()
    applicable = [
        (i, r)
        for i, r in enabled
        if r.get("direction", "INGRESS") == gcp_direction and export.targets(r, role)
    ]
    # Lowest priority number first; a deny before an allow at equal priority.
    applicable.sort(
        key=lambda item: (
            item[1].get("priority", DEFAULT_PRIORITY),
            "denied" not in item[1],
        )
    )
    matches, owner = [], []
    for order, (i, rule) in enumerate(applicable):
        for match in export.matches(i, rule, gcp_direction, role):
            matches.append(match)
            owner.append(order)

    def decide(tags):
        if tags:
            order = min(owner[t] for t in tags)
            return order if "allowed" in applicable[order][1] else None
        return IMPLIED if direction == "egress" else None

    def describe(label):
        if label == IMPLIED:
            return (
                "implied allow-all egress rule (priority 65535)",
                "GCP network (not in the export)",
            )
        i, rule = applicable[label]
        priority = rule.get("priority", DEFAULT_PRIORITY)
        return f"{rule['name']} (priority {priority})", export.where(i, rule)

    boxes = evaluate(matches, decide, families)
    out.allowed(role, direction, boxes, describe, families)


def read(sources: dict, context) -> Live:
    from ..emitters import TARGETS
    from ..emitters.gcp_firewall import addresses
    from ..problems import EmitError

    path, text = sources["gcp"]
    rules = load_json(text, path)
    _check(rules, path)
    profile = context.profile
    network = (profile.gcp or {}).get("network", "default")
    roles = [r for r in profile.roles() if r in TARGETS["gcp-firewall"].roles]
    try:
        addr = addresses(profile, roles)
    except EmitError as exc:
        raise ReadError([str(exc)]) from None
    out = Assembly()
    enabled, families = _scope(rules, network, profile, out.notes)
    export = Export(path, profile, addr, out)
    for role in roles:
        for direction in ("ingress", "egress"):
            _direction(out, export, enabled, role, direction, families)
    for i, rule in enabled:
        _unmapped_targets(out, export, i, rule, roles)
    return out.live(profile, "gcp", roles, families)


def _unmapped_targets(out: Assembly, export: Export, i, rule, roles) -> None:
    """A rule on a target tag or service account that no role is addressed by may
    still apply to a role's instances: an instance carries any number of tags, and
    an instance of a role addressed by tags runs as some service account. The
    export cannot say which instances carry it, so the rule is not evaluated for
    those roles (it is for a role addressed by a service account, whose instances
    run as that account alone)."""
    tags = [t for t in rule.get("targetTags", []) if t not in export.by_tag]
    accounts = [
        a for a in rule.get("targetServiceAccounts", []) if a not in export.by_account
    ]
    if not (tags or accounts):
        return
    what = ", ".join(
        [f"tag {t}" for t in tags] + [f"service account {a}" for a in accounts]
    )
    for role in roles:
        if export.targets(rule, role):
            continue  # it applies to the role: evaluated as its rule
        if tags or export.addr[role].kind == "tag":
            out.unknown_once(
                Finding(
                    role,
                    export.where(i, rule),
                    f"target {what}",
                    f"targets {what}, which no role of the profile is addressed by:"
                    " whether this role's instances carry it is not in the export;"
                    " not evaluated",
                )
            )


def _entry_match(entry: dict, space) -> Match | None:
    name = entry["IPProtocol"].lower()
    m = full_match((4, 6))
    m.restrict("peer", space)
    if name == "all":
        return m
    if name not in PROTOCOLS:
        return None
    protocol = PROTOCOLS[name]
    m.restrict("proto", [(protocol, protocol)])
    if protocol in (TCP, UDP) and entry.get("ports"):
        m.restrict("dport", [_port_range(p) for p in entry["ports"]])
    return m

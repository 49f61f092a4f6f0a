"""AWS security groups (`aws ec2 describe-security-groups --output json`).

AWS's semantics: security groups only allow, and an instance gets the union of the
rules of every group it carries, so the order of groups and rules never matters and
a rule repeated in two groups allows nothing more. A group reference
(UserIdGroupPairs) stands for the instances that carry that group: the role it is
mapped to, addressed by the role's subnets. A group AWS created keeps its default
allow-all egress rule until someone removes it; it reads as any other rule, and is
named as such. Groups are mapped to roles by --group ROLE=ID|NAME, else by a tag
`rulegen:role` whose value is the role, else by the names rulegen gives them
(`<install>-<role>`, `-2`, ... as GroupName or Name tag).
"""

from __future__ import annotations

import re

from ..matrix import ROLES
from . import Finding, Live, ReadError, load_json
from ..records import dataclass
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

PROTOCOLS = {"tcp": TCP, "6": TCP, "udp": UDP, "17": UDP}
ICMP_NAMES = ("icmp", "1", "icmpv6", "58")
DEFAULT_EGRESS = ("0.0.0.0/0", "::/0")
ROLE_TAG = "rulegen:role"


def _name_tag(group: dict) -> str | None:
    for tag in group.get("Tags") or []:
        if isinstance(tag, dict) and tag.get("Key") == "Name":
            return tag.get("Value")
    return None


def _check(data, path: str) -> list[dict]:
    if not isinstance(data, dict) or not isinstance(data.get("SecurityGroups"), list):
        raise ReadError(
            [
                f'{path}: expected {{"SecurityGroups": [...]}}'
                " (aws ec2 describe-security-groups --output json)"
            ]
        )
    problems = []
    groups = data["SecurityGroups"]
    for i, group in enumerate(groups):
        where = f"{path}: SecurityGroups[{i}]"
        if not isinstance(group, dict) or not isinstance(group.get("GroupId"), str):
            problems.append(f"{where}: a group needs a GroupId")
            continue
        for key in ("IpPermissions", "IpPermissionsEgress"):
            perms = group.get(key, [])
            if not isinstance(perms, list):
                problems.append(f"{where}.{key}: expected a list")
                continue
            for j, perm in enumerate(perms):
                at = f"{where}.{key}[{j}]"
                if not isinstance(perm, dict) or not isinstance(
                    perm.get("IpProtocol"), str
                ):
                    problems.append(f"{at}: needs an IpProtocol")
                    continue
                proto = perm["IpProtocol"].lower()
                if proto in PROTOCOLS:
                    lo, hi = perm.get("FromPort"), perm.get("ToPort")
                    if not (
                        isinstance(lo, int)
                        and isinstance(hi, int)
                        and not isinstance(lo, bool)
                        and not isinstance(hi, bool)
                        and 0 <= lo <= hi <= 65535
                    ):
                        problems.append(f"{at}: FromPort/ToPort {lo!r}-{hi!r}")
                for field, key2 in (("IpRanges", "CidrIp"), ("Ipv6Ranges", "CidrIpv6")):
                    for k, item in enumerate(perm.get(field) or []):
                        value = item.get(key2) if isinstance(item, dict) else None
                        try:
                            address_intervals(str(value))
                        except ValueError:
                            problems.append(f"{at}.{field}[{k}].{key2}: {value!r}")
    if problems:
        raise ReadError(problems)
    return groups


def _mapping(groups, context) -> dict[str, list[str]]:
    """GroupId -> roles, from --group, else from rulegen's names."""
    profile = context.profile
    out: dict[str, list[str]] = {}
    problems = []
    for role, wanted in context.groups:
        hits = [
            g["GroupId"]
            for g in groups
            if wanted in (g["GroupId"], g.get("GroupName"), _name_tag(g))
        ]
        if not hits:
            problems.append(f"--group {role}={wanted}: no such group in the export")
        for gid in hits:
            out.setdefault(gid, []).append(role)
    if problems:
        raise ReadError(problems)
    if context.groups:
        return out
    for g in groups:  # a tag that says it: rulegen:role = nomad_clients
        for tag in g.get("Tags") or []:
            if isinstance(tag, dict) and tag.get("Key") == ROLE_TAG:
                if tag.get("Value") in ROLES:
                    out.setdefault(g["GroupId"], []).append(tag["Value"])
    if out:
        return out
    for role in ROLES:
        base = re.escape(f"{profile.name}-{role.replace('_', '-')}")
        pattern = re.compile(f"^{base}(-[0-9]+)?$")
        for g in groups:
            if any(pattern.match(n or "") for n in (g.get("GroupName"), _name_tag(g))):
                out.setdefault(g["GroupId"], []).append(role)
    return out


def _roles(groups, roles_of, titles, profile, path, notes: list) -> list[str]:
    """The roles the export speaks for; notes on groups and roles left out."""
    unmapped = [titles[g["GroupId"]] for g in groups if g["GroupId"] not in roles_of]
    if unmapped:
        notes.append(
            "groups mapped to no role, not audited (--group ROLE=ID maps one): "
            + ", ".join(unmapped)
        )
    roles = [r for r in ROLES if any(r in rs for rs in roles_of.values())]
    if not roles:
        names = ", ".join(titles[g["GroupId"]] for g in groups) or "none"
        raise ReadError(
            [
                f"{path}: no security group is mapped to a role (groups: {names});"
                f" name them with --group ROLE=ID|NAME, or as rulegen does"
                f" ({profile.name}-<role>)"
            ]
        )
    missing = [r for r in ROLES if r not in roles and profile.subnets.get(r)]
    if missing:
        notes.append(
            "no security group found for "
            + ", ".join(missing)
            + ": not audited (--group ROLE=ID|NAME names one)"
        )
    return roles


@dataclass
class Permission:
    """One IpPermission of a group, as read for one role."""

    text: str  # "<group> IpPermissions[j]: tcp/443 from ..."
    at: str
    peers: list[str]
    match: Match | None  # None: a protocol the matrix has no words for


class Export:
    """The groups of an export, mapped to roles: reads one permission at a time."""

    def __init__(self, path: str, profile, roles_of, titles):
        self.path, self.profile = path, profile
        self.roles_of, self.titles = roles_of, titles

    def role_space(self, role: str, at: str):
        space = subnet_space(self.profile, role)
        if not space:
            raise ReadError(
                [
                    f"{at}: the group of {role} stands for its instances, and"
                    f" network.subnets.{role} is empty: list the role's subnets"
                ]
            )
        return space

    def permission(self, role, direction, key, i, g, j, perm, unknown) -> Permission:
        at = f"{self.path}: SecurityGroups[{i}].{key}[{j}]"
        title = self.titles[g["GroupId"]]
        space, peers = self._peers(role, at, title, perm, unknown)
        proto = perm["IpProtocol"].lower()
        what = _perm_text(perm, peers, direction)
        if (
            direction == "egress"
            and proto == "-1"
            and any(c in DEFAULT_EGRESS for c in peers)
        ):
            what += " (AWS's default allow-all egress rule, left in place)"
        text = f"{title} {key}[{j}]: {what}"
        match = full_match((4, 6))
        match.restrict("peer", space)
        if proto in PROTOCOLS:
            p = PROTOCOLS[proto]
            match.restrict("proto", [(p, p)])
            match.restrict("dport", [(perm["FromPort"], perm["ToPort"])])
        elif proto in ICMP_NAMES:
            match.restrict("proto", [(ICMP, ICMP)])
            kind = perm.get("FromPort")  # an ICMP permission's FromPort: the type
            if isinstance(kind, int) and 0 <= kind <= 255:
                match.restrict("dport", [(kind, kind)])
        elif proto != "-1":
            unknown.append(
                Finding(
                    role,
                    at,
                    text,
                    f"protocol {proto}: the matrix speaks of tcp, udp and"
                    " all only; not evaluated",
                )
            )
            match = None
        return Permission(text, at, peers, match)

    def _peers(self, role, at, title, perm, unknown):
        """The addresses a permission names (intervals) and its peers in words."""
        space, peers = [], []
        for item in perm.get("IpRanges") or []:
            space += address_intervals(item["CidrIp"])
            peers.append(item["CidrIp"])
        for item in perm.get("Ipv6Ranges") or []:
            space += address_intervals(item["CidrIpv6"])
            peers.append(item["CidrIpv6"])
        for pair in perm.get("UserIdGroupPairs") or []:
            ref = pair.get("GroupId") if isinstance(pair, dict) else None
            if ref in self.roles_of and not pair.get("VpcPeeringConnectionId"):
                for peer_role in self.roles_of[ref]:
                    space += self.role_space(peer_role, at)
                peers.append(self.titles.get(ref, ref))
            else:
                unknown.append(
                    Finding(
                        role,
                        at,
                        f"{title}: group pair {pair}",
                        f"group {ref} is mapped to no role of the profile"
                        " (or is across a peering): its instances'"
                        " addresses are unknown; not evaluated",
                    )
                )
        for item in perm.get("PrefixListIds") or []:
            unknown.append(
                Finding(
                    role,
                    at,
                    f"{title}: prefix list {item.get('PrefixListId')}",
                    "a prefix list's CIDRs are not in this export"
                    " (aws ec2 get-managed-prefix-list-entries); not evaluated",
                )
            )
        return space, peers


def _direction(out: Assembly, export: Export, role, direction, key, mine, families):
    """One role's permissions in one direction, as the union AWS allows."""
    matches, labels, texts = [], [], {}
    seen: dict[tuple, tuple] = {}
    for i, g in mine:
        for j, perm in enumerate(g.get(key, [])):
            p = export.permission(role, direction, key, i, g, j, perm, out.unknown)
            label = len(texts)
            texts[label] = (p.text, p.at)
            if p.match is None:
                continue
            proto = perm["IpProtocol"].lower()
            for peer in p.peers:  # the same traffic in two groups of the role
                twin = (proto, perm.get("FromPort"), perm.get("ToPort"), peer)
                first = seen.setdefault(twin, (g["GroupId"], p.text))
                if first[0] != g["GroupId"]:
                    out.notes.append(
                        f"{role} {direction}: {p.text} repeats"
                        f" {first[1]} ({peer}): the union allows it once"
                    )
            matches.append(p.match)
            labels.append(label)

    def decide(tags):
        return min(labels[t] for t in tags) if tags else None

    def describe(label):
        return texts[label]

    boxes = evaluate(matches, decide, families)
    out.allowed(role, direction, boxes, describe, families)


def read(sources: dict, context) -> Live:
    path, text = sources["aws"]
    groups = _check(load_json(text, path), path)
    profile = context.profile
    roles_of = _mapping(groups, context)
    titles = {
        g["GroupId"]: f"{g['GroupId']} ({g.get('GroupName', '?')})" for g in groups
    }
    out = Assembly()
    roles = _roles(groups, roles_of, titles, profile, path, out.notes)
    ipv6 = profile_ipv6(profile) or any(
        "Ipv6Ranges" in p and p["Ipv6Ranges"]
        for g in groups
        for key in ("IpPermissions", "IpPermissionsEgress")
        for p in g.get(key, [])
    )
    families = (4, 6) if ipv6 else (4,)
    export = Export(path, profile, roles_of, titles)
    for role in roles:
        mine = [
            (i, g)
            for i, g in enumerate(groups)
            if role in roles_of.get(g["GroupId"], [])
        ]
        for direction, key in (
            ("ingress", "IpPermissions"),
            ("egress", "IpPermissionsEgress"),
        ):
            _direction(out, export, role, direction, key, mine, families)
    if not ipv6:
        out.notes.append(
            "no IPv6 in the profile's subnets nor in the groups: IPv4 only"
        )
    return out.live(profile, "aws", roles, families)


def _perm_text(perm: dict, peers: list[str], direction: str) -> str:
    proto = perm["IpProtocol"].lower()
    if proto == "-1":
        what = "all traffic"
    elif proto in PROTOCOLS:
        lo, hi = perm["FromPort"], perm["ToPort"]
        what = f"{proto}/{lo}" if lo == hi else f"{proto}/{lo}-{hi}"
    else:
        what = f"protocol {proto}"
    side = "from" if direction == "ingress" else "to"
    return f"{what} {side} {', '.join(peers) or 'nothing known'}"


# --- network ACLs (`aws ec2 describe-network-acls --output json`) ----------------
#
# Entries are read one record at a time (_acl_entry) and assembled per ACL in rule
# number order; the ACL's role is its `rulegen:role` tag. 32767 is AWS's own "*"
# entry, the default deny, which the evaluator applies by itself.

ACL_PROTOCOLS = {"-1": "all", "6": "tcp", "17": "udp"}
DEFAULT_ENTRY = 32767


def _acl_entry(record, at: str, unknown: list[str]):
    """One live entry as a nacl.Entry, or None (its problem in unknown) if the
    evaluator cannot apply it (a protocol other than tcp, udp and all)."""
    from ..nacl import Entry

    if not isinstance(record, dict) or not isinstance(record.get("RuleNumber"), int):
        raise ReadError([f"{at}: an entry needs a RuleNumber"])
    number = record["RuleNumber"]
    protocol = ACL_PROTOCOLS.get(str(record.get("Protocol")))
    action = record.get("RuleAction")
    cidr = record.get("CidrBlock") or record.get("Ipv6CidrBlock")
    if action not in ("allow", "deny") or not isinstance(cidr, str):
        raise ReadError([f"{at}: an entry needs a RuleAction and a CIDR block"])
    if protocol is None:
        unknown.append(f"{at}: entry {number}, protocol {record.get('Protocol')!r}")
        return None
    ports = None
    if protocol != "all":
        span = record.get("PortRange") or {}
        lo, hi = span.get("From"), span.get("To")
        if not (isinstance(lo, int) and isinstance(hi, int) and 0 <= lo <= hi <= 65535):
            raise ReadError([f"{at}: entry {number}: needs a PortRange From <= To"])
        ports = (lo, hi)
    try:
        address_intervals(cidr)
    except ValueError:
        raise ReadError([f"{at}: entry {number}: {cidr!r} is not a CIDR"]) from None
    return Entry(
        "outbound" if record.get("Egress") else "inbound",
        "deny" if action == "deny" else "request",
        protocol,
        ports,
        cidr,
        f"live entry {number}",
        number=number,
    )


def read_acls(text: str, path: str, profile) -> tuple[list, list[str], list[str]]:
    """The live ACLs (nacl.Acl, one per role tag), the entries not evaluated, notes."""
    from ..nacl import Acl

    data = load_json(text, path)
    if not isinstance(data, dict) or not isinstance(data.get("NetworkAcls"), list):
        raise ReadError(
            [
                f'{path}: expected {{"NetworkAcls": [...]}}'
                " (aws ec2 describe-network-acls --output json)"
            ]
        )
    acls, unknown, notes = {}, [], []
    for i, record in enumerate(data["NetworkAcls"]):
        at = f"{path}: NetworkAcls[{i}]"
        if not isinstance(record, dict) or not isinstance(record.get("Entries"), list):
            raise ReadError([f"{at}: an ACL needs its Entries"])
        tags = {
            t.get("Key"): t.get("Value")
            for t in record.get("Tags") or []
            if isinstance(t, dict)
        }
        role = tags.get(ROLE_TAG)
        if role not in ROLES:
            notes.append(
                f"{at} ({record.get('NetworkAclId', '?')}): no {ROLE_TAG} tag naming"
                " a role; not audited"
            )
            continue
        if role in acls:
            raise ReadError([f"{at}: a second ACL tagged {ROLE_TAG}={role}"])
        entries = [
            _acl_entry(e, f"{at}.Entries[{j}]", unknown)
            for j, e in enumerate(record["Entries"])
            if not (isinstance(e, dict) and e.get("RuleNumber") == DEFAULT_ENTRY)
        ]
        entries = sorted((e for e in entries if e), key=lambda e: e.number)
        acls[role] = Acl(
            role,
            tuple(profile.subnets.get(role, ())),
            tuple(e for e in entries if e.direction == "inbound"),
            tuple(e for e in entries if e.direction == "outbound"),
        )
    return [acls[r] for r in ROLES if r in acls], unknown, notes

"""What the AWS targets share: matrix rules as security-group rules, names, checkov skips.

AWS security-group rules hold exactly one peer (a CIDR, an IPv6 CIDR or a group), so
one matrix rule can become several AWS rules. `expand` is the one place that does it,
and `split` cuts each role's rules into security groups at the rules-per-group quota;
both emitters go through `split`. The fit check (check_fit, below) counts the groups
`split` would fill from the matrix, without making the rules (tests/test_aws_count.py
holds it to the split's answer).
"""

from __future__ import annotations

import re
from functools import lru_cache

from ..addresses import families
from ..addresses import version as address_version
from ..matrix import DIRECTIONS, ROLE_TITLES, ROLES, Matrix, Rule
from ..quotas import (
    AWS_RULES_PER_INTERFACE,
    QuotaError,
    Quotas,
    aws_units,
    no_fit_message,
    split_aws_group,
)
from . import EmitError, Target, describe, expressible
from ..records import dataclass

# AWS allows these in rule and group descriptions ("a-zA-Z0-9. _-:/()#,@[]+=&;{}!$*").
# `{`, `}` and `$` are left out as well: `${` would start an HCL interpolation.
_DESCRIPTION_BAD = re.compile(r"[^a-zA-Z0-9. _\-:/()#,@\[\]+=&;!*]")
DESCRIPTION_LIMIT = 255
OPEN_CIDRS = ("0.0.0.0/0", "::/0")

# checkov's unrestricted-ingress checks and the port each one watches (same IDs for
# Terraform and CloudFormation).
INGRESS_PORT_CHECKS = (("CKV_AWS_24", 22), ("CKV_AWS_260", 80), ("CKV_AWS_25", 3389))
# The groups are made here for instances, node groups and load balancers defined
# elsewhere, so checkov cannot see them attached within this output.
UNATTACHED_CHECK = "CKV2_AWS_5"
UNATTACHED_REASON = (
    "attached to the install's instances, node groups and load balancer"
    " by the code that creates them, outside this module"
)


@dataclass(frozen=True)
class AwsRule:
    """One AWS security-group rule: exactly one peer, a stable key, a description."""

    key: str  # for_each key: Rule.name, plus the CIDR for CIDR peers
    logical_id: str  # CloudFormation logical ID (alphanumeric) of the same rule
    role: str
    direction: str
    ip_protocol: str  # "tcp", "udp" or "-1"
    from_port: int | None
    to_port: int | None
    cidr_ipv4: str | None
    cidr_ipv6: str | None
    peer_role: str | None
    description: str
    skips: tuple[tuple[str, str], ...]  # (checkov check ID, reason)
    rule: Rule


@dataclass(frozen=True)
class GroupRule:
    """A rule an emitter puts in every group it creates; it counts toward the quota."""

    direction: str
    cidr_ipv4: str | None
    label: str  # what it is, for quota messages
    cidr_ipv6: str | None = None
    peer_role: str | None = None


def sanitize(text: str) -> str:
    """A description AWS accepts: its character set, at most 255 characters."""
    text = text.replace(">", "/").replace("'", "")
    text = " ".join(_DESCRIPTION_BAD.sub(" ", text).split())
    if len(text) > DESCRIPTION_LIMIT:
        text = text[: DESCRIPTION_LIMIT - 3].rstrip() + "..."
    return text


def rule_description(rule: Rule) -> str:
    stale = (
        " (stale on this release; kept by include_obsolete)" if rule.obsolete else ""
    )
    path = f". Path: {rule.via}" if rule.via else ""
    return sanitize(
        f"{rule.purpose}{stale}. Source: {_references(rule.reference)}{path}"
    )


def _references(reference: str) -> str:
    """Merged rules repeat the page title in every reference: say it once."""
    parts = reference.split("; ")
    title = parts[0].split(" > ")[0] + " > "
    short = [parts[0]] + [p.removeprefix(title) for p in parts[1:]]
    return "; ".join(dict.fromkeys(short))


@lru_cache(maxsize=None)  # a few names, asked for every rule and address
def camel(text: str) -> str:
    # Split at runs of _, - and whitespace (str.split's whitespace is re's \s).
    words = text.replace("_", " ").replace("-", " ").split()
    return "".join(word[:1].upper() + word[1:] for word in words)


def cidr_token(cidr: str) -> str:
    """A CIDR in logical-ID characters; x, y and z never occur in an address."""
    return cidr.replace(".", "x").replace(":", "y").replace("/", "z")


def group_logical_id(role: str, number: int = 1) -> str:
    return f"{camel(role)}SecurityGroup{number if number > 1 else ''}"


def group_name(install: str, role: str, number: int = 1) -> str:
    return f"{install}-{role.replace('_', '-')}{f'-{number}' if number > 1 else ''}"


def group_description(install: str, role: str, number: int = 1) -> str:
    # Changing a group's description replaces the group: keep it free of versions
    # and of the group count (adding a group must not replace the others).
    extra = f", extra group {number}" if number > 1 else ""
    return sanitize(f"CircleCI Server {install}: {ROLE_TITLES[role]}{extra}")


def groups(rules: list[Rule]) -> list[str]:
    """Roles that get a group: those with rules and those that rules point at."""
    present = {r.role for r in rules} | {r.peer.role for r in rules if r.peer.role}
    return [role for role in ROLES if role in present]


def _ports(rule: Rule) -> tuple[str, int | None, int | None]:
    if rule.protocol == "all":
        return "-1", None, None  # AWS ignores ports for -1: leave them out
    lo, hi = rule.ports if rule.ports else (0, 65535)
    return rule.protocol, lo, hi


def _logical_id(rule: Rule, cidr: str | None) -> str:
    parts = [camel(rule.role), camel(rule.direction), camel(rule.protocol)]
    if rule.ports is None:
        parts.append("All")
    else:
        lo, hi = rule.ports
        parts.append(str(lo) if lo == hi else f"{lo}To{hi}")
    if rule.source_ports:
        lo, hi = rule.source_ports
        parts.append(f"From{lo}" if lo == hi else f"From{lo}To{hi}")
    if rule.site:
        parts.append("Site")
    parts.append(camel(rule.peer.label))
    if cidr:
        parts.append(cidr_token(cidr))
    return "".join(parts)


@dataclass(frozen=True)
class AwsOptions:
    """What the profile decides for the AWS targets beyond the matrix."""

    page_open: frozenset = frozenset()  # see page_open_peers
    # role -> what its passed-in group already holds ("eks_cluster")
    existing: tuple[tuple[str, str], ...] = ()

    def existing_kind(self, role: str) -> str | None:
        return dict(self.existing).get(role)


def aws_options(profile) -> AwsOptions:
    existing = (getattr(profile, "aws", None) or {}).get("existing_groups", {})
    return AwsOptions(page_open_peers(profile), tuple(sorted(existing.items())))


def held_by_existing_group(rule: Rule, options: AwsOptions) -> bool:
    """A rule the role's passed-in group already holds: emitting it again would make
    AWS refuse the duplicate (InvalidPermission.Duplicate).

    The EKS cluster security group allows all traffic from itself (ingress)."""
    return (
        options.existing_kind(rule.role) == "eks_cluster"
        and rule.direction == "ingress"
        and rule.protocol == "all"
        and rule.peer.role == rule.role
    )


def page_open_peers(profile) -> frozenset[str]:
    """Peers the page itself opens to anywhere, so a finding on them is deliberate.

    The Nomad clients' public IPs ("or 0.0.0.0/0 for IPs not known in advance"), and
    the UI's users when the install is public. Never peers.ssh_admin ("scoped as
    tightly as possible"), nor the UI's users of a VPN install: opening those to
    anywhere is the user's choice, and checkov must report it.
    """
    peers = {"nomad_client_public_ips"}
    if getattr(profile, "access", None) == "public":
        peers.add("external")
    return frozenset(peers)


PAGE_OPEN_REASONS = {
    "external": "a public install (access: public) serves the UI to anyone",
    "nomad_client_public_ips": "the page allows 0.0.0.0/0 for Nomad client public IPs"
    " not known in advance (peers.nomad_client_public_ips: 0.0.0.0/0, or left empty"
    " without NAT gateways)",
}


def _skips(
    rule: Rule, cidr: str | None, lo, hi, page_open: frozenset[str]
) -> tuple[tuple[str, str], ...]:
    """The checkov findings the page makes deliberate, each with its reason."""
    if rule.direction != "ingress" or cidr not in OPEN_CIDRS or lo is None:
        return ()
    if rule.site:
        return ()  # the page does not require it: let checkov say so
    if rule.peer.label not in page_open or rule.peer.label not in PAGE_OPEN_REASONS:
        return ()
    skips = []
    for check, port in INGRESS_PORT_CHECKS:
        if lo <= port <= hi:
            reason = sanitize(
                f"{rule.purpose}: {rule.protocol}/{port} from anywhere because"
                f" {PAGE_OPEN_REASONS[rule.peer.label]}"
            )
            skips.append((check, reason))
    return tuple(skips)


def expand(
    target: Target, matrix: Matrix, options: AwsOptions = AwsOptions()
) -> dict[str, dict[str, list[AwsRule]]]:
    """Every AWS rule, by role and direction; raises EmitError naming a bad rule.

    options: the profile's AWS decisions (aws_options): which peers' openness the
    page asks for (only their rules carry checkov skips), and which passed-in groups
    already hold rules (those are not emitted again)."""
    page_open = options.page_open
    out = {role: {d: [] for d in DIRECTIONS} for role in ROLES}
    keys: dict[str, Rule] = {}
    ids: dict[str, Rule] = {}
    for rule in expressible(target, matrix):
        if held_by_existing_group(rule, options):
            continue
        ip_protocol, lo, hi = _ports(rule)
        peers = [(None, None)] if rule.peer.role else []
        for cidr in dict.fromkeys(rule.peer.cidrs):  # a CIDR listed twice is one rule
            try:
                version = address_version(cidr)
            except ValueError:
                raise EmitError(
                    f"{target.name}: {cidr!r} is not a CIDR: rule {describe(rule)}"
                ) from None
            peers.append((cidr, version))
        # The same for every address of the rule: worked out once.
        rule_name, prefix = rule.name, _logical_id(rule, None)
        description = rule_description(rule)
        for cidr, version in peers:
            key = rule_name if cidr is None else f"{rule_name}_{cidr}"
            logical_id = prefix + cidr_token(cidr) if cidr else prefix
            for seen, name in ((keys, key), (ids, logical_id)):
                if name in seen:
                    raise EmitError(
                        f"{target.name}: two rules would share the name {name}:"
                        f" rule {describe(rule)} and rule {describe(seen[name])}"
                    )
                seen[name] = rule
            out[rule.role][rule.direction].append(
                AwsRule(
                    key=key,
                    logical_id=logical_id,
                    role=rule.role,
                    direction=rule.direction,
                    ip_protocol=ip_protocol,
                    from_port=lo,
                    to_port=hi,
                    cidr_ipv4=cidr if version == 4 else None,
                    cidr_ipv6=cidr if version == 6 else None,
                    peer_role=rule.peer.role,
                    description=description,
                    skips=_skips(rule, cidr, lo, hi, page_open),
                    rule=rule,
                )
            )
    return out


def group_rules(target: Target) -> tuple[GroupRule, ...]:
    """The rules the target's emitter puts in every group (its GROUP_RULES)."""
    return tuple(getattr(target.emitter(), "GROUP_RULES", ()))


# The fit check and the emitter ask for the same split: made once. Callers only read it.
@lru_cache(maxsize=4)
def split(
    target: Target,
    matrix: Matrix,
    quotas: Quotas = Quotas(),
    options: AwsOptions = AwsOptions(),
) -> dict[str, list[list[AwsRule]]]:
    """Every AWS rule, by role and group: [group 1's rules, group 2's, ...].

    Roles that only other rules point at get one empty group. Group 1 is the role's
    own group (or the existing one passed in); rules that reference a role name
    its group 1, which every instance of the role carries.
    """
    by_role = expand(target, matrix, options)
    fixed = group_rules(target)
    rules = [r for d in by_role.values() for rs in d.values() for r in rs]
    out = {}
    for role in groups([r.rule for r in rules]):
        mine = [r for d in DIRECTIONS for r in by_role[role][d]]
        try:
            out[role] = split_aws_group(mine, quotas, fixed) or [[]]
        except QuotaError as exc:
            raise QuotaError([f"{target.name}: {role}: {p}" for p in exc.problems])
    return out


# --- the fit check: run before anything is emitted or written ------------------

OPEN_PEER = "nomad_client_public_ips"  # the page allows 0.0.0.0/0 for these


def _largest_peers(rules: list[Rule], direction: str) -> list[tuple[str, int]]:
    """Address lists by size; merged peers stay together (their rules are one)."""
    sizes: dict[str, int] = {}
    for rule in rules:
        if rule.direction == direction and not rule.peer.role:
            name = " + ".join((rule.peer.name or "cidrs").split("_and_"))
            sizes[name] = sizes.get(name, 0) + len(rule.peer.cidrs)
    return sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0]))


def check_fit(
    matrix: Matrix,
    targets,
    quotas: Quotas = Quotas(),
    options: AwsOptions = AwsOptions(),
) -> None:
    """Raise QuotaError if a target cannot hold the matrix within its quotas.

    targets: the emitter registry's Target entries. GCP rules and iptables chains
    always fit (address lists are cut into chunks or ipsets); AWS groups can not.
    The AWS groups are counted from the matrix (count_groups), as the emitters' own
    split would fill them, before any AWS rule is made: a list too long for the
    quotas stops here at the cost of counting its addresses. May raise EmitError for
    a rule a target cannot express, or an address or name it cannot take, as
    emitting would.
    """
    problems: dict[str, list[str]] = {}  # the same problem for every AWS target
    for target in targets:
        if "aws" not in target.clouds:
            continue
        fixed = group_rules(target)
        for role, (total, sides) in count_groups(
            target, matrix, quotas, options
        ).items():
            if total <= quotas.aws_groups_per_interface:
                continue
            for text in _aws_problems(role, total, sides, fixed, quotas):
                problems.setdefault(text, []).append(target.name)
    if problems:
        raise QuotaError([f"{', '.join(t)}: {text}" for text, t in problems.items()])


class Side:
    """One role's AWS rules of one direction, counted: how many groups they fill
    alone, their IPv4 and IPv6 peers and group references, and the matrix rules
    they come from."""

    __slots__ = ("groups", "v4", "v6", "refs", "rules")

    def __init__(self) -> None:
        self.groups = self.v4 = self.v6 = self.refs = 0
        self.rules: list[Rule] = []


def count_groups(
    target: Target,
    matrix: Matrix,
    quotas: Quotas = Quotas(),
    options: AwsOptions = AwsOptions(),
) -> dict[str, tuple[int, dict[str, Side]]]:
    """What split(target, matrix, quotas, options) makes, counted, and the same
    errors, without making a rule: per role, its number of groups (the larger
    count of its two directions, at least one) and each direction's Side.

    split fills groups first-fit in order, and a run of one family's peers lands
    exactly as filling the groups one after the other would: the order of the runs
    and of the group references is all that counts. When two rules could share a
    name, or an address is not plain, the emitters' own split decides instead.
    """
    rules = expressible(target, matrix)
    rules = [r for r in rules if not held_by_existing_group(r, options)]
    runs = _runs(rules)
    if runs is None or not _names_apart(rules):
        return _counted(target, split(target, matrix, quotas, options), quotas)
    fixed = group_rules(target)
    present = groups([rule for rule, _ in runs])
    out: dict[str, tuple[int, dict[str, Side]]] = {}
    for role in present:
        sides = {d: Side() for d in DIRECTIONS}
        for rule, run in runs:
            if rule.role == role:
                side = sides[rule.direction]
                side.rules.append(rule)
                if run is None:
                    side.refs += 1
                else:
                    side.v4, side.v6 = side.v4 + run[0], side.v6 + run[1]
        for direction in DIRECTIONS:
            mine = [
                run
                for rule, run in runs
                if (rule.role, rule.direction) == (role, direction)
            ]
            extra = [r for r in fixed if r.direction == direction]
            try:
                sides[direction].groups = _first_fit(mine, direction, quotas, extra)
            except QuotaError as exc:
                raise QuotaError([f"{target.name}: {role}: {p}" for p in exc.problems])
        out[role] = (max(side.groups for side in sides.values()) or 1, sides)
    return out


def _runs(rules: list[Rule]) -> list[tuple[Rule, tuple[int, int] | None]] | None:
    """(rule, (IPv4 peers, IPv6 peers)) per rule that makes AWS rules, None for a
    group reference; None if an address needs the emitters' own message."""
    seen: dict[tuple, tuple[int, int]] = {}  # a long list serves several rules
    out = []
    for rule in rules:
        if rule.peer.role:
            out.append((rule, None))
            continue
        counts = seen.get(rule.peer.cidrs)
        if counts is None:
            try:
                counts = families(dict.fromkeys(rule.peer.cidrs))
            except ValueError:
                return None
            seen[rule.peer.cidrs] = counts
        if counts != (0, 0):
            out.append((rule, counts))
    return out


def _names_apart(rules: list[Rule]) -> bool:
    """No two AWS rules of these can share a key or a logical ID (expand's check),
    for valid addresses: keys are a rule's name and a CIDR (which holds no "_"),
    logical IDs a prefix of the rule's and a CIDR token (0-9, a-f, x, y, z). False
    when that cannot be told from the rules alone."""
    names = [r.name for r in rules]
    if len(set(names)) != len(names):
        return False
    referenced = [r.name for r in rules if r.peer.role]
    listed = [r.name + "_" for r in rules if not r.peer.role]
    if any(name.startswith(other) for name in referenced for other in listed):
        return False
    prefixes = sorted(_logical_id(r, None) for r in rules)
    for i, prefix in enumerate(prefixes):
        for longer in prefixes[i + 1 :]:
            if not longer.startswith(prefix):
                break
            if not longer[len(prefix) :].strip(TOKEN_CHARACTERS):
                return False  # also two equal prefixes
    return True


TOKEN_CHARACTERS = "0123456789abcdefABCDEFxyz"


def _first_fit(runs, direction: str, quotas: Quotas, fixed) -> int:
    """How many groups split_aws_group fills with these runs (one direction's)."""
    limit = quotas.aws_rules_per_group(direction)
    base4 = sum(aws_units(r)[0] for r in fixed)
    base6 = sum(aws_units(r)[1] for r in fixed)
    used4: list[int] = []  # per group
    used6: list[int] = []
    first4 = first6 = 0  # groups before these are full for the family
    for run in runs:
        wanted = (1, 1) if run is None else (min(run[0], 1), min(run[1], 1))
        if any(b + u > limit for b, u in zip((base4, base6), wanted) if u):
            raise QuotaError([no_fit_message(direction, limit, fixed)])
        if run is None:
            i = max(first4, first6)
            while i < len(used4) and (used4[i] >= limit or used6[i] >= limit):
                i += 1
            if i == len(used4):
                used4.append(base4)
                used6.append(base6)
            used4[i] += 1
            used6[i] += 1
        else:
            _fill(used4, used6, run[0], first4, limit, base4, base6)
            _fill(used6, used4, run[1], first6, limit, base6, base4)
        while first4 < len(used4) and used4[first4] >= limit:
            first4 += 1
        while first6 < len(used6) and used6[first6] >= limit:
            first6 += 1
    return len(used4)


def _fill(mine: list, other: list, count: int, i: int, limit, base, other_base):
    """count peers of one family into the groups from i on, each as full as the
    quota allows, then into new groups (which hold the fixed rules)."""
    while count and i < len(mine):
        take = min(limit - mine[i], count)
        if take > 0:
            mine[i] += take
            count -= take
        i += 1
    if count:
        full, rest = divmod(count, limit - base)
        mine.extend([limit] * full + ([base + rest] if rest else []))
        other.extend([other_base] * (full + bool(rest)))


def _counted(target, by_role, quotas) -> dict[str, tuple[int, dict[str, Side]]]:
    """The same counts, read from the emitters' split."""
    fixed = group_rules(target)
    out = {}
    for role, groups in by_role.items():
        rules = [r for group in groups for r in group]
        sides = {}
        for direction in DIRECTIONS:
            side = sides[direction] = Side()
            mine = [r for r in rules if r.direction == direction]
            extra = [r for r in fixed if r.direction == direction]
            side.groups = len(split_aws_group(mine, quotas, extra))
            for r in mine:
                if r.peer_role:
                    side.refs += 1
                elif r.cidr_ipv4:
                    side.v4 += 1
                else:
                    side.v6 += 1
            # By identity: hashing a rule hashes all of its addresses.
            side.rules = list({id(r.rule): r.rule for r in mine}.values())
        out[role] = (len(groups), sides)
    return out


def _aws_problems(role, total, sides, fixed, quotas) -> list[str]:
    """One message per direction that alone needs too many groups (or one overall)."""
    texts = []
    for direction in DIRECTIONS:
        side = sides[direction]
        extra = [r for r in fixed if r.direction == direction]
        if side.groups <= quotas.aws_groups_per_interface:
            continue
        count = max(side.v4, side.v6) + side.refs
        texts.append(
            _aws_problem(role, direction, count, side.groups, extra, side.rules, quotas)
        )
    if not texts:  # only the directions together overflow
        inbound, outbound = (
            sides[d].v4 + sides[d].v6 + sides[d].refs for d in DIRECTIONS
        )
        texts.append(
            f"{role} needs {total} security groups for its"
            f" {inbound:,} inbound and"
            f" {outbound:,} outbound rules, but AWS"
            f" attaches at most {quotas.aws_groups_per_interface} groups per network"
            " interface. Choices: list fewer addresses; raise the quota with AWS and"
            " set quotas.aws."
        )
    return texts


def _aws_problem(role, direction, needed, groups_needed, fixed, rules, quotas) -> str:
    per_group = quotas.aws_rules_per_group(direction)
    groups = quotas.aws_groups_per_interface
    capacity = per_group * groups
    key = "inbound" if direction == "ingress" else "outbound"
    also = "".join(f", plus {r.label} in every group" for r in fixed)
    text = (
        f"{role} needs {needed:,} {key} rules (one per address and port{also}):"
        f" {groups_needed} security groups, but AWS holds {per_group} per security"
        f" group x {groups} groups per network interface = {capacity:,}."
    )
    choices = []
    peers = dict(_largest_peers(rules, direction))
    if any(OPEN_PEER in name.split(" + ") for name in peers):
        choices.append(
            f"leave peers.{OPEN_PEER} empty: the page allows 0.0.0.0/0 for Nomad"
            " client IPs not known in advance (one rule per port)"
        )
    biggest = ", ".join(f"{n} ({c:,})" for n, c in list(peers.items())[:3])
    choices.append(
        "list fewer addresses, or larger blocks that cover them"
        + (f" (largest lists: {biggest})" if biggest else "")
    )
    if needed <= AWS_RULES_PER_INTERFACE:
        choices.append(
            f"raise the quota with AWS and set quotas.aws.{key}_rules_per_group and"
            f" groups_per_interface (their product at most {AWS_RULES_PER_INTERFACE:,})"
        )
    else:
        choices.append(
            f"a raised quota cannot help: AWS allows at most {AWS_RULES_PER_INTERFACE:,}"
            " rules per network interface; use another target (iptables) for these hosts"
        )
    return text + " Choices: " + "; ".join(choices) + "."


# --- network ACLs (aws.network_acls): entries from generator/nacl.py -------------


def acl_layer(profile, matrix: Matrix):
    """The profile's network ACLs for the AWS targets, or None when they are off."""
    if not getattr(profile, "network_acls", False):
        return None  # without importing the ACL stage
    from ..nacl import layer_for

    return layer_for(profile, matrix)


def check_acl_fit(profile, matrix: Matrix, targets) -> None:
    """Raise QuotaError if an ACL cannot hold its entries within the quota."""
    if not any("aws" in t.clouds for t in targets):
        return
    layer = acl_layer(profile, matrix)
    if layer is None:
        return
    from ..nacl import fit_problems

    problems = fit_problems(layer, targets)
    if problems:
        raise QuotaError(problems)


def acl_name(install: str, role: str) -> str:
    return f"{install}-{role.replace('_', '-')}"


def entry_comment(entry) -> str:
    """An entry's purpose, the matrix rules it serves and how much wider it is (AWS
    keeps no description on an entry: this is its only record)."""
    text = f"{entry.number} {entry.action}: {entry.label}"
    if entry.wider:
        text += f" [coarsened: {entry.wider}; covers {', '.join(entry.covers)}]"
    return sanitize(text)


# checkov's network ACL checks: ingress from anywhere to a port, all ports, attached.
ACL_PORT_CHECKS = (
    ("CKV_AWS_230", 20),
    ("CKV_AWS_229", 21),
    ("CKV_AWS_232", 22),
    ("CKV_AWS_231", 3389),
)
ACL_ALL_PORTS_CHECK = "CKV_AWS_352"
ACL_UNATTACHED_CHECK = "CKV2_AWS_1"
ACL_UNATTACHED_REASON = "associated with the subnets passed in (subnet_ids)"


def acl_skips(entry) -> tuple[tuple[str, str], ...]:
    """The checkov findings on an ACL entry that stateless replies make deliberate.

    A reply entry opens the ephemeral range to the peers of the role's flows: from
    anywhere when the role reaches the internet. Entries for traffic the matrix
    itself opens to anywhere (a user's choice) get no skip: checkov reports them."""
    if entry.direction != "inbound" or entry.action != "allow":
        return ()
    skips = []
    lo, hi = entry.ports or (0, 65535)
    if entry.kind == "reply" and entry.cidr in OPEN_CIDRS:
        for check, port in ACL_PORT_CHECKS:
            if lo <= port <= hi:
                skips.append(
                    (
                        check,
                        f"stateless replies ({entry.protocol}/{lo}-{hi}) to the role's"
                        " own connections: an ACL cannot tell them from new ones; the"
                        " security groups decide who may connect",
                    )
                )
    if entry.ports is None and entry.cidr not in OPEN_CIDRS:
        skips.append(
            (
                ACL_ALL_PORTS_CHECK,
                sanitize(
                    f"{entry.label}: all traffic from {entry.cidr}, as the matrix says"
                ),
            )
        )
    return tuple(skips)

"""terraform-aws: a Terraform module with a security group per role (or more).

A role whose rules exceed the per-group quota gets extra groups `<role>_2`, ... that
must be attached to the same instances: outputs give every role's list of group IDs.
Rules are `aws_vpc_security_group_ingress_rule` / `_egress_rule` resources with
`for_each` keyed by stable rule names. Rules whose checkov findings the page makes
deliberate sit in blocks of their own, so that a skip never covers other rules.
"""

from __future__ import annotations

import json

from ..matrix import DIRECTIONS, ROLE_TITLES, Matrix
from ..quotas import quotas_for
from ..templating import render
from . import Target, header, tfdocs
from .aws import (
    INGRESS_PORT_CHECKS,
    UNATTACHED_CHECK,
    UNATTACHED_REASON,
    AwsOptions,
    AwsRule,
    ACL_ALL_PORTS_CHECK,
    ACL_PORT_CHECKS,
    ACL_UNATTACHED_CHECK,
    ACL_UNATTACHED_REASON,
    acl_layer,
    acl_name,
    acl_skips,
    entry_comment,
    group_description,
    group_name,
    aws_options,
    held_by_existing_group,
    split,
)
from .hcl import aligned

RESOURCE = {
    "ingress": "aws_vpc_security_group_ingress_rule",
    "egress": "aws_vpc_security_group_egress_rule",
}
CHECK_PORTS = dict(INGRESS_PORT_CHECKS)
EXISTING_KINDS = {
    "eks_cluster": "the EKS cluster security group (aws.existing_groups), which"
    " already allows all traffic from itself: that rule is not repeated here",
}
# What the caller may say of a group it passes in (existing_group_kinds), and the
# profile words that make the module leave out the rules such a group holds.
KIND_PROFILE_KEY = {"eks_cluster": "aws.existing_groups.{role}: eks_cluster"}


def emit(matrix: Matrix, profile, target: Target) -> dict[str, str]:
    files = _module(matrix, profile, target)
    eks_cluster = (
        aws_options(profile).existing_kind("kubernetes_nodes") == "eks_cluster"
    )
    head = header(matrix, target.name)
    files["examples/eks/main.tf"] = render(
        "terraform-aws/examples/eks/main.tf.j2",
        header=head,
        eks_cluster=eks_cluster,
        name=profile.name,
    )
    files["README.md"] = tfdocs.readme(
        f"CircleCI Server firewall: {profile.name} (AWS security groups)",
        ["\n".join(f"<!-- {line} -->" for line in head)]
        + [
            "One security group per role (more past the rules quota) with the rules"
            " of the install's profile. `examples/eks` wires it next to the EKS"
            " cluster.",
        ],
        files,
        usage=(USAGE_EKS if eks_cluster else USAGE).replace("NAME", profile.name),
    )
    return files


USAGE = """module "circleci_firewall" {
  source = "./out/NAME/terraform-aws"
  vpc_id = module.vpc.vpc_id
}
"""
USAGE_EKS = """module "circleci_firewall" {
  source = "./out/NAME/terraform-aws"
  vpc_id = module.vpc.vpc_id
  existing_security_group_ids = {
    kubernetes_nodes = module.eks.cluster_security_group_id   # required by the profile
  }
  existing_group_kinds = {
    kubernetes_nodes = "eks_cluster"   # the profile's words: checked at plan
  }
}
"""


def _module(matrix: Matrix, profile, target: Target) -> dict[str, str]:
    options = aws_options(profile)
    by_role = split(target, matrix, quotas_for(profile), options)
    roles = list(by_role)
    head = header(matrix, target.name)
    layer = acl_layer(profile, matrix)
    acls = [_acl(profile.name, acl) for acl in layer.acls] if layer else []
    return {
        "versions.tf": render("terraform-aws/versions.tf.j2", header=head),
        "variables.tf": render(
            "terraform-aws/variables.tf.j2",
            header=head,
            roles=roles,
            kinds=sorted(KIND_PROFILE_KEY),
            acl_roles=[a["role"] for a in acls],
            required=[
                {"role": role, "kind": EXISTING_KINDS[options.existing_kind(role)]}
                for role in roles
                if options.existing_kind(role)
            ],
        ),
        "main.tf": render(
            "terraform-aws/main.tf.j2",
            header=head,
            group_ids=aligned(
                [(role, _group_id(role, options.existing_kind(role))) for role in roles]
            ),
            group_id_lists=aligned(
                [
                    (role, "[" + ", ".join(group_ids(role, len(gs))) + "]")
                    for role, gs in by_role.items()
                ]
            ),
            groups=[
                _group(profile.name, role, number, len(gs))
                for role, gs in by_role.items()
                for number in range(1, len(gs) + 1)
                # A group that already holds rules of its own is always passed in.
                if not (number == 1 and options.existing_kind(role))
            ],
            held=[
                f"{ROLE_TITLES[role]}: {EXISTING_KINDS[kind]}"
                for role, kind in options.existing
                if role in roles
            ],
            acls=acls,
            rule_blocks=[
                block
                for role, gs in by_role.items()
                for number, rules in enumerate(gs, 1)
                for direction in DIRECTIONS
                for block in rule_blocks(
                    role,
                    direction,
                    [r for r in rules if r.direction == direction],
                    number,
                    len(gs),
                    options,
                )
            ],
        ),
        "outputs.tf": render(
            "terraform-aws/outputs.tf.j2",
            header=head,
            outputs=[
                output
                for role in roles
                for output in (
                    {
                        "name": f"{role}_security_group_id",
                        "description": (
                            f"ID of the {ROLE_TITLES[role]} security group (its"
                            " group 1, which rules of other roles reference)."
                        ),
                        "value": f"local.security_group_ids.{role}",
                    },
                    {
                        "name": f"{role}_security_group_ids",
                        "description": (
                            f"IDs of every {ROLE_TITLES[role]} security group:"
                            " attach all of them to its instances."
                        ),
                        "value": f"local.security_group_id_lists.{role}",
                    },
                )
            ]
            + [
                {
                    "name": f"{a['role']}_network_acl_id",
                    "description": f"ID of the {ROLE_TITLES[a['role']]} network ACL.",
                    "value": f"aws_network_acl.{a['role']}.id",
                }
                for a in acls
            ],
        ),
    }


def lit(value) -> str:
    return "null" if value is None else json.dumps(value)


ACL_SUFFIXES = dict(
    {check: f"open_{port}" for check, port in ACL_PORT_CHECKS},
    **{ACL_ALL_PORTS_CHECK: "all_ports"},
)
ACL_ATTRS = (
    "rule_number",
    "egress",
    "protocol",
    "rule_action",
    "cidr_block",
    "ipv6_cidr_block",
    "from_port",
    "to_port",
)


def _acl(install: str, acl) -> dict:
    """One network ACL and its entries, in blocks by deliberate checkov finding."""
    role = acl.role
    name = acl_name(install, role)
    blocks: dict[tuple, dict] = {}
    for direction in ("inbound", "outbound"):
        for entry in acl.entries(direction):
            skips = acl_skips(entry)
            checks = tuple(sorted({c for c, _ in skips}))
            block = blocks.setdefault(
                checks,
                {
                    "name": "_".join([role] + [ACL_SUFFIXES[c] for c in checks]),
                    "skips": {},
                    "entries": [],
                },
            )
            for check, reason in skips:
                block["skips"].setdefault(check, []).append(reason)
            block["entries"].append(_acl_entry(direction, entry))
    for block in blocks.values():
        block["skips"] = [
            f"{check}:{'; '.join(dict.fromkeys(reasons))}"[:1000]
            for check, reasons in sorted(block["skips"].items())
        ]
    return {
        "role": role,
        "title": ROLE_TITLES[role],
        "subnets": ", ".join(acl.subnets),
        "skips": [f"{ACL_UNATTACHED_CHECK}:{ACL_UNATTACHED_REASON}"],
        "attrs": aligned(
            [
                ("vpc_id", "var.vpc_id"),
                ("subnet_ids", f"var.subnet_ids[{json.dumps(role)}]"),
                (
                    "tags",
                    f'merge(var.tags, {{ Name = {json.dumps(name)}, "rulegen:role"'
                    f" = {json.dumps(role)} }})",
                ),
            ]
        ),
        "blocks": [blocks[k] for k in sorted(blocks)],
        "entry_attrs": aligned(
            [("network_acl_id", f"aws_network_acl.{role}.id")]
            + [(key, f"each.value.{key}") for key in ACL_ATTRS]
        ),
    }


def _acl_entry(direction: str, entry) -> dict:
    from ..nacl import PROTOCOL_NUMBERS  # only for a profile with ACLs

    lo, hi = entry.ports if entry.ports and entry.protocol != "all" else (0, 0)
    six = ":" in entry.cidr
    return {
        "key": f"{'in' if direction == 'inbound' else 'out'}-{entry.number}",
        "comment": entry_comment(entry),
        "attrs": aligned(
            [
                ("rule_number", str(entry.number)),
                ("egress", "true" if entry.egress else "false"),
                ("protocol", lit(PROTOCOL_NUMBERS[entry.protocol])),
                ("rule_action", lit(entry.action)),
                ("cidr_block", lit(None if six else entry.cidr)),
                ("ipv6_cidr_block", lit(entry.cidr if six else None)),
                ("from_port", str(lo)),
                ("to_port", str(hi)),
            ]
        ),
    }


def _passed_in(role: str) -> str:
    # Keyed by role: the keys are known at plan time even when the IDs are not (a
    # group created in the same apply), so `count` can depend on them.
    return f"contains(keys(var.existing_security_group_ids), {json.dumps(role)})"


def _group_id(role: str, existing_kind: str | None = None) -> str:
    if existing_kind:
        return f"var.existing_security_group_ids[{json.dumps(role)}]"
    return (
        f"{_passed_in(role)} ? var.existing_security_group_ids[{json.dumps(role)}]"
        f" : aws_security_group.{role}[0].id"
    )


def group_ids(role: str, count: int) -> list[str]:
    """The expressions of a role's group IDs, group 1 first."""
    return [f"local.security_group_ids.{role}"] + [
        f"aws_security_group.{role}_{n}.id" for n in range(2, count + 1)
    ]


def _group(install: str, role: str, number: int, count: int) -> dict:
    name = group_name(install, role, number)
    title = ROLE_TITLES[role]
    if count > 1:
        title += f", group {number} of {count}"
        if number > 1:
            title += " (attach it to the same instances as group 1)"
    return {
        "name": role if number == 1 else f"{role}_{number}",
        "title": title,
        "skips": [f"{UNATTACHED_CHECK}:{UNATTACHED_REASON}"],
        # Only group 1 can be an existing group; the overflow is always created.
        "count": f"{_passed_in(role)} ? 0 : 1" if number == 1 else None,
        "attrs": aligned(
            [
                # A prefix: a replacement group is created before the old one goes
                # (create_before_destroy), and two groups cannot share a name.
                ("name_prefix", json.dumps(f"{name}-")),
                ("description", json.dumps(group_description(install, role, number))),
                ("vpc_id", "var.vpc_id"),
                ("tags", f"merge(var.tags, {{ Name = {json.dumps(name)} }})"),
            ]
        ),
    }


def _kind_guards(rules: list[AwsRule], options: AwsOptions | None) -> list[dict]:
    """Plan-time stops for rules a passed-in group already holds.

    The caller says what a group is in existing_group_kinds, a literal known at plan
    even when the group's ID is not (an EKS module in the same apply): a module made
    from a profile that did not say so too would plan a duplicate that AWS refuses at
    apply (InvalidPermission.Duplicate).
    """
    guards = []
    for kind, profile_key in sorted(KIND_PROFILE_KEY.items()):
        for rule in rules:
            role = rule.role
            if options and options.existing_kind(role):
                continue  # the profile said so: the rule is not emitted at all
            if not held_by_existing_group(
                rule.rule, AwsOptions(existing=((role, kind),))
            ):
                continue
            said = f"lookup(var.existing_group_kinds, {json.dumps(role)}, null)"
            guards.append(
                {
                    "condition": f"each.key != {json.dumps(rule.key)}"
                    f" || !{_passed_in(role)} || {said} != {json.dumps(kind)}",
                    "error_message": (
                        f"existing_group_kinds.{role} = {kind}, but this module was"
                        " generated from a profile without"
                        f" {profile_key.format(role=role)}: rule {rule.key} is already"
                        " in that group, and AWS refuses it again at apply"
                        " (InvalidPermission.Duplicate). Add"
                        f" {profile_key.format(role=role)} to the profile and run"
                        " rulegen generate again."
                    ),
                }
            )
    return guards


def rule_blocks(
    role: str,
    direction: str,
    rules: list[AwsRule],
    number: int = 1,
    count: int = 1,
    options: AwsOptions | None = None,
) -> list[dict]:
    """One resource block per set of deliberate checkov findings (most have none)."""
    by_checks: dict[tuple[str, ...], list[AwsRule]] = {}
    for rule in rules:
        by_checks.setdefault(tuple(sorted({c for c, _ in rule.skips})), []).append(rule)
    group = ROLE_TITLES[role] + (f", group {number} of {count}" if count > 1 else "")
    blocks = []
    for checks, members in sorted(by_checks.items()):
        name = role if number == 1 else f"{role}_{number}"
        title = f"{group}: {direction} rules."
        if checks:
            name += "_open_" + "_".join(str(CHECK_PORTS[c]) for c in checks)
            title = (
                f"{group}: {direction} rules this profile opens to"
                " anywhere (the checkov skips say why)."
            )
        blocks.append(
            {
                "type": RESOURCE[direction],
                "name": name,
                "title": title,
                "skips": [
                    f"{check}:{'; '.join(_reasons(members, check))}" for check in checks
                ],
                "rules": [
                    {"key": r.key, "attrs": aligned(_values(r))} for r in members
                ],
                "preconditions": _kind_guards(members, options),
                "attrs": aligned(
                    [("security_group_id", group_ids(role, number)[-1])]
                    + [(name, f"each.value.{name}") for name, _ in _values(members[0])]
                    + [("tags", "var.tags")]
                ),
            }
        )
    return blocks


def _reasons(rules: list[AwsRule], check: str) -> list[str]:
    reasons = dict.fromkeys(
        reason for r in rules for c, reason in r.skips if c == check
    )
    return list(reasons)


def _values(rule: AwsRule) -> list[tuple[str, str]]:
    def lit(value) -> str:
        return "null" if value is None else json.dumps(value)

    peer = f"local.security_group_ids.{rule.peer_role}" if rule.peer_role else "null"
    return [
        ("description", lit(rule.description)),
        ("ip_protocol", lit(rule.ip_protocol)),
        ("from_port", lit(rule.from_port)),
        ("to_port", lit(rule.to_port)),
        ("cidr_ipv4", lit(rule.cidr_ipv4)),
        ("cidr_ipv6", lit(rule.cidr_ipv6)),
        ("referenced_security_group_id", peer),
    ]

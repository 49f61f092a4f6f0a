"""terraform-aws: a Terraform module with one security group per role.

Rules are `aws_vpc_security_group_ingress_rule` / `_egress_rule` resources with
`for_each` keyed by stable rule names. Rules whose checkov findings the page makes
deliberate sit in blocks of their own, so that a skip never covers other rules.
"""

from __future__ import annotations

import json

from ..matrix import DIRECTIONS, ROLE_TITLES, Matrix
from ..templating import render
from . import Target, header
from .aws import (
    INGRESS_PORT_CHECKS,
    UNATTACHED_CHECK,
    UNATTACHED_REASON,
    AwsRule,
    expand,
    group_description,
    group_name,
    groups,
)

RESOURCE = {
    "ingress": "aws_vpc_security_group_ingress_rule",
    "egress": "aws_vpc_security_group_egress_rule",
}
CHECK_PORTS = dict(INGRESS_PORT_CHECKS)


def emit(matrix: Matrix, profile, target: Target) -> dict[str, str]:
    by_role = expand(target, matrix)
    roles = groups(
        matrix, [r.rule for d in by_role.values() for rs in d.values() for r in rs]
    )
    head = header(matrix, target.name)
    return {
        "versions.tf": render("terraform-aws/versions.tf.j2", header=head),
        "variables.tf": render(
            "terraform-aws/variables.tf.j2",
            header=head,
            role_attrs=aligned([(role, "optional(string)") for role in roles]),
        ),
        "main.tf": render(
            "terraform-aws/main.tf.j2",
            header=head,
            group_ids=aligned(
                [
                    (
                        role,
                        f"try(aws_security_group.{role}[0].id,"
                        f" var.existing_security_group_ids.{role})",
                    )
                    for role in roles
                ]
            ),
            groups=[_group(profile.name, role) for role in roles],
            rule_blocks=[
                block
                for role in roles
                for direction in DIRECTIONS
                for block in rule_blocks(role, direction, by_role[role][direction])
            ],
        ),
        "outputs.tf": render(
            "terraform-aws/outputs.tf.j2",
            header=head,
            outputs=[
                {
                    "name": f"{role}_security_group_id",
                    "description": f"ID of the {ROLE_TITLES[role]} security group.",
                    "value": f"local.security_group_ids.{role}",
                }
                for role in roles
            ],
        ),
    }


def aligned(pairs: list[tuple[str, str]]) -> list[str]:
    """Attribute lines with their `=` aligned, as `terraform fmt` aligns them."""
    width = max((len(name) for name, _ in pairs), default=0)
    return [f"{name.ljust(width)} = {value}" for name, value in pairs]


def _group(install: str, role: str) -> dict:
    name = group_name(install, role)
    return {
        "role": role,
        "title": ROLE_TITLES[role],
        "skips": [f"{UNATTACHED_CHECK}:{UNATTACHED_REASON}"],
        "count": f"var.existing_security_group_ids.{role} == null ? 1 : 0",
        "attrs": aligned(
            [
                ("name", json.dumps(name)),
                ("description", json.dumps(group_description(install, role))),
                ("vpc_id", "var.vpc_id"),
                ("tags", f"merge(var.tags, {{ Name = {json.dumps(name)} }})"),
            ]
        ),
    }


def rule_blocks(role: str, direction: str, rules: list[AwsRule]) -> list[dict]:
    """One resource block per set of deliberate checkov findings (most have none)."""
    by_checks: dict[tuple[str, ...], list[AwsRule]] = {}
    for rule in rules:
        by_checks.setdefault(tuple(sorted({c for c, _ in rule.skips})), []).append(rule)
    blocks = []
    for checks, members in sorted(by_checks.items()):
        name = role
        title = f"{ROLE_TITLES[role]}: {direction} rules."
        if checks:
            name += "_open_" + "_".join(str(CHECK_PORTS[c]) for c in checks)
            title = (
                f"{ROLE_TITLES[role]}: {direction} rules this profile opens to"
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
                "attrs": aligned(
                    [("security_group_id", f"local.security_group_ids.{role}")]
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

"""terraform-gcp: one google_compute_firewall resource per rule, keyed by its name.

The rules come from gcp_firewall.build, so this target and gcp-firewall always agree.
One resource per rule (not for_each) lets a checkov skip sit on the one rule it is for.
"""

from __future__ import annotations

import json

from ..matrix import Matrix
from . import Target, header
from .gcp_firewall import GcpPlan, GcpRule, build
from .hcl import aligned

PROVIDER_VERSION = ">= 5.0, < 8.0"


def hcl_string(value: str) -> str:
    """A quoted HCL string: JSON escapes, and template sequences made literal."""
    text = json.dumps(value, ensure_ascii=False)
    return text.replace("${", "$${").replace("%{", "%%{")


def hcl_list(values) -> str:
    """A list of quoted HCL strings, written by json's C encoder in one call (a
    call per item took most of a 10,000-address emit). No "${" or "%{" spans two
    items: each starts with a quote."""
    text = json.dumps(list(values), ensure_ascii=False)
    return text.replace("${", "$${").replace("%{", "%%{")


def label(rule: GcpRule) -> str:
    return rule.name.replace("-", "_")


def resource(rule: GcpRule) -> dict:
    attrs = [
        ("name", hcl_string(rule.name)),
        ("project", "var.project"),
        ("network", "var.network"),
        ("description", hcl_string(rule.description)),
        ("direction", hcl_string(rule.direction)),
        ("priority", str(rule.priority)),
    ]
    for key, value in (
        ("source_ranges", rule.source_ranges),
        ("destination_ranges", rule.destination_ranges),
        ("source_tags", rule.source_tags),
        ("source_service_accounts", rule.source_accounts),
        ("target_tags", rule.target_tags),
        ("target_service_accounts", rule.target_accounts),
    ):
        if value:
            attrs.append((key, hcl_list(value)))
    inner = [("protocol", hcl_string(rule.protocol))]
    if rule.ports:
        inner.append(("ports", hcl_list(rule.ports)))
    return {
        "label": label(rule),
        "skips": [f"#checkov:skip={check}:{why}" for check, why in rule.skips],
        "attrs": aligned(attrs),
        "block": rule.action,
        "block_attrs": aligned(inner),
        "log": ['metadata = "INCLUDE_ALL_METADATA"'] if rule.logging else [],
    }


def emit(matrix: Matrix, profile, target: Target) -> dict[str, str]:
    from ..templating import render
    from . import tfdocs

    plan: GcpPlan = build(matrix, profile, target)
    head = header(matrix, target.name)
    project = hcl_string(plan.project) if plan.project else "null"
    outputs = aligned(
        [
            (hcl_string(r.name), f"google_compute_firewall.{label(r)}.self_link")
            for r in plan.rules
        ]
    )
    roles = aligned(
        [
            (role, f"{{ {a.kind} = {hcl_string(a.value)} }}")
            for role, a in plan.addresses.items()
        ]
    )
    files = {
        "versions.tf": render(
            "terraform-gcp/versions.tf.j2", header=head, provider=PROVIDER_VERSION
        ),
        "variables.tf": render(
            "terraform-gcp/variables.tf.j2",
            header=head,
            project=project,
            network=hcl_string(plan.network),
        ),
        "main.tf": render(
            "terraform-gcp/main.tf.j2",
            header=head,
            resources=[resource(r) for r in plan.rules],
        ),
        "outputs.tf": render(
            "terraform-gcp/outputs.tf.j2", header=head, rules=outputs, roles=roles
        ),
    }
    files["README.md"] = tfdocs.readme(
        f"CircleCI Server firewall: {profile.name} (GCP firewall rules)",
        ["\n".join(f"<!-- {line} -->" for line in head)]
        + [
            "One `google_compute_firewall` rule per rule of the install's profile;"
            " give every instance of a role the tag or service account"
            " `role_addresses` lists.",
        ],
        files,
        usage=f'module "circleci_firewall" {{\n  source = "./out/{profile.name}'
        '/terraform-gcp"\n}\n',
    )
    return files

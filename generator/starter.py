"""A starter profile for `rulegen init`: addresses carved from one VPC block."""

from __future__ import annotations

import ipaddress
import re

from .templating import render

# GitHub's published SSH ("git") ranges; replace them for another VCS.
GITHUB_GIT_RANGES = [
    "192.30.252.0/22",
    "185.199.108.0/22",
    "140.82.112.0/20",
    "143.55.64.0/20",
]

# The block is cut into four equal subnets (three roles and the load balancer), so
# its largest prefix is the smallest subnet the cloud allows, less two bits.
BLOCK_PREFIXES = {
    "aws": (16, 26, "AWS VPCs are /16 to /28 and subnets at least /28"),
    "gcp": (8, 27, "GCP subnet ranges are at least /29"),
    "generic": (8, 28, "each subnet keeps at least two host addresses (/30)"),
}
NAME_RULE = (
    "2 to 32 characters: lowercase letters, digits and dashes, starting with a"
    " letter and not ending with a dash"
)
COMMENT_COLUMN_MAX = 40  # longer lines keep their comment two spaces after them


def check_name(name: str) -> None:
    if not re.fullmatch(r"[a-z][a-z0-9-]{0,30}[a-z0-9]", name):
        raise ValueError(f"--name {name!r}: use {NAME_RULE}")


def carve(vpc_cidr: str, cloud: str) -> ipaddress.IPv4Network:
    low, high, why = BLOCK_PREFIXES[cloud]
    rule = f"expected an IPv4 block from /{low} to /{high} on {cloud} ({why})"
    try:
        vpc = ipaddress.ip_network(vpc_cidr)
    except ValueError:
        try:
            fixed = ipaddress.ip_network(vpc_cidr, strict=False)
        except ValueError:
            raise ValueError(f"--vpc-cidr {vpc_cidr}: {rule}") from None
        raise ValueError(
            f"--vpc-cidr {vpc_cidr} has host bits set; did you mean {fixed}?"
        ) from None
    if vpc.version != 4 or not low <= vpc.prefixlen <= high:
        raise ValueError(f"--vpc-cidr {vpc_cidr}: {rule}")
    return vpc


def align_comments(text: str) -> str:
    """Trailing comments start in one column, so the file reads as a table."""
    lines = text.splitlines()
    split = [re.match(r"^(\s*[^#\s].*?)\s+(#.*)$", line) for line in lines]
    widths = [len(m.group(1)) for m in split if m]
    column = max([w for w in widths if w <= COMMENT_COLUMN_MAX], default=0) + 2
    out = []
    for line, m in zip(lines, split):
        if m:
            code, comment = m.groups()
            line = f"{code.ljust(column - 2)}  {comment}"
        out.append(line)
    return "\n".join(out) + "\n"


def starter_profile(
    name: str,
    cloud: str,
    access: str,
    version: str,
    vpc_cidr: str,
    project: str | None = None,
) -> str:
    check_name(name)
    vpc = carve(vpc_cidr, cloud)
    size = vpc.prefixlen + 2  # four equal parts: three roles and the load balancer
    k8s, nomad, vms, lb = list(vpc.subnets(new_prefix=size))
    dns = "169.254.169.254" if cloud == "gcp" else str(vpc.network_address + 2)
    return align_comments(
        render(
            "profile.yaml.j2",
            name=name,
            cloud=cloud,
            access=access,
            version=version,
            vpc=str(vpc),
            subnets={
                "kubernetes_nodes": k8s,
                "nomad_clients": nomad,
                "external_vms": vms,
                "load_balancer": lb,
            },
            dns=dns,
            vcs=GITHUB_GIT_RANGES,
            external="172.16.0.0/12" if access == "vpn" else "0.0.0.0/0",
            project=project,
            ntp=f"{vpc.network_address + 123}/32",  # a placeholder inside the block
        )
    )

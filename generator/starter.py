"""A starter profile for `rulegen init`: addresses carved from one VPC block."""

from __future__ import annotations

import ipaddress

from .templating import render

# GitHub's published SSH ("git") ranges; replace them for another VCS.
GITHUB_GIT_RANGES = [
    "192.30.252.0/22",
    "185.199.108.0/22",
    "140.82.112.0/20",
    "143.55.64.0/20",
]


def starter_profile(
    name: str, cloud: str, access: str, version: str, vpc_cidr: str
) -> str:
    vpc = ipaddress.ip_network(vpc_cidr)
    if vpc.version != 4 or not 16 <= vpc.prefixlen <= 20:
        raise ValueError(
            f"--vpc-cidr {vpc_cidr}: expected an IPv4 block from /16 to /20"
        )
    size = vpc.prefixlen + 2  # four equal parts: three roles and the load balancer
    k8s, nomad, vms, lb = list(vpc.subnets(new_prefix=size))
    dns = "169.254.169.254" if cloud == "gcp" else str(vpc.network_address + 2)
    return render(
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
    )

"""Benchmark inputs: large profiles, and the same rules as an Aerleon policy."""

from __future__ import annotations

import ipaddress
import os
import random
import sys
from pathlib import Path

import yaml

SEED = 6  # fixed: the same addresses every run


def public_ips(count: int, rng: random.Random) -> list[str]:
    """Distinct public /32s, scattered like cloud-assigned addresses."""
    out: set[str] = set()
    while len(out) < count:
        address = ipaddress.IPv4Address(rng.randrange(0x0B000000, 0xDF000000))
        if address.is_global:
            out.add(f"{address}/32")
    return sorted(out, key=lambda c: ipaddress.ip_network(c))


def ranges(count: int, rng: random.Random) -> list[str]:
    """Distinct /24 to /28 blocks, as VCS providers and admin networks publish."""
    out: set[str] = set()
    while len(out) < count:
        plen = rng.choice((24, 26, 28))
        first = rng.randrange(0x0B000000, 0xDF000000) >> (32 - plen) << (32 - plen)
        net = ipaddress.IPv4Network((first, plen))
        if net.is_global:
            out.add(str(net))
    return sorted(out, key=ipaddress.ip_network)


def profile(cloud: str, clients: int, admin_ranges: int = 1000) -> dict:
    """A profile with `clients` addresses in one peer list and VCS/admin ranges.

    aws: the Nomad clients' public IPs (assign_public_ip); gcp and generic have no
    such setting, so the same count goes into ssh_rerun (who may SSH into jobs).
    """
    rng = random.Random(f"{SEED}-{cloud}-{clients}")
    many = public_ips(clients, rng)
    blocks = ranges(admin_ranges, rng)
    vcs, admin = blocks[: admin_ranges * 3 // 5], blocks[admin_ranges * 3 // 5 :]
    data = {
        "name": f"bench-{cloud}-{clients}",
        "server_version": "4.1" if cloud == "aws" else "4.8",
        "cloud": cloud,
        "access": "public",
        "network": {"dns_servers": ["10.1.0.2"]},
        "peers": {"vcs": vcs, "ssh_admin": admin},
    }
    subnets = {
        "kubernetes_nodes": ["10.1.0.0/20"],
        "nomad_clients": ["10.1.16.0/20"],
        "external_vms": ["10.1.32.0/20"],
    }
    if cloud == "gcp":
        # Public access: an internet-facing balancer, reached through Cloud NAT.
        data["load_balancer"] = {
            "transparent": True,
            "public_ips": ["198.51.100.20/32"],
        }
        data["network"] = {
            "subnets": subnets,
            "dns_servers": ["169.254.169.254"],
            "nat_gateway_ips": ["198.51.100.10/32"],
        }
        data["gcp"] = {
            "network": "bench",
            "tags": {r: r.replace("_", "-") for r in subnets},
        }
    else:
        subnets["load_balancer"] = ["10.1.48.0/24"]
        data["network"] = {
            "vpc_cidr": "10.1.0.0/16",
            "subnets": subnets,
            "dns_servers": ["10.1.0.2"],
        }
    if cloud == "aws":
        data["vm_service"] = {"assign_public_ip": True}
        data["network"]["nat_gateway_ips"] = ["198.51.100.10/32", "198.51.100.11/32"]
        data["peers"]["nomad_client_public_ips"] = many
        # 400 admin ranges alone pass the default 60 x 5 groups; raised to the most
        # AWS allows per interface (200 x 5 = 1,000), the small profiles fit.
        data["quotas"] = {
            "aws": {"inbound_rules_per_group": 200, "outbound_rules_per_group": 200}
        }
    else:
        data["peers"]["ssh_rerun"] = many
    return data


def command_env(folder: Path) -> dict[str, str]:
    """The environment of a measured command: byte code and compiled templates are
    cached under `folder`, as an installed rulegen finds them from its second run
    on (PYTHONDONTWRITEBYTECODE would compile every module of rulegen on every run,
    but none of the baseline's, whose byte code pip wrote at install time)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(folder / "pycache")
    env["RULEGEN_CACHE_DIR"] = str(folder / "templates")
    return env


# Peak RSS survives exec: a command forked from the benchmark's own (large) process
# would report the benchmark's size. This small process forks it instead, pinned to
# one core, and prints its wall and CPU seconds, peak RSS (KiB) and exit code.
LAUNCHER = """
import os, sys, time
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.sched_setaffinity(0, {int(sys.argv[1])})
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - start
cpu = usage.ru_utime + usage.ru_stime
print(wall, cpu, usage.ru_maxrss, os.waitstatus_to_exitcode(status))
"""


def launched(cmd: list[str]) -> list[str]:
    """cmd run through LAUNCHER, on the first core this process may use."""
    core = min(os.sched_getaffinity(0))
    return [sys.executable, "-c", LAUNCHER, str(core), *cmd]


def write_profile(folder: Path, data: dict) -> Path:
    path = folder / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# --- Aerleon ------------------------------------------------------------------


def aerleon_policy(matrix, subnets: dict, folder: Path) -> tuple[Path, Path]:
    """The raw matrix as an Aerleon policy: per role, iptables INPUT/OUTPUT and GCE
    INGRESS/EGRESS filters, one term per rule; role peers become their subnets.

    Returns (policies folder, definitions folder).
    """
    policies, defs = folder / "policies" / "pol", folder / "def"
    policies.mkdir(parents=True, exist_ok=True)
    defs.mkdir(parents=True, exist_ok=True)
    networks: dict[str, dict] = {}
    services: dict[str, list] = {}
    for role, nets in subnets.items():
        if nets:
            networks[_token(role)] = {"values": [{"address": n} for n in nets]}
    for role in sorted({r.role for r in matrix.rules}):
        terms = {"ingress": [], "egress": []}
        for i, rule in enumerate(r for r in matrix.rules if r.role == role):
            if rule.is_return:
                continue
            if rule.peer.role:
                if not subnets.get(rule.peer.role):
                    continue  # a transparent load balancer has no addresses
                peer = _token(rule.peer.role)
            else:
                peer = f"{_token(rule.peer.name or 'cidrs')}_{i}"
                networks[peer] = {"values": [{"address": c} for c in rule.peer.cidrs]}
            term = {"name": f"t{i}", "action": "accept"}
            term[
                (
                    "source-address"
                    if rule.direction == "ingress"
                    else "destination-address"
                )
            ] = peer
            if rule.protocol != "all":
                term["protocol"] = rule.protocol
                if rule.ports:
                    name = f"P{rule.protocol}{rule.ports[0]}_{rule.ports[1]}"
                    port = (
                        str(rule.ports[0])
                        if rule.ports[0] == rule.ports[1]
                        else f"{rule.ports[0]}-{rule.ports[1]}"
                    )
                    services[name] = [{"port": port, "protocol": rule.protocol}]
                    term["destination-port"] = name
            terms[rule.direction].append(term)
        filters = []
        for direction, chain, gce in (
            ("ingress", "INPUT", "INGRESS"),
            ("egress", "OUTPUT", "EGRESS"),
        ):
            if not terms[direction]:
                continue
            filters.append(
                {
                    "header": {"targets": {"iptables": f"{chain} DROP"}},
                    "terms": terms[direction],
                }
            )
            filters.append(
                {
                    "header": {"targets": {"gce": f"bench {gce}"}},
                    "terms": terms[direction],
                }
            )
        (policies / f"{role.replace('_', '-')}.yaml").write_text(
            yaml.safe_dump({"filters": filters}, sort_keys=False)
        )
    (defs / "networks.yaml").write_text(yaml.safe_dump({"networks": networks}))
    (defs / "services.yaml").write_text(yaml.safe_dump({"services": services}))
    return folder / "policies", defs


def _token(name: str) -> str:
    return name.upper().replace("-", "_")

"""iptables emitter: snapshots, and real loads into throwaway network namespaces."""

from __future__ import annotations

import ipaddress
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import EXAMPLES, ROOT, example, needs_root, profile_from
from generator.emitters import TARGETS, EmitError, emit
from generator import hostfw
from generator.emitters import iptables as ipt
from generator.optimizer import optimize
from generator.planner import plan

# Stateless, with IPv6 peers and a VCS list long enough for an ipset.
STATELESS = """
name: acme-stateless
server_version: "4.2"
cloud: generic
access: vpn
stateful: false
ephemeral_ports: [32768, 60999]
load_balancer:
  transparent: false
network:
  vpc_cidr: 10.20.0.0/16
  subnets:
    kubernetes_nodes: [10.20.0.0/24]
    nomad_clients: [10.20.1.0/24]
    external_vms: [10.20.2.0/24]
    load_balancer: [10.20.3.0/28]
  dns_servers: [10.20.3.53]
peers:
  external: [10.30.0.0/16, "2001:db8:100::/48"]
  internet: [10.20.3.80/32]
  vcs: [192.30.252.0/22, 185.199.108.0/22, 140.82.112.0/20, 143.55.64.0/20,
        20.201.28.151/32, 20.205.243.166/32, 20.87.245.0/32, 4.237.22.38/32,
        20.207.73.82/32, 20.27.177.113/32, "2a0a:a440::/29"]
  ssh_admin: [10.20.3.64/28]
  ssh_rerun: [10.30.0.0/16]
"""

CASES = EXAMPLES + ["stateless"]
TARGET = TARGETS["iptables"]
TOOLS_MISSING = [t for t in ("ip", "iptables-restore", "ipset") if not shutil.which(t)]
needs_tools = pytest.mark.skipif(
    bool(TOOLS_MISSING),
    reason=f"missing {', '.join(TOOLS_MISSING)} (apt-get install iptables ipset iproute2)",
)


def load_case(name: str):
    """The profile and the matrix `rulegen generate` emits (optimized)."""
    prof = profile_from(STATELESS) if name == "stateless" else example(name)
    return prof, optimize(plan(prof))[0]


def generate(name: str) -> tuple[object, object, dict[str, str]]:
    prof, matrix = load_case(name)
    files = emit(matrix, prof, [TARGET])
    return prof, matrix, {k.split("/", 1)[1]: v for k, v in files.items()}


@pytest.fixture(params=CASES)
def case(request) -> str:
    return request.param


def test_snapshots(case, file_regression):
    _, _, files = generate(case)
    for rel, text in sorted(files.items()):
        stem, ext = rel.rsplit(".", 1)
        file_regression.check(text, basename=f"{case}-{stem}", extension=f".{ext}")


def test_output_is_deterministic(case):
    assert generate(case)[2] == generate(case)[2]


def test_stateless_case_covers_sets_ipv6_and_return_rules():
    _, matrix, files = generate("stateless")
    assert not matrix.stateful
    assert "nomad_clients.ipset" in files and "nomad_clients.ip6tables" in files
    host = [
        l
        for l in files["nomad_clients.iptables"].splitlines()
        if l.startswith(("-A RULEGEN-IN ", "-A RULEGEN-OUT "))
    ]
    assert not any("conntrack" in l for l in host)
    assert "--sport" in files["nomad_clients.iptables"]


def test_every_role_gets_an_ip6tables_file(example_name):
    """A dual-stack host with an IPv4 profile is not left open over IPv6."""
    _, matrix, files = generate(example_name)
    for role in matrix.roles():
        text = files[f"{role}.ip6tables"]
        assert "neighbour-solicitation" in text and "packet-too-big" in text
        assert "-A RULEGEN-IN -j DROP" in text and "-A RULEGEN-OUT -j DROP" in text


def test_allowed_traffic_returns_and_only_drop_is_final(example_name):
    _, _, files = generate(example_name)
    for rel, text in files.items():
        if rel.endswith("tables"):
            verdicts = {
                l.rsplit(" -j ", 1)[1] for l in text.splitlines() if " -j " in l
            }
            assert verdicts == {"RETURN", "DROP"}, rel
            # RULEGEN-FWD goes on to RULEGEN-JOBS (-g: its RETURN ends at the hook)
            gotos = {l.split(" -g ")[1] for l in text.splitlines() if " -g " in l}
            assert gotos == ({"RULEGEN-JOBS"} if ":RULEGEN-JOBS " in text else set())


def test_forward_path_per_role():
    """NodePorts are matched by their port before DNAT; Docker hosts use DOCKER-USER."""
    _, _, files = generate("generic-baremetal")
    apply = files["apply.sh"]
    assert 'hooks="INPUT:RULEGEN-IN OUTPUT:RULEGEN-OUT FORWARD:RULEGEN-FWD"' in apply
    assert "DOCKER-USER:RULEGEN-FWD" in apply
    k8s = files["kubernetes_nodes.iptables"]
    assert (
        "-A RULEGEN-FWD -p tcp -m conntrack --ctstate DNAT --ctorigdstport 30000:32767"
        " -s 192.168.1.0/28" in k8s
    )
    # container egress from the pod range obeys the nodes' egress rules
    assert "-A RULEGEN-FWD -p tcp -s 10.244.0.0/16 -d 192.168.1.80/32" in k8s
    assert (
        k8s.split(":RULEGEN-FWD")[1].rstrip().endswith("-A RULEGEN-FWD -j DROP\nCOMMIT")
    )


def test_host_essentials_are_visible_rules():
    prof, _, files = generate("generic-baremetal")
    k8s = files["kubernetes_nodes.iptables"]
    assert "-d 192.168.1.123/32 -m udp --dport 123" in k8s  # NTP from the profile
    assert "--icmp-type echo-request -s 192.168.1.64/28" in k8s
    for kind in ("destination-unreachable", "time-exceeded"):
        assert f"--icmp-type {kind}" in k8s
    assert "[host essentials]" in k8s
    # admin SSH on the load balancer, where it is a host
    assert "-s 192.168.1.64/28 -m tcp --dport 22" in files["load_balancer.iptables"]
    # the stateless case: ICMP errors without conntrack, and NTP replies
    _, _, stateless = generate("stateless")
    text = stateless["nomad_clients.iptables"]
    assert "-A RULEGEN-IN -p icmp -m icmp --icmp-type destination-unreachable" in text
    assert (
        "-s 10.20.3.64/28 -m tcp --dport 32768:60999 ! --syn -m tcp --sport 22"
        not in text
    )
    lb = stateless["load_balancer.iptables"]  # admin SSH replies, without conntrack
    assert "-d 10.20.3.64/28 -m tcp --dport 32768:60999 ! --syn -m tcp --sport 22" in lb


def test_cloud_hosts_reach_their_metadata_and_time_service():
    _, _, files = generate("aws-private-vpn")
    text = files["nomad_clients.iptables"]
    assert "-d 169.254.169.254/32 -m tcp --dport 80" in text
    assert "-d 169.254.169.123/32 -m udp --dport 123" in text
    assert "-d fd00:ec2::254/128" in files["nomad_clients.ip6tables"]
    gcp = generate("gcp")[2]["nomad_clients.iptables"]
    assert "-d 169.254.169.254/32 -m udp --dport 123" in gcp
    off = profile_from(
        STATELESS + "host_firewall: {metadata: false, icmp_echo: false, dhcp: true}\n"
    )
    matrix = optimize(plan(off))[0]
    text = ipt.emit(matrix, off, TARGET)["nomad_clients.iptables"]
    assert "rulegen: host-metadata" not in text and "echo-request" not in text
    # jobs are kept from it whatever the host may do
    assert '-d 169.254.169.254/32 -m comment --comment "rulegen: jobs-metadata"' in text
    assert "-m udp --dport 68 -m udp --sport 67" in text


def test_generate_warns_naming_roles_that_refuse_all_ssh(tmp_path):
    from click.testing import CliRunner

    from generator.cli import main

    locked = STATELESS.replace("ssh_admin: [10.20.3.64/28]", "ssh_admin: []")
    path = tmp_path / "p.yaml"
    path.write_text(locked)
    result = CliRunner().invoke(
        main, ["generate", str(path), "-o", str(tmp_path / "o")]
    )
    assert result.exit_code == 0, result.output
    warning = [l for l in result.output.splitlines() if "refuse all SSH" in l]
    # The nodes take SSH only from each other and the VMs only from the clients: no
    # way in for an operator either.
    assert warning and (
        "load_balancer, kubernetes_nodes, nomad_clients, external_vms will refuse"
        in warning[0]
    )
    ok = CliRunner().invoke(
        main,
        [
            "generate",
            str(ROOT / "profiles/generic-baremetal.yaml"),
            "-o",
            str(tmp_path / "k"),
        ],
    )
    assert "refuse all SSH" not in ok.output


@given(
    st.lists(
        st.tuples(st.integers(1, 65535), st.integers(0, 3)).map(
            lambda t: (t[0], min(65535, t[0] + t[1]))
        ),
        min_size=1,
        max_size=60,
    )
)
def test_multiport_chunks_fit_and_keep_order(port_list):
    chunks = ipt.chunk_ports(port_list)
    assert [p for chunk in chunks for p in chunk] == port_list
    assert all(sum(ipt.port_slots(p) for p in chunk) <= 15 for chunk in chunks)


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=80))
def test_set_names_fit_the_kernel_limit(label):
    for family in (4, 6):
        name = ipt.set_name(label, family)
        assert len(name + ipt.SET_TEMP_SUFFIX) <= 31
        assert name == ipt.set_name(label, family)
    assert ipt.set_name(label, 4) != ipt.set_name(label, 6)


def test_many_ports_split_into_several_multiport_lines():
    prof, matrix = load_case("generic-baremetal")
    base = matrix.for_role("load_balancer", "ingress")[0]
    extra = tuple(
        type(base)(**{**base.__dict__, "ports": (p, p), "flow": f"f{p}"})
        for p in range(1000, 1020)
    )
    wide = type(matrix)(**{**matrix.__dict__, "rules": matrix.rules + extra})
    text = ipt.emit(wide, prof, TARGET)["load_balancer.iptables"]
    lines = [l for l in text.splitlines() if "--dports" in l and "1000" in l]
    assert len(lines) == 2  # 20 ports (plus 80/443) need two multiport lines
    for line in lines:
        assert len(line.split("--dports ")[1].split()[0].split(",")) <= 15


def test_role_peer_without_subnets_is_a_clear_error():
    prof, matrix = load_case("generic-baremetal")
    subnets = {**prof.subnets, "kubernetes_nodes": ()}
    bare = type(prof)(**{**prof.__dict__, "subnets": subnets})
    with pytest.raises(EmitError, match=r"network\.subnets\.kubernetes_nodes.*rule"):
        ipt.emit(matrix, bare, TARGET)


# --- real loads ---------------------------------------------------------------


def run(*args: str, cwd: Path | None = None, check: bool = True):
    return subprocess.run(
        args, cwd=cwd, check=check, capture_output=True, text=True, timeout=30
    )


@pytest.fixture
def netns():
    name = f"rulegen-test-{secrets.token_hex(4)}"
    run("ip", "netns", "add", name)
    try:
        yield name
    finally:
        run("ip", "netns", "delete", name, check=False)


def in_ns(ns: str, *args: str, cwd: Path | None = None, check: bool = True):
    return run("ip", "netns", "exec", ns, *args, cwd=cwd, check=check)


def saved_rules(ns: str, tool: str = "iptables") -> list[str]:
    return [
        l for l in in_ns(ns, f"{tool}-save").stdout.splitlines() if l.startswith("-A ")
    ]


def set_members(ns: str) -> dict[str, set]:
    out: dict[str, set] = {}
    current = None
    members = False
    for line in in_ns(ns, "ipset", "list").stdout.splitlines():
        if line.startswith("Name: "):
            current, members = line[6:], False
            out[current] = set()
        elif line.startswith("Members:"):
            members = True
        elif members and line.strip():
            out[current].add(ipaddress.ip_network(line.split()[0]))
    return out


def strip_save(text: str) -> list[str]:
    """iptables-save output without its comments and counters."""
    return [l.split(" [")[0] for l in text.splitlines() if not l.startswith("#")]


def parse_ports(text: str | None) -> list[tuple[int, int]] | None:
    if text is None:
        return None
    out = []
    for part in text.split(","):
        lo, _, hi = part.partition(":")
        out.append((int(lo), int(hi or lo)))
    return out


def parse_saved(line: str) -> dict:
    tokens = line.split()
    found: dict = {"chain": tokens[1]}
    for i, token in enumerate(tokens):
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        if token in ("-s", "-d"):
            found[token] = ipaddress.ip_network(nxt)
        elif token == "-p":
            found["proto"] = nxt
        elif token in ("--dport", "--dports"):
            found["dports"] = parse_ports(nxt)
        elif token in ("--sport", "--sports"):
            found["sports"] = parse_ports(nxt)
        elif token == "--match-set":
            found["set"] = (nxt, tokens[i + 2])
        elif token == "-j":
            found["target"] = nxt
    return found


def covers(saved: dict, rule, cidr, sets: dict) -> bool:
    """Does one loaded rule accept everything the matrix rule allows for one CIDR?"""
    chain = ipt.CHAINS[rule.direction]
    side, where = ("-s", "src") if rule.direction == "ingress" else ("-d", "dst")
    if saved["chain"] != chain or saved.get("target") != "RETURN":
        return False
    if rule.protocol != "all" and saved.get("proto") != rule.protocol:
        return False
    if rule.protocol == "all" and "proto" in saved:
        return False
    if "set" in saved:
        name, direction = saved["set"]
        if direction != where or cidr not in sets.get(name, ()):
            return False
    elif side in saved and not cidr.subnet_of(saved[side]):
        return False
    elif side not in saved and cidr.prefixlen != 0:
        return False

    def within(ports, allowed):
        if ports is None:
            return allowed is None
        return allowed is not None and any(
            lo <= ports[0] and ports[1] <= hi for lo, hi in allowed
        )

    return within(rule.ports, saved.get("dports")) and within(
        rule.source_ports, saved.get("sports")
    )


def peer_networks(rule, prof) -> list:
    cidrs = prof.subnets[rule.peer.role] if rule.peer.role else rule.peer.cidrs
    return [ipaddress.ip_network(c) for c in cidrs]


@needs_root
@needs_tools
def test_loads_twice_next_to_foreign_chains(case, netns, tmp_path):
    prof, matrix, files = generate(case)
    for rel, text in files.items():
        (tmp_path / rel).write_text(text)
    # What kube-proxy would have put there first: it must survive our loads.
    tools = ["iptables", "ip6tables"]
    for tool in tools:
        in_ns(netns, tool, "-N", "KUBE-SERVICES")
        in_ns(
            netns,
            tool,
            "-A",
            "KUBE-SERVICES",
            "-p",
            "tcp",
            "--dport",
            "9",
            "-j",
            "ACCEPT",
        )
        in_ns(netns, tool, "-A", "INPUT", "-j", "KUBE-SERVICES")
    before = {
        tool: in_ns(netns, f"{tool}-save", "-t", "filter").stdout for tool in tools
    }
    for role in matrix.roles():
        for attempt in (1, 2):
            result = in_ns(
                netns, "sh", "apply.sh", "--yes", role, cwd=tmp_path, check=False
            )
            assert result.returncode == 0, f"{role} load {attempt}: {result.stderr}"
        sets = set_members(netns)
        for tool in tools:
            text = files[f"{role}.{tool}"]
            saved = saved_rules(netns, tool)
            hook = {"ingress": "INPUT", "egress": "OUTPUT"}
            jobs = hostfw.jobs_for(prof, role)
            hook["forward"] = ipt.HOOKS[
                jobs.attach if jobs else hostfw.FORWARD_ATTACH[role]
            ]
            for direction, chain in ipt.CHAINS.items():
                expected = sum(
                    1 for l in text.splitlines() if l.startswith(f"-A {chain} ")
                )
                loaded = [l for l in saved if l.startswith(f"-A {chain} ")]
                assert len(loaded) == expected, (role, tool, chain)
                if direction == "jobs":  # reached from RULEGEN-FWD on Docker hosts
                    assert bool(loaded) == (role in hostfw.JOB_HOSTS), role
                    for bridge in [b + "+" for b in jobs.bridges] if loaded else ():
                        assert f"-A RULEGEN-FWD -i {bridge} -g {chain}" in saved
                    if loaded:
                        assert loaded[-1] == f"-A {chain} -j DROP"
                    continue
                rules = [l for l in saved if l.startswith(f"-A {hook[direction]} ")]
                # first in its hook, exactly once
                assert rules[0] == f"-A {hook[direction]} -j {chain}", (role, tool)
                assert rules.count(rules[0]) == 1
                assert loaded[-1] == f"-A {chain} -j DROP"
            assert "-A KUBE-SERVICES -p tcp -m tcp --dport 9 -j ACCEPT" in saved
            assert "-A INPUT -j KUBE-SERVICES" in saved
            family = 4 if tool == "iptables" else 6
            parsed = [parse_saved(l) for l in saved]
            for rule in matrix.for_role(role):
                for cidr in peer_networks(rule, prof):
                    if cidr.version != family:
                        continue
                    assert any(
                        covers(p, rule, cidr, sets) for p in parsed
                    ), f"{tool} in {role} does not allow {rule.name} for {cidr}"
        for name in sets:
            assert len(name) <= 31
        for path in tmp_path.glob(f"{role}.ipset"):
            for line in path.read_text().splitlines():
                if line.startswith("add "):
                    _, name, cidr = line.split()
                    final = name.removesuffix(ipt.SET_TEMP_SUFFIX)
                    assert ipaddress.ip_network(cidr) in sets[final]
        assert not any(n.endswith(ipt.SET_TEMP_SUFFIX) for n in sets)
        # --remove: the host is as it was before rulegen
        in_ns(netns, "sh", "apply.sh", "--remove", role, cwd=tmp_path)
        for tool in tools:
            after = in_ns(netns, f"{tool}-save", "-t", "filter").stdout
            assert strip_save(after) == strip_save(before[tool]), (role, tool)
        assert not set_members(netns)


@needs_root
@needs_tools
def test_a_broken_file_is_refused_by_the_real_restore(netns, tmp_path):
    """The namespace load is a real check: a jump to a missing chain fails."""
    _, _, files = generate("generic-baremetal")
    broken = files["nomad_clients.iptables"].replace("-j DROP", "-j RULEGEN-MISSING", 1)
    (tmp_path / "broken").write_text(broken)
    result = run(
        "sh",
        "-c",
        f"ip netns exec {netns} iptables-restore --noflush < broken",
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode != 0


def test_ipset_threshold_follows_the_profile_quota():
    from dataclasses import replace

    from generator.emitters import TARGETS
    from generator.emitters.iptables import emit
    from generator.pipeline import shipped_matrix

    from conftest import example

    profile = example("aws-public-ip")  # four VCS ranges
    matrix = shipped_matrix(profile)
    target = TARGETS["iptables"]
    assert not any(p.endswith(".ipset") for p in emit(matrix, profile, target))
    lowered = replace(profile, quotas={"iptables": {"ipset_threshold": 3}})
    files = emit(matrix, lowered, target)
    assert "external_vms.ipset" in files
    assert "-m set --match-set" in files["external_vms.iptables"]


def workload():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "workload", ROOT / "benchmarks" / "workload.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sets_are_sized_from_their_members():
    small = ipt.IpSet("rg-x", 4, ("10.0.0.0/8",) * 10)
    big = ipt.IpSet("rg-x", 4, ("10.0.0.0/8",) * 70_000)
    assert (small.hashsize, small.maxelem) == (64, 65536)
    assert big.maxelem >= 2 * 70_000 and big.hashsize >= 70_000 // 4


def test_a_set_larger_than_the_kernel_takes_is_refused_at_generate_time(monkeypatch):
    prof, matrix = load_case("stateless")
    monkeypatch.setattr(hostfw, "SET_MAX", 5)
    with pytest.raises(EmitError, match=r"10 addresses in vcs: more than a kernel set"):
        ipt.emit(matrix, prof, TARGET)


@needs_root
@needs_tools
def test_a_70000_address_profile_generates_and_loads(netns, tmp_path):
    import yaml

    data = workload().profile("generic", 70_000)
    prof = profile_from(yaml.safe_dump(data))
    matrix = optimize(plan(prof))[0]
    files = ipt.emit(matrix, prof, TARGET)
    for rel, text in files.items():
        (tmp_path / rel).write_text(text)
    role = "nomad_clients"  # ssh_rerun: the 70,000 addresses
    result = in_ns(netns, "sh", "apply.sh", "--yes", role, cwd=tmp_path, check=False)
    assert result.returncode == 0, result.stderr
    listed = in_ns(netns, "ipset", "list", "-t").stdout
    sizes = {
        block.split("\n")[0]: block for block in listed.split("Name: ") if block.strip()
    }
    added = files[f"{role}.ipset"].count("\nadd rg-ssh-rerun-new ")
    assert (
        added > 65536
    )  # more than ipset's default maxelem (the optimizer merges a few)
    assert f"Number of entries: {added}\n" in sizes["rg-ssh-rerun"], listed

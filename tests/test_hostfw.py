"""The host firewall model: what every layout (iptables, nftables) renders."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import ROOT, example
from generator import hostfw
from generator.addresses import version
from generator.pipeline import shipped_matrix


def build(name: str, role: str):
    prof = example(name)
    matrix = shipped_matrix(prof)
    rules = list(matrix.for_role(role))
    fw = hostfw.build(
        role,
        rules,
        prof.subnets,
        matrix.stateful,
        essentials=hostfw.essentials_for(prof, role),
        jobs=hostfw.jobs_for(prof, role),
    )
    return matrix, rules, fw


def test_every_rule_is_in_one_entry_of_its_direction(example_name):
    prof = example(example_name)
    for role in shipped_matrix(prof).roles():
        _, rules, fw = build(example_name, role)
        for rule in rules:
            if rule.is_return:
                continue
            chain = fw.families[4].chains[rule.direction]
            holding = [e for e in chain.entries if any(rule.name in n for n in e.notes)]
            assert len(holding) == 1, rule.name
            flow = rule.flow.split("+")[0]
            assert ("site " + flow if rule.site else flow) in holding[0].flows


def test_chains_end_in_drop_and_start_with_loopback(example_name):
    prof = example(example_name)
    for role in shipped_matrix(prof).roles():
        _, _, fw = build(example_name, role)
        for family in (4, 6):
            chains = fw.families[family].chains
            assert [chains[d].entries[0].iface for d in ("ingress", "egress")] == [
                "lo",
                "lo",
            ]
            assert chains["forward"].entries[0].ctstate == ("ESTABLISHED", "RELATED")
            assert ("jobs" in chains) == (role in hostfw.JOB_HOSTS)
            for name, chain in chains.items():
                assert chain.entries[-1] == hostfw.Entry(
                    "drop", notes=("Everything else",)
                )
                if name in ("ingress", "egress"):
                    assert all(e.action == "allow" for e in chain.entries[:-1])
                # a drop before the end says what it keeps out, and why
                for entry in chain.entries[:-1]:
                    if entry.action == "drop":
                        assert entry.flows and entry.notes, (role, name, entry)


def test_forward_chain_follows_the_roles_rules():
    """Through DNAT by the port before DNAT; container egress like the host's."""
    prof = example("generic-baremetal")
    matrix, rules, fw = build("generic-baremetal", "kubernetes_nodes")
    forward = fw.families[4].chains["forward"]
    assert forward.attach == "forward"
    nodeports = [e for e in forward.entries if "nodeports" in e.flows]
    assert any(e.original and e.ctstate == ("DNAT",) for e in nodeports)
    assert all(e.src == ("192.168.1.0/28",) for e in nodeports)
    egress = [e for e in forward.entries if "internet" in e.flows]
    assert egress and all(e.src == tuple(prof.pod_cidrs) for e in egress)
    docker = build("generic-baremetal", "nomad_clients")[2]
    assert docker.families[4].chains["forward"].attach == "docker-user"


@pytest.mark.parametrize("role", ["kubernetes_nodes", "nomad_clients", "external_vms"])
def test_what_came_through_dnat_meets_only_the_ingress_rules(example_name, role):
    """A published port mapped to a container's 80 or 443 is not let in by the
    containers' own egress rules: after the DNAT entries, DNAT'd traffic drops."""
    _, rules, fw = build(example_name, role)
    prof = example(example_name)
    for fr in fw.families.values():
        entries = fr.chains["forward"].entries
        cut = next(i for i, e in enumerate(entries) if e.action == "drop" and e.ctstate)
        assert entries[cut].ctstate == ("DNAT",) and entries[cut].flows == (
            "host-dnat",
        )
        before = [e for e in entries[:cut] if e.action == "allow" and e.flows]
        # above the cut: replies, the pods essential, and ingress rules by the
        # original port; no egress rule (they match ports after DNAT)
        egress_flows = {
            f for r in rules if r.direction == "egress" for f in r.flow.split("+")
        }
        ingress_flows = {
            f for r in rules if r.direction == "ingress" for f in r.flow.split("+")
        }
        for entry in before:
            if entry.flows == ("host-pods",):
                continue
            assert entry.original and entry.ctstate == ("DNAT",), entry
            assert set(entry.flows) <= ingress_flows | {
                "site " + f for f in ingress_flows
            }
        # and below it, on job hosts, only what leaves the runtime's bridges goes on
        if role in hostfw.JOB_HOSTS:
            rest = entries[cut + 1 : -1]
            bridges = hostfw.jobs_for(prof, role).bridges
            podman = role == "nomad_clients" and prof.container_runtime == "podman"
            assert bridges == (hostfw.PODMAN_BRIDGES if podman else hostfw.JOB_BRIDGES)
            assert {e.bridge for e in rest} == set(bridges)
            assert all(e.action == "goto" and e.goto == "jobs" for e in rest)
        assert egress_flows  # the role has egress rules to keep below the cut


def jobs_chain(name: str, role: str = "nomad_clients", family: int = 4, text=None):
    from generator.profile import parse_profile

    if text is None:
        prof = example(name)
    else:
        prof = parse_profile(text)
    matrix = shipped_matrix(prof)
    rules = list(matrix.for_role(role))
    fw = hostfw.build(
        role,
        rules,
        prof.subnets,
        matrix.stateful,
        essentials=hostfw.essentials_for(prof, role),
        jobs=hostfw.jobs_for(prof, role),
    )
    return prof, rules, fw.families[family].chains["jobs"].entries


def first(entries, flow: str) -> int:
    return next(i for i, e in enumerate(entries) if flow in e.flows)


@pytest.mark.parametrize("role", hostfw.JOB_HOSTS)
def test_jobs_never_reach_the_metadata_service_or_the_host_agents_flows(
    example_name, role
):
    prof, rules, entries = jobs_chain(example_name, role)
    meta = first(entries, "jobs-metadata")
    assert entries[meta].dst == ("169.254.169.254/32",)
    # above it: drops, and jobs' flows to addresses they name (never "anywhere")
    for entry in entries[:meta]:
        assert entry.action == "drop" or entry.dst or entry.dst_set, entry
        assert not any(c.endswith("/0") for c in entry.dst if entry.action == "allow")
    assert entries[first(entries, "jobs-link-local")].dst == ("169.254.0.0/16",)
    # The Nomad client's RPC (and 3.x/4.0-4.2's build-agent flows) are the host's.
    for entry in entries:
        if entry.flows == ("jobs-host-only",):
            assert entry.action == "drop" and (entry.dst or entry.dst_set)
            assert entry.notes[-1].startswith("Not for jobs: the host's own agent")
            jobs = hostfw.jobs_for(prof, role)
            named = {r.name for r in rules if jobs.kind(r) == "host"}
            assert {n.split(":")[0] for n in entry.notes[:-1]} <= named
    # The client's RPC: to the circleci-proxy balancer, or to Nomad servers of their own.
    host_only = [
        r
        for r in rules
        if r.flow in ("nomad-rpc-lb", "nomad-servers-rpc") and r.direction == "egress"
    ]
    if role == "nomad_clients":
        assert host_only and any(e.flows == ("jobs-host-only",) for e in entries)
    # What jobs may reach is the role's egress, nothing beyond it
    egress = {f for r in rules if r.direction == "egress" for f in r.flow.split("+")}
    for entry in entries:
        if entry.action == "allow":
            assert set(entry.flows) <= egress | {"site " + f for f in egress}


def test_the_install_is_kept_from_jobs_unless_a_job_flow_names_it():
    prof, _, entries = jobs_chain("aws-private-vpn")
    internal = first(entries, "jobs-internal")
    dropped = {e for x in entries if "jobs-internal" in x.flows for e in x.dst}
    # the balancer is kept from jobs by its internal ports, not by its subnet: its
    # UI and API (80, 443) are the jobs' too
    assert dropped == {
        c for r, nets in prof.subnets.items() if r != "load_balancer" for c in nets
    }
    host = [e for e in entries if e.flows == ("jobs-host-only",)]
    assert host and host[0].dst == tuple(prof.subnets["load_balancer"])
    # named by a job's flow: above the drop (the VPC's DNS in the nodes' subnet; the VMs)
    for flow in ("dns", "nomad-vm-ssh"):
        assert first(entries, flow) < internal
    # anywhere: below it, so the internet rule cannot take a job into the install
    assert first(entries, "internet") > internal
    assert first(entries, "internet") > first(entries, "jobs-link-local")
    # 4.3+: the balancer's internal port is the Nomad RPC alone, and it is dropped
    _, _, newer = jobs_chain("aws-private-vpn-4.10")
    (host,) = [e for e in newer if e.flows == ("jobs-host-only",)]
    assert host.dports == ((4647, 4647),) and host.action == "drop"


def test_gcp_jobs_resolve_names_at_the_metadata_server_but_get_no_token():
    """GCP's DNS server is the metadata server: port 53 only, named by the DNS flow."""
    _, _, entries = jobs_chain("gcp")
    dns = [e for e in entries if "dns" in e.flows]
    assert dns and all(e.dst == ("169.254.169.254/32",) for e in dns)
    assert all(e.dports == ((53, 53),) for e in dns)
    assert max(entries.index(e) for e in dns) < first(entries, "jobs-metadata")


def test_internet_facing_balancer_ports_are_dropped_for_jobs_wherever_it_is():
    """Its public address is unknown (0.0.0.0/0): the host-only ports go, for jobs."""
    _, rules, entries = jobs_chain("aws-public-ip")
    lb = [r for r in rules if r.peer.name == "load_balancer_public_ips"]
    assert lb and all(c == "0.0.0.0/0" for r in lb for c in r.peer.cidrs)
    (host,) = [e for e in entries if e.flows == ("jobs-host-only",)]
    assert host.dst == ("0.0.0.0/0",) and entries.index(host) == 0


IPV6_AWS = """
name: dual
server_version: "4.8"
cloud: aws
access: vpn
network:
  vpc_cidr: 10.0.0.0/16
  subnets:
    kubernetes_nodes: [10.0.0.0/20, "2600:1f18:1::/64"]
    nomad_clients: [10.0.16.0/20, "2600:1f18:2::/64"]
    external_vms: [10.0.32.0/20]
    load_balancer: [10.0.48.0/24]
  dns_servers: [10.0.0.2]
peers:
  internet: [0.0.0.0/0, "::/0"]
  vcs: [192.0.2.0/24]
"""


def test_jobs_policy_switches_and_blocked_cidrs():
    base = IPV6_AWS
    _, _, v6 = jobs_chain("", family=6, text=base)
    meta = first(v6, "jobs-metadata")
    assert v6[meta].dst == ("fd00:ec2::254/128",)
    assert v6[first(v6, "jobs-link-local")].dst == ("fe80::/10",)
    assert set(v6[first(v6, "jobs-internal")].dst) == {
        "2600:1f18:1::/64",
        "2600:1f18:2::/64",
    }
    assert first(v6, "internet") > first(v6, "jobs-internal")
    wide = base + (
        "host_firewall:\n  jobs:\n    blocked_cidrs: [172.16.0.0/12, 10.99.0.0/16]\n"
    )
    _, _, entries = jobs_chain("", text=wide)
    blocked = entries[first(entries, "jobs-blocked")]
    assert blocked.action == "drop" and blocked.dst == ("172.16.0.0/12", "10.99.0.0/16")
    assert first(entries, "internet") > first(entries, "jobs-blocked")
    assert "host_firewall.jobs.blocked_cidrs" in blocked.notes[0]
    opened = base + "host_firewall:\n  jobs: {metadata: true, internal: true}\n"
    _, _, entries = jobs_chain("", text=opened)
    flows = {f for e in entries for f in e.flows}
    assert not flows & {"jobs-metadata", "jobs-link-local", "jobs-internal"}
    assert "jobs-host-only" in flows  # the Nomad RPC stays the host's


def test_site_flows_say_whether_jobs_make_them():
    """jobs: true passes the blocked ranges, false keeps jobs off it, unset follows."""
    prof, _, entries = jobs_chain("aws-site-flows")
    blocked = first(entries, "jobs-blocked")
    assert entries[blocked].dst == ("10.20.0.0/24",)
    assert first(entries, "site package-mirror") < blocked  # jobs: true
    host = [e for e in entries if e.flows == ("jobs-host-only",)]
    assert [(e.dst, e.dports) for e in host] == [
        (("10.0.48.0/24",), ((4647, 4647),)),  # the Nomad RPC
        (("10.20.0.20/32",), ((24224, 24224),)),  # log-shipping: jobs: false
    ]
    text = (ROOT / "profiles" / "aws-site-flows.yaml").read_text()
    unset = text.replace("    jobs: false ", "    # ").replace(
        "    jobs: true ", "    # "
    )
    _, _, entries = jobs_chain("", text=unset)
    blocked = first(entries, "jobs-blocked")
    # both follow the role's egress now, after the drops: the blocked range wins
    assert first(entries, "site package-mirror") > blocked
    assert first(entries, "site log-shipping") > blocked
    assert len([e for e in entries if e.flows == ("jobs-host-only",)]) == 1


def test_blocked_cidrs_are_read_like_other_addresses_and_metadata_warns():
    from generator.profile import ProfileError, parse_profile

    text = (ROOT / "profiles" / "aws-site-flows.yaml").read_text()
    bad = text.replace("[10.20.0.0/24]", "[10.20.0.1/24]")
    with pytest.raises(ProfileError) as error:
        parse_profile(bad, "p.yaml")
    message = str(error.value)
    assert (
        "host_firewall.jobs.blocked_cidrs[0]: '10.20.0.1/24' has host bits" in message
    )
    assert "p.yaml:" in message
    opened = text.replace("  jobs:\n", "  jobs:\n    metadata: true\n", 1)
    prof = parse_profile(opened, "p.yaml")
    assert any("host_firewall.jobs.metadata" in w for w in prof.warnings)
    assert not any("jobs.metadata" in w for w in parse_profile(text).warnings)


def test_a_site_flow_says_jobs_with_a_boolean():
    from generator.profile import ProfileError, parse_profile

    text = (ROOT / "profiles" / "aws-site-flows.yaml").read_text()
    with pytest.raises(ProfileError) as error:
        parse_profile(text.replace("    jobs: true ", "    jobs: sometimes "), "p.yaml")
    assert "site_flows[3].jobs" in str(error.value) and "p.yaml:" in str(error.value)


def test_stateless_tcp_return_rules_take_replies_only():
    from conftest import profile_from
    from test_emit_iptables import STATELESS

    prof = profile_from(STATELESS)
    matrix = shipped_matrix(prof)
    for role in matrix.roles():
        fw = hostfw.build(
            role,
            list(matrix.for_role(role)),
            prof.subnets,
            matrix.stateful,
            essentials=hostfw.essentials_for(prof, role),
        )
        returns = [
            e
            for fr in fw.families.values()
            for d in ("ingress", "egress")
            for e in fr.chains[d].entries
            if e.sports and "host-dhcp" not in e.flows
        ]
        assert returns, role
        for entry in returns:
            assert entry.reply == (entry.protocol == "tcp"), entry
            if entry.protocol == "udp":
                assert hostfw.UDP_NOTE in entry.notes


def test_every_essential_names_its_reference():
    _, _, fw = build("generic-baremetal", "kubernetes_nodes")
    for fr in fw.families.values():
        for chain in fr.chains.values():
            for entry in chain.entries:
                if any(f.startswith("host-") for f in entry.flows):
                    assert entry.notes == () or "[host essentials]" in entry.notes[0]


def test_lockout_names_the_roles_without_ssh():
    from generator.profile import parse_profile

    text = (ROOT / "profiles" / "generic-baremetal.yaml").read_text()
    locked = parse_profile(
        text.replace("ssh_admin: [192.168.1.64/28]", "ssh_admin: []")
    )
    roles = hostfw.lockout_roles(shipped_matrix(locked), locked)
    # Nodes take SSH only from nodes, VMs only from Nomad clients: no way in for a person.
    assert roles == [
        "load_balancer",
        "kubernetes_nodes",
        "nomad_clients",
        "external_vms",
    ]
    assert "load_balancer, kubernetes_nodes, nomad_clients, external_vms" in (
        hostfw.lockout_warning(shipped_matrix(locked), locked)[0]
    )
    prof = example("generic-baremetal")
    assert hostfw.lockout_roles(shipped_matrix(prof), prof) == []


@pytest.mark.parametrize(
    "change, message",
    [
        (
            "pod_cidrs: [10.244.0.1/16]",
            "network.pod_cidrs[0]: '10.244.0.1/16' has host bits set",
        ),
        (
            "pod_cidrs: [192.168.10.0/25]",
            "network.pod_cidrs[0]: 192.168.10.0/25 overlaps the kubernetes_nodes subnets",
        ),
        ("ntp_servers: [ntp.example]", "host_firewall.ntp_servers[0]: 'ntp.example'"),
    ],
)
def test_host_firewall_keys_are_validated_like_other_addresses(change, message):
    from generator.profile import ProfileError, parse_profile

    text = (ROOT / "profiles" / "generic-baremetal.yaml").read_text()
    key = change.split(":")[0]
    old = next(l for l in text.splitlines() if l.strip().startswith(key + ":"))
    bad = text.replace(old, old.split(key)[0] + change)
    with pytest.raises(ProfileError) as error:
        parse_profile(bad, "p.yaml")
    assert message in str(error.value)
    assert "p.yaml:" in str(error.value)


_NETWORKS = st.one_of(
    st.ip_addresses(v=4).flatmap(
        lambda a: st.integers(0, 32).map(
            lambda n: str(ipaddress.ip_network(f"{a}/{n}", strict=False))
        )
    ),
    st.ip_addresses(v=6).flatmap(
        lambda a: st.integers(0, 128).map(
            lambda n: str(ipaddress.ip_network(f"{a}/{n}", strict=False))
        )
    ),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_NETWORKS, max_size=8))
def test_a_family_of_checked_blocks_is_what_version_says(cidrs):
    for family in (4, 6):
        expected = [c for c in cidrs if version(c) == family]
        assert hostfw.of_family(cidrs, family) == expected

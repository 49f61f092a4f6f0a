"""The host firewall model: what every layout (iptables, nftables) renders."""

from __future__ import annotations

import pytest

from conftest import ROOT, example
from generator import hostfw
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
            for chain in chains.values():
                assert chain.entries[-1] == hostfw.Entry(
                    "drop", notes=("Everything else",)
                )
                assert all(e.action == "allow" for e in chain.entries[:-1])


def test_a_role_peer_without_subnets_is_refused():
    prof = example("generic-baremetal")
    matrix = shipped_matrix(prof)
    rules = [r for r in matrix.for_role("nomad_clients") if r.peer.role]
    with pytest.raises(hostfw.HostFirewallError, match="network.subnets"):
        hostfw.build("nomad_clients", rules, {}, True, [4])


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

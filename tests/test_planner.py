"""Planner switches: each one changes exactly what the page says it changes."""

from __future__ import annotations

from dataclasses import replace

import pytest

from generator.matrix import ROLES
from generator.planner import plan

from conftest import EXAMPLES, example, example_matrix, profile_from
from test_catalog import FULL, facts


def base(**changes):
    text = FULL.format(version=changes.pop("version", "4.2"), obsolete="false")
    return replace(profile_from(text), **changes)


def test_both_ends_of_every_role_flow(example_name):
    matrix = example_matrix(example_name)
    for rule in matrix.rules:
        if rule.peer.role is None:
            continue
        other = "egress" if rule.direction == "ingress" else "ingress"
        mirror = [
            r
            for r in matrix.for_role(rule.peer.role, other)
            if r.peer.role == rule.role
            and r.protocol == rule.protocol
            and r.ports == rule.ports
            and r.source_ports == rule.source_ports
        ]
        assert len(mirror) == 1, f"{rule.name} has no other end"


def test_isolated_roles_get_no_rule_to_themselves(example_name):
    for rule in example_matrix(example_name).rules:
        if rule.role in ("nomad_clients", "external_vms"):
            assert rule.peer.role != rule.role


def test_transparent_lb_moves_ingress_to_nodes_and_drops_nodeports():
    opaque, clear = plan(base()), plan(base(transparent_lb=True))
    assert not clear.for_role("load_balancer")
    assert not any(r.ports == (30000, 32767) for r in clear.rules)
    lb_in = {
        (r.protocol, r.ports, r.peer)
        for r in opaque.for_role("load_balancer", "ingress")
    }
    k8s_in = {
        (r.protocol, r.ports, r.peer)
        for r in clear.for_role("kubernetes_nodes", "ingress")
    }
    assert lb_in <= k8s_in
    moved = [
        r
        for r in clear.for_role("kubernetes_nodes", "ingress")
        if r.ports == (443, 443)
    ]
    assert "transparent load balancer" in moved[0].reference
    # Nomad clients now reach the server through the nodes themselves.
    nomad_out = {
        (r.ports, r.peer.role) for r in clear.for_role("nomad_clients", "egress")
    }
    assert ((4647, 4647), "kubernetes_nodes") in nomad_out
    assert not any(r.peer.role == "load_balancer" for r in clear.rules)


def test_assign_public_ip_swaps_vm_sources():
    profile = base(
        assign_public_ip=True,
        nat_gateway_ips=("198.51.100.10/32",),
        peers={**base().peers, "nomad_client_public_ips": ("203.0.113.7/32",)},
    )
    matrix = plan(profile)
    vm_in = {
        (r.ports, r.peer.name, r.peer.cidrs)
        for r in matrix.for_role("external_vms", "ingress")
        if r.ports in ((22, 22), (2376, 2376)) and r.peer.name != "ssh_admin"
    }
    assert vm_in == {
        ((22, 22), "nat_gateway", ("198.51.100.10/32",)),
        ((2376, 2376), "nat_gateway", ("198.51.100.10/32",)),
        ((22, 22), "nomad_client_public_ips", ("203.0.113.7/32",)),
        ((2376, 2376), "nomad_client_public_ips", ("203.0.113.7/32",)),
    }
    # The other ends leave for the VMs' public addresses, not their subnet.
    for role in ("kubernetes_nodes", "nomad_clients"):
        to_vm = [
            r
            for r in matrix.for_role(role, "egress")
            if r.ports in ((22, 22), (2376, 2376)) and r.peer.name == "vm_public_ips"
        ]
        assert to_vm and all(r.peer.cidrs == ("0.0.0.0/0",) for r in to_vm)
    assert not any(r.peer.role == "external_vms" for r in matrix.rules)


def public_ip_profile(version: str, nat: str):
    text = FULL.format(version=version, obsolete="false").replace(
        "cloud: aws", "cloud: aws\nvm_service: {assign_public_ip: true}"
    )
    if nat:
        text = text.replace(
            "  dns_servers:", f"  nat_gateway_ips: [{nat}]\n  dns_servers:"
        )
    return profile_from(text)


def vm_sources(profile, port: int) -> dict:
    return {
        r.peer.name: (r.peer.cidrs, r.via)
        for r in plan(profile).for_role("external_vms", "ingress")
        if r.ports == (port, port) and r.peer.name != "ssh_admin"
    }


def test_assign_public_ip_behind_nat_takes_22_and_2376_from_the_nat_gateways():
    """Nomad clients without public IPs leave through the NAT gateways: the VMs see
    those addresses, never 0.0.0.0/0, and the rule says which hop decided it."""
    profile = public_ip_profile("4.2", "198.51.100.10")
    for port in (22, 2376):
        found = vm_sources(profile, port)
        assert set(found) == {"nat_gateway"}, found
        cidrs, via = found["nat_gateway"]
        assert cidrs == ("198.51.100.10/32",)
        assert via.startswith("from the NAT gateways (198.51.100.10/32) because")
        assert "the Nomad clients have no public IPs" in via


def test_assign_public_ip_without_client_ips_or_nat_opens_to_anywhere():
    # 4.3+: only 22 from the Nomad clients is left, and no NAT is required.
    profile = public_ip_profile("4.8", "")
    assert any("nomad_client_public_ips" in w for w in profile.warnings)
    cidrs, via = vm_sources(profile, 22)["nomad_client_public_ips"]
    assert cidrs == ("0.0.0.0/0",) and "not known in advance" in via


def test_stateless_adds_a_return_rule_for_every_flow():
    stateful, stateless = plan(base()), plan(base(stateful=False))
    forward = [r for r in stateless.rules if not r.is_return]
    returns = [r for r in stateless.rules if r.is_return]
    assert facts(stateful) == {
        (r.role, r.direction, r.protocol, r.ports, r.peer.role or r.peer.name)
        for r in forward
    }
    assert len(returns) == len([r for r in forward if r.protocol != "all"])
    for rule in forward:
        if rule.protocol == "all":
            continue
        back = [
            r
            for r in returns
            if r.role == rule.role
            and r.direction != rule.direction
            and r.source_ports == rule.ports
            and r.peer == rule.peer
            and r.protocol == rule.protocol
        ]
        assert len(back) == 1 and back[0].ports == (1024, 65535)


def test_no_ssh_admin_means_no_ssh_ingress():
    profile = base(peers={**base().peers, "ssh_admin": ()})
    assert not [r for r in plan(profile).rules if r.peer.name == "ssh_admin"]
    assert len([r for r in plan(base()).rules if r.peer.name == "ssh_admin"]) == 3


def test_peer_lists_are_used_as_given():
    matrix = plan(base())
    vcs = {r.peer.cidrs for r in matrix.rules if r.peer.name == "vcs"}
    assert vcs == {("192.0.2.0/24",)}
    dns = {r.peer.cidrs for r in matrix.rules if r.peer.name == "dns"}
    assert dns == {("10.0.0.2/32",)}


@pytest.mark.parametrize("name", EXAMPLES)
def test_plan_is_deterministic_and_sorted(name):
    first, second = example_matrix(name), example_matrix(name)
    assert first == second
    keys = [r.sort_key() for r in first.rules]
    assert keys == sorted(keys)
    assert len({r.name for r in first.rules}) == len(first.rules)
    assert [r.role for r in first.rules] == sorted(
        (r.role for r in first.rules), key=ROLES.index
    )


def test_matrix_round_trips_through_json(example_name):
    from generator.matrix import Matrix

    matrix = example_matrix(example_name)
    assert Matrix.from_dict(matrix.to_dict()) == matrix


def test_empty_peer_list_gives_no_rule_and_a_note():
    profile = base(peers={**base().peers, "ssh_rerun": (), "internet": ()})
    matrix = plan(profile)
    assert not [r for r in matrix.rules if r.peer.role is None and not r.peer.cidrs]
    assert not [
        r for r in matrix.rules if r.flow in ("nomad-rerun-ssh", "vm-rerun-ssh")
    ]
    assert "nomad-rerun-ssh: no rule, the ssh_rerun peer list is empty" in matrix.notes
    assert "internet: no rule, the internet peer list is empty" in matrix.notes

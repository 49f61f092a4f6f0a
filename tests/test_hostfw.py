"""The host firewall model: what every layout (iptables, nftables) renders."""

from __future__ import annotations

import pytest

from conftest import example
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
            assert rule.flow.split("+")[0] in holding[0].flows


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

"""The semantic diff: upgrade facts from the page, and properties against a brute-force oracle."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest
from conftest import ROOT, example, example_matrix, profile_from
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from generator.diff import compare
from generator.matrix import DIRECTIONS, ROLES, Matrix, Peer, Rule
from generator.planner import plan

# --- the page's upgrade facts -------------------------------------------------

LB, K8S, NOMAD, VM = (
    "load_balancer",
    "kubernetes_nodes",
    "nomad_clients",
    "external_vms",
)


def flows(diff, kind=None) -> set[tuple]:
    """(role, direction, protocol, port, peer role) of each changed piece toward a role."""
    out = set()
    for change in diff.changes:
        if kind and change.kind != kind:
            continue
        for piece in change.traffic:
            assert piece.ports is not None and piece.ports[0] == piece.ports[1]
            out.add(
                (
                    change.role,
                    change.direction,
                    piece.protocol,
                    piece.ports[0],
                    piece.peer.role,
                )
            )
    return out


def both_ends(source: str, destination: str, port: int) -> set[tuple]:
    return {
        (source, "egress", "tcp", port, destination),
        (destination, "ingress", "tcp", port, source),
    }


# What the 4.3+ page's egress tables drop (server-versions.md, "4.3 - 4.10").
REMOVED_IN_4_3 = (
    both_ends(K8S, VM, 2376)  # row 14, and row 26 of the VM security group
    | both_ends(NOMAD, VM, 2376)  # row 19, and row 27
    | both_ends(NOMAD, LB, 3000)  # row 20 (row 3 is stale)
    | both_ends(NOMAD, LB, 8585)  # row 22 (row 5 is stale)
    | both_ends(K8S, VM, 22)  # row 24: the vm-service pod's SSH, gone with it
)
# Row 18 and row 25 (Nomad clients -> VMs on 22) stay: the page prints both ends (its
# Nomad clients' egress table keeps 22 to the VMs); remote Docker jobs still use it.
# From 3.x, the VMs' re-run port changes too (64535-65535 -> 54782).
RERUN_3_TO_4 = ("external_vms", "ingress", "ssh_rerun")


@pytest.mark.parametrize(
    "old, new",
    [
        ("aws-private-vpn", "aws-private-vpn-4.10"),
        ("aws-private-vpn-3", "aws-private-vpn-4.10"),
    ],
)
def test_4_3_removals_are_reported_and_breaking(old, new):
    before = example_matrix(old)
    diff = compare(before, example_matrix(new))
    rerun = [c for c in diff.changes if c.flows == ["vm-rerun-ssh"]]
    assert len(rerun) == (2 if old.endswith("-3") else 0)
    diff.changes = [c for c in diff.changes if c not in rerun]
    assert flows(diff) == REMOVED_IN_4_3
    assert all(c.kind == "removed" and c.breaking for c in diff.changes)
    for change in diff.changes:
        # Each removal says why it existed, from the rules of the old side.
        why = {(r.purpose, r.reference) for r in before.rules}
        assert change.purposes and change.references
        assert {(p, r) for p in change.purposes for r in change.references} <= why


def test_version_override_gives_the_same_removals():
    profile = example("aws-private-vpn")
    diff = compare(plan(profile), plan(profile.with_version("4.3")))
    assert flows(diff) == REMOVED_IN_4_3
    assert len(diff.breaking) == len(diff.changes)
    # The reasons come with the diff: the new page's egress tables drop these rows.
    assert any("egress tables drop it" in note for note in diff.notes_added)
    assert all("egress tables drop it (" in c.expected for c in diff.changes)


def test_3_to_4_changes_only_the_vms_re_run_port():
    old, new = example_matrix("aws-private-vpn-3"), example_matrix("aws-private-vpn")
    diff = compare(old, new)
    # The 3.x page opens the Nomad clients' range on the VMs; 54782 came with 4.0.
    assert [
        (c.role, c.direction, c.kind, [(p.ports, p.peer.name) for p in c.traffic])
        for c in diff.changes
    ] == [
        (VM, "ingress", "removed", [((64535, 65535), "ssh_rerun")]),
        (VM, "ingress", "added", [((54782, 54782), "ssh_rerun")]),
    ]
    assert [c.breaking for c in diff.changes] == [True, False]
    assert all(c.flows == ["vm-rerun-ssh"] and not c.expected for c in diff.changes)
    assert "3.x" in diff.changes[0].references[0]
    assert "4.0-4.2" in diff.changes[1].references[0]
    # Four load balancers became one proxy: the wording changed, not the traffic.
    lb_rewordings = [
        r for r in diff.reworded if r.old.role == LB and r.old.purpose != r.new.purpose
    ]
    assert {r.old.flow for r in lb_rewordings} >= {
        "ui-http",
        "ui-https",
        "vm-service",
        "nomad-rpc-lb",
        "output-processor",
    }
    assert any("load balancer" in r.old.purpose for r in lb_rewordings)
    # NOMAD -> VM 22 is new on the 4.0 page, but both ends were already planned on 3.x.
    nomad_vm_22 = (NOMAD, "egress", "tcp", (22, 22), Peer(role=VM))
    for matrix in (old, new):
        assert any(
            (r.role, r.direction, r.protocol, r.ports, r.peer) == nomad_vm_22
            for r in matrix.rules
        )


def test_obsolete_rows_kept_on_request_mean_no_change():
    text = (ROOT / "profiles" / "aws-private-vpn.yaml").read_text()
    kept = profile_from(text.replace('"4.2"', '"4.3"') + "include_obsolete: true\n")
    diff = compare(example_matrix("aws-private-vpn"), plan(kept))
    assert not diff.changes


def _peers_edit(old_cidr: str, new_cidr: str):
    text = (ROOT / "profiles" / "aws-private-vpn.yaml").read_text()
    assert f"external: [{old_cidr}]" in text
    edited = profile_from(
        text.replace(f"external: [{old_cidr}]", f"external: [{new_cidr}]")
    )
    return example_matrix("aws-private-vpn"), plan(edited)


def test_opening_the_ui_to_everyone_is_widened_not_breaking():
    old, new = _peers_edit("172.16.0.0/12", "0.0.0.0/0")
    diff = compare(old, new)
    assert {c.kind for c in diff.changes} == {"widened"}
    assert not diff.breaking
    assert {p.ports for c in diff.changes for p in c.traffic} == {(80, 80), (443, 443)}
    added = {
        ipaddress.ip_network(cidr)
        for c in diff.changes
        for p in c.traffic
        for cidr in p.peer.cidrs
    }
    # Exactly the addresses that were not there before, none of the old ones.
    old_net = ipaddress.ip_network("172.16.0.0/12")
    assert not any(net.overlaps(old_net) for net in added)
    assert sum(n.num_addresses for n in added) == 2**32 - old_net.num_addresses


def test_narrowing_the_ui_is_breaking():
    old, new = _peers_edit("172.16.0.0/12", "172.16.0.0/16")
    diff = compare(old, new)
    assert {c.kind for c in diff.changes} == {"narrowed"}
    assert len(diff.breaking) == len(diff.changes) == 2
    assert all(c.role == LB and c.direction == "ingress" for c in diff.changes)


def test_moving_a_peer_is_a_removal_and_an_addition():
    old, new = _peers_edit("172.16.0.0/12", "192.168.0.0/16")
    diff = compare(old, new)
    assert sorted(c.kind for c in diff.changes) == ["added"] * 2 + ["removed"] * 2


def test_stateless_return_rules_compare_by_source_port():
    def rule(**kw):
        base = dict(
            role=LB,
            direction="egress",
            protocol="tcp",
            ports=(1024, 65535),
            peer=Peer(cidrs=("10.0.0.0/8",), name="external"),
            purpose="Return traffic: UI",
            reference="ref",
            flow="ui-https",
            source_ports=(443, 443),
        )
        return Rule(**{**base, **kw})

    old = _matrix([rule()])
    assert not compare(old, _matrix([rule(source_ports=(443, 443))])).changes
    moved = compare(old, _matrix([rule(source_ports=(8443, 8443))]))
    assert sorted(c.kind for c in moved.changes) == ["added", "removed"]
    assert {p.source_ports for c in moved.changes for p in c.traffic} == {
        (443, 443),
        (8443, 8443),
    }


def test_optimized_matrix_allows_the_same_traffic(example_name):
    optimizer = pytest.importorskip("generator.optimizer")
    raw = example_matrix(example_name)
    optimized, _ = optimizer.optimize(raw)
    assert not compare(raw, optimized).changes
    assert not compare(optimized, raw).changes


# --- properties, checked against a brute-force oracle ---------------------------

PORT_POINTS = [0, *range(1, 33), 33, 65535]  # every bound used below, and beyond
V4 = ipaddress.ip_network("10.0.0.0/27")
V6 = ipaddress.ip_network("fd00::/126")
ADDRESSES = [
    *V4,
    ipaddress.ip_address("192.0.2.1"),
    *V6,
    ipaddress.ip_address("2001:db8::1"),
]
PROTOCOL_POINTS = {"tcp": ["tcp"], "udp": ["udp"], "all": ["tcp", "udp", "other"]}


def _matrix(rules) -> Matrix:
    return Matrix(
        profile="p",
        server_version="4.2",
        release_line="4.0-4.2",
        cloud="aws",
        stateful=True,
        rules=tuple(rules),
    )


def _peer_points(peer: Peer) -> set:
    if peer.role:
        return {peer.role}
    nets = [ipaddress.ip_network(c) for c in peer.cidrs]
    return {
        a for a in ADDRESSES if any(a.version == n.version and a in n for n in nets)
    }


def _points(role, direction, protocol, ports, peer) -> set:
    protocols = PROTOCOL_POINTS.get(protocol, [protocol])
    lo, hi = (0, 65535) if ports is None or protocol == "all" else ports
    return {
        (role, direction, proto, port, end)
        for proto in protocols
        for port in PORT_POINTS
        if lo <= port <= hi
        for end in _peer_points(peer)
    }


def oracle(matrix: Matrix) -> set:
    out = set()
    for r in matrix.rules:
        out |= _points(r.role, r.direction, r.protocol, r.ports, r.peer)
    return out


def reported(diff, kinds) -> set:
    out = set()
    for c in diff.changes:
        if c.kind in kinds:
            for p in c.traffic:
                out |= _points(c.role, c.direction, p.protocol, p.ports, p.peer)
    return out


ports_st = st.tuples(st.integers(1, 32), st.integers(0, 8)).map(
    lambda t: (t[0], min(32, t[0] + t[1]))
)
cidr_st = st.one_of(
    st.integers(27, 32).flatmap(
        lambda plen: st.sampled_from([str(n) for n in V4.subnets(new_prefix=plen)])
    ),
    st.integers(126, 128).flatmap(
        lambda plen: st.sampled_from([str(n) for n in V6.subnets(new_prefix=plen)])
    ),
    st.just("0.0.0.0/0"),
)
peer_st = st.one_of(
    st.sampled_from(ROLES).map(lambda r: Peer(role=r)),
    st.lists(cidr_st, min_size=1, max_size=3).map(
        lambda c: Peer(cidrs=tuple(c), name="peer")
    ),
)


@st.composite
def rule_st(draw, roles=ROLES[:2]):
    protocol = draw(st.sampled_from(["tcp", "tcp", "udp", "all"]))
    return Rule(
        role=draw(st.sampled_from(roles)),
        direction=draw(st.sampled_from(DIRECTIONS)),
        protocol=protocol,
        ports=None if protocol == "all" else draw(ports_st),
        peer=draw(peer_st),
        purpose=draw(st.sampled_from(["a", "b", "c"])),
        reference="page > section",
        flow=draw(st.sampled_from(["f1", "f2"])),
    )


matrix_st = st.lists(rule_st(), max_size=8).map(_matrix)
FAST = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@pytest.mark.deep
@FAST
@given(matrix_st, matrix_st)
def test_diff_is_exactly_the_set_difference(old, new):
    diff = compare(old, new)
    before, after = oracle(old), oracle(new)
    assert reported(diff, {"removed", "narrowed"}) == before - after
    assert reported(diff, {"added", "widened"}) == after - before
    assert diff.changed == (before != after)
    assert all(c.breaking == (c.kind in ("removed", "narrowed")) for c in diff.changes)


def _split_ports(rule: Rule, at: int) -> list[Rule]:
    if rule.ports is None or not rule.ports[0] < at <= rule.ports[1]:
        return [rule]
    lo, hi = rule.ports
    return [replace(rule, ports=(lo, at - 1)), replace(rule, ports=(at, hi))]


def _split_cidrs(rule: Rule) -> list[Rule]:
    if rule.peer.role:
        return [rule]
    halves = []
    for c in rule.peer.cidrs:
        net = ipaddress.ip_network(c)
        parts = list(net.subnets()) if net.prefixlen < net.max_prefixlen else [net]
        halves.extend(str(p) for p in parts)
    # One rule per block, as an emitter without address lists would write it.
    return [replace(rule, peer=Peer(cidrs=(h,), name=rule.peer.name)) for h in halves]


def _merge_ports(rules: list[Rule]) -> list[Rule]:
    """Merge rules that differ only in adjacent or overlapping port ranges."""
    out: list[Rule] = []
    for rule in rules:
        for i, kept in enumerate(out):
            same = replace(kept, ports=rule.ports, purpose=rule.purpose) == rule
            if same and rule.ports and kept.ports:
                (a, b), (c, d) = sorted([kept.ports, rule.ports])
                if c <= b + 1:
                    out[i] = replace(kept, ports=(a, max(b, d)))
                    break
        else:
            out.append(rule)
    return out


def _collapse(rule: Rule) -> Rule:
    if rule.peer.role:
        return rule
    nets = [ipaddress.ip_network(c) for c in rule.peer.cidrs]
    collapsed = [
        str(n)
        for version in (4, 6)
        for n in ipaddress.collapse_addresses(x for x in nets if x.version == version)
    ]
    return replace(rule, peer=Peer(cidrs=tuple(collapsed), name="other name"))


@pytest.mark.deep
@FAST
@given(matrix_st, st.randoms(use_true_random=False), st.integers(2, 32))
def test_rewriting_rules_without_changing_traffic_gives_an_empty_diff(old, rnd, at):
    rules = list(old.rules)
    rules = [part for r in rules for part in _split_ports(r, at)]
    rules = [part for r in rules for part in _split_cidrs(r)]
    rules = [_collapse(r) for r in rules]
    rules += rnd.sample(rules, k=min(2, len(rules)))  # duplicates
    rnd.shuffle(rules)
    rules = _merge_ports(rules)
    rules = [replace(r, purpose=r.purpose + " (reworded)") for r in rules]
    new = _matrix(rules)
    assert oracle(new) == oracle(old)  # the rewrite itself is faithful
    assert not compare(old, new).changes
    assert not compare(new, old).changes


@FAST
@given(
    matrix_st,
    st.sampled_from(ROLES[:2]),
    st.sampled_from(DIRECTIONS),
    st.sampled_from(["tcp", "udp"]),
    st.integers(1, 32),
    peer_st,
)
def test_any_single_added_port_shows_up(old, role, direction, protocol, port, peer):
    extra = Rule(role, direction, protocol, (port, port), peer, "new", "ref", "x")
    new_points = _points(role, direction, protocol, (port, port), peer) - oracle(old)
    new = _matrix(list(old.rules) + [extra])
    diff = compare(old, new)
    assert reported(diff, {"added", "widened"}) == new_points
    assert diff.changed == bool(new_points)
    assert not diff.breaking
    if new_points:
        assert all(c.purposes == ["new"] for c in diff.changes)
        # Widened when the new rule overlaps traffic already allowed, else added.
        overlaps = _points(role, direction, protocol, (port, port), peer) & oracle(old)
        assert {c.kind for c in diff.changes} == {"widened" if overlaps else "added"}


@FAST
@given(matrix_st, st.data())
def test_any_single_removed_port_shows_up(old, data):
    ported = [r for r in old.rules if r.ports]
    if not ported:
        return
    victim = data.draw(st.sampled_from(ported))
    port = data.draw(st.integers(*victim.ports))
    lo, hi = victim.ports
    rest = [
        replace(victim, ports=span)
        for span in ((lo, port - 1), (port + 1, hi))
        if span[0] <= span[1]
    ]
    rules = list(old.rules)
    rules[rules.index(victim) : rules.index(victim) + 1] = rest
    new = _matrix(rules)
    gone = oracle(old) - oracle(new)
    diff = compare(old, new)
    assert reported(diff, {"removed", "narrowed"}) == gone
    assert {pt[3] for pt in gone} <= {port}
    assert all(c.breaking for c in diff.changes)
    if gone:
        # Narrowed while some of the rule's traffic is still allowed, else removed.
        still = _points(
            victim.role, victim.direction, victim.protocol, victim.ports, victim.peer
        ) & oracle(new)
        assert {c.kind for c in diff.changes} == {"narrowed" if still else "removed"}


# --- network ACLs (aws.network_acls) ---------------------------------------------


def test_acl_changes_show_as_traffic_the_acls_admit(tmp_path):
    import json

    from click.testing import CliRunner

    from generator.cli import main

    text = (ROOT / "tests" / "data" / "aws-private-acls.yaml").read_text()
    old, new, none = (
        tmp_path / "old.yaml",
        tmp_path / "new.yaml",
        tmp_path / "none.yaml",
    )
    old.write_text(text)
    # The VMs lose their re-run SSH port: the ACL's request and deny entries go, so
    # the reply range admits 54782 from anyone, and the replies to the SSH users go.
    new.write_text(text.replace("ssh_rerun: [172.16.0.0/12]", "ssh_rerun: []"))
    none.write_text(text.replace("aws:\n  network_acls: true\n", ""))
    runner = CliRunner()
    same = runner.invoke(main, ["diff", str(old), str(old)])
    assert same.exit_code == 0 and "Network ACLs: no change" in same.output
    result = runner.invoke(main, ["diff", str(old), str(new), "--format", "json"])
    assert result.exit_code == 2, result.output
    changes = json.loads(result.output)["network_acls"]
    kinds = {
        (c["role"], c["direction"], c["kind"], tuple(p["ports"] or ()))
        for c in changes
        for p in c["traffic"]
    }
    assert ("external_vms", "ingress", "widened", (54782, 54782)) in kinds
    assert ("nomad_clients", "ingress", "widened", (64535, 65535)) in kinds
    assert ("external_vms", "egress", "narrowed", (1024, 65535)) in kinds
    text_out = runner.invoke(main, ["diff", str(old), str(new)]).output
    assert "external_vms inbound" in text_out
    breaking = runner.invoke(
        main, ["diff", str(old), str(new), "--fail-on", "breaking"]
    )
    assert breaking.exit_code == 3
    one_sided = runner.invoke(main, ["diff", str(none), str(old)])
    assert "Network ACLs: only on the new side" in one_sided.output


def _diff_cli(*args):
    from click.testing import CliRunner

    from generator.cli import main

    return CliRunner().invoke(main, ["diff", *map(str, args)], catch_exceptions=False)


def test_fail_on_unexpected_passes_what_the_upgrade_notes_expect(tmp_path):
    vpn = ROOT / "profiles" / "aws-private-vpn.yaml"
    upgrade = (vpn, vpn, "--new-version", "4.3")
    # 10 removals, every one called stale by the 4.3 page: breaking, yet expected.
    assert _diff_cli(*upgrade, "--fail-on", "breaking").exit_code == 3
    assert _diff_cli(*upgrade, "--fail-on", "unexpected").exit_code == 2
    # Narrowing the UI too: a breaking change no page table calls for.
    narrowed = tmp_path / "narrowed.yaml"
    narrowed.write_text(
        vpn.read_text().replace(
            "external: [172.16.0.0/12]", "external: [172.16.0.0/16]"
        )
    )
    assert _diff_cli(vpn, narrowed, "--fail-on", "unexpected").exit_code == 3
    both = _diff_cli(vpn, narrowed, "--new-version", "4.3", "--fail-on", "unexpected")
    assert both.exit_code == 3
    # Widening is no breaking change at all.
    widened = tmp_path / "widened.yaml"
    widened.write_text(
        vpn.read_text().replace("external: [172.16.0.0/12]", "external: [0.0.0.0/0]")
    )
    assert _diff_cli(vpn, widened, "--fail-on", "unexpected").exit_code == 2


def test_expected_and_unexpected_split_the_breaking_changes():
    old = example_matrix("aws-private-vpn")
    diff = compare(old, plan(example("aws-private-vpn").with_version("4.3")))
    assert len(diff.expected) == len(diff.breaking) == 10 and not diff.unexpected
    old, new = _peers_edit("172.16.0.0/12", "172.16.0.0/16")
    narrowed = compare(old, new)
    assert narrowed.unexpected == narrowed.breaking and len(narrowed.breaking) == 2


def test_diff_explain_and_audit_write_a_leftover_range_one_way(tmp_path):
    """Everything but the VPN's range, in the words of all three commands."""
    from click.testing import CliRunner

    from generator.audit import audit, render
    from generator.cli import main
    from generator.emitters import TARGETS
    from generator.pipeline import files_for, shipped_matrix
    from generator.readers import Context

    rest = "0.0.0.0/0 except 172.16.0.0/12"
    vpn = ROOT / "profiles" / "aws-private-vpn.yaml"
    opened = tmp_path / "open.yaml"
    opened.write_text(
        vpn.read_text().replace("external: [172.16.0.0/12]", "external: [0.0.0.0/0]")
    )
    narrowed = _diff_cli(opened, vpn).stdout
    assert f"lost: tcp/443 from external: {rest}  [breaking]" in narrowed
    explained = (
        CliRunner()
        .invoke(
            main,
            ["explain", str(vpn), "--from", "0.0.0.0/0", "--to", "load_balancer"]
            + ["--port", "443"],
        )
        .stdout
    )
    assert f"  blocked from {rest}:" in explained.splitlines()
    # A host whose UI rule lost its source address: the excess is the same range.
    prof = example("aws-private-vpn")
    files = files_for(prof, shipped_matrix(prof), [TARGETS["iptables"]])
    rules = [
        line.replace("-s 172.16.0.0/12 ", "") if "--dports 80,443" in line else line
        for line in files["iptables/load_balancer.iptables"].splitlines()
        if line and not line.startswith("#")
    ]
    saved = "\n".join(
        ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]"]
        + [":OUTPUT ACCEPT [0:0]", "-A INPUT -j RULEGEN-IN", "-A OUTPUT -j RULEGEN-OUT"]
        + rules[1:]
    )
    live = audit(
        "iptables",
        {"iptables": ("v4.save", saved + "\n")},
        Context(prof, role="load_balancer"),
    )
    assert f"tcp/443 from {rest}" in render(live, "text")

"""The optimizer keeps every flow, and the equivalence check catches any change.

Random matrices live in a small universe (two roles, ports 20-26, source ports
1024-1027, addresses in 10.0.0.0/29 and 2001:db8::/126) so that a brute-force
oracle can list every flow they allow; the checker and the optimizer are both
judged against that list.
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from generator import optimizer as optimizer_module
from generator.cli import main
from generator.equivalence import NotEquivalent, check_equivalent, first_difference
from generator.matrix import Matrix, Peer, Rule
from generator.optimizer import collapse, optimize

from conftest import EXAMPLES, ROOT, example_matrix

ROLES2 = ("nomad_clients", "external_vms")
PORTS = range(19, 28)  # every port behaves like one of these in the universe
SPORTS = (1023, 1024, 1025, 1026, 1027, 1028)
V4 = [f"10.0.0.{i}" for i in range(9)]
V6 = [str(ipaddress.IPv6Address(f"2001:db8::{i:x}")) for i in range(5)]
ADDRESSES = V4 + V6 + [f"role:{r}" for r in ROLES2]


def _cidr_v4():
    return st.sampled_from(
        [f"10.0.0.{i}/32" for i in range(8)]
        + [f"10.0.0.{i}/31" for i in range(0, 8, 2)]
        + [f"10.0.0.{i}/30" for i in (0, 4)]
        + ["10.0.0.0/29"]
    )


def _cidr_v6():
    return st.sampled_from(
        [f"2001:db8::{i}/128" for i in range(4)]
        + ["2001:db8::/127", "2001:db8::2/127", "2001:db8::/126"]
    )


def _range(lo, hi):
    return st.tuples(st.integers(lo, hi), st.integers(lo, hi)).map(
        lambda t: (min(t), max(t))
    )


@st.composite
def rules(draw):
    if draw(st.booleans()):
        peer = Peer(role=draw(st.sampled_from(ROLES2)))
    else:
        cidrs = draw(
            st.lists(st.one_of(_cidr_v4(), _cidr_v6()), min_size=1, max_size=4)
        )
        peer = Peer(cidrs=tuple(cidrs), name=draw(st.sampled_from(["a", "b", "c"])))
    protocol = draw(st.sampled_from(["tcp", "udp", "all"]))
    ports = None if protocol == "all" else draw(st.none() | _range(20, 26))
    sports = None if protocol == "all" else draw(st.none() | _range(1024, 1027))
    return Rule(
        role=draw(st.sampled_from(ROLES2)),
        direction=draw(st.sampled_from(["ingress", "egress"])),
        protocol=protocol,
        ports=ports,
        peer=peer,
        purpose=draw(st.sampled_from(["p1", "p2", "p3"])),
        reference="r",
        flow=draw(st.sampled_from(["f1", "f2"])),
        source_ports=sports,
    )


@st.composite
def matrices(draw, max_size=10):
    found = draw(st.lists(rules(), min_size=0, max_size=max_size))
    unique = {r.traffic_key(): r for r in found}  # the planner's contract
    return Matrix(
        profile="random",
        server_version="4.10",
        release_line="4.3-4.10",
        cloud="aws",
        stateful=False,
        rules=tuple(sorted(unique.values(), key=Rule.sort_key)),
    )


def flows(matrix: Matrix) -> set[tuple]:
    """Every (role, direction, protocol, port, source port, address) allowed."""
    out = set()
    for rule in matrix.rules:
        if rule.peer.role:
            addresses = [f"role:{rule.peer.role}"]
        else:
            nets = [ipaddress.ip_network(c) for c in rule.peer.cidrs]
            addresses = [
                a for a in V4 + V6 if any(ipaddress.ip_address(a) in n for n in nets)
            ]
        protocols = (
            ["tcp", "udp", "other"] if rule.protocol == "all" else [rule.protocol]
        )
        for protocol in protocols:
            lo, hi = rule.ports or (0, 65535)
            slo, shi = rule.source_ports or (0, 65535)
            if protocol == "other" or rule.protocol == "all":
                lo, hi, slo, shi = 0, 65535, 0, 65535
            for port in PORTS:
                if not lo <= port <= hi:
                    continue
                for sport in SPORTS:
                    if not slo <= sport <= shi:
                        continue
                    for address in addresses:
                        out.add(
                            (rule.role, rule.direction, protocol, port, sport, address)
                        )
    return out


def witness_matches(flow, only_in: set[tuple]) -> bool:
    """The reported flow is one of the flows allowed by one side only."""
    for role, direction, protocol, port, sport, address in only_in:
        if (role, direction, protocol, address) != (
            flow.role,
            flow.direction,
            flow.protocol,
            flow.address,
        ):
            continue
        if flow.port is not None and min(max(flow.port, 19), 27) != port:
            continue
        if (
            flow.source_port is not None
            and min(max(flow.source_port, 1023), 1028) != sport
        ):
            continue
        return True
    return False


FAST = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@FAST
@given(matrices())
def test_optimizer_keeps_every_flow(matrix):
    optimized, report = optimize(matrix)
    assert flows(optimized) == flows(matrix)
    assert first_difference(matrix, optimized) is None
    assert len(optimized.rules) <= len(matrix.rules)
    assert report.rules == len(optimized.rules)
    names = [r.name for r in optimized.rules]
    assert len(names) == len(set(names))
    for rule in optimized.rules:  # one port range, one peer of one kind
        assert (rule.peer.role is None) != (not rule.peer.cidrs)


@FAST
@given(matrices())
def test_no_address_is_allowed_twice_for_the_same_traffic(matrix):
    optimized, _ = optimize(matrix)
    seen: dict[tuple, list] = {}
    for rule in optimized.rules:
        if rule.peer.role:
            continue
        key = (rule.role, rule.direction, rule.protocol, rule.ports, rule.source_ports)
        seen.setdefault(key, []).append(
            [ipaddress.ip_network(c) for c in rule.peer.cidrs]
        )
    for rules in seen.values():
        for i, mine in enumerate(rules):
            others = [n for j, nets in enumerate(rules) if j != i for n in nets]
            for net in mine:
                assert not any(
                    net.version == o.version and net.subnet_of(o) for o in others
                ), f"{net} is allowed by another rule of the same traffic"


@FAST
@given(matrices())
def test_optimizer_is_a_fixpoint_and_deterministic(matrix):
    once, _ = optimize(matrix)
    twice, report = optimize(once)
    assert twice.rules == once.rules
    assert not report.shadowed and not report.merged
    reordered = replace(matrix, rules=tuple(reversed(matrix.rules)))
    assert optimize(reordered)[0].rules == once.rules


@FAST
@given(matrices(), matrices())
def test_checker_agrees_with_brute_force(a, b):
    difference = first_difference(a, b)
    fa, fb = flows(a), flows(b)
    assert (difference is None) == (fa == fb)
    if difference is not None:
        only = fa - fb if difference.allowed_by == "first" else fb - fa
        assert witness_matches(difference, only), difference


def _break(matrix: Matrix, how: int, index: int) -> Matrix:
    rules = list(matrix.rules)
    rule = rules[index % len(rules)]
    if how == 0:  # a rule lost
        del rules[index % len(rules)]
    elif how == 1 and rule.ports and rule.ports[0] < rule.ports[1]:  # a port lost
        rules[index % len(rules)] = replace(
            rule, ports=(rule.ports[0] + 1, rule.ports[1])
        )
    elif how == 2 and len(rule.peer.cidrs) > 1:  # an address block lost
        rules[index % len(rules)] = replace(
            rule, peer=replace(rule.peer, cidrs=rule.peer.cidrs[1:])
        )
    else:  # one address too many
        rules.append(replace(rule, peer=Peer(cidrs=("10.0.0.8/32",), name="extra")))
    return replace(matrix, rules=tuple(rules))


@FAST
@given(matrices(), st.integers(0, 3), st.integers(0, 50))
def test_a_broken_optimizer_output_is_caught(matrix, how, index):
    optimized, _ = optimize(matrix)
    if not optimized.rules:
        return
    broken = _break(optimized, how, index)
    changed = flows(broken) != flows(matrix)
    if changed:
        with pytest.raises(NotEquivalent) as caught:
            check_equivalent(matrix, broken)
        flow = caught.value.flow
        assert flow.allowed_by in ("raw", "optimized")
        assert str(flow) in str(caught.value)
    else:
        check_equivalent(matrix, broken)


def test_an_added_address_is_named():
    matrix = example_matrix("aws-private-vpn")
    optimized, _ = optimize(matrix)
    broken = _break(optimized, 3, 0)
    with pytest.raises(NotEquivalent) as caught:
        check_equivalent(matrix, broken)
    assert caught.value.flow.address == "10.0.0.8"
    assert caught.value.flow.allowed_by == "optimized"


@pytest.mark.parametrize("name", EXAMPLES)
def test_examples_optimized_and_every_rule_needed(name):
    matrix = example_matrix(name)
    optimized, report = optimize(matrix)
    check_equivalent(matrix, optimized)
    assert report.raw_rules == len(matrix.rules) >= len(optimized.rules)
    # After optimizing, no rule of the examples is redundant: dropping any one is seen.
    for i in range(len(optimized.rules)):
        dropped = replace(
            optimized, rules=optimized.rules[:i] + optimized.rules[i + 1 :]
        )
        assert first_difference(matrix, dropped) is not None


def test_public_ip_profile_is_smaller_and_the_shadowed_rule_reported():
    matrix = example_matrix("aws-public-ip")
    optimized, report = optimize(matrix)
    assert len(optimized.rules) < len(matrix.rules)
    # Checkout over SSH to the VCS lies inside "SSH to any VM public IP" (0.0.0.0/0).
    shadowed = dict(report.shadowed)
    vcs = next(r for r in matrix.rules if r.peer.name == "vcs")
    assert vcs.name in shadowed
    cover = next(r for r in optimized.rules if r.name == shadowed[vcs.name])
    assert "0.0.0.0/0" in cover.peer.cidrs and cover.ports == vcs.ports


def test_role_and_cidr_peers_are_never_merged():
    base = dict(
        role="external_vms", direction="ingress", protocol="tcp", ports=(22, 22)
    )
    rules = (
        Rule(
            peer=Peer(role="nomad_clients"), purpose="a", reference="", flow="a", **base
        ),
        Rule(
            peer=Peer(cidrs=("0.0.0.0/0",), name="anywhere"),
            purpose="b",
            reference="",
            flow="b",
            **base,
        ),
    )
    matrix = Matrix("m", "4.10", "4.3-4.10", "aws", True, rules)
    optimized, report = optimize(matrix)
    assert set(optimized.rules) == set(rules)
    assert not report.shadowed and not report.merged


def test_peers_keep_their_names_and_duplicates_go():
    base = dict(
        role="external_vms", direction="ingress", protocol="tcp", ports=(22, 22)
    )
    rules = tuple(
        Rule(peer=Peer(cidrs=c, name=n), purpose=p, reference="", flow=n, **base)
        for c, n, p in (
            (("198.51.100.11/32", "198.51.100.0/28"), "nat_gateway", "pod SSH"),
            (("198.51.100.10/32", "203.0.113.0/24"), "clients", "client SSH"),
            (("203.0.113.0/24",), "admins", "admin SSH"),
        )
    )
    matrix = Matrix("m", "4.10", "4.3-4.10", "aws", True, rules)
    optimized, report = optimize(matrix)
    peers = {r.peer.name: r.peer.cidrs for r in optimized.rules}
    # Every address once: the admins' rule lies inside the clients' one, and the
    # clients' /32 inside the NAT gateways' block.
    assert peers == {
        "nat_gateway": ("198.51.100.0/28",),
        "clients": ("203.0.113.0/24",),
    }
    assert {r.name for r in optimized.rules} <= {r.name for r in rules}
    assert dict(report.shadowed)[rules[2].name] == rules[1].name
    assert dict(report.deduplicated) == {rules[1].name: 1}
    check_equivalent(matrix, optimized)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.builds(
                lambda a, p: str(ipaddress.ip_network((a, p), strict=False)),
                st.integers(0, 2**32 - 1),
                st.integers(0, 32),
            ),
            st.builds(
                lambda a, p: str(ipaddress.IPv6Network((a, p), strict=False)),
                st.integers(0, 2**128 - 1),
                st.integers(0, 128),
            ),
            st.builds(lambda i: f"10.0.{i >> 8}.{i & 255}/32", st.integers(0, 1023)),
        ),
        max_size=40,
    )
)
def test_fast_collapse_matches_ipaddress(cidrs):
    nets = [ipaddress.ip_network(c) for c in cidrs]
    expected = [
        str(n)
        for version in (4, 6)
        for n in ipaddress.collapse_addresses(x for x in nets if x.version == version)
    ]
    assert list(collapse(cidrs)[0]) == expected


# --- the command line ---------------------------------------------------------


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_plan_verifies_equivalence():
    result = run(
        "plan", ROOT / "profiles" / "aws-public-ip.yaml", "--verify-equivalence"
    )
    assert result.exit_code == 0, result.output
    raw = len(example_matrix("aws-public-ip").rules)
    assert f"of the {raw} raw rules" in result.stderr


def test_plan_no_optimize_shows_the_raw_matrix():
    path = ROOT / "profiles" / "aws-public-ip.yaml"
    raw = run("plan", path, "--no-optimize", "--format", "csv")
    optimized = run("plan", path, "--format", "csv")
    count = len(example_matrix("aws-public-ip").rules)
    assert len(raw.stdout.splitlines()) - 1 == count
    assert len(optimized.stdout.splitlines()) - 1 < count


def test_plan_reports_a_broken_optimizer(monkeypatch):
    real = optimizer_module.optimize

    def broken(matrix):
        optimized, report = real(matrix)
        return replace(optimized, rules=optimized.rules[1:]), report

    monkeypatch.setattr(optimizer_module, "optimize", broken)
    result = run(
        "plan", ROOT / "profiles" / "aws-private-vpn.yaml", "--verify-equivalence"
    )
    assert result.exit_code == 1
    assert "differs from the raw one" in result.stderr
    assert "allowed only by the raw matrix" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.deep
@FAST
@given(matrices(), matrices())
def test_equivalence_and_the_semantic_diff_agree(a, b):
    # Two independent readings of what a matrix allows: they must never disagree.
    from generator.diff import compare

    b = replace(b, profile=a.profile, server_version=a.server_version)
    same = first_difference(a, b) is None
    assert same == (not compare(a, b).changes)
    merged, _ = optimize(a)
    assert not compare(a, merged).changes


def _shadowed_pairwise(rules, cache, report):
    """The specification of optimizer._drop_shadowed, rule against rule: in sort
    order, a rule goes when a live rule covers it (of two equal rules the later one;
    a site rule never shadows a page rule); the first such rule is reported, and
    carries the flow of the one it shadows."""
    groups = {}
    for rule in sorted(rules, key=Rule.sort_key):
        groups.setdefault((rule.role, rule.direction), []).append(rule)
    kept = []
    for group in groups.values():
        alive = dict(enumerate(group))  # by position: equal rules are distinct rules
        for i in range(len(group)):
            rule = alive[i]
            for j, other in list(alive.items()):
                if j == i or not optimizer_module.covers(other, rule, cache):
                    continue
                if other.site and not rule.site:
                    continue
                if (
                    j < i
                    or rule.site
                    or not optimizer_module.covers(rule, other, cache)
                ):
                    del alive[i]
                    report.shadowed.append((rule.name, other.name))
                    if other.site == rule.site:  # the cover carries its flow
                        alive[j] = optimizer_module._combined([other, rule])
                    break
        kept.extend(alive.values())
    return kept


def credited(rules) -> list:
    """What each kept rule allows, and the flows it answers for (in any order)."""
    return [(r.traffic_key(), sorted(set(r.flow.split("+")))) for r in rules]


@st.composite
def shadow_cases(draw):
    """Rules with duplicates (two flows, one traffic) and site rules mixed in."""
    found = draw(st.lists(rules(), min_size=0, max_size=14))
    out = []
    for rule in found:
        rule = replace(rule, site=draw(st.booleans()))
        out.append(rule)
        if draw(st.integers(0, 4)) == 0:
            out.append(replace(rule, purpose="again", site=draw(st.booleans())))
    return out


@FAST
@given(shadow_cases())
def test_shadowed_rules_are_found_as_rule_against_rule_finds_them(found):
    cache = {}
    found = [optimizer_module._collapsed(r, cache) for r in found]
    want = optimizer_module.OptimizeReport(raw_rules=len(found))
    got = optimizer_module.OptimizeReport(raw_rules=len(found))
    expected = _shadowed_pairwise(found, cache, want)
    kept = optimizer_module._drop_shadowed(found, cache, got)
    assert credited(kept) == credited(expected)
    assert got.shadowed == want.shadowed


def test_a_site_flow_of_many_ports_costs_work_linear_in_them(monkeypatch):
    """10,000 ports in one site flow are 10,000 rules of one peer: the rules that may
    cover one of them are found in a tree, not by trying every other rule."""
    from conftest import PROFILES
    from generator.planner import plan
    from generator.profile import parse_profile

    base = next(p for p in PROFILES if p.stem == "generic-baremetal").read_text()
    calls = {"n": 0}
    real = optimizer_module.covers

    def counted(*args, **kwargs):
        calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(optimizer_module, "covers", counted)
    work = {}
    for n in (1_000, 10_000):
        ports = ", ".join(str(1000 + 2 * i) for i in range(n))
        text = base + (
            "site_flows:\n  - {from: ssh_admin, to: nomad_clients, protocol: tcp,"
            f" ports: [{ports}], purpose: many ports}}\n"
        )
        matrix = plan(parse_profile(text, "p.yaml"))
        calls["n"] = 0
        optimized, _ = optimize(matrix)
        work[n] = calls["n"]
        assert sum(r.site for r in optimized.rules) == n  # none shadowed, none merged
    assert work[10_000] < 12 * work[1_000], work


# --- the fast paths against the simple code they replaced --------------------------
# The optimizer collapses lists without rewriting a block that stands alone, and
# finds a rule's addresses that others hold by bisection; below, the plain loops
# they replaced (reference_*) give the same answers on generated lists.


def reference_collapse(cidrs):
    spans = {4: [], 6: []}
    for text in cidrs:
        version, first, last = optimizer_module.parse_cidr(text)
        spans[version].append((first, last))
    merged = tuple(tuple(optimizer_module.merged_intervals(spans[v])) for v in (4, 6))
    out = []
    for version, intervals in zip((4, 6), merged):
        for first, last in intervals:
            out.extend(optimizer_module.cidrs_of(first, last, version))
    return tuple(out), merged


def reference_covers(outer, inner):
    i = 0
    for first, last in inner:
        while i < len(outer) and outer[i][1] < first:
            i += 1
        if i == len(outer) or outer[i][0] > first or outer[i][1] < last:
            return False
    return True


def reference_covered_elsewhere(group):
    blocks = sorted(
        (version, first, -last, i, j)
        for i, rule in enumerate(group)
        for j, (version, first, last) in enumerate(
            map(optimizer_module.parse_cidr, rule.peer.cidrs)
        )
    )
    covered, reach = set(), {}
    for version, first, neg_last, i, j in blocks:
        if reach.get(version, -1) >= -neg_last:
            covered.add((i, j))
        else:
            reach[version] = -neg_last
    return covered


def _v4_block():
    # Crowded into a few /20s, so that blocks nest, touch and repeat.
    return st.builds(
        lambda n, plen: str(ipaddress.IPv4Network((n << 8 & 0xFFFFF00, plen), False)),
        st.integers(0, 4095),
        st.sampled_from([20, 22, 24, 26, 28, 30, 31, 32, 32, 32]),
    ) | st.builds(
        lambda i: f"10.{i >> 16}.{i >> 8 & 255}.{i & 255}/32", st.integers(0, 3000)
    )


def _written_otherwise():
    # Texts the fast paths must leave to the slow one: no prefix, leading zeros,
    # IPv6, host bits (parse_cidr takes them as the planner never writes them).
    return st.sampled_from(
        [
            "10.0.0.1",
            "10.0.0.01/32",
            "2001:db8::/64",
            "2001:db8::1/128",
            "::/0",
            "0.0.0.0/0",
        ]
    )


LISTS = st.lists(_v4_block() | _written_otherwise(), max_size=60) | st.lists(
    _v4_block(), max_size=300, unique=True
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(LISTS)
def test_collapse_is_the_plain_loop(cidrs):
    optimizer_module._COLLAPSED.clear()
    got = collapse(cidrs)
    assert got == reference_collapse(tuple(cidrs))
    spans = optimizer_module._SPANS[got[0]]
    optimizer_module._SPANS.clear()
    assert optimizer_module._spans(got[0]) == spans  # positions as parsed from it


def _intervals_of(cidrs):
    return reference_collapse(tuple(cidrs))[1][0]


@settings(max_examples=300)
@given(LISTS, LISTS)
def test_covers_is_the_plain_loop(a, b):
    outer, inner = _intervals_of(a), _intervals_of(b)
    assert optimizer_module._covers(outer, inner) == reference_covers(outer, inner)
    assert optimizer_module._covers(inner, outer) == reference_covers(inner, outer)


@settings(max_examples=200)
@given(
    st.lists(st.integers(0, 4095), min_size=1, max_size=200),
    st.sampled_from([0, 1, 2]),
)
def test_many_addresses_inside_a_few_blocks(hosts, outside):
    """The branch for a long inner list against a short outer one: held, or not."""
    outer = _intervals_of(["10.0.0.0/22", "10.0.8.0/22", "10.0.16.0/24"])
    inside = [f"10.0.{(h >> 8) % 4 + 8 * (h % 2)}.{h & 255}/32" for h in hosts]
    extra = ["10.0.4.1/32", "10.0.16.0/23"][:outside]
    inner = _intervals_of(inside + extra)
    assert optimizer_module._covers(outer, inner) == reference_covers(outer, inner)
    assert optimizer_module._covers(outer, inner) == (not extra)


def _check_held_elsewhere(lists):
    """One rule per list, of one traffic: the fast search against the plain sweep."""
    optimizer_module._COLLAPSED.clear()
    optimizer_module._SPANS.clear()
    group = [
        Rule(
            "nomad_clients",
            "ingress",
            "tcp",
            (22, 22),
            Peer(cidrs=collapse(c)[0]),
            "",
            "",
            "",
        )
        for c in lists
    ]
    assert optimizer_module._covered_elsewhere(group) == reference_covered_elsewhere(
        group
    )


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(LISTS, min_size=2, max_size=5))
def test_held_elsewhere_is_the_sweep(lists):
    _check_held_elsewhere(lists)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(_v4_block(), min_size=80, max_size=300, unique=True),
    st.lists(st.lists(_v4_block(), min_size=1, max_size=3), min_size=1, max_size=3),
    st.integers(0, 3),
)
def test_held_elsewhere_beside_one_long_list_is_the_sweep(long, short, where):
    # One list far longer than the rest: only its blocks that nest with theirs are
    # swept. In any position of the group.
    _check_held_elsewhere(short[:where] + [long] + short[where:])


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(matrices(max_size=12))
def test_the_optimizer_is_the_one_with_the_plain_loops(matrix):
    optimizer_module._COLLAPSED.clear()
    optimizer_module._SPANS.clear()
    fast = optimize(matrix)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(optimizer_module, "_covers", reference_covers)
        patch.setattr(
            optimizer_module, "_covered_elsewhere", reference_covered_elsewhere
        )
        patch.setattr(
            optimizer_module, "_collapse", lambda c: (*reference_collapse(c), ([], []))
        )
        optimizer_module._COLLAPSED.clear()
        slow = optimize(matrix)
    optimizer_module._COLLAPSED.clear()
    optimizer_module._SPANS.clear()
    assert fast == slow

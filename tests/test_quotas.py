"""Quotas: boundaries of the AWS and GCP splits, stable chunk names, the fit check."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from generator.cli import main
from generator.emitters import TARGETS
from generator.matrix import Matrix, Peer, Rule
from generator.optimizer import optimize
from generator.planner import plan
from generator.emitters.aws import check_fit
from generator.profile import ProfileError
from generator.quotas import (
    AWS_RULES_PER_INTERFACE,
    QuotaError,
    Quotas,
    aws_units,
    chunk_addresses,
    quotas_for,
    split_aws_group,
    use_ipset,
)

from conftest import profile_from


@dataclass(frozen=True)
class OneRule:
    """The fields of an AWS rule with one peer that the split reads."""

    direction: str
    cidr_ipv4: str | None = None
    cidr_ipv6: str | None = None
    peer_role: str | None = None


def spaced(n: int, start: int = 0) -> list[str]:
    """n /32s that never collapse into each other (every other address)."""
    base = int(ipaddress.ip_address("100.64.0.0"))
    return [str(ipaddress.ip_address(base + 2 * (start + i))) + "/32" for i in range(n)]


def v4_rules(n, direction="ingress"):
    return [OneRule(direction, cidr_ipv4=c) for c in spaced(n)]


@pytest.mark.parametrize(
    "count,groups", [(59, 1), (60, 1), (61, 2), (120, 2), (121, 3)]
)
def test_aws_split_at_the_per_direction_quota(count, groups):
    rules = v4_rules(count) + v4_rules(count, "egress")
    split = split_aws_group(rules)
    assert len(split) == groups
    assert sorted(map(repr, (r for g in split for r in g))) == sorted(map(repr, rules))
    for group in split:
        for direction in ("ingress", "egress"):
            assert sum(1 for r in group if r.direction == direction) <= 60


def test_aws_families_count_apart_and_references_count_for_both():
    v6 = [OneRule("ingress", cidr_ipv6=f"2001:db8::{i:x}/128") for i in range(60)]
    assert len(split_aws_group(v4_rules(60) + v6)) == 1
    ref = OneRule("ingress", peer_role="nomad_clients")
    assert aws_units(ref) == (1, 1)
    assert len(split_aws_group(v4_rules(59) + [ref])) == 1
    assert len(split_aws_group(v4_rules(60) + [ref])) == 2


def test_aws_split_follows_a_raised_quota():
    quotas = Quotas(aws_inbound_rules_per_group=200)
    assert len(split_aws_group(v4_rules(200), quotas)) == 1
    assert len(split_aws_group(v4_rules(201), quotas)) == 2
    assert len(split_aws_group(v4_rules(61, "egress"), quotas)) == 2


@pytest.mark.parametrize("count,chunks", [(255, 1), (256, 1), (257, 2)])
def test_gcp_ranges_split_at_256(count, chunks):
    cidrs = spaced(count)
    numbered = dict(chunk_addresses(cidrs, 256))
    if chunks == 1:
        assert list(numbered) == [1]
    else:
        assert len(numbered) >= chunks
    assert all(1 <= len(c) <= 256 for c in numbered.values())
    assert sorted(c for chunk in numbered.values() for c in chunk) == sorted(cidrs)


def covered(cidrs) -> list:
    return list(ipaddress.collapse_addresses(ipaddress.ip_network(c) for c in cidrs))


def _blocks(draw_ints):
    return [str(ipaddress.ip_address(i)) + "/32" for i in draw_ints]


@settings(max_examples=100, deadline=None)
@given(
    st.sets(st.integers(0, 2**32 - 1), max_size=120),
    st.integers(0, 2**32 - 1),
    st.integers(1, 16),
)
def test_adding_an_address_renames_at_most_the_chunk_it_joins(ints, new, size):
    before = dict(chunk_addresses(_blocks(ints), size))
    after = dict(chunk_addresses(_blocks(ints | {new}), size))
    changed = [n for n, c in before.items() if after.get(n) != c]
    assert len(changed) <= 1
    added = f"{ipaddress.ip_address(new)}/32"
    fresh = [n for n in after if n not in before]
    if changed:  # the chunk the address joined, or split into its halves
        (old,) = changed

        def descends(n):
            return n >> (n.bit_length() - old.bit_length()) == old

        assert all(descends(n) for n in fresh)
        moved = [c for n in fresh + [old] for c in after.get(n, ())]
        assert covered(moved) == covered(before[old] + (added,))
    elif fresh:  # an empty block of the tree got its first address
        ((number, chunk),) = [(n, after[n]) for n in fresh]
        assert ipaddress.ip_address(new) in ipaddress.ip_network(chunk[0])
    for chunk in after.values():
        assert 1 <= len(chunk) <= size


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.builds(
                lambda a, p: str(ipaddress.ip_network((a, p), strict=False)),
                st.integers(0, 2**32 - 1),
                st.integers(8, 32),
            ),
            st.builds(
                lambda a, p: str(ipaddress.IPv6Network((a, p), strict=False)),
                st.integers(0, 2**128 - 1),
                st.integers(16, 128),
            ),
        ),
        max_size=80,
    ),
    st.integers(1, 20),
    st.booleans(),
)
def test_chunks_cover_the_list_exactly(cidrs, size, split_families):
    chunks = chunk_addresses(cidrs, size, split_families)
    got = [ipaddress.ip_network(c) for _, chunk in chunks for c in chunk]
    nets = [ipaddress.ip_network(c) for c in cidrs]
    for version in (4, 6):
        want = list(
            ipaddress.collapse_addresses(n for n in nets if n.version == version)
        )
        have = sorted(n for n in got if n.version == version)
        assert have == want  # same addresses, no block in two chunks
    numbers = [n for n, _ in chunks]
    assert len(set(numbers)) == len(numbers)
    for _, chunk in chunks:
        assert 1 <= len(chunk) <= size
        if split_families:
            assert len({ipaddress.ip_network(c).version for c in chunk}) == 1


def test_ipset_threshold():
    assert not use_ipset(spaced(8))
    assert use_ipset(spaced(9))
    assert not use_ipset(spaced(9), Quotas(iptables_ipset_threshold=9))


# --- the fit check -------------------------------------------------------------


def matrix_with(n_ingress: int, peer_name="nomad_client_public_ips") -> Matrix:
    rule = Rule(
        role="external_vms",
        direction="ingress",
        protocol="tcp",
        ports=(22, 22),
        peer=Peer(cidrs=tuple(spaced(n_ingress)), name=peer_name),
        purpose="SSH",
        reference="",
        flow="f",
    )
    return Matrix("m", "4.1", "4.0-4.2", "aws", True, (rule,))


AWS = [TARGETS["terraform-aws"]]


def test_fit_at_five_groups_of_sixty():
    check_fit(matrix_with(300), AWS)
    with pytest.raises(QuotaError) as caught:
        check_fit(matrix_with(301), AWS)
    (problem,) = caught.value.problems
    assert "external_vms needs 301 inbound rules" in problem
    assert "60 per security group x 5 groups per network interface = 300" in problem
    assert "leave peers.nomad_client_public_ips empty" in problem
    assert "0.0.0.0/0" in problem
    assert "raise the quota" in problem


def test_fit_with_a_raised_quota_and_beyond_any_quota():
    raised = Quotas(aws_inbound_rules_per_group=200, aws_groups_per_interface=5)
    check_fit(matrix_with(1000), AWS, raised)
    with pytest.raises(QuotaError) as caught:
        check_fit(matrix_with(1001, peer_name="vcs"), AWS, raised)
    (problem,) = caught.value.problems
    assert "1,001" in problem and f"{AWS_RULES_PER_INTERFACE:,}" in problem
    assert "a raised quota cannot help" in problem
    assert "nomad_client_public_ips" not in problem  # not the peer at fault
    assert "largest lists: vcs (1,001)" in problem


def test_gcp_and_iptables_always_fit():
    targets = [TARGETS["terraform-gcp"], TARGETS["iptables"]]
    check_fit(matrix_with(20000), targets)


PUBLIC = """\
name: big
server_version: "4.1"
cloud: aws
access: public
vm_service:
  assign_public_ip: true
network:
  vpc_cidr: 10.1.0.0/16
  subnets:
    kubernetes_nodes: [10.1.0.0/20]
    nomad_clients: [10.1.16.0/20]
    external_vms: [10.1.32.0/20]
    load_balancer: [10.1.48.0/24]
  dns_servers: [10.1.0.2]
  nat_gateway_ips: [198.51.100.10/32]
peers:
  vcs: [192.30.252.0/22]
  nomad_client_public_ips: [{ips}]
"""


def test_profile_quotas_override_the_defaults():
    text = PUBLIC.format(ips="198.51.100.64/27") + (
        "quotas:\n  aws: {inbound_rules_per_group: 100, groups_per_interface: 10}\n"
        "  gcp: {ranges_per_rule: 1000}\n"
    )
    quotas = quotas_for(profile_from(text))
    assert quotas.aws_inbound_rules_per_group == 100
    assert quotas.aws_outbound_rules_per_group == 60
    assert quotas.aws_groups_per_interface == 10
    assert quotas.gcp_ranges_per_rule == 1000
    assert quotas_for(profile_from(PUBLIC.format(ips="198.51.100.64/27"))) == Quotas()


@pytest.mark.parametrize(
    "section,message",
    [
        (
            "aws: {inbound_rules_per_group: 250}",
            "quotas.aws.inbound_rules_per_group: 250 rules per group x 5 groups per"
            " interface = 1250; AWS allows at most 1000",
        ),
        ("aws: {groups_per_interface: 17}", "17 is out of range 1-16"),
        ("gcp: {ranges: 3}", "unknown key 'ranges'"),
    ],
)
def test_bad_quotas_are_named(section, message):
    text = PUBLIC.format(ips="198.51.100.64/27") + f"quotas:\n  {section}\n"
    with pytest.raises(ProfileError) as caught:
        profile_from(text)
    assert any(message in p for p in caught.value.problems), caught.value.problems


def test_generate_stops_before_writing_when_aws_cannot_hold_the_addresses(tmp_path):
    ips = ", ".join(spaced(2000))
    path = tmp_path / "big.yaml"
    path.write_text(PUBLIC.format(ips=ips))
    matrix, _ = optimize(plan(profile_from(path.read_text())))
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["generate", str(path), "-o", str(out)])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    # 2,000 clients and the NAT gateway on ports 22 and 2376, and ssh_rerun.
    assert "external_vms needs 4,003 inbound rules" in result.stderr
    assert "terraform-aws, cloudformation:" in result.stderr
    assert "a raised quota cannot help" in result.stderr
    assert "leave peers.nomad_client_public_ips empty" in result.stderr
    assert not out.exists()
    # Left empty, the page's 0.0.0.0/0 fits.
    path.write_text(PUBLIC.format(ips=""))
    result = CliRunner().invoke(main, ["generate", str(path), "-o", str(out)])
    assert result.exit_code == 0, result.output


def imports_of(path: Path, package: str) -> set[str]:
    """Modules of generator/ that a file imports, at any depth (functions too)."""
    import ast

    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            parts = package.split(".")
            base = parts[: len(parts) - node.level]
            module = ".".join(base + ([node.module] if node.module else []))
            out.add(module)
            out |= {f"{module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            "generator"
        ):
            out.add(node.module)
    return out


def test_no_import_cycle_between_quotas_and_the_aws_emitters():
    # quotas is data and arithmetic; the AWS fit check lives with the AWS emitters.
    root = Path(__file__).resolve().parent.parent / "generator"
    assert "generator.emitters.aws" not in imports_of(
        root / "quotas.py", "generator.quotas"
    )
    assert "generator.quotas" in imports_of(
        root / "emitters" / "aws.py", "generator.emitters.aws"
    )


# The stages below the emitters, and what sits above them.
LOWER = (
    "problems",
    "addresses",
    "matrix",
    "catalog",
    "planner",
    "optimizer",
    "quotas",
    "hostfw",
    "profile",
    "profile_sections",
    "profile_yaml",
    "profile_paths",
    "paths",
    "explain",
    "nacl",
)
UPPER = ("emitters", "pipeline", "cli", "readers", "audit", "snapshot", "verify")


@pytest.mark.parametrize("name", LOWER)
def test_no_import_runs_back_up_the_layers(name):
    root = Path(__file__).resolve().parent.parent / "generator"
    upward = {
        module
        for module in imports_of(root / f"{name}.py", f"generator.{name}")
        if module.split(".")[1:2] and module.split(".")[1] in UPPER
    }
    assert not upward, f"generator/{name}.py imports {sorted(upward)}"


def test_emit_error_is_one_class_at_the_bottom():
    from generator import emitters, matrix, problems, quotas

    assert emitters.EmitError is problems.EmitError
    assert issubclass(quotas.QuotaError, problems.EmitError)
    assert emitters.describe is matrix.describe


def test_a_list_is_cut_once_and_every_caller_gets_its_own_copy():
    from generator import quotas

    cidrs = [f"10.0.{i}.0/24" for i in range(0, 200, 2)] + ["2001:db8::/64"]
    first = quotas.chunk_addresses(cidrs, 7, split_families=True)
    first.append("changed by a caller")
    again = quotas.chunk_addresses(list(cidrs), 7, split_families=True)
    quotas._CHUNKS.clear()
    fresh = quotas.chunk_addresses(cidrs, 7, split_families=True)
    assert again == fresh and "changed by a caller" not in again
    assert sum(len(chunk) for _, chunk in fresh) == len(cidrs)
    assert quotas.chunk_addresses(cidrs, 200) != fresh  # size is part of the key

"""The AWS fit check counts groups from the matrix: the same answer as the split.

Until it counted, the check made every AWS rule through the emitters' own split
(emitters.aws.split) and read the groups off it. `reference_check_fit` below is that
check, kept as it was; on many matrices (long and short lists, IPv6, group
references, duplicate addresses, names two rules share, bad addresses, tight and
default quotas, both AWS targets, an existing EKS group) the counting check must
raise the same error with the same words, or pass where it passed, and count the
groups the split makes.
"""

from __future__ import annotations

import random

import pytest

from generator.emitters import TARGETS, EmitError
from generator.emitters import aws
from generator.emitters.aws import AwsOptions, check_fit, count_groups, split
from generator.matrix import DIRECTIONS, ROLES, Matrix, Peer, Rule
from generator.quotas import QuotaError, Quotas, aws_units, split_aws_group

from conftest import EXAMPLES, example
from generator.pipeline import shipped_matrix
from generator.quotas import quotas_for

AWS_TARGETS = [TARGETS["terraform-aws"], TARGETS["cloudformation"]]


def reference_check_fit(matrix, targets, quotas=Quotas(), options=AwsOptions()):
    """The fit check as it was, on the emitters' split (the oracle)."""
    problems: dict[str, list[str]] = {}
    for target in targets:
        if "aws" not in target.clouds:
            continue
        fixed = aws.group_rules(target)
        for role, groups in split(target, matrix, quotas, options).items():
            if len(groups) <= quotas.aws_groups_per_interface:
                continue
            for text in _reference_problems(role, groups, fixed, quotas):
                problems.setdefault(text, []).append(target.name)
    if problems:
        raise QuotaError([f"{', '.join(t)}: {text}" for text, t in problems.items()])


def _reference_problems(role, groups, fixed, quotas) -> list[str]:
    texts = []
    rules = [r for group in groups for r in group]
    for direction in DIRECTIONS:
        mine = [r for r in rules if r.direction == direction]
        extra = [r for r in fixed if r.direction == direction]
        needed = len(split_aws_group(mine, quotas, extra))
        if needed <= quotas.aws_groups_per_interface:
            continue
        units = [aws_units(r) for r in mine]
        count = max(sum(u[0] for u in units), sum(u[1] for u in units))
        matrix_rules = list({id(r.rule): r.rule for r in mine}.values())
        texts.append(
            aws._aws_problem(
                role, direction, count, needed, extra, matrix_rules, quotas
            )
        )
    if not texts:
        texts.append(
            f"{role} needs {len(groups)} security groups for its"
            f" {sum(r.direction == 'ingress' for r in rules):,} inbound and"
            f" {sum(r.direction == 'egress' for r in rules):,} outbound rules, but AWS"
            f" attaches at most {quotas.aws_groups_per_interface} groups per network"
            " interface. Choices: list fewer addresses; raise the quota with AWS and"
            " set quotas.aws."
        )
    return texts


def outcome(check, *args):
    aws.split.cache_clear()
    try:
        check(*args)
    except (QuotaError, EmitError) as exc:
        return type(exc).__name__, str(exc), getattr(exc, "problems", None)
    return "fits"


def addresses(rng: random.Random, count: int) -> tuple[str, ...]:
    out = []
    for _ in range(count):
        kind = rng.random()
        if kind < 0.75:
            out.append(
                f"{rng.randrange(11, 200)}.{rng.randrange(256)}.0.{rng.randrange(4)}/32"
            )
        elif kind < 0.97:
            out.append(f"2001:db8:{rng.randrange(16):x}::{rng.randrange(9):x}/128")
        else:
            out.append(rng.choice(["0.0.0.0/0", "::/0", "10.1.0.0/16"]))
    if out and rng.random() < 0.3:
        out += rng.sample(out, min(len(out), 5))  # a CIDR listed twice is one rule
    return tuple(out)


NAMES = ("vcs", "ssh_admin", "nomad_client_public_ips", "office", "office1", None)


def random_matrix(rng: random.Random) -> Matrix:
    rules = []
    for _ in range(rng.randrange(1, 14)):
        protocol = rng.choice(("tcp", "udp", "all"))
        port = rng.choice((22, 80, 443, 3000, 4647, 8585))
        ports = None if protocol == "all" else (port, port + rng.choice((0, 0, 10)))
        if rng.random() < 0.3:
            peer = Peer(role=rng.choice(ROLES))
        else:
            size = rng.choice((0, 1, 3, 20, 70, 150, 400))
            peer = Peer(cidrs=addresses(rng, size), name=rng.choice(NAMES))
        if rng.random() < 0.02 and peer.cidrs:
            peer = Peer(cidrs=peer.cidrs + ("not-an-address",), name=peer.name)
        rules.append(
            Rule(
                role=rng.choice(ROLES),
                direction=rng.choice(DIRECTIONS),
                protocol=protocol,
                ports=ports,
                peer=peer,
                purpose=rng.choice(("SSH", "API", "jobs")),
                reference="page > section",
                flow="f",
                site=rng.random() < 0.1,
            )
        )
    return Matrix("m", "4.1", "4.0-4.2", "aws", True, tuple(rules))


def random_quotas(rng: random.Random) -> Quotas:
    return Quotas(
        aws_inbound_rules_per_group=rng.choice((1, 2, 3, 7, 60, 200)),
        aws_outbound_rules_per_group=rng.choice((1, 2, 5, 60)),
        aws_groups_per_interface=rng.choice((1, 2, 3, 5, 16)),
    )


@pytest.mark.parametrize("seed", range(400))
def test_the_count_says_what_the_split_says(seed):
    rng = random.Random(seed)
    matrix, quotas = random_matrix(rng), random_quotas(rng)
    options = AwsOptions(
        existing=(("kubernetes_nodes", "eks_cluster"),) if rng.random() < 0.2 else ()
    )
    targets = rng.choice((AWS_TARGETS, AWS_TARGETS[:1], AWS_TARGETS[1:]))
    want = outcome(reference_check_fit, matrix, targets, quotas, options)
    assert outcome(check_fit, matrix, targets, quotas, options) == want
    for target in targets:
        try:
            groups = split(target, matrix, quotas, options)
        except (QuotaError, EmitError):
            continue
        counted = count_groups(target, matrix, quotas, options)
        assert {role: total for role, (total, _) in counted.items()} == {
            role: len(g) for role, g in groups.items()
        }


@pytest.mark.deep
def test_the_matrices_above_reach_every_outcome():
    """The seeds cover fits, too many groups, a rule no group holds, shared names
    and bad addresses: the comparison above is not about one case. (Never the two
    directions together: a role's groups are as many as its fuller direction fills.)"""
    seen = set()
    for seed in range(400):
        rng = random.Random(seed)
        matrix, quotas = random_matrix(rng), random_quotas(rng)
        result = outcome(reference_check_fit, matrix, AWS_TARGETS, quotas)
        if result == "fits":
            seen.add("fits")
        elif "share the name" in result[1]:
            seen.add("name")
        elif "not a CIDR" in result[1]:
            seen.add("address")
        elif "no inbound rule fits" in result[1] or "no outbound rule" in result[1]:
            seen.add("no fit")
        elif "security groups for its" in result[1]:
            seen.add("both directions")
        else:
            seen.add("too many")
    assert seen == {"fits", "name", "address", "no fit", "too many"}


@pytest.mark.parametrize("name", EXAMPLES)
@pytest.mark.parametrize("groups", [1, 2, 5])
def test_the_examples_count_as_they_split(name, groups):
    profile = example(name)
    if profile.cloud != "aws":
        pytest.skip("not an AWS profile")
    quotas = Quotas(
        aws_inbound_rules_per_group=7,
        aws_outbound_rules_per_group=9,
        aws_groups_per_interface=groups,
    )
    for matrix in (shipped_matrix(profile), shipped_matrix(profile, optimized=False)):
        for q in (quotas, quotas_for(profile)):
            options = aws.aws_options(profile)
            want = outcome(reference_check_fit, matrix, AWS_TARGETS, q, options)
            assert outcome(check_fit, matrix, AWS_TARGETS, q, options) == want


def test_an_over_quota_list_stops_before_any_aws_rule_is_made(monkeypatch):
    made = []
    monkeypatch.setattr(aws, "expand", lambda *a: made.append(a) or {})
    ips = tuple(f"11.0.{i // 256}.{i % 256}/32" for i in range(20000))
    rule = Rule(
        role="external_vms",
        direction="ingress",
        protocol="tcp",
        ports=(22, 22),
        peer=Peer(cidrs=ips, name="nomad_client_public_ips"),
        purpose="SSH",
        reference="",
        flow="f",
    )
    matrix = Matrix("m", "4.1", "4.0-4.2", "aws", True, (rule,))
    aws.split.cache_clear()
    with pytest.raises(QuotaError) as caught:
        check_fit(matrix, AWS_TARGETS)
    assert "external_vms needs 20,000 inbound rules" in str(caught.value)
    assert "334 security groups" in str(caught.value)
    assert made == []

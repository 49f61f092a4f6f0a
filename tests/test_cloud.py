"""Cloud decisions in the profile: AWS names, the VMs' public range, which targets need
subnets, the EKS cluster group, internet-facing load balancers, GCP's pre-populated rules.
"""

from __future__ import annotations

import shutil

import pytest
from click.testing import CliRunner

from conftest import ROOT
from generator.cli import main
from generator.emitters import TARGETS, EmitError
from generator.pipeline import files_for, shipped_matrix
from generator.planner import plan
from generator.profile import ProfileError, parse_profile

AWS_PROFILE = (ROOT / "profiles" / "aws-private-vpn.yaml").read_text()
PUBLIC_IP = (ROOT / "profiles" / "aws-public-ip.yaml").read_text()


def problems(text: str) -> list[str]:
    with pytest.raises(ProfileError) as caught:
        parse_profile(text, "p.yaml")
    return caught.value.problems


def test_a_name_aws_refuses_is_refused_with_its_line():
    text = AWS_PROFILE.replace("name: acme-prod", "name: sg-prod")
    assert problems(text) == [
        "p.yaml:2: name: 'sg-prod' starts with 'sg-': AWS refuses security group names"
        " that start with sg- (they would read as group IDs); choose another name"
    ]
    # GCP has no such rule.
    gcp = (ROOT / "profiles" / "gcp.yaml").read_text()
    name = gcp.split("name: ", 1)[1].split("\n", 1)[0]
    assert parse_profile(gcp.replace(f"name: {name}", "name: sg-prod"), "g.yaml")


def vm_egress(matrix) -> dict[str, set]:
    return {
        role: {
            (r.ports, r.peer.cidrs)
            for r in matrix.for_role(role, "egress")
            if r.peer.name == "vm_public_ips"
        }
        for role in ("kubernetes_nodes", "nomad_clients")
    }


def test_the_vms_public_range_narrows_the_egress_to_them():
    # assign_public_ip: nodes and Nomad clients reach the VMs on their public addresses.
    wide = parse_profile(PUBLIC_IP, "p.yaml")
    assert any(w.startswith("peers.vm_public_ips: empty") for w in wide.warnings)
    assert vm_egress(plan(wide))["nomad_clients"] == {
        ((22, 22), ("0.0.0.0/0",)),
        ((2376, 2376), ("0.0.0.0/0",)),
    }
    narrow = parse_profile(
        PUBLIC_IP.replace("peers:\n", "peers:\n  vm_public_ips: [203.0.113.128/25]\n"),
        "p.yaml",
    )
    assert not any("vm_public_ips" in w for w in narrow.warnings)
    for role, rules in vm_egress(plan(narrow)).items():
        assert rules == {
            ((22, 22), ("203.0.113.128/25",)),
            ((2376, 2376), ("203.0.113.128/25",)),
        }, role


def test_public_ip_warnings_hold_on_4_3_where_nomad_keeps_ssh_to_the_vms():
    text = PUBLIC_IP.replace('server_version: "4.1"', 'server_version: "4.5"')
    text = text.replace(
        "nomad_client_public_ips: [198.51.100.64/27]", "nomad_client_public_ips: []"
    )
    # Behind the NAT gateways the VMs see those: no 0.0.0.0/0, no warning for it.
    profile = parse_profile(text, "p.yaml")
    warnings = " ".join(profile.warnings)
    assert "VMs accept 22 from" not in warnings
    assert "the egress to the VMs on 22 goes to 0.0.0.0/0" in warnings
    assert vm_egress(plan(profile))["nomad_clients"] == {((22, 22), ("0.0.0.0/0",))}
    # Without them (4.3+ needs none), the page's 0.0.0.0/0, with the warning.
    text = text.replace(
        "nat_gateway_ips: [198.51.100.10/32, 198.51.100.11/32]",
        "nat_gateway_ips: []",
    ).replace("access: public", "access: vpn")
    profile = parse_profile(text, "p.yaml")
    assert "VMs accept 22 from 0.0.0.0/0" in " ".join(profile.warnings)
    sources = {
        r.peer.cidrs
        for r in plan(profile).for_role("external_vms", "ingress")
        if r.ports == (22, 22) and r.peer.name == "nomad_client_public_ips"
    }
    assert sources == {("0.0.0.0/0",)}


def test_vm_public_ips_without_assign_public_ip_is_ignored_with_a_warning():
    text = AWS_PROFILE.replace(
        "peers:\n", "peers:\n  vm_public_ips: [203.0.113.0/24]\n"
    )
    profile = parse_profile(text, "p.yaml")
    assert "peers.vm_public_ips: ignored: assign_public_ip is false" in profile.warnings


NO_LB_SUBNET = AWS_PROFILE.replace("    load_balancer: [10.0.48.0/24]\n", "")


@pytest.mark.parametrize("version", ["3", "4.2", "4.10"])
def test_aws_roles_need_no_subnet_for_the_aws_targets(version):
    text = NO_LB_SUBNET.replace('server_version: "4.2"', f'server_version: "{version}"')
    profile = parse_profile(text, "p.yaml")
    matrix = shipped_matrix(profile)
    targets = [TARGETS["terraform-aws"], TARGETS["cloudformation"]]
    files = files_for(profile, matrix, targets)
    assert "aws_security_group" in files["terraform-aws/main.tf"]


def test_a_target_that_addresses_roles_by_subnet_names_the_missing_one(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(NO_LB_SUBNET)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main, ["generate", str(path), "-o", str(out), "--target", "iptables"]
    )
    assert result.exit_code == 1
    assert "network.subnets.load_balancer" in result.output
    assert "Traceback" not in result.output
    assert not out.exists() or not any(out.rglob("*.iptables"))
    with pytest.raises(EmitError, match=r"network\.subnets\.load_balancer"):
        profile = parse_profile(NO_LB_SUBNET, "p.yaml")
        files_for(profile, shipped_matrix(profile), [TARGETS["iptables"]])


def aws_files(text: str, targets=("terraform-aws", "cloudformation")) -> dict:
    profile = parse_profile(text, "p.yaml")
    return files_for(profile, shipped_matrix(profile), [TARGETS[t] for t in targets])


@pytest.mark.cfnlint
def test_cloudformation_exports_every_output_and_tags_every_group():
    from cfnlint.api import lint
    from test_emit_aws import cfn_template

    text = aws_files(AWS_PROFILE)["cloudformation/template.yaml"]
    assert [str(m) for m in lint(text)] == []
    template = cfn_template(text)
    outputs = template["Outputs"]
    assert outputs
    for name, output in outputs.items():
        assert output["Export"]["Name"] == {"Fn::Sub": f"${{AWS::StackName}}-{name}"}
    assert {"TagKey", "TagValue"} <= set(template["Parameters"])
    groups = [
        r
        for r in template["Resources"].values()
        if r["Type"] == "AWS::EC2::SecurityGroup"
    ]
    assert len(groups) == 4
    for group in groups:
        tags = group["Properties"]["Tags"]
        assert {
            "Fn::If": [
                "HasTag",
                {"Key": {"Ref": "TagKey"}, "Value": {"Ref": "TagValue"}},
                {"Ref": "AWS::NoValue"},
            ]
        } in tags


EKS_PROFILE = (
    AWS_PROFILE + "aws:\n  existing_groups:\n    kubernetes_nodes: eks_cluster\n"
)
SELF_INGRESS = "kubernetes_nodes_ingress_all_all_kubernetes_nodes"


@pytest.mark.cfnlint
def test_the_eks_cluster_group_gets_no_duplicate_of_its_own_rule():
    import hcl2
    from cfnlint.api import lint
    from test_emit_aws import cfn_template, terraform_rules

    plain, eks = aws_files(AWS_PROFILE), aws_files(EKS_PROFILE)
    assert SELF_INGRESS in {
        r["key"] for r in terraform_rules(plain["terraform-aws/main.tf"])
    }
    keys = {r["key"] for r in terraform_rules(eks["terraform-aws/main.tf"])}
    assert SELF_INGRESS not in keys
    # Everything else is still there, the nodes' self egress included.
    assert {
        r["key"] for r in terraform_rules(plain["terraform-aws/main.tf"])
    } - keys == {SELF_INGRESS}
    main_tf = hcl2.loads(eks["terraform-aws/main.tf"])
    created = {
        k.strip('"')
        for resource in main_tf["resource"]
        for rtype, blocks in resource.items()
        if rtype.strip('"') == "aws_security_group"
        for k in blocks
    }
    assert created == {"load_balancer", "nomad_clients", "external_vms"}
    ids = main_tf["locals"][0]["security_group_ids"]
    assert (
        ids["kubernetes_nodes"]
        == '${var.existing_security_group_ids["kubernetes_nodes"]}'
    )
    assert "EKS cluster security group" in eks["terraform-aws/main.tf"]
    variables = hcl2.loads(eks["terraform-aws/variables.tf"])["variable"]
    existing = next(v for v in variables if '"existing_security_group_ids"' in v)
    conditions = [
        v["condition"] for v in existing['"existing_security_group_ids"']["validation"]
    ]
    assert any('"kubernetes_nodes")' in c and "alltrue" not in c for c in conditions)

    text = eks["cloudformation/template.yaml"]
    assert [str(m) for m in lint(text)] == []
    template = cfn_template(text)
    assert "KubernetesNodesSecurityGroup" not in template["Resources"]
    parameter = template["Parameters"]["ExistingKubernetesNodesSecurityGroupId"]
    assert "Default" not in parameter
    assert "CreateKubernetesNodesSecurityGroup" not in template["Conditions"]
    assert not any(
        "KubernetesNodesIngressAllKubernetesNodes" in logical_id
        for logical_id in template["Resources"]
    )


EKS_WARNING = (
    "warning: aws.existing_groups.kubernetes_nodes: eks_cluster: the nodes' egress"
    " rules go into the EKS cluster security group, whose allow-all egress (0.0.0.0/0)"
    " stays, so in AWS they restrict nothing. Give the node group a security group of"
    " its own and pass that in instead (no existing_groups), or accept the open egress"
    " knowingly"
)


def test_the_eks_cluster_group_warns_that_its_egress_stays_open(tmp_path):
    eks = tmp_path / "eks.yaml"
    eks.write_text(EKS_PROFILE)
    plain = ROOT / "profiles" / "aws-private-vpn.yaml"
    runner = CliRunner()
    for args in (
        ["plan", str(eks)],
        ["generate", str(eks), "-o", str(tmp_path / "out")],
    ):
        result = runner.invoke(main, args)
        assert result.exit_code == 0, result.output
        assert result.stderr.count(EKS_WARNING) == 1, result.stderr
    # The matrix carries it (plan --format json, snapshots); a profile without the
    # EKS group has no such warning.
    assert EKS_WARNING[len("warning: ") :] in " ".join(
        plan(parse_profile(EKS_PROFILE, "p.yaml")).warnings
    )
    result = runner.invoke(main, ["plan", str(plain)])
    assert "EKS cluster security group" not in result.stderr


@pytest.mark.skipif(
    shutil.which("dot") is None,
    reason="needs Graphviz's dot (Debian: apt-get install graphviz)",
)
def test_the_review_page_names_the_eks_cluster_group_in_its_key_facts():
    import re

    from generator.htmlreport import render

    def facts(text):
        prof = parse_profile(text, "p.yaml")
        html = render(prof, shipped_matrix(prof))
        section = html.split('<section id="facts"', 1)[1].split("</section>", 1)[0]
        return re.sub(r"\s+", " ", section)

    eks = facts(EKS_PROFILE)
    assert (
        "Kubernetes nodes&#39; security group" in eks
        or "Kubernetes nodes' security group" in eks
    )
    assert "keeps its allow-all egress" in eks and "a group of its own" in eks
    assert "allow-all egress" not in facts(AWS_PROFILE)


def test_the_aws_section_is_refused_on_another_cloud():
    gcp = (ROOT / "profiles" / "gcp.yaml").read_text()
    (problem,) = problems(
        gcp + "aws:\n  existing_groups: {kubernetes_nodes: eks_cluster}\n"
    )
    assert "aws: the aws section only applies to cloud: aws, not gcp" in problem
    assert problem.startswith("p.yaml:")


def lb_ends(matrix) -> dict:
    """Peers of the Nomad clients -> load balancer flows, on both ends."""
    out = {}
    for rule in matrix.rules:
        if rule.flow and "nomad-rpc-lb" in rule.flow:
            out[(rule.role, rule.direction)] = (rule.peer.role, rule.peer.cidrs)
    return out


def test_an_internal_balancer_is_reached_by_group():
    matrix = plan(parse_profile(AWS_PROFILE, "p.yaml"))  # access: vpn
    assert lb_ends(matrix) == {
        ("load_balancer", "ingress"): ("nomad_clients", ()),
        ("nomad_clients", "egress"): ("load_balancer", ()),
    }


def test_an_internet_facing_balancer_on_aws_is_reached_through_public_addresses():
    text = AWS_PROFILE.replace("access: vpn", "access: public").replace(
        "nat_gateway_ips: []", "nat_gateway_ips: [198.51.100.10/32]"
    )
    profile = parse_profile(text, "p.yaml")
    assert profile.lb_internet_facing
    assert any(
        w.startswith("load_balancer.public_ips: empty") for w in profile.warnings
    )
    matrix = plan(profile)
    assert lb_ends(matrix) == {
        ("load_balancer", "ingress"): (None, ("198.51.100.10/32",)),
        ("nomad_clients", "egress"): (None, ("0.0.0.0/0",)),
    }
    # Every Nomad client -> balancer flow of the release (4.2: 3000, 4647, 8585).
    ports = {
        r.ports
        for r in matrix.for_role("load_balancer", "ingress")
        if r.peer.name == "nat_gateway"
    }
    assert ports == {(3000, 3000), (4647, 4647), (8585, 8585)}
    assert any(n.startswith("internet-facing load balancer") for n in matrix.notes)
    # The balancer's address, once given, narrows the clients' egress.
    narrow = plan(
        parse_profile(
            text.replace(
                "  transparent: false\n",
                "  transparent: false\n  public_ips: [203.0.113.80/32]\n",
            ),
            "p.yaml",
        )
    )
    assert lb_ends(narrow)[("nomad_clients", "egress")] == (None, ("203.0.113.80/32",))
    # Nomad clients with public IPs of their own reach it from those.
    own = plan(
        parse_profile(
            text.replace(
                "nomad_client_public_ips: []",
                "nomad_client_public_ips: [192.0.2.64/26]",
            ),
            "p.yaml",
        )
    )
    assert lb_ends(own)[("load_balancer", "ingress")] == (None, ("192.0.2.64/26",))


def test_an_internet_facing_balancer_needs_the_nat_addresses():
    text = AWS_PROFILE.replace("access: vpn", "access: public")
    (problem,) = problems(text)
    assert problem.startswith(
        "p.yaml:19: network.nat_gateway_ips: the load balancer is"
    )
    assert "internet-facing (the default with access: public" in problem
    # An internal balancer on a public install is a decision the profile can make.
    internal = text.replace(
        "  transparent: false\n", "  transparent: false\n  internet_facing: false\n"
    )
    assert not parse_profile(internal, "p.yaml").lb_internet_facing


def test_an_internet_facing_balancer_on_gcp_uses_source_ranges_on_the_nodes():
    from generator.emitters.gcp_firewall import build

    profile = parse_profile((ROOT / "profiles" / "gcp.yaml").read_text(), "p.yaml")
    matrix = shipped_matrix(profile)
    # Transparent: the balancer's ingress is on the nodes.
    assert lb_ends(matrix) == {
        ("kubernetes_nodes", "ingress"): (None, ("198.51.100.20/32",)),
        ("nomad_clients", "egress"): (None, ("198.51.100.30/32",)),
    }
    rules = build(matrix, profile, TARGETS["gcp-firewall"]).rules
    (rule,) = [r for r in rules if r.name.startswith("acme-gcp-k8s-in-tcp-4647")]
    assert rule.ranges == ("198.51.100.20/32",) and not rule.source_tags


def test_3x_balancers_for_nomad_are_internal_by_default():
    text = AWS_PROFILE.replace("access: vpn", "access: public").replace(
        'server_version: "4.2"', 'server_version: "3"'
    )
    matrix = plan(parse_profile(text, "p.yaml"))
    assert lb_ends(matrix)[("load_balancer", "ingress")] == ("nomad_clients", ())
    public = text.replace(
        "  transparent: false\n", "  transparent: false\n  internet_facing: true\n"
    ).replace("nat_gateway_ips: []", "nat_gateway_ips: [198.51.100.10/32]")
    public_matrix = plan(parse_profile(public, "p.yaml"))
    ports = {
        r.ports
        for r in public_matrix.for_role("load_balancer", "ingress")
        if r.peer.name == "nat_gateway"
    }
    assert ports == {(3000, 3000), (4647, 4647), (8585, 8585)}

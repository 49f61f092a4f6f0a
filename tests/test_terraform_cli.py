"""The terraform-aws output through the real Terraform CLI and hashicorp/aws provider.

`terraform init` (from a local filesystem mirror only: nothing is downloaded),
`validate` and `plan` with dummy credentials and the provider's skip flags, so no API
call is made. One root module wires every AWS example; a second one creates a group
in the same apply and passes it in, the normal way to sit next to an EKS module.
Skipped, with the reason, where the CLI or the provider mirror is absent.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import hcl2
import pytest

from conftest import EXAMPLES, example, profile_from, ROOT
from generator.emitters import TARGETS, emit
from generator.optimizer import optimize
from generator.planner import plan

AWS = [name for name in EXAMPLES if example(name).cloud == "aws"]
PROVIDER = "registry.terraform.io/hashicorp/aws"
MIRRORS = ("/opt/tf-plugins", "/usr/share/terraform/plugins", "~/.terraform.d/plugins")

PROVIDER_BLOCK = """
provider "aws" {
  region                      = "us-east-1"
  access_key                  = "dummy"
  secret_key                  = "dummy"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  skip_region_validation      = true
}
"""


def find_terraform() -> tuple[str | None, str | None, str]:
    """(terraform binary, mirror folder, why not) found on this machine."""
    binary = os.environ.get("TERRAFORM") or shutil.which("terraform")
    if binary is None and os.access("/usr/local/bin/terraform", os.X_OK):
        binary = "/usr/local/bin/terraform"
    if binary is None or not os.access(binary, os.X_OK):
        return (
            None,
            None,
            f"no terraform CLI ({binary or 'not on PATH'}; env TERRAFORM)",
        )
    candidates = [os.environ.get("TF_PLUGIN_MIRROR", "")] + list(MIRRORS)
    for folder in candidates:
        folder = os.path.expanduser(folder)
        if folder and (Path(folder) / PROVIDER).is_dir():
            return binary, folder, ""
    return (
        binary,
        None,
        f"no filesystem mirror holding {PROVIDER} (env TF_PLUGIN_MIRROR)",
    )


TERRAFORM, MIRROR, WHY_NOT = find_terraform()
# One worker runs the module: its fixtures init Terraform once for every test.
pytestmark = [
    pytest.mark.terraform,
    pytest.mark.xdist_group("terraform"),
    pytest.mark.skipif(MIRROR is None, reason=WHY_NOT),
]


def module_files(prof) -> dict[str, str]:
    matrix = optimize(plan(prof))[0]
    files = emit(matrix, prof, [TARGETS["terraform-aws"]])
    return {path.split("/", 1)[1]: text for path, text in files.items()}


def write_module(folder: Path, prof) -> None:
    folder.mkdir(parents=True)
    for name, text in module_files(prof).items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)


def module_name(example_name: str) -> str:
    return re.sub(r"\W", "_", example_name)


class Terraform:
    def __init__(self, root: Path):
        self.root = root
        config = root / "cli.tfrc"
        # The mirror only: no `direct {}`, so nothing can be downloaded.
        config.write_text(
            "provider_installation {\n"
            f"  filesystem_mirror {{\n    path = {json.dumps(MIRROR)}\n  }}\n"
            "}\n"
            f"plugin_cache_dir = {json.dumps(str(root / 'plugin-cache'))}\n"
        )
        (root / "plugin-cache").mkdir()
        self.env = {
            **os.environ,
            "TF_CLI_CONFIG_FILE": str(config),
            "CHECKPOINT_DISABLE": "1",
            "TF_IN_AUTOMATION": "1",
            "TF_INPUT": "0",
        }
        for key in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            self.env.pop(key, None)

    def run(self, folder: Path, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [TERRAFORM, f"-chdir={folder}", *args, "-no-color"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
        )

    def init(self, folder: Path) -> None:
        result = self.run(folder, "init", "-input=false", "-backend=false")
        assert result.returncode == 0, result.stdout + result.stderr

    def plan(self, folder: Path) -> dict:
        """The saved plan as JSON (terraform show -json)."""
        result = self.run(folder, "plan", "-input=false", "-out=tfplan", "-lock=false")
        assert result.returncode == 0, result.stdout + result.stderr
        shown = self.run(folder, "show", "-json", "tfplan")
        assert shown.returncode == 0, shown.stderr
        return json.loads(shown.stdout)


@pytest.fixture(scope="module")
def terraform(tmp_path_factory) -> Terraform:
    return Terraform(tmp_path_factory.mktemp("terraform"))


def root_module(folder: Path, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "main.tf").write_text(PROVIDER_BLOCK + body)
    return folder


@pytest.fixture(scope="module")
def examples_root(terraform) -> Path:
    """Every AWS example as a module of one root module: one init for all of them."""
    root = terraform.root / "examples"
    body = ""
    for name in AWS:
        write_module(root / "modules" / name, example(name))
        body += (
            f'\nmodule "{module_name(name)}" {{\n'
            f'  source = "./modules/{name}"\n'
            f'  vpc_id = "vpc-0123456789abcdef0"\n'
            "}\n"
        )
    root_module(root, body)
    terraform.init(root)
    return root


SAME_APPLY = """
# The group is created in the same apply (as an EKS module does with its node group):
# its ID is unknown until apply.
resource "aws_security_group" "nodes" {
  name_prefix = "eks-nodes-"
  vpc_id      = "vpc-0123456789abcdef0"
}

module "firewall" {
  source = "./module"
  vpc_id = "vpc-0123456789abcdef0"
  existing_security_group_ids = {
    kubernetes_nodes = aws_security_group.nodes.id
  }
}
"""


@pytest.fixture(scope="module")
def same_apply_root(terraform) -> Path:
    root = terraform.root / "same-apply"
    write_module(root / "module", example("aws-private-vpn"))
    root_module(root, SAME_APPLY)
    terraform.init(root)
    return root


def test_every_aws_example_validates(terraform, examples_root):
    result = terraform.run(examples_root, "validate", "-json")
    report = json.loads(result.stdout)
    assert report["valid"], report["diagnostics"]
    assert report["warning_count"] == 0, report["diagnostics"]


def planned(plan_json: dict) -> dict[str, dict]:
    """Resources to create, by address."""
    return {
        change["address"]: change
        for change in plan_json["resource_changes"]
        if change["change"]["actions"] == ["create"]
    }


def test_every_aws_example_plans(terraform, examples_root):
    created = planned(terraform.plan(examples_root))
    for name in AWS:
        prefix = f"module.{module_name(name)}."
        mine = [a for a in created if a.startswith(prefix)]
        groups = [a for a in mine if ".aws_security_group." in a]
        # Every role's group, and one plan entry per rule the module declares.
        assert len(groups) >= 3, (name, mine)
        assert len(mine) - len(groups) == declared_rules(example(name)), name


def declared_rules(prof) -> int:
    """for_each instances of the rule blocks of the generated main.tf."""
    parsed = hcl2.loads(module_files(prof)["main.tf"])
    return sum(
        len(block["for_each"])
        for resource in parsed["resource"]
        for rtype, blocks in resource.items()
        if "security_group_" in rtype and "_rule" in rtype
        for block in blocks.values()
    )


def test_a_group_created_in_the_same_apply_can_be_passed_in(terraform, same_apply_root):
    created = planned(terraform.plan(same_apply_root))
    groups = sorted(a for a, c in created.items() if c["type"] == "aws_security_group")
    # The nodes' group is the one passed in: the module creates the others only.
    assert "aws_security_group.nodes" in groups
    assert not any("aws_security_group.kubernetes_nodes" in a for a in groups), groups
    assert any("aws_security_group.nomad_clients" in a for a in groups), groups
    rules = [a for a in created if ".aws_vpc_security_group_" in a]
    assert len(rules) == declared_rules(example("aws-private-vpn"))
    assert any("kubernetes_nodes" in a for a in rules)


EKS = """
# Stands in for the EKS module's cluster security group, unknown until apply.
resource "aws_security_group" "cluster" {
  name_prefix = "eks-cluster-"
  vpc_id      = "vpc-0123456789abcdef0"
}

module "firewall" {
  source = "./module"
  vpc_id = "vpc-0123456789abcdef0"
  existing_security_group_ids = {
    kubernetes_nodes = aws_security_group.cluster.id
  }
  existing_group_kinds = {
    kubernetes_nodes = "eks_cluster"
  }
}

module "forgotten" {
  source = "./module"
  vpc_id = "vpc-0123456789abcdef0"
}

module "misspelt" {
  source = "./module"
  vpc_id = "vpc-0123456789abcdef0"
  existing_security_group_ids = {
    kubernetes_nodes = aws_security_group.cluster.id
    kubernetes_node  = aws_security_group.cluster.id
  }
}
"""


def test_the_eks_cluster_group_wiring_plans_and_is_required(terraform):
    from generator.profile import parse_profile

    root = terraform.root / "eks"
    text = (ROOT / "profiles" / "aws-private-vpn.yaml").read_text()
    prof = parse_profile(
        text + "aws:\n  existing_groups:\n    kubernetes_nodes: eks_cluster\n", "p.yaml"
    )
    write_module(root / "module", prof)
    root_module(root, EKS)
    terraform.init(root)
    # A module not given the cluster group, or given an unknown role, stops at plan.
    result = terraform.run(root, "plan", "-input=false", "-lock=false")
    assert result.returncode == 1
    assert "existing_security_group_ids.kubernetes_nodes: required" in result.stderr
    # The forgotten module, and the misspelt key.
    assert result.stderr.count("Error:") == 2, result.stderr
    assert "keys must be roles of this module" in result.stderr
    (root / "main.tf").write_text(PROVIDER_BLOCK + EKS.split('module "forgotten"')[0])
    created = planned(terraform.plan(root))
    groups = sorted(a for a, c in created.items() if c["type"] == "aws_security_group")
    assert groups == [
        "aws_security_group.cluster",
        "module.firewall.aws_security_group.external_vms[0]",
        "module.firewall.aws_security_group.load_balancer[0]",
        "module.firewall.aws_security_group.nomad_clients[0]",
    ]
    rules = [a for a in created if ".aws_vpc_security_group_" in a]
    assert len(rules) == declared_rules(prof)
    assert not any("ingress_all_all_kubernetes_nodes" in a for a in rules)


def test_the_eks_cluster_group_passed_to_a_module_made_without_existing_groups_stops_at_plan(
    terraform,
):
    # The profile forgot aws.existing_groups, so the module holds the nodes' self
    # rule; the EKS group, passed in and said to be one, already has it. AWS would
    # refuse the duplicate at apply: plan stops with the module's message instead,
    # though the group's ID is unknown until apply.
    root = terraform.root / "eks-forgotten"
    prof = example("aws-private-vpn")
    write_module(root / "module", prof)
    root_module(root, EKS.split('module "forgotten"')[0])
    terraform.init(root)
    result = terraform.run(root, "plan", "-input=false", "-lock=false")
    assert result.returncode == 1, result.stdout
    assert result.stderr.count("Error:") == 1, result.stderr
    message = " ".join(result.stderr.replace("│", " ").split())
    assert "Resource precondition failed" in message
    assert (
        "existing_group_kinds.kubernetes_nodes = eks_cluster, but this module was"
        " generated from a profile without aws.existing_groups.kubernetes_nodes:"
        " eks_cluster" in message
    )
    assert "InvalidPermission.Duplicate" in message
    # Once, on the self rule's instance only.
    assert 'each.key is "kubernetes_nodes_ingress_all_all_kubernetes_nodes"' in message

    # Without the kind the module cannot tell the EKS group from any other: it plans,
    # the self rule included; so does a module that creates the nodes' group itself.
    body = EKS.split('module "forgotten"')[0]
    kinds = body[body.index("  existing_group_kinds") : body.index("}\n}") + 2]
    (root / "main.tf").write_text(PROVIDER_BLOCK + body.replace(kinds, ""))
    created = planned(terraform.plan(root))
    assert any(
        a.endswith('["kubernetes_nodes_ingress_all_all_kubernetes_nodes"]')
        for a in created
    )
    ids = body[
        body.index("  existing_security_group_ids") : body.index(
            "  existing_group_kinds"
        )
    ]
    (root / "main.tf").write_text(PROVIDER_BLOCK + body.replace(ids, ""))
    created = planned(terraform.plan(root))
    assert "module.firewall.aws_security_group.kubernetes_nodes[0]" in created


def test_existing_group_kinds_takes_roles_and_known_kinds_only(terraform):
    root = terraform.root / "kinds"
    write_module(root / "module", example("aws-private-vpn"))
    root_module(
        root,
        """
module "firewall" {
  source = "./module"
  vpc_id = "vpc-0123456789abcdef0"
  existing_group_kinds = {
    kubernetes_node = "eks_cluster"
  }
}
""",
    )
    terraform.init(root)
    result = terraform.run(root, "plan", "-input=false", "-lock=false")
    assert result.returncode == 1
    assert "existing_group_kinds: keys must be roles of this module" in result.stderr


ACLS = """
module "firewall" {
  source = "./module"
  vpc_id = "vpc-0123456789abcdef0"
  subnet_ids = {
    load_balancer    = ["subnet-0a000000000000001"]
    kubernetes_nodes = ["subnet-0a000000000000002", "subnet-0a000000000000003"]
    nomad_clients    = ["subnet-0a000000000000004"]
    external_vms     = ["subnet-0a000000000000005"]
  }
}

# One role missing from subnet_ids: its ACL would be associated with nothing.
module "forgotten" {
  source = "./module"
  vpc_id = "vpc-0123456789abcdef0"
  subnet_ids = {
    load_balancer    = ["subnet-0a000000000000001"]
    kubernetes_nodes = ["subnet-0a000000000000002"]
    nomad_clients    = ["subnet-0a000000000000004"]
  }
}
"""


def test_the_network_acls_plan_with_their_entries(terraform):
    """aws.network_acls: one ACL per role on its subnets, one plan entry per entry."""
    from generator.nacl import layer_for
    from generator.profile import load_profile

    root = terraform.root / "acls"
    prof = load_profile(ROOT / "tests" / "data" / "aws-private-acls.yaml")
    layer = layer_for(prof, optimize(plan(prof))[0])
    write_module(root / "module", prof)
    root_module(root, ACLS)
    terraform.init(root)
    result = terraform.run(root, "plan", "-input=false", "-lock=false")
    assert result.returncode == 1
    assert "subnet_ids: one list of subnet IDs for each of" in result.stderr
    assert result.stderr.count("Error:") == 1, result.stderr
    (root / "main.tf").write_text(PROVIDER_BLOCK + ACLS.split("# One role missing")[0])
    created = planned(terraform.plan(root))
    acls = {
        c["name"]: c["change"]["after"]
        for c in created.values()
        if c["type"] == "aws_network_acl"
    }
    assert sorted(acls) == sorted(a.role for a in layer.acls)
    assert acls["kubernetes_nodes"]["subnet_ids"] == [
        "subnet-0a000000000000002",
        "subnet-0a000000000000003",
    ]
    assert acls["nomad_clients"]["tags"]["rulegen:role"] == "nomad_clients"
    entries = [c for c in created.values() if c["type"] == "aws_network_acl_rule"]
    assert len(entries) == sum(len(a.inbound) + len(a.outbound) for a in layer.acls)
    planned_entries = {
        (
            c["change"]["after"]["egress"],
            c["change"]["after"]["rule_number"],
            c["name"].split("_open")[0].split("_all_ports")[0],
        ): c["change"]["after"]
        for c in entries
    }
    for acl in layer.acls:
        for direction in ("inbound", "outbound"):
            for e in acl.entries(direction):
                after = planned_entries[(e.egress, e.number, acl.role)]
                assert after["rule_action"] == e.action
                assert after["cidr_block"] == e.cidr
                if e.ports and e.protocol != "all":
                    assert (after["from_port"], after["to_port"]) == e.ports


@pytest.mark.parametrize("eks", [False, True])
def test_the_eks_example_root_module_validates(terraform, eks):
    from generator.profile import parse_profile

    text = (ROOT / "profiles" / "aws-private-vpn.yaml").read_text()
    if eks:
        text += "aws:\n  existing_groups:\n    kubernetes_nodes: eks_cluster\n"
    module = terraform.root / f"eks-example-{eks}" / "module"
    write_module(module, parse_profile(text, "p.yaml"))
    example_root = module / "examples" / "eks"
    terraform.init(example_root)
    result = terraform.run(example_root, "validate", "-json")
    report = json.loads(result.stdout)
    assert report["valid"], report["diagnostics"]
    assert report["warning_count"] == 0, report["diagnostics"]


IDS = """
module "firewall" {
  source = "./module"
  vpc_id = VPC
  existing_security_group_ids = {
    nomad_clients = GROUP
  }
}
"""


@pytest.mark.parametrize(
    "vpc, group, message",
    [
        ('"vpc-0123abcd"', '"sg-0123456789abcdef0"', None),
        ('"vpc-123"', '"sg-0123456789abcdef0"', "vpc_id: expected a VPC ID"),
        ('"my-vpc"', '"sg-0123abcd"', "vpc_id: expected a VPC ID"),
        ('"vpc-0123abcd"', '"ci-nomad"', "values must be security group IDs"),
        ('"vpc-0123abcd"', '"subnet-0123abcd"', "values must be security group IDs"),
    ],
)
def test_ids_are_checked_before_anything_is_planned(terraform, vpc, group, message):
    root = terraform.root / "ids"
    if not (root / "module").exists():
        write_module(root / "module", example("aws-private-vpn"))
    root_module(root, IDS.replace("VPC", vpc).replace("GROUP", group))
    if not (root / ".terraform").exists():
        terraform.init(root)
    result = terraform.run(root, "validate")
    if message is None:
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode == 1 and message in result.stderr, result.stderr


EKS_EXAMPLE_TEST = """
# The EKS cluster, mocked: plan runs without AWS.
mock_provider "aws" {
  mock_data "aws_eks_cluster" {
    defaults = {
      vpc_config = [{
        vpc_id                    = "vpc-0123456789abcdef0"
        cluster_security_group_id = "sg-0123456789abcdef0"
        subnet_ids                = []
        security_group_ids        = []
        endpoint_private_access   = true
        endpoint_public_access    = false
        public_access_cidrs       = []
      }]
    }
  }
}

variables {
  region       = "us-east-1"
  cluster_name = "circleci"
}

run "plan" {
  command = plan
}
"""


@pytest.mark.parametrize("said", [True, False])
def test_the_eks_example_plans_only_with_a_module_that_knows_the_cluster_group(
    terraform, said
):
    """The EKS example of a profile with aws.existing_groups passes the cluster group
    in; next to a module generated without it, terraform plan stops with the
    module's message (the precondition), before AWS would refuse the duplicate."""
    from generator.profile import parse_profile

    text = (ROOT / "profiles" / "aws-private-vpn.yaml").read_text()
    eks = parse_profile(
        text + "aws:\n  existing_groups:\n    kubernetes_nodes: eks_cluster\n", "p.yaml"
    )
    module = terraform.root / f"eks-example-plan-{said}" / "module"
    write_module(module, eks if said else example("aws-private-vpn"))
    example_root = module / "examples" / "eks"
    (example_root / "main.tf").write_text(module_files(eks)["examples/eks/main.tf"])
    (example_root / "eks.tftest.hcl").write_text(EKS_EXAMPLE_TEST)
    terraform.init(example_root)
    result = terraform.run(example_root, "test")
    output = " ".join((result.stdout + result.stderr).replace("│", " ").split())
    if said:
        assert result.returncode == 0, output
        assert "1 passed, 0 failed" in output
        return
    assert result.returncode == 1, output
    assert "Resource precondition failed" in output
    assert (
        "existing_group_kinds.kubernetes_nodes = eks_cluster, but this module was"
        " generated from a profile without aws.existing_groups.kubernetes_nodes:"
        " eks_cluster" in output
    )
    assert "0 passed, 1 failed" in output

"""The path stage: every end of a flow is what the other end's firewall really sees."""

from __future__ import annotations

import json

from click.testing import CliRunner

from conftest import ROOT, example, profile_from
from generator.catalog import load_catalog
from generator.cli import main
from generator.emitters import TARGETS, emit
from generator.paths import POD_SENDERS, Paths, join_via
from generator.pipeline import shipped_matrix

PUBLIC_IP = (ROOT / "profiles" / "aws-public-ip.yaml").read_text()
NAT_ONLY = PUBLIC_IP.replace(
    "nomad_client_public_ips: [198.51.100.64/27]", "nomad_client_public_ips: []"
)


def ingress(matrix, role: str, port: int) -> dict:
    return {
        r.peer.role or r.peer.name: r
        for r in matrix.for_role(role, "ingress")
        if r.ports == (port, port) and not r.is_return
    }


def plan_text(path) -> str:
    result = CliRunner().invoke(main, ["plan", str(path)])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_gcp_nomad_clients_take_4647_from_the_nodes_and_the_pod_range_only():
    prof = example("gcp")
    found = ingress(shipped_matrix(prof), "nomad_clients", 4647)
    assert set(found) == {"kubernetes_nodes", "pods"}
    pods = found["pods"]
    assert pods.peer.cidrs == prof.pod_cidrs == ("10.4.0.0/14",)
    assert pods.via.startswith("from the pod range (10.4.0.0/14) because the Nomad")
    assert found["kubernetes_nodes"].via == ""
    text = plan_text(ROOT / "profiles" / "gcp.yaml")
    assert "path: from the pod range (10.4.0.0/14) because the Nomad server" in text
    # The GCP rule: the pod range as source ranges, aimed at the Nomad clients' tag.
    files = emit(shipped_matrix(prof), prof, [TARGETS["gcp-firewall"]])
    bodies = json.loads(files["gcp-firewall/firewalls.json"])
    rpc = [
        b
        for b in bodies
        if b["direction"] == "INGRESS"
        and b.get("allowed") == [{"IPProtocol": "tcp", "ports": ["4647"]}]
        and b["targetTags"] == ["acme-nomad"]
    ]
    assert sorted(
        (b.get("sourceTags", []), b.get("sourceRanges", [])) for b in rpc
    ) == [
        ([], ["10.4.0.0/14"]),
        (["acme-gke-node"], []),
    ]
    assert "Path: from the pod range" in next(
        b["description"] for b in rpc if b.get("sourceRanges")
    )


def test_without_pod_addresses_of_their_own_no_pod_rule():
    # On bare metal the CNI masquerades pods behind their node.
    matrix = shipped_matrix(example("generic-baremetal"))
    assert example("generic-baremetal").pod_cidrs
    assert not any(r.peer.name == "pods" for r in matrix.rules)


def test_aws_public_ip_behind_nat_vms_take_22_and_2376_from_the_nat_gateways():
    prof = profile_from(NAT_ONLY)
    matrix = shipped_matrix(prof)
    for port in (22, 2376):
        found = ingress(matrix, "external_vms", port)
        assert set(found) - {"ssh_admin"} == {"nat_gateway"}, found
        rule = found["nat_gateway"]
        assert rule.peer.cidrs == ("198.51.100.10/31",)  # both gateways, collapsed
        assert "the Nomad clients have no public IPs" in rule.via
        assert rule.via.startswith("from the NAT gateways (198.51.100.10/32,")
    path = ROOT / "out" / "aws-nat-only.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(NAT_ONLY)
    text = plan_text(path)
    assert "path: from the NAT gateways (198.51.100.10/32, 198.51.100.11/32)" in text
    # The security-group rules: CIDR rules for the NAT's addresses, no open 0.0.0.0/0.
    files = emit(matrix, prof, [TARGETS["terraform-aws"]])
    main_tf = files["terraform-aws/main.tf"]
    assert "external_vms_ingress_tcp_22_nat_gateway_198.51.100.10/31" in main_tf
    assert "Path: from the NAT gateways" in main_tf


def test_the_catalogs_public_ip_rows_are_the_paths_hops():
    """The page's 'AWS networking with the VM service' rows (catalog public_ip) are
    the flows the path stage sends over public addresses, from the peer it names."""
    paths = Paths(example("aws-public-ip"))
    for flow in load_catalog().flows:
        if not flow.public_ip:
            continue
        for source in flow.sources:
            for destination in flow.destinations:
                (end,) = paths.sources(source, destination, flow.id)
                assert end.peer.name == flow.public_ip, flow.id
                assert end.hop is not None


def test_every_pod_sender_is_a_page_flow_from_the_nodes():
    flows = {f.id: f for f in load_catalog().flows}
    for fid in POD_SENDERS:
        assert "kubernetes_nodes" in flows[fid].sources, fid


def test_merged_rules_say_each_hop_once_with_all_its_reasons():
    assert join_via(["from A because x", "from A because y", "", "from B"]) == (
        "from A because x and y; from B"
    )


def test_a_rule_shadowed_away_is_credited_to_the_rule_that_covers_it():
    """nomad_clients_egress_tcp_22_vcs goes under the VMs' 0.0.0.0/0 on 22: explain and
    the descriptions name the VCS checkout on the rule that now carries it."""
    result = CliRunner().invoke(
        main,
        ["explain", str(ROOT / "profiles" / "aws-public-ip.yaml")]
        + ["--from", "nomad_clients", "--to", "vcs", "--port", "22"],
    )
    assert result.exit_code == 0, result.output
    assert "flow nomad-vm-ssh+vcs-ssh" in result.output
    assert "Checkout from the VCS over SSH" in result.output

"""The path stage: every end of a flow is what the other end's firewall really sees."""

from __future__ import annotations

import ipaddress
import json

from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import ROOT, example, profile_from
from generator.catalog import load_catalog
from generator.cli import main
from generator.emitters import TARGETS, emit
from generator.paths import POD_SENDERS, Paths, join_via
from generator.pipeline import shipped_matrix
from generator.profile_paths import uncovered

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


VPN = (ROOT / "profiles" / "aws-private-vpn.yaml").read_text()
GCP = (ROOT / "profiles" / "gcp.yaml").read_text()


def problems_of(text: str) -> list[str]:
    from generator.profile import ProfileError

    try:
        profile_from(text)
    except ProfileError as exc:
        return exc.problems
    return []


def balancer(text: str, lines: str) -> str:
    """The profile with its load_balancer.transparent line replaced by `lines`."""
    for line in ("  transparent: false\n", "  transparent: true\n"):
        if line in text:
            return text.replace(line, lines)
    raise AssertionError("no transparent line")


def test_balancer_kind_is_checked_against_the_cloud_and_the_other_keys():
    assert problems_of(balancer(VPN, "  kind: proxy\n")) == [
        "test.yaml:8: load_balancer.kind: 'proxy' is not a balancer kind of cloud:"
        " aws; expected clb or nlb"
    ]
    clash = problems_of(balancer(VPN, "  transparent: true\n  kind: clb\n"))
    assert len(clash) == 1 and "true contradicts kind: clb" in clash[0]
    stray = problems_of(balancer(VPN, "  kind: clb\n  targets: ip\n"))
    assert stray == [
        "test.yaml:9: load_balancer.targets: applies to kind: nlb, not clb"
    ]
    no_kind = problems_of(balancer(VPN, "  security_group: true\n"))
    assert no_kind == [
        "test.yaml:8: load_balancer.security_group: needs load_balancer.kind"
    ]
    bare = VPN.replace("    load_balancer: [10.0.48.0/24]\n", "")
    assert "list its subnets" in " ".join(problems_of(balancer(bare, "  kind: nlb\n")))
    # The kind decides transparent: the clb keeps today's reading.
    clb = shipped_matrix(profile_from(balancer(VPN, "  kind: clb\n")))
    assert clb.rules == shipped_matrix(profile_from(VPN)).rules
    assert any(
        "Classic Load Balancer has a firewall of its own" in n for n in clb.notes
    )


def test_an_nlb_without_a_security_group_opens_the_nodeports_to_its_clients():
    prof = profile_from(balancer(VPN, "  kind: nlb\n"))
    matrix = shipped_matrix(prof)
    assert prof.transparent_lb and "load_balancer" not in matrix.roles()
    nodes = {
        r.peer.role or r.peer.name: r
        for r in matrix.for_role("kubernetes_nodes", "ingress")
        if r.ports == (30000, 32767)
    }
    assert set(nodes) == {"external", "nomad_clients", "load_balancer_addresses"}
    assert (
        "keeps the client's address and delivers to a NodePort" in nodes["external"].via
    )
    assert "health checks" in nodes["load_balancer_addresses"].via
    egress = [
        r for r in matrix.for_role("nomad_clients", "egress") if r.ports == (4647, 4647)
    ]
    assert [r.peer.name for r in egress] == ["load_balancer_addresses"]
    # Not keeping the client's address: only the NLB, and a warning.
    snat = shipped_matrix(
        profile_from(balancer(VPN, "  kind: nlb\n  preserve_client_ip: false\n"))
    )
    peers = {
        r.peer.name
        for r in snat.for_role("kubernetes_nodes", "ingress")
        if r.ports == (30000, 32767)
    }
    assert peers == {"load_balancer_addresses"}
    assert any("no firewall of the nodes can tell" in w for w in snat.warnings)


def test_a_gcp_proxy_balancer_is_seen_as_the_google_front_ends():
    matrix = shipped_matrix(profile_from(balancer(GCP, "  kind: proxy\n")))
    ui = ingress(matrix, "kubernetes_nodes", 443)
    assert set(ui) == {"load_balancer_proxies"}
    assert ui["load_balancer_proxies"].peer.cidrs == ("35.191.0.0/16", "130.211.0.0/22")
    assert any("Cloud Armor" in w for w in matrix.warnings)


def test_an_egress_proxy_replaces_the_internets_80_and_443():
    text = VPN + "egress_proxy: {addresses: [10.0.200.10/32], port: 3128}\n"
    prof = profile_from(
        text.replace("  internet: [0.0.0.0/0]", "  internet: [10.9.0.0/16]")
    )
    assert "peers.internet: ignored: egress_proxy carries" in " ".join(prof.warnings)
    matrix = shipped_matrix(prof)
    for role in ("kubernetes_nodes", "nomad_clients", "external_vms"):
        out = [r for r in matrix.for_role(role, "egress") if r.flow == "internet"]
        assert [(r.ports, r.peer.cidrs) for r in out] == [
            ((3128, 3128), ("10.0.200.10/32",))
        ], role
    path = ROOT / "out" / "aws-proxy.yaml"
    path.write_text(text)
    result = CliRunner().invoke(
        main,
        ["explain", str(path), "--from", "nomad_clients", "--to", "internet"]
        + ["--port", "443"],
    )
    assert result.exit_code == 0, result.output
    assert "egress on nomad_clients (to egress_proxy (10.0.200.10/32), port 3128)" in (
        result.output
    )


def test_webhooks_outside_external_get_their_rule_and_a_warning():
    hooks = "webhooks: {from: vcs, cidrs: [192.30.252.0/22, 172.16.5.0/24]}\n"
    prof = profile_from(VPN + hooks)
    warning = next(w for w in prof.warnings if w.startswith("webhooks.cidrs"))
    assert "does not cover the VCS's hook ranges (192.30.252.0/22)" in warning
    rule = ingress(shipped_matrix(prof), "load_balancer", 443)["webhooks"]
    assert rule.site and rule.reference == "Site flow webhooks: webhooks.from: vcs"
    assert set(rule.peer.cidrs) <= {"172.16.5.0/24", "192.30.252.0/22"}
    assert "192.30.252.0/22" in rule.peer.cidrs
    # Unsaid, the matrix notes that the VCS's own addresses cannot reach the UI.
    assert any(
        n.startswith("webhooks: not set")
        for n in shipped_matrix(profile_from(VPN)).notes
    )
    covered = profile_from(VPN + "webhooks: {from: relay, cidrs: [172.16.5.0/24]}\n")
    assert not any(w.startswith("webhooks") for w in covered.warnings)
    assert "webhooks" not in ingress(shipped_matrix(covered), "load_balancer", 443)


def test_eks_custom_pod_networking_adds_the_pod_range():
    text = VPN.replace(
        "  dns_servers: [10.0.0.2]\n",
        "  dns_servers: [10.0.0.2]\n  pod_cidrs: [100.64.0.0/16]\n",
    )
    assert "missing: aws.custom_pod_networking" in " ".join(
        problems_of(VPN + "aws: {custom_pod_networking: true}\n")
    )
    prof = profile_from(text + "aws: {custom_pod_networking: true}\n")
    found = ingress(shipped_matrix(prof), "nomad_clients", 4647)
    assert set(found) == {"kubernetes_nodes", "pods"}
    assert "EKS custom pod networking" in found["pods"].via
    # Without it, the VPC CNI gives pods the nodes' addresses: no pod rule.
    plain = ingress(shipped_matrix(profile_from(text)), "nomad_clients", 4647)
    assert set(plain) == {"kubernetes_nodes"}


_BLOCKS = st.sampled_from(
    [f"10.0.0.{i}/32" for i in range(8)]
    + [f"10.0.0.{i}/31" for i in range(0, 8, 2)]
    + ["10.0.0.0/30", "10.0.0.4/30", "10.0.0.0/29", "10.0.0.0/28", "0.0.0.0/0"]
    + ["2001:db8::/128", "2001:db8::1/128", "2001:db8::/127", "2001:db8::/64", "::/0"]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_BLOCKS, max_size=6), st.lists(_BLOCKS, max_size=6))
def test_uncovered_is_every_block_the_covering_blocks_do_not_hold(cidrs, covering):
    # Covered means held by the covering blocks together (10.0.0.0/32 and
    # 10.0.0.1/32 hold 10.0.0.0/31), as a firewall that lists them all lets it in.
    union = list(
        ipaddress.collapse_addresses(
            ipaddress.ip_network(c) for c in covering if ":" not in c
        )
    )
    union += list(
        ipaddress.collapse_addresses(
            ipaddress.ip_network(c) for c in covering if ":" in c
        )
    )
    expected = [
        c
        for c in cidrs
        if not any(
            n.version == ipaddress.ip_network(c).version
            and ipaddress.ip_network(c).subnet_of(n)
            for n in union
        )
    ]
    assert uncovered(cidrs, covering) == expected

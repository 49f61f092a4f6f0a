"""Network ACLs (aws.network_acls): entries from the matrix, applied as AWS applies them."""

from __future__ import annotations

from dataclasses import replace

import pytest
from click.testing import CliRunner

from conftest import ROOT, profile_from
from generator import nacl
from generator.cli import main
from generator.emitters import TARGETS, EmitError, emit
from generator.pipeline import files_for, shipped_matrix
from generator.profile import ProfileError

ACL_PROFILE = ROOT / "tests" / "data" / "aws-private-acls.yaml"
TEXT = ACL_PROFILE.read_text()
STRANGER = "203.0.113.9"  # a peer the matrix names nowhere
AWS_TARGETS = [TARGETS["terraform-aws"], TARGETS["cloudformation"]]


def layer_of(text: str = TEXT):
    prof = profile_from(text)
    matrix = shipped_matrix(prof)
    return prof, matrix, nacl.layer_for(prof, matrix)


@pytest.fixture(scope="module")
def example():
    return layer_of()


def host(layer, role: str) -> str:
    return str(nacl._sample(layer.acl(role).subnets[0]))


def test_every_required_flow_passes_both_ways(example):
    _, matrix, layer = example
    assert nacl.check_flows(layer, matrix) == []
    # The check is real: it walks flows between every role and to the peers.
    assert {a.role for a in layer.acls} == {
        "load_balancer",
        "kubernetes_nodes",
        "nomad_clients",
        "external_vms",
    }


def test_the_example_fits_the_default_quota(example):
    _, _, layer = example
    assert layer.settings.limit == 20
    counts = {
        (a.role, d): len(a.entries(d)) for a in layer.acls for d in nacl.DIRECTIONS
    }
    assert max(counts.values()) <= 20
    assert not any(
        e.wider for a in layer.acls for d in nacl.DIRECTIONS for e in a.entries(d)
    )


@pytest.mark.deep
def test_every_allow_entry_is_needed(example):
    _, matrix, layer = example
    for i, acl in enumerate(layer.acls):
        for direction in nacl.DIRECTIONS:
            for entry in acl.entries(direction):
                if entry.action != "allow":
                    continue
                kept = tuple(e for e in acl.entries(direction) if e is not entry)
                cut = replace(acl, **{direction: kept})
                acls = layer.acls[:i] + (cut,) + layer.acls[i + 1 :]
                broken = nacl.check_flows(replace(layer, acls=acls), matrix)
                assert broken, (acl.role, entry.text())


def test_ports_below_the_reply_range_are_closed_to_unnamed_peers(example):
    _, _, layer = example
    lo = layer.settings.ephemeral[0]
    for acl in layer.acls:
        for port in (22, 53, 80, 443, 2376, lo - 1):
            if port >= lo:
                continue
            for protocol in ("tcp", "udp"):
                assert not acl.admits("inbound", protocol, STRANGER, port), (
                    acl.role,
                    protocol,
                    port,
                )
    # SSH stays with the admins' range.
    nodes = layer.acl("kubernetes_nodes")
    assert nodes.admits("inbound", "tcp", "172.16.10.7", 22)
    assert not nodes.admits("inbound", "tcp", "172.16.99.7", 22)


def test_listeners_inside_the_reply_range_are_kept_by_explicit_denies(example):
    _, _, layer = example
    cases = [
        ("kubernetes_nodes", 30000, "10.0.64.5"),
        ("kubernetes_nodes", 32767, "10.0.64.5"),
        ("nomad_clients", 4647, "10.0.0.5"),
        ("nomad_clients", 64535, "172.16.1.1"),
        ("external_vms", 54782, "172.16.1.1"),
        ("load_balancer", 4647, "10.0.32.5"),
    ]
    for role, port, named in cases:
        acl = layer.acl(role)
        assert acl.admits("inbound", "tcp", named, port), (role, port)
        deciding = acl.decide("inbound", "tcp", STRANGER, port)
        assert deciding is not None and deciding.action == "deny", (role, port)
        assert deciding.purpose.startswith("keeps the reply range"), deciding
        # Before the broad reply allow that would open the port.
        replies = [e for e in acl.inbound if e.kind == "reply"]
        assert replies and all(deciding.number < r.number for r in replies)
        assert ("tcp", deciding.ports) in acl.reserved()
    # A reply still comes back on a free ephemeral port, from anywhere it went.
    assert layer.acl("nomad_clients").admits("inbound", "tcp", STRANGER, 40000)


def test_numbers_are_spaced_ordered_and_deterministic(example):
    _, matrix, layer = example
    again = nacl.derive(matrix, layer.settings)
    assert again == layer
    for acl in layer.acls:
        for direction in nacl.DIRECTIONS:
            entries = acl.entries(direction)
            numbers = [e.number for e in entries]
            assert numbers == list(range(100, 100 + 10 * len(numbers), 10))
            kinds = [nacl.KINDS.index(e.kind) for e in entries]
            assert kinds == sorted(kinds)  # requests, denies, replies


def test_traffic_inside_one_subnet_needs_no_entry_between_subnets_it_does():
    prof, matrix, layer = layer_of(
        TEXT.replace("[10.0.0.0/20, 10.0.16.0/20]", "[10.0.0.0/19]")
    )
    nodes = layer.acl("kubernetes_nodes")
    assert not any(e.protocol == "all" for e in nodes.inbound)
    assert nacl.packet(layer, "10.0.0.5", "10.0.1.5", "udp", 8472) is None
    _, _, two = layer_of()
    assert any(
        e.protocol == "all" and e.cidr == "10.0.0.0/19"
        for e in two.acl("kubernetes_nodes").inbound
    )


def test_the_vpc_resolver_needs_no_entry(example):
    _, _, layer = example
    assert not any(
        e.ports and e.ports[0] <= 53 <= e.ports[1]
        for a in layer.acls
        for e in a.outbound
    )
    assert nacl.packet(layer, "10.0.32.5", "10.0.0.2", "udp", 53) is None


def test_the_evaluator_applies_entries_as_aws_does():
    acl = nacl.Acl(
        "nomad_clients",
        ("10.0.32.0/20",),
        inbound=(
            nacl.Entry(
                "inbound", "request", "tcp", (22, 22), "10.1.0.0/16", "ssh", number=100
            ),
            nacl.Entry(
                "inbound", "deny", "tcp", (22, 22), "0.0.0.0/0", "no", number=110
            ),
            nacl.Entry(
                "inbound", "reply", "tcp", (1, 65535), "0.0.0.0/0", "r", number=120
            ),
        ),
        outbound=(),
    )
    assert acl.decide("inbound", "tcp", "10.1.2.3", 22).number == 100  # first match
    assert acl.decide("inbound", "tcp", "10.2.2.3", 22).number == 110  # deny wins
    assert acl.decide("inbound", "tcp", "10.2.2.3", 23).number == 120
    assert acl.decide("inbound", "udp", "10.2.2.3", 23) is None  # default deny
    assert not acl.admits("outbound", "tcp", "10.1.2.3", 40000)  # stateless


def test_a_low_quota_coarsens_visibly_and_flows_still_pass():
    text = TEXT + "quotas:\n  aws:\n    network_acl_entries: 6\n"
    prof, matrix, layer = layer_of(text)
    assert nacl.check_flows(layer, matrix) == []
    assert nacl.fit_problems(layer) == []
    wide = [
        e for a in layer.acls for d in nacl.DIRECTIONS for e in a.entries(d) if e.wider
    ]
    assert wide and all(len(e.covers) >= 2 for e in wide)
    assert any(e.ports == (80, 443) and e.wider == "362 more ports" for e in wide)
    result = CliRunner().invoke(main, ["plan", "-"], input=text)
    assert result.exit_code == 0, result.output
    assert "coarsened: " in result.output and "covers: " in result.output


def test_an_acl_over_the_quota_stops_generate(tmp_path):
    text = TEXT + "quotas:\n  aws:\n    network_acl_entries: 1\n"
    (tmp_path / "p.yaml").write_text(text)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main, ["generate", str(tmp_path / "p.yaml"), "-o", str(out)]
    )
    assert result.exit_code == 1
    assert "the network ACL of" in result.output and "entries" in result.output
    assert "quotas.aws.network_acl_entries" in result.output
    assert not out.exists() or not any(out.rglob("*.tf"))
    with pytest.raises(EmitError):
        prof = profile_from(text)
        files_for(prof, shipped_matrix(prof), AWS_TARGETS)


def test_the_quota_is_at_most_40():
    with pytest.raises(ProfileError, match="network_acl_entries"):
        profile_from(TEXT + "quotas:\n  aws:\n    network_acl_entries: 41\n")


def test_network_acls_need_every_roles_subnets():
    text = TEXT.replace("    external_vms: [10.0.48.0/20]\n", "")
    with pytest.raises(ProfileError, match=r"network\.subnets\.external_vms: missing"):
        profile_from(text)


def test_nat_gateway_subnets_pass_what_goes_through_them():
    text = TEXT.replace(
        "  network_acls: true", "  network_acls: true\n  nat_gateways_in: load_balancer"
    )
    prof, matrix, layer = layer_of(text)
    assert nacl.check_flows(layer, matrix) == []
    lb = layer.acl("load_balancer")
    # Nomad clients' HTTPS to the internet comes in from their subnet, leaves to it.
    assert lb.admits("inbound", "tcp", "10.0.32.5", 443)
    assert lb.admits("outbound", "tcp", "198.51.100.1", 443)
    assert lb.admits("inbound", "tcp", "198.51.100.1", 1024)  # the gateway's ports
    # Without the setting, the balancer's ACL passes none of it.
    _, _, plain = layer_of()
    assert not plain.acl("load_balancer").admits("outbound", "tcp", "198.51.100.1", 443)


def test_off_by_default_and_files_unchanged():
    text = TEXT.replace("aws:\n  network_acls: true\n", "")
    prof = profile_from(text)
    assert nacl.layer_for(prof, shipped_matrix(prof)) is None
    files = emit(shipped_matrix(prof), prof, AWS_TARGETS)
    assert not any("network_acl" in t or "NetworkAcl" in t for t in files.values())


def test_the_layout_carries_every_entry_and_the_role_tag(example):
    prof, matrix, layer = example
    import hcl2
    import yaml

    files = emit(matrix, prof, AWS_TARGETS)
    tf = hcl2.loads(files["terraform-aws/main.tf"])
    wanted = sum(len(a.inbound) + len(a.outbound) for a in layer.acls)
    count = sum(
        len(block["for_each"])
        for resource in tf["resource"]
        for rtype, blocks in resource.items()
        if rtype.strip('"') == "aws_network_acl_rule"
        for block in blocks.values()
    )
    assert count == wanted
    assert (
        'subnet_ids = var.subnet_ids["external_vms"]' in files["terraform-aws/main.tf"]
    )
    assert '"rulegen:role" = "nomad_clients"' in files["terraform-aws/main.tf"]

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    cfn = yaml.load(files["cloudformation/template.yaml"], Loader=Loader)
    entries = [
        r for r in cfn["Resources"].values() if r["Type"] == "AWS::EC2::NetworkAclEntry"
    ]
    assert len(entries) == wanted
    assert "ExternalVmsSubnetIds" in cfn["Parameters"]
    tags = [
        t
        for r in cfn["Resources"].values()
        if r["Type"] == "AWS::EC2::NetworkAcl"
        for t in r["Properties"]["Tags"]
        if t and t.get("Key") == "rulegen:role"
    ]
    assert sorted(t["Value"] for t in tags) == sorted(a.role for a in layer.acls)
    assocs = [
        r
        for r in cfn["Resources"].values()
        if r["Type"] == "AWS::EC2::SubnetNetworkAclAssociation"
    ]
    assert len(assocs) == sum(len(a.subnets) for a in layer.acls)


@pytest.mark.cfnlint
def test_cfn_lint_accepts_the_acls(example):
    from cfnlint.api import lint

    prof, matrix, _ = example
    files = emit(matrix, prof, AWS_TARGETS)
    assert [str(m) for m in lint(files["cloudformation/template.yaml"])] == []


def test_the_excess_report_names_the_reply_ranges(example):
    _, matrix, layer = example
    lines = nacl.excess(layer, matrix)
    assert lines and all("admits beyond the matrix" in line for line in lines)
    # Nothing the matrix requires is blocked, and the kept listener is not in it.
    assert not any(" blocks: " in line for line in lines)
    nomad = [line for line in lines if line.startswith("nomad_clients inbound")]
    assert any("tcp/4648-64534" in line for line in nomad), nomad
